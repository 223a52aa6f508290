/**
 * The doctor's proof that the marker works here: the configured marker object is loaded and attached, with
 * the configured attach mode, to a veth interface in a private network namespace of its own, then detached
 * and unloaded. Nothing on the host's own interfaces is touched; the namespace is deleted whatever happens.
 */
import { MarkerHooks } from "../backends/marker/hooks.ts";
import { MarkerProgram } from "../backends/marker/program.ts";
import { QdiscLedger } from "../backends/marker/qdisc_ledger.ts";
import type { Config } from "../config/schema.ts";
import { errorMessage } from "../core/errors.ts";
import type { CheckResult } from "./checks.ts";

const PROBE_INTERFACE = "flowd-probe0";
const PROBE_PEER = "flowd-probe1";

async function ip(args: string[]): Promise<{ ok: boolean; error: string }> {
  try {
    const out = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
    return { ok: out.success, error: new TextDecoder().decode(out.stderr).trim() };
  } catch (err) {
    return {
      ok: false,
      error: err instanceof Deno.errors.NotFound ? "ip (iproute2) is not installed" : errorMessage(err),
    };
  }
}

/** Loads the marker object alone (when no namespace can be made): proves the verifier accepts it. */
async function loadOnly(config: Config, why: string): Promise<CheckResult> {
  const m = config.backends.marker!;
  try {
    const program = await MarkerProgram.load({
      strategy: m.markingStrategy,
      matchAll: m.matchAll,
      debug: m.debugMode,
      programPath: m.programPath || undefined,
      maxFlows: 16,
    });
    program.close();
    return {
      name: "marker probe",
      verdict: "warn",
      detail: `the ${m.markingStrategy} program loads, but attaching was not tried: ${why}`,
      fix: "install iproute2 and run the doctor as root to prove attaching too",
      needed: true,
    };
  } catch (err) {
    return {
      name: "marker probe",
      verdict: "fail",
      detail: `the marker program does not load: ${errorMessage(err)}`,
      fix: "see the checks above (capabilities, bpf syscall, kernel); backends.marker.programPath if set",
      needed: true,
    };
  }
}

/** Runs the probe; one check line. */
export async function markerProbe(config: Config): Promise<CheckResult> {
  const m = config.backends.marker!;
  const ns = `flowd-doctor-${Deno.pid}`;
  const made = await ip(["netns", "add", ns]);
  if (!made.ok) return await loadOnly(config, `no private network namespace (${made.error})`);
  try {
    // A veth pair: every kernel that runs containers has it (the dummy driver is often a missing module).
    const pair = await ip([
      "-n",
      ns,
      "link",
      "add",
      PROBE_INTERFACE,
      "type",
      "veth",
      "peer",
      "name",
      PROBE_PEER,
    ]);
    if (!pair.ok) return await loadOnly(config, `no test interface (${pair.error})`);
    await ip(["-n", ns, "link", "set", PROBE_INTERFACE, "up"]);
    let program: MarkerProgram | undefined;
    try {
      program = await MarkerProgram.load({
        strategy: m.markingStrategy,
        matchAll: m.matchAll,
        debug: m.debugMode,
        programPath: m.programPath || undefined,
        maxFlows: 16,
      });
      const hooks = new MarkerHooks(program, {
        mode: m.attachMode,
        removeQdisc: true,
        ledger: new QdiscLedger(undefined),
        netns: `/run/netns/${ns}`,
      });
      const a = await hooks.attach(PROBE_INTERFACE);
      await hooks.detachAll();
      const how = a.kind === "tcx" ? "a TCX link" : "a clsact filter";
      return {
        name: "marker probe",
        verdict: "pass",
        detail:
          `the ${m.markingStrategy} program loads and attaches with ${how} (attachMode ${m.attachMode}, ` +
          `program id ${a.progId}) in a private namespace`,
        needed: true,
      };
    } catch (err) {
      return {
        name: "marker probe",
        verdict: "fail",
        detail: `the marker does not load or attach: ${errorMessage(err)}`,
        fix: m.attachMode === "tcx"
          ? "this kernel may lack TCX (Linux 6.6): set backends.marker.attachMode to auto"
          : "see the checks above (capabilities, bpf syscall, kernel); backends.marker.programPath if set",
        needed: true,
      };
    } finally {
      program?.close();
    }
  } finally {
    await ip(["netns", "del", ns]);
  }
}
