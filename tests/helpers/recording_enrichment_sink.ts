/** An EnrichmentSink that records samples and lets a test wait for one that satisfies a condition. */
import type { EnrichmentSample, EnrichmentSink } from "../../src/core/component.ts";
import { scaled } from "./time_scale.ts";

export class RecordingEnrichmentSink implements EnrichmentSink {
  readonly samples: EnrichmentSample[] = [];
  #waiters = new Set<() => void>();

  publish(sample: EnrichmentSample): void {
    this.samples.push(sample);
    for (const w of this.#waiters) w();
  }

  /** Resolves with the first recorded sample (from index `from`) for which `test` holds. */
  waitFor(
    what: string,
    test: (s: EnrichmentSample) => boolean,
    opts: { timeoutMs?: number; from?: number } = {},
  ): Promise<EnrichmentSample> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.samples.slice(opts.from ?? 0).find(test);
        if (hit === undefined) return;
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(hit);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; ${this.samples.length} samples so far`));
      }, scaled(opts.timeoutMs ?? 10_000));
      this.#waiters.add(check);
      check();
    });
  }
}
