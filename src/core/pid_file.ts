/**
 * The PID file, held under an exclusive lock for the daemon's lifetime, so that a second instance
 * refuses to start instead of fighting over the FIFO and the tc hooks. The lock dies with the process,
 * so a stale file left by a crash never blocks a restart.
 */
import {
  closeFd,
  LibcError,
  O_CLOEXEC,
  O_CREAT,
  O_RDWR,
  openFd,
  truncateFd,
  tryLockExclusive,
  writeFd,
} from "../../ffi/libc.ts";
import { errorMessage, StartupError } from "./errors.ts";
import { clip } from "./clip.ts";

/** A written and locked PID file. */
export class PidFile {
  #fd: number | undefined;

  private constructor(readonly path: string, fd: number) {
    this.#fd = fd;
  }

  /** Creates (or takes over) the file, locks it and writes our PID; throws `StartupError` if another instance runs. */
  static async acquire(path: string): Promise<PidFile> {
    const dir = path.slice(0, path.lastIndexOf("/"));
    if (dir) await Deno.mkdir(dir, { recursive: true }).catch(() => {});
    // Every failure names the file and the step, e.g. "cannot write the PID file /run/x.pid: No space left".
    const failed = (step: string, err: unknown) =>
      new StartupError(
        `cannot ${step} the PID file ${path}: ${
          err instanceof LibcError ? err.message.split(": ").pop() : errorMessage(err)
        }`,
      );
    let fd: number;
    try {
      fd = openFd(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644);
    } catch (err) {
      throw failed("create", err);
    }
    let locked: boolean;
    try {
      locked = tryLockExclusive(fd);
    } catch (err) {
      closeFd(fd);
      throw failed("lock", err);
    }
    if (!locked) {
      closeFd(fd);
      const other = (await Deno.readTextFile(path).catch(() => "")).trim();
      throw new StartupError(
        `another flowd-go is running${
          other ? ` (pid ${clip(other, 20)})` : ""
        }: it holds the PID file ${path}`,
      );
    }
    try {
      truncateFd(fd);
      writeFd(fd, new TextEncoder().encode(`${Deno.pid}\n`));
    } catch (err) {
      // A PID file we could not write is worse than none: leave nothing behind.
      try {
        Deno.removeSync(path);
      } catch { /* already gone */ }
      closeFd(fd);
      throw failed("write", err);
    }
    return new PidFile(path, fd);
  }

  /** Removes the file and drops the lock; safe to call twice. */
  release(): void {
    if (this.#fd === undefined) return;
    try {
      Deno.removeSync(this.path);
    } catch { /* already gone */ }
    closeFd(this.#fd);
    this.#fd = undefined;
  }
}
