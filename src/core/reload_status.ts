/**
 * The outcome of the daemon's latest reload, in a small file next to its PID file
 * (`<pidPath>.reload`), so that `flowd-go reload` (the unit's ExecReload) can wait for the outcome of the
 * very SIGHUP it sent and fail when the reload was refused: systemd 252 (EL9, Debian 12) has no way to
 * learn that from the daemon, and even `Type=notify-reload` reports no failure.
 */
import { readBoundedTextFileSync } from "./bounded_file.ts";
import { errorMessage } from "./errors.ts";
import { logger } from "./log.ts";

/** One reload outcome; `generation` counts the reloads of this daemon process (0: just started). */
export interface ReloadStatus {
  readonly pid: number;
  readonly generation: number;
  readonly ok: boolean;
  readonly message: string;
}

const log = logger("core", "reload");

/** The status file of a PID file. */
export function reloadStatusPath(pidPath: string): string {
  return `${pidPath}.reload`;
}

/** Writes the daemon's reload outcomes, atomically, numbering them. */
export class ReloadStatusWriter {
  #generation = 0;

  constructor(readonly path: string) {}

  /** Records the state after start (generation 0). */
  started(): void {
    this.#write({ pid: Deno.pid, generation: 0, ok: true, message: "started" });
  }

  /** Records the outcome of one more reload. */
  reloaded(ok: boolean, message: string): void {
    this.#write({ pid: Deno.pid, generation: ++this.#generation, ok, message });
  }

  /** Removes the file (at exit). */
  remove(): void {
    try {
      Deno.removeSync(this.path);
    } catch { /* already gone */ }
  }

  #write(status: ReloadStatus): void {
    try {
      const tmp = `${this.path}.tmp`;
      Deno.writeTextFileSync(tmp, JSON.stringify(status) + "\n");
      Deno.renameSync(tmp, this.path);
    } catch (err) {
      log.warn("cannot record the reload outcome; flowd-go reload will not see it", {
        path: this.path,
        err: errorMessage(err),
      });
    }
  }
}

/** The recorded status, or undefined when there is none (or it is unreadable). */
export function readReloadStatus(path: string): ReloadStatus | undefined {
  try {
    const value = JSON.parse(readBoundedTextFileSync(path, 64 * 1024, "the reload status"));
    if (
      typeof value?.pid === "number" && typeof value.generation === "number" &&
      typeof value.ok === "boolean" &&
      typeof value.message === "string"
    ) return value as ReloadStatus;
  } catch { /* none yet, or being replaced */ }
  return undefined;
}
