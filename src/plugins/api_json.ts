/**
 * The REST API's JSON form of a flow event, compatible with the original's (flowd-go-behaviour §4.2):
 * PascalCase keys, numeric enums, "ip:port" address strings and Go `time.Time` timestamps.
 *
 * Output keeps the original's shape key for key. Input is stricter than the original, which bound any
 * body to a zero-valued event without checking it (§11.3 item 21): required fields, enum values, id ranges,
 * address families and timestamps are checked, and every rejection names the offending key.
 */
import { clip, quoted } from "../core/clip.ts";
import {
  type FlowEvent,
  type FlowState,
  MAX_ID,
  type Protocol,
  validateFlowEvent,
} from "../core/flow_event.ts";
import type { Micros } from "../core/time.ts";
import { isWritableTime, parseRfc3339Micros } from "../core/time.ts";
import {
  type Endpoint,
  type Family,
  formatEndpoint,
  IpAddress,
  parseEndpoint,
  scanEndpoint,
} from "../net/ip.ts";

/** The original's numeric flow states (one Go iota block shared with Protocol, hence 2, 3, 4). */
export const API_STATE: Readonly<Record<FlowState, number>> = { start: 2, end: 3, ongoing: 4 };
/** The original's numeric protocols. */
export const API_PROTOCOL: Readonly<Record<Protocol, number>> = { tcp: 0, udp: 1 };
/** The original's numeric families (AF_INET, AF_INET6). */
export const API_FAMILY: Readonly<Record<Family, number>> = { ipv4: 2, ipv6: 10 };

/** Go's zero `time.Time` as JSON: how the original writes an unset timestamp. */
export const ZERO_TIME = "0001-01-01T00:00:00Z";

/** A flow event as the API writes it; the key order is the original's struct order. */
export interface ApiFlowJson {
  State: number;
  Protocol: number;
  Family: number;
  Src: string;
  Dst: string;
  Experiment: number;
  Activity: number;
  StartTs: string;
  EndTs: string;
  CurrentTs: string;
  Info: { tcpInfo: null };
  Application: string;
  FlowInfoChans: null;
}

/**
 * The rejection-counter reason of a field at fault: the API key it belongs to ("Src" for "Src.Port"),
 * "unknown-key" for a key the API does not have, else "body"; a bounded set whatever clients send.
 */
export function rejectionReason(field: string): string {
  const top = field.split(".")[0]!;
  if ((FIELDS as readonly string[]).includes(top)) return top;
  return field === "body" ? "body" : "unknown-key";
}

/** A request body that cannot be turned into a flow event; `field` is the API key at fault, or "body". */
export class ApiFlowError extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
    this.name = "ApiFlowError";
  }
}

let lastSeconds = NaN;
let lastBase = "";

/**
 * Formats a timestamp like Go's `time.Time` JSON for a UTC time: RFC 3339, "Z", fraction with trailing
 * zeros trimmed (at most 6 digits, our resolution). Unset times become Go's zero time.
 */
export function formatApiTime(us: Micros | undefined): string {
  if (us === undefined) return ZERO_TIME;
  const seconds = Math.floor(us / 1_000_000);
  const frac = us - seconds * 1_000_000;
  // Successive events mostly fall in the same second: keep the last second's text (toISOString is dear).
  if (seconds !== lastSeconds) {
    lastBase = new Date(seconds * 1000).toISOString().slice(0, 19);
    lastSeconds = seconds;
  }
  const base = lastBase;
  return frac === 0 ? `${base}Z` : `${base}.${fractionText(frac)}Z`;
}

/** Microseconds 1..999999 as Go writes a fraction: six digits with the trailing zeros left out. */
function fractionText(us: number): string {
  let digits = 6;
  while (us % 10 === 0) {
    us /= 10;
    digits--;
  }
  const text = String(us);
  return text.length === digits ? text : "0".repeat(digits - text.length) + text;
}

/** The API's JSON for a flow event, as the original's handlers echoed it. */
export function flowEventToApiJson(event: FlowEvent): ApiFlowJson {
  return {
    State: API_STATE[event.state],
    Protocol: API_PROTOCOL[event.protocol],
    Family: API_FAMILY[event.family],
    Src: formatEndpoint(event.src),
    Dst: formatEndpoint(event.dst),
    Experiment: event.experimentId,
    Activity: event.activityId,
    StartTs: formatApiTime(event.startTime),
    EndTs: formatApiTime(event.endTime),
    CurrentTs: ZERO_TIME,
    // The original serialises an empty enrichment record here; the API never carries enrichment.
    Info: { tcpInfo: null },
    Application: event.application,
    FlowInfoChans: null,
  };
}

const GO_ESCAPED = /[<>&\u2028\u2029]/;

/** Go's json.Encoder escapes of HTML-significant characters, applied to JSON text. */
function goEscape(text: string): string {
  // Most answers have none of these characters: a test is cheaper than a replace with a callback.
  if (!GO_ESCAPED.test(text)) return text;
  return text.replace(/[<>&\u2028\u2029]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Serialises like Go's json.Encoder with an indent: HTML-significant characters escaped, trailing newline. */
export function goJson(value: unknown, pretty: boolean): string {
  return goEscape(pretty ? JSON.stringify(value, null, 4) : JSON.stringify(value)) + "\n";
}

const goString = (s: string) => goEscape(JSON.stringify(s));

/**
 * The JSON string of an endpoint, remembered for the last endpoint object: a client's flows repeat their
 * endpoints, and addresses share their endpoint objects (`IpAddress.endpoint`).
 */
class EndpointText {
  #endpoint: Endpoint | undefined;
  #text = "";

  of(ep: Endpoint): string {
    if (ep === this.#endpoint) return this.#text;
    // An endpoint's text is digits, hex, dots, colons and brackets, nothing JSON or Go escapes; only a zone
    // (an interface name) can hold more.
    this.#text = ep.address.zone === undefined ? `"${formatEndpoint(ep)}"` : goString(formatEndpoint(ep));
    this.#endpoint = ep;
    return this.#text;
  }
}

const echoSrc = new EndpointText();
const echoDst = new EndpointText();
let lastApplication = "";
let lastApplicationJson = '""';

/** The application's JSON string; the last one is remembered (mostly the configured name). */
function echoApplication(name: string): string {
  if (name !== lastApplication) {
    lastApplicationJson = goString(name);
    lastApplication = name;
  }
  return lastApplicationJson;
}

/**
 * `goJson(flowEventToApiJson(event), true)`, byte for byte, from a template: the hot 200 answer of POST
 * /flow without building the echo object and walking it with an indenting JSON.stringify.
 */
export function apiFlowEchoText(event: FlowEvent): string {
  return `{
    "State": ${API_STATE[event.state]},
    "Protocol": ${API_PROTOCOL[event.protocol]},
    "Family": ${API_FAMILY[event.family]},
    "Src": ${echoSrc.of(event.src)},
    "Dst": ${echoDst.of(event.dst)},
    "Experiment": ${event.experimentId},
    "Activity": ${event.activityId},
    "StartTs": "${formatApiTime(event.startTime)}",
    "EndTs": "${formatApiTime(event.endTime)}",
    "CurrentTs": "${ZERO_TIME}",
    "Info": {
        "tcpInfo": null
    },
    "Application": ${echoApplication(event.application)},
    "FlowInfoChans": null
}
`;
}

/** Keys the API reads. */
export const FIELDS = [
  "State",
  "Protocol",
  "Family",
  "Src",
  "Dst",
  "Experiment",
  "Activity",
  "StartTs",
  "EndTs",
] as const;
/** Keys the original wrote in its echo; accepted so an echoed event can be posted back, then ignored. */
const IGNORED = ["CurrentTs", "Info", "FlowInfoChans", "Application"] as const;
/** A key of a POST /flow body, as the original spells it. */
export type ApiField = typeof FIELDS[number] | typeof IGNORED[number];
type Field = ApiField;
/** Every key a POST /flow body may have, as the original spells it. */
export const API_KEYS: readonly ApiField[] = [...FIELDS, ...IGNORED];
/** A body's values under their canonical keys; null values (meaning "not given") are left out. */
export type ApiFields = Map<ApiField, unknown>;

// Go's JSON decoder matched keys case-insensitively, so clients may send "state" or "src".
const CANONICAL = new Map<string, Field>([...FIELDS, ...IGNORED].map((k) => [k.toLowerCase(), k]));
/** The keys as the original spells them: found without lower-casing. */
const EXACT = new Set<Field>([...FIELDS, ...IGNORED]);

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The common case of `canonicalKeys`: every key spelled as the original spells it (a JSON object cannot
 * repeat a key, so none can then clash). Undefined as soon as one is not; the full gathering takes it.
 */
export function exactApiFields(body: Record<string, unknown>): ApiFields | undefined {
  const out: ApiFields = new Map();
  for (const key in body) {
    if (!EXACT.has(key as Field) || !Object.hasOwn(body, key)) return undefined;
    const value = body[key];
    if (value !== null) out.set(key as Field, value);
  }
  return out;
}

/** Gathers the body's keys under their canonical names, rejecting unknown and duplicate ones. */
function canonicalKeys(body: Record<string, unknown>): ApiFields {
  return exactApiFields(body) ?? allApiFields(body);
}

/** `canonicalKeys` for any spelling: case-insensitive keys, unknown ones and clashes named. */
export function allApiFields(body: Record<string, unknown>): ApiFields {
  const out: ApiFields = new Map();
  const spelled = new Map<Field, string>();
  // for-in with an own-key check visits the keys of Object.entries in the same order, without its arrays.
  for (const key in body) {
    if (!Object.hasOwn(body, key)) continue;
    const value = body[key];
    const field = EXACT.has(key as Field) ? key as Field : CANONICAL.get(key.toLowerCase());
    if (field === undefined) {
      throw new ApiFlowError(
        clip(key, 100),
        `unknown key ${quoted(key, 100)}; the keys are ${FIELDS.join(", ")}`,
      );
    }
    const earlier = spelled.get(field);
    if (earlier !== undefined) {
      throw new ApiFlowError(
        field,
        `${field} is given twice, as ${quoted(earlier, 100)} and as ${quoted(key, 100)}`,
      );
    }
    spelled.set(field, key);
    // null stands for "not given", as it did for the original's Go decoder.
    if (value !== null) out.set(field, value);
  }
  return out;
}

function parseState(value: unknown): FlowState {
  if (value === undefined) throw new ApiFlowError("State", 'State is required: 2 or "start", 3 or "end"');
  if (value === API_STATE.start || (typeof value === "string" && value.toLowerCase() === "start")) {
    return "start";
  }
  if (value === API_STATE.end || (typeof value === "string" && value.toLowerCase() === "end")) return "end";
  const extra = value === API_STATE.ongoing ? " (ongoing events come from the daemon, not the API)" : "";
  throw new ApiFlowError("State", `State must be 2 or "start", 3 or "end", not ${describe(value)}${extra}`);
}

function parseProtocol(value: unknown): Protocol {
  // The original's zero value was TCP, so an absent Protocol has always meant TCP.
  if (value === undefined) return "tcp";
  if (value === API_PROTOCOL.tcp || (typeof value === "string" && value.toLowerCase() === "tcp")) {
    return "tcp";
  }
  if (value === API_PROTOCOL.udp || (typeof value === "string" && value.toLowerCase() === "udp")) {
    return "udp";
  }
  throw new ApiFlowError("Protocol", `Protocol must be 0 or "tcp", 1 or "udp", not ${describe(value)}`);
}

function parseFamily(value: unknown): Family | undefined {
  if (value === undefined) return undefined;
  if (value === API_FAMILY.ipv4 || (typeof value === "string" && value.toLowerCase() === "ipv4")) {
    return "ipv4";
  }
  if (value === API_FAMILY.ipv6 || (typeof value === "string" && value.toLowerCase() === "ipv6")) {
    return "ipv6";
  }
  throw new ApiFlowError("Family", `Family must be 2 or "ipv4", 10 or "ipv6", not ${describe(value)}`);
}

function parsePort(field: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 65535) {
    throw new ApiFlowError(field, `${field} must be an integer in 0..65535, not ${describe(value)}`);
  }
  return value;
}

function parseEndpointObject(field: "Src" | "Dst", value: Record<string, unknown>): Endpoint {
  let ip: unknown, port: unknown;
  for (const [key, v] of Object.entries(value)) {
    const lower = key.toLowerCase();
    if (lower === "ip") ip = v;
    else if (lower === "port") port = v;
    else {throw new ApiFlowError(
        `${field}.${key}`,
        `unknown key "${key}" in ${field}; the keys are IP and Port`,
      );}
  }
  if (typeof ip !== "string") {
    throw new ApiFlowError(`${field}.IP`, `${field}.IP must be an IP address string, not ${describe(ip)}`);
  }
  const address = IpAddress.tryParse(ip);
  if (address === undefined) {
    throw new ApiFlowError(`${field}.IP`, `${field}.IP ${describe(ip)} is not an IPv4 or IPv6 address`);
  }
  return { address, port: parsePort(`${field}.Port`, port) };
}

function parseApiEndpoint(field: "Src" | "Dst", value: unknown): Endpoint {
  if (value === undefined) {
    throw new ApiFlowError(
      field,
      `${field} is required, as "ip:port", "[ipv6]:port" or {"IP": ..., "Port": ...}`,
    );
  }
  if (isPlainObject(value)) return parseEndpointObject(field, value);
  if (typeof value !== "string") {
    throw new ApiFlowError(
      field,
      `${field} must be an "ip:port" string or an {"IP", "Port"} object, not ${describe(value)}`,
    );
  }
  try {
    return parseEndpoint(value);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new ApiFlowError(
      field,
      `${field} ${describe(value)} is not a valid "ip:port" or "[ipv6]:port": ${why}`,
    );
  }
}

/** Turns an Experiment or Activity name into an id (the activity within `experimentId`); throws with the reason. */
export type ApiIdResolver = (kind: "experiment" | "activity", name: string, experimentId?: number) => number;

function parseId(
  field: "Experiment" | "Activity",
  value: unknown,
  resolve: ApiIdResolver | undefined,
  experimentId?: number,
): number {
  if (value === undefined) throw new ApiFlowError(field, `${field} is required: an integer in 0..${MAX_ID}`);
  if (typeof value === "string" && resolve !== undefined) {
    try {
      return resolve(field === "Experiment" ? "experiment" : "activity", value, experimentId);
    } catch (err) {
      throw new ApiFlowError(field, `${field}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_ID) {
    const names = resolve ? " or a SciTags registry name" : "";
    throw new ApiFlowError(
      field,
      `${field} must be an integer in 0..${MAX_ID}${names}, not ${describe(value)}`,
    );
  }
  return value;
}

const GO_ZERO_TIME = /^0001-01-01[Tt]00:00:00(\.0+)?([Zz]|[+-]00:00)$/;

function parseTime(field: "StartTs" | "EndTs", value: unknown): Micros | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") {
    throw new ApiFlowError(field, `${field} must be an RFC 3339 date-time string, not ${describe(value)}`);
  }
  // Go writes unset times as its zero time; the original's own echoes carry it.
  if (GO_ZERO_TIME.test(value)) return undefined;
  const us = parseRfc3339Micros(value);
  if (us === undefined) {
    throw new ApiFlowError(
      field,
      `${field} ${describe(value)} is not an RFC 3339 date-time such as 2025-01-31T10:00:00Z`,
    );
  }
  // Years before 1970 are no flow of ours (and two-digit years would be misread by Date.UTC).
  if (Number(value.slice(0, 4)) < 1970) {
    throw new ApiFlowError(field, `${field} ${describe(value)} is before 1970`);
  }
  return us;
}

const NO_KEYS = {};

/** A time value of the fast path: a date-time string from 1970 on; undefined for anything else. */
function scanTime(value: unknown): Micros | undefined {
  // Go's zero time ("0001-...") and years before 1970 take the general path, which tells them apart.
  if (typeof value !== "string" || value.charCodeAt(0) < 49) return undefined;
  const us = parseRfc3339Micros(value);
  return us !== undefined && us >= 0 ? us : undefined;
}

/** A flow event still without its times (both body parsers fill them in). */
type EventInProgress = { -readonly [K in keyof FlowEvent]: FlowEvent[K] };

/** The fields both body parsers set the same way, in one place (one object shape for V8, too). */
function newFlowEvent(
  state: FlowState,
  protocol: Protocol,
  src: Endpoint,
  dst: Endpoint,
  experimentId: number,
  activityId: number,
  application: string,
): EventInProgress {
  return { state, protocol, family: src.address.family, src, dst, experimentId, activityId, application };
}

/**
 * `parseApiFlowBody` for the bodies clients send: keys spelled as the original spells them, numeric enums
 * and ids, "ip:port" strings, date-times from 1970 on. One pass over the keys, no intermediate map, array
 * or closure. Undefined as soon as anything is otherwise (the general path then decides, with its messages);
 * an event it returns is the one the general path would build.
 */
export function fastApiFlowBody(
  body: Record<string, unknown>,
  now: Micros | (() => Micros),
  application: string,
): FlowEvent | undefined {
  let state: FlowState | undefined, protocol: Protocol = "tcp", family: Family | undefined;
  let src: Endpoint | undefined, dst: Endpoint | undefined, app: string | undefined;
  let experimentId = -1, activityId = -1;
  let startTs: Micros | undefined, endTs: Micros | undefined;
  let hasStart = false, hasEnd = false;
  // for-in visits inherited enumerable keys too: only a plain object's, and only while Object.prototype
  // has none (checked on an empty object: far cheaper than an own-key check per key).
  if (Object.getPrototypeOf(body) !== Object.prototype) return undefined;
  for (const _ in NO_KEYS) return undefined;
  for (const key in body) {
    const v = body[key];
    if (v === null) continue; // "not given"
    switch (key) {
      case "State":
        if (v === 2) state = "start";
        else if (v === 3) state = "end";
        else return undefined;
        break;
      case "Protocol":
        if (v === 1) protocol = "udp";
        else if (v !== 0) return undefined;
        break;
      case "Family":
        if (v === 2) family = "ipv4";
        else if (v === 10) family = "ipv6";
        else return undefined;
        break;
      case "Src":
        if (typeof v !== "string" || (src = scanEndpoint(v)) === undefined) return undefined;
        break;
      case "Dst":
        if (typeof v !== "string" || (dst = scanEndpoint(v)) === undefined) return undefined;
        break;
      case "Experiment":
        if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_ID) return undefined;
        experimentId = v;
        break;
      case "Activity":
        if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_ID) return undefined;
        activityId = v;
        break;
      case "StartTs":
        if ((startTs = scanTime(v)) === undefined) return undefined;
        hasStart = true;
        break;
      case "EndTs":
        if ((endTs = scanTime(v)) === undefined) return undefined;
        hasEnd = true;
        break;
      case "Application":
        if (typeof v !== "string") return undefined;
        app = v;
        break;
      case "CurrentTs":
      case "Info":
      case "FlowInfoChans":
        break; // accepted and ignored, as in the general path
      default:
        return undefined;
    }
  }
  if (
    state === undefined || src === undefined || dst === undefined || experimentId < 0 || activityId < 0 ||
    src.address.family !== dst.address.family || (family !== undefined && family !== src.address.family)
  ) return undefined;
  const event = newFlowEvent(state, protocol, src, dst, experimentId, activityId, app || application);
  if (state === "start") {
    event.startTime = hasStart ? startTs : typeof now === "number" ? now : now();
    if (!isWritableTime(event.startTime!)) return undefined;
  } else {
    if (hasStart) event.startTime = startTs;
    event.endTime = hasEnd ? endTs : typeof now === "number" ? now : now();
    if (!isWritableTime(event.endTime!) || (hasStart && hasEnd && endTs! < startTs!)) return undefined;
  }
  return event;
}

/**
 * Turns a parsed POST /flow body into a flow event, or throws `ApiFlowError` naming the key at fault.
 *
 * Start events without StartTs start `now`; end events without EndTs end `now` (a time, or a clock read
 * only then). A start event's EndTs is
 * dropped (the original's sample bodies carry one). Application, when a non-empty string, replaces
 * `application`. With `resolveId`, Experiment and Activity may also be registry names ("atlas", "Staging").
 */
export function parseApiFlowBody(
  value: unknown,
  now: Micros | (() => Micros),
  application: string,
  resolveId?: ApiIdResolver,
): FlowEvent {
  if (!isPlainObject(value)) {
    throw new ApiFlowError(
      "body",
      `the body must be a JSON object describing a flow, not ${describe(value)}`,
    );
  }
  return fastApiFlowBody(value, now, application) ?? generalApiFlowBody(value, now, application, resolveId);
}

/** `parseApiFlowBody` for any object body: every spelling and form, every rejection with its reason. */
export function generalApiFlowBody(
  value: Record<string, unknown>,
  now: Micros | (() => Micros),
  application: string,
  resolveId?: ApiIdResolver,
): FlowEvent {
  const body = canonicalKeys(value);
  const state = parseState(body.get("State"));
  const protocol = parseProtocol(body.get("Protocol"));
  const family = parseFamily(body.get("Family"));
  const src = parseApiEndpoint("Src", body.get("Src"));
  const dst = parseApiEndpoint("Dst", body.get("Dst"));
  if (src.address.family !== dst.address.family) {
    throw new ApiFlowError(
      "Dst",
      `Dst ${formatEndpoint(dst)} is ${dst.address.family} but Src ${
        formatEndpoint(src)
      } is ${src.address.family}`,
    );
  }
  if (family !== undefined && family !== src.address.family) {
    throw new ApiFlowError(
      "Family",
      `Family ${
        API_FAMILY[family]
      } (${family}) does not match the addresses, which are ${src.address.family}`,
    );
  }
  const experimentId = parseId("Experiment", body.get("Experiment"), resolveId);
  const activityId = parseId("Activity", body.get("Activity"), resolveId, experimentId);
  const startTs = parseTime("StartTs", body.get("StartTs"));
  const endTs = parseTime("EndTs", body.get("EndTs"));
  const app = body.get("Application");
  if (app !== undefined && typeof app !== "string") {
    throw new ApiFlowError("Application", `Application must be a string, not ${describe(app)}`);
  }
  const event = newFlowEvent(state, protocol, src, dst, experimentId, activityId, app || application);
  // A clock is read only when a time is missing.
  const clock = () => typeof now === "number" ? now : now();
  if (state === "start") {
    event.startTime = startTs ?? clock();
  } else {
    if (startTs !== undefined) event.startTime = startTs;
    event.endTime = endTs ?? clock();
    if (startTs !== undefined && endTs !== undefined && endTs < startTs) {
      throw new ApiFlowError(
        "EndTs",
        `EndTs ${describe(body.get("EndTs"))} is before StartTs ${describe(body.get("StartTs"))}`,
      );
    }
  }
  return validateFlowEvent(event);
}
