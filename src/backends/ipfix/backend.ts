/**
 * Backend `ipfix`: exports the marked flows as IPFIX records (RFC 7011) to collectors. Counts come
 * from the daemon's counter hub (the marker's kernel counters, egress only), exported as deltas since
 * the flow's previous record: one every `activeTimeout` seconds while a flow lasts (flowEndReason
 * active timeout), a final one at its end (end of flow detected; lack of resources when the marker
 * evicted it for a newer flow) and at shutdown (forced end). One timer for the whole backend; per flow
 * only the last exported totals and the next due time are kept.
 */
import { UdpSender } from "../../../ffi/udp_batch.ts";
import type { Backend, ComponentStatus } from "../../core/component.ts";
import { errorMessage, StartupError } from "../../core/errors.ts";
import type { FlowCounterHub, FlowCounts, RetireReason } from "../../core/flow_counters.ts";
import { type FlowEvent, flowKey } from "../../core/flow_event.ts";
import type { HealthMetric } from "../../core/health.ts";
import { logger } from "../../core/log.ts";
import type { IpfixConfig } from "../../config/schema.ts";
import { IpAddress } from "../../net/ip.ts";
import { type Collector, TcpCollector, UdpCollector } from "./collector.ts";
import { FLOW_END_REASON, IPV4_TEMPLATE, IPV6_TEMPLATE } from "./elements.ts";
import type { DataRecord } from "./encoder.ts";
import { ExportSession, type PendingRecord } from "./session.ts";

const log = logger("backends", "ipfix");

export interface IpfixBackendOptions {
  config: IpfixConfig;
  /** Where the marker offers its per-flow counts (the daemon's hub). */
  counters: FlowCounterHub;
  /** Name lookups (tests). */
  lookupFn?: (host: string) => Promise<string>;
}

/** How long an end waits for the marker to hand over its final counts before the live ones are used. */
const END_GRACE_MS = 2_000;

/** The flowEndReason of a flow the marker let go: evicted from a full map, or ended. */
function endReasonOf(reason: RetireReason): number {
  return reason === "evicted" ? FLOW_END_REASON.lackOfResources : FLOW_END_REASON.endOfFlowDetected;
}

/** How often the timer looks for due records. */
const TICK_MS = 100;
const LOOKUP_TIMEOUT_MS = 5_000;

/** What is kept per open flow. */
interface FlowState {
  readonly event: FlowEvent;
  packets: bigint;
  bytes: bigint;
  /** When its next active-timeout record is due (ms). */
  due: number;
  /** Set once its end arrived while the marker still counted it. */
  endedAt?: number;
  /** flowStartMilliseconds as first exported: every record of the flow carries the same (jiffies → ms jitters). */
  startMs?: number;
}

/** Bytes of IP and UDP headers subtracted from the path MTU. */
const HEADERS = { ipv4: 20 + 8, ipv6: 40 + 8 } as const;

export class IpfixBackend implements Backend {
  readonly name = "ipfix";
  readonly replayOpenFlows = true;
  /** Open flows in due order (a record moves the flow to the back; all share one active timeout). */
  #flows = new Map<string, FlowState>();
  /** Ended flows waiting (at most END_GRACE_MS) for the marker's final counts. */
  #ending = new Map<string, FlowState>();
  #collectors: Collector[] = [];
  #senders: UdpSender[] = [];
  #pending: PendingRecord[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #leaveHub: (() => void) | undefined;
  #recordsBuilt = 0;

  constructor(private readonly opts: IpfixBackendOptions) {}

  async start(): Promise<void> {
    const c = this.opts.config;
    try {
      const senders = new Map<string, UdpSender>();
      for (const [i, spec] of c.collectors.entries()) {
        const where = `backends.ipfix.collectors[${i}]`;
        const address = await this.#resolve(spec.address, where);
        const maxMessageSize = Math.min(c.pathMtu - HEADERS[address.family], 65_535);
        const session = new ExportSession({
          observationDomainId: c.observationDomainId,
          pen: c.privateEnterpriseNumber,
          maxMessageSize,
          templates: [IPV6_TEMPLATE, IPV4_TEMPLATE],
        });
        if (spec.transport === "udp") {
          let sender = senders.get(address.family);
          if (!sender) {
            sender = UdpSender.open(address.family);
            senders.set(address.family, sender);
            this.#senders.push(sender);
          }
          this.#collectors.push(
            new UdpCollector(address, spec.port, sender, session, {
              templateRefreshS: c.templateRefresh,
              templateRefreshPackets: c.templateRefreshPackets,
            }),
          );
        } else {
          const tcp = new TcpCollector(address, spec.port, session);
          this.#collectors.push(tcp);
          await tcp.connect(); // a refused connection is retried in the background, never fatal
        }
      }
      this.#leaveHub = this.opts.counters.addReader();
      const now = Date.now();
      for (const col of this.#collectors) col.tick(now); // UDP: templates at once
      this.#timer = setInterval(() => this.#tick(), TICK_MS);
      log.info("ipfix exporter ready", {
        collectors: this.#collectors.map((x) => x.label).join(","),
        observationDomainId: c.observationDomainId,
        activeTimeoutS: c.activeTimeout,
      });
    } catch (err) {
      await this.#close();
      throw err instanceof StartupError
        ? err
        : new StartupError(`ipfix: ${errorMessage(err)}`, { cause: err });
    }
  }

  async #resolve(host: string, where: string): Promise<IpAddress> {
    const literal = IpAddress.tryParse(host.replace(/^\[(.*)\]$/, "$1"));
    if (literal) return literal;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const address = await Promise.race([
        (this.opts.lookupFn ??
          (async (h: string) => (await (await import("node:dns/promises")).lookup(h)).address))(host),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${LOOKUP_TIMEOUT_MS} ms`)),
            LOOKUP_TIMEOUT_MS,
          );
        }),
      ]);
      return IpAddress.parse(address);
    } catch (err) {
      throw new StartupError(
        `ipfix: ${where}.address: cannot resolve ${JSON.stringify(host)}: ${errorMessage(err)}`,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  handle(event: FlowEvent): Promise<void> {
    if (!this.#timer) return Promise.resolve();
    const key = flowKey(event);
    if (event.state === "start") {
      if (!this.#flows.has(key)) {
        this.opts.counters.forgetRetired(event);
        this.#flows.set(key, { event, packets: 0n, bytes: 0n, due: Date.now() + this.#activeMs() });
      }
    } else if (event.state === "end") {
      const st = this.#flows.get(key);
      if (st) {
        this.#flows.delete(key);
        this.#end(key, st, Date.now());
      }
    }
    return Promise.resolve();
  }

  #activeMs(): number {
    return this.opts.config.activeTimeout * 1000;
  }

  /** The end of a flow: final counts from the marker once it let the flow go, or live ones after a grace. */
  #end(key: string, st: FlowState, now: number): void {
    const hub = this.opts.counters;
    const retired = hub.takeRetired(st.event);
    if (retired) {
      this.#record(st, retired.counts, endReasonOf(retired.reason), now);
      this.#ending.delete(key);
      return;
    }
    const live = hub.countsOf(st.event);
    if (live && (st.endedAt === undefined || now - st.endedAt < END_GRACE_MS)) {
      // The marker has not seen the end yet (its queue is behind ours): wait for its final counts.
      st.endedAt ??= now;
      this.#ending.set(key, st);
      return;
    }
    this.#record(st, live, FLOW_END_REASON.endOfFlowDetected, now);
    this.#ending.delete(key);
  }

  #tick(): void {
    const now = Date.now();
    const hub = this.opts.counters;
    for (const [key, st] of this.#ending) this.#end(key, st, now);
    for (const [key, st] of this.#flows) {
      if (st.due > now) break; // in due order: the rest are later
      const live = hub.countsOf(st.event);
      if (live) {
        if (live.packets !== st.packets) this.#record(st, live, FLOW_END_REASON.activeTimeout, now);
        st.due = now + this.#activeMs();
        // To the back: the map stays in due order (ends waiting their grace are few and skipped above).
        this.#flows.delete(key);
        this.#flows.set(key, st);
        continue;
      }
      const retired = hub.takeRetired(st.event);
      if (retired) {
        // The marker let the flow go while it is still open (evicted for a newer one): its last record.
        this.#record(st, retired.counts, endReasonOf(retired.reason), now);
        this.#flows.delete(key);
        continue;
      }
      st.due = now + this.#activeMs();
      this.#flows.delete(key);
      this.#flows.set(key, st);
    }
    for (const col of this.#collectors) col.tick(now);
    this.#flush(now);
  }

  /** Queues one record with the counts since the flow's previous one (a reset source counts from 0). */
  #record(st: FlowState, counts: FlowCounts | undefined, reason: number, now: number): void {
    if (!counts || counts.packets === 0n) return; // nothing of the flow left this host through the marker
    let dp = counts.packets - st.packets, db = counts.bytes - st.bytes;
    if (dp < 0n || db < 0n) [dp, db] = [counts.packets, counts.bytes];
    st.packets = counts.packets;
    st.bytes = counts.bytes;
    const e = st.event;
    const v6 = e.family === "ipv6" && !e.src.address.isIpv4Mapped();
    const addr = (a: IpAddress) => v6 ? a.bytes() : a.isIpv4Mapped() ? a.bytes().subarray(12) : a.bytes();
    st.startMs ??= counts.firstMs ?? (e.startTime !== undefined ? Math.floor(e.startTime / 1000) : now);
    const startMs = st.startMs;
    const record: DataRecord = {
      [v6 ? "sourceIPv6Address" : "sourceIPv4Address"]: addr(e.src.address),
      [v6 ? "destinationIPv6Address" : "destinationIPv4Address"]: addr(e.dst.address),
      sourceTransportPort: e.src.port,
      destinationTransportPort: e.dst.port,
      protocolIdentifier: e.protocol === "tcp" ? 6 : 17,
      ...(v6 ? { flowLabelIPv6: counts.flowLabel ?? 0 } : {}),
      octetDeltaCount: db,
      packetDeltaCount: dp,
      flowStartMilliseconds: Math.floor(startMs),
      flowEndMilliseconds: Math.floor(counts.lastMs ?? now),
      flowEndReason: reason,
      egressInterface: counts.egressInterface ?? 0,
      scitagsExperimentId: e.experimentId,
      scitagsActivityId: e.activityId,
    };
    this.#pending.push({ template: v6 ? IPV6_TEMPLATE : IPV4_TEMPLATE, record });
    this.#recordsBuilt++;
  }

  #flush(now: number): void {
    if (this.#pending.length === 0) return;
    const records = this.#pending;
    this.#pending = [];
    for (const col of this.#collectors) {
      try {
        col.send(records, now);
      } catch (err) {
        log.error("cannot export IPFIX records", { collector: col.label, err: errorMessage(err) });
      }
    }
  }

  /** Forced end at shutdown: a last record for every open flow, then the transports close. */
  async stop(): Promise<void> {
    if (this.#timer !== undefined) {
      const now = Date.now();
      const hub = this.opts.counters;
      for (const st of [...this.#flows.values(), ...this.#ending.values()]) {
        const final = hub.countsOf(st.event) ?? hub.takeRetired(st.event)?.counts;
        this.#record(st, final, FLOW_END_REASON.forcedEnd, now);
      }
      this.#flows.clear();
      this.#ending.clear();
      this.#flush(now);
    }
    await this.#close();
  }

  async #close(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#leaveHub?.();
    this.#leaveHub = undefined;
    for (const col of this.#collectors) await col.close();
    this.#collectors = [];
    for (const s of this.#senders) s.close();
    this.#senders = [];
  }

  /** Degraded while a TCP collector is not connected; per-collector counts in the details. */
  status(): ComponentStatus {
    if (!this.#timer) return { state: "failed", reason: "not started" };
    const details = {
      flows: this.#flows.size,
      records: this.#recordsBuilt,
      collectors: this.#collectors.map((c) => ({ collector: c.label, connected: c.connected, ...c.stats })),
    };
    const down = this.#collectors.filter((c) => !c.connected).map((c) => c.label);
    if (down.length === 0) return { state: "running", details };
    return { state: "degraded", reason: `not connected to ${down.join(", ")}`, details };
  }

  health(): HealthMetric[] {
    const out: HealthMetric[] = [{
      name: "flowd_ipfix_flows",
      help: "Open flows the IPFIX exporter keeps totals for",
      type: "gauge",
      value: this.#flows.size,
    }];
    for (const c of this.#collectors) {
      for (const outcome of ["sent", "failed"] as const) {
        const labels = { collector: c.label, outcome };
        out.push({
          name: "flowd_ipfix_records_total",
          help: "IPFIX data records exported, by collector and outcome",
          type: "counter",
          labels,
          value: outcome === "sent" ? c.stats.recordsSent : c.stats.recordsFailed,
        }, {
          name: "flowd_ipfix_messages_total",
          help: "IPFIX messages sent, by collector and outcome",
          type: "counter",
          labels,
          value: outcome === "sent" ? c.stats.messagesSent : c.stats.messagesFailed,
        });
      }
    }
    return out;
  }
}
