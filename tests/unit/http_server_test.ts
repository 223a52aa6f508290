// The daemon's own HTTP/1.1 server (src/net/http_server.ts), over real sockets on 127.0.0.1.
import assert from "node:assert/strict";
import { HttpServer, type HttpServerLimits } from "../../src/net/http_server.ts";
import type { HealthMetric } from "../../src/core/health.ts";
import { logger } from "../../src/core/log.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { RawHttpClient, requestHead } from "../helpers/raw_http.ts";

const SHORT = 300; // ms: the timeouts under test

/** Echoes what it got as JSON: method, path, body and a few headers. */
async function echo(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === "/fail") throw new Error("the handler broke");
  if (url.pathname === "/slow") await new Promise((r) => setTimeout(r, Number(url.searchParams.get("ms"))));
  const body = req.method === "GET" || req.method === "HEAD" ? "" : await req.text();
  return Response.json({ method: req.method, path: url.pathname + url.search, body });
}

async function withServer(
  limits: HttpServerLimits,
  fn: (server: HttpServer, port: number) => Promise<void>,
): Promise<void> {
  const server = HttpServer.listen(
    { hostname: "127.0.0.1", port: 0, name: "test", log: logger("test"), ...limits },
    echo,
  );
  try {
    await fn(server, server.addr.port);
  } finally {
    await server.stop();
  }
}

function metric(server: HttpServer, name: string, labels: Record<string, string> = {}): number {
  const hit = server.health().find((m: HealthMetric) =>
    m.name === name && Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
  );
  assert.ok(hit, `no metric ${name} ${JSON.stringify(labels)}`);
  return hit.value;
}

const post = (path: string, body: string, extra: string[] = []) =>
  requestHead("POST", path, [`Content-Length: ${new TextEncoder().encode(body).length}`, ...extra]) + body;

Deno.test("http server: keep-alive by default in HTTP/1.1, pipelined requests answered in order", async () => {
  await withServer({}, async (server, port) => {
    await using c = await RawHttpClient.connect(port);
    // Three requests in one write, the second with a body.
    await c.send(requestHead("GET", "/a?x=1") + post("/b", "hello") + requestHead("GET", "/c"));
    const replies = [await c.response(), await c.response(), await c.response()];
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200]);
    assert.deepEqual(replies.map((r) => JSON.parse(r.body)), [
      { method: "GET", path: "/a?x=1", body: "" },
      { method: "POST", path: "/b", body: "hello" },
      { method: "GET", path: "/c", body: "" },
    ]);
    assert.equal(replies[0]!.headers.get("connection"), undefined, "kept alive");
    assert.equal(replies[0]!.headers.get("content-type"), "application/json");
    // Still open: a fourth request on the same connection.
    await c.send(requestHead("GET", "/d"));
    assert.equal(JSON.parse((await c.response()).body).path, "/d");
    assert.equal(metric(server, "flowd_http_connections_accepted_total"), 1);
    assert.equal(metric(server, "flowd_http_responses_total", { code: "2xx" }), 4);
  });
});

Deno.test("http server: HTTP/1.0 and Connection: close end the connection after the response", async () => {
  await withServer({}, async (_server, port) => {
    {
      await using c = await RawHttpClient.connect(port);
      await c.send("GET /old HTTP/1.0\r\n\r\n");
      const r = await c.response();
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("connection"), "close");
      assert.notEqual(await c.closedWithin(2000), undefined, "closed after an HTTP/1.0 response");
    }
    {
      await using c = await RawHttpClient.connect(port);
      await c.send("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /again HTTP/1.0\r\n\r\n");
      const first = await c.response();
      assert.equal(first.headers.get("connection"), "keep-alive");
      assert.equal(JSON.parse((await c.response()).body).path, "/again");
      assert.notEqual(await c.closedWithin(2000), undefined);
    }
    {
      await using c = await RawHttpClient.connect(port);
      await c.send(requestHead("GET", "/bye", ["Connection: close"]) + requestHead("GET", "/never"));
      const r = await c.response();
      assert.equal(r.headers.get("connection"), "close");
      assert.notEqual(await c.closedWithin(2000), undefined);
      await assert.rejects(
        c.response(100),
        /ended before a whole response/,
        "the pipelined one is not answered",
      );
    }
  });
});

Deno.test("http server: Expect: 100-continue gets a 100 before the body; chunked bodies are decoded", async () => {
  await withServer({}, async (_server, port) => {
    await using c = await RawHttpClient.connect(port);
    await c.send(requestHead("POST", "/expect", ["Content-Length: 5", "Expect: 100-continue"]));
    assert.equal((await c.response()).status, 100);
    await c.send("abcde");
    assert.equal(JSON.parse((await c.response()).body).body, "abcde");

    // Chunked, with an extension, a trailer, and chunks split across writes.
    await c.send(requestHead("POST", "/chunked", ["Transfer-Encoding: chunked"]) + "5;name=value\r\nhel");
    await new Promise((r) => setTimeout(r, 20));
    await c.send("lo\r\nA\r\n, chunked!\r");
    await new Promise((r) => setTimeout(r, 20));
    await c.send("\n0\r\nX-Trailer: yes\r\n\r\n");
    const r = await c.response();
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).body, "hello, chunked!");

    // 100-continue with a chunked body, and a body larger than the read buffer in pieces.
    await c.send(requestHead("POST", "/both", ["Transfer-Encoding: chunked", "Expect: 100-continue"]));
    assert.equal((await c.response()).status, 100);
    await c.send("3\r\nabc\r\n0\r\n\r\n");
    assert.equal(JSON.parse((await c.response()).body).body, "abc");
    const big = "x".repeat(100_000);
    await c.send(requestHead("POST", "/big", [`Content-Length: ${big.length}`]));
    for (let i = 0; i < big.length; i += 30_000) await c.send(big.slice(i, i + 30_000));
    assert.equal(JSON.parse((await c.response()).body).body.length, big.length);
  });
});

Deno.test("http server: curl's uploads (100-continue over 1 KiB, chunked) arrive whole", async () => {
  await withServer({}, async (_server, port) => {
    const body = "y".repeat(5000);
    for (const extra of [[], ["-H", "Transfer-Encoding: chunked"]]) {
      const out = await new Deno.Command("curl", {
        args: ["-sS", "--data-binary", body, ...extra, `http://127.0.0.1:${port}/curl`],
        stdout: "piped",
      }).output();
      assert.equal(out.code, 0);
      assert.equal(JSON.parse(new TextDecoder().decode(out.stdout)).body, body);
    }
  });
});

Deno.test("http server: ambiguous or broken framing is refused with 400 (505, 501, 417) and the connection closed", async () => {
  const cases: Array<[string, number, RegExp]> = [
    [requestHead("POST", "/", ["Content-Length: 3", "Transfer-Encoding: chunked"]) + "abc", 400, /both/],
    [requestHead("POST", "/", ["Content-Length: abc"]), 400, /Content-Length "abc" is not a number/],
    [requestHead("POST", "/", ["Content-Length: -1"]), 400, /not a number/],
    [requestHead("POST", "/", ["Content-Length: 3", "Content-Length: 3"]) + "abc", 400, /more than one/],
    [requestHead("POST", "/", ["Transfer-Encoding: chunked"]) + "zz\r\n", 400, /not a hexadecimal/],
    [requestHead("POST", "/", ["Transfer-Encoding: chunked"]) + "3\r\nabcd\r\n", 400, /longer than its size/],
    [requestHead("POST", "/", ["Transfer-Encoding: gzip, chunked"]), 501, /only chunked/],
    [requestHead("POST", "/", ["Transfer-Encoding: chunked, gzip"]), 400, /single chunked/],
    [requestHead("POST", "/", ["Expect: something-else"]), 417, /Expect "something-else"/],
    ["GET / HTTP/1.1\r\n\r\n", 400, /needs a Host header/],
    ["GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, /more than one Host/],
    ["GET / HTTP/1.1\r\nHost: a\r\nBad : x\r\n\r\n", 400, /not "Name: value"/],
    ["GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n", 400, /not "Name: value"/],
    ["GET / HTTP/1.1\r\nHost: a\nX-Smuggle: 1\r\n\r\n", 400, /control characters/],
    ["GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, /not supported/],
    ["GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, /request line/],
    ["GET\r\n\r\n", 400, /request line/],
    ["GET nopath HTTP/1.1\r\nHost: a\r\n\r\n", 400, /not a path/],
  ];
  await withServer({}, async (server, port) => {
    for (const [request, status, message] of cases) {
      await using c = await RawHttpClient.connect(port);
      await c.send(request);
      const r = await c.response();
      assert.equal(r.status, status, `${JSON.stringify(request)} → ${r.body}`);
      assert.match(r.body, message, JSON.stringify(request));
      if (status !== 200 && !/not a path/.test(String(message))) {
        assert.equal(r.headers.get("connection"), "close", JSON.stringify(request));
        assert.notEqual(await c.closedWithin(3000), undefined, `closed after ${JSON.stringify(request)}`);
      }
    }
    assert.ok(metric(server, "flowd_http_requests_rejected_total", { reason: "bad_request" }) >= 13);
    assert.equal(metric(server, "flowd_http_requests_rejected_total", { reason: "unsupported_version" }), 1);
    assert.equal(metric(server, "flowd_http_responses_total", { code: "5xx" }), 2);
  });
});

Deno.test("http server: an oversized head is a 431, an oversized body a 413 before it is sent", async () => {
  await withServer({ maxHeaderBytes: 1024, maxHeaderCount: 10, maxBodyBytes: 100 }, async (server, port) => {
    {
      await using c = await RawHttpClient.connect(port);
      await c.send(requestHead("GET", "/", [`X-Big: ${"a".repeat(2000)}`]));
      const r = await c.response();
      assert.equal(r.status, 431);
      assert.match(r.body, /limit of 1024 bytes/);
    }
    {
      // Never finished, but already past the limit: refused without waiting for the end of the head.
      await using c = await RawHttpClient.connect(port);
      await c.send(`GET /${"a".repeat(1100)}`);
      assert.equal((await c.response()).status, 431);
    }
    {
      await using c = await RawHttpClient.connect(port);
      await c.send(requestHead("GET", "/", Array.from({ length: 11 }, (_, i) => `X-${i}: v`)));
      const r = await c.response();
      assert.equal(r.status, 431);
      assert.match(r.body, /more than 10 header fields/);
    }
    {
      // Declared too large: answered at once, with 100-continue not sent.
      await using c = await RawHttpClient.connect(port);
      await c.send(requestHead("POST", "/", ["Content-Length: 101", "Expect: 100-continue"]));
      const r = await c.response(2000);
      assert.equal(r.status, 413);
      assert.match(r.body, /larger than the limit of 100 bytes/);
    }
    {
      // Chunked: refused once the chunks add up past the limit, while the client keeps sending.
      await using c = await RawHttpClient.connect(port);
      await c.send(
        requestHead("POST", "/", ["Transfer-Encoding: chunked"]) + "40\r\n" + "b".repeat(64) + "\r\n",
      );
      await c.send("40\r\n" + "b".repeat(64) + "\r\n");
      const r = await c.response();
      assert.equal(r.status, 413);
      // Exactly at the limit is fine.
      await using ok = await RawHttpClient.connect(port);
      await ok.send(post("/", "c".repeat(100)));
      assert.equal((await ok.response()).status, 200);
    }
    assert.equal(metric(server, "flowd_http_requests_rejected_total", { reason: "header_too_large" }), 3);
    assert.equal(metric(server, "flowd_http_requests_rejected_total", { reason: "body_too_large" }), 2);
  });
});

Deno.test("http server: HEAD gets the headers with Content-Length and no body", async () => {
  await withServer({}, async (_server, port) => {
    await using c = await RawHttpClient.connect(port);
    await c.send(requestHead("HEAD", "/h") + requestHead("GET", "/after"));
    // The raw client reads Content-Length bytes as the body, so read the HEAD answer by hand.
    const text = await new Promise<string>((resolve) => {
      let got = "";
      const buf = new Uint8Array(4096);
      const pump = async () => {
        while (!/\r\n\r\n[\s\S]*\r\n\r\n\{.*\}$/.test(got)) {
          const n = await c.conn.read(buf);
          if (n === null) break;
          got += new TextDecoder().decode(buf.subarray(0, n));
        }
        resolve(got);
      };
      pump();
    });
    const [headPart, rest] = [
      text.slice(0, text.indexOf("\r\n\r\n")),
      text.slice(text.indexOf("\r\n\r\n") + 4),
    ];
    assert.match(headPart, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(headPart, /content-length: \d+/);
    assert.match(rest, /^HTTP\/1\.1 200 OK\r\n/, "the next response follows the head directly");
    assert.match(rest, /"path":"\/after"/);
  });
});

Deno.test("http server: an unfinished head, a silent connection and an idle keep-alive are closed at their timeouts", async () => {
  await withServer(
    { headerTimeoutMs: SHORT, idleTimeoutMs: SHORT, bodyTimeoutMs: 10_000 },
    async (server, port) => {
      await using partial = await RawHttpClient.connect(port);
      await partial.send("GET / HTTP/1.1\r\nHost: test\r\nX-Slow: 1\r\n");
      await using silent = await RawHttpClient.connect(port);
      await using idle = await RawHttpClient.connect(port);
      await idle.send(requestHead("GET", "/"));
      assert.equal((await idle.response()).status, 200);
      const [a, b, c] = await Promise.all([partial, silent, idle].map((conn) => conn.closedWithin(5000)));
      for (const [what, ms] of [["unfinished head", a], ["silent", b], ["idle keep-alive", c]] as const) {
        assert.ok(ms !== undefined, `${what}: still open after 5 s`);
        assert.ok(ms >= SHORT - 50, `${what}: closed after ${ms} ms, before its timeout`);
      }
      assert.equal(partial.conn.remoteAddr.port, port);
      assert.equal(metric(server, "flowd_http_connections_timed_out_total", { timeout: "header" }), 2);
      assert.equal(metric(server, "flowd_http_connections_timed_out_total", { timeout: "idle" }), 1);
      assert.equal(server.connections, 0);
    },
  );
});

Deno.test("http server: a body that never finishes is answered 400 at the body timeout", async () => {
  await withServer({ bodyTimeoutMs: SHORT }, async (server, port) => {
    await using c = await RawHttpClient.connect(port);
    await c.send(requestHead("POST", "/", ["Content-Length: 100"]) + "only a part");
    const t0 = performance.now();
    const r = await c.response(5000);
    const ms = performance.now() - t0;
    assert.equal(r.status, 400);
    assert.match(r.body, /did not arrive within 0.3 s/);
    assert.ok(ms >= SHORT - 50, `answered after ${ms} ms`);
    assert.notEqual(await c.closedWithin(2000), undefined);
    assert.equal(metric(server, "flowd_http_connections_timed_out_total", { timeout: "body" }), 1);
    assert.equal(metric(server, "flowd_http_requests_rejected_total", { reason: "body_timeout" }), 1);
  });
});

Deno.test("http server: a request arriving just before the idle timeout gets the whole header time", async () => {
  await withServer({ headerTimeoutMs: SHORT, idleTimeoutMs: SHORT }, async (_server, port) => {
    await using c = await RawHttpClient.connect(port);
    await c.send(requestHead("GET", "/1"));
    await c.response();
    await new Promise((r) => setTimeout(r, SHORT * 0.6));
    await c.send("GET /2 HTTP/1.1\r\n"); // the idle wait ends, the header time starts
    await new Promise((r) => setTimeout(r, SHORT * 0.6));
    await c.send("Host: test\r\n\r\n");
    assert.equal(JSON.parse((await c.response()).body).path, "/2");
  });
});

Deno.test("http server: connections beyond maxConnections are closed at once; the cap frees again", async () => {
  await withServer({ maxConnections: 3 }, async (server, port) => {
    const held = await Promise.all([1, 2, 3].map(() => RawHttpClient.connect(port)));
    try {
      for (const c of held) {
        await c.send(requestHead("GET", "/"));
        assert.equal((await c.response()).status, 200);
      }
      await using extra = await RawHttpClient.connect(port);
      await extra.send(requestHead("GET", "/")).catch(() => {});
      assert.notEqual(await extra.closedWithin(2000), undefined, "the fourth connection is closed");
      assert.equal(metric(server, "flowd_http_connections_refused_total"), 1);
      assert.equal(metric(server, "flowd_http_connections_open"), 3);

      held.pop()!.close();
      const deadline = Date.now() + 3000;
      while (server.connections > 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      await using again = await RawHttpClient.connect(port);
      await again.send(requestHead("GET", "/"));
      assert.equal((await again.response()).status, 200, "a place is free again");
    } finally {
      for (const c of held) c.close();
    }
  });
});

Deno.test("http server: a truncated body is a 400, and many are one rate-limited log line", async () => {
  using logs = captureLogs("info");
  await withServer({}, async (server, port) => {
    for (let i = 0; i < 20; i++) {
      await using c = await RawHttpClient.connect(port);
      await c.send(requestHead("POST", "/", ["Content-Length: 1000"]) + "x".repeat(10));
      await c.closeWrite();
      const r = await c.response();
      assert.equal(r.status, 400);
      assert.match(r.body, /ended before its declared length/);
    }
    assert.equal(metric(server, "flowd_http_requests_rejected_total", { reason: "truncated_body" }), 20);
    assert.equal(metric(server, "flowd_http_responses_total", { code: "5xx" }), 0);
  });
  const refused = logs.matching(/msg="HTTP request refused"/);
  assert.equal(refused.length, 1, logs.lines.join("\n"));
  assert.match(
    refused[0]!,
    /^level=INFO .*status=400 reason="the request body ended before its declared length"/,
  );
  assert.ok(!logs.lines.some((l) => /level=ERROR/.test(l)), logs.lines.join("\n"));
});

Deno.test("http server: a failing handler is a 500 with a rate-limited ERROR line; the connection goes on", async () => {
  using logs = captureLogs("info");
  await withServer({}, async (server, port) => {
    await using c = await RawHttpClient.connect(port);
    for (let i = 0; i < 5; i++) {
      await c.send(requestHead("GET", "/fail"));
      assert.equal((await c.response()).status, 500);
    }
    await c.send(requestHead("GET", "/ok"));
    assert.equal((await c.response()).status, 200);
    assert.equal(metric(server, "flowd_http_requests_rejected_total", { reason: "handler_error" }), 5);
  });
  const errors = logs.matching(/level=ERROR/);
  assert.equal(errors.length, 1, logs.lines.join("\n"));
  assert.match(errors[0]!, /msg="HTTP request failed" .*err="the handler broke"/);
});

Deno.test("http server: stop closes idle connections at once, finishes requests in flight, refuses new ones", async () => {
  const server = HttpServer.listen(
    { hostname: "127.0.0.1", port: 0, name: "test", log: logger("test") },
    echo,
  );
  const port = server.addr.port;
  await using idle = await RawHttpClient.connect(port);
  await idle.send(requestHead("GET", "/"));
  await idle.response();
  await using busy = await RawHttpClient.connect(port);
  await busy.send(requestHead("GET", "/slow?ms=300"));
  await new Promise((r) => setTimeout(r, 50));
  const t0 = performance.now();
  const stopped = server.stop();
  assert.notEqual(await idle.closedWithin(1000), undefined, "the idle connection is closed at once");
  const r = await busy.response();
  assert.equal(r.status, 200, "the request in flight is answered");
  assert.equal(r.headers.get("connection"), "close");
  await stopped;
  assert.ok(performance.now() - t0 < 2000);
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }));
});

Deno.test("http server: stop gives up on a handler that never answers after shutdownTimeoutMs", async () => {
  const server = HttpServer.listen(
    { hostname: "127.0.0.1", port: 0, name: "test", log: logger("test"), shutdownTimeoutMs: 200 },
    echo,
  );
  await using c = await RawHttpClient.connect(server.addr.port);
  await c.send(requestHead("GET", "/slow?ms=1500"));
  await new Promise((r) => setTimeout(r, 50));
  const t0 = performance.now();
  await server.stop();
  const ms = performance.now() - t0;
  assert.ok(ms >= 150 && ms < 1000, `stop took ${ms} ms`);
  assert.notEqual(await c.closedWithin(1000), undefined);
  await new Promise((r) => setTimeout(r, 1500)); // let the handler's timer end inside the test
});

Deno.test("http server: limits must be positive numbers", () => {
  assert.throws(
    () =>
      HttpServer.listen(
        { hostname: "127.0.0.1", port: 0, name: "test", log: logger("test"), idleTimeoutMs: 0 },
        echo,
      ),
    /idleTimeoutMs must be a positive number, not 0/,
  );
});

Deno.test("http server: a chunked body cut short is a 400; header values with Latin-1 bytes reach the handler", async () => {
  await withServer({}, async (_server, port) => {
    {
      await using c = await RawHttpClient.connect(port);
      await c.send(requestHead("POST", "/", ["Transfer-Encoding: chunked"]) + "5\r\nab");
      await c.closeWrite();
      const r = await c.response();
      assert.equal(r.status, 400);
      assert.match(r.body, /ended before its last chunk/);
    }
    const seen: string[] = [];
    const server = HttpServer.listen(
      { hostname: "127.0.0.1", port: 0, name: "latin1", log: logger("test") },
      (req) => {
        seen.push(req.headers.get("x-name") ?? "");
        return new Response("ok", { headers: { "x-back": req.headers.get("x-name") ?? "" } });
      },
    );
    try {
      await using c = await RawHttpClient.connect(server.addr.port);
      await c.send(
        new Uint8Array([
          ...new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\nX-Name: Ren"),
          0xe9,
          ...new TextEncoder().encode("e\r\n\r\n"),
        ]),
      );
      const r = await c.response();
      assert.equal(r.status, 200);
      assert.deepEqual(seen, ["Ren\u00e9e"]);
      assert.equal(r.headers.get("x-back"), "Ren\u00e9e", "written back as the one byte 0xe9");
    } finally {
      await server.stop();
    }
  });
});

Deno.test("http server: a streamed fast reply is chunked to HTTP/1.1, close-delimited to HTTP/1.0, headless for HEAD; a failing producer is a 500 or a closed connection", async () => {
  const buffer = new Uint8Array(1000);
  let produced = 0;
  /** 300 chunks of 1000 bytes handed out in one reused buffer (each must be written before the next). */
  async function* chunks(fail: "first" | "later" | undefined): AsyncGenerator<Uint8Array> {
    if (fail === "first") throw new Error("nothing to say");
    for (let i = 0; i < 300; i++) {
      if (fail === "later" && i === 5) throw new Error("broke half way");
      buffer.fill(97 + (i % 26));
      produced++;
      await Promise.resolve();
      yield i === 7 ? buffer.subarray(0, 0) : buffer; // an empty chunk must not end the body
    }
  }
  const expected = Array.from(
    { length: 300 },
    (_, i) => i === 7 ? "" : String.fromCharCode(97 + (i % 26)).repeat(1000),
  )
    .join("");
  using logs = captureLogs();
  const server = HttpServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    name: "test",
    log: logger("test"),
    fast: (head) => {
      if (!head.target.startsWith("/stream")) return undefined;
      const fail = head.target === "/stream/first"
        ? "first"
        : head.target === "/stream/later"
        ? "later"
        : undefined;
      return { status: 200, headers: [["content-type", "text/plain"]], body: chunks(fail) };
    },
  }, echo);
  try {
    // fetch decodes the chunked body; two in a row on one kept-alive connection.
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`http://127.0.0.1:${server.addr.port}/stream`);
      assert.equal(res.headers.get("transfer-encoding"), "chunked");
      assert.equal(res.headers.get("content-length"), null);
      assert.equal(await res.text(), expected);
    }
    {
      await using c = await RawHttpClient.connect(server.addr.port);
      await c.send(requestHead("GET", "/stream") + requestHead("GET", "/other"));
      const r = await c.response();
      assert.equal(r.body, expected);
      assert.equal(JSON.parse((await c.response()).body).path, "/other", "the connection goes on after it");
    }
    {
      await using c = await RawHttpClient.connect(server.addr.port);
      await c.send("GET /stream HTTP/1.0\r\n\r\n");
      assert.notEqual(await c.closedWithin(5000), undefined, "closed to end the body");
      const text = c.received();
      const split = text.indexOf("\r\n\r\n");
      assert.match(text.slice(0, split), /^HTTP\/1\.1 200 OK\r\n/);
      assert.doesNotMatch(text.slice(0, split), /transfer-encoding|content-length/i);
      assert.equal(text.slice(split + 4), expected);
    }
    {
      await using c = await RawHttpClient.connect(server.addr.port);
      const before = produced;
      await c.send(requestHead("HEAD", "/stream") + requestHead("GET", "/after"));
      const r = await c.response(5000, { bodyless: true });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("transfer-encoding"), "chunked");
      assert.equal(JSON.parse((await c.response()).body).path, "/after");
      assert.equal(produced, before, "HEAD does not run the producer");
    }
    {
      await using c = await RawHttpClient.connect(server.addr.port);
      await c.send(requestHead("GET", "/stream/first"));
      assert.equal((await c.response()).status, 500);
      assert.notEqual(await c.closedWithin(2000), undefined);
    }
    {
      await using c = await RawHttpClient.connect(server.addr.port);
      await c.send(requestHead("GET", "/stream/later"));
      assert.notEqual(await c.closedWithin(5000), undefined, "closed mid-body");
      const text = c.received();
      assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
      assert.doesNotMatch(text, /\r\n0\r\n\r\n$/, "no last chunk: the client sees a truncated body");
    }
    assert.equal(metric(server, "flowd_http_requests_rejected_total", { reason: "handler_error" }), 2);
    assert.ok(logs.matching(/HTTP response body failed/).length >= 1, logs.lines.join("\n"));
  } finally {
    await server.stop();
  }
});
