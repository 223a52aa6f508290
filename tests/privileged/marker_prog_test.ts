/**
 * The compiled marker run by the kernel on frames built here (BPF_PROG_TEST_RUN), output bytes checked
 * exactly against what the specification says: every strategy, TCP and UDP, with and without an 802.1Q
 * tag, matching and non-matching flows, IPv4, the MTU edge, traffic class, match-all, L3 devices.
 */
import { mkfifo } from "../../ffi/libc.ts";
import { MAX_BPF_OBJECT_BYTES } from "../../src/bpf/object_bytes.ts";
import assert from "node:assert/strict";
import { inNetworkNamespace } from "../../ffi/libc_socket.ts";
import { LibbpfError, progTestRun, skBuffContext, type TestRunResult } from "../../ffi/libbpf.ts";
import { MarkerProgram } from "../../src/backends/marker/program.ts";
import type { FlowIdentity } from "../../src/backends/marker/flow_key.ts";
import { flowTag } from "../../src/backends/marker/flow_tag.ts";
import type { LinkLayer, MarkingStrategy } from "../../src/backends/marker/layout.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { decodeFlowLabel, ENTROPY_MASK, SEMANTIC_MASK } from "../../src/scitags/flow_label.ts";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair, sh } from "../helpers/netns.ts";
import {
  flowLabelAt,
  type FrameSpec,
  hex,
  ipv4Frame,
  ipv6Frame,
  l3Offset,
  trafficClassAt,
  withFlowLabel,
  withOptionHeaders,
} from "../helpers/ipv6_frames.ts";

/** TC_ACT_UNSPEC / TCX_NEXT as the unsigned 32-bit retval: the marker never decides a packet's fate. */
const NEXT = 0xffffffff;
const LOCAL = "2001:db8:1::10";
const PEER = "2001:db8:2::20";
const EXPERIMENT = 0x1a5; // 9 bits, asymmetric, so a missing bit reversal shows
const ACTIVITY = 0x2d;

const STRATEGIES: MarkingStrategy[] = ["label", "hopByHop", "destination", "hopByHopDestination"];

function identity(spec: FrameSpec): FlowIdentity {
  return {
    protocol: spec.protocol === "udp" ? "udp" : "tcp",
    src: { address: IpAddress.parse(spec.src), port: spec.sport ?? 40000 },
    dst: { address: IpAddress.parse(spec.dst), port: spec.dport ?? 5201 },
  };
}

function run(program: MarkerProgram, frame: Uint8Array, linkLayer: LinkLayer = "ethernet"): TestRunResult {
  const result = progTestRun(program.programFd(linkLayer), { data: frame });
  assert.equal(result.retval, NEXT, "the marker must always return TC_ACT_UNSPEC");
  return result;
}

function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(hex(actual), hex(expected), what);
}

/** What the strategy must make of a frame whose flow is registered with `tag`. */
function expectedMarked(
  strategy: MarkingStrategy,
  frame: Uint8Array,
  spec: FrameSpec,
  tag: number,
): Uint8Array {
  const l3 = l3Offset(spec);
  if (strategy === "label") return withFlowLabel(frame, l3, tag);
  return withOptionHeaders(frame, l3, strategy, tag, spec.vlanTci !== undefined);
}

async function loaded(strategy: MarkingStrategy, matchAll = false, debug = false): Promise<MarkerProgram> {
  return await MarkerProgram.load({ strategy, matchAll, debug });
}

for (const strategy of STRATEGIES) {
  privilegedTest(
    `marker prog ${strategy}: TCP/UDP, with/without 802.1Q, matching and other flows`,
    async () => {
      using program = await loaded(strategy);
      for (const protocol of ["tcp", "udp"] as const) {
        for (const vlanTci of [undefined, 0xa064]) {
          const spec: FrameSpec = {
            src: LOCAL,
            dst: PEER,
            protocol,
            sport: 40000,
            dport: 5201,
            vlanTci,
            trafficClass: 0xb9, // DSCP EF (46) with ECT(1): must survive the label write
            flowLabel: 0x12345,
            payloadLength: 100,
          };
          const what = `${strategy} ${protocol} ${vlanTci === undefined ? "untagged" : "802.1Q"}`;
          const frame = ipv6Frame(spec);
          const tag = flowTag(strategy, EXPERIMENT, ACTIVITY, 0xfffff);
          program.setFlow(identity(spec), tag);

          const out = run(program, frame).data;
          assertBytes(out, expectedMarked(strategy, frame, spec, tag), `${what}: marked frame`);
          if (strategy === "label") {
            const l3 = l3Offset(spec);
            assert.equal(trafficClassAt(out, l3), 0xb9, `${what}: traffic class kept`);
            const decoded = decodeFlowLabel(flowLabelAt(out, l3));
            assert.deepEqual([decoded.experimentId, decoded.activityId], [EXPERIMENT, ACTIVITY]);
          }

          // Flows that differ in any one field of the identity are not marked.
          const others: Array<[string, FrameSpec]> = [
            ["source port", { ...spec, sport: 40001 }],
            ["destination port", { ...spec, dport: 5202 }],
            ["source address", { ...spec, src: "2001:db8:1::11" }],
            ["destination address", { ...spec, dst: "2001:db8:2::21" }],
            ["protocol", { ...spec, protocol: protocol === "tcp" ? "udp" : "tcp" }],
          ];
          for (const [field, other] of others) {
            const otherFrame = ipv6Frame(other);
            assertBytes(
              run(program, otherFrame).data,
              otherFrame,
              `${what}: flow with another ${field} untouched`,
            );
          }

          // After the entry is removed the flow is no longer marked.
          assert.equal(program.deleteFlow(identity(spec)), true);
          assertBytes(run(program, frame).data, frame, `${what}: unmarked after delete`);
          assert.equal(program.deleteFlow(identity(spec)), false, "deleting twice reports absence");
        }
      }
    },
  );
}

privilegedTest(
  "marker prog: IPv4 frames, ICMPv6, truncated and already-extended IPv6 are left byte for byte",
  async () => {
    for (const strategy of STRATEGIES) {
      using program = await loaded(strategy);
      // Register the flows the frames would belong to, so that only the packet kind can spare them.
      const tcp: FrameSpec = { src: LOCAL, dst: PEER, protocol: "tcp", payloadLength: 10 };
      program.setFlow(identity(tcp), flowTag(strategy, 1, 2, 0));
      for (const vlanTci of [undefined, 7]) {
        const v4 = ipv4Frame({ vlanTci });
        assertBytes(run(program, v4).data, v4, `${strategy}: IPv4 untouched`);
      }
      const icmp = ipv6Frame({ ...tcp, protocol: "icmpv6" });
      assertBytes(run(program, icmp).data, icmp, `${strategy}: ICMPv6 untouched without matchAll`);
      const withHbh = ipv6Frame({ ...tcp, protocol: 0, payloadLength: 30 });
      assertBytes(
        run(program, withHbh).data,
        withHbh,
        `${strategy}: packet with extension headers untouched`,
      );
      // (Tagged, because the test run itself refuses an untagged IPv6 frame shorter than the fixed header.)
      const truncated = ipv6Frame({ ...tcp, vlanTci: 9 }).slice(0, 18 + 30);
      assertBytes(run(program, truncated).data, truncated, `${strategy}: truncated IPv6 header untouched`);
      const noPorts = ipv6Frame(tcp).slice(0, 14 + 40 + 2);
      assertBytes(run(program, noPorts).data, noPorts, `${strategy}: ports cut off, untouched`);
    }
  },
);

privilegedTest(
  "marker prog label: the per-CPU lookup cache never answers from before a map change (mapped generation)",
  async () => {
    using program = await loaded("label");
    assert.equal(program.generationMapped, true, "the generation is bumped through the shared page");
    const spec: FrameSpec = {
      src: LOCAL,
      dst: PEER,
      protocol: "tcp",
      sport: 40100,
      dport: 5201,
      flowLabel: 0x11111,
    };
    const frame = ipv6Frame(spec), l3 = l3Offset(spec), flow = identity(spec);
    // Each run fills this CPU's slot; each map change must make the next run look the map up again.
    for (let round = 0; round < 200; round++) {
      assert.equal(flowLabelAt(run(program, frame).data, l3), 0x11111, `round ${round}: not registered yet`);
      const first = flowTag("label", EXPERIMENT, ACTIVITY, round);
      program.setFlow(flow, first);
      assert.equal(flowLabelAt(run(program, frame).data, l3), first, `round ${round}: registered`);
      assert.equal(flowLabelAt(run(program, frame).data, l3), first, `round ${round}: cached`);
      const second = flowTag("label", EXPERIMENT, ACTIVITY + 1, round);
      program.setFlow(flow, second);
      assert.equal(flowLabelAt(run(program, frame).data, l3), second, `round ${round}: tag changed`);
      assert.ok(program.deleteFlow(flow));
    }
    assert.equal(flowLabelAt(run(program, frame).data, l3), 0x11111, "deleted: unmarked again");
  },
);

privilegedTest("marker prog label: traffic class (DSCP and ECN) preserved for every value", async () => {
  using program = await loaded("label");
  const spec: FrameSpec = { src: LOCAL, dst: PEER, protocol: "udp", sport: 1234, dport: 4321 };
  for (const label of [0x00000, 0xfffff, 0xa5a5a]) {
    program.setFlow(identity(spec), label);
    for (let tc = 0; tc < 256; tc += 17) {
      const frame = ipv6Frame({ ...spec, trafficClass: tc, flowLabel: label ^ 0xfffff });
      const out = run(program, frame).data;
      assertBytes(
        out,
        withFlowLabel(frame, 14, label),
        `tc 0x${tc.toString(16)} label 0x${label.toString(16)}`,
      );
      assert.equal(trafficClassAt(out, 14), tc);
      assert.equal(flowLabelAt(out, 14), label);
    }
  }
});

privilegedTest(
  "marker prog matchAll: one tag for every IPv6 packet, per-flow entropy in label mode",
  async () => {
    using label = await loaded("label", true);
    const tcp: FrameSpec = { src: LOCAL, dst: PEER, protocol: "tcp", trafficClass: 0x03, payloadLength: 20 };
    const frame = ipv6Frame(tcp);
    assertBytes(run(label, frame).data, frame, "no match-all tag yet: untouched");

    const tag = flowTag("label", EXPERIMENT, ACTIVITY, 0);
    label.setMatchAllTag(tag);
    assert.equal(label.matchAllTag(), tag);
    const entropies = new Set<number>();
    for (let port = 40000; port < 40032; port++) {
      for (const protocol of ["tcp", "udp", "icmpv6"] as const) {
        const spec = { ...tcp, protocol, sport: port };
        const f = ipv6Frame(spec);
        const out = run(label, f).data;
        const got = flowLabelAt(out, 14);
        assert.equal(
          got & SEMANTIC_MASK,
          tag & SEMANTIC_MASK,
          `${protocol} ${port}: experiment and activity`,
        );
        assertBytes(out, withFlowLabel(f, 14, got), `${protocol} ${port}: only the label changed`);
        assert.equal(trafficClassAt(out, 14), 0x03);
        const again = flowLabelAt(run(label, f).data, 14);
        assert.equal(again, got, "the same flow always gets the same entropy");
        entropies.add(got & ENTROPY_MASK);
      }
    }
    assert.ok(
      entropies.size >= 8,
      `flows spread over entropy values (${entropies.size} distinct of 96 flows)`,
    );
    const v4 = ipv4Frame();
    assertBytes(run(label, v4).data, v4, "IPv4 untouched in matchAll mode");
    label.setMatchAllTag(undefined);
    assertBytes(run(label, frame).data, frame, "match-all tag cleared: untouched");

    using hbh = await loaded("hopByHop", true);
    const ehTag = flowTag("hopByHop", 0x0123, 0x45);
    hbh.setMatchAllTag(ehTag);
    for (const protocol of ["tcp", "udp"] as const) {
      const f = ipv6Frame({ ...tcp, protocol });
      assertBytes(run(hbh, f).data, withOptionHeaders(f, 14, "hopByHop", ehTag), `${protocol}: HBH inserted`);
    }
    const icmp = ipv6Frame({ ...tcp, protocol: "icmpv6" });
    assertBytes(run(hbh, icmp).data, icmp, "option headers never go in front of ICMPv6");
  },
);

privilegedTest("marker prog: the MTU bounds option insertion; labels need no room", async () => {
  await using net = await createVethPair({ mtu: 1500 });
  const ifindex = Number(
    (await net.exec(net.nsA, ["cat", `/sys/class/net/${net.ifA}/ifindex`])).stdout.trim(),
  );
  const netns = `/run/netns/${net.nsA}`;
  // bpf_check_mtu looks the context's ifindex up in the caller's namespace, hence the switch.
  const runOn = (program: MarkerProgram, frame: Uint8Array) =>
    inNetworkNamespace(
      netns,
      () => progTestRun(program.programFd("ethernet"), { data: frame, ctx: skBuffContext({ ifindex }) }),
    );
  for (const strategy of STRATEGIES) {
    using program = await loaded(strategy);
    const grow = strategy === "label" ? 0 : strategy === "hopByHopDestination" ? 16 : 8;
    const base: FrameSpec = { src: LOCAL, dst: PEER, protocol: "tcp" };
    program.setFlow(identity(base), flowTag(strategy, 3, 14, 0x40102));
    // L3 length = 40 + 20 + payload. At the MTU exactly, and at the largest size that still leaves room.
    const atMtu = ipv6Frame({ ...base, payloadLength: 1500 - 60 });
    const fits = ipv6Frame({ ...base, payloadLength: 1500 - 60 - grow });
    const oneOver = ipv6Frame({ ...base, payloadLength: 1500 - 60 - grow + 1 });
    const tag = flowTag(strategy, 3, 14, 0x40102);
    const mark = (f: Uint8Array) => expectedMarked(strategy, f, base, tag);
    if (strategy === "label") {
      assertBytes(runOn(program, atMtu).data, mark(atMtu), "label: a packet at the MTU is marked");
      continue;
    }
    const r1 = runOn(program, atMtu);
    assert.equal(r1.retval, NEXT);
    assertBytes(r1.data, atMtu, `${strategy}: a packet at the MTU is left unmarked, not dropped`);
    assertBytes(runOn(program, oneOver).data, oneOver, `${strategy}: one byte too big, unmarked`);
    const r2 = runOn(program, fits);
    assertBytes(r2.data, mark(fits), `${strategy}: a packet that fits after insertion is marked`);
    assert.equal(r2.data.length - 14, 1500, "and then it is exactly at the MTU");
  }
});

privilegedTest("marker prog: devices without an Ethernet header (link layer none)", async () => {
  // The test run always parses an Ethernet header, so the source address carries 0x86dd where an
  // EtherType would be (bytes 12-13 of the packet): the skb then has protocol IPv6, data at the IPv6 header.
  const src = "fd00:0:86dd::10";
  const spec: FrameSpec = { src, dst: PEER, protocol: "udp", sport: 7000, dport: 7001, noEthernet: true };
  const packet = ipv6Frame({ ...spec, trafficClass: 0x2e, payloadLength: 64 });
  using label = await loaded("label");
  const tag = flowTag("label", 5, 14, 0x80101);
  label.setFlow(identity(spec), tag);
  assertBytes(run(label, packet, "none").data, withFlowLabel(packet, 0, tag), "L3 label written at offset 0");
  // The Ethernet instance reads the same bytes as a frame and must not find the flow.
  assertBytes(run(label, packet, "ethernet").data, packet, "Ethernet instance leaves it alone");
  assert.notEqual(label.programId("none"), label.programId("ethernet"), "one instance per link layer");

  // Here the kernel believes in a 14-byte link header, the program in none, so the inserted room lands
  // elsewhere than the program expects: it must notice, take the room out again and leave the packet as it was.
  using hbh = await loaded("hopByHop");
  hbh.setFlow(identity(spec), flowTag("hopByHop", 5, 14));
  assertBytes(run(hbh, packet, "none").data, packet, "misplaced room taken back, packet unchanged");
});

privilegedTest("marker prog: the debug object marks the same way and traces", async () => {
  // bpf_printk output is the bpf_trace_printk trace event. The top-level buffer is shared with every other
  // traced program and reader on the machine, so the test records the event in a trace instance of its own
  // and looks for a label no other run writes.
  const tracefs = "/sys/kernel/tracing";
  const mounted = (await Deno.readTextFile("/proc/self/mounts")).split("\n").some((l) =>
    l.split(" ")[1] === tracefs
  );
  if (!mounted) await sh(["mount", "-t", "tracefs", "nodev", tracefs]);
  const instance = `${tracefs}/instances/flowd-go-test-${Deno.pid}`;
  try {
    await Deno.mkdir(instance);
    try {
      await Deno.writeTextFile(`${instance}/events/bpf_trace/bpf_trace_printk/enable`, "1");
      using program = await loaded("label", false, true);
      const spec: FrameSpec = { src: LOCAL, dst: PEER, protocol: "tcp", sport: 42424, dport: 443 };
      const frame = ipv6Frame(spec);
      const tag = 0x10000 + Math.floor(Math.random() * 0xeffff);
      program.setFlow(identity(spec), tag);
      assertBytes(run(program, frame).data, withFlowLabel(frame, 14, tag), "debug object marks");
      const trace = await Deno.readTextFile(`${instance}/trace`);
      assert.match(
        trace,
        new RegExp(`flowd_marker: labelled 0x${tag.toString(16)}\\b`),
        "bpf_printk trace of the marking",
      );
    } finally {
      await Deno.remove(instance); // rmdir of an instance removes its buffers
    }
  } finally {
    if (!mounted) await sh(["umount", tracefs]);
  }
});

privilegedTest("marker prog: programPath loads a user object; failures carry libbpf's message", async () => {
  const tmp = await Deno.makeTempFile({ suffix: ".bpf.o" });
  try {
    await Deno.copyFile(new URL("../../bpf/build/marker.bpf.o", import.meta.url), tmp);
    using program = await MarkerProgram.load({
      strategy: "label",
      matchAll: false,
      debug: false,
      programPath: tmp,
    });
    const spec: FrameSpec = { src: LOCAL, dst: PEER, protocol: "tcp" };
    program.setFlow(identity(spec), 0x11111);
    const frame = ipv6Frame(spec);
    assertBytes(run(program, frame).data, withFlowLabel(frame, 14, 0x11111), "custom object marks");

    await Deno.writeFile(tmp, new TextEncoder().encode("not an ELF object"));
    await assert.rejects(
      MarkerProgram.load({ strategy: "label", matchAll: false, debug: false, programPath: tmp }),
      (err: unknown) => {
        assert.ok(err instanceof LibbpfError, String(err));
        assert.equal(err.fn, "bpf_object__open_mem");
        assert.ok(err.errno > 0);
        assert.match(err.message, /bpf_object__open_mem .*errno/);
        assert.ok(err.libbpfLog.length > 0, "libbpf's own warning is attached");
        return true;
      },
    );
    await assert.rejects(
      MarkerProgram.load({ strategy: "label", matchAll: false, debug: false, programPath: `${tmp}.missing` }),
      /cannot read programPath .*missing/,
    );
    // Never read forever or block: a device, a FIFO, a file beyond the size bound are refused by what they are.
    const fifo = `${tmp}.fifo`;
    mkfifo(fifo, 0o600);
    const huge = `${tmp}.huge`;
    await Deno.writeFile(huge, new Uint8Array(0));
    await Deno.truncate(huge, MAX_BPF_OBJECT_BYTES + 1);
    try {
      for (
        const [path, why] of [
          [
            "/dev/zero",
            /cannot read programPath \/dev\/zero: it is a character device, expected a regular file/,
          ],
          [fifo, /it is a named pipe \(FIFO\), expected a regular file/],
          [huge, /it is 16777217 bytes, more than the limit of 16 MiB/],
        ] as const
      ) {
        await assert.rejects(
          MarkerProgram.load({ strategy: "label", matchAll: false, debug: false, programPath: path }),
          why,
        );
      }
    } finally {
      await Deno.remove(fifo);
      await Deno.remove(huge);
    }

    // An object the verifier rejects (bpf/test_verifier_reject.bpf.c): the error ends with the verifier's reason.
    const rejected = new URL("../../bpf/build/test_verifier_reject.bpf.o", import.meta.url).pathname;
    await assert.rejects(
      MarkerProgram.load({ strategy: "label", matchAll: false, debug: false, programPath: rejected }),
      (err: unknown) => {
        assert.ok(err instanceof Error && err.cause instanceof LibbpfError, String(err));
        assert.equal(err.cause.fn, "bpf_object__load");
        assert.match(
          err.message,
          /loading the marker \(.*\) for ethernet interfaces failed: bpf_object__load/,
        );
        assert.match(err.message, /invalid access to packet/, "the verifier's reason is in the message");
        return true;
      },
    );
  } finally {
    await Deno.remove(tmp);
  }
});
