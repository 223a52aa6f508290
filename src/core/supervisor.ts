/**
 * Starting and stopping the components in dependency order: backends first (sinks ready before
 * anything flows), then enrichers, then plugins; stopping in reverse, with the bus drained between
 * plugins and backends so events already accepted are still delivered.
 */
import type { Backend, Enricher, Plugin } from "./component.ts";
import { EventBus } from "./bus.ts";
import { errorMessage, StartupError } from "./errors.ts";
import { logger } from "./log.ts";
import type { HealthMetric } from "./health.ts";

/** The components of one daemon instance, each list in start order. */
export interface Components {
  backends: Backend[];
  enrichers: Enricher[];
  plugins: Plugin[];
}

/** Bounds for stopping. */
export interface StopBudget {
  /** Time the backends get to finish their queues. */
  drainMs: number;
  /** Time each component gets to stop. */
  componentMs: number;
}

const log = logger("core", "supervisor");

type Stoppable = { name: string; stop(): Promise<void> };

/** Owns the lifecycle of one set of components around one bus. */
export class Supervisor {
  readonly bus: EventBus;
  #started: { kind: string; part: Stoppable }[] = [];

  constructor(readonly components: Components, bus: EventBus) {
    this.bus = bus;
  }

  /** The bus's and every component's health metrics; a component that fails to report is skipped. */
  health(): HealthMetric[] {
    const out = this.bus.health();
    const { backends, enrichers, plugins } = this.components;
    for (const part of [...plugins, ...backends, ...enrichers]) {
      if (!part.health) continue;
      try {
        out.push(...part.health());
      } catch (err) {
        log.debug("component failed to report its health", { name: part.name, err: errorMessage(err) });
      }
    }
    return out;
  }

  /** Starts everything; on failure stops what was started and throws a `StartupError`. */
  async start(): Promise<void> {
    const { backends, enrichers, plugins } = this.components;
    try {
      for (const b of backends) {
        await this.#startOne("backend", b, () => b.start());
        this.bus.attachBackend(b);
      }
      for (const e of enrichers) {
        await this.#startOne("enricher", e, () => e.start(this.bus));
        this.bus.attachEnricher(e);
      }
      for (const p of plugins) await this.#startOne("plugin", p, () => p.start(this.bus));
    } catch (err) {
      await this.stop({ drainMs: 1000, componentMs: 5000 });
      throw err;
    }
  }

  async #startOne(kind: string, part: Stoppable, start: () => Promise<void>): Promise<void> {
    log.debug(`starting ${kind}`, { name: part.name });
    // Registered before start so a half-started component still gets its stop() (which must cope).
    this.#started.push({ kind, part });
    try {
      await start();
    } catch (err) {
      const msg = errorMessage(err);
      throw err instanceof StartupError
        ? err
        : new StartupError(`${kind} ${part.name} failed to start: ${msg}`, { cause: err });
    }
  }

  /** Stops plugins, drains the bus, stops enrichers and backends; never throws. Returns false if anything failed. */
  async stop(budget: StopBudget): Promise<boolean> {
    let clean = true;
    const started = this.#started.reverse();
    this.#started = [];
    const stopOne = async ({ kind, part }: { kind: string; part: Stoppable }) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const outcome = await Promise.race([
          part.stop().then(() => "stopped" as const),
          new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), budget.componentMs)),
        ]);
        if (outcome === "timeout") {
          clean = false;
          log.error(`${kind} did not stop in time`, { name: part.name, timeoutMs: budget.componentMs });
        } else {
          log.debug(`stopped ${kind}`, { name: part.name });
        }
      } catch (err) {
        clean = false;
        log.error(`${kind} failed to stop cleanly`, { name: part.name, err: errorMessage(err) });
      } finally {
        clearTimeout(timer);
      }
    };
    for (const s of started.filter((s) => s.kind === "plugin")) await stopOne(s);
    const abandoned = await this.bus.close(budget.drainMs);
    if (abandoned > 0) clean = false;
    for (const s of started.filter((s) => s.kind !== "plugin")) await stopOne(s);
    return clean;
  }
}
