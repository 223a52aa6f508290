/**
 * The marker attached for real, in network namespaces joined by a veth pair: real TCP connections from
 * namespace A, captured on B's end and decoded with tshark. Also: leftover filters after a crash, the
 * clean command, qdisc ownership, interfaces that vanish, devices without Ethernet and in-band 802.1Q.
 *
 * Automatic flow labels are switched off in both namespaces so that an unmarked packet carries label 0.
 */
import assert from "node:assert/strict";
import {
  BPF_PROG_TYPE_SCHED_CLS,
  BPF_TCX_EGRESS,
  linkCreate,
  loadRawProgram,
  progInfo,
  returnImmediateProgram,
  tcxProgramIds,
} from "../../ffi/libbpf.ts";
import { closeFd } from "../../ffi/libc_net.ts";
import { inNetworkNamespace } from "../../ffi/libc_socket.ts";
import { cleanMarkerHooks } from "../../src/backends/marker/clean.ts";
import { flowTag } from "../../src/backends/marker/flow_tag.ts";
import type { FlowIdentity } from "../../src/backends/marker/flow_key.ts";
import { type AttachMode, MarkerHooks } from "../../src/backends/marker/hooks.ts";
import type { MarkingStrategy } from "../../src/backends/marker/layout.ts";
import { TC_HANDLE, TC_PRIORITY } from "../../src/backends/marker/our_hooks.ts";
import { MarkerProgram } from "../../src/backends/marker/program.ts";
import { QdiscLedger } from "../../src/backends/marker/qdisc_ledger.ts";
import { setupLogging } from "../../src/core/log.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { decodeFlowLabel, SEMANTIC_MASK } from "../../src/scitags/flow_label.ts";
import { createVethPair, type VethPair } from "../helpers/netns.ts";
import { startLineChild } from "../helpers/line_child.ts";
import { startCapture } from "../helpers/packet_capture.ts";
import { hasCommand, kernelHasTcx, noTcxTest, privilegedTest, tcxTest } from "../helpers/privileged.ts";

/** Tests whose subject is the program (offsets, headers), not the hook, use TCX where the kernel has it. */
const HOOK = kernelHasTcx ? "tcx" as const : "tc" as const;
import { startPeer } from "../helpers/traffic_peer.ts";
import { flowLabelAt, hex, ipv6Frame, withFlowLabel, withOptionHeaders } from "../helpers/ipv6_frames.ts";

const EXPERIMENT = 0x0b5; // 181: asymmetric 9 bits, so a missing bit reversal shows
const ACTIVITY = 0x2d;
const MARKED_PORT = 40000;
const OTHER_PORT = 40001;
const SERVER_PORT = 5201;
const BULK = 200_000;
/** Sent alone after the bulk: one segment well below the MTU, so the option header always fits. */
const SMALL = 1000;
/** Bytes sent while the flow's entry exists. */
const FIRST_CHUNK = BULK + SMALL;
const SECOND_CHUNK = 60_000;

/** A namespace pair ready for marking tests: no automatic flow labels, ECN on, a temporary ledger. */
async function setUp(): Promise<{ net: VethPair; netns: string; ledger: QdiscLedger } & AsyncDisposable> {
  const net = await createVethPair();
  const dir = await Deno.makeTempDir({ prefix: "marker-ledger-" });
  try {
    for (const ns of [net.nsA, net.nsB]) {
      await net.exec(ns, ["sysctl", "-qw", "net.ipv6.auto_flowlabels=0"]);
      await net.exec(ns, ["sysctl", "-qw", "net.ipv4.tcp_ecn=1"]);
    }
    // Known neighbours: the first datagram of a test must not wait in a neighbour-discovery queue.
    const macA = (await net.exec(net.nsA, ["cat", `/sys/class/net/${net.ifA}/address`])).stdout.trim();
    const macB = (await net.exec(net.nsB, ["cat", `/sys/class/net/${net.ifB}/address`])).stdout.trim();
    await net.exec(net.nsA, [
      "ip",
      "neigh",
      "replace",
      net.ip6B,
      "lladdr",
      macB,
      "dev",
      net.ifA,
      "nud",
      "permanent",
    ]);
    await net.exec(net.nsB, [
      "ip",
      "neigh",
      "replace",
      net.ip6A,
      "lladdr",
      macA,
      "dev",
      net.ifB,
      "nud",
      "permanent",
    ]);
  } catch (err) {
    await net[Symbol.asyncDispose]();
    throw err;
  }
  return {
    net,
    netns: `/run/netns/${net.nsA}`,
    ledger: new QdiscLedger(`${dir}/qdiscs.json`),
    async [Symbol.asyncDispose]() {
      await net[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function tcpFlow(net: VethPair, sport: number): FlowIdentity {
  return {
    protocol: "tcp",
    src: { address: IpAddress.parse(net.ip6A), port: sport },
    dst: { address: IpAddress.parse(net.ip6B), port: SERVER_PORT },
  };
}

const FIELDS = [
  "ipv6.src",
  "ipv6.plen",
  "ipv6.nxt",
  "ipv6.flow",
  "ipv6.tclass",
  "tcp.srcport",
  "tcp.seq",
  "tcp.len",
  "tcp.flags.syn",
  "ipv6.hopopts.nxt",
  "ipv6.hopopts.len",
  "ipv6.dstopts.nxt",
  "ipv6.dstopts.len",
  "ipv6.opt.type",
  "ipv6.opt.length",
  "ipv6.opt.experimental",
  "_ws.malformed",
  "_ws.expert.message",
] as const;

type Packet = Record<(typeof FIELDS)[number], string>;

/**
 * One marked connection (sport 40000: a first chunk while its entry exists, a second after the entry is
 * deleted) and one never-marked connection (sport 40001), captured on B. Returns the decoded packets.
 */
async function tcpScenario(
  env: { net: VethPair },
  program: MarkerProgram,
  tag: number,
): Promise<Packet[]> {
  const { net } = env;
  await using server = startPeer(net.prefix(net.nsB), ["tcp-server", net.ip6B, String(SERVER_PORT)]);
  await server.expect("listening");
  // Only "ip6": libpcap's "tcp" looks at the fixed header's next header and would miss marked packets.
  await using capture = await startCapture(net.prefix(net.nsB), net.ifB, ["ip6"]);
  const marked = tcpFlow(net, MARKED_PORT);
  program.setFlow(marked, tag);

  await using client = startPeer(net.prefix(net.nsA), [
    "tcp-client",
    net.ip6A,
    String(MARKED_PORT),
    net.ip6B,
    String(SERVER_PORT),
  ]);
  await client.expect("connected");
  await client.send(`send ${BULK}`);
  // Everything of the bulk has crossed once the server has it all.
  await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= BULK);
  await client.send(`send ${SMALL}`);
  await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= FIRST_CHUNK);

  {
    await using other = startPeer(net.prefix(net.nsA), [
      "tcp-client",
      net.ip6A,
      String(OTHER_PORT),
      net.ip6B,
      String(SERVER_PORT),
    ]);
    await other.expect("connected");
    await other.send("send 50000");
    await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= 50_000);
    await other.send("close");
    await other.expect("closed");
  }

  assert.equal(program.deleteFlow(marked), true);
  await client.send(`send ${SECOND_CHUNK}`);
  await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= FIRST_CHUNK + SECOND_CHUNK);
  await client.send("close");
  await client.expect("closed");
  await server.expect("closed", 10_000, (l) => Number(l.split(" ")[1]) === FIRST_CHUNK + SECOND_CHUNK);
  return await capture.stop(FIELDS) as Packet[];
}

/** Packets A sent on the given connection. */
function fromA(net: VethPair, packets: Packet[], sport: number): Packet[] {
  return packets.filter((p) => p["ipv6.src"] === net.ip6A && Number(p["tcp.srcport"]) === sport);
}

/** Data packets of the first chunk (sent while the entry existed) and of the second (after its deletion). */
function chunks(packets: Packet[]): { first: Packet[]; second: Packet[]; syn: Packet[] } {
  const data = packets.filter((p) => Number(p["tcp.len"]) > 0);
  return {
    first: data.filter((p) => Number(p["tcp.seq"]) + Number(p["tcp.len"]) <= FIRST_CHUNK + 1),
    second: data.filter((p) => Number(p["tcp.seq"]) >= FIRST_CHUNK + 1),
    syn: packets.filter((p) => p["tcp.flags.syn"] === "1" || p["tcp.flags.syn"] === "True"),
  };
}

function assertWellFormed(packets: Packet[]): void {
  for (const p of packets) {
    assert.equal(p["_ws.malformed"], "", `tshark finds a malformed packet: ${JSON.stringify(p)}`);
  }
}

for (const mode of ["tcx", "tc"] as const) {
  (mode === "tcx" ? tcxTest : privilegedTest)(
    `marker attach ${mode}: real TCP flow labelled, entropy constant, others unmarked, off after delete`,
    async () => {
      await using env = await setUp();
      using program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
      const hooks = new MarkerHooks(program, {
        mode,
        removeQdisc: true,
        ledger: env.ledger,
        netns: env.netns,
      });
      try {
        const attachment = await hooks.attach(env.net.ifA);
        assert.equal(attachment.kind, mode);
        assert.equal(attachment.linkLayer, "ethernet");
        const tag = flowTag("label", EXPERIMENT, ACTIVITY); // fresh entropy, as at a real flow start
        const packets = await tcpScenario(env, program, tag);
        assertWellFormed(packets);

        const mine = fromA(env.net, packets, MARKED_PORT);
        const { first, second, syn } = chunks(mine);
        assert.ok(first.length >= 5, `first chunk captured (${first.length} packets)`);
        assert.equal(syn.length, 1, "the SYN was captured");
        assert.ok(second.length >= 1, `second chunk captured (${second.length} packets)`);
        for (const p of [...syn, ...first]) {
          const label = Number(p["ipv6.flow"]);
          assert.equal(
            label,
            tag,
            `label 0x${label.toString(16)} on seq ${p["tcp.seq"]}: the flow's tag, same entropy`,
          );
          const d = decodeFlowLabel(label);
          assert.deepEqual([d.experimentId, d.activityId], [EXPERIMENT, ACTIVITY]);
        }
        const semantic = (label: number) => label & SEMANTIC_MASK;
        assert.equal(semantic(tag), semantic(flowTag("label", EXPERIMENT, ACTIVITY, 0)), "collectors' mask");
        // New data carries ECT(0) (retransmissions would not): the label write must leave it in place.
        const small = first.filter((p) =>
          Number(p["tcp.seq"]) === BULK + 1 && Number(p["tcp.len"]) === SMALL
        );
        assert.ok(small.some((p) => Number(p["ipv6.tclass"]) === 0x02), "ECT(0) survives the label write");
        for (const p of first) {
          assert.ok([0x00, 0x02].includes(Number(p["ipv6.tclass"])), "traffic class untouched");
        }
        for (const p of second) {
          assert.equal(Number(p["ipv6.flow"]), 0, `after delete: unmarked (seq ${p["tcp.seq"]})`);
        }

        const others = fromA(env.net, packets, OTHER_PORT);
        assert.ok(others.length >= 5);
        for (const p of others) {
          assert.equal(Number(p["ipv6.flow"]), 0, "another flow to the same peer: unmarked");
        }
        const replies = packets.filter((p) => p["ipv6.src"] === env.net.ip6B);
        assert.ok(replies.length > 0);
        for (const p of replies) assert.equal(Number(p["ipv6.flow"]), 0, "the peer's packets: unmarked");
      } finally {
        await hooks.detachAll();
      }
    },
  );
}

/** Checks one captured packet carries the strategy's option header(s) with the tag, as the original defines them. */
noTcxTest(
  "marker attach on a kernel without TCX: attachMode tcx fails naming the fix; auto uses a clsact filter",
  async () => {
    await using env = await setUp();
    const { net, netns, ledger } = env;
    using program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
    const forced = new MarkerHooks(program, { mode: "tcx", removeQdisc: true, ledger, netns });
    await assert.rejects(
      forced.attach(net.ifA),
      /TCX egress\) failed \(kernel \S+ may lack TCX, which needs 6\.6; try attachMode tc\)/,
    );
    await forced.detachAll();
    assert.deepEqual(await egressFilters(net, net.nsA, net.ifA), [], "a refused tcx attach leaves no filter");
    const auto = new MarkerHooks(program, { mode: "auto", removeQdisc: true, ledger, netns });
    try {
      const a = await auto.attach(net.ifA);
      assert.equal(a.kind, "tc", "auto picked the clsact filter");
      assert.equal(
        (await egressFilters(net, net.nsA, net.ifA)).length,
        1,
        "our filter is on the egress hook",
      );
      program.setFlow({
        protocol: "udp",
        src: { address: IpAddress.parse(net.ip6A), port: 7000 },
        dst: { address: IpAddress.parse(net.ip6B), port: 7001 },
      }, 0x44444);
      assert.deepEqual(await udpLabels(net, [32]), [0x44444], "marked through the clsact filter");
    } finally {
      await auto.detachAll();
    }
    assert.equal(await hasClsact(net, net.nsA, net.ifA), false, "the qdisc auto created is gone");
  },
);

function assertOptionHeaders(p: Packet, strategy: Exclude<MarkingStrategy, "label">, tag: number): void {
  const what = `seq ${p["tcp.seq"]} len ${p["tcp.len"]}`;
  const tagHex = tag.toString(16).padStart(6, "0");
  const types = p["ipv6.opt.type"].split(",").map(Number);
  const lengths = p["ipv6.opt.length"].split(",").filter((x) => x !== "").map(Number);
  if (strategy === "hopByHop") {
    assert.equal(p["ipv6.nxt"], "0", `${what}: next header Hop-by-Hop`);
    assert.equal(p["ipv6.hopopts.nxt"], "6", `${what}: HBH next header TCP`);
    assert.equal(p["ipv6.hopopts.len"], "0");
    assert.equal(p["ipv6.dstopts.nxt"], "");
  } else if (strategy === "destination") {
    assert.equal(p["ipv6.nxt"], "60", `${what}: next header Destination Options`);
    assert.equal(p["ipv6.dstopts.nxt"], "6");
    assert.equal(p["ipv6.dstopts.len"], "0");
    assert.equal(p["ipv6.hopopts.nxt"], "");
  } else {
    assert.equal(p["ipv6.nxt"], "0");
    assert.equal(p["ipv6.hopopts.nxt"], "60", `${what}: HBH then Destination Options`);
    assert.equal(p["ipv6.dstopts.nxt"], "6");
  }
  const copies = strategy === "hopByHopDestination" ? 2 : 1;
  // Each header: option 0x1E of 3 bytes, then one Pad1 (type 0, no length field).
  assert.deepEqual(types, Array(copies).fill([0x1e, 0]).flat(), `${what}: option types`);
  assert.deepEqual(lengths, Array(copies).fill(3), `${what}: option length 3`);
  assert.deepEqual(p["ipv6.opt.experimental"].split(","), Array(copies).fill(tagHex), `${what}: option data`);
}

for (const strategy of ["hopByHop", "destination", "hopByHopDestination"] as const) {
  privilegedTest(
    `marker attach ${HOOK} ${strategy}: real TCP carries well-formed option headers, flows on`,
    async () => {
      await using env = await setUp();
      using program = await MarkerProgram.load({ strategy, matchAll: false, debug: false });
      const hooks = new MarkerHooks(program, {
        mode: HOOK,
        removeQdisc: true,
        ledger: env.ledger,
        netns: env.netns,
      });
      try {
        await hooks.attach(env.net.ifA);
        const tag = flowTag(strategy, 0x0123, 0x45);
        const packets = await tcpScenario(env, program, tag);
        assertWellFormed(packets);
        const grow = strategy === "hopByHopDestination" ? 16 : 8;
        const mine = fromA(env.net, packets, MARKED_PORT);
        const { first, second, syn } = chunks(mine);
        let markedBytes = 0;
        for (const p of [...syn, ...first]) {
          const carried = p["ipv6.nxt"] !== "6";
          if (carried) {
            assertOptionHeaders(p, strategy, tag);
            markedBytes += Number(p["tcp.len"]);
          } else {
            // Left unmarked only when the header would not fit: 40 + payload + header > MTU (1500).
            assert.ok(
              40 + Number(p["ipv6.plen"]) + grow > 1500,
              `unmarked packet that would fit: ${JSON.stringify(p)}`,
            );
          }
        }
        // How TCP cuts the bulk into segments varies; the lone small segment must carry the option.
        const small = first.filter((p) =>
          Number(p["tcp.seq"]) === BULK + 1 && Number(p["tcp.len"]) === SMALL
        );
        assert.ok(
          small.length > 0 && small.every((p) => p["ipv6.nxt"] !== "6"),
          "the small segment is marked",
        );
        assert.ok(small.some((p) => Number(p["ipv6.tclass"]) === 0x02), "with its ECT(0) mark intact");
        assert.ok(syn.length > 0 && syn.every((p) => p["ipv6.nxt"] !== "6"), "the SYN is marked");
        assert.ok(markedBytes >= SMALL);
        for (const p of second) assert.equal(p["ipv6.nxt"], "6", "after delete: no option header");
        for (const p of fromA(env.net, packets, OTHER_PORT)) {
          assert.equal(p["ipv6.nxt"], "6", "other flow: none");
        }
      } finally {
        await hooks.detachAll();
      }
    },
  );
}

/** The interface index of `ifname` inside a namespace. */
async function ifindexIn(net: VethPair, ns: string, ifname: string): Promise<number> {
  return Number((await net.exec(ns, ["cat", `/sys/class/net/${ifname}/ifindex`])).stdout.trim());
}

async function hasClsact(net: VethPair, ns: string, ifname: string): Promise<boolean> {
  const out = await net.exec(ns, ["tc", "-j", "qdisc", "show", "dev", ifname]);
  return (JSON.parse(out.stdout) as Array<{ kind: string }>).some((q) => q.kind === "clsact");
}

/** Egress filters as `tc -j` reports them (handles as numbers), without the per-priority headers. */
async function egressFilters(net: VethPair, ns: string, ifname: string) {
  const out = await net.exec(ns, ["tc", "-j", "filter", "show", "dev", ifname, "egress"]);
  type F = { pref: number; kind: string; options?: { handle?: string; prog?: { id: number; name: string } } };
  return (JSON.parse(out.stdout || "[]") as F[]).filter((f) => f.options).map((f) => ({
    priority: f.pref,
    kind: f.kind,
    handle: Number(f.options!.handle),
    progId: f.options!.prog?.id,
  }));
}

/** Runs a marker in a child process that attaches, registers a UDP flow, and is then killed with SIGKILL. */
async function crashedRun(
  env: { net: VethPair; netns: string; ledger: QdiscLedger },
  mode: AttachMode,
  tag: number,
) {
  const { net } = env;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("../helpers/marker_attach_child.ts", import.meta.url).pathname,
      env.netns,
      net.ifA,
      mode,
      env.ledger.path!,
      `${net.ip6A},7000,${net.ip6B},7001`,
      String(tag),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  try {
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`marker child ended early: ${await new Response(child.stderr).text()}`);
      out += value;
    }
  } finally {
    child.kill("SIGKILL");
    await reader.cancel();
    await child.status;
    await child.stderr.cancel();
  }
  const m = /^attached (\d+)/.exec(out);
  assert.ok(m, `unexpected child output: ${out}`);
  return Number(m[1]);
}

/** Sends UDP datagrams 7000 -> 7001 from A and returns the labels B saw. */
async function udpLabels(net: VethPair, sizes: number[]): Promise<number[]> {
  await using capture = await startCapture(net.prefix(net.nsB), net.ifB, [
    "ip6",
    "and",
    "udp",
    "src",
    "port",
    "7000",
  ]);
  await using sender = startPeer(net.prefix(net.nsA), [
    "udp-send",
    net.ip6A,
    "7000",
    net.ip6B,
    "7001",
    ...sizes.map(String),
  ]);
  await sender.expect("sent");
  await capture.waitFrames(sizes.length);
  const packets = await capture.stop(["ipv6.flow", "udp.srcport"], "udp.srcport == 7000");
  return packets.map((p) => Number(p["ipv6.flow"]));
}

tcxTest(
  "marker attach: a tc filter left by a killed run is replaced (tc) or removed (tcx)",
  async () => {
    await using env = await setUp();
    const { net, netns, ledger } = env;
    const ifindex = await ifindexIn(net, net.nsA, net.ifA);

    const oldId = await crashedRun(env, "tc", 0x11111);
    let filters = await egressFilters(net, net.nsA, net.ifA);
    assert.deepEqual(
      filters,
      [{ priority: TC_PRIORITY, kind: "bpf", handle: TC_HANDLE, progId: oldId }],
      "leftover",
    );
    assert.deepEqual(
      await udpLabels(net, [32]),
      [0x11111],
      "the dead run's program still marks from its own map",
    );

    {
      using program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
      // The ledger file the dead run wrote says the qdisc is ours.
      const hooks = new MarkerHooks(program, {
        mode: "tc",
        removeQdisc: true,
        ledger: new QdiscLedger(ledger.path),
        netns,
      });
      try {
        const a = await hooks.attach(net.ifA);
        assert.equal(a.replacedLeftover, true);
        assert.equal(a.ownsQdisc, true, "qdisc created by the earlier run is still ours");
        filters = await egressFilters(net, net.nsA, net.ifA);
        assert.deepEqual(filters, [{
          priority: TC_PRIORITY,
          kind: "bpf",
          handle: TC_HANDLE,
          progId: program.programId("ethernet"),
        }]);
        program.setFlow({
          protocol: "udp",
          src: { address: IpAddress.parse(net.ip6A), port: 7000 },
          dst: { address: IpAddress.parse(net.ip6B), port: 7001 },
        }, 0x22222);
        assert.deepEqual(await udpLabels(net, [32]), [0x22222], "now the new run's map decides");
      } finally {
        await hooks.detachAll();
      }
      assert.deepEqual(await egressFilters(net, net.nsA, net.ifA), [], "nothing left after a clean stop");
      assert.equal(await hasClsact(net, net.nsA, net.ifA), false, "the qdisc the marker created is gone");
    }

    await crashedRun(env, "tc", 0x33333);
    {
      using program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
      const hooks = new MarkerHooks(program, {
        mode: "tcx",
        removeQdisc: true,
        ledger: new QdiscLedger(ledger.path),
        netns,
      });
      try {
        const a = await hooks.attach(net.ifA);
        assert.equal(a.kind, "tcx");
        assert.equal(a.replacedLeftover, true, "the leftover tc filter was removed");
        assert.deepEqual(await egressFilters(net, net.nsA, net.ifA), []);
        assert.equal(await hasClsact(net, net.nsA, net.ifA), false, "and the qdisc the dead run created");
        assert.deepEqual(
          inNetworkNamespace(netns, () => tcxProgramIds(ifindex, BPF_TCX_EGRESS)),
          [program.programId("ethernet")],
        );
        assert.deepEqual(await udpLabels(net, [32]), [0], "the stale map no longer marks");
      } finally {
        await hooks.detachAll();
      }
      assert.deepEqual(inNetworkNamespace(netns, () => tcxProgramIds(ifindex, BPF_TCX_EGRESS)), []);
    }
  },
);

privilegedTest(
  "marker attach: qdiscs are deleted only when the marker created them and nobody else uses them",
  async () => {
    await using env = await setUp();
    const { net, netns, ledger } = env;
    using program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
    const run = async (removeQdisc: boolean, between?: () => Promise<void>) => {
      const hooks = new MarkerHooks(program, { mode: "tc", removeQdisc, ledger, netns });
      try {
        const a = await hooks.attach(net.ifA);
        await between?.();
        return a;
      } finally {
        await hooks.detachAll();
      }
    };

    let a = await run(true);
    assert.equal(a.ownsQdisc, true);
    assert.equal(await hasClsact(net, net.nsA, net.ifA), false, "created and removed");

    a = await run(false);
    assert.equal(a.ownsQdisc, true);
    assert.equal(await hasClsact(net, net.nsA, net.ifA), true, "removeQdisc false keeps it");
    assert.deepEqual(await egressFilters(net, net.nsA, net.ifA), [], "but never the filter");
    a = await run(true);
    assert.equal(a.ownsQdisc, true, "the record still knows the marker made it");
    assert.equal(await hasClsact(net, net.nsA, net.ifA), false, "so a later stop removes it");

    await net.exec(net.nsA, ["tc", "qdisc", "add", "dev", net.ifA, "clsact"]);
    a = await run(true);
    assert.equal(a.ownsQdisc, false);
    assert.equal(await hasClsact(net, net.nsA, net.ifA), true, "a clsact someone else made is kept");
    await net.exec(net.nsA, ["tc", "qdisc", "del", "dev", net.ifA, "clsact"]);

    a = await run(true, async () => {
      await net.exec(net.nsA, [
        "tc",
        "filter",
        "add",
        "dev",
        net.ifA,
        "ingress",
        "prio",
        "7",
        "bpf",
        "bytecode",
        "1,6 0 0 0,",
      ]);
    });
    assert.equal(a.ownsQdisc, true);
    assert.equal(await hasClsact(net, net.nsA, net.ifA), true, "kept: another filter lives on it now");
    const ingress = await net.exec(net.nsA, ["tc", "-j", "filter", "show", "dev", net.ifA, "ingress"]);
    assert.match(ingress.stdout, /"pref":7/, "and that filter is intact");
  },
);

tcxTest(
  "marker clean: removes only the marker's hooks and created qdiscs, says so, and is idempotent",
  async () => {
    await using env = await setUp();
    const { net, netns, ledger } = env;
    // A second veth pair inside A, for the TCX hooks.
    await net.exec(net.nsA, ["ip", "link", "add", "vc", "type", "veth", "peer", "name", "vd"]);
    await net.exec(net.nsA, ["ip", "link", "set", "vc", "up"]);
    await net.exec(net.nsA, ["ip", "link", "set", "vd", "up"]);
    const vcIndex = await ifindexIn(net, net.nsA, "vc");
    // Other people's hooks: a clsact with a classic-BPF filter on vethA, a TCX program on vc.
    await net.exec(net.nsA, ["tc", "qdisc", "add", "dev", net.ifA, "clsact"]);
    await net.exec(net.nsA, [
      "tc",
      "filter",
      "add",
      "dev",
      net.ifA,
      "egress",
      "prio",
      "7",
      "handle",
      "7",
      "bpf",
      "bytecode",
      "1,6 0 0 0,",
    ]);
    const foreignProg = loadRawProgram(BPF_PROG_TYPE_SCHED_CLS, "foreign_next", returnImmediateProgram(-1));
    const foreignId = progInfo(foreignProg).id;
    const foreignLink = inNetworkNamespace(netns, () => linkCreate(foreignProg, vcIndex, BPF_TCX_EGRESS));
    try {
      using program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
      // The marker's hooks, as a crashed run would leave them (tc) or a running one holds them (tcx).
      const tc = new MarkerHooks(program, { mode: "tc", removeQdisc: true, ledger, netns });
      await tc.attach(net.ifA);
      await tc.attach("lo");
      const tcx = new MarkerHooks(program, { mode: "tcx", removeQdisc: true, ledger, netns });
      await tcx.attach("vc");
      const ours = program.programId("ethernet");
      assert.deepEqual(inNetworkNamespace(netns, () => tcxProgramIds(vcIndex, BPF_TCX_EGRESS)), [
        ours,
        foreignId,
      ]);

      const onlyLo = await cleanMarkerHooks({ interfaces: ["lo"], netns, ledger });
      assert.deepEqual(onlyLo.failures, []);
      assert.deepEqual(onlyLo.removed.map((r) => `${r.interface} ${r.removed}`), ["lo tcFilter", "lo qdisc"]);
      assert.equal(await hasClsact(net, net.nsA, "lo"), false);
      assert.equal((await egressFilters(net, net.nsA, net.ifA)).length, 2, "vethA not touched yet");

      const all = await cleanMarkerHooks({ netns, ledger });
      assert.deepEqual(all.failures, []);
      assert.deepEqual(
        all.removed.map((r) => `${r.interface} ${r.removed}`).sort(),
        [`${net.ifA} tcFilter`, "vc tcxLink"].sort(),
        "vethA's clsact was not created by the marker, so it stays",
      );
      assert.match(all.removed.find((r) => r.removed === "tcFilter")!.detail, /handle 0x5c17a6 priority 92/);
      assert.deepEqual(await egressFilters(net, net.nsA, net.ifA), [{
        priority: 7,
        kind: "bpf",
        handle: 7,
        progId: undefined,
      }]);
      assert.equal(await hasClsact(net, net.nsA, net.ifA), true);
      assert.deepEqual(inNetworkNamespace(netns, () => tcxProgramIds(vcIndex, BPF_TCX_EGRESS)), [foreignId]);

      const again = await cleanMarkerHooks({ netns, ledger });
      assert.deepEqual(again, { removed: [], failures: [] }, "nothing left to do");
      const unknown = await cleanMarkerHooks({ interfaces: ["nosuch0"], netns, ledger });
      assert.deepEqual(unknown.failures, [{ interface: "nosuch0", error: "there is no such interface" }]);

      // Stopping the hooks afterwards is harmless.
      await tc.detachAll();
      await tcx.detachAll();
      assert.deepEqual(await egressFilters(net, net.nsA, net.ifA), [{
        priority: 7,
        kind: "bpf",
        handle: 7,
        progId: undefined,
      }]);
    } finally {
      closeFd(foreignLink);
      closeFd(foreignProg);
    }
  },
);

for (const mode of ["tcx", "tc"] as const) {
  (mode === "tcx" ? tcxTest : privilegedTest)(
    `marker attach ${mode}: an interface that vanishes is noticed, and hooked again when it returns`,
    async () => {
      await using env = await setUp();
      const { net, netns, ledger } = env;
      const addPair = async () => {
        await net.exec(net.nsA, ["ip", "link", "add", "vx", "type", "veth", "peer", "name", "vy"]);
        await net.exec(net.nsA, ["ip", "link", "set", "vx", "up"]);
      };
      await addPair();
      const logged: string[] = [];
      setupLogging({ level: "warn", withTime: false, write: (line) => logged.push(line) });
      using program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
      const hooks = new MarkerHooks(program, { mode, removeQdisc: true, ledger, netns });
      try {
        const first = await hooks.attach("vx");
        await hooks.attach(net.ifA);
        await net.exec(net.nsA, ["ip", "link", "del", "vx"]);
        await hooks.check();
        assert.deepEqual(hooks.attachments().map((a) => a.ifname), [net.ifA], "vx is no longer listed");
        assert.equal(
          logged.filter((l) => /interface disappeared.*interface=vx/.test(l)).length,
          1,
          logged.join("\n"),
        );
        await hooks.check();
        assert.equal(logged.filter((l) => /interface disappeared/.test(l)).length, 1, "said once");
        assert.deepEqual(ledger.records(netns).map((r) => r.ifname), mode === "tc" ? [net.ifA] : []);

        await addPair();
        await hooks.check();
        const back = hooks.attachments().find((a) => a.ifname === "vx");
        assert.ok(back, "attached again");
        assert.notEqual(back.ifindex, first.ifindex, "to the new interface");
        if (mode === "tc") {
          assert.equal((await egressFilters(net, net.nsA, "vx"))[0]?.progId, program.programId("ethernet"));
        } else {
          const ids = inNetworkNamespace(netns, () => tcxProgramIds(back.ifindex, BPF_TCX_EGRESS));
          assert.deepEqual(ids, [program.programId("ethernet")]);
        }
        await net.exec(net.nsA, ["ip", "link", "del", "vx"]);
      } finally {
        await hooks.detachAll();
      }
      assert.equal(await hasClsact(net, net.nsA, net.ifA), false);
    },
  );
}

/** A root test that also needs python3 (raw packet socket, tun reader); skipped loudly without it. */
function pythonTest(name: string, fn: () => Promise<void>): void {
  if (!hasCommand("python3")) {
    console.error(`SKIPPED (needs python3): ${name}`);
    Deno.test({ name: `${name} [SKIPPED: needs python3]`, ignore: true, fn });
    return;
  }
  privilegedTest(name, fn);
}

/** Reads a tun device from Python and prints every packet it is handed as one hex line. */
const TUN_READER = `
import fcntl, os, struct
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"tun0", 0x0001 | 0x1000))  # TUNSETIFF, IFF_TUN|IFF_NO_PI
print("ready", flush=True)
while True:
    print(os.read(fd, 65536).hex(), flush=True)
`;

/** Sends raw Ethernet frames (hex arguments) out of an interface through a packet socket bound to 802.1Q. */
const RAW_SENDER = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0x8100))
for frame in sys.argv[2:]:
    s.send(bytes.fromhex(frame))
print("sent", flush=True)
`;

function fromHex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}

pythonTest(
  `marker attach ${HOOK} on a tun device (no Ethernet header): label and option header at the right offsets`,
  async () => {
    await using env = await setUp();
    const { net, netns, ledger } = env;
    await using reader = startLineChild(
      ["ip", "netns", "exec", net.nsA, "python3", "-c", TUN_READER],
      "tun reader",
    );
    const fromPort7000 = (p: Uint8Array) => {
      const ports = (o: number) => (p[o]! << 8 | p[o + 1]!) === 7000;
      return p[0]! >> 4 === 6 && ((p[6] === 17 && ports(40)) || (p[6] === 0 && ports(48)));
    };
    /** The next UDP packet from port 7000 that the tun device was handed. */
    const nextUdp = async () =>
      fromHex(await reader.expect("", 10_000, (line) => fromPort7000(fromHex(line))));
    await reader.expect("ready");
    await net.exec(net.nsA, ["ip", "addr", "add", "fd00:99::1/64", "dev", "tun0", "nodad"]);
    await net.exec(net.nsA, ["ip", "link", "set", "tun0", "up"]);
    const flow: FlowIdentity = {
      protocol: "udp",
      src: { address: IpAddress.parse("fd00:99::1"), port: 7000 },
      dst: { address: IpAddress.parse("fd00:99::2"), port: 7001 },
    };
    const send = async () => {
      await using s = startPeer(net.prefix(net.nsA), [
        "udp-send",
        "fd00:99::1",
        "7000",
        "fd00:99::2",
        "7001",
        "32",
      ]);
      await s.expect("sent");
    };

    for (const strategy of ["label", "hopByHop"] as const) {
      using program = await MarkerProgram.load({ strategy, matchAll: false, debug: false });
      const hooks = new MarkerHooks(program, { mode: HOOK, removeQdisc: true, ledger, netns });
      try {
        const a = await hooks.attach("tun0");
        assert.equal(a.linkLayer, "none");
        const tag = flowTag(strategy, 0x0123, 0x2d, 0x40101);
        program.setFlow(flow, tag);
        await send();
        const p = await nextUdp();
        if (strategy === "label") {
          assert.equal(p[6], 17);
          assert.equal(flowLabelAt(p, 0), tag, "label written in the IPv6 header at offset 0");
        } else {
          assert.equal(p[6], 0, "next header: Hop-by-Hop");
          assert.equal((p[4]! << 8) | p[5]!, 8 + 8 + 32, "payload length grew by 8");
          assert.equal(hex(p.slice(40, 48)), hex(Uint8Array.from([17, 0, 0x1e, 3, 0x01, 0x23, 0x2d, 0])));
          assert.equal((p[50]! << 8) | p[51]!, 7001, "UDP header right after the option header");
        }
      } finally {
        await hooks.detachAll();
      }
    }
  },
);

pythonTest(
  `marker attach ${HOOK}, in-band 802.1Q frames: label in place; option header inserted, tag kept on the wire`,
  async () => {
    await using env = await setUp();
    const { net, netns, ledger } = env;
    const spec = {
      vlanTci: 0x2064, // priority 1, VLAN 100
      src: net.ip6A,
      dst: net.ip6B,
      protocol: "udp" as const,
      sport: 7000,
      dport: 7001,
      trafficClass: 0x2e,
      payloadLength: 32,
    };
    const frame = ipv6Frame(spec);
    const flow: FlowIdentity = {
      protocol: "udp",
      src: { address: IpAddress.parse(net.ip6A), port: 7000 },
      dst: { address: IpAddress.parse(net.ip6B), port: 7001 },
    };
    for (const strategy of ["label", "hopByHop"] as const) {
      using program = await MarkerProgram.load({ strategy, matchAll: false, debug: false });
      const hooks = new MarkerHooks(program, { mode: HOOK, removeQdisc: true, ledger, netns });
      try {
        await hooks.attach(net.ifA);
        const tag = flowTag(strategy, 0x0123, 0x2d, 0x80002);
        program.setFlow(flow, tag);
        await using capture = await startCapture(net.prefix(net.nsB), net.ifB, []);
        await net.exec(net.nsA, ["python3", "-c", RAW_SENDER, net.ifA, hex(frame)]);
        await capture.waitFrames(1);
        const seen = (await capture.frames()).filter((f) => f[12] === 0x81 && f[13] === 0x00);
        assert.equal(seen.length, 1, "the tagged frame crossed the veth");
        const expected = strategy === "label"
          ? withFlowLabel(frame, 18, tag)
          : withOptionHeaders(frame, 18, "hopByHop", tag, false);
        assert.equal(
          hex(seen[0]!),
          hex(expected),
          `${strategy}: exact frame on the wire, 802.1Q tag included`,
        );
      } finally {
        await hooks.detachAll();
      }
    }
  },
);
