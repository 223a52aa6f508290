/**
 * `flowd-go reload [--pid PID]`: asks the running daemon to reload its configuration (SIGHUP) and waits
 * for the outcome of that reload; exit status 0 when it was applied, 1 when it was refused (the daemon
 * keeps running with its previous configuration) or no outcome came. The unit's ExecReload runs it, so
 * `systemctl reload` fails for a refused configuration, on every systemd version.
 */
import { resolvePath } from "../wiring.ts";
import { StartupError } from "../core/errors.ts";
import { readReloadStatus, reloadStatusPath } from "../core/reload_status.ts";
import { readBoundedTextFileSync } from "../core/bounded_file.ts";
import { loadCliConfig } from "./load.ts";
import type { CliArgs } from "./args.ts";

/** How long a reload may take: stopping and starting the changed components. */
const RELOAD_TIMEOUT_MS = 60_000;

async function print(text: string): Promise<void> {
  await Deno.stdout.write(new TextEncoder().encode(text));
}

export async function reloadCommand(args: CliArgs): Promise<number> {
  // The configuration names the PID file (and so the status file). A configuration that does not load
  // is refused here already: the daemon would refuse it the same way.
  const { config } = await loadCliConfig(args);
  if (!config.pidPath) {
    throw new StartupError("reload needs pidPath in the configuration: the outcome is recorded next to it");
  }
  const pidPath = resolvePath(config, config.pidPath);
  const statusPath = reloadStatusPath(pidPath);
  const pid = args.pid ?? pidFromFile(pidPath);
  const before = readReloadStatus(statusPath);
  const baseline = before?.pid === pid ? before.generation : -1;
  try {
    Deno.kill(pid, "SIGHUP");
  } catch (err) {
    throw new StartupError(
      `cannot signal flowd-go (pid ${pid}): ${err instanceof Error ? err.message : err}`,
    );
  }
  const deadline = Date.now() + RELOAD_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const now = readReloadStatus(statusPath);
    if (now && now.pid === pid && now.generation > baseline && now.generation > 0) {
      if (now.ok) {
        await print(`reloaded: ${now.message}\n`);
        return 0;
      }
      throw new StartupError(`reload refused, the previous configuration keeps running: ${now.message}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new StartupError(
    `flowd-go (pid ${pid}) reported no reload outcome within ${RELOAD_TIMEOUT_MS / 1000} s`,
  );
}

function pidFromFile(path: string): number {
  let text: string;
  try {
    text = readBoundedTextFileSync(path, 64, "the PID file");
  } catch (err) {
    throw new StartupError(`no running flowd-go found: ${err instanceof Error ? err.message : err}`);
  }
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new StartupError(`the PID file ${path} holds no PID`);
  return pid;
}
