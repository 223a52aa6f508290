/**
 * A small, strict HTTP/1.1 server over `Deno.listen`, for the API and the metrics endpoints.
 *
 * Deno.serve has no header, body or idle timeout and no connection cap, so a client that never finishes
 * its headers or body, or just keeps a connection open, holds a socket for ever. This server bounds every
 * phase of a connection in time and size and caps the connections it keeps:
 *
 * - head (request line and headers): `maxHeaderBytes` (431) and `headerTimeoutMs`, counted from the accept,
 *   or on a kept-alive connection from the first byte of the next request (the end of the previous
 *   response for a pipelined one); a connection that times out here is closed without an answer;
 * - body: `maxBodyBytes` (413 before reading past it, at once for a declared length) and `bodyTimeoutMs`
 *   from the end of the head (or the 100 Continue); a body that ends early (EOF) or does not arrive in time
 *   is a 400, answered while the connection is still writable;
 * - keep-alive: `idleTimeoutMs` between a response and the next request;
 * - responses: `writeTimeoutMs` for a client that does not read;
 * - `maxConnections`: a connection beyond it is closed at once, without reading or answering it.
 *
 * Requests are handed over as web `Request`s with their whole body, so Hono's `app.fetch` works as with
 * Deno.serve. Responses go out with Content-Length, in one write, except a fast reply whose body is a
 * stream of chunks (chunked transfer coding; to an HTTP/1.0 client, ended by closing). Client faults are answered by the
 * server itself (never a 500) and logged rate-limited; counters are served as health metrics.
 */
import type { Logger } from "@logtape/logtape";
import { errorMessage } from "../core/errors.ts";
import type { HealthMetric } from "../core/health.ts";
import { RateLimitedLog } from "../core/log.ts";
import { joinHostPort } from "./ip.ts";
import {
  ChunkedDecoder,
  findHeadEnd,
  HttpRejection,
  parseRequestHead,
  REJECT_REASONS,
  type RejectReason,
  type RequestHead,
  skipLeadingNewlines,
} from "./http_parser.ts";

/** Limits of one server; every one has a default. */
export interface HttpServerLimits {
  /** Open connections at most (default 256); further ones are closed at once. */
  maxConnections?: number;
  /** Time to receive a request line and headers (default 10 s). */
  headerTimeoutMs?: number;
  /** Time to receive a request body once the head is in (default 30 s). */
  bodyTimeoutMs?: number;
  /** Time a kept-alive connection may wait for its next request (default 60 s). */
  idleTimeoutMs?: number;
  /** Time to hand a response to a client that does not read (default 30 s). */
  writeTimeoutMs?: number;
  /** Bytes of request line and headers at most (default 16384). */
  maxHeaderBytes?: number;
  /** Header fields at most (default 100). */
  maxHeaderCount?: number;
  /** Bytes of request body at most (default 1 MiB). */
  maxBodyBytes?: number;
  /** How long stop() lets requests in flight finish (default 5 s). */
  shutdownTimeoutMs?: number;
  /** How long unread input is drained after an error answer, so that the client sees it (default 2 s). */
  lingerMs?: number;
}

/** The defaults of `HttpServerLimits`, in milliseconds and bytes. */
export const HTTP_SERVER_DEFAULTS: Readonly<Required<HttpServerLimits>> = {
  maxConnections: 256,
  headerTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  idleTimeoutMs: 60_000,
  writeTimeoutMs: 30_000,
  maxHeaderBytes: 16_384,
  maxHeaderCount: 100,
  maxBodyBytes: 1 << 20,
  shutdownTimeoutMs: 5_000,
  lingerMs: 2_000,
};

/** Where to listen and how to talk. */
export interface HttpServerOptions extends HttpServerLimits {
  hostname: string;
  port: number;
  /** Names the listener in health metrics (label `listener`) and log lines. */
  name: string;
  log: Logger;
  /** Shapes the server's own answers (4xx, 5xx); default: the message as text/plain. */
  errorResponse?: (status: number, message: string, reason: RejectReason) => Response;
  /** Hot routes answered without web Request/Response objects (see `FastHandler`). */
  fast?: FastHandler;
}

/** What a handler learns about the connection besides the request. */
export interface HttpRequestInfo {
  readonly remoteAddr: Deno.NetAddr;
}

/** Answers one request. */
export type HttpHandler = (req: Request, info: HttpRequestInfo) => Response | Promise<Response>;

/** An answer built without web `Response` objects: status, header fields (lower-case names), body bytes. */
export interface FastReply {
  readonly status: number;
  readonly headers: readonly (readonly [string, string])[];
  /**
   * Bytes, text sent as UTF-8 (ASCII text goes out with the head in one encode), or chunks: each is
   * written before the next is asked for, so a producer may hand out the same buffer again (a large body
   * never exists whole). A producer that fails before its first chunk is a 500; later, the connection is
   * closed (the client sees a truncated body). For HEAD the chunks are not asked for.
   */
  readonly body: Uint8Array | string | AsyncIterable<Uint8Array>;
  /** The string body is known to be ASCII: it goes out with the head without a check of its own. */
  readonly ascii?: boolean;
}

const NON_ASCII = /[\u0080-\uffff]/;

/**
 * Answers the requests it claims straight from the parsed head and body, or returns undefined to leave the
 * request to the `HttpHandler`. For hot routes: a web Request and Response cost more than a small handler.
 */
export type FastHandler = (
  head: RequestHead,
  body: Uint8Array | null,
  info: HttpRequestInfo,
) => FastReply | undefined;

/** A header's value as `Headers.get` gives it: fields of that name (any case) joined with ", ". */
export function headerValue(head: RequestHead, lowerName: string): string | undefined {
  let out: string | undefined;
  for (const [name, value] of head.headers) {
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) {
      out = out === undefined ? value : `${out}, ${value}`;
    }
  }
  return out;
}

const enum Phase {
  /** Kept alive, waiting for the first byte of the next request. */
  Idle,
  Head,
  Body,
  Handler,
  Write,
  /** Answered with an error; draining what the client still sends before closing. */
  Linger,
}

type Interrupt = "timeout" | "stop";

/** Per-connection state: the socket, its read buffer and the deadline of the phase it is in. */
class Connection {
  phase = Phase.Head;
  deadline: number;
  rpos = 0;
  wpos = 0;
  /** Where the search for the end of the head resumes after a read. */
  scanFrom = 0;
  closed = false;
  /** Set when a body read must give up; `wake` resolves the read waiting for it. */
  interrupted: Interrupt | undefined;
  wake: ((why: Interrupt) => void) | undefined;
  readonly buf: Uint8Array;
  /** Where answers that fit are encoded: each is written (awaited) before the next is built. */
  out: Uint8Array | undefined;
  /** When the current answer's write began (performance.now()). */
  writeAt = 0;
  readonly info: HttpRequestInfo;

  constructor(readonly conn: Deno.TcpConn, bufferBytes: number, deadline: number) {
    this.buf = new Uint8Array(bufferBytes);
    this.deadline = deadline;
    this.info = { remoteAddr: conn.remoteAddr };
  }

  /** Reads into the buffer's free space; null on EOF or when the socket was closed or reset. */
  async fill(): Promise<number | null> {
    try {
      return await this.conn.read(this.buf.subarray(this.wpos));
    } catch {
      return null;
    }
  }

  interrupt(why: Interrupt): void {
    this.interrupted ??= why;
    this.wake?.(why);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

const STATUS_TEXT: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  411: "Length Required",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  417: "Expectation Failed",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

const encoder = new TextEncoder();
const CONTINUE = encoder.encode("HTTP/1.1 100 Continue\r\n\r\n");
const EMPTY = new Uint8Array(0);
/** Bytes of the buffer each connection encodes its answers in (larger answers get one of their own). */
const OUT_BUFFER_BYTES = 4096;
/** Time left to lingering connections once the server stops. */
const STOP_LINGER_MS = 100;

/** The head text of a response as bytes, one byte per character (header values are Latin-1). */
function encodeHead(text: string, out: Uint8Array): void {
  if (encoder.encodeInto(text, out).written === text.length) return;
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
}

function defaultErrorResponse(status: number, message: string): Response {
  return new Response(`${message}\n`, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
}

/** A response's status line and header fields, with `framing` (Content-Length or Transfer-Encoding). */
function headText(
  status: number,
  statusText: string,
  headers: Iterable<readonly [string, string]>,
  framing: string,
  head: RequestHead | undefined,
  keepAlive: boolean,
): string {
  let text = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? statusText}\r\n`;
  for (const [name, value] of headers) {
    if (
      name === "content-length" || name === "connection" || name === "transfer-encoding" ||
      name === "keep-alive"
    ) continue;
    text += `${name}: ${value}\r\n`;
  }
  text += framing;
  if (!keepAlive) text += "connection: close\r\n";
  else if (head?.minor === 0) text += "connection: keep-alive\r\n";
  return text + "\r\n";
}

/** A running server: `HttpServer.listen` binds, `stop` drains. */
export class HttpServer {
  readonly addr: Deno.NetAddr;
  readonly #limits: Required<HttpServerLimits>;
  readonly #name: string;
  readonly #log: Logger;
  readonly #handler: HttpHandler;
  readonly #fast: FastHandler | undefined;
  readonly #errorResponse: (status: number, message: string, reason: RejectReason) => Response;
  readonly #listener: Deno.TcpListener;
  readonly #base: string;
  readonly #conns = new Set<Connection>();
  readonly #accepting: Promise<void>;
  readonly #sweeper: ReturnType<typeof setInterval>;
  readonly #refusalLog = new RateLimitedLog();
  readonly #capLog = new RateLimitedLog();
  readonly #handlerErrorLog = new RateLimitedLog();
  #stopping = false;
  #stopped: Promise<void> | undefined;
  #drained: (() => void) | undefined;

  #accepted = 0;
  #refused = 0;
  readonly #timeouts = { header: 0, body: 0, idle: 0, write: 0 };
  readonly #responses = [0, 0, 0, 0, 0]; // 1xx..5xx
  readonly #rejected = new Map<RejectReason, number>(REJECT_REASONS.map((r) => [r, 0]));

  private constructor(options: HttpServerOptions, handler: HttpHandler, listener: Deno.TcpListener) {
    const limits = { ...HTTP_SERVER_DEFAULTS };
    for (const key of Object.keys(limits) as (keyof HttpServerLimits)[]) {
      const v = options[key];
      if (v !== undefined) limits[key] = v;
    }
    this.#limits = limits;
    this.#name = options.name;
    this.#log = options.log;
    this.#handler = handler;
    this.#fast = options.fast;
    this.#errorResponse = options.errorResponse ?? defaultErrorResponse;
    this.#listener = listener;
    this.addr = listener.addr;
    this.#base = `http://${joinHostPort(this.addr.hostname, this.addr.port)}`;
    const shortest = Math.min(
      limits.headerTimeoutMs,
      limits.bodyTimeoutMs,
      limits.idleTimeoutMs,
      limits.writeTimeoutMs,
      limits.lingerMs,
    );
    // One timer for all connections: each read does not need a timer of its own.
    this.#sweeper = setInterval(() => this.#sweep(), Math.min(1000, Math.max(5, shortest / 5)));
    this.#accepting = this.#acceptLoop();
  }

  /** Binds `hostname:port` (throws at once if it cannot) and starts serving `handler`. */
  static listen(options: HttpServerOptions, handler: HttpHandler): HttpServer {
    for (const [key, value] of Object.entries(options)) {
      if (key in HTTP_SERVER_DEFAULTS && value !== undefined && !(Number.isFinite(value) && value > 0)) {
        throw new RangeError(`http server ${options.name}: ${key} must be a positive number, not ${value}`);
      }
    }
    const listener = Deno.listen({ hostname: options.hostname, port: options.port, transport: "tcp" });
    return new HttpServer(options, handler, listener);
  }

  /** Connections open now. */
  get connections(): number {
    return this.#conns.size;
  }

  /** Stops accepting, closes idle connections, lets requests in flight finish (boundedly); idempotent. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      this.#stopping = true;
      try {
        this.#listener.close();
      } catch { /* already closed */ }
      await this.#accepting;
      const now = performance.now();
      for (const c of this.#conns) {
        switch (c.phase) {
          case Phase.Idle:
          case Phase.Head:
            c.close();
            break;
          case Phase.Body:
            c.interrupt("stop");
            break;
          case Phase.Linger:
            c.deadline = Math.min(c.deadline, now + STOP_LINGER_MS);
            break;
            // Handler, Write: closed after the response.
        }
      }
      if (this.#conns.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const drained = new Promise<void>((resolve) => this.#drained = resolve);
        const timeout = new Promise<"timeout">((resolve) =>
          timer = setTimeout(() => resolve("timeout"), this.#limits.shutdownTimeoutMs)
        );
        const outcome = await Promise.race([drained, timeout]);
        clearTimeout(timer);
        if (outcome === "timeout") {
          this.#log.warn("requests still running after the shutdown timeout; closing their connections", {
            listener: this.#name,
            connections: this.#conns.size,
            timeoutMs: this.#limits.shutdownTimeoutMs,
          });
          for (const c of this.#conns) c.close();
        }
      }
      clearInterval(this.#sweeper);
    })();
    return this.#stopped;
  }

  /** Counters of connections and requests, labelled with this listener's name. */
  health(): HealthMetric[] {
    const listener = this.#name;
    const out: HealthMetric[] = [
      {
        name: "flowd_http_connections_accepted_total",
        help: "HTTP connections accepted",
        type: "counter",
        labels: { listener },
        value: this.#accepted,
      },
      {
        name: "flowd_http_connections_refused_total",
        help: "HTTP connections closed at once because maxConnections were open",
        type: "counter",
        labels: { listener },
        value: this.#refused,
      },
      {
        name: "flowd_http_connections_open",
        help: "HTTP connections open",
        type: "gauge",
        labels: { listener },
        value: this.#conns.size,
      },
    ];
    for (const [timeout, value] of Object.entries(this.#timeouts)) {
      out.push({
        name: "flowd_http_connections_timed_out_total",
        help: "HTTP connections closed by a timeout (header, body, idle keep-alive, write)",
        type: "counter",
        labels: { listener, timeout },
        value,
      });
    }
    this.#responses.forEach((value, i) =>
      out.push({
        name: "flowd_http_responses_total",
        help: "HTTP responses sent, by status class",
        type: "counter",
        labels: { listener, code: `${i + 1}xx` },
        value,
      })
    );
    for (const [reason, value] of this.#rejected) {
      out.push({
        name: "flowd_http_requests_rejected_total",
        help: "HTTP requests answered by the server itself with an error, by reason",
        type: "counter",
        labels: { listener, reason },
        value,
      });
    }
    return out;
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.#stopping) return;
        // EMFILE and the like: keep the listener, wait a little rather than spin.
        this.#capLog.run((suppressed) =>
          this.#log.warn("cannot accept an HTTP connection", {
            listener: this.#name,
            err: errorMessage(err),
            suppressed,
          })
        );
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (this.#stopping) {
        conn.close();
        return;
      }
      if (this.#conns.size >= this.#limits.maxConnections) {
        this.#refused++;
        conn.close();
        this.#capLog.run((suppressed) =>
          this.#log.warn("HTTP connection refused: too many open", {
            listener: this.#name,
            maxConnections: this.#limits.maxConnections,
            suppressed,
          })
        );
        continue;
      }
      this.#accepted++;
      try {
        conn.setNoDelay(true);
      } catch { /* closed already */ }
      const c = new Connection(
        conn,
        this.#limits.maxHeaderBytes + 4,
        performance.now() + this.#limits.headerTimeoutMs,
      );
      this.#conns.add(c);
      this.#serve(c).catch(() => {}).finally(() => {
        c.close();
        this.#conns.delete(c);
        if (this.#conns.size === 0) this.#drained?.();
      });
    }
  }

  /** Closes or interrupts connections whose phase took too long. */
  #sweep(): void {
    const now = performance.now();
    for (const c of this.#conns) {
      if (now < c.deadline) continue;
      c.deadline = Infinity;
      switch (c.phase) {
        case Phase.Idle:
          this.#timeouts.idle++;
          c.close();
          break;
        case Phase.Head:
          this.#timeouts.header++;
          c.close();
          break;
        case Phase.Body:
          this.#timeouts.body++;
          c.interrupt("timeout"); // answered with a 400, then closed
          break;
        case Phase.Write:
          this.#timeouts.write++;
          c.close();
          break;
        case Phase.Linger:
          c.close();
          break;
      }
    }
  }

  /** Serves requests on one connection until it closes. */
  async #serve(c: Connection): Promise<void> {
    while (!c.closed) {
      // The head is read here rather than in an async helper: one promise per request fewer.
      c.scanFrom = c.rpos;
      let head = this.#headAtHand(c);
      while (head === undefined) {
        let n: number | null;
        try {
          n = await c.conn.read(c.buf.subarray(c.wpos));
        } catch {
          n = null;
        }
        if (n === null) return; // EOF, reset, or closed by a timeout or stop
        c.wpos += n;
        head = this.#headAtHand(c);
      }
      if (head instanceof HttpRejection) return await this.#reject(c, head, true);
      let body = this.#bodyAtHand(c, head);
      if (body === undefined) body = await this.#readBody(c, head);
      if (body instanceof HttpRejection) {
        // After a timeout or a stop a read is still pending: answer and close, do not drain.
        const pendingRead = body.reason === "body_timeout" || body.reason === "stopping";
        return await this.#reject(c, body, !pendingRead && body.reason !== "truncated_body");
      }
      c.phase = Phase.Handler;
      c.deadline = Infinity;
      const fast = this.#fast === undefined ? undefined : this.#fastReply(c, head, body);
      // One clock read per answer: a write that goes out whole takes no time worth a second one.
      let wroteAt: number | undefined;
      if (fast !== undefined && typeof fast.body === "object" && !(fast.body instanceof Uint8Array)) {
        if (!await this.#writeStream(c, fast.status, fast.headers, fast.body, head)) return;
      } else if (fast !== undefined) {
        const keepAlive = head.keepAlive && !this.#stopping;
        const body = typeof fast.body === "string" && !fast.ascii && NON_ASCII.test(fast.body)
          ? encoder.encode(fast.body)
          : fast.body;
        const out = this.#encodeReply(
          c,
          fast.status,
          "",
          fast.headers,
          body as Uint8Array | string,
          head,
          keepAlive,
        );
        const n = await c.conn.write(out);
        if (n < out.byteLength) await this.#writeAll(c, out.subarray(n));
        else wroteAt = c.writeAt;
        if (!keepAlive) return;
      } else {
        const [res, resBody] = await this.#respond(c, head, body);
        const keepAlive = head.keepAlive && !this.#stopping && res.headers.get("connection") !== "close";
        await this.#write(c, res, resBody, head, keepAlive);
        if (!keepAlive) return;
      }
      if (this.#stopping) return;
      const now = wroteAt ?? performance.now();
      if (c.rpos < c.wpos) {
        c.phase = Phase.Head; // pipelined: its header time starts now
        c.deadline = now + this.#limits.headerTimeoutMs;
      } else {
        c.rpos = c.wpos = 0;
        c.phase = Phase.Idle;
        c.deadline = now + this.#limits.idleTimeoutMs;
      }
    }
  }

  /**
   * Parses the head if the buffer holds all of it; undefined when more must be read (the buffer then has
   * room at `wpos`). `c.scanFrom` carries how far the search for the end got across reads.
   */
  #headAtHand(c: Connection): RequestHead | HttpRejection | undefined {
    const max = this.#limits.maxHeaderBytes;
    if (c.rpos < c.wpos) {
      if (c.phase === Phase.Idle) {
        c.phase = Phase.Head;
        c.deadline = performance.now() + this.#limits.headerTimeoutMs;
      }
      const start = skipLeadingNewlines(c.buf, c.rpos, c.wpos);
      if (start !== c.rpos) c.scanFrom = c.rpos = start;
      const end = findHeadEnd(c.buf, c.rpos, c.wpos, c.scanFrom);
      if (end >= 0) {
        if (end - 4 - c.rpos > max) return this.#headTooLarge();
        const head = parseRequestHead(c.buf, c.rpos, end, this.#limits.maxHeaderCount);
        c.rpos = end;
        return head;
      }
      if (c.wpos - c.rpos > max + 3) return this.#headTooLarge();
      c.scanFrom = c.wpos;
    }
    if (c.rpos === c.wpos) c.rpos = c.wpos = c.scanFrom = 0;
    else if (c.wpos === c.buf.length) {
      c.buf.copyWithin(0, c.rpos, c.wpos);
      c.wpos -= c.rpos;
      c.scanFrom -= c.rpos;
      c.rpos = 0;
    }
    return undefined;
  }

  #headTooLarge(): HttpRejection {
    return new HttpRejection(
      431,
      `the request line and headers are larger than the limit of ${this.#limits.maxHeaderBytes} bytes`,
      "header_too_large",
    );
  }

  /**
   * The body when no read is needed: none, too large, or already in the buffer (the common case: it came
   * with the head); undefined when it must be read.
   */
  #bodyAtHand(c: Connection, head: RequestHead): Uint8Array | null | HttpRejection | undefined {
    const length = head.contentLength;
    if (length === 0) return null;
    const max = this.#limits.maxBodyBytes;
    if (length > max) {
      return new HttpRejection(
        413,
        `the request body is larger than the limit of ${max} bytes`,
        "body_too_large",
      );
    }
    if (length > 0 && c.wpos - c.rpos >= length) {
      // A view, not a copy: the Request built from it right away copies it, before anything else is
      // read into the buffer.
      const body = c.buf.subarray(c.rpos, c.rpos + length);
      c.rpos += length;
      return body;
    }
    return undefined;
  }

  /** Reads the rest of a body (bounded in size and time). */
  async #readBody(c: Connection, head: RequestHead): Promise<Uint8Array | HttpRejection> {
    const length = head.contentLength;
    const buffered = c.wpos - c.rpos;
    if (this.#stopping) return this.#stoppingRejection();
    if (head.expectContinue && buffered === 0) {
      c.phase = Phase.Write;
      c.deadline = performance.now() + this.#limits.writeTimeoutMs;
      await this.#writeAll(c, CONTINUE);
    }
    c.phase = Phase.Body;
    c.deadline = performance.now() + this.#limits.bodyTimeoutMs;
    c.interrupted = this.#stopping ? "stop" : undefined;
    return length > 0
      ? await this.#readFixed(c, length)
      : await this.#readChunked(c, this.#limits.maxBodyBytes);
  }

  async #readFixed(c: Connection, length: number): Promise<Uint8Array | HttpRejection> {
    const body = new Uint8Array(length);
    let got = c.wpos - c.rpos;
    body.set(c.buf.subarray(c.rpos, c.wpos));
    c.rpos = c.wpos = 0;
    while (got < length) {
      const n = await this.#bodyRead(c, body.subarray(got), "before its declared length");
      if (n instanceof HttpRejection) return n;
      got += n;
    }
    return body;
  }

  async #readChunked(c: Connection, max: number): Promise<Uint8Array | HttpRejection> {
    const decoder = new ChunkedDecoder(max);
    for (;;) {
      if (c.rpos < c.wpos) {
        const used = decoder.push(c.buf, c.rpos, c.wpos);
        if (used instanceof HttpRejection) return used;
        c.rpos += used;
        if (decoder.done) return decoder.body();
      }
      if (c.rpos === c.wpos) c.rpos = c.wpos = 0;
      else {
        c.buf.copyWithin(0, c.rpos, c.wpos); // at most a CR waiting for its LF
        c.wpos -= c.rpos;
        c.rpos = 0;
      }
      const n = await this.#bodyRead(c, c.buf.subarray(c.wpos), "before its last chunk");
      if (n instanceof HttpRejection) return n;
      c.wpos += n;
    }
  }

  /** One read of body bytes that a body timeout or a stop can interrupt; `early` words an EOF. */
  async #bodyRead(c: Connection, into: Uint8Array, early: string): Promise<number | HttpRejection> {
    if (c.interrupted) return this.#interruption(c.interrupted);
    const read = c.conn.read(into);
    const woken = new Promise<Interrupt>((resolve) => c.wake = resolve);
    let outcome: number | null | Interrupt;
    try {
      outcome = await Promise.race([read, woken]);
    } catch {
      outcome = null; // reset by the peer
    } finally {
      c.wake = undefined;
    }
    if (outcome === "timeout" || outcome === "stop") {
      read.catch(() => {}); // fails when the connection is closed after the answer
      return this.#interruption(outcome);
    }
    if (outcome === null) {
      return new HttpRejection(400, `the request body ended ${early}`, "truncated_body");
    }
    return outcome;
  }

  #interruption(why: Interrupt): HttpRejection {
    if (why === "stop") return this.#stoppingRejection();
    return new HttpRejection(
      400,
      `the request body did not arrive within ${this.#limits.bodyTimeoutMs / 1000} s`,
      "body_timeout",
    );
  }

  #stoppingRejection(): HttpRejection {
    return new HttpRejection(503, "the server is shutting down", "stopping");
  }

  /** Runs the handler and reads its answer; failures are a 500, logged rate-limited. */
  async #respond(
    c: Connection,
    head: RequestHead,
    body: Uint8Array | null,
  ): Promise<[Response, Uint8Array]> {
    let req: Request;
    try {
      req = this.#request(head, body);
    } catch (err) {
      const r = new HttpRejection(400, `the request cannot be read: ${errorMessage(err)}`, "bad_request");
      this.#count(r, c);
      const res = this.#errorResponse(r.status, r.message, r.reason);
      return [res, await res.bytes()];
    }
    try {
      const res = await this.#handler(req, c.info);
      if (!(res instanceof Response)) throw new TypeError("the handler did not return a Response");
      const status = res.status;
      return [res, status === 204 || status === 304 || status < 200 ? EMPTY : await res.bytes()];
    } catch (err) {
      this.#rejected.set("handler_error", this.#rejected.get("handler_error")! + 1);
      this.#handlerErrorLog.run((suppressed) =>
        this.#log.error("HTTP request failed", {
          listener: this.#name,
          method: head.method,
          err: errorMessage(err),
          suppressed,
        })
      );
      const res = this.#errorResponse(500, "internal server error", "handler_error");
      return [res, await res.bytes()];
    }
  }

  #request(head: RequestHead, body: Uint8Array | null): Request {
    const target = head.target;
    let url: string;
    if (target.charCodeAt(0) === 47) url = this.#base + target; // "/..."
    else if (/^https?:\/\//i.test(target)) url = target;
    else throw new TypeError(`the request target ${JSON.stringify(target.slice(0, 80))} is not a path`);
    const init: RequestInit = { method: head.method, headers: head.headers };
    // GET and HEAD requests cannot carry a body in a web Request; one that came is read and dropped.
    if (body !== null && head.method !== "GET" && head.method !== "HEAD") {
      init.body = body as Uint8Array<ArrayBuffer>;
    }
    return new Request(url, init);
  }

  /**
   * The fast handler's answer, if it claims the request. A throw (a bug) is logged and the request goes to
   * the web handler, which answers it (or fails the same way, and that is the counted 500).
   */
  #fastReply(c: Connection, head: RequestHead, body: Uint8Array | null): FastReply | undefined {
    try {
      return this.#fast!(head, body, c.info);
    } catch (err) {
      this.#handlerErrorLog.run((suppressed) =>
        this.#log.error("HTTP fast handler failed; answered by the general one", {
          listener: this.#name,
          method: head.method,
          err: errorMessage(err),
          suppressed,
        })
      );
      return undefined;
    }
  }

  /** Writes a web Response with Content-Length in one write. */
  #write(
    c: Connection,
    res: Response,
    body: Uint8Array,
    head: RequestHead | undefined,
    keepAlive: boolean,
  ): Promise<void> {
    return this.#writeReply(c, res.status, res.statusText, res.headers, body, head, keepAlive);
  }

  /** Writes an answer (a web Response's parts, or a fast reply) with Content-Length in one write. */
  async #writeReply(
    c: Connection,
    status: number,
    statusText: string,
    headers: Iterable<readonly [string, string]>,
    body: Uint8Array,
    head: RequestHead | undefined,
    keepAlive: boolean,
  ): Promise<void> {
    const out = this.#encodeReply(c, status, statusText, headers, body, head, keepAlive);
    const n = await c.conn.write(out);
    if (n < out.byteLength) await this.#writeAll(c, out.subarray(n));
  }

  /** An answer's bytes, head and body (a string body must be ASCII); counts it and starts the write phase. */
  #encodeReply(
    c: Connection,
    status: number,
    statusText: string,
    headers: Iterable<readonly [string, string]>,
    body: Uint8Array | string,
    head: RequestHead | undefined,
    keepAlive: boolean,
  ): Uint8Array {
    const bodyBytes = typeof body === "string" ? body.length : body.byteLength;
    const bodyless = status === 204 || status === 304 || status < 200;
    const text = headText(
      status,
      statusText,
      headers,
      bodyless ? "" : `content-length: ${bodyBytes}\r\n`,
      head,
      keepAlive,
    );
    const withBody = head?.method !== "HEAD";
    const size = text.length + (withBody ? bodyBytes : 0);
    // The connection's reply buffer, when the answer fits: no buffer of its own to allocate and collect.
    const out = size <= OUT_BUFFER_BYTES
      ? (c.out ??= new Uint8Array(OUT_BUFFER_BYTES)).subarray(0, size)
      : new Uint8Array(size);
    if (typeof body === "string") encodeHead(withBody ? text + body : text, out);
    else {
      encodeHead(text, out);
      if (withBody) out.set(body, text.length);
    }
    const cls = Math.floor(status / 100);
    if (cls >= 1 && cls <= 5) this.#responses[cls - 1]!++;
    c.phase = Phase.Write;
    c.writeAt = performance.now();
    c.deadline = c.writeAt + this.#limits.writeTimeoutMs;
    return out;
  }

  /**
   * Writes a streamed answer: chunked to HTTP/1.1 clients, ended by closing to HTTP/1.0 ones. False when
   * the connection must close (HTTP/1.0, failed producer or write, stopping).
   */
  async #writeStream(
    c: Connection,
    status: number,
    headers: Iterable<readonly [string, string]>,
    body: AsyncIterable<Uint8Array>,
    head: RequestHead,
  ): Promise<boolean> {
    const chunked = head.minor !== 0;
    const keepAlive = chunked && head.keepAlive && !this.#stopping;
    const withBody = head.method !== "HEAD";
    const chunks = body[Symbol.asyncIterator]();
    let next: IteratorResult<Uint8Array> | undefined;
    try {
      if (withBody) next = await chunks.next();
    } catch (err) {
      this.#streamFailed(head, err);
      const res = this.#errorResponse(500, "internal server error", "handler_error");
      await this.#write(c, res, await res.bytes(), head, false);
      return false;
    }
    const framing = chunked ? "transfer-encoding: chunked\r\n" : "";
    const text = headText(status, "", headers, framing, head, keepAlive);
    const cls = Math.floor(status / 100);
    if (cls >= 1 && cls <= 5) this.#responses[cls - 1]!++;
    const out = new Uint8Array(text.length);
    encodeHead(text, out);
    try {
      c.phase = Phase.Write;
      c.deadline = performance.now() + this.#limits.writeTimeoutMs;
      await this.#writeAll(c, out);
      // Each chunk's size line goes out with the previous chunk's CRLF: two writes per chunk.
      let lead = "";
      while (next !== undefined && !next.done) {
        const chunk = next.value;
        if (chunk.byteLength > 0) {
          c.deadline = performance.now() + this.#limits.writeTimeoutMs;
          if (chunked) await this.#writeAll(c, encoder.encode(`${lead}${chunk.byteLength.toString(16)}\r\n`));
          await this.#writeAll(c, chunk);
          lead = "\r\n";
        }
        try {
          next = await chunks.next();
        } catch (err) {
          this.#streamFailed(head, err);
          return false;
        }
      }
      if (chunked && withBody) await this.#writeAll(c, encoder.encode(`${lead}0\r\n\r\n`));
    } catch {
      try {
        await chunks.return?.();
      } catch { /* the producer's own cleanup failed; the connection closes anyway */ }
      return false;
    }
    return keepAlive;
  }

  #streamFailed(head: RequestHead, err: unknown): void {
    this.#rejected.set("handler_error", this.#rejected.get("handler_error")! + 1);
    this.#handlerErrorLog.run((suppressed) =>
      this.#log.error("HTTP response body failed", {
        listener: this.#name,
        method: head.method,
        err: errorMessage(err),
        suppressed,
      })
    );
  }

  async #writeAll(c: Connection, bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.byteLength) off += await c.conn.write(off === 0 ? bytes : bytes.subarray(off));
  }

  #count(r: HttpRejection, c: Connection): void {
    this.#rejected.set(r.reason, this.#rejected.get(r.reason)! + 1);
    this.#refusalLog.run((suppressed) =>
      this.#log.info("HTTP request refused", {
        listener: this.#name,
        status: r.status,
        reason: r.message,
        client: joinHostPort(c.info.remoteAddr.hostname, c.info.remoteAddr.port),
        suppressed,
      })
    );
  }

  /**
   * Answers a request the server refuses and ends the connection. With `drain`, what the client still
   * sends is read and dropped for a while first: closing a socket with unread input resets it, and the
   * client could lose the answer.
   */
  async #reject(c: Connection, r: HttpRejection, drain: boolean): Promise<void> {
    this.#count(r, c);
    try {
      const res = this.#errorResponse(r.status, r.message, r.reason);
      await this.#write(c, res, await res.bytes(), undefined, false);
    } catch {
      return; // the client is gone
    }
    if (!drain || c.closed) return;
    c.phase = Phase.Linger;
    c.deadline = performance.now() + (this.#stopping ? STOP_LINGER_MS : this.#limits.lingerMs);
    try {
      await c.conn.closeWrite();
    } catch {
      return;
    }
    c.rpos = c.wpos = 0;
    while (!c.closed && (await c.fill()) !== null) { /* dropped */ }
  }
}
