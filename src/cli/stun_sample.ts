/**
 * `flowd-go stun sample`: shows the private → public source-address mapping the firefly backend would use,
 * found the same way (default-route interfaces, manualMapping, HTTP, then STUN), with every query made.
 *
 * The original only logged its queries, ran HTTP and STUN both, and ignored the configuration; this one
 * prints the result on stdout (text or JSON) from the configured settings, flags overriding the servers.
 */
import { parseConfig } from "../config/load.ts";
import { StunSchema } from "../config/schema.ts";
import { logger } from "../core/log.ts";
import {
  type AddressReport,
  type DiscoverOptions,
  discoverPublicMapping,
  mappingSettings,
  type PublicMappingResult,
} from "../net/public_address.ts";
import type { CliArgs } from "./args.ts";
import { loadCliConfig } from "./load.ts";

/** The original's `--stun-server` default, used when neither flags nor configuration name a server. */
export const DEFAULT_SAMPLE_STUN_SERVER = "stun.l.google.com:3478";

const log = logger("stun");

/** The configuration `--conf` names; the defaults when it was not given and the default file is absent. */
async function loadOptional(args: CliArgs) {
  if (!args.confGiven) {
    try {
      await Deno.stat(args.conf);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return parseConfig("", "defaults");
      throw err;
    }
  }
  // The configuration's warnings are about running the daemon; a sample needs only its stun settings.
  return await loadCliConfig(args);
}

function describeReport(r: AddressReport): string {
  const where = r.interface ? ` (${r.interface})` : "";
  switch (r.outcome) {
    case "mapped":
      return `${r.local}${where} -> ${r.public}  by ${r.method}${
        r.method === "manual" ? "" : ` ${r.source}`
      }`;
    case "public":
      return `${r.local}${where} unchanged: already public`;
    case "link-local":
      return `${r.local}${where} unchanged: link-local`;
    case "unmapped":
      return `${r.local}${where} unchanged: ${
        r.attempts.length ? "no public address found" : "no HTTP service or STUN server to ask"
      }`;
  }
}

/** The text form: interfaces, then one line per address with its queries indented below it. */
export function formatSampleText(result: PublicMappingResult): string {
  const lines: string[] = [];
  if (result.localError) lines.push(`error: ${result.localError}`);
  const ifaces = result.interfaces.map((i) =>
    `${i.name} (${i.family}${i.gateway ? ` via ${i.gateway}` : ""}, metric ${i.priority})`
  );
  lines.push(`default-route interfaces: ${ifaces.length ? ifaces.join(", ") : "none"}`);
  for (const r of result.reports) {
    lines.push(describeReport(r));
    for (const a of r.attempts) {
      lines.push(`    ${a.method} ${a.server}: ${a.found ? `found ${a.found}` : a.error}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** The JSON form, for scripts. */
export function sampleJson(result: PublicMappingResult): unknown {
  return {
    ...(result.localError ? { error: result.localError } : {}),
    interfaces: result.interfaces.map((i) => ({
      family: i.family,
      name: i.name,
      index: i.index,
      gateway: i.gateway?.toString() ?? null,
      metric: i.priority,
    })),
    addresses: result.reports.map((r) => ({
      interface: r.interface ?? null,
      address: r.local.toString(),
      outcome: r.outcome,
      public: r.public?.toString() ?? null,
      method: r.method ?? null,
      via: r.source ?? null,
      queries: r.attempts.map((a) => ({
        method: a.method,
        server: a.server,
        found: a.found?.toString() ?? null,
        error: a.error || null,
      })),
    })),
  };
}

/** Runs the sample and prints it; returns the exit status (1 when the interfaces cannot be listed). */
export async function stunSampleCommand(args: CliArgs, opts: DiscoverOptions = {}): Promise<number> {
  const { config } = await loadOptional(args);
  const configured = config.backends.firefly?.stun;
  const stun = configured ?? StunSchema.parse({ stunServers: [DEFAULT_SAMPLE_STUN_SERVER] });
  const settings = {
    ...mappingSettings(stun),
    ...(args.stunServers.length ? { stunServers: args.stunServers } : {}),
    ...(args.httpServers.length ? { httpServers: args.httpServers } : {}),
  };
  log.debug("sampling the public-address mapping", {
    httpServers: settings.httpServers.join(","),
    stunServers: settings.stunServers.join(","),
  });
  const result = await discoverPublicMapping(settings, opts);
  const text = args.format === "json"
    ? JSON.stringify(sampleJson(result), null, 2) + "\n"
    : formatSampleText(result);
  await Deno.stdout.write(new TextEncoder().encode(text));
  if (result.localError) {
    log.error(result.localError);
    return 1;
  }
  return 0;
}
