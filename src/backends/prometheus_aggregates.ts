/**
 * Aggregate metrics of the Prometheus backend, labelled only by SciTags experiment and activity
 * (`flowd_` prefix, base units): how many flows start, end and are open, and, per enricher flavour, the
 * bytes they move and their round-trip times. The number of (exp, act) label pairs is bounded: pairs
 * beyond the bound are counted under exp="other", act="other", so cardinality never follows the traffic.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { EnrichmentSample } from "../core/component.ts";
import { type FlowEvent, flowKey } from "../core/flow_event.ts";
import { SCITAG_MAX_EXPERIMENT } from "../scitags/flow_label.ts";

/** Distinct (experiment, activity) pairs with their own series, at most (the registry has ~14 × 64). */
export const MAX_ID_PAIRS = 1024;
/** The label value of pairs beyond `MAX_ID_PAIRS`. */
export const OVERFLOW_LABEL = "other";
/** The label value of ids no SciTags registry entry can have (experiment above 10 bits, activity above 6). */
export const INVALID_LABEL = "invalid";
/** Largest ids the registry can hold: a scitag is the experiment in 10 bits and the activity in 6. */
const REGISTRY_MAX_EXPERIMENT = SCITAG_MAX_EXPERIMENT;
const REGISTRY_MAX_ACTIVITY = 0x3f;
/** Open flows the active gauges remember, at most (as many as the bus's flow table); the oldest go first. */
export const MAX_TRACKED_FLOWS = 1_000_000;

/** The label values of one (exp, act) pair; shared and frozen, so open flows can keep a reference. */
export type PairLabels = Readonly<{ exp: string; act: string }>;

const INVALID_PAIR: PairLabels = Object.freeze({ exp: INVALID_LABEL, act: INVALID_LABEL });
const OVERFLOW_PAIR: PairLabels = Object.freeze({ exp: OVERFLOW_LABEL, act: OVERFLOW_LABEL });

/** Maps flows to bounded (exp, act) labels; a pair once admitted keeps its own series. */
export class IdPairLabels {
  readonly #admitted = new Map<number, PairLabels>();

  constructor(readonly capacity = MAX_ID_PAIRS) {}

  /** The labels of a flow's pair. */
  of(flow: Pick<FlowEvent, "experimentId" | "activityId">): PairLabels {
    const { experimentId: e, activityId: a } = flow;
    if (e > REGISTRY_MAX_EXPERIMENT || a > REGISTRY_MAX_ACTIVITY) return INVALID_PAIR;
    const key = e * (REGISTRY_MAX_ACTIVITY + 1) + a;
    const known = this.#admitted.get(key);
    if (known) return known;
    if (this.#admitted.size >= this.capacity) return OVERFLOW_PAIR;
    const labels = Object.freeze({ exp: String(e), act: String(a) });
    this.#admitted.set(key, labels);
    return labels;
  }
}

/** One pair's flow counts, kept as numbers (prom-client's labelled `inc` hashed the labels on every event). */
interface PairCounts {
  readonly labels: PairLabels;
  started: number;
  ended: number;
  /** Open flows counted under these labels. */
  active: number;
}

/**
 * Flow counts per (exp, act), registered in every registry the backend serves. Counted in plain numbers per
 * pair and handed to prom-client at scrape time (`collect`), series in the order prom-client made them
 * before: a pair's started and active series from its first start, its ended series from its first end.
 */
export class FlowCounts {
  readonly #pairs = new Map<PairLabels, PairCounts>();
  /** Pairs in the order their first start, and their first end, came. */
  readonly #startedOrder: PairCounts[] = [];
  readonly #endedOrder: PairCounts[] = [];
  /** Each open flow's pair (the one it was counted under when it started). */
  readonly #open = new Map<string, PairCounts>();
  #last: PairCounts | undefined;
  #lastExp = -1;
  #lastAct = -1;

  constructor(
    registries: Registry[],
    private readonly labels: IdPairLabels,
    readonly capacity = MAX_TRACKED_FLOWS,
  ) {
    const labelNames = ["exp", "act"] as const;
    const started = this.#startedOrder, ended = this.#endedOrder;
    new Counter({
      name: "flowd_flows_started_total",
      help: "Flows that started, by SciTags experiment and activity",
      labelNames,
      registers: registries,
      collect() {
        this.reset();
        for (const p of started) this.inc(p.labels, p.started);
      },
    });
    new Counter({
      name: "flowd_flows_ended_total",
      help: "Flows that ended, by SciTags experiment and activity",
      labelNames,
      registers: registries,
      collect() {
        this.reset();
        for (const p of ended) this.inc(p.labels, p.ended);
      },
    });
    new Gauge({
      name: "flowd_flows_active",
      help: "Flows started and not yet ended, by SciTags experiment and activity",
      labelNames,
      registers: registries,
      collect() {
        this.reset();
        for (const p of started) this.set(p.labels, p.active);
      },
    });
  }

  #pair(event: FlowEvent): PairCounts {
    // Consecutive events mostly share their ids; a pair's labels never change once given (`of`).
    const last = this.#last;
    if (last !== undefined && event.experimentId === this.#lastExp && event.activityId === this.#lastAct) {
      return last;
    }
    const pair = this.#pairOf(event);
    this.#last = pair;
    this.#lastExp = event.experimentId;
    this.#lastAct = event.activityId;
    return pair;
  }

  #pairOf(event: FlowEvent): PairCounts {
    const labels = this.labels.of(event);
    let pair = this.#pairs.get(labels);
    if (pair === undefined) this.#pairs.set(labels, pair = { labels, started: 0, ended: 0, active: 0 });
    return pair;
  }

  /**
   * Counts a start or end event. The active gauge follows the flows seen starting: an end of a flow never
   * seen (or already ended) does not decrement it, and a repeated start does not count it twice.
   */
  observe(event: FlowEvent): void {
    const pair = this.#pair(event); // for every state: an ongoing event's pair is admitted too, as before
    if (event.state === "start") {
      if (pair.started++ === 0) this.#startedOrder.push(pair);
      const key = flowKey(event);
      const previous = this.#open.get(key);
      if (previous) previous.active--;
      else if (this.#open.size >= this.capacity) this.#forgetOldest();
      this.#open.set(key, pair);
      pair.active++;
    } else if (event.state === "end") {
      if (pair.ended++ === 0) this.#endedOrder.push(pair);
      const key = flowKey(event);
      const opened = this.#open.get(key);
      if (opened) {
        this.#open.delete(key);
        opened.active--; // the labels it was counted under, even if the end names other ids
      }
    }
  }

  #forgetOldest(): void {
    for (const [key, pair] of this.#open) {
      this.#open.delete(key);
      pair.active--;
      return;
    }
  }
}

/** RTT buckets in seconds: 50 us (loopback) to 2.5 s (satellite paths, bufferbloat). */
export const RTT_BUCKETS = [0.00005, 0.0002, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5];

type Direction = "sent" | "acked" | "received" | "retransmitted";
const DIRECTIONS: readonly Direction[] = ["sent", "acked", "received", "retransmitted"];
const DIRECTION_HELP: Record<Direction, string> = {
  sent: "Bytes the enriched flows sent, retransmissions included",
  acked: "Bytes of the enriched flows acknowledged by their peers",
  received: "Bytes the enriched flows received",
  retransmitted: "Bytes the enriched flows retransmitted",
};

/** What one (exp, act) pair has accumulated. */
interface PairTotals {
  readonly labels: string;
  readonly bytes: Record<Direction, number>;
  /** Cumulative counts per bucket bound, then +Inf. */
  readonly buckets: Float64Array;
  rttSum: number;
}

/**
 * Byte and RTT aggregates of one enricher flavour, fed by its samples. Kept in plain numbers and
 * rendered at scrape time: going through prom-client's labelled metrics cost several microseconds per
 * sample, which with thousands of flows per period added up.
 */
/** What a flow's previous sample left: its pair (for that start event) and its byte counters. */
interface FlowTotals {
  flow: FlowEvent;
  pair: PairTotals;
  /** sent, acked, received, retransmitted (exact as numbers below 2^53 bytes). */
  readonly last: Float64Array;
}

export class TrafficAggregates {
  readonly #pairs = new Map<string, PairTotals>();
  readonly #last = new Map<string, FlowTotals>();
  #samples = 0;

  constructor(private readonly labels: IdPairLabels) {}

  /** Adds what a flow moved since its previous sample, and its RTT. */
  observe(key: string, sample: EnrichmentSample): void {
    this.#samples++;
    const t = sample.info.tcpInfo;
    if (!t) return;
    let flow = this.#last.get(key);
    if (flow === undefined) {
      flow = {
        flow: sample.flow,
        pair: this.#pairOf(sample.flow),
        last: new Float64Array(DIRECTIONS.length),
      };
      this.#last.set(key, flow);
    } else if (flow.flow !== sample.flow) {
      // The 5-tuple started again (perhaps with other ids); its counters carry on as before.
      flow.flow = sample.flow;
      flow.pair = this.#pairOf(sample.flow);
    }
    const pair = flow.pair, last = flow.last, bytes = pair.bytes;
    // A smaller value means another socket took the 5-tuple: count it from zero.
    const sent = Number(t.bytesSent), acked = Number(t.bytesAcked);
    const received = Number(t.bytesRecv), retransmitted = Number(t.bytesRetrans);
    bytes.sent += sent >= last[0]! ? sent - last[0]! : sent;
    bytes.acked += acked >= last[1]! ? acked - last[1]! : acked;
    bytes.received += received >= last[2]! ? received - last[2]! : received;
    bytes.retransmitted += retransmitted >= last[3]! ? retransmitted - last[3]! : retransmitted;
    last[0] = sent;
    last[1] = acked;
    last[2] = received;
    last[3] = retransmitted;
    if (t.rtt > 0) {
      const seconds = t.rtt / 1e6;
      pair.rttSum += seconds;
      for (let i = 0; i < RTT_BUCKETS.length; i++) if (seconds <= RTT_BUCKETS[i]!) pair.buckets[i]!++;
      pair.buckets[RTT_BUCKETS.length]!++;
    }
  }

  #pairOf(flow: FlowEvent): PairTotals {
    const { exp, act } = this.labels.of(flow);
    const pairKey = `${exp}/${act}`;
    let pair = this.#pairs.get(pairKey);
    if (!pair) {
      pair = {
        labels: `exp="${exp}",act="${act}"`,
        bytes: { sent: 0, acked: 0, received: 0, retransmitted: 0 },
        buckets: new Float64Array(RTT_BUCKETS.length + 1),
        rttSum: 0,
      };
      this.#pairs.set(pairKey, pair);
    }
    return pair;
  }

  /** Forgets a flow's last counters (it ended). */
  forget(key: string): void {
    this.#last.delete(key);
  }

  /** The families in the text exposition format. */
  render(): string {
    const out: string[] = [];
    for (const d of DIRECTIONS) {
      const name = `flowd_tcp_${d}_bytes_total`;
      out.push(
        `# HELP ${name} ${DIRECTION_HELP[d]}, by SciTags experiment and activity`,
        `# TYPE ${name} counter`,
      );
      for (const p of this.#pairs.values()) out.push(`${name}{${p.labels}} ${p.bytes[d]}`);
    }
    const h = "flowd_tcp_rtt_seconds";
    out.push(
      `# HELP ${h} Smoothed round-trip time of the enriched flows at each sample, by SciTags experiment and activity`,
      `# TYPE ${h} histogram`,
    );
    for (const p of this.#pairs.values()) {
      RTT_BUCKETS.forEach((le, i) => out.push(`${h}_bucket{${p.labels},le="${le}"} ${p.buckets[i]}`));
      const count = p.buckets[RTT_BUCKETS.length];
      out.push(`${h}_bucket{${p.labels},le="+Inf"} ${count}`, `${h}_sum{${p.labels}} ${p.rttSum}`);
      out.push(`${h}_count{${p.labels}} ${count}`);
    }
    out.push(
      "# HELP flowd_enrichment_samples_total Enrichment samples received",
      "# TYPE flowd_enrichment_samples_total counter",
      `flowd_enrichment_samples_total ${this.#samples}`,
    );
    return out.join("\n") + "\n";
  }
}
