/**
 * The flows the marker's kernel map holds, in the order they started, so that a full map is handled by
 * a policy instead of silently: `evictOldest` forgets the oldest-started flow to make room (flows whose
 * end never came are the usual reason a map fills up), `refuse` leaves the new flow unmarked. Each flow
 * owns a slot of the per-CPU counter array for as long as it is recorded here.
 */
import { type FlowEvent, flowKey } from "../../core/flow_event.ts";
import { CounterSlots } from "./counter_slots.ts";

/** What to do with a new flow when the map is full (`backends.marker.whenFull`). */
export type WhenFull = "evictOldest" | "refuse";

/** A recorded flow: the start event that announced it (the latest one) and its counter slot. */
export interface MarkedFlow {
  readonly event: FlowEvent;
  readonly counterSlot: number;
}

/**
 * What `admit` decided for a flow that starts. `resetCounters`: the slot held an earlier flow's counts,
 * zero it before the new flow's entry is written.
 */
export type Admission =
  | { readonly kind: "new"; readonly counterSlot: number; readonly resetCounters: boolean }
  | { readonly kind: "again"; readonly counterSlot: number }
  | {
    readonly kind: "evict";
    readonly victim: FlowEvent;
    /** The victim's counter slot, to be read before it is reset (it may be the new flow's slot). */
    readonly victimSlot: number;
    readonly counterSlot: number;
    readonly resetCounters: boolean;
  }
  | { readonly kind: "refuse" };

/** Open marked flows by key, oldest first (a Map keeps insertion order). */
export class MarkedFlows {
  readonly #flows = new Map<string, MarkedFlow>();
  readonly #slots: CounterSlots;

  constructor(readonly capacity: number, readonly whenFull: WhenFull) {
    this.#slots = new CounterSlots(capacity);
  }

  get size(): number {
    return this.#flows.size;
  }

  /** The recorded flows, oldest-started first. */
  values(): IterableIterator<MarkedFlow> {
    return this.#flows.values();
  }

  /**
   * Decides for a start and records it (unless refused): a flow already open is "again" (it keeps its
   * place in the map and its counters; its start order is renewed), a new one "new", or "evict" naming
   * the flow that must leave the kernel map first, or "refuse".
   */
  admit(flow: FlowEvent): Admission {
    const key = flowKey(flow);
    const open = this.#flows.get(key);
    if (open) {
      this.#flows.delete(key);
      this.#flows.set(key, { event: flow, counterSlot: open.counterSlot });
      return { kind: "again", counterSlot: open.counterSlot };
    }
    if (this.#flows.size < this.capacity) {
      const taken = this.#slots.take()!; // as many slots as places
      this.#flows.set(key, { event: flow, counterSlot: taken.slot });
      return { kind: "new", counterSlot: taken.slot, resetCounters: taken.reused };
    }
    if (this.whenFull === "refuse") return { kind: "refuse" };
    const [oldestKey, victim] = this.#flows.entries().next().value!;
    this.#flows.delete(oldestKey);
    this.#slots.release(victim.counterSlot);
    const taken = this.#slots.take()!;
    this.#flows.set(key, { event: flow, counterSlot: taken.slot });
    return {
      kind: "evict",
      victim: victim.event,
      victimSlot: victim.counterSlot,
      counterSlot: taken.slot,
      resetCounters: taken.reused,
    };
  }

  /** Takes back the flows an earlier run left in the map, oldest first; only on an empty table. */
  adopt(flows: readonly MarkedFlow[]): void {
    if (this.#flows.size !== 0) throw new Error("flows can only be adopted into an empty table");
    this.#slots.claim(flows.map((f) => f.counterSlot));
    for (const f of flows) this.#flows.set(flowKey(f.event), f);
  }

  /** Forgets a flow that ended (or whose map update failed); its counter slot, or undefined when unknown. */
  forget(flow: Pick<FlowEvent, "protocol" | "src" | "dst">): number | undefined {
    return this.remove(flow)?.counterSlot;
  }

  /** Forgets a flow and returns what was recorded of it (its start event and counter slot). */
  remove(flow: Pick<FlowEvent, "protocol" | "src" | "dst">): MarkedFlow | undefined {
    const key = flowKey(flow);
    const open = this.#flows.get(key);
    if (!open) return undefined;
    this.#flows.delete(key);
    this.#slots.release(open.counterSlot);
    return open;
  }
}
