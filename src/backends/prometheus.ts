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
import { FlowSeries } from "./prometheus_flows.ts";
import { FlowCounts, IdPairLabels, TrafficAggregates } from "./prometheus_aggregates.ts";
import { registerProcessMetrics } from "./prometheus_process.ts";
import { type HealthMetric, type HealthSource, renderHealthMetrics } from "../core/health.ts";
import { HttpServer } from "../net/http_server.ts";

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
  /** Where expositions are written, reused from scrape to scrape. */
  buffer: Uint8Array;
  server?: HttpServer;
}

/** Scrapes have no body; anything larger than this is refused (413). */
const MAX_SCRAPE_BODY_BYTES = 4096;

/** The `listener` label of a flavour's server in the HTTP health metrics: the configuration key's name. */
const LISTENER_NAME: Record<Flavour, string> = { Netlink: "prometheus-netlink", Ebpf: "prometheus-skops" };

const encoder = new TextEncoder();
/** Extra room of an exposition buffer, so small changes in size do not reallocate it. */
const BUFFER_SLACK = 64 * 1024;

/**
 * What a scrape gets: the registry's metrics (flow counts, process), the daemon's health metrics, the
 * traffic aggregates, the per-flow families; encoded into the endpoint's buffer, the per-flow families
 * written straight into it. The bytes are valid until the next call: a `Response` copies its body when
 * built, and the text is decoded at once.
 */
async function exposition(e: Endpoint, health: HealthSource | undefined): Promise<Uint8Array> {
  const healthText = health ? renderHealthMetrics(health()) : "";
  const head = `${await e.registry.metrics()}\n${healthText}${e.traffic.render()}\n`;
  // UTF-8 takes at most 3 bytes per UTF-16 unit.
  const needed = head.length * 3 + e.series.byteBound();
  // Kept between scrapes: writing into fresh memory costs a page fault per 4 KiB (a third of the time at
  // 10,000 flows). Grown with room to spare, shrunk when far too large.
  if (e.buffer.byteLength < needed || e.buffer.byteLength > 4 * needed + BUFFER_SLACK) {
    e.buffer = new Uint8Array(Math.ceil(needed * 1.25) + BUFFER_SLACK);
  }
  const out = e.buffer;
  const headBytes = encoder.encodeInto(head, out).written;
  return out.subarray(0, e.series.renderInto(out, headBytes));
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
    return new TextDecoder().decode(await exposition(e, this.opts.health));
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
        buffer: new Uint8Array(0),
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
    const body = await exposition(e, this.opts.health);
    // The Response copies the body: the endpoint's buffer can take the next scrape.
    return new Response(req.method === "HEAD" ? null : body as Uint8Array<ArrayBuffer>, {
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
