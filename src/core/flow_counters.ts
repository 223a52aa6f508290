/**
 * Per-flow counters as one part of the daemon offers them to another: the marker counts the packets
 * and bytes it marked in the kernel; an exporter (ipfix) reads them without knowing the marker. The
 * daemon owns one hub for its whole life: counting backends register with it while they run and hand it
 * the final counts of each flow they stop counting; readers ask it. A reload that replaces the marker
 * therefore leaves readers untouched.
 */
import { type FlowEvent, flowKey } from "./flow_event.ts";

/** A flow's counts so far, as the counting source saw its packets (egress from this host). */
export interface FlowCounts {
  readonly packets: bigint;
  readonly bytes: bigint;
  /** First and last counted packet, ms since the epoch; undefined when none was seen. */
  readonly firstMs: number | undefined;
  readonly lastMs: number | undefined;
  /** The IPv6 flow label the source wrote into the flow's packets, when it writes one. */
  readonly flowLabel?: number;
  /** ifindex the packets left through, when the source knows it (a single marked interface). */
  readonly egressInterface?: number;
}

/** Why a source stopped counting a flow: its end event, or room made for a newer flow. */
export type RetireReason = "end" | "evicted";

/** Something that counts flows now (the marker's kernel map). */
export interface FlowCounterSource {
  /** The flow's counts read now; undefined when this source does not count it. */
  countsOf(flow: FlowEvent): FlowCounts | undefined;
}

/** Final counts kept for readers that come after the source let a flow go. */
interface Retired {
  readonly counts: FlowCounts;
  readonly reason: RetireReason;
}

/** Recently retired flows kept (oldest dropped first); enough for any reader lagging a queue behind. */
const RETIRED_KEPT = 16_384;

/** The daemon's one meeting point of counting sources and their readers. */
export class FlowCounterHub implements FlowCounterSource {
  readonly #sources = new Set<FlowCounterSource>();
  readonly #retired = new Map<string, Retired>();
  #readers = 0;

  /** Adds a running source; the returned function removes it (at the source's stop). */
  register(source: FlowCounterSource): () => void {
    this.#sources.add(source);
    return () => this.#sources.delete(source);
  }

  /** A reader of final counts comes (ipfix); until one does, retirements are not kept. Returns its leave. */
  addReader(): () => void {
    this.#readers++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (--this.#readers === 0) this.#retired.clear();
    };
  }

  /** Whether a reader wants final counts (so a source may skip reading what nobody takes). */
  get hasReaders(): boolean {
    return this.#readers > 0;
  }

  /** Whether any source counts flows now. */
  get counting(): boolean {
    return this.#sources.size > 0;
  }

  countsOf(flow: FlowEvent): FlowCounts | undefined {
    for (const s of this.#sources) {
      const c = s.countsOf(flow);
      if (c) return c;
    }
    return undefined;
  }

  /** A source no longer counts the flow: its final counts, for a reader that has not seen the end yet. */
  retire(flow: FlowEvent, counts: FlowCounts, reason: RetireReason): void {
    if (this.#readers === 0) return;
    const key = flowKey(flow);
    this.#retired.delete(key);
    if (this.#retired.size >= RETIRED_KEPT) this.#retired.delete(this.#retired.keys().next().value!);
    this.#retired.set(key, { counts, reason });
  }

  /** Takes the final counts of a flow a source let go (once); undefined when none are kept. */
  takeRetired(flow: FlowEvent): Retired | undefined {
    const key = flowKey(flow);
    const r = this.#retired.get(key);
    if (r) this.#retired.delete(key);
    return r;
  }

  /** A flow started again: final counts of an earlier flow of the same 5-tuple no longer apply. */
  forgetRetired(flow: FlowEvent): void {
    this.#retired.delete(flowKey(flow));
  }
}
