import assert from "node:assert/strict";
import { FireflyBackend } from "../../src/backends/firefly.ts";
import { FireflyBackendSchema } from "../../src/config/schema.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { udpReceiver } from "../helpers/daemon.ts";

const NOW = parseRfc3339Micros("2026-03-01T09:00:01.000123+00:00")!;
const START = parseRfc3339Micros("2026-03-01T09:00:00.5+00:00")!;

function event(state: FlowEvent["state"], over: Partial<FlowEvent> = {}): FlowEvent {
  return {
    state,
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse("::1"), port: 2345 },
    dst: { address: IpAddress.parse("::1"), port: 5777 },
    experimentId: 2,
    activityId: 9,
    startTime: START,
    application: "flowd-go-3.0.0",
    ...over,
  };
}

function backendFor(config: Record<string, unknown>) {
  return new FireflyBackend({
    config: FireflyBackendSchema.parse(config),
    hostname: "h1",
    appName: "flowd-go-3.0.0",
    now: () => NOW,
  });
}

Deno.test("firefly backend: exact datagrams for start and end, to the peer at destinationPort", async () => {
  await using peer = await udpReceiver("::1");
  const b = backendFor({ destinationPort: peer.port });
  await b.start();
  try {
    await b.handle(event("start"));
    await b.handle(event("end", { endTime: NOW }));
    const [start, end] = await peer.waitFor(2);
    assert.equal(
      start,
      "<134>1 2026-03-01T09:00:01.000123+00:00 h1 flowd-go-3.0.0 - firefly-json - " +
        '{"version":1,"flow-lifecycle":{"state":"start","start-time":"2026-03-01T09:00:00.500000+00:00"},' +
        '"flow-id":{"afi":"ipv6","src-ip":"::1","dst-ip":"::1","protocol":"tcp","src-port":2345,"dst-port":5777},' +
        '"context":{"experiment-id":2,"activity-id":9,"application":"flowd-go-3.0.0"}}',
    );
    assert.equal(
      end,
      "<134>1 2026-03-01T09:00:01.000123+00:00 h1 flowd-go-3.0.0 - firefly-json - " +
        '{"version":1,"flow-lifecycle":{"state":"end","start-time":"2026-03-01T09:00:00.500000+00:00",' +
        '"end-time":"2026-03-01T09:00:01.000123+00:00"},' +
        '"flow-id":{"afi":"ipv6","src-ip":"::1","dst-ip":"::1","protocol":"tcp","src-port":2345,"dst-port":5777},' +
        '"context":{"experiment-id":2,"activity-id":9,"application":"flowd-go-3.0.0"}}',
    );
    assert.deepEqual(b.stats, {
      sent: 2,
      failed: 0,
      skipped: 0,
      rewritten: 0,
      invalid: 0,
      collectorUnresolved: 0,
      ongoing: 0,
      ongoingDropped: 0,
      oversize: 0,
    });
  } finally {
    await b.stop();
  }
});

Deno.test("firefly backend: prependSyslog false sends bare JSON; IPv4 flows go over IPv4", async () => {
  await using peer = await udpReceiver("127.0.0.1");
  const b = backendFor({ destinationPort: peer.port, prependSyslog: false });
  await b.start();
  try {
    await b.handle(event("start", {
      family: "ipv4",
      src: { address: IpAddress.parse("127.0.0.1"), port: 1 },
      dst: { address: IpAddress.parse("127.0.0.1"), port: 2 },
    }));
    const [msg] = await peer.waitFor(1);
    assert.ok(msg!.startsWith('{"version":1,'), msg);
    assert.equal(JSON.parse(msg!)["flow-id"].afi, "ipv4");
  } finally {
    await b.stop();
  }
});

Deno.test("firefly backend: collector only (sendToDestination false), host name resolved", async () => {
  await using collector = await udpReceiver("127.0.0.1");
  const b = backendFor({
    sendToDestination: false,
    sendToCollector: true,
    collectorAddress: "localhost",
    collectorPort: collector.port,
  });
  await b.start();
  try {
    await b.handle(event("start"));
    const [msg] = await collector.waitFor(1);
    assert.match(msg!, /"state":"start"/);
  } finally {
    await b.stop();
  }
});

Deno.test("firefly backend: an event no firefly can describe is skipped, not sent", async () => {
  await using peer = await udpReceiver("::1");
  const b = backendFor({ destinationPort: peer.port });
  await b.start();
  try {
    // perfSONAR's match-all event: unspecified peer and ports 0.
    await b.handle(event("start", {
      src: { address: IpAddress.parse("::"), port: 0 },
      dst: { address: IpAddress.parse("::"), port: 0 },
    }));
    assert.deepEqual(b.stats, {
      sent: 0,
      failed: 0,
      skipped: 1,
      rewritten: 0,
      invalid: 0,
      collectorUnresolved: 0,
      ongoing: 0,
      ongoingDropped: 0,
      oversize: 0,
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(peer.messages.length, 0);
  } finally {
    await b.stop();
  }
});

Deno.test("firefly backend: a send failure is counted and does not throw", async () => {
  await using peer = await udpReceiver("::1");
  const b = backendFor({ destinationPort: peer.port });
  await b.start();
  try {
    // Larger than any UDP datagram: the kernel refuses it (EMSGSIZE) before anything leaves the host.
    await b.handle(event("start", { application: "x".repeat(70_000) }));
    await new Promise((r) => setTimeout(r, 10)); // the batch goes out at the next turn of the event loop
    assert.equal(b.stats.failed, 1);
    await b.handle(event("start"));
    await peer.waitFor(1);
    assert.equal(b.stats.sent, 1);
  } finally {
    await b.stop();
  }
});

Deno.test("firefly backend: a burst is sent in batches at the next turn, every firefly counted and delivered", async () => {
  await using peer = await udpReceiver("::1");
  const b = backendFor({ destinationPort: peer.port });
  await b.start();
  try {
    // Synchronously, as the bus delivers what is queued: more than one batch's worth.
    for (let i = 0; i < 150; i++) b.handle(event(i % 2 ? "end" : "start"));
    assert.ok(b.stats.sent >= 128 && b.stats.sent < 150, `full batches go at once (${b.stats.sent} sent)`);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(b.stats.sent, 150);
    assert.equal(b.stats.failed, 0);
    await peer.waitFor(150);
    assert.equal(peer.messages.length, 150);
  } finally {
    await b.stop();
  }
});

Deno.test("firefly backend: stop sends what is still waiting for its batch", async () => {
  await using peer = await udpReceiver("::1");
  const b = backendFor({ destinationPort: peer.port });
  await b.start();
  b.handle(event("start"));
  b.handle(event("end"));
  assert.equal(b.stats.sent, 0);
  await b.stop();
  assert.equal(b.stats.sent, 2);
  await peer.waitFor(2);
});
