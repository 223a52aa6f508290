/**
 * Per-packet cost of the marker program, run by the kernel through BPF_PROG_TEST_RUN, next to the figures
 * of the original (anchors-perf.md §1): the same 74-byte frame (Ethernet + IPv6 + TCP, no payload,
 * 2001:db8::2:40000 -> 2001:db8:0:1::1:5201), the same `repeat 1000000` method.
 *
 *   deno run --allow-all bench/marker_prog.ts [--runs 7] [--repeat 1000000] [--batch 100000]
 *     [--only label] [--objects name=path.o,name2=path2.o] [--no-check]
 *
 * Cases are **interleaved**: each of `--runs` rounds takes one sample of every case in turn (the empty
 * program included), so a drift of the machine's speed spreads over all cases alike. A case's figure is the
 * median (min–max) of its samples, and its net figure the median over rounds of (sample − the empty program's
 * sample of the same round and method).
 *
 * Inserting option headers changes the packet, and a repeated test run reuses one skb, so only its first
 * iteration would insert. Those cases are timed like the anchor's C harness: repeat=1 on a fresh copy of the
 * frame per call, `--batch` calls per sample, median of the kernel-reported durations (10 ns resolution,
 * timer overhead included, so compare with the empty program measured the same way).
 *
 * `--only label` keeps the label cases measured with `repeat` (a quick run). `--objects` adds the label hit
 * and miss (1 entry) of other builds of bpf/marker.bpf.c (same maps and key), measured in the same rounds:
 * this is how variants of the program are compared. `--no-check` skips the output checks of those objects
 * (for variants that deliberately do not write, to time the parts of the program).
 *
 * Needs root (loading programs). Nothing is attached anywhere.
 */
import {
  BPF_PROG_TYPE_SCHED_CLS,
  loadRawProgram,
  progTestRun,
  returnImmediateProgram,
} from "../ffi/libbpf.ts";
import { closeFd } from "../ffi/libc_net.ts";
import type { FlowIdentity } from "../src/backends/marker/flow_key.ts";
import { flowTag } from "../src/backends/marker/flow_tag.ts";
import type { MarkingStrategy } from "../src/backends/marker/layout.ts";
import { MarkerProgram, type MarkerProgramOptions } from "../src/backends/marker/program.ts";
import { IpAddress } from "../src/net/ip.ts";
import { ipv4Frame, ipv6Frame } from "../tests/helpers/ipv6_frames.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1]! : fallback;
}

const RUNS = Number(flag("runs", "7"));
const REPEAT = Number(flag("repeat", "1000000"));
const BATCH = Number(flag("batch", "100000"));
const ONLY_LABEL = flag("only", "") === "label";
const NO_CHECK = Deno.args.includes("--no-check");
const OBJECTS = flag("objects", "").split(",").filter((s) => s !== "").map((s) => {
  const [name, path] = s.includes("=") ? s.split("=", 2) : [s, s];
  return { name: name!, path: path! };
});

const SPEC = {
  src: "2001:db8::2",
  dst: "2001:db8:0:1::1",
  protocol: "tcp" as const,
  sport: 40000,
  dport: 5201,
};
const HIT = ipv6Frame(SPEC);
const MISS = ipv6Frame({ ...SPEC, sport: 40001 });
const IPV4 = ipv4Frame({ payloadLength: 0 });
const HIT_VLAN = ipv6Frame({ ...SPEC, vlanTci: 0x0064 });
const FLOW: FlowIdentity = {
  protocol: "tcp",
  src: { address: IpAddress.parse(SPEC.src), port: SPEC.sport },
  dst: { address: IpAddress.parse(SPEC.dst), port: SPEC.dport },
};

type Method = "repeat" | "repeat=1";

interface Case {
  name: string;
  method: Method;
  sample: () => number;
  samples: number[];
}

function median(samples: number[]): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function summary(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `${median(s)} (${s[0]}–${s[s.length - 1]})`;
}

/** The kernel's average ns per run with `repeat`; the output is checked on every sample. */
function repeatSampler(fd: number, frame: Uint8Array, check?: (out: Uint8Array) => void): () => number {
  return () => {
    const result = progTestRun(fd, { data: frame, repeat: REPEAT });
    check?.(result.data);
    return result.durationNs;
  };
}

/** The median kernel-reported ns of BATCH single runs, each on a fresh copy of the frame. */
function singleSampler(fd: number, frame: Uint8Array, check?: (out: Uint8Array) => void): () => number {
  const durations = new Float64Array(BATCH);
  return () => {
    for (let i = 0; i < BATCH; i++) {
      const result = progTestRun(fd, { data: frame, dataOutSize: frame.length + 64 });
      durations[i] = result.durationNs;
      if (i === 0) check?.(result.data);
    }
    return durations.slice().sort()[Math.floor(BATCH / 2)]!;
  };
}

function fill(program: MarkerProgram, entries: number, tag: number): void {
  // Filler flows first, the measured one last.
  for (let i = 1; i < entries; i++) {
    program.setFlow({
      protocol: "tcp",
      src: {
        address: IpAddress.parse(`2001:db8:ff::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`),
        port: 1,
      },
      dst: FLOW.dst,
    }, tag);
  }
  program.setFlow(FLOW, tag);
}

function expectLabel(tag: number, offset = 14) {
  return (out: Uint8Array) => {
    const label = ((out[offset + 1]! & 0x0f) << 16) | (out[offset + 2]! << 8) | out[offset + 3]!;
    if (label !== tag) throw new Error(`expected label 0x${tag.toString(16)}, got 0x${label.toString(16)}`);
  };
}

function expectUnchanged(frame: Uint8Array) {
  return (out: Uint8Array) => {
    if (out.length !== frame.length || out.some((b, i) => b !== frame[i])) {
      throw new Error("frame was changed");
    }
  };
}

function expectOptions(grow: number) {
  return (out: Uint8Array) => {
    if (out.length !== HIT.length + grow || out[20] === 6) throw new Error("no option header inserted");
  };
}

const cases: Case[] = [];
const programs: MarkerProgram[] = [];
function add(name: string, method: Method, sample: () => number): void {
  cases.push({ name, method, sample, samples: [] });
}
async function load(
  opts: Partial<MarkerProgramOptions> & { strategy: MarkingStrategy },
): Promise<MarkerProgram> {
  const program = await MarkerProgram.load({ matchAll: false, debug: false, ...opts });
  programs.push(program);
  return program;
}

const TAG = 0x12345;
const empty = loadRawProgram(BPF_PROG_TYPE_SCHED_CLS, "empty", returnImmediateProgram(0));
try {
  add("empty tc program (floor)", "repeat", repeatSampler(empty, HIT));

  const label = await load({ strategy: "label" });
  fill(label, 1, TAG);
  const labelFd = label.programFd("ethernet");
  add("label, hit, 1 entry", "repeat", repeatSampler(labelFd, HIT, expectLabel(TAG)));
  add("label, miss, 1 entry", "repeat", repeatSampler(labelFd, MISS, expectUnchanged(MISS)));
  add("label, IPv4 frame", "repeat", repeatSampler(labelFd, IPV4, expectUnchanged(IPV4)));
  add("label, hit, 802.1Q", "repeat", repeatSampler(labelFd, HIT_VLAN, expectLabel(TAG, 18)));

  const big = await load({ strategy: "label" });
  fill(big, 100_000, TAG);
  const bigFd = big.programFd("ethernet");
  add("label, hit, 100 000 entries", "repeat", repeatSampler(bigFd, HIT, expectLabel(TAG)));
  add("label, miss, 100 000 entries", "repeat", repeatSampler(bigFd, MISS, expectUnchanged(MISS)));

  const all = await load({ strategy: "label", matchAll: true });
  all.setMatchAllTag(flowTag("label", 3, 14, 0));
  add(
    "label matchAll, hit (per-flow entropy hash)",
    "repeat",
    repeatSampler(all.programFd("ethernet"), HIT, (out) => {
      if (((out[16]! << 8) | out[17]!) === 0) throw new Error("not marked");
    }),
  );

  for (const o of OBJECTS) {
    const p = await load({ strategy: "label", objectBytes: Deno.readFileSync(o.path) });
    fill(p, 1, TAG);
    const fd = p.programFd("ethernet");
    const check = <T>(c: T) => NO_CHECK ? undefined : c;
    add(`[${o.name}] label, hit, 1 entry`, "repeat", repeatSampler(fd, HIT, check(expectLabel(TAG))));
    add(`[${o.name}] label, miss, 1 entry`, "repeat", repeatSampler(fd, MISS, check(expectUnchanged(MISS))));
    add(`[${o.name}] label, hit, 802.1Q`, "repeat", repeatSampler(fd, HIT_VLAN, check(expectLabel(TAG, 18))));
  }

  if (!ONLY_LABEL) {
    add("empty tc program (floor)", "repeat=1", singleSampler(empty, HIT));
    add("label, hit, 1 entry", "repeat=1", singleSampler(labelFd, HIT, expectLabel(TAG)));
    for (const strategy of ["hopByHop", "destination", "hopByHopDestination"] as MarkingStrategy[]) {
      const program = await load({ strategy });
      const fd = program.programFd("ethernet");
      const grow = strategy === "hopByHopDestination" ? 16 : 8;
      fill(program, 1, 0x012345);
      add(`${strategy}, hit, 1 entry`, "repeat=1", singleSampler(fd, HIT, expectOptions(grow)));
      add(`${strategy}, miss, 1 entry`, "repeat", repeatSampler(fd, MISS, expectUnchanged(MISS)));
    }
    const hbhAll = await load({ strategy: "hopByHop", matchAll: true });
    hbhAll.setMatchAllTag(0x012345);
    add(
      "hopByHop matchAll, hit",
      "repeat=1",
      singleSampler(hbhAll.programFd("ethernet"), HIT, expectOptions(8)),
    );
  }

  for (let r = 0; r < RUNS; r++) {
    for (const c of cases) c.samples.push(c.sample());
  }
} finally {
  for (const p of programs) p.close();
  closeFd(empty);
}

const floors = new Map<Method, Case>();
for (const c of cases) if (c.name.startsWith("empty") && !floors.has(c.method)) floors.set(c.method, c);

const load1 = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
console.log(
  `marker per-packet cost, ns, median (min–max) of ${RUNS} interleaved rounds; kernel ${Deno.osRelease()}; ` +
    `${new Date().toISOString()}; load average after the run ${load1}`,
);
console.log(`repeat: bpf_prog_test_run_opts repeat=${REPEAT}, kernel's average per run`);
console.log(
  `repeat=1: ${BATCH} single runs on a fresh frame per sample, median of the kernel-reported durations`,
);
console.log("net: median over rounds of (case − empty program of the same round and method)");
console.log("| case | ns | net | method |\n|---|---:|---:|---|");
for (const c of cases) {
  const floor = floors.get(c.method)!;
  const net = c === floor ? "" : String(median(c.samples.map((s, i) => s - floor.samples[i]!)));
  console.log(`| ${c.name} | ${summary(c.samples)} | ${net} | ${c.method} |`);
}
