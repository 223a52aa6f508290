/**
 * Health metrics: the counters a part of the daemon keeps about itself (events dropped, lines rejected,
 * map entries evicted, datagrams refused), as plain samples. The prometheus backend renders them on
 * every scrape and `status` will print them, so nothing a component refuses or loses goes unseen.
 */

/** One counter or gauge value, with its labels. Names follow Prometheus conventions (`flowd_` prefix). */
export interface HealthMetric {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge";
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Something that reports health metrics: the bus and any component that implements `health()`. */
export interface HealthReporter {
  health(): HealthMetric[];
}

/** Where the prometheus backend reads the daemon's health metrics from, at scrape time. */
export type HealthSource = () => HealthMetric[];

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** Renders samples in the Prometheus text format: one HELP/TYPE block per name, in first-seen order. */
export function renderHealthMetrics(samples: readonly HealthMetric[]): string {
  const byName = new Map<string, HealthMetric[]>();
  for (const s of samples) {
    const list = byName.get(s.name);
    if (list) list.push(s);
    else byName.set(s.name, [s]);
  }
  const out: string[] = [];
  for (const [name, list] of byName) {
    out.push(`# HELP ${name} ${list[0]!.help}`, `# TYPE ${name} ${list[0]!.type}`);
    for (const s of list) {
      const labels = Object.entries(s.labels ?? {});
      const text = labels.length ? `{${labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}` : "";
      out.push(`${name}${text} ${Number.isFinite(s.value) ? s.value : 0}`);
    }
  }
  return out.length ? out.join("\n") + "\n" : "";
}
