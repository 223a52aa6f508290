/**
 * Per-packet cost of the marker program, run by the kernel through BPF_PROG_TEST_RUN, next to the figures
 * of the original (anchors-perf.md §1): the same 74-byte frame (Ethernet + IPv6 + TCP, no payload,
 * 2001:db8::2:40000 -> 2001:db8:0:1::1:5201), the same `repeat 1000000` method, 7 runs per case.
 *
 *   deno run --allow-all bench/marker_prog.ts [--runs 7] [--repeat 1000000] [--batch 100000]
 *
 * Inserting option headers changes the packet, and a repeated test run reuses one skb, so only its first
 * iteration would insert. Those cases are timed like the anchor's C harness: repeat=1 on a fresh copy of the
 * frame per call, 7 batches of `--batch` calls, median of the kernel-reported durations (10 ns resolution,
 * timer overhead included, so compare with the empty program measured the same way).
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
import { MarkerProgram } from "../src/backends/marker/program.ts";
import { IpAddress } from "../src/net/ip.ts";
import { ipv4Frame, ipv6Frame } from "../tests/helpers/ipv6_frames.ts";

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}

const RUNS = flag("runs", 7);
const REPEAT = flag("repeat", 1_000_000);
const BATCH = flag("batch", 100_000);

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
const FLOW: FlowIdentity = {
  protocol: "tcp",
  src: { address: IpAddress.parse(SPEC.src), port: SPEC.sport },
  dst: { address: IpAddress.parse(SPEC.dst), port: SPEC.dport },
};

function summary(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `${s[Math.floor(s.length / 2)]} (${s[0]}–${s[s.length - 1]})`;
}

/** Median (min–max) over RUNS of the kernel's average ns per run with `repeat`. */
function timeRepeat(fd: number, frame: Uint8Array, check?: (out: Uint8Array) => void): string {
  const samples: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const result = progTestRun(fd, { data: frame, repeat: REPEAT });
    check?.(result.data);
    samples.push(result.durationNs);
  }
  return summary(samples);
}

/** Median (min–max) over RUNS batches of the median kernel-reported ns of single runs on fresh frames. */
function timeSingle(fd: number, frame: Uint8Array, check?: (out: Uint8Array) => void): string {
  const medians: number[] = [];
  const durations = new Float64Array(BATCH);
  for (let r = 0; r < RUNS; r++) {
    for (let i = 0; i < BATCH; i++) {
      const result = progTestRun(fd, { data: frame, dataOutSize: frame.length + 64 });
      durations[i] = result.durationNs;
      if (i === 0) check?.(result.data);
    }
    const sorted = durations.slice().sort();
    medians.push(sorted[Math.floor(BATCH / 2)]!);
  }
  return summary(medians);
}

function fill(program: MarkerProgram, entries: number, tag: number): void {
  // Filler flows first, the measured one last, so that LRU eviction cannot take it.
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

function expectLabel(tag: number) {
  return (out: Uint8Array) => {
    const label = ((out[15]! & 0x0f) << 16) | (out[16]! << 8) | out[17]!;
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

const rows: Array<[string, string, string]> = [];
const empty = loadRawProgram(BPF_PROG_TYPE_SCHED_CLS, "empty", returnImmediateProgram(0));
try {
  rows.push(["empty tc program (floor)", timeRepeat(empty, HIT), "repeat"]);

  {
    using label = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
    const fd = label.programFd("ethernet");
    const tag = 0x12345;
    fill(label, 1, tag);
    rows.push(["label, hit, 1 entry", timeRepeat(fd, HIT, expectLabel(tag)), "repeat"]);
    rows.push(["label, miss, 1 entry", timeRepeat(fd, MISS, expectUnchanged(MISS)), "repeat"]);
    rows.push(["label, IPv4 frame", timeRepeat(fd, IPV4, expectUnchanged(IPV4)), "repeat"]);
    fill(label, 100_000, tag);
    rows.push(["label, hit, 100 000 entries", timeRepeat(fd, HIT, expectLabel(tag)), "repeat"]);
    rows.push(["label, miss, 100 000 entries", timeRepeat(fd, MISS, expectUnchanged(MISS)), "repeat"]);
  }
  {
    using all = await MarkerProgram.load({ strategy: "label", matchAll: true, debug: false });
    all.setMatchAllTag(flowTag("label", 3, 14, 0));
    const check = (out: Uint8Array) => {
      if (((out[16]! << 8) | out[17]!) === 0) throw new Error("not marked");
    };
    rows.push([
      "label matchAll, hit (per-flow entropy hash)",
      timeRepeat(all.programFd("ethernet"), HIT, check),
      "repeat",
    ]);
  }

  rows.push(["empty tc program (floor)", timeSingle(empty, HIT), "repeat=1"]);
  {
    using label = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
    fill(label, 1, 0x12345);
    rows.push([
      "label, hit, 1 entry",
      timeSingle(label.programFd("ethernet"), HIT, expectLabel(0x12345)),
      "repeat=1",
    ]);
  }
  for (const strategy of ["hopByHop", "destination", "hopByHopDestination"] as MarkingStrategy[]) {
    using program = await MarkerProgram.load({ strategy, matchAll: false, debug: false });
    const fd = program.programFd("ethernet");
    const grow = strategy === "hopByHopDestination" ? 16 : 8;
    fill(program, 1, 0x012345);
    rows.push([`${strategy}, hit, 1 entry`, timeSingle(fd, HIT, expectOptions(grow)), "repeat=1"]);
    rows.push([`${strategy}, miss, 1 entry`, timeRepeat(fd, MISS, expectUnchanged(MISS)), "repeat"]);
    if (strategy === "hopByHop") {
      fill(program, 100_000, 0x012345);
      rows.push([`${strategy}, hit, 100 000 entries`, timeSingle(fd, HIT, expectOptions(grow)), "repeat=1"]);
    }
  }
  {
    using all = await MarkerProgram.load({ strategy: "hopByHop", matchAll: true, debug: false });
    all.setMatchAllTag(0x012345);
    rows.push([
      "hopByHop matchAll, hit",
      timeSingle(all.programFd("ethernet"), HIT, expectOptions(8)),
      "repeat=1",
    ]);
  }
} finally {
  closeFd(empty);
}

console.log(`marker per-packet cost, ns (median (min–max) of ${RUNS} runs); kernel ${Deno.osRelease()}`);
console.log(`repeat: bpf_prog_test_run_opts repeat=${REPEAT}, kernel's average per run`);
console.log(
  `repeat=1: ${BATCH} single runs on a fresh frame per batch, median of the kernel-reported durations`,
);
console.log("| case | ns | method |\n|---|---:|---|");
for (const [name, value, method] of rows) console.log(`| ${name} | ${value} | ${method} |`);
