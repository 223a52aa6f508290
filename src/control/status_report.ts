/**
 * The answer to `status`: what runs and how it is doing. Version and commit, uptime, the configuration
 * file; every component with its state (running, degraded or failed, with the reason) and what it shows
 * of itself (the marker's hooks per interface); per backend the events handled, dropped and failed; every
 * component's own counters (inputs rejected by reason, sends failed, ...); enrichment samples; the registry.
 */
import type { ComponentStatus } from "../core/component.ts";
import { statusOf, worstState } from "../core/readiness.ts";
import type { HealthMetric } from "../core/health.ts";
import type { BackendStats } from "../core/bus.ts";
import type { Daemon } from "../daemon.ts";
import { VERSION } from "../version.ts";

export interface ComponentReport extends ComponentStatus {
  readonly kind: "plugin" | "backend" | "enricher";
  readonly name: string;
  /** Its own counters and gauges. */
  readonly counters: readonly { name: string; labels?: Readonly<Record<string, string>>; value: number }[];
}

export interface StatusReport {
  readonly version: string;
  readonly commit: string;
  readonly pid: number;
  readonly startedAt: string;
  readonly uptimeS: number;
  readonly configFile: string;
  /** "running" when every component runs, else "degraded" (the worst state wins: "failed"). */
  readonly state: ComponentStatus["state"];
  readonly components: readonly ComponentReport[];
  readonly backends: Readonly<Record<string, BackendStats>>;
  readonly enrichment: { readonly samplesDelivered: number; readonly samplesStale: number };
  readonly registry: { readonly origin: string; readonly modified: string | null };
}

interface Reporting {
  readonly name: string;
  status?(): ComponentStatus;
  health?(): HealthMetric[];
}

function componentReport(kind: ComponentReport["kind"], part: Reporting): ComponentReport {
  const status = statusOf(part);
  let counters: ComponentReport["counters"] = [];
  try {
    counters = (part.health?.() ?? []).map((m) => ({
      name: m.name,
      ...(m.labels && Object.keys(m.labels).length ? { labels: m.labels } : {}),
      value: m.value,
    }));
  } catch { /* a component that cannot count still has a state */ }
  return { kind, name: part.name, ...status, counters };
}

export function statusReport(
  daemon: Daemon,
  o: { commit: string; configFile: string; startedMs: number },
): StatusReport {
  const c = daemon.supervisor.components;
  const components = [
    ...c.plugins.map((p) => componentReport("plugin", p)),
    ...c.backends.map((b) => componentReport("backend", b)),
    ...c.enrichers.map((e) => componentReport("enricher", e)),
  ];
  const state = worstState(components.map((x) => x.state));
  const samples = daemon.bus.sampleStats;
  return {
    version: VERSION,
    commit: o.commit,
    pid: Deno.pid,
    startedAt: new Date(o.startedMs).toISOString(),
    uptimeS: (Date.now() - o.startedMs) / 1000,
    configFile: o.configFile,
    state,
    components,
    backends: daemon.bus.stats(),
    enrichment: { samplesDelivered: samples.delivered, samplesStale: samples.stale },
    registry: { origin: daemon.registryOrigin, modified: daemon.registry.modified ?? null },
  };
}
