/**
 * The `api` plugin: a small REST API (Hono on our own HTTP server, src/net/http_server.ts) through which
 * other programs announce flows.
 *
 * Routes, JSON shapes and pretty-printing follow the original (flowd-go-behaviour §4.2). Fixed on purpose
 * (§11.3 item 21): bodies are validated and rejections say which key is wrong, bodies are size-limited,
 * IPv6 bind addresses work, a listen failure stops startup, and a refused event is a 503 instead of a
 * request that hangs forever. Connections are bounded in number and every phase in time (slow clients
 * cannot hold sockets); the GET routes that emit a dummy flow are off unless enabled (any web page could
 * trigger a GET against 127.0.0.1), and POST /flow can require a bearer token.
 */
import { probeAnswer, type ReadinessSource } from "../core/readiness.ts";
import { type Context, Hono } from "hono";
import type { EventSink, Plugin } from "../core/component.ts";
import { ConfigError, errorMessage, StartupError } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import { debugLogging, logger, RateLimitedLog } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import { IpAddress, joinHostPort } from "../net/ip.ts";
import { type FastReply, headerValue, HttpServer, type HttpServerLimits } from "../net/http_server.ts";
import type { HealthMetric } from "../core/health.ts";
import {
  apiFlowEchoText,
  ApiFlowError,
  type ApiIdResolver,
  goJson,
  parseApiFlowBody,
  rejectionReason,
} from "./api_json.ts";
import type { BearerToken } from "./api_token.ts";

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
  /** Serve GET /dummy/start and /dummy/end (default false: they answer 404). */
  enableDummyEndpoints?: boolean;
  /** File holding the bearer token that POST /flow (and the dummy routes) require; read at start. */
  tokenFile?: string;
  /** Connection cap and timeouts of the HTTP server (its defaults otherwise). */
  limits?: Pick<HttpServerLimits, "maxConnections" | "headerTimeoutMs" | "bodyTimeoutMs" | "idleTimeoutMs">;
  /** The daemon's state, for GET /healthz and /readyz (without it they answer as a lone plugin would). */
  readiness?: ReadinessSource;
}

/** One entry of GET /'s route list, shaped like the original's echo route records. */
export interface ApiRoute {
  method: string;
  path: string;
  name: string;
}

/** The routes served (with the dummy endpoints enabled), in the order GET / lists them. */
export const API_ROUTES: readonly ApiRoute[] = [
  { method: "GET", path: "/", name: "listRoutes" },
  { method: "GET", path: "/dummy/start", name: "dummyFlowStart" },
  { method: "GET", path: "/dummy/end", name: "dummyFlowEnd" },
  { method: "POST", path: "/flow", name: "postFlow" },
];

const isDummyRoute = (r: ApiRoute) => r.path.startsWith("/dummy/");

const DEFAULT_MAX_BODY_BYTES = 65536;
const DEFAULT_SHUTDOWN_TIMEOUT_MS = 5000;

const log = logger("plugins", "api");

function jsonResponse(
  status: number,
  value: unknown,
  opts: { pretty?: boolean; headers?: Record<string, string> } = {},
) {
  const headers = { ...opts.headers, "content-type": "application/json" };
  return new Response(goJson(value, opts.pretty ?? true), { status, headers });
}

/** An answer of the API, independent of how it goes out (a web Response, or the server's fast path). */
interface Outcome {
  status: number;
  json: unknown;
  /** The pretty JSON of `json` when already serialised (the echo of an accepted event). */
  text?: string;
  /** `text` is known to be ASCII. */
  ascii?: boolean;
  headers?: Record<string, string>;
}

function outcomeText(o: Outcome): string {
  return o.text ?? goJson(o.json, true);
}

function outcomeResponse(o: Outcome): Response {
  const headers = { ...o.headers, "content-type": "application/json" };
  return new Response(outcomeText(o), { status: o.status, headers });
}

const JSON_TYPE: readonly [string, string] = ["content-type", "application/json"];
/** Shared by every answer without extra headers, so the common one allocates no header list. */
const JSON_ONLY: readonly (readonly [string, string])[] = [JSON_TYPE];

function outcomeReply(o: Outcome): FastReply {
  let headers = JSON_ONLY;
  if (o.headers) {
    const list: (readonly [string, string])[] = [];
    for (const [k, v] of Object.entries(o.headers)) list.push([k.toLowerCase(), v]);
    list.push(JSON_TYPE);
    headers = list;
  }
  // Text: the server encodes an ASCII answer together with its head.
  return { status: o.status, headers, body: outcomeText(o), ascii: o.ascii };
}

/** The path of a request target, without its query. */
function pathOf(target: string): string {
  const q = target.indexOf("?");
  return q < 0 ? target : target.slice(0, q);
}

/** Why a request was turned away: status and a message for the client and the log. */
class Rejection {
  constructor(readonly status: number, readonly message: string, readonly field?: string) {}
}

/** Reasons of rejections that name no field, by status. */
const REJECTION_REASONS: Readonly<Record<number, string>> = {
  400: "body",
  401: "unauthorized",
  413: "too-large",
  415: "media-type",
  503: "busy",
};

const SHUTTING_DOWN = "the daemon is shutting down";
const EMPTY_BODY = new Uint8Array(0);

/** Method and path of a request, for log lines. */
interface RequestAt {
  method: string;
  path: string;
}

const POST_FLOW: RequestAt = { method: "POST", path: "/flow" };

const utf8 = new TextDecoder("utf-8", { fatal: true });

let lastAscii = "";

/** Whether a string is all ASCII; the last one found so is remembered (the configured name, mostly). */
function isAscii(text: string): boolean {
  if (text === lastAscii) return true;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) >= 0x80) return false;
  lastAscii = text;
  return true;
}

/** Decodes a POST /flow body into JSON, or says what is wrong with it. */
function decodeJsonBody(bytes: Uint8Array): unknown {
  // The decoder's op costs less than building the string of an ASCII body in JS (0.35 against 0.77 µs
  // for 200 bytes, measured with Deno 2.9).
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
  // The common spelling, without the split/trim/lower-case below (which would accept it too).
  if (header === "application/json") return undefined;
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
  readonly #readiness: ReadinessSource | undefined;
  readonly #routes: readonly ApiRoute[];
  readonly #tokenFile: string | undefined;
  readonly #limits: ApiPluginOptions["limits"];
  readonly #rejectLog = new RateLimitedLog();
  #stopping = false;
  #token: BearerToken | undefined;
  #server: HttpServer | undefined;
  #sink: EventSink | undefined;
  /** Requests answered 503 because a backend queue was full (back-pressure). */
  /** 503s for a full queue; requests turned away by reason (a field of the body, or what the status says). */
  readonly stats = { busy: 0, rejected: new Map<string, number>() };
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
    this.#routes = options.enableDummyEndpoints ? API_ROUTES : API_ROUTES.filter((r) => !isDummyRoute(r));
    this.#tokenFile = options.tokenFile;
    this.#limits = options.limits;
    this.#readiness = options.readiness;
  }

  /** The port actually bound (useful with bindPort 0); only valid after start(). */
  get port(): number {
    if (this.#server === undefined) throw new Error("the api plugin has not been started");
    return this.#server.addr.port;
  }

  async start(sink: EventSink): Promise<void> {
    if (this.#server !== undefined || this.#stopped !== undefined) {
      throw new Error("the api plugin was already started");
    }
    // node:crypto (through api_token.ts) costs start-up time; only a configured token needs it.
    if (this.#tokenFile !== undefined) {
      this.#token = await (await import("./api_token.ts")).readTokenFile(this.#tokenFile);
    }
    this.#sink = sink;
    const app = this.#buildApp();
    const where = joinHostPort(this.#host, this.#port);
    try {
      // Binds synchronously, so a busy port or a bad address throws right here.
      this.#server = HttpServer.listen({
        ...this.#limits,
        hostname: this.#host,
        port: this.#port,
        name: "api",
        log,
        maxBodyBytes: this.#maxBodyBytes,
        shutdownTimeoutMs: this.#shutdownTimeoutMs,
        errorResponse: (status, message, reason) =>
          jsonResponse(status, { message: reason === "stopping" ? SHUTTING_DOWN : message }),
        // POST /flow, the one hot route, without web Request/Response objects; the rest goes through Hono.
        fast: (head, body) => {
          if (head.method !== "POST" || pathOf(head.target) !== "/flow") return undefined;
          return outcomeReply(this.#postFlow(
            POST_FLOW,
            headerValue(head, "authorization"),
            headerValue(head, "content-type"),
            body ?? EMPTY_BODY,
          ));
        },
      }, app.fetch);
    } catch (err) {
      throw new StartupError(`api: cannot listen on ${where}: ${errorMessage(err)}`, { cause: err });
    }
    log.info("api listening", {
      address: joinHostPort(this.#server.addr.hostname, this.#server.addr.port),
      dummyEndpoints: this.#routes.length === API_ROUTES.length,
      bearerToken: this.#token !== undefined,
    });
  }

  /** Stops taking requests and waits (boundedly) for those in flight; idempotent. */
  stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return Promise.resolve();
    this.#stopping = true; // requests still reaching a handler are answered 503
    this.#stopped ??= server.stop();
    return this.#stopped;
  }

  /** The HTTP server's counters (connections, timeouts, refusals). */
  health(): HealthMetric[] {
    return [
      ...(this.#server?.health() ?? []),
      {
        name: "flowd_api_busy_total",
        help: "Flow events the api refused with 503 and Retry-After because a backend queue was full",
        type: "counter",
        value: this.stats.busy,
      },
      ...[...this.stats.rejected].map(([reason, value]): HealthMetric => ({
        name: "flowd_api_requests_rejected_total",
        help: "Flow requests the api turned away, by reason: the body field at fault, or " +
          "unauthorized, media-type, too-large, stopping, busy",
        type: "counter",
        labels: { reason },
        value,
      })),
    ];
  }

  #buildApp(): Hono {
    const app = new Hono();
    // Hono answers HEAD through the GET handlers; the original had no HEAD routes, and a HEAD must not
    // emit a dummy event, so HEAD goes to the same 404/405 answer as any other unrouted method.
    app.use("*", async (c, next) => {
      if (c.req.method === "HEAD") return this.#unrouted(c);
      await next();
    });
    app.get("/", () => jsonResponse(200, { ApiRoutes: this.#routes }));
    // Probes for monitors and load balancers: no token, never an event (not in the original's route list).
    for (const path of ["/healthz", "/readyz"]) {
      app.get(path, () => {
        const a = probeAnswer(path, this.#readiness)!;
        return new Response(a.body, { status: a.status, headers: { "content-type": "application/json" } });
      });
    }
    if (this.#routes.some(isDummyRoute)) {
      for (const state of ["start", "end"] as const) {
        app.get(`/dummy/${state}`, (c) => {
          const at = { method: c.req.method, path: c.req.path };
          const denied = this.#authorized(at, c.req.header("authorization"));
          return outcomeResponse(denied ?? this.#emit(at, dummyFlow(state, this.#application)));
        });
      }
    }
    // Reached when the fast path leaves it (it claims every POST /flow; kept for completeness).
    app.post("/flow", async (c) =>
      outcomeResponse(this.#postFlow(
        { method: c.req.method, path: c.req.path },
        c.req.header("authorization"),
        c.req.header("content-type"),
        await c.req.bytes(),
      )));
    app.notFound((c) => this.#unrouted(c));
    app.onError((err, c) => {
      log.error("api handler failed", { method: c.req.method, path: c.req.path, err: errorMessage(err) });
      return jsonResponse(500, { message: "Internal Server Error" });
    });
    return app;
  }

  /** With a token configured: undefined when the request carries it, else the 401 answer. */
  #authorized(at: RequestAt, authorization: string | undefined): Outcome | undefined {
    if (this.#token === undefined) return undefined;
    const problem = this.#token.check(authorization);
    if (problem === undefined) return undefined;
    return this.#reject(at, new Rejection(401, problem), { "www-authenticate": "Bearer" });
  }

  /** POST /flow: checks, parses and emits; every answer, good or bad, as an Outcome. */
  #postFlow(
    at: RequestAt,
    authorization: string | undefined,
    contentType: string | undefined,
    body: Uint8Array,
  ): Outcome {
    try {
      const denied = this.#authorized(at, authorization);
      if (denied) return denied;
      const unsupported = checkContentType(contentType);
      if (unsupported) return this.#reject(at, unsupported);
      if (this.#stopping) return this.#reject(at, new Rejection(503, SHUTTING_DOWN));
      // The server has read the whole body already, within maxBodyBytes and the body timeout.
      const event = parseApiFlowBody(decodeJsonBody(body), nowMicros, this.#application, this.#resolveId);
      return this.#emit(at, event);
    } catch (err) {
      if (err instanceof Rejection) return this.#reject(at, err);
      if (err instanceof ApiFlowError) return this.#reject(at, new Rejection(400, err.message, err.field));
      throw err;
    }
  }

  #emit(at: RequestAt, event: FlowEvent): Outcome {
    let refused: string | undefined;
    if (this.#stopping) refused = SHUTTING_DOWN;
    else if (this.#sink!.whenRoom?.() !== undefined) {
      // Back-pressure: a backend's queue is full. Refuse before anything is lost; the client retries.
      this.stats.busy++;
      return this.#reject(at, new Rejection(503, "a backend's queue is full; retry later"), {
        "Retry-After": "1",
      });
    } else {
      const result = this.#sink!.emit(event);
      if (!result.accepted) refused = result.reason;
    }
    if (refused !== undefined) {
      return this.#reject(at, new Rejection(503, `the event was not accepted: ${refused}`));
    }
    // Guarded: the closure and the logger's level lookup cost per request while debug is off.
    if (debugLogging()) log.debug("api accepted a flow event", { flow: describeFlow(event) });
    // The echo's only text that can hold non-ASCII characters is the application name.
    return { status: 200, json: undefined, text: apiFlowEchoText(event), ascii: isAscii(event.application) };
  }

  #reject(at: RequestAt, r: Rejection, headers?: Record<string, string>): Outcome {
    const reason = r.field !== undefined
      ? rejectionReason(r.field)
      : r.message === SHUTTING_DOWN
      ? "stopping"
      : REJECTION_REASONS[r.status] ?? String(r.status);
    this.stats.rejected.set(reason, (this.stats.rejected.get(reason) ?? 0) + 1);
    this.#rejectLog.run((suppressed) =>
      log.info("api rejected a request", {
        method: at.method,
        path: at.path,
        status: r.status,
        reason: r.message,
        suppressed,
      })
    );
    return {
      status: r.status,
      json: r.field === undefined ? { message: r.message } : { message: r.message, field: r.field },
      headers,
    };
  }

  /** echo's answers for unrouted requests: 405 with Allow when the path exists, else 404 (both compact JSON). */
  #unrouted(c: Context): Response {
    const methods = this.#routes.filter((r) => r.path === c.req.path).map((r) => r.method);
    if (methods.length > 0) {
      return jsonResponse(405, { message: "Method Not Allowed" }, {
        pretty: false,
        headers: { allow: methods.join(", ") },
      });
    }
    return jsonResponse(404, { message: "Not Found" }, { pretty: false });
  }
}
