/**
 * `flowd-go run`: the daemon's lifecycle. Start in dependency order, write the PID file, then wait for
 * signals: SIGTERM/SIGINT stop within a bound (a second one forces the exit), SIGHUP reloads the
 * configuration (a configuration that fails to load or start is reported and the previous one kept).
 */
import type { Config } from "../config/schema.ts";
import type { LoadedConfig } from "../config/load.ts";
import { errorMessage, StartupError } from "../core/errors.ts";
import { logger } from "../core/log.ts";
import { PidFile } from "../core/pid_file.ts";
import type { StopBudget } from "../core/supervisor.ts";
import { resolvePath } from "../wiring.ts";
import { Daemon, type ReloadOutcome } from "../daemon.ts";
import { SystemdNotifier } from "../core/sd_notify.ts";
import { reloadStatusPath, ReloadStatusWriter } from "../core/reload_status.ts";
import { loadCliConfig, reportConfig } from "./load.ts";
import { startControl } from "../control/daemon_control.ts";
import type { CliArgs } from "./args.ts";
import { VERSION } from "../version.ts";

const log = logger("run");

const STOP_BUDGET: StopBudget = { drainMs: 3_000, componentMs: 5_000 };
/** Exit status of a crash (sysexits' EX_SOFTWARE); 1 stays "could not start". */
export const CRASH_EXIT_STATUS = 70;
/** Past this, a stop that hangs is abandoned and the process exits anyway. */
const HARD_STOP_MS = 20_000;

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
  await ensureWorkDir(loaded.config);
  const config = loaded.config;
  const pidFile = config.pidPath ? await PidFile.acquire(resolvePath(config, config.pidPath)) : undefined;
  // Signals are caught before anything starts so an early SIGTERM still cleans up.
  const inbox = new SignalInbox(["SIGTERM", "SIGINT", "SIGHUP"]);
  // A bug that escapes every handler ends the daemon with its own status (EX_SOFTWARE), which the unit
  // restarts, unlike status 1 (a configuration or environment that cannot start, which a restart won't fix).
  const crash = (what: string, err: unknown) => {
    log.error(`flowd-go crashed: ${what}`, { err: errorMessage(err) });
    pidFile?.release();
    Deno.exit(CRASH_EXIT_STATUS);
  };
  globalThis.addEventListener("unhandledrejection", (e) => crash("unhandled promise rejection", e.reason));
  globalThis.addEventListener("error", (e) => crash("uncaught exception", e.error));
  const systemd = new SystemdNotifier();
  const reloadStatus = pidFile ? new ReloadStatusWriter(reloadStatusPath(pidFile.path)) : undefined;
  try {
    const daemon = await Daemon.start(config);
    const control = await startControl(daemon, config, loaded.source);
    announce(daemon);
    reloadStatus?.started();
    systemd.ready(describeRunning(daemon));
    let signal: Signal;
    while ((signal = await inbox.next()) === "SIGHUP") {
      systemd.reloading();
      const outcome = await reload(args, daemon);
      reportReload(outcome);
      reloadStatus?.reloaded(outcome.ok, outcome.ok ? describeRunning(daemon) : outcome.reason);
      systemd.reloaded(
        outcome.ok
          ? describeRunning(daemon)
          : `${describeRunning(daemon)}; reload refused: ${outcome.reason}`,
      );
    }
    log.info("received signal, stopping", { signal });
    systemd.stopping();
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
    await control?.close();
    const clean = await daemon.stop(STOP_BUDGET);
    clearTimeout(watchdog);
    log.info(clean ? "stopped" : "stopped, with errors (see above)");
    return clean ? 0 : 1;
  } finally {
    inbox.close();
    reloadStatus?.remove();
    pidFile?.release();
  }
}

/** One line for `systemctl status`: what runs. */
function describeRunning(daemon: Daemon): string {
  const c = daemon.supervisor.components;
  const names = [...c.plugins, ...c.backends, ...c.enrichers].map((p) => p.name).join(", ");
  return `running: ${c.plugins.length} plugins, ${c.backends.length} backends, ${c.enrichers.length} enrichers (${names})`;
}

function announce(daemon: Daemon): void {
  const c = daemon.supervisor.components;
  log.info("let's go!", {
    version: VERSION,
    nPlugins: c.plugins.length,
    nBackends: c.backends.length,
    nEnrichers: c.enrichers.length,
  });
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

/**
 * SIGHUP: load the configuration again and bring the running components to it. Unchanged components keep
 * running; a configuration that fails to load or to start is refused and the running one kept as it was.
 */
async function reload(args: CliArgs, daemon: Daemon): Promise<ReloadOutcome> {
  log.info("SIGHUP: reloading the configuration", { source: args.conf });
  let next: LoadedConfig;
  try {
    next = await loadCliConfig(args);
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  }
  reportConfig(next);
  const current = daemon.config;
  for (const key of ["pidPath", "workDir"] as const) {
    if (next.config[key] !== current[key]) {
      log.warn(`${key} changes take effect only after a restart`, { key });
    }
  }
  return await daemon.reload(
    { ...next.config, pidPath: current.pidPath, workDir: current.workDir },
    STOP_BUDGET,
  );
}

/** The one place a reload's outcome is known: logged (and, under systemd, reported). */
function reportReload(outcome: ReloadOutcome): void {
  if (!outcome.ok) {
    log.error("configuration not reloaded, keeping the running one", { err: outcome.reason });
    return;
  }
  const r = outcome.report;
  log.info("configuration reloaded", {
    kept: r.kept.join(",") || "-",
    reconfigured: r.reconfigured.join(",") || "-",
    replaced: r.replaced.join(",") || "-",
    added: r.added.join(",") || "-",
    removed: r.removed.join(",") || "-",
  });
}
