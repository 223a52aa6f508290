/**
 * `flowd-go flows`: the running daemon's open flows, like `ss`: age, protocol, both ends, experiment and
 * activity, the tag the marker writes, packets and bytes it marked, the rate since the previous listing.
 * A flow the marker holds but never saw a packet of shows as "never seen": its announced 5-tuple does not
 * match the traffic. `--format json` prints the daemon's answer; `--watch` refreshes.
 */
import { askDaemon } from "../control/client.ts";
import type { FlowReport, FlowReportEntry } from "../control/flows_report.ts";
import { DEFAULT_CONTROL_SOCKET } from "../config/defaults.ts";
import { UsageError } from "../core/errors.ts";
import { normalizeName } from "../scitags/registry.ts";
import { IpAddress } from "../net/ip.ts";
import { parsePrefix, prefixContains } from "../net/private_ranges.ts";
import type { CliArgs, FlowsArgs } from "./args.ts";
import { loadCliConfig } from "./load.ts";

const encoder = new TextEncoder();

export async function flowsCommand(args: CliArgs): Promise<number> {
  const socket = await controlSocketPath(args);
  const keep = flowFilter(args.flows);
  for (;;) {
    const report = await askDaemon(socket, "flows") as FlowReport;
    const flows = report.flows.filter(keep);
    let text: string;
    if (args.format === "json") text = JSON.stringify({ ...report, flows }) + "\n";
    else text = renderTable(flows);
    if (args.flows.watch && args.format !== "json") text = `\x1b[H\x1b[2J${report.time}\n${text}`;
    await Deno.stdout.write(encoder.encode(text));
    if (!args.flows.watch) return 0;
    await new Promise((resolve) => setTimeout(resolve, args.flows.intervalS * 1000));
  }
}

/** The control socket: --socket, else the configuration's `controlSocket`. */
export async function controlSocketPath(args: CliArgs): Promise<string> {
  if (args.flows.socket !== undefined) return args.flows.socket;
  const { config } = await loadCliConfig(args);
  if (config.controlSocket === "") {
    throw new UsageError('the configuration disables the control socket (controlSocket: ""); use --socket');
  }
  return config.controlSocket || DEFAULT_CONTROL_SOCKET;
}

/** The filters of the command line as one predicate (experiment and activity: a name or an id). */
export function flowFilter(f: FlowsArgs): (flow: FlowReportEntry) => boolean {
  const matchesTag = (wanted: string | undefined, tag: { id: number; name: string | null }) =>
    wanted === undefined || String(tag.id) === wanted ||
    (tag.name !== null && normalizeName(tag.name) === normalizeName(wanted));
  let dst: ((address: string) => boolean) | undefined;
  if (f.dst !== undefined) {
    const text = f.dst;
    if (text.includes("/")) {
      let prefix;
      try {
        prefix = parsePrefix(text);
      } catch {
        throw new UsageError(`invalid --dst "${text}" (an address, or address/length)`);
      }
      dst = (a) => {
        const address = IpAddress.tryParse(a);
        return address !== undefined && prefixContains(prefix, address);
      };
    } else {
      const wanted = IpAddress.tryParse(text);
      if (!wanted) throw new UsageError(`invalid --dst "${text}" (an address, or address/length)`);
      dst = (a) => IpAddress.tryParse(a)?.equals(wanted) ?? false;
    }
  }
  return (flow) =>
    matchesTag(f.experiment, flow.experiment) && matchesTag(f.activity, flow.activity) &&
    (dst === undefined || dst(flow.dst.address));
}

const endpoint = (e: { address: string; port: number }) =>
  e.address.includes(":") ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;

function duration(s: number | null): string {
  if (s === null) return "-";
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function quantity(n: number | null, unit: string): string {
  if (n === null) return "-";
  for (const [scale, prefix] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]] as const) {
    if (n >= scale) return `${(n / scale).toFixed(1)}${prefix}${unit}`;
  }
  return `${Math.round(n)}${unit}`;
}

const named = (t: { id: number; name: string | null }) =>
  t.name === null ? String(t.id) : `${t.name}(${t.id})`;

/** The table, one flow per line, columns padded to their widest cell. */
export function renderTable(flows: readonly FlowReportEntry[]): string {
  const header = [
    "Age",
    "Proto",
    "Local",
    "Peer",
    "Experiment",
    "Activity",
    "Tag",
    "Packets",
    "Bytes",
    "Rate",
    "Last",
    "Plugin",
  ];
  const rows = flows.map((f) => {
    const m = f.marking;
    const last = m === null
      ? "not marked"
      : m.seen === false
      ? "never seen"
      : m.seen === null
      ? "-"
      : `${duration(m.lastPacketAgoS)} ago`;
    return [
      duration(f.ageS),
      f.protocol,
      endpoint(f.src),
      endpoint(f.dst),
      named(f.experiment),
      named(f.activity),
      m?.tag ?? "-",
      m?.packets === null || m === null ? "-" : String(m.packets),
      m === null ? "-" : quantity(m.bytes === null ? null : Number(m.bytes), "B"),
      m === null ? "-" : quantity(m.rateBps, "bit/s"),
      last,
      f.plugin ?? "-",
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  const out = [line(header), ...rows.map(line)];
  if (flows.length === 0) out.push("(no open flows)");
  return out.join("\n") + "\n";
}
