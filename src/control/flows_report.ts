/**
 * The answer to `flows`: every open flow the daemon knows (the bus's flow table), with what the marker
 * did with it: the tag in its kernel map, packets and bytes marked, when the first and last marked packet
 * left, and the rate since the previous listing. A flow the marker holds but never saw a packet of is
 * `seen: false`: its announced 5-tuple matches nothing on the wire.
 */
import type { Backend } from "../core/component.ts";
import { type FlowEvent, flowKey } from "../core/flow_event.ts";
import type { StartedFlow } from "../core/flow_table.ts";
import { formatMicrosUtc, type Micros, nowMicros } from "../core/time.ts";
import type { Registry } from "../scitags/registry.ts";

/** A flow as the marker reports it (MarkerBackend.markedFlows; kept structural so this module imports no BPF). */
export interface MarkedFlowInfo {
  readonly event: FlowEvent;
  readonly tag: number | undefined;
  readonly counters:
    | {
      readonly packets: bigint;
      readonly bytes: bigint;
      readonly firstJiffies: bigint | undefined;
      readonly lastJiffies: bigint | undefined;
    }
    | undefined;
}

/** What a marker backend offers the listing. */
export interface MarkingSource {
  markedFlows(): MarkedFlowInfo[];
  /** The tag as printed (flow label or option value), e.g. 0x0a5b1. */
  describeTag(tag: number): string;
  /** The kernel's jiffies now and its HZ, for the ages of first and last packets. */
  jiffies(): { now: bigint; hz: number } | undefined;
}

export function isMarkingSource(b: Backend): b is Backend & MarkingSource {
  const c = b as Partial<MarkingSource>;
  return typeof c.markedFlows === "function" && typeof c.describeTag === "function" &&
    typeof c.jiffies === "function";
}

export interface FlowReportEntry {
  readonly protocol: string;
  readonly src: { readonly address: string; readonly port: number };
  readonly dst: { readonly address: string; readonly port: number };
  readonly experiment: { readonly id: number; readonly name: string | null };
  readonly activity: { readonly id: number; readonly name: string | null };
  readonly application: string;
  /** The plugin that announced it; null for a flow only the marker holds. */
  readonly plugin: string | null;
  readonly startTime: string | null;
  /** Seconds since the start. */
  readonly ageS: number | null;
  /** The marker's view; null when no marker runs or it does not hold the flow (IPv4, map full). */
  readonly marking: {
    readonly tag: string | null;
    readonly seen: boolean | null;
    readonly packets: bigint | null;
    readonly bytes: bigint | null;
    /** Seconds since the first and the last marked packet. */
    readonly firstPacketAgoS: number | null;
    readonly lastPacketAgoS: number | null;
    /** Bits per second marked since the previous listing (null on the first). */
    readonly rateBps: number | null;
  } | null;
}

export interface FlowReport {
  readonly time: string;
  readonly flows: FlowReportEntry[];
}

/** Builds `flows` answers, remembering each flow's bytes between listings for the rate. */
export class FlowReporter {
  #previous = new Map<string, { bytes: bigint; at: Micros }>();

  report(open: Iterable<StartedFlow>, markers: readonly MarkingSource[], registry: Registry): FlowReport {
    const now = nowMicros();
    const marked = new Map<string, { info: MarkedFlowInfo; source: MarkingSource }>();
    for (const source of markers) {
      for (const info of source.markedFlows()) marked.set(flowKey(info.event), { info, source });
    }
    const jiffies = new Map(markers.map((m) => [m, m.jiffies()]));
    const next = new Map<string, { bytes: bigint; at: Micros }>();
    const flows: FlowReportEntry[] = [];
    const seenKeys = new Set<string>();
    const add = (event: FlowEvent, startTime: Micros | undefined) => {
      const key = flowKey(event);
      if (seenKeys.has(key)) return;
      seenKeys.add(key);
      const m = marked.get(key);
      let marking: FlowReportEntry["marking"] = null;
      if (m) {
        const c = m.info.counters;
        const j = jiffies.get(m.source);
        const ago = (at: bigint | undefined) =>
          at === undefined || !j ? null : Math.max(0, Number(j.now - at)) / j.hz;
        let rateBps: number | null = null;
        if (c) {
          const before = this.#previous.get(key);
          if (before && now > before.at && c.bytes >= before.bytes) {
            rateBps = Number(c.bytes - before.bytes) * 8 / ((now - before.at) / 1e6);
          }
          next.set(key, { bytes: c.bytes, at: now });
        }
        marking = {
          tag: m.info.tag === undefined ? null : m.source.describeTag(m.info.tag),
          seen: c ? c.packets > 0n : null,
          packets: c ? c.packets : null,
          bytes: c ? c.bytes : null,
          firstPacketAgoS: ago(c?.firstJiffies),
          lastPacketAgoS: ago(c?.lastJiffies),
          rateBps,
        };
      }
      flows.push({
        protocol: event.protocol,
        src: { address: event.src.address.toString(), port: event.src.port },
        dst: { address: event.dst.address.toString(), port: event.dst.port },
        experiment: { id: event.experimentId, name: registry.experimentName(event.experimentId) ?? null },
        activity: {
          id: event.activityId,
          name: registry.activityName(event.experimentId, event.activityId) ?? null,
        },
        application: event.application,
        plugin: event.source ?? null,
        startTime: startTime === undefined ? null : formatMicrosUtc(startTime),
        ageS: startTime === undefined ? null : Math.max(0, (now - startTime) / 1e6),
        marking,
      });
    };
    for (const flow of open) add(flow, flow.startTime);
    // Flows the marker holds that the table no longer does (it forgets the oldest beyond its capacity).
    for (const { info } of marked.values()) add(info.event, info.event.startTime);
    this.#previous = next;
    return { time: formatMicrosUtc(now), flows };
  }
}
