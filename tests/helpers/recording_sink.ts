/** An EventSink that records what it is given, and can be told to refuse. */
import type { EmitResult, EventSink } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { scaled } from "./time_scale.ts";

export class RecordingSink implements EventSink {
  readonly events: FlowEvent[] = [];
  refuseWith: string | undefined;
  #waiters: { n: number; resolve: () => void }[] = [];

  emit(event: FlowEvent): EmitResult {
    if (this.refuseWith !== undefined) return { accepted: false, reason: this.refuseWith };
    this.events.push(event);
    this.#waiters = this.#waiters.filter((w) => {
      if (this.events.length >= w.n) w.resolve();
      return this.events.length < w.n;
    });
    return { accepted: true };
  }

  /** Resolves once `n` events have arrived; rejects after `timeoutMs`. */
  waitFor(n: number, timeoutMs = 5000): Promise<void> {
    if (this.events.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out waiting for ${n} events, got ${this.events.length}`)),
        scaled(timeoutMs),
      );
      this.#waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }
}
