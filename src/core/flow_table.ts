/**
 * The flows the core has seen start and not yet end, so that end events carry their start time even
 * when the plugin does not know it (the original only restored it when enrichers were on).
 */
import { type FlowEvent, flowKey } from "./flow_event.ts";
import type { Micros } from "./time.ts";

/** What is remembered of a started flow: its start event, as the core completed it (with its time). */
export type StartedFlow = FlowEvent & { readonly startTime: Micros };

/**
 * A bounded map from flow key to its start; the oldest entry goes first when full. The start event itself is
 * the entry (no wrapper): it is the largest part of the daemon's memory per open flow.
 */
export class FlowTable {
  #flows = new Map<string, StartedFlow>();
  #evicted = 0;

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.#flows.size;
  }

  /** How many flows were forgotten because the table was full. */
  get evicted(): number {
    return this.#evicted;
  }

  /** Records a start; returns the flow it replaced (same 5-tuple started twice), if any. */
  started(start: StartedFlow): StartedFlow | undefined {
    const key = flowKey(start);
    const previous = this.#flows.get(key);
    if (previous !== undefined) this.#flows.delete(key); // re-insert to move it to the newest position
    if (this.#flows.size >= this.capacity) {
      const oldest = this.#flows.keys().next().value;
      if (oldest !== undefined) {
        this.#flows.delete(oldest);
        this.#evicted++;
      }
    }
    this.#flows.set(key, start);
    return previous;
  }

  /** The start of a flow, if it is being tracked. */
  get(flow: Pick<FlowEvent, "protocol" | "src" | "dst">): StartedFlow | undefined {
    return this.#flows.get(flowKey(flow));
  }

  /** Forgets a flow and returns what was known of it. */
  ended(flow: Pick<FlowEvent, "protocol" | "src" | "dst">): StartedFlow | undefined {
    const key = flowKey(flow);
    const entry = this.#flows.get(key);
    this.#flows.delete(key);
    return entry;
  }

  /** All tracked flows, oldest first. */
  values(): IterableIterator<StartedFlow> {
    return this.#flows.values();
  }
}
