/**
 * The firefly: SciTags' JSON document (schema v1.0.0) describing one flow, sent over UDP after an optional
 * syslog header. Building, serialising, validating and parsing live here so the emitter (firefly backend)
 * and the receiver (firefly plugin) agree on one definition.
 */
import { quoted } from "../core/clip.ts";
import {
  type FlowEvent,
  FlowEventError,
  type FlowState,
  MAX_ID,
  type Protocol,
  type RelayedReport,
  validateFlowEvent,
} from "../core/flow_event.ts";
import { formatMicrosUtc, isWritableTime, type Micros, nowMicros, scanRfc3339Micros } from "../core/time.ts";
import { type Family, IpAddress } from "../net/ip.ts";
import {
  FIREFLY_MSG_ID,
  NILVALUE,
  parseSyslogHeader,
  type SyslogHeader,
  SyslogHeaderError,
} from "./syslog.ts";

/** The only firefly version. */
export const FIREFLY_VERSION = 1;

/** `flow-lifecycle`: when the flow started/ended and when this message was sent. */
export interface FireflyLifecycle {
  state: FlowState;
  /** Send time; only on `ongoing` fireflies. */
  "current-time"?: string;
  "start-time": string;
  /** Required when `state` is `end`. */
  "end-time"?: string;
}

/** `flow-id`: the 5-tuple. */
export interface FireflyFlowId {
  afi: Family;
  "src-ip": string;
  "dst-ip": string;
  protocol: Protocol;
  "src-port": number;
  "dst-port": number;
}

/** `context`: the SciTags ids and the application. */
export interface FireflyContext {
  "experiment-id": number;
  "activity-id": number;
  application?: string;
}

/** `usage`: bytes of the flow so far (XRootD and dCache send it; collectors derive throughput from it). */
export interface FireflyUsage {
  received?: number;
  sent?: number;
}

/** A firefly document, schema v1.0.0. A validated document may carry further top-level keys. */
export interface FireflyDocument {
  version: 1;
  "flow-lifecycle": FireflyLifecycle;
  "flow-id": FireflyFlowId;
  context: FireflyContext;
  usage?: FireflyUsage;
  /** TCP statistics from the netlink enricher (free-form in the schema). */
  netlink?: Record<string, unknown>;
  /** TCP statistics from the sock_ops enricher (a flowd-go extension, not in the schema). */
  skOps?: Record<string, unknown>;
}

/** What `buildFirefly` adds to the event. */
export interface BuildFireflyOptions {
  /** Send time: `current-time` of ongoing fireflies, last fallback for missing times. Default: now. */
  currentTime?: Micros;
  netlink?: Record<string, unknown>;
  skOps?: Record<string, unknown>;
  usage?: FireflyUsage;
  /** Replaces the source address (public address of a NATed host); must be of the event's family. */
  sourceOverride?: IpAddress;
}

/** An event cannot become a schema-valid firefly; `field` is the firefly field path. */
export class FireflyBuildError extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
    this.name = "FireflyBuildError";
  }
}

/** Address text without a zone: a zone means nothing to the receiver and the schema's formats reject it. */
function addressText(address: IpAddress): string {
  return address.zone === undefined ? address.toString() : IpAddress.fromBytes(address.bytes()).toString();
}

function checkPort(field: string, port: number): number {
  if (port < 1 || port > 65535) {
    throw new FireflyBuildError(field, `${field} ${port} is outside 1..65535 as the firefly schema requires`);
  }
  return port;
}

function checkCount(field: string, value: number | undefined): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
    throw new FireflyBuildError(field, `${field} ${value} is not a non-negative integer`);
  }
}

/**
 * Builds the firefly for an event, with keys in the original's order. Times are UTC with six fraction digits.
 *
 * The schema requires `start-time` on every firefly, yet a flow's start is not always known (an end event
 * for a flow the daemon never saw start, events without times from the API). It is never `""` (the
 * original's bug): it falls back to the event's `endTime`, then to the current time, so an unknown start
 * reads as a zero-length flow rather than a made-up duration. `end-time` appears on end events (event
 * `endTime`, else the current time), `current-time` only on ongoing ones. Throws `FireflyBuildError` for a
 * port 0 (perfSONAR match-all events) or a source override of the other family.
 */
export function buildFirefly(event: FlowEvent, opts: BuildFireflyOptions = {}): FireflyDocument {
  try {
    validateFlowEvent(event);
  } catch (err) {
    if (err instanceof FlowEventError) throw new FireflyBuildError(err.field, err.message);
    throw err;
  }
  let now = opts.currentTime;
  const current = (): Micros => (now ??= nowMicros());

  // Key order as in the original: state, current-time, start-time, end-time.
  const lifecycle = { state: event.state } as FireflyLifecycle;
  if (event.state === "ongoing") lifecycle["current-time"] = formatMicrosUtc(current());
  lifecycle["start-time"] = formatMicrosUtc(event.startTime ?? event.endTime ?? current());
  if (event.state === "end") lifecycle["end-time"] = formatMicrosUtc(event.endTime ?? current());

  const source = opts.sourceOverride ?? event.src.address;
  if (source.family !== event.family) {
    throw new FireflyBuildError(
      "flow-id.src-ip",
      `source override ${source} is ${source.family} but the flow is ${event.family}`,
    );
  }
  const flowId: FireflyFlowId = {
    afi: event.family,
    "src-ip": addressText(source),
    "dst-ip": addressText(event.dst.address),
    protocol: event.protocol,
    "src-port": checkPort("flow-id.src-port", event.src.port),
    "dst-port": checkPort("flow-id.dst-port", event.dst.port),
  };

  const doc: FireflyDocument = {
    version: FIREFLY_VERSION,
    "flow-lifecycle": lifecycle,
    "flow-id": flowId,
    context: {
      "experiment-id": event.experimentId,
      "activity-id": event.activityId,
      application: event.application,
    },
  };
  // What a relayed firefly carried goes on, unless this daemon measured the flow itself.
  const given = opts.usage ?? event.relayed?.usage;
  if (given) {
    checkCount("usage.received", given.received);
    checkCount("usage.sent", given.sent);
    const usage: FireflyUsage = {};
    if (given.received !== undefined) usage.received = given.received;
    if (given.sent !== undefined) usage.sent = given.sent;
    doc.usage = usage;
  }
  const netlink = opts.netlink ?? event.relayed?.netlink;
  if (netlink) doc.netlink = { ...netlink };
  if (opts.skOps) doc.skOps = opts.skOps;
  return doc;
}

/** Compact JSON text of a firefly (no whitespace, no trailing newline), as the original sends it. */
export function serializeFirefly(doc: FireflyDocument): string {
  return JSON.stringify(doc);
}

let lastApplication = "";
let lastApplicationJson = '""';

/**
 * `serializeFirefly(buildFirefly(event, { currentTime }))` for the fireflies the backend sends most (a start
 * or end event a plugin reported, no relayed usage or statistics, no source override), as text written
 * from fixed pieces: no document object, no JSON.stringify walk, and nothing for the schema check to find
 * (every value the validator would look at is checked here). Undefined for any other event: the caller
 * builds, validates and serialises the document, which also names what is wrong.
 */
export function fireflyText(event: FlowEvent, currentTime: Micros): string | undefined {
  const { state, src, dst, family, protocol, experimentId, activityId, startTime, endTime } = event;
  if (
    (state !== "start" && state !== "end") || event.relayed !== undefined ||
    (family !== "ipv4" && family !== "ipv6") || (protocol !== "tcp" && protocol !== "udp") ||
    src.address.family !== family || dst.address.family !== family ||
    !isFlowPort(src.port) || !isFlowPort(dst.port) || !isId(experimentId) || !isId(activityId) ||
    (startTime !== undefined && !isFireflyTime(startTime)) ||
    (endTime !== undefined && !isFireflyTime(endTime)) ||
    !isFireflyTime(currentTime) || typeof event.application !== "string"
  ) return undefined;
  if (event.application !== lastApplication) {
    lastApplicationJson = JSON.stringify(event.application);
    lastApplication = event.application;
  }
  const start = formatMicrosUtc(startTime ?? endTime ?? currentTime);
  const lifecycle = state === "start"
    ? `{"state":"start","start-time":"${start}"}`
    : `{"state":"end","start-time":"${start}","end-time":"${formatMicrosUtc(endTime ?? currentTime)}"}`;
  return `{"version":${FIREFLY_VERSION},"flow-lifecycle":${lifecycle},"flow-id":{"afi":"${family}","src-ip":"${
    addressText(src.address)
  }","dst-ip":"${
    addressText(dst.address)
  }","protocol":"${protocol}","src-port":${src.port},"dst-port":${dst.port}},` +
    `"context":{"experiment-id":${experimentId},"activity-id":${activityId},"application":${lastApplicationJson}}}`;
}

/** A time a firefly can carry: whole microseconds in the years 0000-9999. */
function isFireflyTime(us: Micros): boolean {
  return Number.isInteger(us) && isWritableTime(us);
}

/** A port a firefly can carry: an integer in 1..65535. */
function isFlowPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

/** An experiment or activity id a flow event can carry. */
function isId(id: number): boolean {
  return Number.isInteger(id) && id >= 0 && id <= MAX_ID;
}

const encoder = new TextEncoder();

/** The UDP payload: the optional syslog header (see `buildSyslogHeader`) followed by the compact JSON. */
export function encodeFireflyDatagram(doc: FireflyDocument, syslogHeader = ""): Uint8Array {
  return encoder.encode(syslogHeader + serializeFirefly(doc));
}

/**
 * Parses a firefly time: RFC 3339 with `Z` or a numeric offset and any fraction length (truncated to
 * microseconds); a leap second only at 23:59:60 UTC. Undefined when the text is not such a time.
 */
export function parseFireflyTime(text: string): Micros | undefined {
  const us = scanRfc3339Micros(text, Infinity);
  if (us === undefined || text.charCodeAt(17) !== 54 || text.charCodeAt(18) !== 48) return us;
  // Read with :60 as :59; a real leap second is the last minute of a UTC day.
  const utc = new Date(Math.floor(us / 1000));
  return utc.getUTCHours() === 23 && utc.getUTCMinutes() === 59 ? us : undefined;
}

/** The result of `validateFireflyDocument`. */
export type FireflyValidation = { ok: true; document: FireflyDocument } | { ok: false; errors: string[] };

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  if (v === undefined) return "undefined";
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

function kind(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : typeof v;
}

/** Collects schema violations with their field paths. */
class Checker {
  readonly errors: string[] = [];

  fail(path: string, message: string): void {
    this.errors.push(`${path}: ${message}`);
  }

  /** Checks `type: object`; returns the object or undefined. */
  object(path: string, v: unknown): Json | undefined {
    if (isObject(v)) return v;
    this.fail(path, `expected an object, got ${kind(v)} ${show(v)}`);
    return undefined;
  }

  required(path: string, obj: Json, keys: readonly string[]): void {
    for (const k of keys) if (!Object.hasOwn(obj, k)) this.fail(`${path}.${k}`, "is required");
  }

  noOthers(path: string, obj: Json, allowed: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) this.fail(path, `unexpected property ${quoted(k)}`);
    }
  }

  integer(path: string, v: unknown, min?: number, max?: number): void {
    if (typeof v !== "number" || !Number.isInteger(v)) {
      this.fail(path, `expected an integer, got ${kind(v)} ${show(v)}`);
    } else if ((min !== undefined && v < min) || (max !== undefined && v > max)) {
      this.fail(path, `${v} is outside ${min}..${max}`);
    }
  }

  string(path: string, v: unknown): v is string {
    if (typeof v === "string") return true;
    this.fail(path, `expected a string, got ${kind(v)} ${show(v)}`);
    return false;
  }

  oneOf(path: string, v: unknown, values: readonly string[]): void {
    if (this.string(path, v) && !values.includes(v)) {
      this.fail(path, `${show(v)} is not one of ${values.join(", ")}`);
    }
  }

  dateTime(path: string, v: unknown): void {
    if (this.string(path, v) && parseFireflyTime(v) === undefined) {
      this.fail(path, `${show(v)} is not an RFC 3339 date-time (e.g. 2021-09-22T11:12:27.808092+00:00)`);
    }
  }
}

const TOP_REQUIRED = ["version", "flow-lifecycle", "flow-id", "context"] as const;
const LIFECYCLE_KEYS = ["state", "start-time", "end-time", "current-time"] as const;
const FLOW_ID_KEYS = ["afi", "src-ip", "dst-ip", "protocol", "src-port", "dst-port"] as const;
const CONTEXT_KEYS = ["experiment-id", "activity-id", "application"] as const;
const USAGE_KEYS = ["received", "sent"] as const;

function checkAddress(c: Checker, path: string, v: unknown, afi: unknown): void {
  if (typeof v !== "string" || (afi !== "ipv4" && afi !== "ipv6")) return;
  const address = IpAddress.tryParse(v);
  if (!address || address.zone !== undefined || address.family !== afi) {
    c.fail(path, `${show(v)} is not an ${afi === "ipv4" ? "IPv4" : "IPv6"} address as afi ${afi} requires`);
  }
}

/**
 * Checks a parsed JSON value against firefly schema v1.0.0, constraint by constraint (required fields,
 * enums, closed objects, ports 1..65535, addresses of the afi's family, date-times, `end-time` on end).
 * Times may use `Z` and any fraction length. Errors are `<field path>: <what is wrong>`.
 */
export function validateFireflyDocument(value: unknown): FireflyValidation {
  const c = new Checker();
  const doc = c.object("(document)", value);
  if (doc) {
    c.required("(document)", doc, TOP_REQUIRED);
    if (Object.hasOwn(doc, "version")) c.integer("version", doc.version, FIREFLY_VERSION, FIREFLY_VERSION);

    const lc = Object.hasOwn(doc, "flow-lifecycle")
      ? c.object("flow-lifecycle", doc["flow-lifecycle"])
      : undefined;
    if (lc) {
      c.required("flow-lifecycle", lc, ["state", "start-time"]);
      if (lc.state === "end" && !Object.hasOwn(lc, "end-time")) {
        c.fail("flow-lifecycle.end-time", "is required when state is end");
      }
      c.noOthers("flow-lifecycle", lc, LIFECYCLE_KEYS);
      if (Object.hasOwn(lc, "state")) c.oneOf("flow-lifecycle.state", lc.state, ["start", "end", "ongoing"]);
      for (const k of ["start-time", "end-time", "current-time"] as const) {
        if (Object.hasOwn(lc, k)) c.dateTime(`flow-lifecycle.${k}`, lc[k]);
      }
    }

    const fid = Object.hasOwn(doc, "flow-id") ? c.object("flow-id", doc["flow-id"]) : undefined;
    if (fid) {
      c.required("flow-id", fid, FLOW_ID_KEYS);
      c.noOthers("flow-id", fid, FLOW_ID_KEYS);
      if (Object.hasOwn(fid, "afi")) c.oneOf("flow-id.afi", fid.afi, ["ipv4", "ipv6"]);
      for (const k of ["src-ip", "dst-ip"] as const) {
        if (Object.hasOwn(fid, k) && c.string(`flow-id.${k}`, fid[k])) {
          checkAddress(c, `flow-id.${k}`, fid[k], fid.afi);
        }
      }
      if (Object.hasOwn(fid, "protocol")) c.oneOf("flow-id.protocol", fid.protocol, ["tcp", "udp"]);
      for (const k of ["src-port", "dst-port"] as const) {
        if (Object.hasOwn(fid, k)) c.integer(`flow-id.${k}`, fid[k], 1, 65535);
      }
    }

    const ctx = Object.hasOwn(doc, "context") ? c.object("context", doc.context) : undefined;
    if (ctx) {
      c.required("context", ctx, ["experiment-id", "activity-id"]);
      c.noOthers("context", ctx, CONTEXT_KEYS);
      for (const k of ["experiment-id", "activity-id"] as const) {
        if (Object.hasOwn(ctx, k)) c.integer(`context.${k}`, ctx[k]);
      }
      if (Object.hasOwn(ctx, "application")) c.string("context.application", ctx.application);
    }

    const usage = Object.hasOwn(doc, "usage") ? c.object("usage", doc.usage) : undefined;
    if (usage) {
      c.noOthers("usage", usage, USAGE_KEYS);
      for (const k of USAGE_KEYS) if (Object.hasOwn(usage, k)) c.integer(`usage.${k}`, usage[k]);
    }

    if (Object.hasOwn(doc, "netlink")) c.object("netlink", doc.netlink);
  }
  return c.errors.length ? { ok: false, errors: c.errors } : { ok: true, document: value as FireflyDocument };
}

/** Why a datagram was not accepted as a firefly. */
export type FireflyParseReason =
  | "encoding"
  | "syslog-header"
  | "not-a-firefly"
  | "not-json"
  | "unsupported-version"
  | "schema"
  | "flow-event";

/** A datagram is not a usable firefly; `reason` classifies it (for counters), `details` lists errors. */
export class FireflyParseError extends Error {
  constructor(
    readonly reason: FireflyParseReason,
    message: string,
    readonly details: readonly string[] = [],
  ) {
    super(message);
    this.name = "FireflyParseError";
  }
}

/** Options of `parseFirefly`. */
export interface ParseFireflyOptions {
  /**
   * True: the datagram must start with a syslog header. False or absent: a header is optional and detected
   * by its leading `<` (the original ignored this setting and always accepted both forms).
   */
  hasSyslogHeader?: boolean;
  /**
   * Fill a missing or empty `start-time` before validation instead of rejecting the firefly. flowd-go 2.4.2
   * sends `"start-time": ""` on end fireflies (and on starts from its API) and flowd omits it on ongoing
   * ones; a relay that rejects those never sees such flows end. The fill is the document's `end-time`, else
   * its `current-time`, else the header timestamp, else the receive time. Off by default (schema-strict).
   */
  repairStartTime?: boolean;
}

/** A received firefly. */
export interface ParsedFirefly {
  header?: SyslogHeader;
  document: FireflyDocument;
  /** What `repairStartTime` changed, as `<field>: <what>` lines; absent when nothing was repaired. */
  repairs?: string[];
}

/** Fills a missing or empty start-time in place (see `repairStartTime`); returns a note, or undefined. */
function repairStartTime(value: unknown, header: SyslogHeader | undefined): string | undefined {
  if (!isObject(value) || !isObject(value["flow-lifecycle"])) return undefined;
  const lc = value["flow-lifecycle"];
  const start = lc["start-time"];
  // flowd-go 2.4.2 writes "", the Python flowd 1.1.7 null (its named-pipe ends), flowd omits it on ongoing.
  if (start !== undefined && start !== "" && start !== null) return undefined;
  const usable = (v: unknown): v is string => typeof v === "string" && parseFireflyTime(v) !== undefined;
  let fill: string;
  let from: string;
  if (usable(lc["end-time"])) [fill, from] = [lc["end-time"], "end-time"];
  else if (usable(lc["current-time"])) [fill, from] = [lc["current-time"], "current-time"];
  else if (header?.timestamp !== undefined) {
    [fill, from] = [formatMicrosUtc(header.timestamp), "syslog timestamp"];
  } else [fill, from] = [formatMicrosUtc(nowMicros()), "receive time"];
  lc["start-time"] = fill;
  const was = start === undefined ? "missing" : start === null ? "null" : "empty";
  return `flow-lifecycle.start-time: ${was}, set from the ${from}`;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Parses one datagram as sent by flowd, flowd-go, XRootD or dCache: an optional RFC 5424 header (MSGID
 * `firefly-json` or `-`) and a JSON document that must satisfy schema v1.0.0. Throws `FireflyParseError`.
 */
export function parseFirefly(datagram: Uint8Array | string, opts: ParseFireflyOptions = {}): ParsedFirefly {
  let text: string;
  if (typeof datagram === "string") {
    text = datagram;
  } else {
    try {
      text = decoder.decode(datagram);
    } catch {
      throw new FireflyParseError("encoding", "datagram is not valid UTF-8");
    }
  }
  // C senders sometimes count the terminating NUL; it is not part of the message.
  text = text.replace(/\0+$/, "").trimStart();

  let header: SyslogHeader | undefined;
  let json = text;
  if (text.startsWith("<")) {
    try {
      header = parseSyslogHeader(text);
    } catch (err) {
      if (err instanceof SyslogHeaderError) throw new FireflyParseError("syslog-header", err.message);
      throw err;
    }
    if (header.msgId !== FIREFLY_MSG_ID && header.msgId !== NILVALUE) {
      throw new FireflyParseError(
        "not-a-firefly",
        `syslog MSGID ${quoted(header.msgId)} is not ${JSON.stringify(FIREFLY_MSG_ID)}`,
      );
    }
    json = header.rest.replace(/^\uFEFF/, ""); // RFC 5424 allows a BOM before a UTF-8 MSG
  } else if (opts.hasSyslogHeader) {
    throw new FireflyParseError(
      "syslog-header",
      `expected a syslog header ("<134>1 ...") before the JSON, got ${show(text.slice(0, 20))}`,
    );
  }

  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (err) {
    const what = err instanceof Error ? err.message : String(err);
    throw new FireflyParseError("not-json", `firefly body is not JSON (${what}): ${show(json.slice(0, 40))}`);
  }
  if (isObject(value) && typeof value.version === "number" && value.version !== FIREFLY_VERSION) {
    throw new FireflyParseError(
      "unsupported-version",
      `firefly version ${value.version} is not supported (only version ${FIREFLY_VERSION} exists)`,
    );
  }
  const repair = opts.repairStartTime ? repairStartTime(value, header) : undefined;
  const result = validateFireflyDocument(value);
  if (!result.ok) {
    const shown = result.errors.slice(0, 3).join("; ");
    const more = result.errors.length > 3 ? ` (and ${result.errors.length - 3} more)` : "";
    throw new FireflyParseError(
      "schema",
      `firefly does not match schema v1.0.0: ${shown}${more}`,
      result.errors,
    );
  }
  const parsed: ParsedFirefly = { document: result.document };
  if (header) parsed.header = header;
  if (repair) parsed.repairs = [repair];
  return parsed;
}

/** The blocks of a received firefly that a relay sends on, when it has any. */
function relayedOf(doc: FireflyDocument): { relayed?: RelayedReport } {
  const relayed: { usage?: FireflyUsage; netlink?: Record<string, unknown> } = {};
  if (doc.usage) relayed.usage = { ...doc.usage };
  if (doc.netlink) relayed.netlink = structuredClone(doc.netlink);
  return relayed.usage || relayed.netlink ? { relayed: Object.freeze(relayed) } : {};
}

/**
 * Turns a validated firefly into a flow event (family from `afi`; times parsed; application `""` when
 * absent). Throws `FireflyParseError` (reason `flow-event`) when the document's values cannot make an event,
 * e.g. ids beyond 32 bits, which the schema allows.
 */
export function fireflyToFlowEvent(doc: FireflyDocument): FlowEvent {
  try {
    const lc = doc["flow-lifecycle"];
    const fid = doc["flow-id"];
    const time = (field: string, text: string): Micros => {
      const t = parseFireflyTime(text);
      if (t === undefined) {
        throw new FlowEventError(field, `flow-lifecycle.${field} ${show(text)} is not a date-time`);
      }
      return t;
    };
    const event: FlowEvent = {
      state: lc.state,
      protocol: fid.protocol,
      family: fid.afi,
      src: { address: IpAddress.parse(fid["src-ip"]), port: fid["src-port"] },
      dst: { address: IpAddress.parse(fid["dst-ip"]), port: fid["dst-port"] },
      experimentId: doc.context["experiment-id"],
      activityId: doc.context["activity-id"],
      startTime: time("start-time", lc["start-time"]),
      ...(lc["end-time"] !== undefined ? { endTime: time("end-time", lc["end-time"]) } : {}),
      application: doc.context.application ?? "",
      ...relayedOf(doc),
    };
    return validateFlowEvent(event);
  } catch (err) {
    const what = err instanceof Error ? err.message : String(err);
    throw new FireflyParseError("flow-event", `firefly cannot become a flow event: ${what}`);
  }
}
