/**
 * `flowd-go status`: what the running daemon runs and how it is doing, asked through its control socket.
 * Exit status 0 when every component runs, 3 when one is degraded or failed (as `systemctl status` uses 3
 * for "not running as it should"), 1 when no daemon answers.
 */
import { askDaemon } from "../control/client.ts";
import type { StatusReport } from "../control/status_report.ts";
import type { CliArgs } from "./args.ts";
import { controlSocketPath } from "./flows.ts";

export const DEGRADED_EXIT_STATUS = 3;

export async function statusCommand(args: CliArgs): Promise<number> {
  const report = await askDaemon(await controlSocketPath(args), "status") as StatusReport;
  const text = args.format === "json" ? JSON.stringify(report, null, 2) + "\n" : renderStatus(report);
  await Deno.stdout.write(new TextEncoder().encode(text));
  return report.state === "running" ? 0 : DEGRADED_EXIT_STATUS;
}

function uptime(s: number): string {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d > 0 ? `${d}d ${h}h ${m}m` : h > 0 ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}

const labelText = (labels?: Readonly<Record<string, string>>) =>
  labels ? `{${Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",")}}` : "";

export function renderStatus(r: StatusReport): string {
  const out = [
    `flowd-go ${r.version} (${r.commit}), pid ${r.pid}: ${r.state}`,
    `  up ${uptime(r.uptimeS)} since ${r.startedAt}; configuration ${r.configFile}`,
    `  registry: ${r.registry.origin}${r.registry.modified ? `, modified ${r.registry.modified}` : ""}`,
    `  enrichment samples: ${r.enrichment.samplesDelivered} delivered, ${r.enrichment.samplesStale} for flows already ended`,
  ];
  for (const c of r.components) {
    out.push(`${c.kind} ${c.name}: ${c.state}${c.reason ? ` (${c.reason})` : ""}`);
    const lane = c.kind === "backend" ? r.backends[c.name] : undefined;
    if (lane) {
      out.push(
        `  events: ${lane.handled} handled, ${lane.dropped} dropped, ${lane.failed} failed, ${lane.queued} queued`,
      );
    }
    const hooks = c.details?.hooks;
    if (Array.isArray(hooks)) {
      for (const h of hooks as { interface: string; hook: string; progId: number }[]) {
        out.push(`  hook: ${h.interface} ${h.hook} program ${h.progId}`);
      }
    }
    // Zeros are noise in a terminal (every HTTP reason, every timeout); the JSON form has them all.
    const shown = c.counters.filter((m) => m.value !== 0);
    for (const m of shown) out.push(`  ${m.name}${labelText(m.labels)} ${m.value}`);
    const zeros = c.counters.length - shown.length;
    if (zeros > 0) out.push(`  (${zeros} counter${zeros === 1 ? "" : "s"} at 0 not shown)`);
  }
  return out.join("\n") + "\n";
}
