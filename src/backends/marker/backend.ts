/**
 * Backend `marker`: loads the marker program, attaches it to the target interfaces' egress, and turns
 * flow events into map entries (start inserts, end deletes). IPv4 flows are skipped: only IPv6 has a flow
 * label or the extension headers used here. With matchAll, the wildcard flow ([::]:0 to [::]:0, as the
 * perfSONAR plugin sends) sets the one tag that marks every IPv6 packet.
 */
import type { Backend, ComponentStatus } from "../../core/component.ts";
import { errorMessage, StartupError } from "../../core/errors.ts";
import { describeFlow, type FlowEvent } from "../../core/flow_event.ts";
import { logger, RateLimitedLog } from "../../core/log.ts";
import type { MarkerConfig } from "../../config/schema.ts";
import { discoverPublicIpv6Interfaces } from "../../net/interface_discovery.ts";
import { randomFlowLabelEntropy } from "../../scitags/flow_label.ts";
import { flowTag, formatTag, tagTruncation } from "./flow_tag.ts";
import { MarkerHooks } from "./hooks.ts";
import { MarkerProgram } from "./program.ts";
import { DEFAULT_LEDGER_PATH, QdiscLedger } from "./qdisc_ledger.ts";
import { adoptedStart, findLeftoverMaps, type LeftoverMaps, releaseLeftoverMaps } from "./adoption.ts";
import { type MarkedTotal, MarkedTotals } from "./marked_totals.ts";
import { MarkedFlows } from "./marked_flows.ts";
import { DEFAULT_MAX_FLOWS, type FlowCounters, MATCH_ALL_COUNTER_SLOT } from "./layout.ts";
import type { HealthMetric } from "../../core/health.ts";
import { errnoName, LibbpfError } from "../../../ffi/libbpf.ts";
import { JiffiesClock } from "../../bpf/jiffies.ts";
import { kernelHz } from "../../bpf/kernel_hz.ts";
import type { FlowCounterHub, FlowCounts, RetireReason } from "../../core/flow_counters.ts";

const log = logger("backends", "marker");

/** What the backend is built from. */
export interface MarkerBackendOptions {
  /** The `backends.marker` configuration section. */
  config:
    & Pick<
      MarkerConfig,
      | "targetInterfaces"
      | "discoverInterfaces"
      | "removeQdisc"
      | "programPath"
      | "markingStrategy"
      | "debugMode"
      | "matchAll"
      | "attachMode"
    >
    & Partial<Pick<MarkerConfig, "maxFlows" | "whenFull">>;
  /** File recording the clsact qdiscs the marker created (default /run/flowd-go/marker-qdiscs.json). */
  ledgerPath?: string;
  /** How often to look for interfaces that vanished or came back (ms; default 5000, 0 = never). */
  checkIntervalMs?: number;
  /** Work on the interfaces of another network namespace (tests). */
  netns?: string;
  /** Source of label entropy (tests). */
  entropy?: () => number;
  /** The daemon's counter hub: the marker offers its per-flow counts there (ipfix reads them). */
  counters?: FlowCounterHub;
}

/** One flow being marked, as `markedFlows` reports it. */
export interface MarkedFlowView {
  /** The start event that announced it. */
  readonly event: FlowEvent;
  /** The tag in the kernel map; undefined if the entry is gone. */
  readonly tag: number | undefined;
  /** Packets and bytes marked so far; undefined when the marker object does not count. */
  readonly counters: FlowCounters | undefined;
}

/** Counters, for tests and diagnostics. */
export interface MarkerBackendStats {
  inserted: number;
  deleted: number;
  skippedIpv4: number;
  failed: number;
  /** Flows taken out of a full map to make room for a newer one (whenFull: evictOldest). */
  evicted: number;
  /** Flows left unmarked because the map was full (whenFull: refuse). */
  refused: number;
  /** Ends of flows not in the map (never started here, or evicted earlier). */
  endsNotMarked: number;
  /** Failed map updates by errno name, e.g. E2BIG. */
  failedByErrno: Record<string, number>;
}

function sameTags(a: FlowEvent, b: FlowEvent): boolean {
  return a.experimentId === b.experimentId && a.activityId === b.activityId;
}

function isWildcard(e: FlowEvent): boolean {
  return e.src.address.isUnspecified() && e.dst.address.isUnspecified() && e.src.port === 0 &&
    e.dst.port === 0;
}

export class MarkerBackend implements Backend {
  readonly name = "marker";
  readonly replayOpenFlows = true;
  readonly stats: MarkerBackendStats = {
    inserted: 0,
    deleted: 0,
    skippedIpv4: 0,
    failed: 0,
    evicted: 0,
    refused: 0,
    endsNotMarked: 0,
    failedByErrno: {},
  };
  #program: MarkerProgram | undefined;
  #marked: MarkedFlows | undefined;
  /** The wildcard start in force (matchAll). */
  #matchAllEvent: FlowEvent | undefined;
  /** Marked packets and bytes per (experiment, activity) of flows no longer in the map. */
  #totals = new MarkedTotals();
  /** For the ages of the counters' first and last packets (listings only). */
  #clock: JiffiesClock | undefined;
  #hz = 1000;
  #fullLog = new RateLimitedLog();
  #hooks: MarkerHooks | undefined;
  #failLog = new RateLimitedLog();
  #truncationLog = new RateLimitedLog(60_000);
  #unregister: (() => void) | undefined;
  /** Jiffies and wall-clock ms read together, for turning packet times into dates (kept 100 ms). */
  #clockPair: { jiffies: bigint; ms: number } | undefined;

  constructor(private readonly opts: MarkerBackendOptions) {}

  /** The loaded program (after start), for inspection. */
  get program(): MarkerProgram | undefined {
    return this.#program;
  }

  /** The hooks (after start), for inspection. */
  get hooks(): MarkerHooks | undefined {
    return this.#hooks;
  }

  async start(): Promise<void> {
    const c = this.opts.config;
    try {
      const interfaces = await this.#interfaces();
      const maxFlows = c.maxFlows ?? DEFAULT_MAX_FLOWS;
      const leftover = c.matchAll
        ? undefined
        : await findLeftoverMaps(interfaces, maxFlows, c.markingStrategy, this.opts.netns);
      try {
        this.#program = await MarkerProgram.load({
          strategy: c.markingStrategy,
          matchAll: c.matchAll,
          debug: c.debugMode,
          programPath: c.programPath || undefined,
          maxFlows,
          adopt: leftover,
        });
      } finally {
        if (leftover) releaseLeftoverMaps(leftover);
      }
      this.#marked = new MarkedFlows(this.#program.maxFlows, c.whenFull ?? "evictOldest");
      if (leftover) this.#adopt(this.#program, leftover);
      this.#totals = new MarkedTotals();
      this.#hz = (await kernelHz()).hz;
      this.#hooks = new MarkerHooks(this.#program, {
        mode: c.attachMode,
        removeQdisc: c.removeQdisc,
        ledger: new QdiscLedger(this.opts.ledgerPath ?? DEFAULT_LEDGER_PATH),
        netns: this.opts.netns,
      });
      for (const ifname of interfaces) await this.#hooks.attach(ifname);
      this.#unregister = this.opts.counters?.register({ countsOf: (f) => this.#countsOf(f) });
      const every = this.opts.checkIntervalMs ?? 5000;
      if (every > 0) this.#hooks.startWatching(every);
      log.info("marker ready", {
        strategy: c.markingStrategy,
        matchAll: c.matchAll,
        maxFlows: this.#program.maxFlows,
        whenFull: c.whenFull ?? "evictOldest",
        interfaces: interfaces.join(",") || "(none)",
      });
    } catch (err) {
      await this.stop();
      throw new StartupError(`marker: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Takes the flows a killed run left in the adopted map into the table, with their counter slots. */
  #adopt(program: MarkerProgram, leftover: LeftoverMaps): void {
    const entries = program.flows().filter((e) => e.counterSlot !== undefined);
    this.#marked!.adopt(
      entries.map((e) => ({ event: adoptedStart(e, program.strategy), counterSlot: e.counterSlot! })),
    );
    log.info("adopted the flows and counters of a marker left by an earlier run", {
      interface: leftover.interface,
      progId: leftover.progId,
      flows: entries.length,
    });
  }

  handle(event: FlowEvent): void {
    const program = this.#program;
    if (!program) return;
    if (event.family !== "ipv6" || event.src.address.isIpv4Mapped()) {
      this.stats.skippedIpv4++;
      log.debug("ignoring IPv4 flow", () => ({ flow: describeFlow(event) }));
      return;
    }
    try {
      if (program.matchAll) this.#handleMatchAll(program, event);
      else this.#handleFlow(program, event);
    } catch (err) {
      this.stats.failed++;
      const errno = err instanceof LibbpfError ? errnoName(err.errno) : "other";
      this.stats.failedByErrno[errno] = (this.stats.failedByErrno[errno] ?? 0) + 1;
      if (event.state === "start") this.#marked?.forget(event);
      this.#failLog.run((suppressed) =>
        log.error("cannot update the marker's map", {
          flow: describeFlow(event),
          err: errorMessage(err),
          suppressed,
        })
      );
    }
  }

  /**
   * The flows being marked, oldest-started first, each with the tag in the kernel map and its counters
   * read now (undefined when the object does not count, or the tag when the entry vanished). With matchAll,
   * the wildcard flow in force with the match-all counters.
   */
  markedFlows(): MarkedFlowView[] {
    const program = this.#program;
    if (!program) return [];
    if (program.matchAll) {
      const event = this.#matchAllEvent;
      const tag = program.matchAllTag();
      if (!event || tag === undefined) return [];
      return [{ event, tag, counters: program.counters(MATCH_ALL_COUNTER_SLOT) }];
    }
    const out: MarkedFlowView[] = [];
    for (const { event, counterSlot } of this.#marked?.values() ?? []) {
      out.push({ event, tag: program.flowTag(event), counters: program.counters(counterSlot) });
    }
    return out;
  }

  /** The totals with the open flows' counts read now (one map lookup per open flow). */
  #markedTotals(): MarkedTotal[] {
    const program = this.#program;
    if (!program?.counting) return [];
    if (program.matchAll) {
      const e = this.#matchAllEvent;
      return this.#totals.withOpen(e ? [{ ids: e, counters: program.counters(MATCH_ALL_COUNTER_SLOT) }] : []);
    }
    const open = [];
    for (const { event, counterSlot } of this.#marked?.values() ?? []) {
      open.push({ ids: event, counters: program.counters(counterSlot) });
    }
    return this.#totals.withOpen(open);
  }

  /** Degraded while an interface it marks has vanished; the hooks and the map's fill in the details. */
  status(): ComponentStatus {
    const hooks = this.#hooks, program = this.#program;
    if (!hooks || !program) return { state: "failed", reason: "not started" };
    const vanished = hooks.vanished();
    const details = {
      strategy: program.strategy,
      matchAll: program.matchAll,
      counting: program.counting,
      flows: this.#marked?.size ?? 0,
      maxFlows: program.maxFlows,
      hooks: hooks.attachments().map((a) => ({
        interface: a.ifname,
        hook: a.kind === "tcx" ? "tcx" : "clsact",
        progId: a.progId,
        linkLayer: a.linkLayer,
      })),
      ...(vanished.length ? { vanished } : {}),
    };
    if (vanished.length === 0) return { state: "running", details };
    return {
      state: "degraded",
      reason: `interface${vanished.length > 1 ? "s" : ""} ${vanished.join(", ")} vanished; not marked there`,
      details,
    };
  }

  /** The tag as operators read it: a flow label or an option value, in hex. */
  describeTag(tag: number): string {
    return formatTag(this.#program?.strategy ?? "label", tag);
  }

  /** The kernel's jiffies now and its HZ; undefined when not running or unreadable. */
  jiffies(): { now: bigint; hz: number } | undefined {
    if (!this.#program) return undefined;
    try {
      this.#clock ??= new JiffiesClock();
      return { now: this.#clock.now(), hz: this.#hz };
    } catch (err) {
      log.debug("cannot read the kernel's jiffies", { err: errorMessage(err) });
      return undefined;
    }
  }

  async stop(): Promise<void> {
    this.#unregister?.();
    this.#unregister = undefined;
    this.#clock?.close();
    this.#clock = undefined;
    const hooks = this.#hooks;
    const program = this.#program;
    this.#hooks = undefined;
    this.#program = undefined;
    await hooks?.detachAll();
    program?.close();
  }

  async #interfaces(): Promise<string[]> {
    const c = this.opts.config;
    if (!c.discoverInterfaces) return [...c.targetInterfaces];
    const found = (await discoverPublicIpv6Interfaces({ netns: this.opts.netns })).map((i) => i.name);
    if (c.targetInterfaces.length > 0) {
      log.warn("specified target interfaces will be overridden", {
        configured: c.targetInterfaces.join(","),
        discovered: found.join(",") || "(none)",
      });
    }
    return found;
  }

  #tag(program: MarkerProgram, event: FlowEvent): number {
    const warning = tagTruncation(program.strategy, event.experimentId, event.activityId);
    if (warning) this.#truncationLog.run((suppressed) => log.warn(warning, { suppressed }));
    return flowTag(
      program.strategy,
      event.experimentId,
      event.activityId,
      (this.opts.entropy ?? randomFlowLabelEntropy)(),
    );
  }

  #handleFlow(program: MarkerProgram, event: FlowEvent): void {
    const marked = this.#marked!;
    if (event.state === "start") {
      const admission = marked.admit(event);
      if (admission.kind === "refuse") {
        this.stats.refused++;
        this.#reportFull("the marker's flow map is full; a new flow is left unmarked (whenFull: refuse)");
        return;
      }
      if (admission.kind === "evict") {
        const tag = this.opts.counters?.hasReaders ? program.flowTag(admission.victim) : undefined;
        program.deleteFlow(admission.victim);
        const final = program.counters(admission.victimSlot);
        this.#totals.retire(admission.victim, final);
        this.#publishRetired(admission.victim, final, tag, "evicted");
        this.stats.evicted++;
        this.#reportFull("the marker's flow map is full; the oldest-started flow is no longer marked");
      }
      if (admission.kind !== "again" && admission.resetCounters) program.resetCounters(admission.counterSlot);
      const tag = this.#tag(program, event);
      program.setFlow(event, tag, admission.counterSlot);
      if (admission.kind !== "again") this.stats.inserted++;
      log.debug("marking flow", () => ({ flow: describeFlow(event), tag: formatTag(program.strategy, tag) }));
    } else if (event.state === "end") {
      const open = marked.remove(event);
      const tag = open && this.opts.counters?.hasReaders ? program.flowTag(event) : undefined;
      if (open && program.deleteFlow(event)) {
        // Read after the delete, so packets marked until then are in; the slot is not reused before this.
        // Counted under the start's ids: those the packets were marked with.
        const final = program.counters(open.counterSlot);
        this.#totals.retire(open.event, final);
        this.#publishRetired(open.event, final, tag, "end");
        this.stats.deleted++;
        log.debug("stopped marking flow", () => ({ flow: describeFlow(event) }));
      } else {
        this.stats.endsNotMarked++;
        log.debug("end of a flow that was not being marked", () => ({ flow: describeFlow(event) }));
      }
    }
  }

  /** A flow's counts for the hub's readers: the kernel map's entry and counter slot, read now. */
  #countsOf(flow: FlowEvent): FlowCounts | undefined {
    const program = this.#program;
    if (!program?.counting || program.matchAll) return undefined;
    if (flow.family !== "ipv6" || flow.src.address.isIpv4Mapped()) return undefined;
    const entry = program.flowEntry(flow);
    if (entry?.counterSlot === undefined) return undefined;
    return this.#flowCounts(program.counters(entry.counterSlot), entry.tag);
  }

  #publishRetired(flow: FlowEvent, c: FlowCounters | undefined, tag: number | undefined, why: RetireReason) {
    const hub = this.opts.counters;
    if (!hub?.hasReaders || !c) return;
    const counts = this.#flowCounts(c, tag);
    if (counts) hub.retire(flow, counts, why);
  }

  /** Kernel counters as dates: jiffies turned into ms since the epoch through a recent (jiffies, ms) pair. */
  #flowCounts(c: FlowCounters | undefined, tag: number | undefined): FlowCounts | undefined {
    if (!c) return undefined;
    const program = this.#program!;
    const attachments = this.#hooks?.attachments() ?? [];
    const toMs = this.#jiffiesToMs();
    return {
      packets: c.packets,
      bytes: c.bytes,
      firstMs: c.firstJiffies === undefined || !toMs ? undefined : toMs(c.firstJiffies),
      lastMs: c.lastJiffies === undefined || !toMs ? undefined : toMs(c.lastJiffies),
      ...(program.strategy === "label" && tag !== undefined ? { flowLabel: tag } : {}),
      ...(attachments.length === 1 ? { egressInterface: attachments[0]!.ifindex } : {}),
    };
  }

  #jiffiesToMs(): ((j: bigint) => number) | undefined {
    const now = Date.now();
    if (!this.#clockPair || now - this.#clockPair.ms > 100 || now < this.#clockPair.ms) {
      const j = this.jiffies();
      if (!j) return undefined;
      this.#clockPair = { jiffies: j.now, ms: Date.now() };
    }
    const { jiffies, ms } = this.#clockPair;
    const hz = this.#hz;
    return (at) => ms - Number(jiffies - at) * 1000 / hz;
  }

  #reportFull(message: string): void {
    this.#fullLog.run((suppressed) =>
      log.warn(message, {
        maxFlows: this.#marked!.capacity,
        evictedTotal: this.stats.evicted,
        refusedTotal: this.stats.refused,
        hint: "raise backends.marker.maxFlows, or look for a plugin whose flows never end",
        suppressed,
      })
    );
  }

  /** Flows in the map, evictions, refusals and failed updates, as health metrics. */
  health(): HealthMetric[] {
    const s = this.stats;
    const out: HealthMetric[] = [
      {
        name: "flowd_marker_flows",
        help: "Flows in the marker's kernel map",
        type: "gauge",
        value: this.#marked?.size ?? 0,
      },
      {
        name: "flowd_marker_flows_capacity",
        help: "Flows the marker's kernel map holds at most (backends.marker.maxFlows)",
        type: "gauge",
        value: this.#marked?.capacity ?? 0,
      },
      {
        name: "flowd_marker_flows_evicted_total",
        help: "Flows taken out of the full map for newer ones (whenFull: evictOldest)",
        type: "counter",
        value: s.evicted,
      },
      {
        name: "flowd_marker_flows_refused_total",
        help: "Flows left unmarked because the map was full (whenFull: refuse)",
        type: "counter",
        value: s.refused,
      },
    ];
    for (const t of this.#markedTotals()) {
      const labels = { exp: t.exp, act: t.act };
      out.push({
        name: "flowd_marked_packets_total",
        help: "Packets the marker's program marked, counted in the kernel, per experiment and activity",
        type: "counter",
        labels,
        value: Number(t.packets),
      }, {
        name: "flowd_marked_bytes_total",
        help: "Bytes of the packets the marker's program marked, per experiment and activity",
        type: "counter",
        labels,
        value: Number(t.bytes),
      });
    }
    for (const [errno, value] of Object.entries(s.failedByErrno)) {
      out.push({
        name: "flowd_marker_map_update_failures_total",
        help: "Map updates the kernel refused, by errno",
        type: "counter",
        labels: { errno },
        value,
      });
    }
    return out;
  }

  #handleMatchAll(program: MarkerProgram, event: FlowEvent): void {
    if (!isWildcard(event)) {
      log.debug("matchAll marks every packet with the wildcard flow's tag; flow ignored", {
        flow: describeFlow(event),
      });
      return;
    }
    if (event.state === "start") {
      const tag = this.#tag(program, event);
      // The counters are those of one (experiment, activity): a different one starts them afresh.
      if (this.#matchAllEvent && !sameTags(this.#matchAllEvent, event)) {
        this.#totals.retire(this.#matchAllEvent, program.counters(MATCH_ALL_COUNTER_SLOT));
        program.resetCounters(MATCH_ALL_COUNTER_SLOT);
      }
      this.#matchAllEvent = event;
      program.setMatchAllTag(tag);
      this.stats.inserted++;
      log.info("marking all IPv6 traffic", {
        experiment: event.experimentId,
        activity: event.activityId,
        tag: formatTag(program.strategy, tag),
      });
    } else if (event.state === "end") {
      program.setMatchAllTag(undefined);
      if (this.#matchAllEvent) {
        this.#totals.retire(this.#matchAllEvent, program.counters(MATCH_ALL_COUNTER_SLOT));
      }
      program.resetCounters(MATCH_ALL_COUNTER_SLOT);
      this.#matchAllEvent = undefined;
      this.stats.deleted++;
      log.info("stopped marking all IPv6 traffic");
    }
  }
}
