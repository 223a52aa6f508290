/**
 * Public-address mapping with real HTTP (Hono) and STUN (npm stun) servers on loopback: HTTP first, STUN
 * as the fallback, per-family choice among mixed server lists, manual mappings for any address, and
 * nothing found meaning nothing changed.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import {
  discoverPublicMapping,
  type LocalAddresses,
  type PublicMappingSettings,
} from "../../src/net/public_address.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { startHttpServer } from "../helpers/http_server.ts";
import { startStunServer } from "../helpers/stun_server.ts";

const ip = IpAddress.parse;

function locals(...addresses: string[]): () => Promise<LocalAddresses> {
  return () =>
    Promise.resolve({
      interfaces: [{ family: "ipv4", index: 1, name: "lo", gateway: undefined, priority: 0 }],
      addresses: addresses.map((a) => ({ interface: "lo", address: ip(a) })),
    });
}

function settings(over: Partial<PublicMappingSettings>): PublicMappingSettings {
  return {
    manualMapping: {},
    httpServers: [],
    stunServers: [],
    httpTimeoutMs: 1000,
    stunTimeoutMs: 1000,
    ...over,
  };
}

/** An HTTP service answering, per client address, with a public address of that family. */
function ipService(hostname: "127.0.0.1" | "::1", answers: Record<string, string>) {
  const seen: string[] = [];
  return {
    seen,
    server: startHttpServer(hostname, (gate) => {
      const app = new Hono();
      app.get("/ip", (c) => {
        const remote = (c.env as { remoteAddr: Deno.NetAddr }).remoteAddr.hostname;
        seen.push(remote);
        return c.json({ ip: answers[remote] ?? "0.0.0.0" });
      });
      app.get("/broken", (c) => c.text("oops", 500));
      app.get("/never", async (c) => {
        await gate;
        return c.text("late");
      });
      return app;
    }),
  };
}

Deno.test("mapping: HTTP answers first, per address and per family; STUN is not asked", async () => {
  const v4 = ipService("127.0.0.1", { "127.0.0.1": "203.0.114.1", "127.0.0.2": "203.0.114.2" });
  const v6 = ipService("::1", { "::1": "2a02:db8:1::1" });
  await using _a = v4.server;
  await using _b = v6.server;
  await using stun4 = await startStunServer("127.0.0.1", { reportAs: "198.18.0.9" });
  const result = await discoverPublicMapping(
    settings({ httpServers: [v4.server.url("/ip"), v6.server.url("/ip")], stunServers: [stun4.hostPort] }),
    { localAddresses: locals("127.0.0.1", "127.0.0.2", "::1") },
  );
  assert.equal(result.localError, undefined);
  assert.deepEqual(
    result.reports.map((r) => [r.local.toString(), r.outcome, r.public?.toString(), r.method, r.source]),
    [
      ["127.0.0.1", "mapped", "203.0.114.1", "http", v4.server.url("/ip")],
      ["127.0.0.2", "mapped", "203.0.114.2", "http", v4.server.url("/ip")],
      ["::1", "mapped", "2a02:db8:1::1", "http", v6.server.url("/ip")],
    ],
  );
  // ::1 first tried the IPv4 URL, which was refused for its family without a connection.
  assert.match(result.reports[2]!.attempts[0]!.error, /is ipv4, the local address ipv6/);
  assert.deepEqual(v4.seen.sort(), ["127.0.0.1", "127.0.0.2"]);
  assert.equal(stun4.requests.length, 0);
  assert.equal(result.map.size, 3);
  assert.equal(result.map.lookup(ip("127.0.0.2"))?.toString(), "203.0.114.2");
  assert.equal(result.map.lookup(ip("::ffff:127.0.0.1"))?.toString(), "::ffff:203.0.114.1");
  assert.equal(result.map.lookup(ip("127.0.0.3")), undefined);
});

Deno.test("mapping: when HTTP fails (an error, a service that never answers) STUN is used", async () => {
  const v4 = ipService("127.0.0.1", {});
  await using _a = v4.server;
  await using stun4 = await startStunServer("127.0.0.1", { reportAs: "198.18.100.1" });
  await using stun6 = await startStunServer("::1", { reportAs: "2a02:db8:2::1" });
  const t0 = performance.now();
  const result = await discoverPublicMapping(
    settings({
      httpServers: [v4.server.url("/broken"), v4.server.url("/never")],
      stunServers: [stun4.hostPort, stun6.hostPort],
      httpTimeoutMs: 250,
    }),
    { localAddresses: locals("127.0.0.1", "::1") },
  );
  assert.ok(performance.now() - t0 < 2000);
  const [a, b] = result.reports;
  // 198.18.0.0/15 is in the private list; the STUN answer for IPv4 is therefore refused.
  assert.equal(a!.outcome, "unmapped");
  assert.deepEqual(a!.attempts.map((t) => [t.method, t.error.replace(/\d+/g, "N")]), [
    ["http", "http://N.N.N.N:N/broken answered HTTP N"],
    ["http", "no answer from http://N.N.N.N:N/never within N ms"],
    ["stun", "STUN server N.N.N.N:N saw N.N.N.N, which is not a public address (is it behind the same NAT?)"],
    ["stun", "STUN server [::N]:N is ipvN, the local address ipvN"],
  ]);
  assert.equal(b!.outcome, "mapped");
  assert.equal(b!.method, "stun");
  assert.equal(b!.public?.toString(), "2a02:db8:2::1");
  assert.equal(b!.source, stun6.hostPort);
  assert.equal(result.map.size, 1);
});

Deno.test("mapping: a STUN answer maps an IPv4 address when HTTP has nothing", async () => {
  await using stun4 = await startStunServer("127.0.0.1", { reportAs: "203.0.114.77" });
  const result = await discoverPublicMapping(settings({ stunServers: [stun4.hostPort] }), {
    localAddresses: locals("127.0.0.2"),
  });
  assert.equal(result.map.lookup(ip("127.0.0.2"))?.toString(), "203.0.114.77");
  assert.deepEqual(stun4.requests.map((r) => r.address), ["127.0.0.2"], "sent from the address resolved");
});

Deno.test("mapping: nothing found leaves the address unmapped and says why", async () => {
  await using silent = await startStunServer("127.0.0.1", { mode: "silent" });
  const result = await discoverPublicMapping(
    settings({ stunServers: [silent.hostPort], stunTimeoutMs: 200 }),
    { localAddresses: locals("127.0.0.1") },
  );
  assert.equal(result.map.size, 0);
  assert.equal(result.reports[0]!.outcome, "unmapped");
  assert.match(
    result.reports[0]!.attempts[0]!.error,
    /no answer from STUN server 127\.0\.0\.1:\d+ within 200 ms/,
  );
});

Deno.test("mapping: manual entries win without any query, and apply to addresses on no interface", async () => {
  await using stun4 = await startStunServer("127.0.0.1", { reportAs: "203.0.114.9" });
  const result = await discoverPublicMapping(
    settings({
      manualMapping: { "127.0.0.1": "203.0.114.50", "10.9.9.9": "203.0.114.51", "FD00::5": "2a02:db8::5" },
      stunServers: [stun4.hostPort],
    }),
    { localAddresses: locals("127.0.0.1") },
  );
  assert.equal(stun4.requests.length, 0);
  assert.deepEqual(
    result.reports.map((r) => [r.interface, r.local.toString(), r.public?.toString(), r.method]),
    [
      ["lo", "127.0.0.1", "203.0.114.50", "manual"],
      [undefined, "10.9.9.9", "203.0.114.51", "manual"],
      [undefined, "fd00::5", "2a02:db8::5", "manual"],
    ],
  );
  assert.equal(result.map.lookup(ip("10.9.9.9"))?.toString(), "203.0.114.51");
  assert.equal(result.map.lookup(ip("fd00:0::5"))?.toString(), "2a02:db8::5");
  assert.equal(result.map.lookup(ip("::ffff:10.9.9.9"))?.toString(), "::ffff:203.0.114.51");
});

Deno.test("mapping: public and link-local addresses need no query", async () => {
  await using stun4 = await startStunServer("127.0.0.1");
  const result = await discoverPublicMapping(settings({ stunServers: [stun4.hostPort] }), {
    localAddresses: locals("203.0.114.99", "fe80::1", "2a02:db8::99"),
  });
  assert.deepEqual(result.reports.map((r) => r.outcome), ["public", "link-local", "public"]);
  assert.equal(stun4.requests.length, 0);
  assert.equal(result.map.size, 0);
});

Deno.test("mapping: when the local addresses cannot be listed, manual entries still apply", async () => {
  const result = await discoverPublicMapping(settings({ manualMapping: { "10.0.0.1": "203.0.114.1" } }), {
    localAddresses: () => Promise.reject(new Error("netlink says no")),
  });
  assert.match(result.localError ?? "", /cannot list the default-route interfaces .*: netlink says no/);
  assert.equal(result.map.lookup(ip("10.0.0.1"))?.toString(), "203.0.114.1");
});
