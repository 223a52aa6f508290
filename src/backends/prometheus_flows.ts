/**
 * The per-flow metric families of the Prometheus backend: the original's `flow_tcp_*` names, one series
 * per flow with labels `act`, `exp`, `src`, `dst`, `flow` ("<sport:dport>") and `flavour`.
 *
 * Samples only replace a flow's latest statistics; series are produced when Prometheus scrapes, so the
 * cost of a sample does not grow with the number of families, and a flow that ends simply disappears.
 * The backend serves them after the output of its prom-client registry. Fixes over the original: a real `flow` label (the original's was one constant for every flow),
 * `flow_tcp_retrans` is the current value (the original added it up), `flow_tcp_lastack` is the time
 * since the last ACK received (the original read a field the kernel never fills), `flow_tcp_rcvmss` is
 * set, the `_total` families are counters (they were gauges), a flow keeps one `flow_tcp_rcv_ca_info`
 * series (the algorithm it uses now), and samples without tcp_info are skipped instead of crashing.
 */
import type { Flavour } from "../core/component.ts";
import type { FlowEvent } from "../core/flow_event.ts";
import type { FlowInfo, TcpInfo } from "../core/flow_info.ts";

/** The label set of a flow's series. */
export interface FlowLabels {
  readonly act: string;
  readonly exp: string;
  readonly src: string;
  readonly dst: string;
  readonly flow: string;
  readonly flavour: Flavour;
}

/** The labels the original gives a flow (with its `flow` label fixed). */
export function flowLabels(flow: FlowEvent, flavour: Flavour): FlowLabels {
  return {
    act: String(flow.activityId),
    exp: String(flow.experimentId),
    src: flow.src.address.toString(),
    dst: flow.dst.address.toString(),
    flow: `<${flow.src.port}:${flow.dst.port}>`,
    flavour,
  };
}

/** Gauges: name, help (their tcp_info fields: `copyValues`). */
const GAUGES: readonly (readonly [string, string])[] = [
  ["flow_tcp_retrans", "Segments being retransmitted now (tcpi_retrans)"],
  ["flow_tcp_rto", "Retransmission timeout [us]"],
  ["flow_tcp_ato", "Delayed-ACK timeout [us]"],
  ["flow_tcp_rtt", "Smoothed round-trip time [us]"],
  ["flow_tcp_rtt_var", "Round-trip time variation [us]"],
  ["flow_tcp_minrtt", "Lowest round-trip time seen [us]"],
  ["flow_tcp_pmtu", "Path MTU [bytes]"],
  ["flow_tcp_mss", "Maximum segment size for sending [bytes]"],
  ["flow_tcp_rcvmss", "Segment size assumed for the peer's data [bytes]"],
  ["flow_tcp_advmss", "Maximum segment size advertised to the peer [bytes]"],
  ["flow_tcp_cwnd", "Congestion window [segments]"],
  ["flow_tcp_ssthresh", "Slow-start threshold [segments]"],
  ["flow_tcp_lastsnd", "Time since data was last sent [ms]"],
  ["flow_tcp_lastrcv", "Time since data was last received [ms]"],
  ["flow_tcp_lastack", "Time since an ACK was last received [ms]"],
  ["flow_tcp_pacing_rate", "Pacing rate [bytes/s]"],
  ["flow_tcp_delivery_rate", "Most recent delivery rate [bytes/s]"],
  ["flow_tcp_delivered", "Segments delivered to the peer, retransmissions included"],
  ["flow_tcp_busy", "Time spent with data to send [us]"],
  ["flow_tcp_rwnd_limited", "Time limited by the peer's receive window [us]"],
  ["flow_tcp_rcv_space", "Receive-buffer space the receiver autotunes to [bytes]"],
  ["flow_tcp_rcv_ssthresh", "Current receive window clamp [bytes]"],
  ["flow_tcp_rcv_snd_wnd", "Send window the peer advertises [bytes]"],
];

/** Counters (the flow's own totals since it started): name, help. */
const COUNTERS: readonly (readonly [string, string])[] = [
  ["flow_tcp_bytes_sent_total", "Bytes sent, retransmissions included"],
  ["flow_tcp_bytes_acked_total", "Bytes acknowledged by the peer"],
  ["flow_tcp_bytes_received_total", "Bytes received"],
  ["flow_tcp_segs_out_total", "Segments sent"],
  ["flow_tcp_segs_in_total", "Segments received"],
  ["flow_tcp_data_segs_out_total", "Segments carrying data sent"],
  ["flow_tcp_data_segs_in_total", "Segments carrying data received"],
];

/** Every per-flow family name, for tests and documentation. */
export const FLOW_FAMILY_NAMES: readonly string[] = [
  ...GAUGES.map(([n]) => n),
  ...COUNTERS.map(([n]) => n),
  "flow_tcp_rcv_ca_info",
];

/** Every value family: the gauges, then the counters. */
const VALUE_FAMILIES: readonly (readonly [string, string, string])[] = [
  ...GAUGES.map(([n, h]) => [n, h, "gauge"] as const),
  ...COUNTERS.map(([n, h]) => [n, h, "counter"] as const),
];
const CA_INFO = "flow_tcp_rcv_ca_info";
const CA_INFO_HELP = "Congestion-control algorithm the flow uses (label alg), always 1";

const encoder = new TextEncoder();
const ascii = (text: string) => encoder.encode(text);

/** Per value family: its HELP and TYPE lines, and the start of each of its series (`name{`). */
const FAMILY_HEADS = VALUE_FAMILIES.map(([name, help, type]) =>
  ascii(`# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`)
);
const FAMILY_PREFIXES = VALUE_FAMILIES.map(([name]) => ascii(`${name}{`));
const CA_HEAD = ascii(`# HELP ${CA_INFO} ${CA_INFO_HELP}\n# TYPE ${CA_INFO} gauge\n`);
const CA_PREFIX = ascii(`${CA_INFO}{`);
const CA_SUFFIX = ascii(`"} 1\n`);
const ALG_LABEL = ascii(`,alg="`);
/**
 * Room a line needs beyond its prefix and labels: `} `, the value (a safe integer has 16 digits, `String()`
 * of a larger one 21 characters) and the newline; for a congestion line, its suffix.
 */
export const LINE_ROOM = 32;

/**
 * A flow's latest statistics as the numbers its series show (read from the sample once, so the sample
 * itself is not kept), and its labels encoded once.
 */
interface FlowEntry {
  /** `name="value",...`, UTF-8. */
  readonly labels: Uint8Array;
  /** Where its values are in the series' value table (VALUES_PER_FLOW numbers from `slot * VALUES_PER_FLOW`). */
  readonly slot: number;
  /** False: the values are meaningless (the latest sample had no tcp_info). */
  hasTcpInfo: boolean;
  /** `alg` label value, escaped and encoded; undefined: no congestion-control series. */
  alg: Uint8Array | undefined;
  /** The algorithm name `alg` was encoded from: a flow keeps its algorithm, so most samples skip the lookup. */
  algName: string | undefined;
}

/** Numbers kept per flow: one per value family. */
const VALUES_PER_FLOW = VALUE_FAMILIES.length;

/**
 * Copies a sample's values in VALUE_FAMILIES order (written out: a loop over the table's accessors cost a
 * call and a bigint conversion per family; the differential test checks the order against prom-client).
 */
function copyValues(v: Float64Array, o: number, t: TcpInfo): void {
  v[o] = t.retrans;
  v[o + 1] = t.rto;
  v[o + 2] = t.ato;
  v[o + 3] = t.rtt;
  v[o + 4] = t.rttVar;
  v[o + 5] = t.minRtt;
  v[o + 6] = t.pMtu;
  v[o + 7] = t.sndMss;
  v[o + 8] = t.rcvMss;
  v[o + 9] = t.advMss;
  v[o + 10] = t.sndCwnd;
  v[o + 11] = t.sndSsThresh;
  v[o + 12] = t.lastDataSent;
  v[o + 13] = t.lastDataRecv;
  v[o + 14] = t.lastAckRecv;
  v[o + 15] = Number(t.pacingRate);
  v[o + 16] = Number(t.deliveryRate);
  v[o + 17] = t.delivered;
  v[o + 18] = Number(t.busyTime);
  v[o + 19] = Number(t.rwndLimited);
  v[o + 20] = t.rcvSpace;
  v[o + 21] = t.rcvSsThresh;
  v[o + 22] = t.sndWnd;
  v[o + 23] = Number(t.bytesSent);
  v[o + 24] = Number(t.bytesAcked);
  v[o + 25] = Number(t.bytesRecv);
  v[o + 26] = t.segsOut;
  v[o + 27] = t.segsIn;
  v[o + 28] = t.dataSegsOut;
  v[o + 29] = t.dataSegsIn;
}

/** A label value escaped for the text format (backslash, double quote, newline). */
function escapeLabel(value: string): string {
  return /[\\"\n]/.test(value)
    ? value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")
    : value;
}

/** `name="value",...` of a label set, in the given order. */
export function renderLabels(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",");
}

const POWERS_OF_TEN = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

/**
 * Writes the decimal text of a value at `pos`, as `String(value)` would; returns the position after it.
 * Integers below 2^53 (all the kernel's counters in practice) are written digit by digit, without a
 * string; anything else goes through `String`.
 */
export function writeNumber(out: Uint8Array, pos: number, value: number): number {
  // Most values fit 32 bits: integer division there is cheaper (a third of the time at 10,000 flows).
  if (value >= 0 && value < 4294967296 && Math.floor(value) === value) {
    if (value < 10) {
      out[pos] = 48 + value;
      return pos + 1;
    }
    let v = value >>> 0, digits = 2;
    while (digits < 10 && v >= POWERS_OF_TEN[digits]!) digits++;
    let i = pos + digits - 1;
    while (v >= 10) {
      const q = (v / 10) >>> 0;
      out[i--] = 48 + v - q * 10;
      v = q;
    }
    out[i] = 48 + v;
    return pos + digits;
  }
  if (value >= 0 && value <= Number.MAX_SAFE_INTEGER && Math.floor(value) === value) {
    let digits = 1;
    for (let v = value; v >= 10; v = Math.floor(v / 10)) digits++;
    let v = value;
    for (let i = pos + digits - 1; i >= pos; i--) {
      const q = Math.floor(v / 10);
      out[i] = 48 + (v - q * 10);
      v = q;
    }
    return pos + digits;
  }
  return pos + encoder.encodeInto(String(value), out.subarray(pos)).written;
}

/**
 * Where a streamed rendering of the per-flow families stands: family `f` (VALUE_FAMILIES, then the
 * congestion-control family), flow `i` of the flows taken when it started (`head`: that family's HELP and
 * TYPE lines are still to write). Flows that end meanwhile are still written from their last values.
 */
export class SeriesCursor {
  #f = 0;
  #i = 0;
  #head = true;

  constructor(
    private readonly flows: readonly FlowEntry[],
    /** The series' value table as it is now (it may be replaced when it grows). */
    private readonly values: () => Float64Array,
    /** Called once when the cursor is done or closed. */
    private readonly onClose: () => void,
  ) {}

  #closed = false;

  /** Ends the rendering (the series may reuse the slots of flows that ended meanwhile). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClose();
  }

  /** True once every line is written. */
  get done(): boolean {
    return this.#f > VALUE_FAMILIES.length;
  }

  /**
   * Writes lines into `out` from `pos` while they fit (a line is never split; `out` must hold the longest,
   * LINE_ROOM bytes beyond a flow's labels); returns the end. Call again with room until `done`.
   */
  fill(out: Uint8Array, pos: number): number {
    const flows = this.flows, n = flows.length, end = out.byteLength, values = this.values();
    while (this.#f < VALUE_FAMILIES.length) {
      const f = this.#f;
      if (this.#head) {
        const head = FAMILY_HEADS[f]!;
        if (pos + head.byteLength > end) return pos;
        out.set(head, pos);
        pos += head.byteLength;
        this.#head = false;
      }
      const prefix = FAMILY_PREFIXES[f]!, prefixLength = prefix.byteLength;
      let i = this.#i;
      for (; i < n; i++) {
        const e = flows[i]!;
        if (!e.hasTcpInfo) continue;
        const labels = e.labels;
        if (pos + prefixLength + labels.byteLength + LINE_ROOM > end) break;
        out.set(prefix, pos);
        pos += prefixLength;
        out.set(labels, pos);
        pos += labels.byteLength;
        out[pos++] = 0x7d; // }
        out[pos++] = 0x20;
        pos = writeNumber(out, pos, values[e.slot * VALUES_PER_FLOW + f]!);
        out[pos++] = 0x0a;
      }
      this.#i = i;
      if (i < n) return pos;
      this.#f++;
      this.#i = 0;
      this.#head = true;
    }
    if (this.#f === VALUE_FAMILIES.length) {
      if (this.#head) {
        if (pos + CA_HEAD.byteLength > end) return pos;
        out.set(CA_HEAD, pos);
        pos += CA_HEAD.byteLength;
        this.#head = false;
      }
      let i = this.#i;
      for (; i < n; i++) {
        const e = flows[i]!;
        const alg = e.alg;
        if (alg === undefined) continue;
        if (pos + CA_PREFIX.byteLength + e.labels.byteLength + alg.byteLength + LINE_ROOM > end) break;
        out.set(CA_PREFIX, pos);
        pos += CA_PREFIX.byteLength;
        out.set(e.labels, pos);
        pos += e.labels.byteLength;
        out.set(ALG_LABEL, pos);
        pos += ALG_LABEL.byteLength;
        out.set(alg, pos);
        pos += alg.byteLength;
        out.set(CA_SUFFIX, pos);
        pos += CA_SUFFIX.byteLength;
      }
      this.#i = i;
      if (i < n) return pos;
      this.#f++;
      this.close();
    }
    return pos;
  }
}

/** The per-flow families of one flavour, filled from samples and emptied when flows end. */
export class FlowSeries {
  readonly #flows = new Map<string, FlowEntry>();
  /** Every flow's values, VALUES_PER_FLOW numbers per slot: one table instead of an array per flow. */
  #values = new Float64Array(0);
  /** Slots free for new flows; `#ended`: slots of flows that ended while a rendering was under way. */
  readonly #free: number[] = [];
  #ended: number[] = [];
  #slots = 0;
  #renderings = 0;
  /** Encoded `alg` values, shared by the flows using them (a handful of algorithms). */
  readonly #algs = new Map<string, Uint8Array>();
  #refused = 0;

  /** @param capacity flows exported at most; samples of further flows are refused (counted). */
  constructor(readonly flavour: Flavour, readonly capacity: number) {}

  /** Flows with series. */
  get size(): number {
    return this.#flows.size;
  }

  /** Samples refused because `capacity` flows already had series. */
  get refused(): number {
    return this.#refused;
  }

  /** Records a flow's latest statistics; false when refused for capacity. */
  update(key: string, flow: FlowEvent, info: FlowInfo): boolean {
    let entry = this.#flows.get(key);
    if (entry === undefined) {
      if (this.#flows.size >= this.capacity) {
        this.#refused++;
        return false;
      }
      const labels = encoder.encode(renderLabels({ ...flowLabels(flow, this.flavour) }));
      entry = { labels, slot: this.#slot(), hasTcpInfo: false, alg: undefined, algName: undefined };
      this.#flows.set(key, entry);
    }
    const t = info.tcpInfo;
    // A sample without tcp_info (a custom `ext` mask) has nothing for the value families.
    entry.hasTcpInfo = t !== undefined;
    if (t !== undefined) copyValues(this.#values, entry.slot * VALUES_PER_FLOW, t);
    const alg = info.cong?.algorithm;
    if (alg !== entry.algName) {
      entry.algName = alg;
      entry.alg = alg ? this.#algBytes(alg) : undefined;
    }
    return true;
  }

  /** A free slot, the table grown by a quarter when full (a doubled one sat half empty at 10,000 flows). */
  #slot(): number {
    const free = this.#free.pop();
    if (free !== undefined) return free;
    const slot = this.#slots++;
    if (this.#slots * VALUES_PER_FLOW > this.#values.length) {
      const grown = new Float64Array(Math.max(64, Math.ceil(this.#slots * 1.25)) * VALUES_PER_FLOW);
      grown.set(this.#values);
      this.#values = grown;
    }
    return slot;
  }

  #algBytes(alg: string): Uint8Array {
    let bytes = this.#algs.get(alg);
    if (bytes === undefined) {
      bytes = encoder.encode(escapeLabel(alg));
      // Bounded: kernel algorithm names are few; anything else is encoded each time rather than kept.
      if (this.#algs.size < 64) this.#algs.set(alg, bytes);
    }
    return bytes;
  }

  /** Removes every series of a flow. */
  delete(key: string): boolean {
    const entry = this.#flows.get(key);
    if (entry === undefined) return false;
    // A rendering under way still writes this flow from its slot: reuse it only once none is.
    if (this.#renderings > 0) this.#ended.push(entry.slot);
    else this.#free.push(entry.slot);
    return this.#flows.delete(key);
  }

  /**
   * The families in the text exposition format 0.0.4 (HELP, TYPE, one line per flow), to be written by
   * the cursor chunk by chunk. Written here rather than by prom-client, without a string per series: at
   * 10,000 flows (310,000 series) the strings and their concatenation dominated the scrape and the
   * garbage collector; and chunk by chunk, so that a 30 MB body is never held whole.
   */
  cursor(): SeriesCursor {
    this.#renderings++;
    return new SeriesCursor([...this.#flows.values()], () => this.#values, () => {
      if (--this.#renderings > 0) return;
      for (const slot of this.#ended) this.#free.push(slot);
      this.#ended = [];
    });
  }

  /** The families as text (what the cursor writes). */
  render(): string {
    const out = new Uint8Array(64 * 1024), parts: string[] = [], decoder = new TextDecoder();
    const cursor = this.cursor();
    while (!cursor.done) parts.push(decoder.decode(out.subarray(0, cursor.fill(out, 0))));
    return parts.join("");
  }
}
