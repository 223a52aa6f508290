/**
 * The marker's in-kernel counters, run by the kernel on frames built here (BPF_PROG_TEST_RUN): per flow,
 * exactly the packets and bytes it marked and the coarse times of the first and last; nothing for other
 * flows or for packets it matched but could not mark; one counter set for match-all.
 */
import assert from "node:assert/strict";
import { progTestRun, skBuffContext } from "../../ffi/libbpf.ts";
import { jiffiesAgeMs, JiffiesClock } from "../../src/bpf/jiffies.ts";
import { kernelHz } from "../../src/bpf/kernel_hz.ts";
import { inNetworkNamespace } from "../../ffi/libc_socket.ts";
import type { FlowIdentity } from "../../src/backends/marker/flow_key.ts";
import { flowTag } from "../../src/backends/marker/flow_tag.ts";
import { type MarkingStrategy, MATCH_ALL_COUNTER_SLOT } from "../../src/backends/marker/layout.ts";
import { MarkerProgram } from "../../src/backends/marker/program.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { type FrameSpec, ipv6Frame } from "../helpers/ipv6_frames.ts";

const LOCAL = "2001:db8:1::10";
const PEER = "2001:db8:2::20";
const NEXT = 0xffffffff;

function identity(spec: FrameSpec): FlowIdentity {
  return {
    protocol: spec.protocol === "udp" ? "udp" : "tcp",
    src: { address: IpAddress.parse(spec.src), port: spec.sport ?? 40000 },
    dst: { address: IpAddress.parse(spec.dst), port: spec.dport ?? 5201 },
  };
}

/** Runs the program on fresh copies of a frame, one packet per call (an inserted header grows the skb). */
function send(program: MarkerProgram, frame: Uint8Array, times: number): number {
  let bytesOut = 0;
  for (let i = 0; i < times; i++) {
    const r = progTestRun(program.programFd("ethernet"), { data: frame });
    assert.equal(r.retval, NEXT);
    bytesOut += r.data.length;
  }
  return bytesOut;
}

for (const strategy of ["label", "hopByHop", "hopByHopDestination"] as MarkingStrategy[]) {
  privilegedTest(
    `marker counters ${strategy}: packets and bytes marked per flow, exactly, with their times`,
    async () => {
      using program = await MarkerProgram.load({ strategy, matchAll: false, debug: false });
      assert.equal(program.counting, true);
      using clock = new JiffiesClock();
      const a: FrameSpec = {
        src: LOCAL,
        dst: PEER,
        protocol: "tcp",
        sport: 40001,
        dport: 443,
        payloadLength: 100,
      };
      const b: FrameSpec = {
        src: LOCAL,
        dst: PEER,
        protocol: "udp",
        sport: 40002,
        dport: 443,
        payloadLength: 300,
      };
      const other: FrameSpec = { ...a, sport: 40003 };
      program.setFlow(identity(a), flowTag(strategy, 5, 7, 0), 3);
      program.setFlow(identity(b), flowTag(strategy, 5, 8, 0), 7);
      assert.deepEqual(program.counters(3), {
        packets: 0n,
        bytes: 0n,
        firstJiffies: undefined,
        lastJiffies: undefined,
      });

      const before = clock.now();
      const bytesA = send(program, ipv6Frame(a), 5);
      const bytesB = send(program, ipv6Frame(b), 2);
      send(program, ipv6Frame(other), 4);
      const after = clock.now();

      const ca = program.counters(3)!, cb = program.counters(7)!;
      assert.equal(ca.packets, 5n);
      assert.equal(cb.packets, 2n);
      // skb->len as the packet left the program: the frame with any inserted option header.
      assert.equal(ca.bytes, BigInt(bytesA));
      assert.equal(cb.bytes, BigInt(bytesB));
      if (strategy !== "label") {
        assert.ok(bytesA > 5 * ipv6Frame(a).length, "the bytes count the inserted header");
      }
      for (const c of [ca, cb]) {
        assert.ok(
          c.firstJiffies! >= before && c.firstJiffies! <= c.lastJiffies! && c.lastJiffies! <= after,
          "times within the run",
        );
      }
      // The slots between are untouched: the unregistered flow counted nowhere.
      for (const slot of [0, 1, 2, 4, 5, 6, 8]) {
        assert.equal(program.counters(slot)!.packets, 0n, `slot ${slot}`);
      }

      // Counting goes on while read; a flow started again keeps its slot and counts on.
      program.setFlow(identity(a), flowTag(strategy, 5, 9, 0), 3);
      send(program, ipv6Frame(a), 1);
      assert.equal(program.counters(3)!.packets, 6n);
      // A slot taken over by another flow starts from zero once reset.
      assert.ok(program.deleteFlow(identity(a)));
      send(program, ipv6Frame(a), 1);
      assert.equal(program.counters(3)!.packets, 6n, "a deleted flow no longer counts");
      program.resetCounters(3);
      program.setFlow(identity(other), flowTag(strategy, 5, 7, 0), 3);
      send(program, ipv6Frame(other), 1);
      assert.equal(program.counters(3)!.packets, 1n);
    },
  );
}

privilegedTest(
  "marker counters: a packet matched but left unmarked (no room under the MTU) is not counted",
  async () => {
    await using net = await createVethPair({ mtu: 1500 });
    const ifindex = Number(
      (await net.exec(net.nsA, ["cat", `/sys/class/net/${net.ifA}/ifindex`])).stdout.trim(),
    );
    using program = await MarkerProgram.load({ strategy: "hopByHop", matchAll: false, debug: false });
    const base: FrameSpec = { src: LOCAL, dst: PEER, protocol: "tcp" };
    program.setFlow(identity(base), flowTag("hopByHop", 3, 14, 0), 11);
    const runOn = (frame: Uint8Array) =>
      inNetworkNamespace(
        `/run/netns/${net.nsA}`,
        () => progTestRun(program.programFd("ethernet"), { data: frame, ctx: skBuffContext({ ifindex }) }),
      );
    const atMtu = ipv6Frame({ ...base, payloadLength: 1500 - 60 });
    const fits = ipv6Frame({ ...base, payloadLength: 1500 - 60 - 8 });
    assert.equal(runOn(atMtu).data.length, atMtu.length, "left unmarked");
    assert.equal(program.counters(11)!.packets, 0n);
    assert.equal(runOn(fits).data.length, fits.length + 8, "marked");
    assert.deepEqual([program.counters(11)!.packets, program.counters(11)!.bytes], [
      1n,
      BigInt(fits.length + 8),
    ]);
  },
);

privilegedTest("marker counters matchAll: every marked IPv6 packet in one counter set", async () => {
  using program = await MarkerProgram.load({ strategy: "label", matchAll: true, debug: false });
  const frames = [40001, 40002, 40003].map((sport) =>
    ipv6Frame({ src: LOCAL, dst: PEER, protocol: "tcp", sport, dport: 443, payloadLength: 10 * sport % 700 })
  );
  for (const f of frames) send(program, f, 1);
  assert.equal(program.counters(MATCH_ALL_COUNTER_SLOT)!.packets, 0n, "nothing marked while inactive");
  program.setMatchAllTag(flowTag("label", 2, 3, 0));
  let bytes = 0;
  for (const f of frames) bytes += send(program, f, 3);
  const c = program.counters(MATCH_ALL_COUNTER_SLOT)!;
  assert.deepEqual([c.packets, c.bytes], [9n, BigInt(bytes)]);
});

privilegedTest(
  "jiffies clock: read through the kernel, it advances with wall time at CONFIG_HZ",
  async () => {
    using clock = new JiffiesClock();
    const { hz } = await kernelHz();
    const first = clock.now();
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const second = clock.now();
    const wallMs = performance.now() - started;
    assert.ok(first > 0n);
    const ms = jiffiesAgeMs(first, second, hz);
    // One jiffy of rounding at each end, and a coarse machine.
    assert.ok(
      Math.abs(ms - wallMs) <= 2 * 1000 / hz + 50,
      `jiffies say ${ms} ms, the wall clock ${wallMs} ms`,
    );
    assert.equal(jiffiesAgeMs(second, first, hz), 0, "a time ahead of now is no age");
  },
);
