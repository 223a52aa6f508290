/**
 * The daemon's end of the control socket (protocol: ./protocol.ts): listens on a unix socket file made
 * mode 0660 (owner and group may connect), answers each request line with its handler's result.
 *
 * A socket file left by a daemon that died is replaced; one a live daemon still answers on is not (that
 * is a second instance, refused with a clear error). The file is removed when the server closes.
 */
import { errorMessage } from "../core/errors.ts";
import { logger } from "../core/log.ts";
import { type ControlCommand, type ControlReply, MAX_REQUEST_BYTES, parseRequest } from "./protocol.ts";

const log = logger("control");

/** What answers each command. */
export type ControlHandlers = Readonly<Record<ControlCommand, () => unknown | Promise<unknown>>>;

export interface ControlServerOptions {
  path: string;
  /** File mode of the socket (default 0o660). */
  mode?: number;
  /** Group given to the socket file (a gid), so its members may connect. */
  gid?: number;
  /** Connections served at once; more are closed at once (default 16). */
  maxConnections?: number;
  /** A connection that sends nothing for this long is closed (ms, default 60 000). */
  idleMs?: number;
}

const encoder = new TextEncoder();

export class ControlServer {
  readonly #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  readonly #conns = new Set<Deno.UnixConn>();
  readonly #serving: Promise<void>;
  #closed = false;

  private constructor(
    readonly path: string,
    listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>,
    private readonly handlers: ControlHandlers,
    private readonly opts: Required<Pick<ControlServerOptions, "maxConnections" | "idleMs">>,
  ) {
    this.#listener = listener;
    this.#serving = this.#accept();
  }

  /** Listens on `opts.path`; throws naming the path and the cause. */
  static async listen(opts: ControlServerOptions, handlers: ControlHandlers): Promise<ControlServer> {
    const path = opts.path;
    await removeStaleSocket(path);
    let listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
    try {
      listener = Deno.listen({ transport: "unix", path });
    } catch (err) {
      throw new Error(`cannot listen on the control socket ${path}: ${errorMessage(err)}`);
    }
    try {
      await Deno.chmod(path, opts.mode ?? 0o660);
      if (opts.gid !== undefined) await Deno.chown(path, null, opts.gid);
    } catch (err) {
      listener.close();
      await Deno.remove(path).catch(() => {});
      throw new Error(`cannot set the mode or group of the control socket ${path}: ${errorMessage(err)}`);
    }
    log.info("control socket listening", { path });
    return new ControlServer(path, listener, handlers, {
      maxConnections: opts.maxConnections ?? 16,
      idleMs: opts.idleMs ?? 60_000,
    });
  }

  /** Stops listening, closes every connection and removes the socket file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener.close();
    for (const c of this.#conns) closeQuietly(c);
    await this.#serving;
    await Deno.remove(this.path).catch(() => {});
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (!this.#closed) log.error("control socket accept failed", { err: errorMessage(err) });
        return;
      }
      if (this.#conns.size >= this.opts.maxConnections) {
        log.warn("too many control connections; one refused", { max: this.opts.maxConnections });
        closeQuietly(conn);
        continue;
      }
      this.#conns.add(conn);
      this.#serve(conn).finally(() => {
        this.#conns.delete(conn);
        closeQuietly(conn);
      });
    }
  }

  async #serve(conn: Deno.UnixConn): Promise<void> {
    const decoder = new TextDecoder();
    const buf = new Uint8Array(16 * 1024);
    let pending = "";
    for (;;) {
      const n = await readWithin(conn, buf, this.opts.idleMs);
      if (n === null) return;
      pending += decoder.decode(buf.subarray(0, n), { stream: true });
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (line.length > 0 && !await this.#reply(conn, await this.#answer(line))) return;
      }
      if (pending.length > MAX_REQUEST_BYTES) {
        await this.#reply(conn, {
          ok: false,
          error: `a request line is longer than ${MAX_REQUEST_BYTES} bytes`,
        });
        return;
      }
    }
  }

  async #answer(line: string): Promise<ControlReply> {
    const request = parseRequest(line);
    if (typeof request === "string") return { ok: false, error: request };
    const id = request.id === undefined ? {} : { id: request.id };
    try {
      const result = await this.handlers[request.command]();
      return { ok: true, command: request.command, ...id, result };
    } catch (err) {
      log.debug("control command failed", { command: request.command, err: errorMessage(err) });
      return { ok: false, ...id, error: `${request.command} failed: ${errorMessage(err)}` };
    }
  }

  /** Writes one reply line; false when the peer is gone. */
  async #reply(conn: Deno.UnixConn, reply: ControlReply): Promise<boolean> {
    const bytes = encoder.encode(JSON.stringify(reply, bigintAsNumber) + "\n");
    try {
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
      return true;
    } catch {
      return false;
    }
  }
}

/** Counters are bigints inside; on the wire they are JSON numbers (exact up to 2^53). */
function bigintAsNumber(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? Number(value) : value;
}

/** Reads into buf; null at end of stream, on error, or after idleMs without data. */
async function readWithin(conn: Deno.UnixConn, buf: Uint8Array, idleMs: number): Promise<number | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const idle = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), idleMs));
  try {
    return await Promise.race([conn.read(buf).catch(() => null), idle]);
  } finally {
    clearTimeout(timer);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

/** Removes a socket file nobody answers on; throws when a live daemon still listens there. */
async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch {
    return; // nothing there
  }
  if (!info.isSocket) {
    throw new Error(
      `the control socket path ${path} exists and is not a socket; remove it or set controlSocket`,
    );
  }
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    throw new LiveSocketError(`another flowd-go answers on the control socket ${path}`);
  } catch (err) {
    if (err instanceof LiveSocketError) throw err;
  }
  await Deno.remove(path);
  log.info("removed a stale control socket", { path });
}

class LiveSocketError extends Error {}
