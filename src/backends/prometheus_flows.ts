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

type Field = (t: TcpInfo) => number | bigint;

/** Gauges: name, help, value. */
const GAUGES: readonly (readonly [string, string, Field])[] = [
  ["flow_tcp_retrans", "Segments being retransmitted now (tcpi_retrans)", (t) => t.retrans],
  ["flow_tcp_rto", "Retransmission timeout [us]", (t) => t.rto],
  ["flow_tcp_ato", "Delayed-ACK timeout [us]", (t) => t.ato],
  ["flow_tcp_rtt", "Smoothed round-trip time [us]", (t) => t.rtt],
  ["flow_tcp_rtt_var", "Round-trip time variation [us]", (t) => t.rttVar],
  ["flow_tcp_minrtt", "Lowest round-trip time seen [us]", (t) => t.minRtt],
  ["flow_tcp_pmtu", "Path MTU [bytes]", (t) => t.pMtu],
  ["flow_tcp_mss", "Maximum segment size for sending [bytes]", (t) => t.sndMss],
  ["flow_tcp_rcvmss", "Segment size assumed for the peer's data [bytes]", (t) => t.rcvMss],
  ["flow_tcp_advmss", "Maximum segment size advertised to the peer [bytes]", (t) => t.advMss],
  ["flow_tcp_cwnd", "Congestion window [segments]", (t) => t.sndCwnd],
  ["flow_tcp_ssthresh", "Slow-start threshold [segments]", (t) => t.sndSsThresh],
  ["flow_tcp_lastsnd", "Time since data was last sent [ms]", (t) => t.lastDataSent],
  ["flow_tcp_lastrcv", "Time since data was last received [ms]", (t) => t.lastDataRecv],
  ["flow_tcp_lastack", "Time since an ACK was last received [ms]", (t) => t.lastAckRecv],
  ["flow_tcp_pacing_rate", "Pacing rate [bytes/s]", (t) => t.pacingRate],
  ["flow_tcp_delivery_rate", "Most recent delivery rate [bytes/s]", (t) => t.deliveryRate],
  ["flow_tcp_delivered", "Segments delivered to the peer, retransmissions included", (t) => t.delivered],
  ["flow_tcp_busy", "Time spent with data to send [us]", (t) => t.busyTime],
  ["flow_tcp_rwnd_limited", "Time limited by the peer's receive window [us]", (t) => t.rwndLimited],
  ["flow_tcp_rcv_space", "Receive-buffer space the receiver autotunes to [bytes]", (t) => t.rcvSpace],
  ["flow_tcp_rcv_ssthresh", "Current receive window clamp [bytes]", (t) => t.rcvSsThresh],
  ["flow_tcp_rcv_snd_wnd", "Send window the peer advertises [bytes]", (t) => t.sndWnd],
];

/** Counters (the flow's own totals since it started): name, help, value. */
const COUNTERS: readonly (readonly [string, string, Field])[] = [
  ["flow_tcp_bytes_sent_total", "Bytes sent, retransmissions included", (t) => t.bytesSent],
  ["flow_tcp_bytes_acked_total", "Bytes acknowledged by the peer", (t) => t.bytesAcked],
  ["flow_tcp_bytes_received_total", "Bytes received", (t) => t.bytesRecv],
  ["flow_tcp_segs_out_total", "Segments sent", (t) => t.segsOut],
  ["flow_tcp_segs_in_total", "Segments received", (t) => t.segsIn],
  ["flow_tcp_data_segs_out_total", "Segments carrying data sent", (t) => t.dataSegsOut],
  ["flow_tcp_data_segs_in_total", "Segments carrying data received", (t) => t.dataSegsIn],
];

/** Every per-flow family name, for tests and documentation. */
export const FLOW_FAMILY_NAMES: readonly string[] = [
  ...GAUGES.map(([n]) => n),
  ...COUNTERS.map(([n]) => n),
  "flow_tcp_rcv_ca_info",
];

/** A flow's latest statistics, and its labels rendered once. */
interface FlowEntry {
  readonly labels: string;
  info: FlowInfo;
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

/** The per-flow families of one flavour, filled from samples and emptied when flows end. */
export class FlowSeries {
  readonly #flows = new Map<string, FlowEntry>();
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
    const entry = this.#flows.get(key);
    if (entry) {
      entry.info = info;
      return true;
    }
    if (this.#flows.size >= this.capacity) {
      this.#refused++;
      return false;
    }
    this.#flows.set(key, { labels: renderLabels({ ...flowLabels(flow, this.flavour) }), info });
    return true;
  }

  /** Removes every series of a flow. */
  delete(key: string): boolean {
    return this.#flows.delete(key);
  }

  /**
   * The families in the text exposition format 0.0.4 (HELP, TYPE, one line per flow), rendered here
   * rather than by prom-client: with tens of thousands of flows its per-value formatting dominated the
   * scrape, and these label sets never change during a flow.
   */
  render(): string {
    const out: string[] = [];
    const family = (name: string, help: string, type: string, field: Field) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const { labels, info } of this.#flows.values()) {
        // A sample without tcp_info (a custom `ext` mask) has nothing for these families.
        if (info.tcpInfo) out.push(`${name}{${labels}} ${Number(field(info.tcpInfo))}`);
      }
    };
    for (const [name, help, field] of GAUGES) family(name, help, "gauge", field);
    for (const [name, help, field] of COUNTERS) family(name, help, "counter", field);
    out.push(
      "# HELP flow_tcp_rcv_ca_info Congestion-control algorithm the flow uses (label alg), always 1",
      "# TYPE flow_tcp_rcv_ca_info gauge",
    );
    for (const { labels, info } of this.#flows.values()) {
      const alg = info.cong?.algorithm;
      if (alg) out.push(`flow_tcp_rcv_ca_info{${labels},alg="${escapeLabel(alg)}"} 1`);
    }
    return out.join("\n") + "\n";
  }
}
