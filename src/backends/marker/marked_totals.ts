/**
 * Packets and bytes the marker marked per (experiment, activity), for `flowd_marked_packets_total` and
 * `flowd_marked_bytes_total`. A flow's counters live in its kernel counter slot only while it is marked;
 * when it ends (or is evicted, or match-all changes tags) its final counts are added here, so the totals
 * never go down when a slot is reused. Scrapes add the open flows' current counts to these.
 * At most MAX_TOTAL_PAIRS pairs are told apart; the rest count under "other", as the metrics' aggregates do.
 */
import type { FlowCounters } from "./layout.ts";

export const MAX_TOTAL_PAIRS = 1024;
export const OTHER_PAIR = "other";

export interface MarkedTotal {
  readonly exp: string;
  readonly act: string;
  packets: bigint;
  bytes: bigint;
}

export class MarkedTotals {
  readonly #retired = new Map<string, MarkedTotal>();

  /** Adds a finished flow's (or match-all period's) counts. */
  retire(ids: { experimentId: number; activityId: number }, counters: FlowCounters | undefined): void {
    if (!counters || (counters.packets === 0n && counters.bytes === 0n)) return;
    const t = this.#entry(this.#retired, ids);
    t.packets += counters.packets;
    t.bytes += counters.bytes;
  }

  /** The totals: retired counts plus those of the open flows given, per pair (a fresh map each call). */
  withOpen(
    open: Iterable<{ ids: { experimentId: number; activityId: number }; counters: FlowCounters | undefined }>,
  ): MarkedTotal[] {
    const out = new Map<string, MarkedTotal>();
    for (const [k, t] of this.#retired) out.set(k, { ...t });
    for (const { ids, counters } of open) {
      if (!counters) continue;
      const t = this.#entry(out, ids);
      t.packets += counters.packets;
      t.bytes += counters.bytes;
    }
    return [...out.values()];
  }

  #entry(map: Map<string, MarkedTotal>, ids: { experimentId: number; activityId: number }): MarkedTotal {
    let key = `${ids.experimentId}/${ids.activityId}`;
    let t = map.get(key);
    if (t) return t;
    const known = map.size < MAX_TOTAL_PAIRS;
    if (!known) key = OTHER_PAIR;
    t = map.get(key);
    if (!t) {
      t = known
        ? { exp: String(ids.experimentId), act: String(ids.activityId), packets: 0n, bytes: 0n }
        : { exp: OTHER_PAIR, act: OTHER_PAIR, packets: 0n, bytes: 0n };
      map.set(key, t);
    }
    return t;
  }
}
