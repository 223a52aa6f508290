// The connections plugin against real TCP: echo servers in namespace B run in a cgroup of the test's own
// (the watcher program is attached there), clients in namespace A outside it; the plugin's sweeps read
// namespace B through sock_diag.
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair, type VethPair } from "../helpers/netns.ts";
import { createTestCgroup } from "../helpers/cgroup.ts";
import { RecordingSink } from "../helpers/recording_sink.ts";
import { startTcpPeer, tcpPeerArgv } from "../helpers/tcp_peer.ts";
import { ConnectionsPlugin } from "../../src/plugins/connections.ts";
import { connectionAge } from "../../src/plugins/connection_sweep.ts";
import { ConnectionsSchema } from "../../src/config/schema.ts";
import { SockDiag, TCP_LISTEN } from "../../src/net/sock_diag.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { nowMicros } from "../../src/core/time.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Documentation addresses: outside the default internalNetworks, unlike the pair's own fd00::/10.213.
const A4 = "192.0.2.1", B4 = "192.0.2.2";
const A6 = "2001:db8:c0::1", A6b = "2001:db8:c0::100", B6 = "2001:db8:c0::2";

async function addPublicAddresses(net: VethPair): Promise<void> {
  for (const [ns, ifc, addrs] of [[net.nsA, net.ifA, [A4, A6, A6b]], [net.nsB, net.ifB, [B4, B6]]] as const) {
    for (const a of addrs) {
      await net.exec(ns, ["ip", "addr", "add", `${a}/${a.includes(":") ? 64 : 24}`, "dev", ifc, "nodad"]);
    }
  }
}

async function waitListening(diag: SockDiag, port: number, family: "ipv4" | "ipv6" = "ipv6"): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await diag.dump({ family, states: 1 << TCP_LISTEN }, { srcPort: port })).length > 0) return;
    await delay(25);
  }
  throw new Error(`nothing listens on port ${port}`);
}

const summary = (e: FlowEvent) =>
  `${e.state} ${e.src.address}:${e.src.port} ${e.dst.address} ${e.experimentId}/${e.activityId}`;

privilegedTest(
  "connections plugin: inbound connections to a rule's port or from a rule's prefix start and end with its tags, IPv4 and IPv6; others and internal peers get nothing",
  async () => {
    await using net = await createVethPair();
    await addPublicAddresses(net);
    await using cg = await createTestCgroup();
    using diag = SockDiag.open({ netns: `/run/netns/${net.nsB}` });
    const sink = new RecordingSink();
    const plugin = new ConnectionsPlugin({
      config: ConnectionsSchema.parse({
        rules: [
          { localPorts: [1094], direction: "inbound", experiment: "atlas", activity: "default" },
          { remotePrefixes: [`${A6b}/128`], experiment: 3, activity: 4 },
          { remotePorts: [7000], direction: "outbound", experiment: 7, activity: 8 },
        ],
        cgroupPath: cg.path,
      }),
      application: "flowd-go-test",
      sockDiag: () => SockDiag.open({ netns: `/run/netns/${net.nsB}` }),
    });
    try {
      await plugin.start(sink);
      cg.spawn(tcpPeerArgv(net.prefix(net.nsB), ["server", "::", "1094", "::", "6000", "::", "7000"]));
      await waitListening(diag, 1094);
      await waitListening(diag, 6000);
      await waitListening(diag, 7000);
      await using client = startTcpPeer(net.prefix(net.nsA), ["client"]);
      const cases: [string, string, string, number][] = [
        ["v4", A4, B4, 1094],
        ["v6", A6, B6, 1094],
        ["otherPort", A6, B6, 6000],
        ["byPrefix", A6b, B6, 6000],
        ["internal4", net.ip4A, net.ip4B, 1094],
        ["internal6", net.ip6A, net.ip6B, 1094],
      ];
      const ports = new Map<string, number>();
      for (const [id, src, dst, port] of cases) {
        await client.send(`open ${id} ${src} ${dst} ${port}`);
        ports.set(id, Number((await client.expect(`open ${id}`)).split(" ")[2]));
        await client.send(`send ${id} 100`);
        await client.expect(`echoed ${id}`);
      }
      await sink.waitFor(3);
      for (const [id] of cases) {
        await client.send(`close ${id}`);
        await client.expect(`closed ${id}`);
      }
      await sink.waitFor(6);
      // Outbound: a client inside the cgroup connects out, once (its server end, port 7000, is inbound).
      const out = cg.spawn(tcpPeerArgv(net.prefix(net.nsA), ["churn", B6, "7000", "5", "0.3", "0.2"]));
      assert.equal((await cg.wait(out)).code, 0);
      await sink.waitFor(8);
      await delay(300); // nothing more may come
      // (When the kernel picks A6b as its source, the server's end also matches the prefix rule: 3/4.)
      const outbound = sink.events.slice(6).filter((e) => e.experimentId === 7).map(summary);
      // The source is either of A's addresses on that link (the kernel picks).
      assert.match(outbound[0]!, new RegExp(`^start (${A6}|${A6b}):\\d+ ${B6} 7/8$`));
      assert.deepEqual(outbound, [outbound[0], outbound[0]!.replace("start", "end")]);
      assert.equal(sink.events[6]!.dst.port, 7000);
      sink.events.splice(6);
      const want = [
        `start ${B4}:1094 ${A4} 2/1`,
        `start ${B6}:1094 ${A6} 2/1`,
        `start ${B6}:6000 ${A6b} 3/4`,
        `end ${B4}:1094 ${A4} 2/1`,
        `end ${B6}:1094 ${A6} 2/1`,
        `end ${B6}:6000 ${A6b} 3/4`,
      ];
      assert.deepEqual(sink.events.map(summary), want);
      // The peer's port is the client's: each event is the connection it says.
      assert.deepEqual(sink.events.slice(0, 3).map((e) => e.dst.port), [
        ports.get("v4"),
        ports.get("v6"),
        ports.get("byPrefix"),
      ]);
      assert.deepEqual(sink.events.map((e) => e.family), ["ipv4", "ipv6", "ipv6", "ipv4", "ipv6", "ipv6"]);
      assert.equal(plugin.stats.sweptStarts, 0);
      assert.equal(plugin.openConnections, 0);
      assert.equal(plugin.lost(), 0n);
    } finally {
      await plugin.stop();
    }
  },
);

privilegedTest(
  "connections plugin: connections open before the start appear at start with their age; the repair sweep ends them once closed",
  async () => {
    await using net = await createVethPair();
    await addPublicAddresses(net);
    await using cg = await createTestCgroup();
    using diag = SockDiag.open({ netns: `/run/netns/${net.nsB}` });
    // A dual-stack listener (IPv4 arrives IPv4-mapped) and an IPv4-only one: both halves of the dumps.
    cg.spawn(tcpPeerArgv(net.prefix(net.nsB), ["server", "::", "2880", "0.0.0.0", "2881"]));
    await waitListening(diag, 2880);
    await waitListening(diag, 2881, "ipv4");
    await using client = startTcpPeer(net.prefix(net.nsA), ["client"]);
    const old = [["old4", A4, B4, 2880], ["old6", A6, B6, 2880], ["only4", A4, B4, 2881], [
      "internal",
      net.ip4A,
      net.ip4B,
      2880,
    ]] as const;
    const beforeOpen = nowMicros();
    for (const [id, src, dst, port] of old) {
      await client.send(`open ${id} ${src} ${dst} ${port}`);
      await client.expect(`open ${id}`);
    }
    const heldMs = 1500;
    await delay(heldMs);
    const sink = new RecordingSink();
    const plugin = new ConnectionsPlugin({
      config: ConnectionsSchema.parse({
        rules: [{ localPorts: ["2000-3000"], direction: "inbound", experiment: 5, activity: 6 }],
        cgroupPath: cg.path,
        sweepInterval: 0.3,
      }),
      application: "flowd-go-test",
      sockDiag: () => SockDiag.open({ netns: `/run/netns/${net.nsB}` }),
    });
    try {
      await plugin.start(sink);
      // Reported during start(), before it returns.
      assert.deepEqual(sink.events.map(summary).sort(), [
        `start ${B4}:2880 ${A4} 5/6`,
        `start ${B4}:2881 ${A4} 5/6`,
        `start ${B6}:2880 ${A6} 5/6`,
      ]);
      for (const e of sink.events) {
        const age = nowMicros() - e.startTime!;
        // Idle since the handshake: the age is the time held, to tcp_info's millisecond (jiffy) grain.
        // Never older than it is (the millisecond grain and a jiffy aside).
        assert.ok(
          e.startTime! >= beforeOpen - 20_000,
          `start ${e.startTime} is ${beforeOpen - e.startTime!} µs before the connections were opened`,
        );
        assert.ok(age >= (heldMs - 50) * 1000, `age ${age} µs, held ${heldMs} ms`);
      }
      assert.equal(plugin.stats.sweptStarts, 3);
      // The same age by an exact lookup, as a repair sweep takes it for a start the watcher missed.
      const v4 = sink.events.find((e) => e.family === "ipv4" && e.src.port === 2880)!;
      const looked = await connectionAge(diag, v4.src, v4.dst);
      assert.ok(looked !== undefined && looked >= heldMs - 50, `age by lookup ${looked} ms`);
      await delay(700); // sweeps that find nothing new add nothing
      assert.equal(sink.events.length, 3);
      // The program never saw these handshakes, so their closes come from the sweep.
      await client.send("close old6");
      await client.expect("closed old6");
      await sink.waitFor(4, 3000);
      assert.equal(summary(sink.events[3]!), `end ${B6}:2880 ${A6} 5/6`);
      assert.equal(
        sink.events[3]!.startTime,
        sink.events.find((e) => e.src.address.family === "ipv6")!.startTime,
      );
      assert.equal(plugin.stats.sweptEnds, 1);
      // A new connection meanwhile is the watcher's, start and end.
      await client.send(`open new4 ${A4} ${B4} 2880`);
      await client.expect("open new4");
      await sink.waitFor(5, 3000);
      await client.send("close new4");
      await client.expect("closed new4");
      await sink.waitFor(6, 3000);
      assert.deepEqual(sink.events.slice(4).map((e) => e.state), ["start", "end"]);
      assert.equal(plugin.stats.sweptEnds, 1);
      assert.equal(plugin.openConnections, 2); // old4, only4
    } finally {
      await plugin.stop();
    }
  },
);
