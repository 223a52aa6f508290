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

/**
 * Open marked flows, oldest first. Per flow only a map entry from its key to its counter slot (a Map keeps
 * insertion order) and its start event in a slot-indexed array: no record object per flow.
 */
export class MarkedFlows {
  readonly #slotOf = new Map<string, number>();
  /** The start event of the flow owning each counter slot (undefined while the slot is free). */
  readonly #events: (FlowEvent | undefined)[] = [];
  readonly #slots: CounterSlots;

  constructor(readonly capacity: number, readonly whenFull: WhenFull) {
    this.#slots = new CounterSlots(capacity);
  }

  get size(): number {
    return this.#slotOf.size;
  }

  /** The recorded flows, oldest-started first. */
  *values(): IterableIterator<MarkedFlow> {
    for (const counterSlot of this.#slotOf.values()) yield { event: this.#events[counterSlot]!, counterSlot };
  }

  /**
   * Decides for a start and records it (unless refused): a flow already open is "again" (it keeps its
   * place in the map and its counters; its start order is renewed), a new one "new", or "evict" naming
   * the flow that must leave the kernel map first, or "refuse".
   */
  admit(flow: FlowEvent): Admission {
    const key = flowKey(flow);
    const open = this.#slotOf.get(key);
    if (open !== undefined) {
      this.#slotOf.delete(key);
      this.#record(key, open, flow);
      return { kind: "again", counterSlot: open };
    }
    if (this.#slotOf.size < this.capacity) {
      const taken = this.#slots.take()!; // as many slots as places
      this.#record(key, taken.slot, flow);
      return { kind: "new", counterSlot: taken.slot, resetCounters: taken.reused };
    }
    if (this.whenFull === "refuse") return { kind: "refuse" };
    const [oldestKey, victimSlot] = this.#slotOf.entries().next().value!;
    const victim = this.#events[victimSlot]!;
    this.#slotOf.delete(oldestKey);
    this.#events[victimSlot] = undefined;
    this.#slots.release(victimSlot);
    const taken = this.#slots.take()!;
    this.#record(key, taken.slot, flow);
    return { kind: "evict", victim, victimSlot, counterSlot: taken.slot, resetCounters: taken.reused };
  }

  /** Takes back the flows an earlier run left in the map, oldest first; only on an empty table. */
  adopt(flows: readonly MarkedFlow[]): void {
    if (this.#slotOf.size !== 0) throw new Error("flows can only be adopted into an empty table");
    this.#slots.claim(flows.map((f) => f.counterSlot));
    for (const f of flows) this.#record(flowKey(f.event), f.counterSlot, f.event);
  }

  /** Forgets a flow that ended (or whose map update failed); its counter slot, or undefined when unknown. */
  forget(flow: Pick<FlowEvent, "protocol" | "src" | "dst">): number | undefined {
    return this.remove(flow)?.counterSlot;
  }

  /** Forgets a flow and returns what was recorded of it (its start event and counter slot). */
  remove(flow: Pick<FlowEvent, "protocol" | "src" | "dst">): MarkedFlow | undefined {
    const key = flowKey(flow);
    const counterSlot = this.#slotOf.get(key);
    if (counterSlot === undefined) return undefined;
    const event = this.#events[counterSlot]!;
    this.#slotOf.delete(key);
    this.#events[counterSlot] = undefined;
    this.#slots.release(counterSlot);
    return { event, counterSlot };
  }

  #record(key: string, slot: number, event: FlowEvent): void {
    this.#slotOf.set(key, slot);
    // Slots are handed out from 0 up, so the array grows by appending and stays dense.
    while (this.#events.length < slot) this.#events.push(undefined);
    this.#events[slot] = event;
  }
}
