/**
 * The connections plugin under volume: a client in namespace A opens `--rate` TCP connections a second
 * to an echo server in namespace B (in a cgroup of its own, where the watcher is attached), each closed
 * `--open` seconds later, so rate x open stay open (default 1,000/s with 10,000 open). Per round, two
 * modes, interleaved:
 *
 * - ceiling: the watcher program alone (no port filter), its ring read by a handler that only counts;
 * - ours: the connections plugin (one rule on the server's port) into the event bus and a real marker
 *   backend (its map entries are what the latency is measured to).
 *
 * Reports events seen per second, events lost (ring full or never seen), the plugin process's CPU per
 * connection, the time from the kernel's ESTABLISHED (the watcher's bpf_ktime_get_ns) to the plugin's
 * event and to the marker's map entry, and the time a sock_diag sweep of 10,000 connections takes.
 *
 * Run as root: deno run -A bench/connections.ts [--rate 1000] [--open 10] [--steady 5] [--rounds 2]
 */
import process from "node:process";
import { median, parseFlags, range } from "./lib.ts";
import { createVethPair, sh } from "../tests/helpers/netns.ts";
import { createTestCgroup } from "../tests/helpers/cgroup.ts";
import { createHostVeth } from "../tests/helpers/host_veth.ts";
import { startTcpPeer, tcpPeerArgv } from "../tests/helpers/tcp_peer.ts";
import { ConnectionsPlugin } from "../src/plugins/connections.ts";
import { ConnectionsSchema, MarkerSchema } from "../src/config/schema.ts";
import { SockDiag, TCP_LISTEN } from "../src/net/sock_diag.ts";
import { SockOpsProgram } from "../src/bpf/sock_ops_program.ts";
import { builtSockOpsObject } from "../src/bpf/object_bytes.ts";
import {
  CONFIG_SECTION,
  encodeWatcherConfig,
  EVENTS_MAP,
  LOST_MAP,
  WATCHER_PROGRAM_NAME,
} from "../src/plugins/iperf3_layout.ts";
import { EventBus } from "../src/core/bus.ts";
import type { Backend } from "../src/core/component.ts";
import { type FlowEvent, flowKey } from "../src/core/flow_event.ts";
import { MarkerBackend } from "../src/backends/marker/backend.ts";
import { monotonicMicros } from "../ffi/unix_datagram.ts";
import { logger } from "../src/core/log.ts";

const flags = parseFlags({ rate: "1000", open: "10", steady: "5", rounds: "2" });
const RATE = Number(flags.rate), OPEN = Number(flags.open), STEADY = Number(flags.steady);
const ROUNDS = Number(flags.rounds);
const PORT = 1094;
const log = logger("bench", "connections");

/** Times each start's handling by the marker against the watcher's timestamp of its handshake. */
class Timed implements Backend {
  readonly name = "marker";
  readonly ktime = new Map<string, bigint>();
  readonly toMapUs: number[] = [];
  /** The handshake times (µs, CLOCK_MONOTONIC) of `toMapUs`, in the same order. */
  readonly atUs: number[] = [];
  constructor(readonly inner: MarkerBackend) {}
  start = () => this.inner.start();
  stop = () => this.inner.stop();
  async handle(event: FlowEvent): Promise<void> {
    await this.inner.handle(event);
    if (event.state !== "start") return;
    const k = this.ktime.get(flowKey(event));
    if (k === undefined) return;
    this.ktime.delete(flowKey(event));
    this.toMapUs.push(Number(monotonicMicros() - k / 1000n));
    this.atUs.push(Number(k / 1000n));
  }
}

interface Round {
  mode: "ceiling" | "ours";
  opened: number;
  failed: number;
  /** Starts and ends seen (ceiling: ESTABLISHED and CLOSE records of the server's sockets). */
  starts: number;
  ends: number;
  lost: number;
  seconds: number;
  cpuUsPerConnection: number;
  toEventUs: number[];
  toMapUs: number[];
  /** Map-entry delays of connections whose handshake fell outside the sweep at the peak. */
  toMapOutsideSweepUs: number[];
  sweepMs?: number;
  sweptAtPeak?: number;
  /** Starts and ends the sweeps had to supply (0 when the watcher missed nothing). */
  repaired?: string;
}

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

await using net = await createVethPair();
await using cg = await createTestCgroup();
await using hostVeth = await createHostVeth();
// 1,000 closes a second leave 60,000 client ports in TIME_WAIT: a wide range, reused when safe.
await net.exec(net.nsA, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"]);
await net.exec(net.nsA, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
await net.exec(net.nsB, ["sysctl", "-qw", "net.core.somaxconn=65535"]);
cg.spawn(tcpPeerArgv(net.prefix(net.nsB), ["server", "::", String(PORT)]));
using diag = SockDiag.open({ netns: `/run/netns/${net.nsB}` });
for (let i = 0;; i++) {
  if ((await diag.dump({ family: "ipv6", states: 1 << TCP_LISTEN }, { srcPort: PORT })).length) break;
  if (i > 400) throw new Error("the echo server did not start");
  await new Promise((r) => setTimeout(r, 25));
}
const load = (await sh(["uptime"])).stdout.trim();

async function churn(onRamped: () => Promise<void>): Promise<{ opened: number; failed: number }> {
  await using client = startTcpPeer(net.prefix(net.nsA), [
    "churn",
    net.ip6B,
    String(PORT),
    String(RATE),
    String(OPEN),
    String(OPEN + STEADY),
  ]);
  await client.expect("ramped", (OPEN + 30) * 1000);
  await onRamped();
  const line = await client.expect("churned", (OPEN + STEADY + 60) * 1000);
  const [, opened, , failed] = line.split(" ").map(Number);
  return { opened: opened!, failed: failed! };
}

async function settle(done: () => boolean): Promise<void> {
  const end = performance.now() + 5000;
  while (!done() && performance.now() < end) await new Promise((r) => setTimeout(r, 20));
}

async function ceiling(): Promise<Round> {
  let starts = 0, ends = 0;
  const program = SockOpsProgram.open({
    bytes: builtSockOpsObject("watcher", false),
    name: "watcher",
    programName: WATCHER_PROGRAM_NAME,
    ringMapName: EVENTS_MAP,
    lostMapName: LOST_MAP,
    config: {
      section: CONFIG_SECTION,
      bytes: encodeWatcherConfig({
        minSourcePort: 0,
        maxSourcePort: 0,
        minDestinationPort: 0,
        maxDestinationPort: 0,
      }),
    },
    cgroupPath: cg.path,
    // new_state at offset 54: ESTABLISHED 1, CLOSE 7.
    onRecord: (r) => r[54] === 1 ? starts++ : ends++,
    log,
  });
  try {
    const c0 = cpuUs(), t0 = performance.now();
    const { opened, failed } = await churn(() => Promise.resolve());
    await settle(() => ends >= opened);
    const seconds = (performance.now() - t0) / 1000;
    return {
      mode: "ceiling",
      opened,
      failed,
      starts,
      ends,
      lost: Number(program.lost()),
      seconds,
      cpuUsPerConnection: (cpuUs() - c0) / opened,
      toEventUs: [],
      toMapUs: [],
      toMapOutsideSweepUs: [],
    };
  } finally {
    await program.close();
  }
}

async function ours(): Promise<Round> {
  const dir = await Deno.makeTempDir({ prefix: "flowd-bench-connections-" });
  const marker = new MarkerBackend({
    config: MarkerSchema.parse({ targetInterfaces: [hostVeth.hostIf], maxFlows: 100_000 }),
    ledgerPath: `${dir}/ledger.json`,
    checkIntervalMs: 0,
  });
  const timed = new Timed(marker);
  const bus = new EventBus({ queueCapacity: 100_000, flowTableCapacity: 1_000_000 });
  const toEventUs: number[] = [];
  const plugin = new ConnectionsPlugin({
    config: ConnectionsSchema.parse({
      rules: [{ localPorts: [PORT], direction: "inbound", experiment: 2, activity: 1 }],
      internalNetworks: [],
      cgroupPath: cg.path,
      sweepInterval: 0,
    }),
    application: "bench",
    sockDiag: () => SockDiag.open({ netns: `/run/netns/${net.nsB}` }),
    onWatcherStart: (ktime, event) => {
      toEventUs.push(Number(monotonicMicros() - ktime / 1000n));
      timed.ktime.set(flowKey(event), ktime);
    },
  });
  try {
    await timed.start();
    bus.attachBackend(timed);
    await plugin.start(bus);
    const c0 = cpuUs(), t0 = performance.now();
    let sweepMs = 0, sweptAtPeak = 0, sweepFrom = 0, sweepTo = 0;
    const { opened, failed } = await churn(async () => {
      // At the peak: what a repair sweep costs with RATE x OPEN connections open (the plugin's own,
      // so the latency figures include what it holds up).
      const s0 = performance.now();
      sweepFrom = Number(monotonicMicros());
      await plugin.sweepNow();
      sweepTo = Number(monotonicMicros());
      sweepMs = performance.now() - s0;
      sweptAtPeak = plugin.openConnections;
    });
    await settle(() => plugin.stats.ends >= opened);
    const seconds = (performance.now() - t0) / 1000;
    return {
      mode: "ours",
      opened,
      failed,
      starts: plugin.stats.starts,
      ends: plugin.stats.ends,
      lost: Number(plugin.lost()),
      seconds,
      cpuUsPerConnection: (cpuUs() - c0) / opened,
      toEventUs,
      toMapUs: timed.toMapUs,
      // A start held up by the sweep was established before it ended and handled after it began.
      toMapOutsideSweepUs: timed.toMapUs.filter((d, i) => {
        const at = timed.atUs[i]!;
        return at > sweepTo || at + d < sweepFrom;
      }),
      sweepMs,
      sweptAtPeak,
      repaired: `${plugin.stats.sweptStarts}/${plugin.stats.sweptEnds}`,
    };
  } finally {
    await plugin.stop();
    await bus.close(5000);
    await timed.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const rounds: Round[] = [];
for (let i = 0; i < ROUNDS; i++) {
  for (const run of i % 2 === 0 ? [ceiling, ours] : [ours, ceiling]) {
    const r = await run();
    rounds.push(r);
    console.error(
      `round ${i} ${r.mode}: opened ${r.opened} (failed ${r.failed}), starts ${r.starts}, ends ${r.ends}, lost ${r.lost}, ${
        r.cpuUsPerConnection.toFixed(1)
      } µs CPU/connection${
        r.sweepMs ? `, sweep of ${r.sweptAtPeak} in ${r.sweepMs.toFixed(0)} ms, repaired ${r.repaired}` : ""
      }`,
    );
  }
}

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
console.log(`\nconnections bench: ${RATE}/s, ${RATE * OPEN} open, ${ROUNDS} rounds; load: ${load}`);
console.log("| mode | connections/s | peak open | events lost | CPU µs/connection (median, range) |");
console.log("|---|---|---|---|---|");
for (const mode of ["ceiling", "ours"] as const) {
  const rs = rounds.filter((r) => r.mode === mode);
  const missing = rs.map((r) => r.lost + (r.opened - r.starts) + (r.opened - r.ends));
  console.log(
    `| ${mode === "ours" ? "connections plugin → bus → marker" : "watcher alone, counting (ceiling)"} | ${
      median(rs.map((r) => r.opened / (OPEN + STEADY))).toFixed(0)
    } | ${RATE * OPEN} | ${missing.join(", ")} | ${median(rs.map((r) => r.cpuUsPerConnection)).toFixed(1)} (${
      range(rs.map((r) => r.cpuUsPerConnection))
    }) |`,
  );
}
const ev = rounds.flatMap((r) => r.toEventUs), map = rounds.flatMap((r) => r.toMapUs);
const dist = (xs: number[]) =>
  `median ${median(xs).toFixed(0)} µs, p90 ${pct(xs, 0.9).toFixed(0)}, p99 ${pct(xs, 0.99).toFixed(0)}, max ${
    Math.max(...xs).toFixed(0)
  }`;
console.log(`handshake → plugin event: ${dist(ev)}`);
console.log(`handshake → marker map entry: ${dist(map)} (${map.length} connections)`);
const outside = rounds.flatMap((r) => r.toMapOutsideSweepUs);
console.log(
  `  the same, without the starts the sweep at the peak held up: ${dist(outside)} (${outside.length})`,
);
const sweeps = rounds.filter((r) => r.sweepMs !== undefined);
console.log(
  `sock_diag sweep at the peak: ${median(sweeps.map((r) => r.sweptAtPeak!))} connections in ${
    median(sweeps.map((r) => r.sweepMs!)).toFixed(0)
  } ms (range ${range(sweeps.map((r) => r.sweepMs!))})`,
);
