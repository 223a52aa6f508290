/**
 * HTTP public-address discovery against Hono servers on loopback: answers in JSON and text, the local
 * address the connection comes from, and every way a service can fail, including never answering.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { HttpDiscoveryError, httpPublicAddress, MAX_ANSWER_BYTES } from "../../src/net/http_discovery.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { startHttpServer } from "../helpers/http_server.ts";

const LOCAL4 = IpAddress.parse("127.0.0.1");

function failsWith(re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof HttpDiscoveryError, `expected HttpDiscoveryError, got ${e}`);
    assert.match(e.message, re);
    return true;
  };
}

/** A service with one route per behaviour; `seen` records the client addresses. */
function ipService(hostname: "127.0.0.1" | "::1") {
  const seen: string[] = [];
  const server = startHttpServer(hostname, (gate) => {
    const app = new Hono();
    app.get("/json", (c) => {
      const remote = (c.env as { remoteAddr?: Deno.NetAddr } | undefined)?.remoteAddr?.hostname;
      if (remote) seen.push(remote);
      return c.json({ ip: hostname === "::1" ? "2a02:db8:1::5" : "203.0.114.5", country: "nowhere" });
    });
    app.get("/text", (c) => c.text("203.0.114.6\n"));
    app.get("/v6", (c) => c.json({ ip: "2a02:db8:1::6" }));
    app.get("/private", (c) => c.json({ ip: "10.1.2.3" }));
    app.get("/nonsense", (c) => c.json({ ip: "not an address" }));
    app.get("/noip", (c) => c.json({ address: "203.0.114.5" }));
    app.get("/broken", (c) => c.json({ ip: "203.0.114.5" }, 500));
    app.get("/huge", (c) => c.text("203.0.114.5" + " ".repeat(MAX_ANSWER_BYTES)));
    app.get("/never", async (c) => {
      await gate;
      return c.text("203.0.114.5");
    });
    app.get("/stall-body", () => {
      // Headers now, the body never (until the server is disposed).
      const body = new ReadableStream<Uint8Array>({
        async start(ctl) {
          ctl.enqueue(new TextEncoder().encode("203."));
          await gate;
          ctl.close();
        },
      });
      return new Response(body, { headers: { "content-type": "text/plain" } });
    });
    return app;
  });
  return { server, seen };
}

Deno.test("http discovery: a JSON answer from IPv4 and IPv6 services, the connection from the local address", async () => {
  const v4 = ipService("127.0.0.1");
  await using _s4 = v4.server;
  const address = await httpPublicAddress({
    url: v4.server.url("/json"),
    localAddress: IpAddress.parse("127.0.0.2"),
    timeoutMs: 2000,
  });
  assert.equal(address.toString(), "203.0.114.5");
  assert.deepEqual(v4.seen, ["127.0.0.2"], "the service saw the chosen local address");

  const v6 = ipService("::1");
  await using _s6 = v6.server;
  const address6 = await httpPublicAddress({
    url: v6.server.url("/json"),
    localAddress: IpAddress.parse("::1"),
    timeoutMs: 2000,
  });
  assert.equal(address6.toString(), "2a02:db8:1::5");
});

Deno.test("http discovery: a bare address as text is accepted", async () => {
  const { server } = ipService("127.0.0.1");
  await using _s = server;
  const address = await httpPublicAddress({
    url: server.url("/text"),
    localAddress: LOCAL4,
    timeoutMs: 2000,
  });
  assert.equal(address.toString(), "203.0.114.6");
});

Deno.test("http discovery: bad answers are refused, naming the URL and what is wrong", async () => {
  const { server } = ipService("127.0.0.1");
  await using _s = server;
  const cases: Array<[string, RegExp]> = [
    ["/broken", /\/broken answered HTTP 500/],
    ["/private", /answered 10\.1\.2\.3, which is not a public address/],
    ["/v6", /answered 2a02:db8:1::6, not an ipv4 address/],
    ["/nonsense", /answered "not an address", which is not an IP address/],
    ["/noip", /JSON without an "ip" key/],
    ["/huge", /answered more than 4096 bytes/],
    ["/missing", /answered HTTP 404/],
  ];
  for (const [path, re] of cases) {
    await assert.rejects(
      () => httpPublicAddress({ url: server.url(path), localAddress: LOCAL4, timeoutMs: 2000 }),
      failsWith(re),
      path,
    );
  }
});

Deno.test("http discovery: a service that never answers, or stalls its body, times out", async () => {
  const { server } = ipService("127.0.0.1");
  await using _s = server;
  for (const path of ["/never", "/stall-body"]) {
    const t0 = performance.now();
    await assert.rejects(
      () => httpPublicAddress({ url: server.url(path), localAddress: LOCAL4, timeoutMs: 300 }),
      failsWith(new RegExp(`no answer from http://127\\.0\\.0\\.1:\\d+${path} within 300 ms`)),
    );
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 290 && elapsed < 1500, `${path} took ${elapsed} ms`);
  }
});

Deno.test("http discovery: unusable URLs, closed ports and cancellation", async () => {
  await assert.rejects(
    () => httpPublicAddress({ url: "ftp://127.0.0.1/", localAddress: LOCAL4, timeoutMs: 100 }),
    failsWith(/only http and https/),
  );
  await assert.rejects(
    () => httpPublicAddress({ url: "no url", localAddress: LOCAL4, timeoutMs: 100 }),
    failsWith(/is not a URL/),
  );
  await assert.rejects(
    () => httpPublicAddress({ url: "http://[::1]:9/", localAddress: LOCAL4, timeoutMs: 100 }),
    failsWith(/is ipv6, the local address ipv4/),
  );
  // A port nobody listens on: refused at once, long before the timeout.
  const closed = startHttpServer("127.0.0.1", () => new Hono());
  const url = closed.url("/json");
  await closed[Symbol.asyncDispose]();
  await assert.rejects(
    () => httpPublicAddress({ url, localAddress: LOCAL4, timeoutMs: 5000 }),
    failsWith(/cannot reach http:\/\/127\.0\.0\.1:\d+\/json from 127\.0\.0\.1/),
  );
  const { server } = ipService("127.0.0.1");
  await using _s = server;
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 50);
  await assert.rejects(
    () =>
      httpPublicAddress({
        url: server.url("/never"),
        localAddress: LOCAL4,
        timeoutMs: 5000,
        signal: abort.signal,
      }),
    failsWith(/cancelled/),
  );
});
