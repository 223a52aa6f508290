/**
 * In-kernel cost per skb of the marker on real TCP: two network namespaces joined by a veth pair, the marker
 * attached at the egress of the sender's veth with the daemon's own attach code (MarkerHooks, TCX where the
 * kernel has it), iperf3 from one namespace to the other, and the kernel's BPF statistics
 * (`kernel.bpf_stats_enabled=1`: run_time_ns and run_cnt per program).
 *
 *   deno run --allow-all bench/marker_tcp.ts [--seconds 10] [--rounds 5] [--quick] [--objects name=path.o,...]
 *
 * Cases, interleaved round by round (the order rotates every round):
 * - floor: an empty tc program (`return TC_ACT_UNSPEC`) alone at the same hook;
 * - marked: the marker (label strategy) with the iperf3 data connection registered;
 * - unmarked: the marker with no flow registered (every skb is looked up and left alone).
 * Each case is one iperf3 run of `--seconds`; its figure is the program's run_time_ns / run_cnt over that run.
 * The table gives the median (min–max) over rounds; the net figure is the median over rounds of the case
 * minus the floor of the same round. `--quick` is 3 rounds of 3 s (under a minute). `--objects` adds a marked
 * and an unmarked case for each other build of bpf/marker.bpf.c (loaded from the file, same maps), in the
 * same rounds: how two versions of the program are compared.
 *
 * The sysctl is put back to its previous value and the namespaces are deleted also when something fails
 * (or on Ctrl-C). Needs root and iperf3 (`apt-get install -y iperf3`). All traffic stays in the namespaces.
 */
import {
  BPF_PROG_TYPE_SCHED_CLS,
  BPF_TCX_EGRESS,
  linkCreate,
  loadRawProgram,
  progInfo,
  returnImmediateProgram,
} from "../ffi/libbpf.ts";
import { closeFd } from "../ffi/libc_net.ts";
import { inNetworkNamespace } from "../ffi/libc_socket.ts";
import type { FlowIdentity } from "../src/backends/marker/flow_key.ts";
import { flowTag } from "../src/backends/marker/flow_tag.ts";
import { MarkerHooks } from "../src/backends/marker/hooks.ts";
import { MarkerProgram } from "../src/backends/marker/program.ts";
import { QdiscLedger } from "../src/backends/marker/qdisc_ledger.ts";
import { IpAddress } from "../src/net/ip.ts";
import { createVethPair, sh } from "../tests/helpers/netns.ts";

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

const QUICK = Deno.args.includes("--quick");
const SECONDS = flag("seconds", QUICK ? 3 : 10);
const ROUNDS = flag("rounds", QUICK ? 3 : 5);
const PORT = 5201;
const STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled";
const TC_ACT_UNSPEC = -1;

const OBJECTS = (() => {
  const i = Deno.args.indexOf("--objects");
  const list = i >= 0 ? Deno.args[i + 1]!.split(",").filter((x) => x !== "") : [];
  return list.map((x) => x.includes("=") ? x.split("=", 2) as [string, string] : [x, x] as [string, string]);
})();

type CaseName = string;
const CASES: CaseName[] = [
  "floor",
  "marked",
  "unmarked",
  ...OBJECTS.flatMap(([name]) => [`marked [${name}]`, `unmarked [${name}]`]),
];

interface Sample {
  nsPerSkb: number;
  skbs: number;
  gbps: number;
}

/** run_time_ns and run_cnt of a program, from bpftool (the kernel's bpf_prog_info). */
async function progStats(id: number): Promise<{ ns: number; cnt: number }> {
  const out = await sh(["bpftool", "-j", "prog", "show", "id", String(id)]);
  const info = JSON.parse(out.stdout) as { run_time_ns?: number; run_cnt?: number };
  return { ns: info.run_time_ns ?? 0, cnt: info.run_cnt ?? 0 };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function summary(xs: number[], digits = 0): string {
  const s = [...xs].sort((a, b) => a - b);
  const f = (x: number) => x.toFixed(digits);
  return `${f(median(s))} (${f(s[0]!)}–${f(s[s.length - 1]!)})`;
}

const previousStats = (await Deno.readTextFile(STATS_SYSCTL)).trim();
const cleanups: Array<() => PromiseLike<void> | void> = [];
let cleaned = false;
async function cleanUp(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch (err) {
      console.error(`cleanup: ${err}`);
    }
  }
  await Deno.writeTextFile(STATS_SYSCTL, previousStats);
}
const onSignal = () => {
  cleanUp().finally(() => Deno.exit(130));
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

const samples = new Map<CaseName, Sample[]>(CASES.map((c) => [c, []]));
const net = new Map<CaseName, number[]>(CASES.map((c) => [c, []]));
try {
  await Deno.writeTextFile(STATS_SYSCTL, "1");
  const pair = await createVethPair();
  cleanups.push(() => pair[Symbol.asyncDispose]());
  const netns = `/run/netns/${pair.nsA}`;
  // Let IPv6 settle (nodad addresses are usable at once, but the route may take a moment).
  await pair.exec(pair.nsA, ["ping", "-6", "-c", "1", "-W", "2", pair.ip6B], { check: false });

  const server = new Deno.Command("ip", {
    args: ["netns", "exec", pair.nsB, "iperf3", "-s", "-p", String(PORT)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  cleanups.push(async () => {
    try {
      server.kill("SIGTERM");
    } catch { /* already gone */ }
    await server.status;
  });
  await new Promise((r) => setTimeout(r, 500));

  const program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
  cleanups.push(() => program.close());
  const ledgerDir = await Deno.makeTempDir({ prefix: "marker_tcp" });
  cleanups.push(() => Deno.remove(ledgerDir, { recursive: true }));
  const ledger = new QdiscLedger(`${ledgerDir}/ledger.json`);
  const hooks = new MarkerHooks(program, { mode: "auto", removeQdisc: true, ledger, netns });
  cleanups.push(() => hooks.detachAll());
  const others = new Map<string, { program: MarkerProgram; hooks: MarkerHooks }>();
  for (const [name, path] of OBJECTS) {
    const p = await MarkerProgram.load({
      strategy: "label",
      matchAll: false,
      debug: false,
      objectBytes: await Deno.readFile(path),
    });
    cleanups.push(() => p.close());
    const h = new MarkerHooks(p, { mode: "auto", removeQdisc: true, ledger, netns });
    cleanups.push(() => h.detachAll());
    others.set(name, { program: p, hooks: h });
  }
  const empty = loadRawProgram(BPF_PROG_TYPE_SCHED_CLS, "empty", returnImmediateProgram(TC_ACT_UNSPEC));
  cleanups.push(() => closeFd(empty));
  const emptyId = progInfo(empty).id;
  const links = JSON.parse(
    (await pair.exec(pair.nsA, ["ip", "-j", "link", "show", pair.ifA])).stdout,
  ) as Array<
    { ifindex: number }
  >;
  const ifindex = links[0]!.ifindex;
  const tag = flowTag("label", 3, 14, 0);

  let cport = 40000;
  let hook = "";
  for (let round = 0; round < ROUNDS; round++) {
    const order = CASES.map((_, i) => CASES[(i + round) % CASES.length]!);
    const floorOfRound: Partial<Record<CaseName, number>> = {};
    for (const name of order) {
      cport++;
      const flow: FlowIdentity = {
        protocol: "tcp",
        src: { address: IpAddress.parse(pair.ip6A), port: cport },
        dst: { address: IpAddress.parse(pair.ip6B), port: PORT },
      };
      let progId: number;
      let link = -1;
      const other = others.get(name.replace(/^(un)?marked \[(.*)\]$/, "$2"));
      const p = other?.program ?? program, h = other?.hooks ?? hooks;
      if (name === "floor") {
        link = inNetworkNamespace(netns, () => linkCreate(empty, ifindex, BPF_TCX_EGRESS));
        progId = emptyId;
      } else {
        const a = await h.attach(pair.ifA);
        hook = a.kind;
        progId = a.progId;
        if (name.startsWith("marked")) p.setFlow(flow, tag);
      }
      try {
        const before = await progStats(progId);
        const res = await pair.exec(pair.nsA, [
          "iperf3",
          "-6",
          "-c",
          pair.ip6B,
          "-p",
          String(PORT),
          "--cport",
          String(cport),
          "-t",
          String(SECONDS),
          "-J",
        ]);
        const after = await progStats(progId);
        const report = JSON.parse(res.stdout) as { end: { sum_sent: { bits_per_second: number } } };
        const skbs = after.cnt - before.cnt;
        const s: Sample = {
          nsPerSkb: (after.ns - before.ns) / skbs,
          skbs,
          gbps: report.end.sum_sent.bits_per_second / 1e9,
        };
        samples.get(name)!.push(s);
        floorOfRound[name] = s.nsPerSkb;
        console.error(
          `round ${round + 1}/${ROUNDS} ${name}: ${s.nsPerSkb.toFixed(0)} ns/skb over ${skbs} skbs, ` +
            `${s.gbps.toFixed(2)} Gbit/s`,
        );
      } finally {
        if (link >= 0) closeFd(link);
        else {
          p.deleteFlow(flow);
          await h.detach(pair.ifA);
        }
      }
    }
    for (const name of CASES) net.get(name)!.push(floorOfRound[name]! - floorOfRound.floor!);
  }

  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  console.log(
    `marker on real TCP (iperf3 over veth, ${hook} egress hook), ${ROUNDS} interleaved rounds of ${SECONDS} s; ` +
      `kernel ${Deno.osRelease()}; ${new Date().toISOString()}; load average after the run ${load}`,
  );
  console.log("| case | ns per skb | net of floor | skbs per run | Gbit/s |\n|---|---:|---:|---:|---:|");
  for (const name of CASES) {
    const xs = samples.get(name)!;
    console.log(
      `| ${name} | ${summary(xs.map((s) => s.nsPerSkb))} | ${
        name === "floor" ? "" : median(net.get(name)!).toFixed(0)
      } | ${median(xs.map((s) => s.skbs))} | ${summary(xs.map((s) => s.gbps), 2)} |`,
    );
  }
} finally {
  await cleanUp();
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
}
