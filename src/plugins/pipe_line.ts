/**
 * The named pipe's line grammar, as in the original:
 * `state protocol srcIP srcPort dstIP dstPort experiment activity`, fields separated by any whitespace,
 * state and protocol case-insensitive.
 */
import { quoted } from "../core/clip.ts";
import type { FlowEvent, Protocol } from "../core/flow_event.ts";
import { MAX_ID } from "../core/flow_event.ts";
import type { Micros } from "../core/time.ts";
import { IpAddress, parseIpAt } from "../net/ip.ts";
import { type Registry, RegistryError } from "../scitags/registry.ts";

/** Why a line was rejected, as a short code for the rejection counters. */
export type PipeRejectReason =
  | "fields"
  | "state"
  | "protocol"
  | "address"
  | "port"
  | "family"
  | "id"
  | "name"
  | "too-long"
  | "other";

/** A line that is not a valid flow event; `message` says which field and why, `reason` the kind. */
export class PipeLineError extends Error {
  constructor(message: string, readonly reason: PipeRejectReason) {
    super(message);
    this.name = "PipeLineError";
  }
}

/** Turns an experiment or activity field into an id (numbers only by default; a registry can add names). */
export type IdResolver = (kind: "experiment" | "activity", text: string, experimentId?: number) => number;

/**
 * Context for parsing: the clock, the application name, how ids are resolved, and the name the events are
 * announced under (`FlowEvent.source`, set here so the bus need not copy each start to add it).
 */
export interface PipeLineContext {
  now: Micros;
  application: string;
  resolveId?: IdResolver;
  source?: string;
}

/** Resolvers that give a decimal field of up to 10 digits its value, as `numericId` does. */
const decimalResolvers = new WeakSet<IdResolver>();

const FIELDS = "state protocol srcIP srcPort dstIP dstPort experiment activity";

function parsePort(text: string, field: string): number {
  const port = decimal(text, 5);
  if (port < 0 || port > 65535) {
    throw new PipeLineError(`${field} ${quoted(text)} is not a port number (0-65535)`, "port");
  }
  return port;
}

/** The value of 1 to `maxDigits` ASCII digits, or -1. */
function decimal(text: string, maxDigits: number): number {
  const n = text.length;
  if (n < 1 || n > maxDigits) return -1;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}

/** What `\s` matches (the original's fields are split on any Unicode white space). */
function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || (c > 127 && /\s/.test(String.fromCharCode(c)));
}

/** Splits on runs of white space into `out`, at most `max + 1` fields (one more tells there are too many). */
function splitFields(line: string, out: string[], max: number): number {
  let count = 0;
  const n = line.length;
  for (let i = 0; i < n;) {
    while (i < n && isSpace(line.charCodeAt(i))) i++;
    if (i === n) break;
    const start = i;
    while (i < n && !isSpace(line.charCodeAt(i))) i++;
    if (count <= max) out[count] = line.slice(start, i);
    count++;
  }
  return count;
}

const fieldScratch: string[] = [];

/**
 * Ids as numbers or as SciTags registry names (any case; spaces, which cannot occur in a field, may be left
 * out or written as - or _: "DataChallenge", "data-challenge"). `registry` gives the registry in use.
 */
export function registryIdResolver(registry: () => Registry): IdResolver {
  const resolve: IdResolver = (kind, text, experimentId) => {
    try {
      const r = registry();
      return kind === "experiment" ? r.experimentId(text) : r.activityId(experimentId ?? text, text);
    } catch (err) {
      if (err instanceof RegistryError) throw new PipeLineError(err.message, "name");
      throw err;
    }
  };
  decimalResolvers.add(resolve); // ids pass through the registry (Registry.experimentId, activityId)
  return resolve;
}

/** Decimal ids only, as the original. */
export function numericId(kind: "experiment" | "activity", text: string): number {
  const id = decimal(text, 10);
  if (id < 0 || id > MAX_ID) {
    throw new PipeLineError(`${kind} ${quoted(text)} is not an id (0-${MAX_ID})`, "id");
  }
  return id;
}

function parseAddress(text: string, field: string): IpAddress {
  const ip = IpAddress.tryParse(text);
  if (!ip) throw new PipeLineError(`${field} ${quoted(text)} is not an IPv4 or IPv6 address`, "address");
  return ip;
}

/**
 * Parses one line (without its newline). Returns undefined for blank lines, which are ignored.
 * Throws `PipeLineError` naming the field that is wrong.
 *
 * A line of ASCII with every field valid is read in place (`scanLine`); anything else, including every
 * line that is wrong, goes through `parsePipeLineChecked`, which names the error.
 */
export function parsePipeLine(line: string, ctx: PipeLineContext): FlowEvent | undefined {
  return scanLine(line, ctx) ?? parsePipeLineChecked(line, ctx);
}

/** Longer lines go straight to the checked path (a valid line is about 150 chars at most, spaces aside). */
const SCAN_MAX_LINE = 512;

/** Field bounds of the line being scanned: start and end of each of the 8 fields. */
const bounds = new Int32Array(16);

/** True when text[start, end) is `word` (lower-case ASCII letters) in any case. */
function isWord(text: string, start: number, end: number, word: string): boolean {
  if (end - start !== word.length) return false;
  for (let i = 0; i < word.length; i++) {
    if ((text.charCodeAt(start + i) | 32) !== word.charCodeAt(i)) return false;
  }
  return true;
}

/** The value of 1 to `maxDigits` ASCII digits in text[start, end), or -1. */
function decimalAt(text: string, start: number, end: number, maxDigits: number): number {
  if (end <= start || end - start > maxDigits) return -1;
  let v = 0;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}

/** An id field: decimal in place when the resolver gives decimals their value, else the resolver. */
function idAt(
  line: string,
  field: number,
  resolve: IdResolver | undefined,
  kind: "experiment" | "activity",
  experimentId?: number,
): number {
  const start = bounds[2 * field]!, end = bounds[2 * field + 1]!;
  if (resolve === undefined || resolve === numericId || decimalResolvers.has(resolve)) {
    const id = decimalAt(line, start, end, 10);
    if (id >= 0 && id <= MAX_ID) return id;
    if (resolve === undefined || resolve === numericId) return -1; // an error: named by the checked path
  }
  return resolve(kind, line.slice(start, end), experimentId);
}

/**
 * The fast path of `parsePipeLine`: the event of a valid ASCII line, read from the line's chars without a
 * substring per field, or null when the line is blank, not ASCII or wrong (the checked path then decides,
 * so both accept the same lines and give the same events; a registry name goes to the resolver as there).
 */
function scanLine(line: string, ctx: PipeLineContext): FlowEvent | null {
  const n = line.length;
  if (n > SCAN_MAX_LINE) return null;
  let fields = 0;
  for (let i = 0; i < n;) {
    let c = line.charCodeAt(i);
    if (c === 32 || (c >= 9 && c <= 13)) {
      i++;
      continue;
    }
    if (fields === 8) return null;
    bounds[2 * fields] = i;
    for (; i < n; i++) {
      c = line.charCodeAt(i);
      if (c === 32 || (c >= 9 && c <= 13)) break;
      if (c > 127) return null; // non-ASCII white space splits fields too: the checked path knows it
    }
    bounds[2 * fields++ + 1] = i;
  }
  if (fields !== 8) return null;
  const b = bounds;
  const start = isWord(line, b[0]!, b[1]!, "start");
  if (!start && !isWord(line, b[0]!, b[1]!, "end")) return null;
  const tcp = isWord(line, b[2]!, b[3]!, "tcp");
  if (!tcp && !isWord(line, b[2]!, b[3]!, "udp")) return null;
  const srcAddress = parseIpAt(line, b[4]!, b[5]!);
  const srcPort = decimalAt(line, b[6]!, b[7]!, 5);
  const dstAddress = parseIpAt(line, b[8]!, b[9]!);
  const dstPort = decimalAt(line, b[10]!, b[11]!, 5);
  if (srcAddress === undefined || dstAddress === undefined || srcAddress.family !== dstAddress.family) {
    return null;
  }
  if (srcPort < 0 || srcPort > 65535 || dstPort < 0 || dstPort > 65535) return null;
  const resolve = ctx.resolveId;
  const experimentId = idAt(line, 6, resolve, "experiment");
  if (experimentId < 0) return null;
  const activityId = idAt(line, 7, resolve, "activity", experimentId);
  if (activityId < 0) return null;
  return makeEvent(
    start ? "start" : "end",
    tcp ? "tcp" : "udp",
    srcAddress,
    srcPort,
    dstAddress,
    dstPort,
    experimentId,
    activityId,
    ctx,
  );
}

/** The event of a parsed line; both paths build it here, so its shape is one. */
function makeEvent(
  state: "start" | "end",
  protocol: Protocol,
  srcAddress: IpAddress,
  srcPort: number,
  dstAddress: IpAddress,
  dstPort: number,
  experimentId: number,
  activityId: number,
  ctx: PipeLineContext,
): FlowEvent {
  // Both times always present (one undefined): every event from the pipe has the same shape.
  const startTime = state === "start" ? ctx.now : undefined;
  const endTime = state === "start" ? undefined : ctx.now;
  const src = srcAddress.endpoint(srcPort), dst = dstAddress.endpoint(dstPort); // shared when seen before
  const family = srcAddress.family, application = ctx.application, source = ctx.source;
  return source === undefined
    ? { state, protocol, family, src, dst, experimentId, activityId, startTime, endTime, application }
    : {
      state,
      protocol,
      family,
      src,
      dst,
      experimentId,
      activityId,
      startTime,
      endTime,
      application,
      source,
    };
}

/** `parsePipeLine` with every field taken apart and checked, naming the first that is wrong. */
export function parsePipeLineChecked(line: string, ctx: PipeLineContext): FlowEvent | undefined {
  const count = splitFields(line, fieldScratch, 8);
  if (count === 0) return undefined;
  if (count !== 8) throw new PipeLineError(`expected 8 fields (${FIELDS}), got ${count}`, "fields");
  const f = fieldScratch;
  const stateText = f[0]!, protoText = f[1]!, srcText = f[2]!, sportText = f[3]!;
  const dstText = f[4]!, dportText = f[5]!, expText = f[6]!, actText = f[7]!;
  const state = stateText.toLowerCase();
  if (state !== "start" && state !== "end") {
    throw new PipeLineError(
      state === "ongoing"
        ? `state "ongoing" is not accepted from the named pipe (use start or end)`
        : `state ${quoted(stateText)} is not start or end`,
      "state",
    );
  }
  const protocol = protoText.toLowerCase();
  if (protocol !== "tcp" && protocol !== "udp") {
    throw new PipeLineError(`protocol ${quoted(protoText)} is not tcp or udp`, "protocol");
  }
  const srcAddress = parseAddress(srcText, "srcIP");
  const srcPort = parsePort(sportText, "srcPort");
  const dstAddress = parseAddress(dstText, "dstIP");
  const dstPort = parsePort(dportText, "dstPort");
  if (srcAddress.family !== dstAddress.family) {
    throw new PipeLineError(
      `srcIP ${srcAddress} and dstIP ${dstAddress} are of different address families`,
      "family",
    );
  }
  const resolve = ctx.resolveId ?? numericId;
  const experimentId = resolve("experiment", expText);
  const activityId = resolve("activity", actText, experimentId);
  return makeEvent(
    state === "start" ? "start" : "end",
    protocol === "tcp" ? "tcp" : "udp", // the constants: the field's own lower-cased copy is not kept
    srcAddress,
    srcPort,
    dstAddress,
    dstPort,
    experimentId,
    activityId,
    ctx,
  );
}

/**
 * Splits a byte stream into lines: feed chunks, get complete lines; `flush` returns the last line
 * when the writers are gone, so a final line without newline is not lost.
 */
export class LineSplitter {
  #decoder = new TextDecoder("utf-8", { fatal: false });
  #tail = "";
  #overlong = false;

  constructor(readonly maxLineLength = 64 * 1024) {}

  /** Lines completed by this chunk, and how many overlong lines were discarded. */
  push(chunk: Uint8Array): { lines: string[]; discarded: number } {
    const text = this.#tail + this.#decoder.decode(chunk, { stream: true });
    const parts = text.split("\n");
    this.#tail = parts.pop() ?? "";
    let discarded = 0;
    if (!this.#overlong && this.#tail.length <= this.maxLineLength) {
      let fits = true;
      for (let i = 0; i < parts.length && fits; i++) fits = parts[i]!.length <= this.maxLineLength;
      if (fits) return { lines: parts, discarded }; // the common case: every line as split, no copy
    }
    const lines: string[] = [];
    for (const p of parts) {
      if (this.#overlong) {
        // The rest of a line already reported as too long.
        this.#overlong = false;
        continue;
      }
      if (p.length > this.maxLineLength) discarded++;
      else lines.push(p);
    }
    if (this.#tail.length > this.maxLineLength) {
      if (!this.#overlong) discarded++;
      this.#overlong = true;
      this.#tail = "";
    }
    return { lines, discarded };
  }

  /** The pending partial line, if any (end of input). */
  flush(): string | undefined {
    const rest = this.#tail + this.#decoder.decode();
    this.#tail = "";
    const wasOverlong = this.#overlong;
    this.#overlong = false;
    return rest.length > 0 && !wasOverlong ? rest : undefined;
  }
}

/** Split points tried per bad line, at most (each costs one parse). */
const MAX_GLUE_SPLITS = 8;

/**
 * Splits a line that does not parse into the lines it was glued from, or returns undefined.
 *
 * A FIFO reader cannot see where one writer's data ends when the next writer opens before the first
 * one's close is noticed: a last line without newline then runs into the next writer's line
 * ("... 2 9start tcp ..."). A line is split before a `start`/`end` keyword only where the rest parses as a
 * line of its own; the part before it stands alone (valid or not). A line that parses whole is never split.
 */
export function splitGluedLine(line: string, parses: (candidate: string) => boolean): string[] | undefined {
  const keyword = /(?:start|end)\s/gi;
  let tried = 0;
  for (let m = keyword.exec(line); m !== null && tried < MAX_GLUE_SPLITS; m = keyword.exec(line)) {
    if (m.index === 0) continue;
    tried++;
    const rest = line.slice(m.index);
    if (!parses(rest)) continue;
    const head = line.slice(0, m.index);
    return [...(parses(head) ? [head] : splitGluedLine(head, parses) ?? [head]), rest];
  }
  return undefined;
}
