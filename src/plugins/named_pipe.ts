/**
 * Plugin `namedPipe`: flow events written as text lines into a FIFO, by a storage daemon or by hand
 * (`echo "start tcp 2001:db8::1 2345 2001:db8::2 5777 2 3" > /var/run/flowd-go/np`).
 *
 * The FIFO is opened read-only and read until every writer has closed it (EOF), then opened again.
 * EOF is what tells a final line without a newline is complete, so it is never lost; writers that
 * open and close repeatedly each get their turn. Lines two writers glued together (the second opened
 * before the first one's EOF was seen) are split apart again (`splitGluedLine`).
 *
 * The FIFO outlives reloads that keep its path (settings change in place). A stop removes the path first,
 * so no new writer can open it, and reads on until the writers that have it open are done (EOF), within
 * a bound: every line written before the stop is read.
 */
import {
  closeFd,
  gidOf,
  mkfifo,
  O_CLOEXEC,
  O_NONBLOCK,
  O_WRONLY,
  openFd,
  pendingBytes,
  uidOf,
} from "../../ffi/libc.ts";
import type { EventSink, Plugin } from "../core/component.ts";
import { errorMessage, StartupError } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import type { HealthMetric } from "../core/health.ts";
import { debugLogging, logger, RateLimitedLog } from "../core/log.ts";
import { type Micros, nowMicros } from "../core/time.ts";
import { readBoundedTextFileSync } from "../core/bounded_file.ts";
import {
  type IdResolver,
  LineSplitter,
  parsePipeLine,
  type PipeLineContext,
  PipeLineError,
  type PipeRejectReason,
  splitGluedLine,
} from "./pipe_line.ts";

/**
 * Smallest read from the FIFO: one read takes what a full pipe buffer (64 KiB on Linux) holds. Each read
 * is a hop to a blocking thread and back, so the original's 1000-byte reads cost more than the lines in
 * them; lines never depended on the read size here (a line spanning reads arrives whole).
 */
export const MIN_READ_BYTES = 64 * 1024;

/** What the plugin needs from its configuration section (paths already resolved). */
export interface NamedPipeOptions {
  pipePath: string;
  /** Bytes per read, at least MIN_READ_BYTES. */
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
  /** The rejected lines by reason. */
  rejectedByReason: Partial<Record<PipeRejectReason, number>>;
  eventsRefused: number;
  /** Lines recovered from two writers' lines glued together. */
  linesUnglued: number;
  /** Times reading stopped because a backend queue was full, and for how long in all. */
  pauses: number;
  pausedMs: number;
}

/** How long a stop waits for the reader to reach its token before giving up on what is left. */
const STOP_DRAIN_MS = 2000;
/** A pause for back-pressure longer than this is logged (rate-limited). */
const SLOW_PAUSE_MS = 10_000;
/** A stale regular file at the pipe's path is inspected up to this size. */
const MAX_STALE_FILE_BYTES = 1 << 20;

const log = logger("plugins", "namedPipe");

export class NamedPipePlugin implements Plugin {
  readonly name = "namedPipe";
  readonly stats: NamedPipeStats = {
    linesAccepted: 0,
    linesRejected: 0,
    rejectedByReason: {},
    eventsRefused: 0,
    linesUnglued: 0,
    pauses: 0,
    pausedMs: 0,
  };
  #opts: NamedPipeOptions;
  #buf: Uint8Array;
  /** The parse context, rebuilt when the options change (application and id resolver live in it). */
  #ctx: PipeLineContext | undefined;
  /** The name the sink records our events under; the parser puts it on each event. */
  #source: string | undefined;
  #reader: Promise<void> | undefined;
  #stopping = false;
  /** True while the reader waits in read(): what it got so far is handled. */
  #awaitingData = false;
  #created = false;
  #badLineLog = new RateLimitedLog(5_000);
  #refusedLog = new RateLimitedLog();
  #pauseLog = new RateLimitedLog();

  constructor(opts: NamedPipeOptions) {
    this.#opts = opts;
    this.#buf = readBuffer(opts.buffSize);
  }

  async start(sink: EventSink): Promise<void> {
    const path = this.#opts.pipePath;
    this.#source = sink.source;
    this.#ctx = undefined;
    await this.#createFifo(path);
    await this.#applyPermissions(path, true);
    this.#created = true;
    log.info("listening on the named pipe", { path, mode: this.#opts.pipeMode });
    this.#reader = this.#readLoop(sink);
  }

  /** Same path: mode, owner, group and buffer size change on the open FIFO. Another path: replaced. */
  async reconfigure(options: object): Promise<boolean> {
    const next = options as NamedPipeOptions;
    if (next.pipePath !== this.#opts.pipePath || !this.#created) return false;
    const previous = this.#opts;
    this.#opts = next;
    this.#ctx = undefined;
    try {
      await this.#applyPermissions(next.pipePath, false);
    } catch (err) {
      this.#opts = previous;
      this.#ctx = undefined;
      throw err;
    }
    if (next.buffSize !== previous.buffSize) this.#buf = readBuffer(next.buffSize);
    log.info("named pipe settings changed in place", { path: next.pipePath, mode: next.pipeMode });
    return true;
  }

  async stop(): Promise<void> {
    const path = this.#opts.pipePath;
    this.#stopping = true; // from now on the reader opens no further session
    // A writer end of our own, opened while a reader holds the FIFO: it completes a reader's pending open,
    // and tells how much is still in the pipe. Closed last, so the reader then sees EOF once the other
    // writers are done.
    let fd: number | undefined;
    try {
      fd = openFd(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    } catch (err) {
      log.debug("cannot open the named pipe to stop its reader", { err: errorMessage(err) });
    }
    if (this.#created) {
      try {
        await Deno.remove(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) {
          log.warn("cannot remove the named pipe", { path, err: errorMessage(err) });
        }
      }
      this.#created = false;
    }
    if (this.#reader) {
      // Done when the reader is waiting for more and nothing is left in the pipe: every line written
      // before the stop has been handled. A writer that keeps the FIFO open is not waited for beyond that.
      let finished = false;
      const reader = this.#reader.finally(() => finished = true);
      const deadline = performance.now() + STOP_DRAIN_MS;
      let drained = false;
      while (!finished && !drained && performance.now() < deadline) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([reader, new Promise((r) => timer = setTimeout(r, 10))]);
        clearTimeout(timer);
        drained = fd !== undefined && this.#awaitingData && pendingBytes(fd) === 0;
      }
      if (!finished && !drained) {
        log.warn("the named pipe reader did not finish in time; lines still in the pipe are lost", {
          path,
          waitedMs: STOP_DRAIN_MS,
        });
      }
      this.#reader = undefined;
    }
    if (fd !== undefined) closeFd(fd);
  }

  /** Lines accepted and rejected, events the bus refused, lines split apart, as health metrics. */
  health(): HealthMetric[] {
    const s = this.stats;
    const lines = (outcome: string, value: number): HealthMetric => ({
      name: "flowd_named_pipe_lines_total",
      help: "Lines read from the named pipe, by outcome",
      type: "counter",
      labels: { outcome },
      value,
    });
    return [
      lines("accepted", s.linesAccepted),
      lines("rejected", s.linesRejected),
      lines("unglued", s.linesUnglued),
      ...Object.entries(s.rejectedByReason).map(([reason, value]): HealthMetric => ({
        name: "flowd_named_pipe_lines_rejected_total",
        help:
          "Lines rejected, by reason (fields, state, protocol, address, port, family, id, name, too-long)",
        type: "counter",
        labels: { reason },
        value,
      })),
      {
        name: "flowd_named_pipe_pauses_total",
        help: "Times the named pipe stopped reading because a backend queue was full (writers waited)",
        type: "counter",
        value: s.pauses,
      },
      {
        name: "flowd_named_pipe_paused_seconds_total",
        help: "Time the named pipe spent not reading because a backend queue was full",
        type: "counter",
        value: s.pausedMs / 1000,
      },
      {
        name: "flowd_named_pipe_events_refused_total",
        help: "Events from the named pipe that the bus refused (every backend queue full, stopping)",
        type: "counter",
        value: s.eventsRefused,
      },
    ];
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
    if (info?.isFifo) {
      log.debug("reusing the existing named pipe", { path });
      return;
    }
    if (info?.isFile) {
      await this.#moveStaleFile(path, info);
    } else if (info) {
      throw new StartupError(
        `namedPipe: ${path} exists and is ${
          info.isSymlink ? "a symbolic link" : info.isDirectory ? "a directory" : "not a file"
        }, ` +
          `not a named pipe: remove it (flowd-go creates the FIFO itself) or set pipePath elsewhere`,
      );
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

  /**
   * A regular file where the FIFO belongs: a writer's `echo ... > np` made it while no FIFO was there. An
   * empty one is removed; one holding only pipe lines is moved aside (those flows are stale by now) with a
   * warning saying where; anything else is refused, since it may be someone's data.
   */
  async #moveStaleFile(path: string, info: Deno.FileInfo): Promise<void> {
    if (info.size === 0) {
      await Deno.remove(path);
      log.warn("removed an empty regular file where the named pipe belongs", { path });
      return;
    }
    const refuse = (why: string) =>
      new StartupError(
        `namedPipe: ${path} is a regular file (${info.size} bytes) ${why}, not a named pipe: ` +
          `move it away or set pipePath elsewhere`,
      );
    let text: string;
    try {
      text = readBoundedTextFileSync(path, MAX_STALE_FILE_BYTES, "the file at pipePath");
    } catch (err) {
      throw refuse(`that cannot be read as pipe lines (${errorMessage(err)})`);
    }
    const lines = text.split("\n").filter((l) => l.trim() !== "");
    const ctx = { now: 0, application: "", resolveId: this.#opts.resolveId };
    const parses = (l: string) => {
      try {
        return parsePipeLine(l, ctx) !== undefined;
      } catch {
        return false;
      }
    };
    if (!lines.every(parses)) throw refuse("holding more than pipe lines");
    const aside = `${path}.stale-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    await Deno.rename(path, aside);
    log.warn("moved a stale regular file away from the named pipe's path", {
      path,
      movedTo: aside,
      lines: lines.length,
      why: "a writer wrote to the path while no FIFO was there; those flow events were not read",
    });
  }

  async #applyPermissions(path: string, removeOnFailure: boolean): Promise<void> {
    const uid = this.#resolveId("pipeOwner", this.#opts.pipeOwner, uidOf, "user");
    const gid = this.#resolveId("pipeGroup", this.#opts.pipeGroup, gidOf, "group");
    try {
      if (uid !== null || gid !== null) await Deno.chown(path, uid, gid);
      await Deno.chmod(path, parseInt(this.#opts.pipeMode, 8));
    } catch (err) {
      if (removeOnFailure) await Deno.remove(path).catch(() => {});
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
    let next: Promise<Deno.FsFile | undefined> | undefined = this.#openReader();
    while (next) {
      const file = await next;
      if (!file) return;
      // Registered as a reader at once, even while it waits for a writer; none once the stop has begun.
      next = this.#stopping ? undefined : this.#openReader();
      try {
        await this.#readSession(file, sink);
      } finally {
        file.close();
      }
      if (this.#stopping) break;
    }
    // The stop's own writer end completed a pending open; close what it opened.
    (await next)?.close();
  }

  /** Opens the FIFO for reading; the open waits (off the event loop) until a writer appears. */
  async #openReader(): Promise<Deno.FsFile | undefined> {
    try {
      return await Deno.open(this.#opts.pipePath, { read: true });
    } catch (err) {
      if (!this.#stopping) {
        log.error("cannot open the named pipe; it will no longer be read", {
          path: this.#opts.pipePath,
          err: errorMessage(err),
        });
      }
      return undefined;
    }
  }

  /** Reads lines until every writer has closed the FIFO; the last line needs no newline. */
  async #readSession(file: Deno.FsFile, sink: EventSink): Promise<void> {
    const splitter = new LineSplitter();
    try {
      for (;;) {
        const buf = this.#buf;
        this.#awaitingData = true;
        const n = await file.read(buf).finally(() => this.#awaitingData = false);
        if (n === null) break;
        const { lines, discarded } = splitter.push(buf.subarray(0, n));
        if (discarded) {
          this.#rejected(`line longer than ${splitter.maxLineLength} bytes`, "too-long", "", discarded);
        }
        const now = nowMicros(); // one clock read per chunk: its lines arrived together
        for (const line of lines) {
          const paused = this.#handleLine(line, sink, now);
          if (paused) await paused;
        }
      }
      const last = splitter.flush();
      if (last !== undefined) await this.#handleLine(last, sink, nowMicros());
    } catch (err) {
      log.error("error reading the named pipe", { path: this.#opts.pipePath, err: errorMessage(err) });
    }
  }

  /** Parses a line and emits its events, waiting first while the bus has no room (the FIFO then fills). */
  #handleLine(line: string, sink: EventSink, now: Micros): Promise<void> | void {
    const parsed = this.#parseLine(line, now);
    if (parsed === undefined) return;
    // The common case, one event, goes without an array or a promise.
    if (!Array.isArray(parsed)) {
      const wait = sink.whenRoom?.();
      if (!wait) return this.#emit(parsed, sink);
      return this.#pause(wait, sink).then(() => this.#emit(parsed, sink));
    }
    return (async () => {
      for (const event of parsed) {
        const wait = sink.whenRoom?.();
        if (wait) await this.#pause(wait, sink);
        this.#emit(event, sink);
      }
    })();
  }

  /** The events of one line: one, several (writers' lines glued together), or none (blank, rejected). */
  #parseLine(line: string, now: Micros): FlowEvent | FlowEvent[] | undefined {
    // One context reused for every line: only the clock changes (parsePipeLine keeps no reference to it).
    const ctx = this.#ctx ??= {
      // Made with a non-number in `now`, so V8 keeps the field tagged: the events of a chunk then share one
      // boxed time instead of a box each (16 bytes per open flow).
      now: undefined as unknown as Micros,
      application: this.#opts.application,
      resolveId: this.#opts.resolveId,
      source: this.#source,
    };
    ctx.now = now;
    let event;
    try {
      event = parsePipeLine(line, ctx);
    } catch (err) {
      const pieces = splitGluedLine(line, (candidate) => {
        try {
          return parsePipeLine(candidate, ctx) !== undefined;
        } catch {
          return false;
        }
      });
      if (pieces) {
        this.stats.linesUnglued += pieces.length;
        return pieces.flatMap((piece) => this.#parseLine(piece, now) ?? []);
      }
      this.#rejected(errorMessage(err), err instanceof PipeLineError ? err.reason : "other", line, 1);
      return undefined;
    }
    if (!event) return undefined; // blank line
    this.stats.linesAccepted++;
    return event;
  }

  /** Waits for room on the bus, counting the pause and saying so when it lasts. */
  async #pause(wait: Promise<void>, sink: EventSink): Promise<void> {
    const began = performance.now();
    this.stats.pauses++;
    const slow = setTimeout(
      () =>
        this.#pauseLog.run((suppressed) =>
          log.warn("the named pipe is paused: a backend's queue stays full, writers wait", {
            backends: (sink as { fullBackends?: () => string[] }).fullBackends?.().join(",") ?? "",
            waitedSeconds: SLOW_PAUSE_MS / 1000,
            suppressed,
          })
        ),
      SLOW_PAUSE_MS,
    );
    try {
      await wait;
    } finally {
      clearTimeout(slow);
      this.stats.pausedMs += performance.now() - began;
    }
  }

  #emit(event: FlowEvent, sink: EventSink): void {
    const result = sink.emit(event);
    if (!result.accepted) {
      this.stats.eventsRefused++;
      this.#refusedLog.run((suppressed) =>
        log.warn("flow event from the named pipe was refused", {
          reason: result.reason,
          flow: describeFlow(event),
          refusedTotal: this.stats.eventsRefused,
          suppressed,
        })
      );
    } else if (debugLogging()) {
      log.debug("flow event from the named pipe", () => ({ flow: describeFlow(event) }));
    }
  }

  #rejected(reason: string, code: PipeRejectReason, line: string, count: number): void {
    this.stats.linesRejected += count;
    this.stats.rejectedByReason[code] = (this.stats.rejectedByReason[code] ?? 0) + count;
    this.#badLineLog.run((suppressed) =>
      log.warn("ignoring a bad line from the named pipe", {
        reason,
        line,
        rejectedTotal: this.stats.linesRejected,
        suppressed,
      })
    );
  }
}

/** The buffer reads go into: `buffSize` bytes, or MIN_READ_BYTES when that is more. */
function readBuffer(buffSize: number): Uint8Array {
  return new Uint8Array(Math.max(buffSize, MIN_READ_BYTES));
}
