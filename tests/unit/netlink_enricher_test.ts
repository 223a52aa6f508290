// The netlink enricher on real loopback TCP connections of this process (sock_diag needs no privileges
// for the caller's own sockets).
import assert from "node:assert/strict";
import { DUMP_MIN_FLOWS, NetlinkEnricher } from "../../src/enrichers/netlink.ts";
import { NetlinkEnricherSchema } from "../../src/config/schema.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { type Endpoint, IpAddress } from "../../src/net/ip.ts";
import { RecordingEnrichmentSink } from "../helpers/recording_enrichment_sink.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Pair extends AsyncDisposable {
  client: Deno.TcpConn;
  server: Deno.TcpConn;
  flow: FlowEvent;
  /** Sends n bytes client → server and waits until they are read. */
  push(n: number): Promise<void>;
}

function endpoint(a: Deno.Addr): Endpoint {
  const n = a as Deno.NetAddr;
  return { address: IpAddress.parse(n.hostname), port: n.port };
}

async function pair(listener: Deno.TcpListener, host: string): Promise<Pair> {
  const client = await Deno.connect({ hostname: host, port: (listener.addr as Deno.NetAddr).port });
  const server = await listener.accept();
  const src = endpoint(client.localAddr), dst = endpoint(client.remoteAddr);
  const flow: FlowEvent = {
    state: "start",
    protocol: "tcp",
    family: src.address.family,
    src,
    dst,
    experimentId: 3,
    activityId: 4,
    startTime: 1,
    application: "t",
  };
  return {
    client,
    server,
    flow,
    async push(n) {
      const sink = (async () => {
        const buf = new Uint8Array(65536);
        let got = 0;
        while (got < n) got += (await server.read(buf)) ?? n;
      })();
      await client.write(new Uint8Array(n));
      await sink;
    },
    [Symbol.asyncDispose]() {
      client.close();
      server.close();
      return Promise.resolve();
    },
  };
}

function enricher(overrides: Record<string, unknown> = {}, periodMs = 40): NetlinkEnricher {
  return new NetlinkEnricher({ config: NetlinkEnricherSchema.parse(overrides), periodMs });
}

Deno.test("netlink enricher: samples every period with live tcp_info, per 5-tuple, until forgotten", async () => {
  using listener = Deno.listen({ hostname: "::1", port: 0 });
  await using a = await pair(listener, "::1");
  await using b = await pair(listener, "::1"); // same addresses and server port: only the client ports differ
  const sink = new RecordingEnrichmentSink();
  const e = enricher();
  await e.start(sink);
  try {
    e.watch(a.flow);
    e.watch(b.flow);
    await a.push(100_000);
    const first = await sink.waitFor(
      "a sample of a with its bytes",
      (s) => s.flow === a.flow && (s.info.tcpInfo?.bytesAcked ?? 0n) >= 100_000n,
    );
    assert.ok(first.info.tcpInfo!.rtt > 0, "rtt is measured");
    assert.equal(first.info.socket?.id.srcPort, a.flow.src.port, "the sample is of a's socket");
    assert.ok(first.info.cong?.algorithm, "congestion control name");
    assert.ok(first.info.memInfo && first.info.skMemInfo, "memory information");
    const fromIndex = sink.samples.indexOf(first) + 1;
    await a.push(300_000);
    const later = await sink.waitFor(
      "a later sample of a with more bytes",
      (s) => s.flow === a.flow && s.info.tcpInfo!.bytesAcked >= first.info.tcpInfo!.bytesAcked + 300_000n,
      {
        from: fromIndex,
      },
    );
    assert.ok(later.time > first.time);
    // b moved no data: its samples are its own, not a's (the original's port-less hash mixed them up).
    const bSamples = sink.samples.filter((s) => s.flow === b.flow);
    assert.ok(bSamples.length > 0);
    assert.ok(bSamples.every((s) => s.info.socket?.id.srcPort === b.flow.src.port));
    assert.ok(bSamples.every((s) => s.info.tcpInfo!.bytesAcked < 1000n));

    e.forget(a.flow);
    await delay(60); // a round in flight may still finish
    const count = sink.samples.filter((s) => s.flow === a.flow).length;
    await delay(200);
    assert.equal(sink.samples.filter((s) => s.flow === a.flow).length, count, "no samples after forget");
    assert.ok(sink.samples.filter((s) => s.flow === b.flow).length > bSamples.length, "b still sampled");
    // Samples come about once per period per flow, not faster.
    assert.ok(e.stats.rounds <= 40, `${e.stats.rounds} rounds`);
  } finally {
    await e.stop();
  }
});

Deno.test("netlink enricher: the state mask, the extension mask and the protocol are honoured", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using p = await pair(listener, "127.0.0.1");
  const noEstablished = enricher({ state: 0xbff & ~(1 << 1) });
  const infoOnly = enricher({ ext: 1 << 1 }); // INET_DIAG_INFO only
  const udp = enricher({ protocol: 17 });
  const sinks = [new RecordingEnrichmentSink(), new RecordingEnrichmentSink(), new RecordingEnrichmentSink()];
  const all = [noEstablished, infoOnly, udp];
  try {
    for (const [i, e] of all.entries()) {
      await e.start(sinks[i]!);
      e.watch(p.flow);
    }
    const s = await sinks[1]!.waitFor("a sample with tcp_info only", () => true);
    assert.ok(s.info.tcpInfo);
    assert.equal(s.info.cong, undefined);
    assert.equal(s.info.memInfo, undefined);
    await delay(150);
    assert.equal(sinks[0]!.samples.length, 0, "ESTABLISHED is not in the state mask");
    assert.ok(noEstablished.stats.filtered > 0);
    assert.equal(sinks[2]!.samples.length, 0);
    assert.equal(udp.watching, 0, "a TCP flow is not watched by a UDP enricher");
  } finally {
    for (const e of all) await e.stop();
  }
});

Deno.test("netlink enricher: a flow without a local socket yields nothing, a flow without ports is not watched", async () => {
  const sink = new RecordingEnrichmentSink();
  const e = enricher();
  await e.start(sink);
  try {
    const ghost: FlowEvent = {
      state: "start",
      protocol: "tcp",
      family: "ipv6",
      src: { address: IpAddress.parse("2001:db8::1"), port: 40000 },
      dst: { address: IpAddress.parse("2001:db8::2"), port: 443 },
      experimentId: 1,
      activityId: 1,
      application: "t",
    };
    e.watch(ghost);
    e.watch({ ...ghost, src: { ...ghost.src, port: 0 } });
    assert.equal(e.watching, 1);
    await delay(150);
    assert.equal(sink.samples.length, 0);
    assert.ok(e.stats.notFound >= 2);
  } finally {
    await e.stop();
  }
});

Deno.test("netlink enricher: many flows are found in port-filtered dumps, IPv4 on dual-stack sockets too, each sample its own socket", async () => {
  using listener = Deno.listen({ hostname: "::", port: 0 }); // dual-stack: IPv4 clients land on AF_INET6 sockets
  const pairs: Pair[] = [];
  try {
    for (let i = 0; i < DUMP_MIN_FLOWS + 4; i++) {
      pairs.push(await pair(listener, i % 2 ? "127.0.0.1" : "::1"));
    }
    const sink = new RecordingEnrichmentSink();
    const e = enricher();
    await e.start(sink);
    try {
      for (const p of pairs) e.watch(p.flow);
      await pairs[3]!.push(50_000);
      for (const p of pairs) {
        await sink.waitFor("a sample of every flow", (s) => s.flow === p.flow);
      }
      await sink.waitFor(
        "a sample of the flow that moved data, with its bytes",
        (s) => s.flow === pairs[3]!.flow && s.info.tcpInfo!.bytesAcked >= 50_000n,
      );
      assert.ok(e.stats.dumps > 0, "dumps were used");
      assert.equal(e.stats.lookups, 0, "no flow looked up one by one");
      for (const s of sink.samples) {
        const p = pairs.find((x) => x.flow === s.flow)!;
        assert.equal(s.info.socket?.id.srcPort, p.flow.src.port, "the sample is of the flow's own socket");
        assert.equal(s.info.socket?.id.dstPort, p.flow.dst.port);
        if (s.flow !== pairs[3]!.flow) assert.ok(s.info.tcpInfo!.bytesAcked < 1000n);
      }
      // A forgotten flow is no longer sampled; the others are.
      e.forget(pairs[0]!.flow);
      await delay(60);
      const before = sink.samples.filter((s) => s.flow === pairs[0]!.flow).length;
      const others = sink.samples.length;
      await delay(200);
      assert.equal(sink.samples.filter((s) => s.flow === pairs[0]!.flow).length, before);
      assert.ok(sink.samples.length > others);
    } finally {
      await e.stop();
    }
  } finally {
    for (const p of pairs) await p[Symbol.asyncDispose]();
  }
});
