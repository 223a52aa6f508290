// The whole enrichment path in one process: a real loopback connection, the netlink enricher, the bus, a
// firefly backend that does not take samples (enrich: false) and the prometheus backend that does.
import assert from "node:assert/strict";
import { EventBus } from "../../src/core/bus.ts";
import { Supervisor } from "../../src/core/supervisor.ts";
import { FireflyBackend } from "../../src/backends/firefly.ts";
import { PrometheusBackend } from "../../src/backends/prometheus.ts";
import { NetlinkEnricher } from "../../src/enrichers/netlink.ts";
import { FireflyBackendSchema, NetlinkEnricherSchema, PrometheusSchema } from "../../src/config/schema.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { freePort, udpReceiver } from "../helpers/daemon.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("enrichment pipeline: a backend that takes no samples is never held up by them (the original deadlocked)", async () => {
  await using peer = await udpReceiver("::1");
  using listener = Deno.listen({ hostname: "::1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  using client = await Deno.connect({ hostname: "::1", port });
  using _server = await listener.accept();
  const local = (client.localAddr as Deno.NetAddr).port;

  const firefly = new FireflyBackend({
    config: FireflyBackendSchema.parse({ destinationPort: peer.port, prependSyslog: false }),
    hostname: "h",
    appName: "a",
  });
  const prometheus = new PrometheusBackend({
    config: PrometheusSchema.parse({ netlinkPort: freePort(), skopsPort: 0 }),
    version: "t",
  });
  const netlink = new NetlinkEnricher({ config: NetlinkEnricherSchema.parse({}), periodMs: 10 });
  const bus = new EventBus({ queueCapacity: 100, flowTableCapacity: 100 });
  const supervisor = new Supervisor(
    { backends: [firefly, prometheus], enrichers: [netlink], plugins: [] },
    bus,
  );
  await supervisor.start();
  try {
    const flow = (state: FlowEvent["state"], sport: number, dport: number): FlowEvent => ({
      state,
      protocol: "tcp",
      family: "ipv6",
      src: { address: IpAddress.parse("::1"), port: sport },
      dst: { address: IpAddress.parse("::1"), port: dport },
      experimentId: 1,
      activityId: 2,
      application: "a",
    });
    assert.equal(bus.emit(flow("start", local, port)).accepted, true);
    // While samples stream in every 10 ms, other flows keep starting and ending, and their fireflies go out.
    for (let i = 0; i < 20; i++) {
      assert.equal(bus.emit(flow("start", 30000 + i, 443)).accepted, true);
      assert.equal(bus.emit(flow("end", 30000 + i, 443)).accepted, true);
      await delay(10);
    }
    await peer.waitFor(41, 3000); // the connection's start and 20 starts and ends
    assert.ok(bus.sampleStats.delivered >= 5, `${bus.sampleStats.delivered} samples delivered`);
    assert.equal(firefly.stats.ongoing, 0, "no ongoing fireflies without enrich: true");
    assert.equal(prometheus.exportedFlows("Netlink"), 1);
    bus.emit(flow("end", local, port));
    await delay(30);
    assert.equal(prometheus.exportedFlows("Netlink"), 0, "the ended flow's series are gone");
    assert.equal(bus.stats().firefly!.dropped, 0);
  } finally {
    await supervisor.stop({ drainMs: 1000, componentMs: 2000 });
  }
});
