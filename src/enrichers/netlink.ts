/**
 * Enricher `netlink`: every `period` ms, asks the kernel (NETLINK_SOCK_DIAG) about each watched flow's
 * socket and publishes tcp_info, the congestion-control name and memory information as a sample.
 *
 * Each flow is looked up by its exact 5-tuple (the local end is `src`), with the configured protocol and
 * extension mask; the configured state mask then decides whether the answer is published. The original
 * dumped by ports alone and keyed flows by addresses alone, so flows could collide.
 */
import type { Enricher, EnrichmentSink } from "../core/component.ts";
import { errorMessage } from "../core/errors.ts";
import { describeFlow, type FlowEvent, flowKey, type Protocol } from "../core/flow_event.ts";
import type { FlowInfo } from "../core/flow_info.ts";
import { logger, RateLimitedLog } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import type { NetlinkEnricherConfig } from "../config/schema.ts";
import { SockDiag, type SockDiagResult } from "../net/sock_diag.ts";

/** What the enricher is built from. */
export interface NetlinkEnricherOptions {
  config: NetlinkEnricherConfig;
  /** `enrichers.period`, milliseconds between two samples of a flow. */
  periodMs: number;
  /** Query the sockets of this network namespace (a path such as /run/netns/NAME) instead of our own. */
  netns?: string;
}

/** Counters, for tests and diagnostics. */
export interface NetlinkStats {
  rounds: number;
  lookups: number;
  published: number;
  /** Lookups that found no socket with the flow's 5-tuple. */
  notFound: number;
  /** Sockets found in a state outside the configured mask. */
  filtered: number;
  failed: number;
}

interface Watched {
  readonly flow: FlowEvent;
  reportedMissing: boolean;
}

const log = logger("enrichers", "netlink");

const PROTOCOLS: Readonly<Record<number, Protocol>> = { 6: "tcp", 17: "udp" };

/** The parts of a sock_diag answer that make a sample. */
export function flowInfoOf(r: SockDiagResult): FlowInfo {
  const info: { -readonly [K in keyof FlowInfo]: FlowInfo[K] } = { socket: r.socket };
  if (r.tcpInfo) info.tcpInfo = r.tcpInfo;
  if (r.cong) info.cong = r.cong;
  if (r.memInfo) info.memInfo = r.memInfo;
  if (r.skMemInfo) info.skMemInfo = r.skMemInfo;
  if (r.tos) info.tos = r.tos;
  if (r.vegasInfo) info.vegasInfo = r.vegasInfo;
  if (r.dctcpInfo) info.dctcpInfo = r.dctcpInfo;
  if (r.bbr) info.bbr = r.bbr;
  return info;
}

/** The netlink enricher: one exact sock_diag lookup per watched flow and period. */
export class NetlinkEnricher implements Enricher {
  readonly name = "netlink";
  readonly flavour = "Netlink" as const;
  readonly stats: NetlinkStats = { rounds: 0, lookups: 0, published: 0, notFound: 0, filtered: 0, failed: 0 };
  #diag: SockDiag | undefined;
  #sink: EnrichmentSink | undefined;
  readonly #flows = new Map<string, Watched>();
  readonly #protocol: Protocol | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #round: Promise<void> = Promise.resolve();
  #running = false;
  readonly #failLog = new RateLimitedLog();

  constructor(private readonly opts: NetlinkEnricherOptions) {
    this.#protocol = PROTOCOLS[opts.config.protocol];
  }

  /** Flows being watched. */
  get watching(): number {
    return this.#flows.size;
  }

  start(sink: EnrichmentSink): Promise<void> {
    this.#sink = sink;
    this.#diag = SockDiag.open(this.opts.netns ? { netns: this.opts.netns } : {});
    if (this.#protocol === undefined) {
      log.warn("protocol is neither TCP (6) nor UDP (17): no flow will be watched", {
        protocol: this.opts.config.protocol,
      });
    }
    this.#running = true;
    this.#schedule(this.opts.periodMs);
    log.info("polling flows", {
      periodMs: this.opts.periodMs,
      protocol: this.opts.config.protocol,
      ext: this.opts.config.ext,
      state: this.opts.config.state,
    });
    return Promise.resolve();
  }

  watch(flow: FlowEvent): void {
    if (!this.#running || flow.protocol !== this.#protocol) return;
    if (flow.src.port === 0 || flow.dst.port === 0) {
      // A 5-tuple lookup needs ports; the original matched every socket of the host instead.
      log.debug("not watching a flow without ports", { flow: describeFlow(flow) });
      return;
    }
    this.#flows.set(flowKey(flow), { flow, reportedMissing: false });
  }

  forget(flow: FlowEvent): void {
    this.#flows.delete(flowKey(flow));
  }

  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#timer);
    await this.#round;
    this.#flows.clear();
    this.#diag?.close();
    this.#diag = undefined;
  }

  #schedule(delayMs: number): void {
    this.#timer = setTimeout(() => {
      const began = performance.now();
      this.#round = this.#pollAll().finally(() => {
        // The next round starts a period after this one began; a round longer than that runs back to back.
        if (this.#running) this.#schedule(Math.max(0, this.opts.periodMs - (performance.now() - began)));
      });
    }, delayMs);
  }

  async #pollAll(): Promise<void> {
    this.stats.rounds++;
    const c = this.opts.config;
    for (const [key, watched] of [...this.#flows]) {
      const diag = this.#diag;
      if (!this.#running || diag === undefined) return;
      let found: SockDiagResult | undefined;
      this.stats.lookups++;
      try {
        found = await diag.lookup(watched.flow.src, watched.flow.dst, {
          protocol: c.protocol,
          extensions: c.ext,
        });
      } catch (err) {
        this.stats.failed++;
        this.#failLog.run((suppressed) =>
          log.warn("sock_diag query failed", {
            flow: describeFlow(watched.flow),
            err: errorMessage(err),
            suppressed,
          })
        );
        continue;
      }
      // The flow may have ended (or started again) while the kernel was asked.
      if (this.#flows.get(key) !== watched) continue;
      if (found === undefined) {
        this.stats.notFound++;
        if (!watched.reportedMissing) {
          watched.reportedMissing = true;
          log.info("no local socket for this flow (yet); still looking", {
            flow: describeFlow(watched.flow),
          });
        }
        continue;
      }
      if (((c.state >>> found.socket.state) & 1) === 0) {
        this.stats.filtered++;
        continue;
      }
      this.stats.published++;
      this.#sink?.publish({
        flavour: this.flavour,
        flow: watched.flow,
        time: nowMicros(),
        info: flowInfoOf(found),
      });
    }
  }
}
