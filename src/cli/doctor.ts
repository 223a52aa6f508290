/**
 * `flowd-go doctor`: whether this host can run the configuration, one line per check (pass, warn or fail,
 * and the fix), ending with the marker probe when the marker is on. Exit 0 when everything the
 * configuration needs holds, 1 otherwise. A configuration that does not parse is itself a failure.
 */
import { type CheckResult, hostChecks, needsOf, type Verdict } from "../doctor/checks.ts";
import { setupLogging } from "../core/log.ts";
import type { CliArgs } from "./args.ts";
import { loadCliConfig } from "./load.ts";

const MARK: Record<Verdict, string> = { pass: "pass", warn: "WARN", fail: "FAIL" };

export function renderCheck(c: CheckResult): string {
  const head = `${MARK[c.verdict].padEnd(4)}  ${c.name}: ${c.detail}`;
  return c.fix ? `${head}\n      fix: ${c.fix}` : head;
}

/** Whether the checks let the configuration run: no needed check failed. */
export function doctorPasses(checks: readonly CheckResult[]): boolean {
  return !checks.some((c) => c.needed && c.verdict === "fail");
}

export async function doctorCommand(args: CliArgs): Promise<number> {
  const out = (line: string) => Deno.stdout.write(new TextEncoder().encode(line + "\n"));
  const loaded = await loadCliConfig(args);
  // The probe attaches and detaches a marker: its info lines would only repeat what the check line says.
  if (args.logLevel === "info") setupLogging({ level: "warn", withTime: args.logTime });
  await out(`configuration ${loaded.source}`);
  const needs = needsOf(loaded.config);
  const checks = await hostChecks(loaded.config, needs);
  for (const c of checks) await out(renderCheck(c));
  if (needs.marker) {
    const { markerProbe } = await import("../doctor/marker_probe.ts");
    const probe = await markerProbe(loaded.config);
    checks.push(probe);
    await out(renderCheck(probe));
  }
  const passes = doctorPasses(checks);
  const failed = checks.filter((c) => c.needed && c.verdict === "fail").length;
  const warned = checks.filter((c) => c.verdict === "warn").length;
  await out(
    passes
      ? `ok: this host can run the configuration (${warned} warning${warned === 1 ? "" : "s"})`
      : `not ready: ${failed} check${failed === 1 ? "" : "s"} failed`,
  );
  return passes ? 0 : 1;
}
