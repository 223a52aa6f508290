// The iperf3 plugin against real TCP connections: iperf3 across two network namespaces, its processes in
// a cgroup of the test's own with the watcher program attached there.
import assert from "node:assert/strict";
import { hasCommand, privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { cgroupTree, createTestCgroup } from "../helpers/cgroup.ts";
import { RecordingSink } from "../helpers/recording_sink.ts";
import { Iperf3Plugin } from "../../src/plugins/iperf3.ts";
import { Iperf3Schema } from "../../src/config/schema.ts";
import { SockDiag, TCP_LISTEN } from "../../src/net/sock_diag.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitListening(diag: SockDiag, family: "ipv4" | "ipv6", port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await diag.dump({ family, states: 1 << TCP_LISTEN }, { srcPort: port })).length > 0) return;
    await delay(50);
  }
  throw new Error(`nothing listens on port ${port}`);
}

const ids = (e: FlowEvent) => [e.experimentId, e.activityId];

/** Each end event has a start of the same connection before it, with the same ids. */
function assertPaired(events: FlowEvent[]): void {
  const open = new Map<string, FlowEvent>();
  const key = (e: FlowEvent) => `${e.src.address}:${e.src.port}>${e.dst.address}:${e.dst.port}`;
  for (const e of events) {
    if (e.state === "start") {
      assert.ok(!open.has(key(e)), `two starts for ${key(e)}`);
      open.set(key(e), e);
    } else {
      const start = open.get(key(e));
      assert.ok(start, `end without start for ${key(e)}`);
      assert.deepEqual(ids(e), ids(start), `ids of ${key(e)}`);
      open.delete(key(e));
    }
  }
  assert.equal(open.size, 0, "every start has its end");
}

privilegedTest(
  "iperf3 plugin: client connections to in-range ports start and end with matching ids, in turn; others are not reported",
  async () => {
    if (!hasCommand("iperf3")) throw new Error("this test needs iperf3");
    await using net = await createVethPair();
    await using cg = await createTestCgroup();
    using diagB = SockDiag.open({ netns: `/run/netns/${net.nsB}` });
    const sink = new RecordingSink();
    const plugin = new Iperf3Plugin({
      config: Iperf3Schema.parse({
        minDestinationPort: 5231,
        maxDestinationPort: 5231,
        cgroupPath: cg.path,
        experimentIDs: [11, 12, 13],
        activityIDs: [21, 22, 23],
      }),
      application: "flowd-go-test",
    });
    try {
      await plugin.start(sink);
      assert.deepEqual((await cgroupTree()).filter((p) => p.id === plugin.programId).map((p) => p.cgroup), [
        cg.path,
      ]);
      cg.spawn([...net.prefix(net.nsB), "iperf3", "-s", "-1", "-p", "5231", "-B", net.ip6B]);
      cg.spawn([...net.prefix(net.nsB), "iperf3", "-s", "-1", "-p", "6231", "-B", net.ip6B]);
      await waitListening(diagB, "ipv6", 5231);
      await waitListening(diagB, "ipv6", 6231);
      // Out of range first: its connections must leave no trace.
      const other = cg.spawn([...net.prefix(net.nsA), "iperf3", "-c", net.ip6B, "-p", "6231", "-t", "1"]);
      assert.equal((await other.status).code, 0);
      const inRange = cg.spawn([
        ...net.prefix(net.nsA),
        ...["iperf3", "-c", net.ip6B, "-p", "5231", "-t", "1", "--cport", "40031"],
      ]);
      assert.equal((await inRange.status).code, 0);
      // iperf3 opens a control connection and one data connection: two starts, two ends.
      await sink.waitFor(4);
      await delay(300); // nothing more must come
      const events = sink.events;
      assert.equal(events.length, 4, JSON.stringify(events));
      assert.deepEqual(events.map((e) => e.state).sort(), ["end", "end", "start", "start"]);
      for (const e of events) {
        assert.equal(e.protocol, "tcp");
        assert.equal(e.family, "ipv6");
        assert.equal(e.src.address.toString(), net.ip6A, "src is the local (client) end");
        assert.equal(e.dst.address.toString(), net.ip6B);
        assert.equal(e.dst.port, 5231);
        assert.equal(e.application, "flowd-go-test");
      }
      assert.ok(events.some((e) => e.src.port === 40031), "the data connection is among them");
      const starts = events.filter((e) => e.state === "start");
      assert.deepEqual(starts.map(ids), [[11, 21], [12, 22]], "pairs taken in turn");
      assertPaired(events);
      assert.equal(plugin.openConnections, 0);
    } finally {
      await plugin.stop();
    }
    assert.deepEqual(
      (await cgroupTree()).filter((p) => p.cgroup === cg.path),
      [],
      "stop detaches the program",
    );
  },
);

privilegedTest(
  "iperf3 plugin: a source-port range reports the accepting end of IPv4 connections, random ids still paired",
  async () => {
    if (!hasCommand("iperf3")) throw new Error("this test needs iperf3");
    await using net = await createVethPair();
    await using cg = await createTestCgroup();
    using diagB = SockDiag.open({ netns: `/run/netns/${net.nsB}` });
    const sink = new RecordingSink();
    const draws = [0.9, 0.1, 0.5, 0.7];
    const plugin = new Iperf3Plugin({
      config: Iperf3Schema.parse({
        minSourcePort: 5241,
        maxSourcePort: 5241,
        cgroupPath: cg.path,
        randomIDs: true,
        experimentIDs: [1, 2, 3, 4],
        activityIDs: [5, 6, 7, 8],
      }),
      application: "a",
      random: () => draws.shift() ?? 0,
    });
    try {
      await plugin.start(sink);
      cg.spawn([...net.prefix(net.nsB), "iperf3", "-s", "-1", "-p", "5241", "-B", net.ip4B]);
      await waitListening(diagB, "ipv4", 5241);
      const client = cg.spawn([...net.prefix(net.nsA), "iperf3", "-c", net.ip4B, "-p", "5241", "-t", "1"]);
      assert.equal((await client.status).code, 0);
      await sink.waitFor(4);
      await delay(300);
      const events = sink.events;
      assert.equal(events.length, 4, JSON.stringify(events));
      for (const e of events) {
        assert.equal(e.family, "ipv4");
        assert.equal(e.src.address.toString(), net.ip4B, "src is the local (server) end");
        assert.equal(e.src.port, 5241);
        assert.equal(e.dst.address.toString(), net.ip4A);
      }
      // Draws 0.9 and 0.1 of four pairs: indexes 3 and 0.
      assert.deepEqual(events.filter((e) => e.state === "start").map(ids), [[4, 8], [1, 5]]);
      assertPaired(events);
    } finally {
      await plugin.stop();
    }
  },
);
