/**
 * The firefly backend with `stun`: fireflies carry the public source address found at start (HTTP
 * discovery on loopback here) or given in manualMapping; nothing found means unchanged addresses and one
 * warning, never a failed start.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { FireflyBackend } from "../../src/backends/firefly.ts";
import { FireflyBackendSchema } from "../../src/config/schema.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";
import type { LocalAddresses } from "../../src/net/public_address.ts";
import { udpReceiver } from "../helpers/daemon.ts";
import { startHttpServer } from "../helpers/http_server.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { startStunServer } from "../helpers/stun_server.ts";

function event(src: string, dst: string): FlowEvent {
  const family = IpAddress.parse(src).family;
  return {
    state: "start",
    protocol: "tcp",
    family,
    src: { address: IpAddress.parse(src), port: 40000 },
    dst: { address: IpAddress.parse(dst), port: 1094 },
    experimentId: 2,
    activityId: 3,
    startTime: 1_700_000_000_000_000,
    application: "test",
  };
}

const onLoopback = (): Promise<LocalAddresses> =>
  Promise.resolve({
    interfaces: [{ family: "ipv4", index: 1, name: "lo", gateway: undefined, priority: 0 }],
    addresses: [{ interface: "lo", address: IpAddress.parse("127.0.0.1") }],
  });

function srcIps(datagrams: string[]): string[] {
  return datagrams.map((d) => JSON.parse(d.slice(d.indexOf("{")))["flow-id"]["src-ip"]);
}

Deno.test("firefly backend + stun: discovered and manual public addresses replace private sources", async () => {
  using logs = captureLogs("info");
  await using collector = await udpReceiver("127.0.0.1");
  await using service = startHttpServer(
    "127.0.0.1",
    () => new Hono().get("/ip", (c) => c.json({ ip: "203.0.114.20" })),
  );
  const backend = new FireflyBackend({
    config: FireflyBackendSchema.parse({
      sendToDestination: false,
      sendToCollector: true,
      collectorPort: collector.port,
      stun: {
        httpServers: [service.url("/ip")],
        stunServers: [],
        manualMapping: { "10.9.9.9": "203.0.114.51", "fd00::9": "2a02:db8::9" },
      },
    }),
    hostname: "h1",
    appName: "flowd-go-test",
    localAddresses: onLoopback,
  });
  await backend.start();
  try {
    await backend.handle(event("127.0.0.1", "192.0.2.1"));
    await backend.handle(event("10.9.9.9", "192.0.2.1"));
    await backend.handle(event("fd00::9", "2001:db8::1"));
    await backend.handle(event("192.0.2.7", "192.0.2.1"));
    await backend.handle(event("::ffff:10.9.9.9", "::ffff:192.0.2.1"));
    const got = await collector.waitFor(5);
    assert.deepEqual(srcIps(got), [
      "203.0.114.20",
      "203.0.114.51",
      "2a02:db8::9",
      "192.0.2.7",
      "::ffff:203.0.114.51",
    ]);
    assert.equal(backend.stats.rewritten, 4);
  } finally {
    await backend.stop();
  }
  const mapped = logs.matching(/fireflies will carry a public source address/);
  assert.equal(mapped.length, 3, logs.lines.join("\n"));
  assert.match(
    mapped[0]!,
    /private=127\.0\.0\.1 public=203\.0\.114\.20 method=http via=http:\/\/127\.0\.0\.1:\d+\/ip interface=lo/,
  );
  assert.deepEqual(logs.matching(/level=WARN/), []);
});

Deno.test("firefly backend + stun: nothing discovered starts anyway, one warning, addresses unchanged", async () => {
  using logs = captureLogs("info");
  await using collector = await udpReceiver("127.0.0.1");
  await using silent = await startStunServer("127.0.0.1", { mode: "silent" });
  await using service = startHttpServer("127.0.0.1", (gate) =>
    new Hono().get("/never", async (c) => {
      await gate;
      return c.text("late");
    }));
  const backend = new FireflyBackend({
    config: FireflyBackendSchema.parse({
      sendToDestination: false,
      sendToCollector: true,
      collectorPort: collector.port,
      stun: {
        httpServers: [service.url("/never")],
        stunServers: [silent.hostPort],
        httpTimeout: 0.2,
        stunTimeout: 0.2,
      },
    }),
    hostname: "h1",
    appName: "flowd-go-test",
    localAddresses: onLoopback,
  });
  const t0 = performance.now();
  await backend.start();
  const took = performance.now() - t0;
  try {
    assert.ok(
      took >= 390 && took < 1500,
      `start took ${took} ms: both queries time out, one after the other`,
    );
    await backend.handle(event("127.0.0.1", "192.0.2.1"));
    assert.deepEqual(srcIps(await collector.waitFor(1)), ["127.0.0.1"]);
    assert.equal(backend.stats.rewritten, 0);
  } finally {
    await backend.stop();
  }
  const warnings = logs.matching(/level=WARN/);
  assert.equal(warnings.length, 1, logs.lines.join("\n"));
  assert.match(warnings[0]!, /public-address mapping incomplete/);
  assert.match(warnings[0]!, /unmapped=127\.0\.0\.1/);
  assert.match(warnings[0]!, /no answer from http:\/\/127\.0\.0\.1:\d+\/never within 200 ms/);
  assert.match(warnings[0]!, /no answer from STUN server 127\.0\.0\.1:\d+ within 200 ms/);
});

Deno.test("firefly backend + stun: a netlink failure is a warning, not a failed start", async () => {
  using logs = captureLogs("info");
  const backend = new FireflyBackend({
    config: FireflyBackendSchema.parse({
      sendToDestination: false,
      stun: { httpServers: [], stunServers: [] },
    }),
    hostname: "h1",
    appName: "flowd-go-test",
    localAddresses: () => Promise.reject(new Error("EPERM")),
  });
  await backend.start();
  await backend.stop();
  assert.match(logs.matching(/level=WARN/)[0] ?? "", /cannot list the default-route interfaces.*EPERM/);
});
