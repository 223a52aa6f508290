// The netlink enricher on an iperf3 flow between two network namespaces, querying the client's namespace.
import assert from "node:assert/strict";
import { hasCommand, privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { createTestCgroup } from "../helpers/cgroup.ts";
import { RecordingEnrichmentSink } from "../helpers/recording_enrichment_sink.ts";
import { NetlinkEnricher } from "../../src/enrichers/netlink.ts";
import { NetlinkEnricherSchema } from "../../src/config/schema.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { SockDiag, TCP_LISTEN } from "../../src/net/sock_diag.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

privilegedTest(
  "netlink enricher: an iperf3 flow in a namespace, sampled every period with moving counters",
  async () => {
    if (!hasCommand("iperf3")) throw new Error("this test needs iperf3");
    await using net = await createVethPair();
    await using procs = await createTestCgroup(); // only to reap the processes reliably
    using diagB = SockDiag.open({ netns: `/run/netns/${net.nsB}` });
    const sink = new RecordingEnrichmentSink();
    const enricher = new NetlinkEnricher({
      config: NetlinkEnricherSchema.parse({}),
      periodMs: 200,
      netns: `/run/netns/${net.nsA}`,
    });
    const flow: FlowEvent = {
      state: "start",
      protocol: "tcp",
      family: "ipv4",
      src: { address: IpAddress.parse(net.ip4A), port: 40061 },
      dst: { address: IpAddress.parse(net.ip4B), port: 5261 },
      experimentId: 1,
      activityId: 1,
      startTime: 1,
      application: "t",
    };
    await enricher.start(sink);
    try {
      enricher.watch(flow);
      procs.spawn([...net.prefix(net.nsB), "iperf3", "-s", "-1", "-p", "5261", "-B", net.ip4B]);
      for (let i = 0; i < 100; i++) {
        if ((await diagB.dump({ family: "ipv4", states: 1 << TCP_LISTEN }, { srcPort: 5261 })).length) break;
        await delay(50);
      }
      const client = procs.spawn([
        ...net.prefix(net.nsA),
        ...["iperf3", "-c", net.ip4B, "-p", "5261", "--cport", "40061", "-t", "2", "-b", "30M", "-C", "reno"],
      ]);
      const first = await sink.waitFor(
        "a sample with acked data",
        (s) => (s.info.tcpInfo?.bytesAcked ?? 0n) > 10_000n,
      );
      const next = await sink.waitFor(
        "a later sample with more acked data",
        (s) => s.info.tcpInfo!.bytesAcked > first.info.tcpInfo!.bytesAcked,
        { from: sink.samples.indexOf(first) + 1 },
      );
      const gapMs = (next.time - first.time) / 1000;
      assert.ok(gapMs >= 150, `samples ${gapMs} ms apart with a 200 ms period`);
      assert.ok(first.info.tcpInfo!.rtt > 0);
      assert.equal(first.info.cong?.algorithm, "reno");
      assert.equal(first.info.socket?.id.src.toString(), net.ip4A);
      assert.equal((await client.status).code, 0);
    } finally {
      await enricher.stop();
    }
  },
);
