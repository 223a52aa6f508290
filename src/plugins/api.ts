/**
 * The `api` plugin: a small REST API (Hono on Deno.serve) through which other programs announce flows.
 *
 * Routes, JSON shapes and pretty-printing follow the original (flowd-go-behaviour §4.2). Fixed on purpose
 * (§11.3 item 21): bodies are validated and rejections say which key is wrong, bodies are size-limited,
 * IPv6 bind addresses work, a listen failure stops startup, and a refused event is a 503 instead of a
 * request that hangs forever.
 */
import { type Context, Hono } from "hono";
import type { EventSink, Plugin } from "../core/component.ts";
import { ConfigError, errorMessage, StartupError } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import { logger, RateLimitedLog } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import { IpAddress, joinHostPort } from "../net/ip.ts";
import { ApiFlowError, type ApiIdResolver, flowEventToApiJson, parseApiFlowBody } from "./api_json.ts";

/** Settings of the api plugin (the `plugins.api` configuration section plus what the daemon adds). */
export interface ApiPluginOptions {
  /** Address or host name to listen on; IPv6 literals with or without brackets. */
  bindAddress: string;
  /** TCP port; 0 picks a free one (tests). */
  bindPort: number;
  /** Largest POST body accepted, in bytes (default 65536). */
  maxBodyBytes?: number;
  /** Application name put into events that do not bring their own. */
  application: string;
  /** How long stop() waits for requests in flight (default 5000 ms). */
  shutdownTimeoutMs?: number;
  /** Resolves Experiment/Activity names in POST bodies; without it only numbers are accepted. */
  resolveId?: ApiIdResolver;
}

/** One entry of GET /'s route list, shaped like the original's echo route records. */
export interface ApiRoute {
  method: string;
  path: string;
  name: string;
}

/** The routes served, in the order GET / lists them. */
export const API_ROUTES: readonly ApiRoute[] = [
  { method: "GET", path: "/", name: "listRoutes" },
  { method: "GET", path: "/dummy/start", name: "dummyFlowStart" },
  { method: "GET", path: "/dummy/end", name: "dummyFlowEnd" },
  { method: "POST", path: "/flow", name: "postFlow" },
];

const DEFAULT_MAX_BODY_BYTES = 65536;
const DEFAULT_SHUTDOWN_TIMEOUT_MS = 5000;
const SHUTDOWN_SETTLE_MS = 10;

const log = logger("plugins", "api");

/** Serialises like Go's json.Encoder with an indent: HTML-significant characters escaped, trailing newline. */
function goJson(value: unknown, pretty: boolean): string {
  const text = pretty ? JSON.stringify(value, null, 4) : JSON.stringify(value);
  return text.replace(/[<>&\u2028\u2029]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`) +
    "\n";
}

function jsonResponse(
  status: number,
  value: unknown,
  opts: { pretty?: boolean; headers?: Record<string, string> } = {},
) {
  const headers = { ...opts.headers, "content-type": "application/json" };
  return new Response(goJson(value, opts.pretty ?? true), { status, headers });
}

/** Why a request was turned away: status and a message for the client and the log. */
class Rejection {
  constructor(readonly status: number, readonly message: string, readonly field?: string) {}
}

/**
 * Reads a body of at most `max` bytes; stops reading (and returns a Rejection) as soon as it grows past it.
 *
 * An oversize body is abandoned, not cancelled: cancelling makes the server drain the rest of the upload,
 * forever for an endless chunked one, while abandoning it leaves the client stalled until the connection closes.
 * A read still waiting when the plugin stops is abandoned too, and answered with 503.
 */
async function readBodyLimited(
  req: Request,
  max: number,
  abort: AbortSignal,
): Promise<Uint8Array | Rejection> {
  const tooLarge = () => new Rejection(413, `the request body is larger than the limit of ${max} bytes`);
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > max) return tooLarge();
  if (abort.aborted) return shuttingDown();
  // Touching req.body creates a stream and loses the server's whole-body fast path; only chunked bodies need it.
  const stream = declared === null ? req.body : null;
  if (declared === null && stream === null) return new Uint8Array(0);
  let onAbort = () => {};
  const aborted = new Promise<"aborted">((resolve) => onAbort = () => resolve("aborted"));
  abort.addEventListener("abort", onAbort, { once: true });
  try {
    // The server holds a body to its declared length, so a declared one can be read in one go.
    if (declared !== null) {
      const whole = req.bytes();
      whole.catch(() => {}); // abandoned on abort
      const next = await Promise.race([whole, aborted]);
      return next === "aborted" ? shuttingDown() : next;
    }
    return await readChunked(stream!.getReader(), max, aborted, tooLarge);
  } finally {
    abort.removeEventListener("abort", onAbort);
  }
}

/** Reads a body of unknown length chunk by chunk, giving up past `max` bytes or on abort. */
async function readChunked(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  max: number,
  aborted: Promise<"aborted">,
  tooLarge: () => Rejection,
): Promise<Uint8Array | Rejection> {
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const pending = reader.read();
      // releaseLock() below rejects a read still pending; that rejection is expected.
      pending.catch(() => {});
      const next = await Promise.race([pending, aborted]);
      if (next === "aborted") return shuttingDown();
      if (next.done) break;
      total += next.value.byteLength;
      if (total > max) return tooLarge();
      chunks.push(next.value);
    }
    const body = new Uint8Array(total);
    let offset = 0;
    for (const c of chunks) {
      body.set(c, offset);
      offset += c.byteLength;
    }
    return body;
  } finally {
    reader.releaseLock();
  }
}

function shuttingDown(): Rejection {
  return new Rejection(503, "the daemon is shutting down");
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Decodes a POST /flow body into JSON, or says what is wrong with it. */
function decodeJsonBody(bytes: Uint8Array): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new Rejection(400, "the request body is not valid UTF-8", "body");
  }
  if (text.trim() === "") {
    throw new Rejection(400, "the request body is empty; send a JSON object describing the flow", "body");
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Rejection(400, `the request body is not valid JSON: ${errorMessage(err)}`, "body");
  }
}

/** Checks that a POST body is declared as JSON; other media types are a 415. */
function checkContentType(header: string | undefined): Rejection | undefined {
  if (header === undefined) {
    return new Rejection(415, "the request has no Content-Type; send the flow as application/json");
  }
  const media = header.split(";", 1)[0]?.trim().toLowerCase();
  if (media !== "application/json") {
    return new Rejection(415, `Content-Type must be application/json, not ${JSON.stringify(header)}`);
  }
  return undefined;
}

/** The dummy flow of the original's /dummy routes, for trying the pipeline by hand. */
function dummyFlow(state: "start" | "end", application: string): FlowEvent {
  const now = nowMicros();
  return {
    state,
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse("::1"), port: 2345 },
    dst: { address: IpAddress.parse("::1"), port: 5777 },
    experimentId: 0xffff,
    activityId: 0xffff,
    application,
    ...(state === "start" ? { startTime: now } : { endTime: now }),
  };
}

/** The REST API plugin: turns HTTP requests into flow events for the sink. */
export class ApiPlugin implements Plugin {
  readonly name = "api";
  readonly #host: string;
  readonly #port: number;
  readonly #maxBodyBytes: number;
  readonly #application: string;
  readonly #shutdownTimeoutMs: number;
  readonly #resolveId: ApiIdResolver | undefined;
  readonly #rejectLog = new RateLimitedLog();
  readonly #stopping = new AbortController();
  #server: Deno.HttpServer<Deno.NetAddr> | undefined;
  #sink: EventSink | undefined;
  #stopped: Promise<void> | undefined;

  constructor(options: ApiPluginOptions) {
    const { bindPort, maxBodyBytes = DEFAULT_MAX_BODY_BYTES } = options;
    if (!Number.isInteger(bindPort) || bindPort < 0 || bindPort > 65535) {
      throw new ConfigError(`plugins.api.bindPort ${bindPort} is not a port number (0..65535)`);
    }
    if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1) {
      throw new ConfigError(`plugins.api maxBodyBytes ${maxBodyBytes} is not a positive integer`);
    }
    // The original joined address and port without brackets; accept both spellings of an IPv6 literal.
    this.#host = options.bindAddress.replace(/^\[(.*)\]$/, "$1");
    this.#port = bindPort;
    this.#maxBodyBytes = maxBodyBytes;
    this.#application = options.application;
    this.#shutdownTimeoutMs = options.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
    this.#resolveId = options.resolveId;
  }

  /** The port actually bound (useful with bindPort 0); only valid after start(). */
  get port(): number {
    if (this.#server === undefined) throw new Error("the api plugin has not been started");
    return this.#server.addr.port;
  }

  start(sink: EventSink): Promise<void> {
    if (this.#server !== undefined || this.#stopped !== undefined) {
      return Promise.reject(new Error("the api plugin was already started"));
    }
    this.#sink = sink;
    const app = this.#buildApp();
    const where = joinHostPort(this.#host, this.#port);
    try {
      // Deno.serve binds synchronously, so a busy port or a bad address throws right here.
      this.#server = Deno.serve({
        hostname: this.#host,
        port: this.#port,
        onListen: ({ hostname, port }) =>
          log.info("api listening", { address: joinHostPort(hostname, port) }),
        onError: (err) => {
          log.error("api request failed", { err: errorMessage(err) });
          return jsonResponse(500, { message: "Internal Server Error" });
        },
      }, app.fetch);
    } catch (err) {
      return Promise.reject(
        new StartupError(`api: cannot listen on ${where}: ${errorMessage(err)}`, { cause: err }),
      );
    }
    return Promise.resolve();
  }

  /** Stops taking requests and waits (boundedly) for those in flight; idempotent. */
  stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return Promise.resolve();
    this.#stopped ??= (async () => {
      this.#stopping.abort();
      // Give handlers woken by the abort a moment to answer before the server stops taking responses:
      // a graceful shutdown otherwise waits for their unfinished uploads, possibly for ever.
      await new Promise((r) => setTimeout(r, SHUTDOWN_SETTLE_MS));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((r) =>
        timer = setTimeout(() => r("timeout"), this.#shutdownTimeoutMs)
      );
      const outcome = await Promise.race([server.shutdown().then(() => "done" as const), timeout]);
      clearTimeout(timer);
      if (outcome === "timeout") {
        log.warn("api requests still running after the shutdown timeout", {
          timeoutMs: this.#shutdownTimeoutMs,
        });
      }
    })();
    return this.#stopped;
  }

  #buildApp(): Hono {
    const app = new Hono();
    // Hono answers HEAD through the GET handlers; the original had no HEAD routes, and a HEAD must not
    // emit a dummy event, so HEAD goes to the same 404/405 answer as any other unrouted method.
    app.use("*", async (c, next) => {
      if (c.req.method === "HEAD") return unrouted(c);
      await next();
    });
    app.get("/", () => jsonResponse(200, { ApiRoutes: API_ROUTES }));
    app.get("/dummy/start", (c) => this.#emit(dummyFlow("start", this.#application), c));
    app.get("/dummy/end", (c) => this.#emit(dummyFlow("end", this.#application), c));
    app.post("/flow", (c) => this.#postFlow(c));
    app.notFound(unrouted);
    app.onError((err, c) => {
      log.error("api handler failed", { method: c.req.method, path: c.req.path, err: errorMessage(err) });
      return jsonResponse(500, { message: "Internal Server Error" });
    });
    return app;
  }

  async #postFlow(c: Context): Promise<Response> {
    try {
      const unsupported = checkContentType(c.req.header("content-type"));
      if (unsupported) return this.#reject(c, unsupported);
      const body = await readBodyLimited(c.req.raw, this.#maxBodyBytes, this.#stopping.signal);
      if (body instanceof Rejection) return this.#reject(c, body);
      const event = parseApiFlowBody(decodeJsonBody(body), nowMicros(), this.#application, this.#resolveId);
      return this.#emit(event, c);
    } catch (err) {
      if (err instanceof Rejection) return this.#reject(c, err);
      if (err instanceof ApiFlowError) return this.#reject(c, new Rejection(400, err.message, err.field));
      throw err;
    }
  }

  #emit(event: FlowEvent, c: Context): Response {
    let refused: string | undefined;
    if (this.#stopping.signal.aborted) refused = "the daemon is shutting down";
    else {
      const result = this.#sink!.emit(event);
      if (!result.accepted) refused = result.reason;
    }
    if (refused !== undefined) {
      return this.#reject(c, new Rejection(503, `the event was not accepted: ${refused}`));
    }
    log.debug("api accepted a flow event", () => ({ flow: describeFlow(event) }));
    return jsonResponse(200, flowEventToApiJson(event));
  }

  #reject(c: Context, r: Rejection): Response {
    this.#rejectLog.run((suppressed) =>
      log.info("api rejected a request", {
        method: c.req.method,
        path: c.req.path,
        status: r.status,
        reason: r.message,
        suppressed,
      })
    );
    return jsonResponse(
      r.status,
      r.field === undefined ? { message: r.message } : { message: r.message, field: r.field },
    );
  }
}

/** echo's answers for unrouted requests: 405 with Allow when the path exists, else 404 (both compact JSON). */
function unrouted(c: Context): Response {
  const methods = API_ROUTES.filter((r) => r.path === c.req.path).map((r) => r.method);
  if (methods.length > 0) {
    return jsonResponse(405, { message: "Method Not Allowed" }, {
      pretty: false,
      headers: { allow: methods.join(", ") },
    });
  }
  return jsonResponse(404, { message: "Not Found" }, { pretty: false });
}
