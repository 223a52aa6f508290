// The skops enricher against real TCP connections: iperf3 across two network namespaces, its processes
// in a cgroup of the test's own, the sock_ops program attached there; values checked against sock_diag.
import assert from "node:assert/strict";
import { hasCommand, privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { cgroupTree, createTestCgroup } from "../helpers/cgroup.ts";
import { RecordingEnrichmentSink } from "../helpers/recording_enrichment_sink.ts";
import { SkopsEnricher } from "../../src/enrichers/skops.ts";
import { Iperf3Plugin } from "../../src/plugins/iperf3.ts";
import { Iperf3Schema } from "../../src/config/schema.ts";
import { RecordingSink } from "../helpers/recording_sink.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { SockDiag, TCP_LISTEN } from "../../src/net/sock_diag.ts";
import type { EnrichmentSample } from "../../src/core/component.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tcpFlow(src: string, sport: number, dst: string, dport: number): FlowEvent {
  const s = IpAddress.parse(src), d = IpAddress.parse(dst);
  return {
    state: "start",
    protocol: "tcp",
    family: s.family,
    src: { address: s, port: sport },
    dst: { address: d, port: dport },
    experimentId: 1,
    activityId: 2,
    startTime: 1,
    application: "test",
  };
}

async function waitListening(diag: SockDiag, family: "ipv4" | "ipv6", port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await diag.dump({ family, states: 1 << TCP_LISTEN }, { srcPort: port })).length > 0) return;
    await delay(50);
  }
  throw new Error(`nothing listens on port ${port}`);
}

const tcp = (s: EnrichmentSample) => {
  assert.ok(s.info.tcpInfo, "a skops sample has tcp_info");
  return s.info.tcpInfo;
};

privilegedTest(
  "skops poll: both ends of an IPv6 iperf3 flow report, values agree with sock_diag and move, then the flow closes",
  async () => {
    if (!hasCommand("iperf3")) throw new Error("this test needs iperf3");
    await using net = await createVethPair();
    await using cg = await createTestCgroup();
    using diagA = SockDiag.open({ netns: `/run/netns/${net.nsA}` });
    using diagB = SockDiag.open({ netns: `/run/netns/${net.nsB}` });
    const sink = new RecordingEnrichmentSink();
    const enricher = new SkopsEnricher({
      config: { cgroupPath: cg.path, programPath: "", debugMode: false, strategy: "poll" },
      periodMs: 200,
    });
    try {
      await enricher.start(sink);
      const attached = (await cgroupTree()).filter((p) => p.id === enricher.programId);
      assert.deepEqual(attached.map((p) => [p.name, p.cgroup]), [["flowd_skops", cg.path]]);

      const client = tcpFlow(net.ip6A, 40011, net.ip6B, 5211);
      const server = tcpFlow(net.ip6B, 5211, net.ip6A, 40011);
      const unwatched = tcpFlow(net.ip6A, 40012, net.ip6B, 5211); // never started: must not report
      enricher.watch(client);
      enricher.watch(server);
      cg.spawn([...net.prefix(net.nsB), "iperf3", "-s", "-1", "-p", "5211", "-B", net.ip6B]);
      await waitListening(diagB, "ipv6", 5211);
      const iperf = cg.spawn([
        ...net.prefix(net.nsA),
        ...[
          "iperf3",
          "-c",
          net.ip6B,
          "-p",
          "5211",
          "--cport",
          "40011",
          "-t",
          "2",
          "-b",
          "40M",
          "-C",
          "cubic",
        ],
      ]);

      const isClient = (s: EnrichmentSample) => s.flow === client;
      // (The SYN counts as one acked byte; the first samples come before any data.)
      const first = await sink.waitFor(
        "a client sample with acked data",
        (s) => isClient(s) && tcp(s).bytesAcked > 10_000n,
      );
      const later = await sink.waitFor(
        "a later client sample with more acked bytes",
        (s) => isClient(s) && tcp(s).bytesAcked > tcp(first).bytesAcked,
        { from: sink.samples.indexOf(first) + 1 },
      );
      assert.ok(tcp(first).rtt > 0, "rtt is measured");
      // bytes_acked counts the SYN as one byte and bytes_sent counts payload only, so when everything sent
      // is acknowledged (a paced sender sampled right after an ACK: routine under TCG) sent = acked - 1.
      assert.ok(
        tcp(later).bytesSent + 1n >= tcp(later).bytesAcked,
        `sent ${tcp(later).bytesSent} acked ${tcp(later).bytesAcked}`,
      );
      assert.ok(tcp(later).segsOut > tcp(first).segsOut);
      assert.equal(first.info.cong?.algorithm, "cubic");
      // The kernel's own view of the same socket: the stable values must be identical.
      const diag = await diagA.lookup(client.src, client.dst);
      assert.ok(diag?.tcpInfo, "sock_diag finds the client socket");
      for (const k of ["sndWscale", "rcvdWscale", "sndMss", "advMss", "pMtu", "options", "state"] as const) {
        assert.equal(
          tcp(later)[k],
          diag.tcpInfo[k],
          `${k}: skops ${tcp(later)[k]}, sock_diag ${diag.tcpInfo[k]}`,
        );
      }
      assert.equal(later.info.cong?.algorithm, diag.cong?.algorithm);
      // rto comes from jiffies and HZ: what the kernel reports, between the samples taken just before and
      // just after sock_diag's look. rto moves with every ACK's RTT sample, and on a slow (emulated) machine
      // fast, so the bound is a quarter either way plus a jiffy: a wrong HZ (4x at 250 against 1000) or unit
      // still fails it.
      const next = await sink.waitFor(
        "a client sample after the sock_diag lookup",
        (s) => isClient(s),
        { from: sink.samples.length },
      );
      const [lo, hi] = [Math.min(tcp(later).rto, tcp(next).rto), Math.max(tcp(later).rto, tcp(next).rto)];
      assert.ok(
        diag.tcpInfo.rto >= lo * 0.75 - 4000 && diag.tcpInfo.rto <= hi * 1.25 + 4000,
        `rto: sock_diag ${diag.tcpInfo.rto}, skops ${tcp(later).rto} before and ${tcp(next).rto} after`,
      );

      // The receiving end: its RTT samples come from ACKs of the little it sends, its state changes at the end.
      const server1 = await sink.waitFor(
        "a server sample with received data",
        (s) => s.flow === server && tcp(s).bytesRecv > 10_000n,
      );
      assert.ok(tcp(server1).rtt > 0);

      assert.equal((await iperf.status).code, 0, "iperf3 client succeeded");
      // After the transfer the sockets close: state changes report at once, ending with CLOSE (7).
      const closed = await sink.waitFor("the client's close", (s) => isClient(s) && tcp(s).state === 7);
      assert.ok(tcp(closed).bytesAcked >= tcp(later).bytesAcked);

      // poll: RTT records of one flow are at least a period apart, so 2 s of transfer gives few samples.
      const established = sink.samples.filter((s) => isClient(s) && tcp(s).state === 1);
      assert.ok(established.length >= 3 && established.length <= 16, `${established.length} samples`);
      assert.equal(sink.samples.filter((s) => s.flow === unwatched).length, 0);
      assert.equal(enricher.stats.malformed, 0);
      assert.equal(enricher.lostRecords(), 0n, "the ring never overflowed");
    } finally {
      await enricher.stop();
    }
    const left = (await cgroupTree()).filter((p) => p.name === "flowd_skops" && p.cgroup === cg.path);
    assert.deepEqual(left, [], "stop detaches the program");
  },
);

privilegedTest(
  "skops transition: an IPv4 flow reports only its state changes, ending in CLOSE with the final counters",
  async () => {
    if (!hasCommand("iperf3")) throw new Error("this test needs iperf3");
    await using net = await createVethPair();
    await using cg = await createTestCgroup();
    using diagB = SockDiag.open({ netns: `/run/netns/${net.nsB}` });
    const sink = new RecordingEnrichmentSink();
    const enricher = new SkopsEnricher({
      config: { cgroupPath: cg.path, programPath: "", debugMode: false, strategy: "transition" },
      periodMs: 50,
    });
    try {
      await enricher.start(sink);
      const client = tcpFlow(net.ip4A, 40021, net.ip4B, 5221);
      enricher.watch(client);
      cg.spawn([...net.prefix(net.nsB), "iperf3", "-s", "-1", "-p", "5221", "-B", net.ip4B]);
      await waitListening(diagB, "ipv4", 5221);
      const iperf = cg.spawn([
        ...net.prefix(net.nsA),
        ...["iperf3", "-c", net.ip4B, "-p", "5221", "--cport", "40021", "-t", "1", "-b", "40M"],
      ]);
      assert.equal((await iperf.status).code, 0);
      const closed = await sink.waitFor("the close", (s) => tcp(s).state === 7);
      const states = sink.samples.map((s) => tcp(s).state);
      // SYN_SENT -> ESTABLISHED, then the closing states; no RTT-driven samples although a 50 ms period
      // over one second of transfer would have given about twenty.
      assert.equal(states[0], 1, `states ${states}`);
      assert.equal(states.filter((s) => s === 1).length, 1, `states ${states}`);
      assert.ok(states.length <= 6, `states ${states}`);
      assert.ok(tcp(closed).bytesAcked > 1_000_000n, `acked ${tcp(closed).bytesAcked}`);
      assert.equal(closed.flow, client);
    } finally {
      await enricher.stop();
    }
  },
);

privilegedTest(
  "skops and watcher: the debug variants and a programPath object load, attach and detach",
  async () => {
    await using cg = await createTestCgroup();
    const sink = new RecordingEnrichmentSink();
    const built = new URL("../../bpf/build/skops.bpf.o", import.meta.url).pathname;
    const variants = [
      { cgroupPath: cg.path, programPath: "", debugMode: true, strategy: "poll" as const },
      { cgroupPath: cg.path, programPath: "", debugMode: true, strategy: "transition" as const },
      { cgroupPath: cg.path, programPath: built, debugMode: false, strategy: "transition" as const },
    ];
    for (const config of variants) {
      const e = new SkopsEnricher({ config, periodMs: 100 });
      try {
        await e.start(sink);
        assert.equal(
          (await cgroupTree()).filter((p) => p.id === e.programId).length,
          1,
          JSON.stringify(config),
        );
      } finally {
        await e.stop();
      }
    }
    const watcher = new Iperf3Plugin({
      config: Iperf3Schema.parse({ cgroupPath: cg.path, debugMode: true }),
      application: "t",
    });
    try {
      await watcher.start(new RecordingSink());
      assert.equal((await cgroupTree()).filter((p) => p.id === watcher.programId).length, 1);
    } finally {
      await watcher.stop();
    }
    assert.deepEqual((await cgroupTree()).filter((p) => p.cgroup === cg.path), []);
    const missing = new SkopsEnricher({
      config: { cgroupPath: cg.path, programPath: "/nonexistent.o", debugMode: false, strategy: "poll" },
      periodMs: 100,
    });
    await assert.rejects(() => missing.start(sink), /cannot read programPath \/nonexistent\.o/);
    await missing.stop();
  },
);
