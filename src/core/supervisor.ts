/**
 * Starting and stopping the components in dependency order: backends first (sinks ready before
 * anything flows), then enrichers, then plugins; stopping in reverse, with the bus drained between
 * plugins and backends so events already accepted are still delivered.
 *
 * A reload reconciles the running set with the new configuration's specs against the same bus: a
 * component whose settings did not change keeps running untouched (the named pipe keeps its FIFO, the
 * API its socket), one that can apply new settings in place does, the others are replaced, removed or
 * added. If a new component fails to start, everything this reload started is stopped and the previous
 * components are started again, so a refused reload leaves the daemon as it was.
 */
import type { Backend, ComponentSpec, Enricher, Plugin } from "./component.ts";
import { EventBus, type EventHold } from "./bus.ts";
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

/** What a reload did, by slot (configuration section). */
export interface ReconcileReport {
  kept: string[];
  reconfigured: string[];
  replaced: string[];
  added: string[];
  removed: string[];
}

const log = logger("core", "supervisor");

type Kind = "plugin" | "backend" | "enricher";
type Part = Plugin | Backend | Enricher;

/** One running (or half-started) component, with the spec it came from when it came from one. */
interface Entry {
  kind: Kind;
  part: Part;
  spec?: ComponentSpec;
  fingerprint?: string;
}

const START_ORDER: readonly Kind[] = ["backend", "enricher", "plugin"];

/** The settings a spec's component is built from, as comparable text (functions are left out). */
export function specFingerprint(spec: ComponentSpec): string {
  return JSON.stringify(spec.options);
}

/** Owns the lifecycle of one set of components around one bus. */
export class Supervisor {
  readonly bus: EventBus;
  /** What runs (or was being started), in start order. */
  #entries: Entry[] = [];

  constructor(components: Components, bus: EventBus) {
    this.bus = bus;
    this.#entries = [
      ...components.backends.map((part) => ({ kind: "backend" as const, part })),
      ...components.enrichers.map((part) => ({ kind: "enricher" as const, part })),
      ...components.plugins.map((part) => ({ kind: "plugin" as const, part })),
    ];
  }

  /** A supervisor for the components of `specs` (created, not started), so that reloads can compare them. */
  static async fromSpecs(specs: readonly ComponentSpec[], bus: EventBus): Promise<Supervisor> {
    const supervisor = new Supervisor({ backends: [], enrichers: [], plugins: [] }, bus);
    supervisor.#entries = sortByKind(await createAll(specs));
    return supervisor;
  }

  /** The components, by kind, in start order. */
  get components(): Components {
    return {
      backends: this.#entries.filter((e) => e.kind === "backend").map((e) => e.part as Backend),
      enrichers: this.#entries.filter((e) => e.kind === "enricher").map((e) => e.part as Enricher),
      plugins: this.#entries.filter((e) => e.kind === "plugin").map((e) => e.part as Plugin),
    };
  }

  /** The bus's and every component's health metrics; a component that fails to report is skipped. */
  health(): HealthMetric[] {
    const out = this.bus.health();
    for (const { part } of this.#entries) {
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
    const started: Entry[] = [];
    try {
      for (const entry of this.#entries) {
        started.push(entry); // a half-started component still gets its stop() (which must cope)
        await this.#startOne(entry, false);
      }
    } catch (err) {
      this.#entries = started;
      await this.stop({ drainMs: 1000, componentMs: 5000 });
      throw err;
    }
  }

  /**
   * Brings the running set to `specs` (see the module comment). Throws a `StartupError` when a new
   * component could not start, after restoring the previous set; the bus stays open throughout.
   */
  async reconcile(specs: readonly ComponentSpec[], budget: StopBudget): Promise<ReconcileReport> {
    const report: ReconcileReport = { kept: [], reconfigured: [], replaced: [], added: [], removed: [] };
    const previous = this.#entries;
    const bySlot = new Map<string, Entry>();
    for (const e of this.#entries) if (e.spec) bySlot.set(e.spec.slot, e);
    const nextSlots = new Set(specs.map((s) => s.slot));

    const next: Entry[] = [];
    const incoming: ComponentSpec[] = [];
    const outgoing: Entry[] = [];
    for (const spec of specs) {
      const old = bySlot.get(spec.slot);
      const fp = specFingerprint(spec);
      if (old && old.fingerprint === fp) {
        next.push({ ...old, spec });
        report.kept.push(spec.slot);
      } else if (old && old.kind === "plugin" && await reconfigured(old.part as Plugin, spec)) {
        next.push({ ...old, spec, fingerprint: fp });
        report.reconfigured.push(spec.slot);
      } else {
        incoming.push(spec);
        if (old) {
          outgoing.push(old);
          report.replaced.push(spec.slot);
        } else report.added.push(spec.slot);
      }
    }
    for (const e of this.#entries) {
      if (e.spec && !nextSlots.has(e.spec.slot)) {
        outgoing.push(e);
        report.removed.push(e.spec.slot);
      }
    }
    // Constructors validate and have no side effects: a failure here changes nothing.
    const created = await createAll(incoming);

    // A replaced backend's events from its detach to its successor's attach are held for the successor.
    const holds = new Map<string, EventHold>();
    await this.#stopOutgoing(outgoing, budget, new Set(report.replaced), holds);
    const started: Entry[] = [];
    try {
      for (const entry of sortByKind(created)) {
        started.push(entry);
        await this.#startOne(entry, true, holds);
      }
    } catch (err) {
      log.error("a reloaded component failed to start; restoring the previous ones", {
        err: errorMessage(err),
      });
      await this.#stopOutgoing(started, budget);
      try {
        await this.#restore(previous, next, outgoing, report, holds);
      } finally {
        for (const h of holds.values()) this.bus.release(h);
      }
      throw err;
    }
    for (const h of holds.values()) this.bus.release(h);
    this.#entries = sortByKind([...next, ...started], specs);
    return report;
  }

  /**
   * After a failed reload: plugins that took new settings in place get their old ones back, and the
   * components the reload stopped are started again from their old specs, in the old order.
   */
  async #restore(
    previous: Entry[],
    next: Entry[],
    outgoing: Entry[],
    report: ReconcileReport,
    holds?: Map<string, EventHold>,
  ): Promise<void> {
    const oldSpecs = previous.flatMap((e) => (e.spec ? [e.spec] : []));
    const kept: Entry[] = [];
    for (const entry of next) {
      const old = previous.find((e) => e.part === entry.part)!;
      if (report.reconfigured.includes(entry.spec!.slot)) await reconfigured(entry.part as Plugin, old.spec!);
      kept.push(old);
    }
    const restored = await createAll(outgoing.map((e) => e.spec!));
    const back: Entry[] = [];
    try {
      for (const entry of sortByKind(restored)) {
        back.push(entry);
        await this.#startOne(entry, true, holds);
      }
    } finally {
      this.#entries = sortByKind([...kept, ...back], oldSpecs);
    }
  }

  /** Stops plugins, drains the bus, stops enrichers and backends; never throws. Returns false if anything failed. */
  async stop(budget: StopBudget): Promise<boolean> {
    let clean = true;
    const entries = [...this.#entries].reverse();
    this.#entries = [];
    for (const e of entries.filter((e) => e.kind === "plugin")) clean = await stopOne(e, budget) && clean;
    const abandoned = await this.bus.close(budget.drainMs);
    if (abandoned > 0) clean = false;
    for (const e of entries.filter((e) => e.kind !== "plugin")) clean = await stopOne(e, budget) && clean;
    return clean;
  }

  /** Stops components a reload takes out (plugins first), detaching them from the bus that stays open. */
  async #stopOutgoing(
    entries: readonly Entry[],
    budget: StopBudget,
    replaced?: ReadonlySet<string>,
    holds?: Map<string, EventHold>,
  ): Promise<void> {
    const ordered = [...sortByKind([...entries])].reverse();
    for (const e of ordered) {
      if (e.kind === "enricher") this.bus.detachEnricher(e.part as Enricher);
      if (e.kind === "backend") {
        const slot = e.spec?.slot;
        // In the same turn as the detach (its first step is synchronous): no event is in both or neither.
        if (slot !== undefined && replaced?.has(slot) && holds) holds.set(slot, this.bus.hold());
        await this.bus.detachBackend(e.part as Backend, budget.drainMs);
      }
      await stopOne(e, budget);
    }
  }

  async #startOne(entry: Entry, duringReload: boolean, holds?: Map<string, EventHold>): Promise<void> {
    const { kind, part } = entry;
    log.debug(`starting ${kind}`, { name: part.name });
    try {
      if (kind === "backend") {
        await (part as Backend).start();
        const hold = entry.spec ? holds?.get(entry.spec.slot) : undefined;
        if (hold) holds!.delete(entry.spec!.slot);
        if (duringReload) {
          this.bus.attachBackendToOpenFlows(part as Backend, hold ? this.bus.release(hold) : []);
        } else this.bus.attachBackend(part as Backend);
      } else if (kind === "enricher") {
        await (part as Enricher).start(this.bus);
        if (duringReload) this.bus.attachEnricherToOpenFlows(part as Enricher);
        else this.bus.attachEnricher(part as Enricher);
      } else {
        await (part as Plugin).start(this.bus.sinkFor(part.name));
      }
    } catch (err) {
      const msg = errorMessage(err);
      throw err instanceof StartupError
        ? err
        : new StartupError(`${kind} ${part.name} failed to start: ${msg}`, { cause: err });
    }
  }
}

async function reconfigured(plugin: Plugin, spec: ComponentSpec): Promise<boolean> {
  if (!plugin.reconfigure) return false;
  try {
    return await plugin.reconfigure(spec.options);
  } catch (err) {
    log.warn("a plugin could not apply new settings in place; it is replaced", {
      name: plugin.name,
      err: errorMessage(err),
    });
    return false;
  }
}

async function createAll(specs: readonly ComponentSpec[]): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const spec of specs) {
    out.push({ kind: spec.kind, part: await spec.create(), spec, fingerprint: specFingerprint(spec) });
  }
  return out;
}

/** Entries in start order: by kind, then in the order of `specs` (the configuration's). */
function sortByKind(entries: Entry[], specs?: readonly ComponentSpec[]): Entry[] {
  const rank = new Map<string, number>();
  specs?.forEach((s, i) => rank.set(s.slot, i));
  const pos = (e: Entry) => (e.spec ? rank.get(e.spec.slot) : undefined) ?? rank.size;
  return [...entries].sort((a, b) =>
    START_ORDER.indexOf(a.kind) - START_ORDER.indexOf(b.kind) || pos(a) - pos(b)
  );
}

/** Stops one component within its time bound; false when it failed or timed out. */
async function stopOne({ kind, part }: Entry, budget: StopBudget): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const outcome = await Promise.race([
      part.stop().then(() => "stopped" as const),
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), budget.componentMs)),
    ]);
    if (outcome === "timeout") {
      log.error(`${kind} did not stop in time`, { name: part.name, timeoutMs: budget.componentMs });
      return false;
    }
    log.debug(`stopped ${kind}`, { name: part.name });
    return true;
  } catch (err) {
    log.error(`${kind} failed to stop cleanly`, { name: part.name, err: errorMessage(err) });
    return false;
  } finally {
    clearTimeout(timer);
  }
}
