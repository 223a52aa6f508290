/**
 * A host name kept resolved in the background: looked up at start and again every `refreshMs`, each
 * lookup bounded by `timeoutMs`, with the last good answer kept through failures and a failed first
 * lookup retried after `retryMs` (a negative cache), so that nothing that sends to the host ever waits
 * on DNS, and a resolver that never answers costs one pending lookup at a time, not one per event.
 */
import { errorMessage } from "../core/errors.ts";
import { IpAddress } from "./ip.ts";

/** Timing of a `BackgroundResolver`. */
export interface ResolverTiming {
  /** How long an answer is used before it is looked up again. */
  refreshMs: number;
  /** How long one lookup may take before it counts as failed. */
  timeoutMs: number;
  /** After a failure, how long before the next try. */
  retryMs: number;
}

/** The resolver's defaults: refresh every minute, give up a lookup after 5 s, retry after 10 s. */
export const DEFAULT_RESOLVER_TIMING: ResolverTiming = {
  refreshMs: 60_000,
  timeoutMs: 5_000,
  retryMs: 10_000,
};

/** How a name turns into addresses; replaceable in tests. */
export type LookupFn = (host: string) => Promise<string>;

// node:dns is imported at the first lookup: a configuration that names no host never pays for it.
const systemLookup: LookupFn = async (host) =>
  (await (await import("node:dns/promises")).lookup(host)).address;

/** Keeps one host name resolved; `current()` never waits. */
export class BackgroundResolver {
  #address: IpAddress | undefined;
  #lastError: string | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lookups = 0;
  #failures = 0;
  #stopped = true;
  #pending = false;
  /** The system lookup underway; a hung one is waited on again rather than started twice. */
  #inFlight: Promise<string> | undefined;

  constructor(
    readonly host: string,
    private readonly timing: ResolverTiming = DEFAULT_RESOLVER_TIMING,
    private readonly lookupFn: LookupFn = systemLookup,
    /** Called after every failed lookup (the caller logs, rate-limited). */
    private readonly onFailure: (err: string, haveAddress: boolean) => void = () => {},
  ) {}

  /** The address to use now: the last good answer, or undefined while none is known. */
  current(): IpAddress | undefined {
    return this.#address;
  }

  /** Lookups made and failed so far (for health metrics). */
  get counts(): { lookups: number; failures: number } {
    return { lookups: this.#lookups, failures: this.#failures };
  }

  /** The reason of the last failed lookup, while no address is known. */
  get lastError(): string | undefined {
    return this.#address === undefined ? this.#lastError : undefined;
  }

  /**
   * Starts resolving. Resolves once the first lookup has ended or `waitMs` has passed, whichever comes
   * first (start-up may give a quick answer a moment, but never waits on a resolver that does not answer).
   */
  async start(waitMs = 0): Promise<void> {
    this.#stopped = false;
    const first = this.#refresh();
    if (waitMs <= 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([first, new Promise<void>((r) => timer = setTimeout(r, waitMs))]);
    clearTimeout(timer);
  }

  /** Stops refreshing; a lookup still pending is abandoned (its answer is ignored). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #refresh(): Promise<void> {
    if (this.#stopped || this.#pending) return;
    this.#pending = true;
    this.#lookups++;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let next = this.timing.refreshMs;
    try {
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${this.timing.timeoutMs} ms`)),
          this.timing.timeoutMs,
        );
      });
      // The lookup itself cannot be cancelled: a late answer is not waited for, and while it hangs no
      // second one is started (each would hold a resolver thread).
      if (this.#inFlight === undefined) {
        const started = this.lookupFn(this.host);
        this.#inFlight = started;
        started.catch(() => {}).finally(() => {
          if (this.#inFlight === started) this.#inFlight = undefined;
        });
      }
      const text = await Promise.race([this.#inFlight, timedOut]);
      if (this.#stopped) return;
      this.#address = IpAddress.parse(text);
      this.#lastError = undefined;
    } catch (err) {
      if (this.#stopped) return;
      this.#failures++;
      this.#lastError = errorMessage(err);
      next = this.timing.retryMs;
      this.onFailure(this.#lastError, this.#address !== undefined);
    } finally {
      clearTimeout(timer);
      this.#pending = false;
      if (!this.#stopped) {
        this.#timer = setTimeout(() => void this.#refresh(), next);
        Deno.unrefTimer(this.#timer);
      }
    }
  }
}
