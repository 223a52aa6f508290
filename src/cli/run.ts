/**
 * `flowd-go run`: the daemon's lifecycle. Start in dependency order, write the PID file, then wait for
 * signals: SIGTERM/SIGINT stop within a bound (a second one forces the exit), SIGHUP reloads the
 * configuration (a configuration that fails to load or start is reported and the previous one kept).
 */
import type { Config } from "../config/schema.ts";
import type { LoadedConfig } from "../config/load.ts";
import { EventBus } from "../core/bus.ts";
import { errorMessage, StartupError } from "../core/errors.ts";
import { logger } from "../core/log.ts";
import { PidFile } from "../core/pid_file.ts";
import { type StopBudget, Supervisor } from "../core/supervisor.ts";
import { buildComponents, resolvePath } from "../wiring.ts";
import { type RegistrySource, registrySourceFor } from "../scitags/registry_source.ts";
import { loadCliConfig } from "./load.ts";
import type { CliArgs } from "./args.ts";
import { VERSION } from "../version.ts";

const log = logger("run");

/** Per-backend queue length and flows remembered. */
const BUS_QUEUE_CAPACITY = 10_000;
const FLOW_TABLE_CAPACITY = 1_000_000;
const STOP_BUDGET: StopBudget = { drainMs: 3_000, componentMs: 5_000 };
/** Past this, a stop that hangs is abandoned and the process exits anyway. */
const HARD_STOP_MS = 20_000;

/** Logs the warnings and (at debug) the effective configuration. */
export function reportConfig(loaded: LoadedConfig): void {
  for (const w of loaded.warnings) log.warn(w);
  log.debug("configuration parsed", { source: loaded.source, config: JSON.stringify(loaded.config) });
}

/** One running set of components, and the registry their names resolve with. */
interface Instance {
  readonly supervisor: Supervisor;
  readonly registry: RegistrySource;
}

async function stopInstance(instance: Instance, budget: StopBudget): Promise<boolean> {
  const clean = await instance.supervisor.stop(budget);
  await instance.registry.stop();
  return clean;
}

async function startInstance(config: Config): Promise<Instance> {
  // Refreshing (when configured) runs in the background: names resolve with the cached or embedded copy meanwhile.
  const registry = registrySourceFor(config);
  registry.start();
  // The prometheus backend reads the supervisor's health metrics at scrape time, once it exists.
  let healthOf: Supervisor | undefined;
  let supervisor: Supervisor;
  try {
    const components = buildComponents(config, {
      hostname: Deno.hostname(),
      registry: () => registry.current(),
      health: () => healthOf?.health() ?? [],
    });
    const bus = new EventBus({ queueCapacity: BUS_QUEUE_CAPACITY, flowTableCapacity: FLOW_TABLE_CAPACITY });
    supervisor = healthOf = new Supervisor(components, bus);
    await supervisor.start();
  } catch (err) {
    await registry.stop();
    throw err;
  }
  const components = supervisor.components;
  log.info("let's go!", {
    version: VERSION,
    nPlugins: components.plugins.length,
    nBackends: components.backends.length,
    nEnrichers: components.enrichers.length,
  });
  return { supervisor, registry };
}

type Signal = "SIGTERM" | "SIGINT" | "SIGHUP";

/** Delivers signals one at a time to an async loop. */
class SignalInbox {
  #queue: Signal[] = [];
  #wake: (() => void) | undefined;
  #handlers = new Map<Signal, () => void>();
  onUrgent: ((s: Signal) => void) | undefined;

  constructor(signals: Signal[]) {
    for (const s of signals) {
      const h = () => {
        if (this.onUrgent) return this.onUrgent(s);
        this.#queue.push(s);
        this.#wake?.();
      };
      this.#handlers.set(s, h);
      Deno.addSignalListener(s, h);
    }
  }

  async next(): Promise<Signal> {
    while (this.#queue.length === 0) await new Promise<void>((r) => this.#wake = r);
    return this.#queue.shift()!;
  }

  close(): void {
    for (const [s, h] of this.#handlers) Deno.removeSignalListener(s, h);
    this.#handlers.clear();
  }
}

/** Runs the daemon until stopped; returns the exit status. Startup errors propagate (exit 1). */
export async function runCommand(args: CliArgs): Promise<number> {
  const loaded = await loadCliConfig(args);
  reportConfig(loaded);
  let config = loaded.config;
  await ensureWorkDir(config);
  const pidFile = config.pidPath ? await PidFile.acquire(resolvePath(config, config.pidPath)) : undefined;
  // Signals are caught before anything starts so an early SIGTERM still cleans up.
  const inbox = new SignalInbox(["SIGTERM", "SIGINT", "SIGHUP"]);
  try {
    let instance = await startInstance(config);
    let signal: Signal;
    while ((signal = await inbox.next()) === "SIGHUP") {
      const reloaded = await reload(args, config, instance);
      instance = reloaded.instance;
      config = reloaded.config;
    }
    log.info("received signal, stopping", { signal });
    inbox.onUrgent = (s) => {
      log.error("second signal during shutdown, exiting now", { signal: s });
      pidFile?.release();
      Deno.exit(1);
    };
    const watchdog = setTimeout(() => {
      log.error("shutdown took too long, exiting now", { timeoutMs: HARD_STOP_MS });
      pidFile?.release();
      Deno.exit(1);
    }, HARD_STOP_MS);
    const clean = await stopInstance(instance, STOP_BUDGET);
    clearTimeout(watchdog);
    log.info(clean ? "stopped" : "stopped, with errors (see above)");
    return clean ? 0 : 1;
  } finally {
    inbox.close();
    pidFile?.release();
  }
}

async function ensureWorkDir(config: Config): Promise<void> {
  try {
    await Deno.mkdir(config.workDir, { recursive: true, mode: 0o750 });
  } catch (err) {
    throw new StartupError(
      `cannot create workDir ${config.workDir}: ${errorMessage(err)}`,
    );
  }
}

/** SIGHUP: load the configuration again and restart the components with it, keeping the old one on failure. */
async function reload(
  args: CliArgs,
  current: Config,
  running: Instance,
): Promise<{ instance: Instance; config: Config }> {
  log.info("SIGHUP: reloading the configuration", { source: args.conf });
  let next: LoadedConfig;
  try {
    next = await loadCliConfig(args);
  } catch (err) {
    log.error("configuration not reloaded, keeping the running one", { err: errorMessage(err) });
    return { instance: running, config: current };
  }
  reportConfig(next);
  for (const key of ["pidPath", "workDir"] as const) {
    if (next.config[key] !== current[key]) {
      log.warn(`${key} changes take effect only after a restart`, { key });
    }
  }
  const effective = { ...next.config, pidPath: current.pidPath, workDir: current.workDir };
  await stopInstance(running, STOP_BUDGET);
  try {
    return { instance: await startInstance(effective), config: effective };
  } catch (err) {
    log.error("the reloaded configuration failed to start; going back to the previous one", {
      err: errorMessage(err),
    });
    return { instance: await startInstance(current), config: current };
  }
}
