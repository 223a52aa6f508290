/**
 * Backend `prometheus`: TCP metrics in the Prometheus text format on `/metrics`, as the original: one
 * HTTP server (and registry) per enricher flavour, netlink on `netlinkPort` and skops on `skopsPort`
 * (0 turns one off), with the original's per-flow `flow_tcp_*` families (prometheus_flows.ts, series
 * removed when the flow ends). Each registry also serves bounded aggregates per (experiment, activity)
 * (prometheus_aggregates.ts) and process metrics (prometheus_process.ts).
 *
 * A port that cannot be bound stops the daemon from starting (the original only logged it at INFO), and
 * an IPv6 `bindAddress` works. Samples of a flavour whose port is 0 are ignored (the original panicked).
 */
import { probeAnswer, type ReadinessSource } from "../core/readiness.ts";
import { getLogger } from "@logtape/logtape";
import { Registry } from "prom-client";
import type { Backend, EnrichmentSample, Flavour } from "../core/component.ts";
import { errorMessage, StartupError } from "../core/errors.ts";
import { type FlowEvent, flowKey } from "../core/flow_event.ts";
import { type Logger, logger } from "../core/log.ts";
import { joinHostPort } from "../net/ip.ts";
import type { PrometheusConfig } from "../config/schema.ts";
import { FlowSeries, type SeriesCursor } from "./prometheus_flows.ts";
import { FlowCounts, IdPairLabels, TrafficAggregates } from "./prometheus_aggregates.ts";
import { registerProcessMetrics } from "./prometheus_process.ts";
import { type HealthMetric, type HealthSource, renderHealthMetrics } from "../core/health.ts";
import { type FastReply, HttpServer } from "../net/http_server.ts";
import type { RequestHead } from "../net/http_parser.ts";

/** Flows with per-flow series per flavour, at most; further flows only count in the aggregates. */
export const MAX_EXPORTED_FLOWS = 50_000;

/** What the backend is built from. */
export interface PrometheusBackendOptions {
  config: PrometheusConfig;
  /** Goes into `flowd_build_info`. */
  version: string;
  /** Flows with per-flow series per flavour (default `MAX_EXPORTED_FLOWS`). */
  maxFlows?: number;
  /** The daemon's health metrics (queues, drops, rejections), served on every endpoint. */
  health?: HealthSource;
  /** The daemon's state, for /healthz and /readyz on every metrics port. */
  readiness?: ReadinessSource;
}

/** One flavour's registry, data and server. */
interface Endpoint {
  readonly flavour: Flavour;
  readonly port: number;
  readonly registry: Registry;
  readonly series: FlowSeries;
  readonly traffic: TrafficAggregates;
  /** Chunk buffers of finished scrapes, for the next ones (scrapes at the same time each take one). */
  readonly spare: Uint8Array[];
  server?: HttpServer;
}

/** Scrapes have no body; anything larger than this is refused (413). */
const MAX_SCRAPE_BODY_BYTES = 4096;

/** The `listener` label of a flavour's server in the HTTP health metrics: the configuration key's name. */
const LISTENER_NAME: Record<Flavour, string> = { Netlink: "prometheus-netlink", Ebpf: "prometheus-skops" };

const encoder = new TextEncoder();
/**
 * Bytes of one chunk of an exposition: few writes per scrape (each a trip through the event loop, which
 * on a loaded machine cost more with 256 KiB chunks), and little memory (at 10,000 flows the body is 30
 * MB; held whole, with the copies of a web Response, it cost 150 MB of RSS).
 */
export const CHUNK_BYTES = 1024 * 1024;
/** Chunk buffers kept between scrapes per endpoint. */
const SPARE_CHUNKS = 2;

/**
 * What a scrape gets, chunk by chunk in one reused buffer (each chunk is valid until the next is asked
 * for): the registry's metrics (flow counts, process), the daemon's health metrics, the traffic
 * aggregates, then the per-flow families written straight into the buffer.
 */
async function* exposition(
  e: Endpoint,
  health: HealthSource | undefined,
  chunkBytes = CHUNK_BYTES,
): AsyncGenerator<Uint8Array> {
  const healthText = health ? renderHealthMetrics(health()) : "";
  let text = `${await e.registry.metrics()}\n${healthText}${e.traffic.render()}\n`;
  const reused = e.spare.pop();
  const out = reused?.byteLength === chunkBytes ? reused : new Uint8Array(chunkBytes);
  let cursor: SeriesCursor | undefined;
  try {
    let pos = 0;
    while (text.length > 0) {
      const { read, written } = encoder.encodeInto(text, out.subarray(pos));
      pos += written;
      text = text.slice(read);
      if (text.length > 0) {
        yield out.subarray(0, pos);
        pos = 0;
      }
    }
    cursor = e.series.cursor();
    while (!cursor.done) {
      const end = cursor.fill(out, pos);
      if (cursor.done) pos = end;
      else {
        if (end === 0) throw new Error("a per-flow series line is longer than a whole chunk");
        yield out.subarray(0, end);
        pos = 0;
      }
    }
    if (pos > 0) yield out.subarray(0, pos);
  } finally {
    cursor?.close(); // a scrape abandoned half way
    if (e.spare.length < SPARE_CHUNKS) e.spare.push(out);
  }
}

/** A whole exposition in one buffer (tests, `metricsText`, the rare absolute-form request). */
async function wholeExposition(e: Endpoint, health: HealthSource | undefined): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of exposition(e, health)) parts.push(chunk.slice());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.byteLength;
  }
  return out;
}

/** Whether a request target is `/metrics` (with or without a query). */
function isMetricsTarget(target: string): boolean {
  return target.startsWith("/metrics") && (target.length === 8 || target.charCodeAt(8) === 63); // "?"
}

/** The prometheus backend: one registry and HTTP server per enricher flavour. */
export class PrometheusBackend implements Backend {
  readonly name = "prometheus";
  readonly replayOpenFlows = true;
  readonly #endpoints = new Map<Flavour, Endpoint>();
  readonly #log: Logger;
  #counts: FlowCounts | undefined;
  /** Each watched flow's key, computed once: samples of a flow share its start event. */
  readonly #keys = new WeakMap<FlowEvent, string>();

  constructor(private readonly opts: PrometheusBackendOptions) {
    // `log: false` sends this backend's lines to a category no sink listens to.
    this.#log = opts.config.log ? logger("backends", "prometheus") : getLogger(["silenced", "prometheus"]);
  }

  /** The address a flavour's server listens on, once started (port 0 in the configuration: none). */
  address(flavour: Flavour): Deno.NetAddr | undefined {
    return this.#endpoints.get(flavour)?.server?.addr;
  }

  /** Flows with per-flow series of a flavour. */
  exportedFlows(flavour: Flavour): number {
    return this.#endpoints.get(flavour)?.series.size ?? 0;
  }

  /** The exposition text of a flavour's registry, as a scrape would get it. */
  async metricsText(flavour: Flavour): Promise<string> {
    const e = this.#endpoints.get(flavour);
    if (!e) throw new Error(`the ${flavour} metrics are disabled`);
    return new TextDecoder().decode(await wholeExposition(e, this.opts.health));
  }

  async start(): Promise<void> {
    const c = this.opts.config;
    const labels = new IdPairLabels();
    for (const [flavour, port] of [["Netlink", c.netlinkPort], ["Ebpf", c.skopsPort]] as const) {
      if (port === 0) continue;
      const registry = new Registry();
      const series = new FlowSeries(flavour, this.opts.maxFlows ?? MAX_EXPORTED_FLOWS);
      this.#endpoints.set(flavour, {
        flavour,
        port,
        registry,
        series,
        traffic: new TrafficAggregates(labels),
        spare: [],
      });
    }
    if (this.#endpoints.size === 0) {
      this.#log.warn("both metric flavours are disabled (netlinkPort and skopsPort are 0)");
      return;
    }
    const registries = [...this.#endpoints.values()].map((e) => e.registry);
    this.#counts = new FlowCounts(registries, labels);
    registerProcessMetrics(registries, this.opts.version);
    try {
      for (const e of this.#endpoints.values()) e.server = this.#serve(e);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  #serve(e: Endpoint): HttpServer {
    const c = this.opts.config;
    const where = joinHostPort(c.bindAddress, e.port);
    let server: HttpServer;
    try {
      server = HttpServer.listen({
        hostname: c.bindAddress,
        port: e.port,
        name: LISTENER_NAME[e.flavour],
        log: this.#log,
        maxConnections: c.maxConnections,
        headerTimeoutMs: c.headerTimeout * 1000,
        idleTimeoutMs: c.idleTimeout * 1000,
        maxBodyBytes: MAX_SCRAPE_BODY_BYTES,
        fast: (head) => this.#scrape(e, head),
      }, (req) => this.#respond(e, req));
    } catch (err) {
      throw new StartupError(
        `prometheus: cannot listen on ${where} (${e.flavour} metrics): ${errorMessage(err)}`,
      );
    }
    this.#log.info("serving metrics", {
      flavour: e.flavour,
      url: `http://${joinHostPort(server.addr.hostname, server.addr.port)}/metrics`,
    });
    return server;
  }

  /** Scrapes of `/metrics`, streamed; anything else goes to `#respond`. */
  #scrape(e: Endpoint, head: RequestHead): FastReply | undefined {
    if (!isMetricsTarget(head.target) || (head.method !== "GET" && head.method !== "HEAD")) return undefined;
    return {
      status: 200,
      headers: [["content-type", e.registry.contentType]],
      body: exposition(e, this.opts.health),
    };
  }

  async #respond(e: Endpoint, req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    const probe = probeAnswer(path, this.opts.readiness);
    if (probe) {
      return new Response(probe.body, {
        status: probe.status,
        headers: { "content-type": "application/json" },
      });
    }
    if (path !== "/metrics") return new Response("not found; metrics are on /metrics\n", { status: 404 });
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { Allow: "GET, HEAD" } });
    }
    // Only requests in absolute form get here (the fast path takes "/metrics").
    const body = req.method === "HEAD" ? null : await wholeExposition(e, this.opts.health);
    return new Response(body as Uint8Array<ArrayBuffer> | null, {
      headers: { "Content-Type": e.registry.contentType },
    });
  }

  handle(event: FlowEvent): void {
    this.#counts?.observe(event);
    if (event.state === "end") {
      const key = flowKey(event);
      for (const e of this.#endpoints.values()) {
        e.series.delete(key);
        e.traffic.forget(key);
      }
    }
  }

  enrich(sample: EnrichmentSample): void {
    const e = this.#endpoints.get(sample.flavour);
    if (!e) return; // this flavour's port is 0
    let key = this.#keys.get(sample.flow);
    if (key === undefined) this.#keys.set(sample.flow, key = flowKey(sample.flow));
    e.traffic.observe(key, sample);
    if (!e.series.update(key, sample.flow, sample.info) && e.series.refused === 1) {
      this.#log.warn("too many flows for per-flow metrics; further flows count only in the aggregates", {
        flavour: e.flavour,
        maxFlows: e.series.capacity,
      });
    }
  }

  /** The metrics servers' counters (connections, timeouts, refusals). */
  health(): HealthMetric[] {
    return [...this.#endpoints.values()].flatMap((e) => e.server?.health() ?? []);
  }

  async stop(): Promise<void> {
    for (const e of this.#endpoints.values()) {
      const server = e.server;
      e.server = undefined;
      await server?.stop();
    }
  }
}
