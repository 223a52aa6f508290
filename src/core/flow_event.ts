/**
 * The flow event: the one value that crosses every seam between plugins, the core and backends.
 */
import { type Endpoint, type Family, formatEndpoint } from "../net/ip.ts";
import { isWritableTime, type Micros } from "./time.ts";

export type { Endpoint, Family } from "../net/ip.ts";

/** Lifecycle state of a flow. */
export type FlowState = "start" | "end" | "ongoing";

/** Transport protocol of a flow. */
export type Protocol = "tcp" | "udp";

export const FLOW_STATES: readonly FlowState[] = ["start", "end", "ongoing"];
export const PROTOCOLS: readonly Protocol[] = ["tcp", "udp"];

/**
 * A start, end or ongoing event for one 5-tuple flow, tagged with a SciTags experiment and activity.
 *
 * `src` is always the local end of the flow (the marker and the enrichers rely on it); `dst` the peer.
 */
export interface FlowEvent {
  readonly state: FlowState;
  readonly protocol: Protocol;
  /** Family of both addresses (IPv4-mapped IPv6 counts as IPv6). */
  readonly family: Family;
  readonly src: Endpoint;
  readonly dst: Endpoint;
  readonly experimentId: number;
  readonly activityId: number;
  /** When the flow started; set by the core for end events of flows it saw start. */
  readonly startTime?: Micros;
  /** When the flow ended; set by the core for end events that lack it. */
  readonly endTime?: Micros;
  /** Goes into the firefly's `context.application`. */
  readonly application: string;
  /** The plugin that announced the flow (its configuration name, e.g. "namedPipe"); set by the core. */
  readonly source?: string;
  /**
   * What a received firefly reported beyond the flow itself (XRootD's byte counts, a peer's TCP
   * statistics), kept so that a relay sends it on; the core and other backends ignore it.
   */
  readonly relayed?: RelayedReport;
}

/** The optional blocks of a received firefly a relay passes on (schema v1.0.0 `usage` and `netlink`). */
export interface RelayedReport {
  readonly usage?: Readonly<{ received?: number; sent?: number }>;
  readonly netlink?: Readonly<Record<string, unknown>>;
}

/** Largest experiment or activity id (both are unsigned 32-bit in the original). */
export const MAX_ID = 0xffff_ffff;

const KEY = Symbol("flowKey");
/**
 * One descriptor reused for every key (only `value` is set: non-enumerable, read-only): a fresh literal per
 * call made defineProperty take ~0.4 µs more, a noticeable part of a named-pipe line's cost.
 */
const keyDescriptor: PropertyDescriptor = { value: "" };
/** The last object whose key was composed, and that key (a one-entry memo for objects not keeping theirs). */
let lastEvent: object | undefined;
let lastKey = "";

/**
 * A key that identifies the flow itself, independent of state and tags: protocol and both endpoints, as a
 * compact one-byte string (the addresses' binary keys, two chars per port) for maps; never shown (see
 * `describeFlow`). Kept on start events (non-enumerable, so copies made with a spread do not inherit it):
 * the bus's flow table and every backend's own map then share one string per open flow.
 */
export function flowKey(e: Pick<FlowEvent, "protocol" | "src" | "dst">): string {
  const cached = (e as { [KEY]?: string })[KEY];
  if (cached !== undefined) return cached;
  if (e === lastEvent) return lastKey; // an end handed to a backend that asks for its key twice
  const key = composeKey(e);
  lastEvent = e;
  lastKey = key;
  // Only starts keep theirs: they stay in the tables for the flow's life, while an end's key is wanted for a
  // lookup or two, and defining the property (~0.5 µs, a runtime call) costs more than composing it again.
  if ((e as { state?: string }).state === "start" && Object.isExtensible(e)) {
    keyDescriptor.value = key;
    Object.defineProperty(e, KEY, keyDescriptor);
    keyDescriptor.value = ""; // holds no flow's key between calls
  }
  return key;
}

/**
 * The key's text. Two IPv6 addresses without zone (the usual case) give one flat 38-char string in one call:
 * joined with `+`, the parts made a tree of cons strings that every map lookup flattened (a copy kept beside
 * the tree for the flow's life, about 100 bytes more per open flow).
 */
function composeKey(e: Pick<FlowEvent, "protocol" | "src" | "dst">): string {
  const s = e.src.address, d = e.dst.address, sp = e.src.port, dp = e.dst.port;
  const proto = e.protocol === "tcp" ? 116 : 117; // "t", "u"
  if (s.family === "ipv6" && d.family === "ipv6" && s.zone === undefined && d.zone === undefined) {
    const r = s.key, q = d.key; // one char per byte when there is no zone
    return String.fromCharCode(
      proto,
      r.charCodeAt(0),
      r.charCodeAt(1),
      r.charCodeAt(2),
      r.charCodeAt(3),
      r.charCodeAt(4),
      r.charCodeAt(5),
      r.charCodeAt(6),
      r.charCodeAt(7),
      r.charCodeAt(8),
      r.charCodeAt(9),
      r.charCodeAt(10),
      r.charCodeAt(11),
      r.charCodeAt(12),
      r.charCodeAt(13),
      r.charCodeAt(14),
      r.charCodeAt(15),
      sp >> 8,
      sp & 0xff,
      124,
      q.charCodeAt(0),
      q.charCodeAt(1),
      q.charCodeAt(2),
      q.charCodeAt(3),
      q.charCodeAt(4),
      q.charCodeAt(5),
      q.charCodeAt(6),
      q.charCodeAt(7),
      q.charCodeAt(8),
      q.charCodeAt(9),
      q.charCodeAt(10),
      q.charCodeAt(11),
      q.charCodeAt(12),
      q.charCodeAt(13),
      q.charCodeAt(14),
      q.charCodeAt(15),
      dp >> 8,
      dp & 0xff,
    );
  }
  return String.fromCharCode(proto) + s.key + String.fromCharCode(sp >> 8, sp & 0xff, 124) + d.key +
    String.fromCharCode(dp >> 8, dp & 0xff);
}

/** The flow's protocol and endpoints as text, e.g. "tcp [2001:db8::1]:2345 [2001:db8::2]:5777". */
export function flowText(e: Pick<FlowEvent, "protocol" | "src" | "dst">): string {
  return `${e.protocol} ${formatEndpoint(e.src)} ${formatEndpoint(e.dst)}`;
}

/** A short human-readable description for logs. */
export function describeFlow(e: FlowEvent): string {
  return `${e.state} ${flowText(e)} exp=${e.experimentId} act=${e.activityId}`;
}

/** Thrown when fields cannot make a valid flow event; `field` names the offending field. */
export class FlowEventError extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
    this.name = "FlowEventError";
  }
}

/** Checks a candidate event's invariants (ports, ids, families); throws `FlowEventError` naming the field. */
export function validateFlowEvent(e: FlowEvent): FlowEvent {
  for (const [name, ep] of [["src", e.src], ["dst", e.dst]] as const) {
    if (!Number.isInteger(ep.port) || ep.port < 0 || ep.port > 65535) {
      throw new FlowEventError(`${name}Port`, `${name} port ${ep.port} is not an integer in 0..65535`);
    }
  }
  for (const [name, v] of [["experimentId", e.experimentId], ["activityId", e.activityId]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > MAX_ID) {
      throw new FlowEventError(name, `${name} ${v} is not an integer in 0..${MAX_ID}`);
    }
  }
  for (const [name, v] of [["startTime", e.startTime], ["endTime", e.endTime]] as const) {
    if (v !== undefined && !isWritableTime(v)) {
      throw new FlowEventError(
        name,
        `${name} ${v} µs is outside the years 0000-9999 (UTC) a firefly can carry`,
      );
    }
  }
  if (e.src.address.family !== e.dst.address.family) {
    throw new FlowEventError(
      "dst",
      `source ${e.src.address} and destination ${e.dst.address} are of different address families`,
    );
  }
  if (e.family !== e.src.address.family) {
    throw new FlowEventError(
      "family",
      `family ${e.family} does not match the addresses (${e.src.address.family})`,
    );
  }
  return e;
}
