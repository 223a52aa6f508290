// Ongoing fireflies: the firefly backend turning enrichment samples into UDP datagrams.
import assert from "node:assert/strict";
import { FireflyBackend, UNFRAGMENTED_PAYLOAD } from "../../src/backends/firefly.ts";
import { FireflyBackendSchema } from "../../src/config/schema.ts";
import type { EnrichmentSample } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { udpReceiver } from "../helpers/daemon.ts";
import { assertValidFirefly } from "../helpers/firefly_schema.ts";
import { flowInfoFixture, tcpInfoFixture } from "../helpers/flow_info_fixture.ts";

const START = parseRfc3339Micros("2026-03-01T09:00:00.5+00:00")!;
const SAMPLE = parseRfc3339Micros("2026-03-01T09:00:03.25+00:00")!;

const flow: FlowEvent = {
  state: "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: IpAddress.parse("::1"), port: 2345 },
  dst: { address: IpAddress.parse("::1"), port: 5777 },
  experimentId: 2,
  activityId: 9,
  startTime: START,
  application: "flowd-go-3.0.0",
};

function backend(config: Record<string, unknown>) {
  return new FireflyBackend({
    config: FireflyBackendSchema.parse(config),
    hostname: "h1",
    appName: "flowd-go-3.0.0",
  });
}

const HEADER = /^<134>1 (\S+) h1 flowd-go-3\.0\.0 - firefly-json - (\{.*\})$/;

function parse(datagram: string): { time: string; doc: Record<string, unknown> & { [k: string]: unknown } } {
  const m = HEADER.exec(datagram);
  assert.ok(m, datagram);
  const doc = JSON.parse(m[2]!);
  assertValidFirefly(doc);
  return { time: m[1]!, doc };
}

Deno.test("ongoing firefly: each sample becomes a schema-valid ongoing firefly with the flow's start and the sample's time", async () => {
  await using peer = await udpReceiver("::1");
  const b = backend({ destinationPort: peer.port, enrich: true });
  await b.start();
  try {
    b.enrich({ flavour: "Netlink", flow, time: SAMPLE, info: flowInfoFixture() });
    b.enrich({
      flavour: "Ebpf",
      flow,
      time: SAMPLE + 1,
      info: { tcpInfo: tcpInfoFixture(), cong: { algorithm: "bbr" } },
    });
    // Datagrams may arrive in either order.
    const both = (await peer.waitFor(2)).map(parse);
    const netlink = both.find((d) => "netlink" in d.doc), skops = both.find((d) => "skOps" in d.doc);
    assert.equal(netlink!.time, "2026-03-01T09:00:03.250000+00:00", "syslog timestamp = sample time");
    assert.deepEqual(netlink!.doc["flow-lifecycle"], {
      state: "ongoing",
      "current-time": "2026-03-01T09:00:03.250000+00:00",
      "start-time": "2026-03-01T09:00:00.500000+00:00",
    });
    assert.deepEqual(Object.keys(netlink!.doc), [
      "version",
      "flow-lifecycle",
      "flow-id",
      "context",
      "netlink",
    ]);
    assert.deepEqual(Object.keys(skops!.doc), ["version", "flow-lifecycle", "flow-id", "context", "skOps"]);
    assert.deepEqual((netlink!.doc.netlink as { cong: unknown }).cong, { algorithm: "cubic" });
    assert.deepEqual((skops!.doc.skOps as { cong: unknown }).cong, { algorithm: "bbr" });
    assert.deepEqual(netlink!.doc.context, {
      "experiment-id": 2,
      "activity-id": 9,
      application: "flowd-go-3.0.0",
    });
    assert.equal(b.stats.ongoing, 2);
  } finally {
    await b.stop();
  }
});

Deno.test("ongoing firefly: a lean one fits one 1500-byte packet even with every value at its maximum", async () => {
  await using peer = await udpReceiver("::1");
  const b = backend({ destinationPort: peer.port, enrich: true, enrichmentMode: "lean" });
  await b.start();
  try {
    const max = tcpInfoFixture({
      advMss: 0xffff_ffff,
      bytesSent: 0xffff_ffff_ffff_ffffn,
      deliveryRate: 0xffff_ffff_ffff_ffffn,
      minRtt: 0xffff_ffff,
      pMtu: 0xffff_ffff,
      retransmits: 255,
      rtt: 0xffff_ffff,
      rttVar: 0xffff_ffff,
      sndCwnd: 0xffff_ffff,
      sndMss: 0xffff_ffff,
      sndSsThresh: 0xffff_ffff,
    });
    // The longest addresses and ids, and a 15-character congestion-control name.
    const big: FlowEvent = {
      ...flow,
      src: { address: IpAddress.parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), port: 65535 },
      dst: { address: IpAddress.parse("::1"), port: 65535 },
      experimentId: 0xffff_ffff,
      activityId: 0xffff_ffff,
      application: "flowd-go-3.0.0",
    };
    b.enrich({
      flavour: "Netlink",
      flow: big,
      time: SAMPLE,
      info: { tcpInfo: max, cong: { algorithm: "x".repeat(15) } },
    });
    const [d] = await peer.waitFor(1);
    const bytes = new TextEncoder().encode(d!).length;
    assert.ok(bytes <= UNFRAGMENTED_PAYLOAD, `${bytes} bytes`);
    parse(d!);
    assert.equal(b.stats.oversize, 0);
  } finally {
    await b.stop();
  }
});

Deno.test("ongoing firefly: full mode is sent whole and counted when it needs fragmenting; compatible is flat", async () => {
  await using peer = await udpReceiver("::1");
  const full = backend({ destinationPort: peer.port, enrich: true, enrichmentMode: "full" });
  const compat = backend({ destinationPort: peer.port, enrich: true, enrichmentMode: "compatible" });
  await full.start();
  await compat.start();
  try {
    full.enrich({ flavour: "Netlink", flow, time: SAMPLE, info: flowInfoFixture() });
    const [f] = await peer.waitFor(1);
    const doc = parse(f!).doc;
    assert.equal(Object.keys((doc.netlink as { tcpInfo: object }).tcpInfo).length, 57);
    assert.ok(f!.includes('"maxPacingRate":18446744073709551615'), "exact in the datagram");
    // Everything netlink knows takes more than one packet (the original fragmented silently).
    assert.ok(new TextEncoder().encode(f!).length > UNFRAGMENTED_PAYLOAD);
    assert.equal(full.stats.oversize, 1);
    compat.enrich({ flavour: "Ebpf", flow, time: SAMPLE, info: flowInfoFixture() });
    const [, c] = await peer.waitFor(2);
    const skOps = parse(c!).doc.skOps as Record<string, unknown>;
    assert.equal(skOps.state, "established");
    assert.equal(skOps.rtt, 250);
  } finally {
    await full.stop();
    await compat.stop();
  }
});

Deno.test("ongoing firefly: none without enrich: true; a burst beyond the in-flight bound is dropped and counted", async () => {
  await using peer = await udpReceiver("::1");
  const off = backend({ destinationPort: peer.port });
  const on = backend({ destinationPort: peer.port, enrich: true });
  await off.start();
  await on.start();
  try {
    const sample: EnrichmentSample = { flavour: "Netlink", flow, time: SAMPLE, info: flowInfoFixture() };
    off.enrich(sample);
    for (let i = 0; i < 1500; i++) on.enrich(sample); // synchronously: no send can finish in between
    assert.equal(on.stats.ongoing, 1024);
    assert.equal(on.stats.ongoingDropped, 1500 - 1024);
    await on.stop(); // waits for the sends in flight
    assert.equal(on.stats.sent + on.stats.failed, 1024);
    assert.equal(off.stats.ongoing, 0);
    await peer.waitFor(Math.min(on.stats.sent, 100));
  } finally {
    await off.stop();
    await on.stop();
  }
});
