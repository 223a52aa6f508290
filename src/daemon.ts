/**
 * The running daemon: one event bus for its whole life (so the flow table and every backend queue
 * survive reloads), the supervisor of its components, and the SciTags registry their names resolve with.
 * A reload hands the supervisor the new configuration's specs; what did not change keeps running.
 */
import type { Config } from "./config/schema.ts";
import { EventBus } from "./core/bus.ts";
import { errorMessage } from "./core/errors.ts";
import type { ComponentStatus } from "./core/component.ts";
import { type ComponentState, type DaemonPhase, type Readiness, statusOf } from "./core/readiness.ts";
import { type ReconcileReport, type StopBudget, Supervisor } from "./core/supervisor.ts";
import { type RegistrySource, registrySourceFor } from "./scitags/registry_source.ts";
import type { Registry } from "./scitags/registry.ts";
import { componentSpecs } from "./wiring.ts";
import { FlowCounterHub } from "./core/flow_counters.ts";

/** Per-backend queue length and flows remembered. */
const BUS_QUEUE_CAPACITY = 10_000;
const FLOW_TABLE_CAPACITY = 1_000_000;

/** The outcome of one reload: what changed, or why nothing did. */
export type ReloadOutcome = { ok: true; report: ReconcileReport } | { ok: false; reason: string };

/** The components of a configuration around one long-lived bus. */
export class Daemon {
  readonly bus = new EventBus({ queueCapacity: BUS_QUEUE_CAPACITY, flowTableCapacity: FLOW_TABLE_CAPACITY });
  #supervisor: Supervisor | undefined;
  #registry: RegistrySource;
  #config: Config;
  #phase: DaemonPhase = "starting";
  /** Per-flow counts from the marker to their readers (ipfix), across reloads. */
  readonly #flowCounters = new FlowCounterHub();

  private constructor(config: Config, private readonly hostname: string) {
    this.#config = config;
    this.#registry = registrySourceFor(config);
  }

  /** The configuration running now. */
  get config(): Config {
    return this.#config;
  }

  /** The SciTags registry names resolve with now. */
  get registry(): Registry {
    return this.#registry.current();
  }

  /** Where the registry in use came from: "embedded", "cache PATH" or the URL. */
  get registryOrigin(): string {
    return this.#registry.origin;
  }

  /** Where the daemon is, and how each component is doing: what /healthz and /readyz answer from. */
  readiness(): Readiness {
    const c = this.#supervisor?.components;
    if (!c) return { phase: this.#phase, components: [] };
    const of =
      (kind: ComponentState["kind"]) => (part: { readonly name: string; status?(): ComponentStatus }) => {
        const s = statusOf(part);
        return { kind, name: part.name, state: s.state, ...(s.reason ? { reason: s.reason } : {}) };
      };
    return {
      phase: this.#phase,
      components: [
        ...c.plugins.map(of("plugin")),
        ...c.backends.map(of("backend")),
        ...c.enrichers.map(of("enricher")),
      ],
    };
  }

  /** The supervisor of the running components. */
  get supervisor(): Supervisor {
    if (!this.#supervisor) throw new Error("the daemon has not started");
    return this.#supervisor;
  }

  /** Builds and starts every component of `config`; throws a `StartupError` leaving nothing running. */
  static async start(config: Config, hostname = Deno.hostname()): Promise<Daemon> {
    const daemon = new Daemon(config, hostname);
    // Refreshing (when configured) runs in the background: names resolve with the cached or embedded copy meanwhile.
    daemon.#registry.start();
    try {
      daemon.#supervisor = await Supervisor.fromSpecs(daemon.#specs(config), daemon.bus);
      await daemon.#supervisor.start();
      daemon.#phase = "running";
    } catch (err) {
      await daemon.#registry.stop();
      throw err;
    }
    return daemon;
  }

  /** Applies a new configuration; a refused one leaves the running components as they were. */
  async reload(next: Config, budget: StopBudget): Promise<ReloadOutcome> {
    const registryChanged = JSON.stringify(next.registry) !== JSON.stringify(this.#config.registry);
    const previousRegistry = this.#registry;
    if (registryChanged) {
      this.#registry = registrySourceFor(next);
      this.#registry.start();
    }
    try {
      const report = await this.supervisor.reconcile(this.#specs(next), budget);
      this.#config = next;
      if (registryChanged) await previousRegistry.stop();
      return { ok: true, report };
    } catch (err) {
      if (registryChanged) {
        await this.#registry.stop();
        this.#registry = previousRegistry;
      }
      return { ok: false, reason: errorMessage(err) };
    }
  }

  /** Stops everything within the budget; false when something did not stop cleanly. */
  async stop(budget: StopBudget): Promise<boolean> {
    this.#phase = "stopping";
    const clean = this.#supervisor ? await this.#supervisor.stop(budget) : true;
    await this.#registry.stop();
    return clean;
  }

  #specs(config: Config) {
    return componentSpecs(config, {
      hostname: this.hostname,
      // Read through the daemon, so kept components see a registry a reload brought in.
      registry: () => this.#registry.current(),
      health: () => this.#supervisor?.health() ?? [],
      readiness: () => this.readiness(),
      flowCounters: this.#flowCounters,
    });
  }
}
