/**
 * Enricher `netlink`: every `period` ms, asks the kernel (NETLINK_SOCK_DIAG) about each watched flow's
 * socket and publishes tcp_info, the congestion-control name and memory information as a sample.
 *
 * Each flow is matched by its exact 5-tuple (the local end is `src`), with the configured protocol and
 * extension mask; the configured state mask then decides whether the answer is published. The original
 * dumped by ports alone and keyed flows by addresses alone, so flows could collide.
 *
 * A few flows are looked up one by one (one exact request each, about 30 µs). Many flows are found in one
 * dump per family instead, which the kernel narrows to the watched flows' remote (or local) ports when
 * they have few distinct ones; replies are matched against the watched set by a key read from their raw
 * bytes, and only matches are decoded. The enricher measures both ways as it goes and uses the cheaper.
 */
import type { Enricher, EnrichmentSink } from "../core/component.ts";
import { errorMessage } from "../core/errors.ts";
import { describeFlow, type FlowEvent, flowKey, type Protocol } from "../core/flow_event.ts";
import type { FlowInfo } from "../core/flow_info.ts";
import { logger, RateLimitedLog } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import type { NetlinkEnricherConfig } from "../config/schema.ts";
import {
  MAX_FILTER_PORTS,
  parseSockDiagMessage,
  type PortFilter,
  replyKey,
  SockDiag,
  type SockDiagResult,
  socketKey,
  TCPF_ALL,
} from "../net/sock_diag.ts";

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
  /** Exact 5-tuple requests (rounds that looked flows up one by one). */
  lookups: number;
  /** Dumps (rounds that matched flows against dumps; one per address family). */
  dumps: number;
  published: number;
  /** Lookups that found no socket with the flow's 5-tuple. */
  notFound: number;
  /** Sockets found in a state outside the configured mask. */
  filtered: number;
  failed: number;
}

interface Watched {
  readonly flow: FlowEvent;
  /** `socketKey` of the flow's 5-tuple. */
  readonly socketKey: string;
  reportedMissing: boolean;
  /** The round that last found the flow's socket in a dump. */
  seenRound: number;
  /** The socket's identity from the previous answer, whose address objects the next one reuses. */
  previous?: SockDiagResult["socket"]["id"];
}

/** Below this many watched flows a round always looks them up one by one. */
export const DUMP_MIN_FLOWS = 16;
/** What one exact lookup costs until measured here (bench/README.md: about 30 µs). */
const LOOKUP_US = 30;
/** Every this many rounds the way not in use is measured again (the host's socket count changes). */
const REPROBE_ROUNDS = 60;

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
  readonly stats: NetlinkStats = {
    rounds: 0,
    lookups: 0,
    dumps: 0,
    published: 0,
    notFound: 0,
    filtered: 0,
    failed: 0,
  };
  #diag: SockDiag | undefined;
  #sink: EnrichmentSink | undefined;
  readonly #flows = new Map<string, Watched>();
  /** The same flows by `socketKey` (two flow keys can name one socket: IPv4 and IPv4-mapped). */
  readonly #bySocket = new Map<string, Watched[]>();
  /** How many watched flows have each local and remote port, and how many are IPv4. */
  readonly #localPorts = new Map<number, number>();
  readonly #remotePorts = new Map<number, number>();
  #ipv4 = 0;
  /** Measured costs: one exact lookup (µs), one dump round (ms); undefined until measured. */
  #lookupUs: number | undefined;
  #dumpMs: number | undefined;
  #lastProbe = 0;
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
    const key = flowKey(flow);
    this.#remove(key);
    const watched: Watched = {
      flow,
      socketKey: socketKey(flow.src, flow.dst),
      reportedMissing: false,
      seenRound: 0,
    };
    this.#flows.set(key, watched);
    const same = this.#bySocket.get(watched.socketKey);
    if (same) same.push(watched);
    else this.#bySocket.set(watched.socketKey, [watched]);
    count(this.#localPorts, flow.src.port, 1);
    count(this.#remotePorts, flow.dst.port, 1);
    if (isIpv4(flow)) this.#ipv4++;
  }

  forget(flow: FlowEvent): void {
    this.#remove(flowKey(flow));
  }

  #remove(key: string): void {
    const watched = this.#flows.get(key);
    if (watched === undefined) return;
    this.#flows.delete(key);
    const same = this.#bySocket.get(watched.socketKey);
    if (same) {
      const rest = same.filter((w) => w !== watched);
      if (rest.length > 0) this.#bySocket.set(watched.socketKey, rest);
      else this.#bySocket.delete(watched.socketKey);
    }
    count(this.#localPorts, watched.flow.src.port, -1);
    count(this.#remotePorts, watched.flow.dst.port, -1);
    if (isIpv4(watched.flow)) this.#ipv4--;
  }

  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#timer);
    await this.#round;
    this.#flows.clear();
    this.#bySocket.clear();
    this.#localPorts.clear();
    this.#remotePorts.clear();
    this.#ipv4 = 0;
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
    const n = this.#flows.size;
    if (n === 0) return;
    const began = performance.now();
    if (this.#byDump(n)) {
      if (await this.#pollByDump()) this.#dumpMs = performance.now() - began;
    } else {
      const looked = await this.#pollOneByOne();
      if (looked > 0) this.#lookupUs = ((performance.now() - began) * 1000) / looked;
    }
  }

  /** Whether this round uses dumps: the cheaper way by the last measurements, the other now and then. */
  #byDump(n: number): boolean {
    if (n < DUMP_MIN_FLOWS) return false;
    if (this.#dumpMs === undefined) return true;
    const dumpCheaper = this.#dumpMs <= (n * (this.#lookupUs ?? LOOKUP_US)) / 1000;
    if (this.stats.rounds - this.#lastProbe >= REPROBE_ROUNDS) {
      this.#lastProbe = this.stats.rounds;
      return !dumpCheaper;
    }
    return dumpCheaper;
  }

  /** Looks every watched flow up by its 5-tuple; returns how many requests were made. */
  async #pollOneByOne(): Promise<number> {
    const c = this.opts.config;
    let looked = 0;
    for (const [key, watched] of [...this.#flows]) {
      const diag = this.#diag;
      if (!this.#running || diag === undefined) break;
      let found: SockDiagResult | undefined;
      this.stats.lookups++;
      looked++;
      try {
        found = await diag.lookup(watched.flow.src, watched.flow.dst, {
          protocol: c.protocol,
          extensions: c.ext,
        });
      } catch (err) {
        this.#failed(err, watched);
        continue;
      }
      // The flow may have ended (or started again) while the kernel was asked.
      if (this.#flows.get(key) !== watched) continue;
      if (found === undefined) this.#missing(watched);
      else this.#found(watched, found);
    }
    return looked;
  }

  /**
   * One dump per family the watched flows need (IPv4 flows may sit on dual-stack IPv6 sockets), every
   * state, narrowed by port in the kernel when the flows have few distinct ports; false if a dump failed.
   */
  async #pollByDump(): Promise<boolean> {
    const c = this.opts.config;
    const round = this.stats.rounds;
    const families = this.#ipv4 > 0 ? (["ipv4", "ipv6"] as const) : (["ipv6"] as const);
    const ports = this.#portFilter();
    for (const family of families) {
      const diag = this.#diag;
      if (!this.#running || diag === undefined) return false;
      this.stats.dumps++;
      // Each reply is matched as its datagram arrives, against the flows watched now (any that ended
      // meanwhile are not in the map), and published at once: nothing of the dump is kept.
      const onReply = (payload: Uint8Array) => {
        if (!this.#running) return;
        const matches = this.#bySocket.get(replyKey(payload));
        if (matches === undefined) return;
        let found: SockDiagResult;
        try {
          found = parseSockDiagMessage({ payload }, c.protocol, matches[0]!.previous);
        } catch (err) {
          this.#failed(err, matches[0]);
          return;
        }
        for (const watched of matches) {
          // A socket listed twice (a dump restarted after the kernel flagged it inconsistent).
          if (watched.seenRound === round) continue;
          watched.seenRound = round;
          this.#found(watched, found);
        }
      };
      try {
        await diag.eachDumpReply(
          { family, protocol: c.protocol, extensions: c.ext, states: TCPF_ALL },
          ports,
          onReply,
        );
      } catch (err) {
        this.#failed(err);
        // Flows are looked up one by one until the next probe (an old kernel may refuse the filter).
        this.#dumpMs = Number.POSITIVE_INFINITY;
        return false;
      }
      if (!this.#running) return false;
    }
    for (const watched of this.#flows.values()) if (watched.seenRound !== round) this.#missing(watched);
    return true;
  }

  /** The kernel filter for a dump: the side whose ports are fewer, if few enough. */
  #portFilter(): PortFilter | undefined {
    const remote = this.#remotePorts.size, local = this.#localPorts.size;
    if (remote <= MAX_FILTER_PORTS && remote <= local) {
      return { end: "remote", ports: [...this.#remotePorts.keys()] };
    }
    if (local <= MAX_FILTER_PORTS) return { end: "local", ports: [...this.#localPorts.keys()] };
    return undefined;
  }

  #failed(err: unknown, watched?: Watched): void {
    this.stats.failed++;
    this.#failLog.run((suppressed) =>
      log.warn("sock_diag query failed", {
        ...(watched ? { flow: describeFlow(watched.flow) } : {}),
        err: errorMessage(err),
        suppressed,
      })
    );
  }

  #missing(watched: Watched): void {
    this.stats.notFound++;
    if (!watched.reportedMissing) {
      watched.reportedMissing = true;
      log.info("no local socket for this flow (yet); still looking", { flow: describeFlow(watched.flow) });
    }
  }

  #found(watched: Watched, found: SockDiagResult): void {
    watched.previous = found.socket.id;
    if (((this.opts.config.state >>> found.socket.state) & 1) === 0) {
      this.stats.filtered++;
      return;
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

function count(counts: Map<number, number>, port: number, by: number): void {
  const n = (counts.get(port) ?? 0) + by;
  if (n > 0) counts.set(port, n);
  else counts.delete(port);
}

/** An IPv4 flow (IPv4-mapped addresses included): its socket may be AF_INET or a dual-stack AF_INET6. */
function isIpv4(flow: FlowEvent): boolean {
  const a = flow.src.address;
  return a.family === "ipv4" || a.isIpv4Mapped();
}
