/**
 * Plugin `namedPipe`: flow events written as text lines into a FIFO, by a storage daemon or by hand
 * (`echo "start tcp 2001:db8::1 2345 2001:db8::2 5777 2 3" > /var/run/flowd-go/np`).
 *
 * The FIFO is opened read-only and read until every writer has closed it (EOF), then opened again.
 * EOF is what tells a final line without a newline is complete, so it is never lost; writers that
 * open and close repeatedly each get their turn.
 */
import {
  closeFd,
  ENXIO,
  gidOf,
  LibcError,
  mkfifo,
  O_CLOEXEC,
  O_NONBLOCK,
  O_WRONLY,
  openFd,
  uidOf,
  writeFd,
} from "../../ffi/libc.ts";
import type { EventSink, Plugin } from "../core/component.ts";
import { errorMessage, StartupError } from "../core/errors.ts";
import { describeFlow } from "../core/flow_event.ts";
import { logger, RateLimitedLog } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import { type IdResolver, LineSplitter, parsePipeLine } from "./pipe_line.ts";

/** What the plugin needs from its configuration section (paths already resolved). */
export interface NamedPipeOptions {
  pipePath: string;
  /** Bytes per read. */
  buffSize: number;
  /** Octal text, e.g. "0660". */
  pipeMode: string;
  pipeOwner?: string | number;
  pipeGroup?: string | number;
  application: string;
  resolveId?: IdResolver;
}

/** Counters, for tests and diagnostics. */
export interface NamedPipeStats {
  linesAccepted: number;
  linesRejected: number;
  eventsRefused: number;
}

const log = logger("plugins", "namedPipe");

export class NamedPipePlugin implements Plugin {
  readonly name = "namedPipe";
  readonly stats: NamedPipeStats = { linesAccepted: 0, linesRejected: 0, eventsRefused: 0 };
  #reader: Promise<void> | undefined;
  #stopping = false;
  #created = false;
  #badLineLog = new RateLimitedLog(5_000);

  constructor(private readonly opts: NamedPipeOptions) {}

  async start(sink: EventSink): Promise<void> {
    const path = this.opts.pipePath;
    await this.#createFifo(path);
    await this.#applyPermissions(path);
    this.#created = true;
    log.info("listening on the named pipe", { path, mode: this.opts.pipeMode });
    this.#reader = this.#readLoop(sink);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#reader) {
      let finished = false;
      const reader = this.#reader.finally(() => finished = true);
      // Wake the reader: it is blocked in open() waiting for a writer, or in read() waiting for data.
      const deadline = performance.now() + 2000;
      while (!finished && performance.now() < deadline) {
        this.#poke();
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([reader, new Promise((r) => timer = setTimeout(r, 25))]);
        clearTimeout(timer);
      }
      if (!finished) log.warn("the named pipe reader did not stop in time", { path: this.opts.pipePath });
      this.#reader = undefined;
    }
    if (this.#created) {
      try {
        await Deno.remove(this.opts.pipePath);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) {
          log.warn("cannot remove the named pipe", { path: this.opts.pipePath, err: errorMessage(err) });
        }
      }
      this.#created = false;
    }
  }

  async #createFifo(path: string): Promise<void> {
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.lstat(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        throw new StartupError(`namedPipe: cannot inspect ${path}: ${errorMessage(err)}`);
      }
    }
    if (info) {
      if (!info.isFifo) throw new StartupError(`namedPipe: ${path} exists and is not a named pipe (FIFO)`);
      log.debug("reusing the existing named pipe", { path });
      return;
    }
    const dir = path.slice(0, path.lastIndexOf("/"));
    if (dir) {
      try {
        await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
      } catch (err) {
        throw new StartupError(`namedPipe: cannot create the directory ${dir}: ${errorMessage(err)}`);
      }
    }
    try {
      mkfifo(path, 0o600); // permissions are set explicitly below, whatever the umask
    } catch (err) {
      throw new StartupError(`namedPipe: ${errorMessage(err)}`);
    }
  }

  async #applyPermissions(path: string): Promise<void> {
    const uid = this.#resolveId("pipeOwner", this.opts.pipeOwner, uidOf, "user");
    const gid = this.#resolveId("pipeGroup", this.opts.pipeGroup, gidOf, "group");
    try {
      if (uid !== null || gid !== null) await Deno.chown(path, uid, gid);
      await Deno.chmod(path, parseInt(this.opts.pipeMode, 8));
    } catch (err) {
      await Deno.remove(path).catch(() => {});
      throw new StartupError(`namedPipe: cannot set the owner or mode of ${path}: ${errorMessage(err)}`);
    }
  }

  #resolveId(
    key: string,
    value: string | number | undefined,
    lookup: (name: string) => number | undefined,
    what: string,
  ): number | null {
    if (value === undefined) return null;
    if (typeof value === "number") return value;
    if (/^\d+$/.test(value)) return Number(value);
    const id = lookup(value);
    if (id === undefined) throw new StartupError(`namedPipe.${key}: there is no ${what} named "${value}"`);
    return id;
  }

  /**
   * Reads the FIFO one "session" at a time: a session ends when every writer has closed it (EOF).
   * The next reader is always opened before the current one is closed, so the FIFO never has zero
   * readers; a writer that opens just as a session ends would otherwise get EPIPE and lose its line.
   */
  async #readLoop(sink: EventSink): Promise<void> {
    const buf = new Uint8Array(this.opts.buffSize);
    let next = this.#openReader();
    while (!this.#stopping) {
      const file = await next;
      if (!file) return;
      next = this.#openReader(); // registered as a reader at once, even while it waits for a writer
      try {
        await this.#readSession(file, buf, sink);
      } finally {
        file.close();
      }
    }
    // stop() keeps poking the FIFO until this returns, which completes the pending open.
    (await next)?.close();
  }

  /** Opens the FIFO for reading; the open waits (off the event loop) until a writer appears. */
  async #openReader(): Promise<Deno.FsFile | undefined> {
    try {
      return await Deno.open(this.opts.pipePath, { read: true });
    } catch (err) {
      if (!this.#stopping) {
        log.error("cannot open the named pipe; it will no longer be read", {
          path: this.opts.pipePath,
          err: errorMessage(err),
        });
      }
      return undefined;
    }
  }

  /** Reads lines until every writer has closed the FIFO; the last line needs no newline. */
  async #readSession(file: Deno.FsFile, buf: Uint8Array, sink: EventSink): Promise<void> {
    const splitter = new LineSplitter();
    try {
      for (;;) {
        const n = await file.read(buf);
        if (n === null) break;
        const { lines, discarded } = splitter.push(buf.subarray(0, n));
        if (discarded) this.#rejected(`line longer than ${splitter.maxLineLength} bytes`, "", discarded);
        for (const line of lines) this.#handleLine(line, sink);
        if (this.#stopping) break;
      }
      const last = splitter.flush();
      if (last !== undefined) this.#handleLine(last, sink);
    } catch (err) {
      log.error("error reading the named pipe", { path: this.opts.pipePath, err: errorMessage(err) });
    }
  }

  #handleLine(line: string, sink: EventSink): void {
    let event;
    try {
      event = parsePipeLine(line, {
        now: nowMicros(),
        application: this.opts.application,
        resolveId: this.opts.resolveId,
      });
    } catch (err) {
      this.#rejected(errorMessage(err), line, 1);
      return;
    }
    if (!event) return; // blank line
    this.stats.linesAccepted++;
    const result = sink.emit(event);
    if (!result.accepted) {
      this.stats.eventsRefused++;
      log.warn("flow event from the named pipe was refused", {
        reason: result.reason,
        flow: describeFlow(event),
      });
    } else {
      log.debug("flow event from the named pipe", { flow: describeFlow(event) });
    }
  }

  #rejected(reason: string, line: string, count: number): void {
    this.stats.linesRejected += count;
    this.#badLineLog.run((suppressed) =>
      log.warn("ignoring a bad line from the named pipe", {
        reason,
        line: line.length > 200 ? line.slice(0, 200) + "..." : line,
        rejectedTotal: this.stats.linesRejected,
        suppressed,
      })
    );
  }

  /** Opens the FIFO for writing without blocking and writes a newline, waking a blocked reader. */
  #poke(): void {
    let fd: number;
    try {
      fd = openFd(this.opts.pipePath, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    } catch (err) {
      // ENXIO: no reader has it open right now (between two opens); the caller retries.
      if (!(err instanceof LibcError && err.errno === ENXIO)) {
        log.debug("cannot open the named pipe to wake its reader", { err: errorMessage(err) });
      }
      return;
    }
    try {
      writeFd(fd, new TextEncoder().encode("\n"));
    } catch { /* a full pipe wakes the reader anyway */ }
    closeFd(fd);
  }
}
