/**
 * Flows started through the named pipe into the marker's kernel map: how many per second, how much memory
 * each open flow costs, and how long one line takes to become its map entry.
 *
 *   sudo deno run --allow-all --v8-flags=--expose-gc bench/marker_flows.ts [--flows 100000] [--rounds 3] [--quick]
 *
 * In this process, as the daemon wires them: the namedPipe plugin, the event bus and the marker backend,
 * its program attached to one end of a veth pair in a namespace of its own (no traffic is sent). Each round:
 *
 * - `ceiling`: the same number of flows written straight into the map (MarkerProgram.setFlow in a loop:
 *   the FFI call and the kernel's update, nothing else), then removed;
 * - `ours`: `flows` start lines written with `cat file > fifo`; done when the backend has inserted them all.
 *   Memory per open flow: RSS and V8 heap after a forced GC, with every flow open, minus the same before;
 * - `latency`: with the flows ended, 2,000 start lines written by this process one per millisecond; each
 *   line's time from its write() to the return of the backend's map update (the map entry exists then).
 */
import { median, parseFlags, range } from "./lib.ts";
import { EventBus } from "../src/core/bus.ts";
import type { Backend } from "../src/core/component.ts";
import type { FlowEvent } from "../src/core/flow_event.ts";
import { NamedPipePlugin } from "../src/plugins/named_pipe.ts";
import { MarkerBackend } from "../src/backends/marker/backend.ts";
import { MarkerSchema } from "../src/config/schema.ts";
import { IpAddress } from "../src/net/ip.ts";
import { createHostVeth } from "../tests/helpers/host_veth.ts";

const flags = parseFlags({ flows: "100000", rounds: "3", quick: "false", latency: "2000" });
const QUICK = flags.quick === "true";
const FLOWS = QUICK ? 30_000 : Number(flags.flows);
const ROUNDS = QUICK ? 2 : Number(flags.rounds);
const LATENCY_LINES = QUICK ? 500 : Number(flags.latency);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc (memory per flow needs a forced GC)");

/**
 * Flow i: one of four local addresses, a source port of its own (unique with the address), one of 5,000
 * peers on port 5201: what a storage node's flows look like.
 */
function flowParts(i: number): [string, number, string] {
  return [`2001:db8::${(i & 3) + 1}`, 1024 + ((i >> 2) % 60000), `2001:db8:1::${(i % 5000).toString(16)}`];
}

function flowLine(state: string, i: number): string {
  const [src, sport, dst] = flowParts(i);
  return `${state} tcp ${src} ${sport} ${dst} 5201 2 3\n`;
}

function rssBytes(): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/self/status"));
  return Number(m![1]) * 1024;
}

function settle(): { rss: number; heap: number } {
  for (let i = 0; i < 3; i++) gc!();
  return { rss: rssBytes(), heap: Deno.memoryUsage().heapUsed };
}

/** The line a start came from (its index below 240,000, from the source address and port). */
function lineIndex(e: FlowEvent): number {
  return ((e.src.port - 1024) << 2) | (e.src.address.byteAt(15) - 1);
}

/** Times each event's handling, keyed by the line it came from. */
class Timed implements Backend {
  readonly name = "marker";
  readonly replayOpenFlows = true;
  readonly done = new Map<number, number>();
  constructor(readonly inner: MarkerBackend) {}
  start = () => this.inner.start();
  stop = () => this.inner.stop();
  async handle(event: FlowEvent): Promise<void> {
    await this.inner.handle(event);
    if (event.state === "start") this.done.set(lineIndex(event), performance.now());
  }
}

const veth = await createHostVeth();
const dir = await Deno.makeTempDir({ prefix: "flowd-bench-marker-flows-" });
const ifname = veth.hostIf;
const marker = new MarkerBackend({
  config: MarkerSchema.parse({ targetInterfaces: [ifname], maxFlows: Math.max(FLOWS, 100_000) + 10_000 }),
  ledgerPath: `${dir}/ledger.json`,
  checkIntervalMs: 0,
});
const timed = new Timed(marker);
const bus = new EventBus({ queueCapacity: 10_000, flowTableCapacity: 1_000_000 });
const plugin = new NamedPipePlugin({
  pipePath: `${dir}/np`,
  buffSize: 4096,
  pipeMode: "0600",
  application: "bench",
});
const rows: Record<string, number[]> = {};
const add = (k: string, v: number) => (rows[k] ??= []).push(v);
try {
  await timed.start();
  bus.attachBackend(timed);
  await plugin.start(bus);
  const starts = `${dir}/starts.txt`, ends = `${dir}/ends.txt`;
  const s: string[] = [], e: string[] = [];
  for (let i = 0; i < FLOWS; i++) {
    s.push(flowLine("start", i));
    e.push(flowLine("end", i));
  }
  Deno.writeTextFileSync(starts, s.join(""));
  Deno.writeTextFileSync(ends, e.join(""));
  const cat = (file: string) =>
    new Deno.Command("sh", { args: ["-c", `cat '${file}' > '${dir}/np'`] }).output();
  const waitFor = async (pred: () => boolean) => {
    const deadline = performance.now() + 120_000;
    while (!pred()) {
      if (performance.now() > deadline) throw new Error(`stalled: ${JSON.stringify(marker.stats)}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  const program = marker.program!;
  const identity = (i: number) => {
    const [src, sport, dst] = flowParts(i);
    return {
      protocol: "tcp" as const,
      src: { address: IpAddress.parse(src), port: sport },
      dst: { address: IpAddress.parse(dst), port: 5201 },
    };
  };
  const ids = Array.from({ length: FLOWS }, (_, i) => identity(i));

  for (let round = 0; round < ROUNDS; round++) {
    // Ceiling: straight into the map.
    let t0 = performance.now();
    for (const id of ids) program.setFlow(id, 0x12345);
    add("ceiling", FLOWS / ((performance.now() - t0) / 1000));
    for (const id of ids) program.deleteFlow(id);

    // Ours: through the pipe, the bus and the backend.
    const before = settle();
    const inserted0 = marker.stats.inserted;
    t0 = performance.now();
    await cat(starts);
    await waitFor(() => marker.stats.inserted - inserted0 >= FLOWS);
    add("ours", FLOWS / ((performance.now() - t0) / 1000));
    const after = settle();
    add("rss per flow", (after.rss - before.rss) / FLOWS);
    add("heap per flow", (after.heap - before.heap) / FLOWS);
    const deleted0 = marker.stats.deleted;
    await cat(ends);
    await waitFor(() => marker.stats.deleted - deleted0 >= FLOWS);
  }

  // Latency: one line per millisecond, written by this process.
  const writer = await Deno.open(`${dir}/np`, { write: true });
  const written = new Map<number, number>();
  const enc = new TextEncoder();
  for (let i = 0; i < LATENCY_LINES; i++) {
    const line = enc.encode(flowLine("start", i));
    written.set(i, performance.now());
    writer.writeSync(line);
    await new Promise((r) => setTimeout(r, 1));
  }
  await waitFor(() => [...written.keys()].every((k) => (timed.done.get(k) ?? 0) >= written.get(k)!));
  writer.close();
  const lat = [...written].map(([k, t]) => timed.done.get(k)! - t).sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!;

  console.log(`marker flows: ${FLOWS} flows, ${ROUNDS} rounds, load ${Deno.loadavg()[0]?.toFixed(2)}`);
  console.log("case | median (range)");
  console.log(
    `ceiling: setFlow straight into the map, flows/s | ${Math.round(median(rows.ceiling!))} (${
      range(rows.ceiling!)
    })`,
  );
  console.log(
    `ours: pipe → bus → marker map, flows/s | ${Math.round(median(rows.ours!))} (${range(rows.ours!)}) | ${
      (median(rows.ours!) / median(rows.ceiling!)).toFixed(2)
    }x the ceiling`,
  );
  console.log(
    `RSS per open flow, bytes | ${Math.round(median(rows["rss per flow"]!))} (${
      range(rows["rss per flow"]!)
    })`,
  );
  console.log(
    `V8 heap per open flow, bytes | ${Math.round(median(rows["heap per flow"]!))} (${
      range(rows["heap per flow"]!)
    })`,
  );
  console.log(
    `line → map entry at 1 line/ms (${lat.length} lines), ms | p50 ${q(0.5).toFixed(3)} p99 ${
      q(0.99).toFixed(3)
    } max ${lat[lat.length - 1]!.toFixed(3)}`,
  );
} finally {
  await plugin.stop().catch(() => {});
  await bus.close(2000).catch(() => 0);
  await timed.stop().catch(() => {});
  await veth[Symbol.asyncDispose]();
  await Deno.remove(dir, { recursive: true });
}
