/**
 * The control socket of a running daemon: where it listens (top-level `controlSocket`) and what each
 * command answers. A socket that cannot be made leaves the daemon running without it, with a warning:
 * marking matters more than looking at it.
 */
import { gidOf } from "../../ffi/libc.ts";
import type { Config } from "../config/schema.ts";
import { errorMessage } from "../core/errors.ts";
import { logger } from "../core/log.ts";
import type { Daemon } from "../daemon.ts";
import { buildCommit, VERSION } from "../version.ts";
import { statusReport } from "./status_report.ts";
import { FlowReporter, isMarkingSource } from "./flows_report.ts";
import { ControlServer } from "./server.ts";

const log = logger("control");

/** The group of the socket file: the named pipe's, so the pipe's writers may also look. */
function socketGroup(config: Config): number | undefined {
  const g = config.plugins.namedPipe?.pipeGroup;
  if (g === undefined) return undefined;
  if (typeof g === "number") return g;
  if (/^\d+$/.test(g)) return Number(g);
  return gidOf(g);
}

/** Starts the control socket of `daemon`, or returns undefined (disabled, or it could not be made). */
export async function startControl(
  daemon: Daemon,
  config: Config,
  configFile: string,
): Promise<ControlServer | undefined> {
  const path = config.controlSocket;
  if (path === "") return undefined;
  const flows = new FlowReporter();
  const started = Date.now();
  // Asked of git in a source checkout: only when someone wants a status, not on the way to READY.
  let commit: Promise<string> | undefined;
  try {
    await Deno.mkdir(parentDir(path), { recursive: true, mode: 0o755 });
    return await ControlServer.listen({ path, gid: socketGroup(config) }, {
      ping: () => ({ version: VERSION, pid: Deno.pid, uptimeS: (Date.now() - started) / 1000 }),
      flows: () =>
        flows.report(
          daemon.bus.openFlows(),
          daemon.supervisor.components.backends.filter(isMarkingSource),
          daemon.registry,
        ),
      status: async () =>
        statusReport(daemon, { commit: await (commit ??= buildCommit()), configFile, startedMs: started }),
    });
  } catch (err) {
    log.warn("running without the control socket", { path, err: errorMessage(err) });
    return undefined;
  }
}

/** The directory part of a path (node:path's dirname for the cases a socket path has), without node:path. */
function parentDir(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  const cut = trimmed.lastIndexOf("/");
  return cut < 0 ? "." : cut === 0 ? "/" : trimmed.slice(0, cut);
}
