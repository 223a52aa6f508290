/**
 * How many ring-buffer records per second reach TypeScript, read the way the skops enricher and the
 * iperf3 plugin read them (src/bpf/ring_reader.ts: a libc poll on the ring's epoll fd on a pool thread,
 * then a synchronous ring_buffer__consume whose callback copies each record into a Uint8Array).
 *
 *   deno run --allow-all bench/ring_buffer.ts [--seconds 4] [--rounds 3]
 *
 * Needs root, bpftool, iperf3 and the built objects (scripts/build_bpf.sh). Two producers:
 *
 * - saturated: bpf/bench_ring.bpf.o, run back to back by `bpftool prog run ... repeat N` in another
 *   process, writes 312-byte records (the skops record's size) far faster than anything reads them; what
 *   arrives per second is the reader's ceiling. Once with a wake-up per record (libbpf's default, as the
 *   watcher program does) and once without (the consumer drains on its own schedule, as for skops).
 * - iperf3: the real skops program with no throttle (a record on every RTT sample) on an 8-stream iperf3
 *   over loopback with 1 KiB writes and TCP_NODELAY; iperf3 runs in a cgroup of its own.
 *
 * Two handlers: "copy" (count the records) and "decode" (decodeRecord into tcp_info, what the enricher
 * does before publishing). Reported: records/s delivered, records lost (the kernel's count of failed
 * reservations), CPU time of this process per delivered record, and the worst lateness of a 10 ms timer.
 */
import { BPF_ANY, BpfObject, mapLookup, mapUpdate, progInfo, RingBuffer } from "../ffi/libbpf.ts";
import { cgroup2MountPoints, parseMountInfo } from "../src/bpf/cgroup.ts";
import { builtSockOpsObject } from "../src/bpf/object_bytes.ts";
import { RingReader } from "../src/bpf/ring_reader.ts";
import { parseCpuList, SockOpsProgram } from "../src/bpf/sock_ops_program.ts";
import { cpuSeconds } from "../src/backends/prometheus_process.ts";
import { logger } from "../src/core/log.ts";
import {
  CONFIG_SECTION,
  decodeRecord,
  encodeConfig,
  encodeFlowKey,
  FLOW_STATE_SIZE,
  LOST_MAP,
  RECORDS_MAP,
  SKOPS_PROGRAM_NAME,
  WATCHED_FLOWS_MAP,
} from "../src/enrichers/skops_layout.ts";
import { IpAddress } from "../src/net/ip.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] ?? fallback : fallback;
}

const seconds = Number(flag("seconds", "4"));
const rounds = Number(flag("rounds", "3"));
const SERVER_PORT = 5399, CLIENT_PORT = 45399, STREAMS = 8;
const log = logger("bench");
const cpus = parseCpuList(Deno.readTextFileSync("/sys/devices/system/cpu/possible"));

type Mode = "copy" | "decode";

function handler(mode: Mode, count: () => void): (r: Uint8Array) => void {
  return mode === "copy" ? count : (r) => {
    decodeRecord(r, 250);
    count();
  };
}

/** Measures CPU time and event-loop lateness around `run`. */
async function measured(run: () => Promise<void>): Promise<{ seconds: number; cpu: number; lateMs: number }> {
  let worst = 0, last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 10);
    last = now;
  }, 10);
  const cpu0 = cpuSeconds(Deno.readTextFileSync("/proc/self/stat"));
  const t0 = performance.now();
  await run();
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(Deno.readTextFileSync("/proc/self/stat")) - cpu0;
  clearInterval(timer);
  return { seconds: elapsed, cpu, lateMs: worst };
}

function sumPerCpu(value: Uint8Array | undefined): number {
  if (!value) return 0;
  const v = new DataView(value.buffer, value.byteOffset, value.byteLength);
  let sum = 0n;
  for (let i = 0; i < cpus; i++) sum += v.getBigUint64(8 * i, true);
  return Number(sum);
}

function report(
  o: Record<string, unknown>,
  records: number,
  lost: number,
  m: { seconds: number; cpu: number; lateMs: number },
) {
  console.log(JSON.stringify({
    ...o,
    recordsPerSecond: Math.round(records / m.seconds),
    records,
    lost,
    cpuUsPerRecord: Number(((m.cpu * 1e6) / records).toFixed(2)),
    worstTimerLateMs: Number(m.lateMs.toFixed(1)),
  }));
}

async function saturated(mode: Mode, wakeups: boolean): Promise<void> {
  const object = BpfObject.openMem(
    await Deno.readFile(new URL("../bpf/build/bench_ring.bpf.o", import.meta.url)),
    "bench",
  );
  try {
    const config = new Uint8Array(8);
    config[0] = wakeups ? 0 : 1;
    object.findMap(".rodata.config")!.setInitialValue(config);
    object.load();
    const progId = progInfo(object.findProgram("flowd_bench_ring")!.fd).id;
    let records = 0;
    const ring = RingBuffer.open(object.findMap("benchRing")!.fd, handler(mode, () => void records++));
    const reader = new RingReader(ring, log, "bench", wakeups ? 100 : 20);
    const packet = await Deno.makeTempFile();
    await Deno.writeFile(packet, new Uint8Array(64));
    reader.start();
    const m = await measured(async () => {
      const end = performance.now() + seconds * 1000;
      while (performance.now() < end) {
        const out = await new Deno.Command("bpftool", {
          args: ["prog", "run", "id", String(progId), "data_in", packet, "repeat", "200000"],
          stdout: "null",
          stderr: "null",
        }).output();
        if (!out.success) throw new Error("bpftool prog run failed");
      }
      await new Promise((r) => setTimeout(r, 100));
    });
    await reader.stop();
    reader.drain();
    ring.close();
    await Deno.remove(packet);
    const lost = sumPerCpu(mapLookup(object.findMap("benchLost")!.fd, new Uint8Array(4), 8 * cpus));
    report({ producer: "saturated", wakeups: wakeups ? "every record" : "none", mode }, records, lost, m);
  } finally {
    object.close();
  }
}

function spawnIn(cgroup: string, argv: string[]): Deno.ChildProcess {
  return new Deno.Command("sh", {
    args: ["-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...argv],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function iperf(cgroup: string, mode: Mode): Promise<void> {
  let records = 0;
  const program = SockOpsProgram.open({
    bytes: await builtSockOpsObject("skops", false),
    name: "skops",
    programName: SKOPS_PROGRAM_NAME,
    ringMapName: RECORDS_MAP,
    lostMapName: LOST_MAP,
    config: { section: CONFIG_SECTION, bytes: encodeConfig({ intervalMs: 0, strategy: "poll" }) },
    cgroupPath: cgroup,
    onRecord: handler(mode, () => void records++),
    readSliceMs: 20,
    log,
  });
  const loopback = IpAddress.parse("::1");
  const fd = program.map(WATCHED_FLOWS_MAP).fd;
  // iperf3 gives stream i the client port CLIENT_PORT + i; both ends of each are watched.
  for (let i = 0; i < STREAMS; i++) {
    const client = { address: loopback, port: CLIENT_PORT + i },
      server = { address: loopback, port: SERVER_PORT };
    mapUpdate(fd, encodeFlowKey(client, server), new Uint8Array(FLOW_STATE_SIZE), BPF_ANY);
    mapUpdate(fd, encodeFlowKey(server, client), new Uint8Array(FLOW_STATE_SIZE), BPF_ANY);
  }
  const server = spawnIn(cgroup, ["iperf3", "-s", "-1", "-B", "::1", "-p", String(SERVER_PORT)]);
  await new Promise((r) => setTimeout(r, 300));
  const m = await measured(async () => {
    const client = spawnIn(cgroup, [
      ...["iperf3", "-c", "::1", "-p", String(SERVER_PORT), "--cport", String(CLIENT_PORT)],
      ...["-t", String(seconds), "-P", String(STREAMS), "-l", "1K", "-N"],
    ]);
    await client.status;
    await server.status;
    await new Promise((r) => setTimeout(r, 100));
  });
  const lost = Number(program.lost());
  await program.close();
  report({ producer: "iperf3", mode }, records, lost, m);
}

if (Deno.uid() !== 0) {
  console.error("bench/ring_buffer.ts needs root (BPF, cgroups)");
  Deno.exit(1);
}
for (let i = 0; i < rounds; i++) {
  for (const mode of ["copy", "decode"] as const) {
    await saturated(mode, true);
    await saturated(mode, false);
  }
}
const root = cgroup2MountPoints(parseMountInfo(Deno.readTextFileSync("/proc/self/mountinfo")))[0];
if (!root) throw new Error("no cgroup2 mount");
const cgroup = `${root}/flowd-bench-${Deno.pid}`;
Deno.mkdirSync(cgroup);
try {
  for (let i = 0; i < rounds; i++) {
    for (const mode of ["copy", "decode"] as const) await iperf(cgroup, mode);
  }
} finally {
  for (let i = 0; i < 50; i++) {
    try {
      Deno.removeSync(cgroup);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
