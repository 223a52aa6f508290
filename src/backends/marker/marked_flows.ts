/**
 * The flows the marker's kernel map holds, in the order they started, so that a full map is handled by
 * a policy instead of silently: `evictOldest` forgets the oldest-started flow to make room (flows whose
 * end never came are the usual reason a map fills up), `refuse` leaves the new flow unmarked.
 */
import { type FlowEvent, flowKey } from "../../core/flow_event.ts";

/** What to do with a new flow when the map is full (`backends.marker.whenFull`). */
export type WhenFull = "evictOldest" | "refuse";

/** What `admit` decided for a flow that starts. */
export type Admission =
  | { readonly kind: "new" }
  | { readonly kind: "again" }
  | { readonly kind: "evict"; readonly victim: FlowEvent }
  | { readonly kind: "refuse" };

/** Open marked flows by key, oldest first (a Map keeps insertion order). */
export class MarkedFlows {
  readonly #flows = new Map<string, FlowEvent>();

  constructor(readonly capacity: number, readonly whenFull: WhenFull) {}

  get size(): number {
    return this.#flows.size;
  }

  /**
   * Decides for a start and records it (unless refused): a flow already open is "again" (it keeps its
   * place in the map; its start order is renewed), a new one "new", or "evict" naming the flow that
   * must leave the kernel map first, or "refuse".
   */
  admit(flow: FlowEvent): Admission {
    const key = flowKey(flow);
    if (this.#flows.has(key)) {
      this.#flows.delete(key);
      this.#flows.set(key, flow);
      return { kind: "again" };
    }
    if (this.#flows.size < this.capacity) {
      this.#flows.set(key, flow);
      return { kind: "new" };
    }
    if (this.whenFull === "refuse") return { kind: "refuse" };
    const [oldestKey, victim] = this.#flows.entries().next().value!;
    this.#flows.delete(oldestKey);
    this.#flows.set(key, flow);
    return { kind: "evict", victim };
  }

  /** Forgets a flow that ended (or whose map update failed); false when it was not recorded. */
  forget(flow: Pick<FlowEvent, "protocol" | "src" | "dst">): boolean {
    return this.#flows.delete(flowKey(flow));
  }
}
