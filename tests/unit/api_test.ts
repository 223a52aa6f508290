import assert from "node:assert/strict";
import { ApiPlugin, type ApiPluginOptions } from "../../src/plugins/api.ts";
import { formatApiTime } from "../../src/plugins/api_json.ts";
import type { EmitResult, EventSink } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { StartupError } from "../../src/core/errors.ts";
import { nowMicros, parseRfc3339Micros } from "../../src/core/time.ts";
import { setupLogging } from "../../src/core/log.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { RawHttpClient, requestHead } from "../helpers/raw_http.ts";

const APP = "flowd-go-test";
const LIMIT = 2048;
const DUMMY_ON = { enableDummyEndpoints: true };

/** Records what the plugin emits; refuses everything while `refusal` is set. */
class RecordingSink implements EventSink {
  readonly events: FlowEvent[] = [];
  refusal: string | undefined;
  /** Set: the sink reports back-pressure (a backend queue is full). */
  busy: Promise<void> | undefined;
  whenRoom(): Promise<void> | undefined {
    return this.busy;
  }
  emit(event: FlowEvent): EmitResult {
    if (this.refusal !== undefined) return { accepted: false, reason: this.refusal };
    this.events.push(event);
    return { accepted: true };
  }
}

interface Served {
  url: string;
  sink: RecordingSink;
  plugin: ApiPlugin;
}

/** Runs `fn` against a started plugin on `host` (options `over`), always stopping it afterwards. */
async function withApi(
  host: string,
  fn: (s: Served) => Promise<void>,
  over: Partial<ApiPluginOptions> = {},
): Promise<void> {
  const sink = new RecordingSink();
  const plugin = new ApiPlugin({
    bindAddress: host,
    bindPort: 0,
    maxBodyBytes: LIMIT,
    application: APP,
    ...over,
  });
  await plugin.start(sink);
  const literal = host.replace(/^\[|\]$/g, "");
  const urlHost = literal.includes(":") ? `[${literal === "::" ? "::1" : literal}]` : literal;
  try {
    await fn({ url: `http://${urlHost}:${plugin.port}`, sink, plugin });
  } finally {
    await plugin.stop();
  }
}

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: Record<string, unknown>;
}

async function call(url: string, init?: RequestInit): Promise<Reply> {
  const res = await fetch(url, init);
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch { /* left empty; the test checks text when it matters */ }
  return { status: res.status, headers: res.headers, text, json };
}

function post(url: string, body: BodyInit, contentType: string | null = "application/json"): Promise<Reply> {
  const headers = contentType === null ? undefined : { "content-type": contentType };
  return call(`${url}/flow`, { method: "POST", body, headers });
}

/** The event with addresses as text: assert.deepEqual cannot see IpAddress's private bytes. */
function plain(e: FlowEvent | undefined): Record<string, unknown> | undefined {
  return e && { ...e, src: `${e.src.address}/${e.src.port}`, dst: `${e.dst.address}/${e.dst.port}` };
}

function assertJsonReply(r: Reply, status: number): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.headers.get("content-type"), "application/json");
  assert.ok(r.text.endsWith("\n"), "trailing newline");
}

const ROUTES_BODY = `{
    "ApiRoutes": [
        {
            "method": "GET",
            "path": "/",
            "name": "listRoutes"
        },
        {
            "method": "GET",
            "path": "/dummy/start",
            "name": "dummyFlowStart"
        },
        {
            "method": "GET",
            "path": "/dummy/end",
            "name": "dummyFlowEnd"
        },
        {
            "method": "POST",
            "path": "/flow",
            "name": "postFlow"
        }
    ]
}
`;

const DUMMY = {
  Protocol: 0,
  Family: 10,
  Src: "[::1]:2345",
  Dst: "[::1]:5777",
  Experiment: 65535,
  Activity: 65535,
  CurrentTs: "0001-01-01T00:00:00Z",
  Info: { tcpInfo: null },
  Application: APP,
  FlowInfoChans: null,
};

for (const host of ["127.0.0.1", "::1"]) {
  Deno.test(`api on ${host}: GET / lists the routes, pretty-printed with 4 spaces`, async () => {
    await withApi(host, async ({ url, sink }) => {
      const r = await call(`${url}/`);
      assertJsonReply(r, 200);
      assert.equal(r.text, ROUTES_BODY);
      assert.equal(sink.events.length, 0);
    }, DUMMY_ON);
  });

  Deno.test(`api on ${host}: GET /dummy/start and /dummy/end emit and echo the dummy flow`, async () => {
    await withApi(host, async ({ url, sink }) => {
      const before = nowMicros();
      const start = await call(`${url}/dummy/start`);
      const end = await call(`${url}/dummy/end`);
      const after = nowMicros();
      assertJsonReply(start, 200);
      assertJsonReply(end, 200);
      assert.ok(start.text.startsWith('{\n    "State": 2,\n    "Protocol": 0,\n'), start.text);

      const { StartTs, EndTs, ...startRest } = start.json;
      assert.deepEqual(startRest, { State: 2, ...DUMMY });
      assert.equal(EndTs, "0001-01-01T00:00:00Z");
      const startTs = parseRfc3339Micros(String(StartTs))!;
      assert.ok(startTs >= before && startTs <= after, `StartTs ${StartTs} is now`);
      assert.match(String(StartTs), /Z$/);

      const { StartTs: endStart, EndTs: endEnd, ...endRest } = end.json;
      assert.deepEqual(endRest, { State: 3, ...DUMMY });
      assert.equal(endStart, "0001-01-01T00:00:00Z");
      const endTs = parseRfc3339Micros(String(endEnd))!;
      assert.ok(endTs >= before && endTs <= after, `EndTs ${endEnd} is now`);

      assert.equal(sink.events.length, 2);
      const [s, e] = sink.events;
      assert.deepEqual(plain(s), {
        state: "start",
        protocol: "tcp",
        family: "ipv6",
        src: "::1/2345",
        dst: "::1/5777",
        experimentId: 65535,
        activityId: 65535,
        application: APP,
        startTime: s!.startTime,
      });
      assert.equal(formatApiTime(s!.startTime), StartTs);
      assert.equal(e!.state, "end");
      assert.equal(formatApiTime(e!.endTime), endEnd);
      assert.equal(e!.startTime, undefined);
    }, DUMMY_ON);
  });

  Deno.test(`api on ${host}: POST /flow emits exactly the posted flow and echoes it`, async () => {
    await withApi(host, async ({ url, sink }) => {
      const body = {
        State: 3,
        Protocol: 1,
        Family: 2,
        Src: "192.0.2.1:40000",
        Dst: { IP: "198.51.100.9", Port: 443 },
        Experiment: 4294967295,
        Activity: 0,
        StartTs: "2025-03-01T10:00:00.123456+01:00",
        EndTs: "2025-03-01T09:05:00.5Z",
        Application: "my-transfer-tool",
      };
      const r = await post(url, JSON.stringify(body), "Application/JSON; charset=utf-8");
      assertJsonReply(r, 200);
      assert.equal(
        r.text,
        `{
    "State": 3,
    "Protocol": 1,
    "Family": 2,
    "Src": "192.0.2.1:40000",
    "Dst": "198.51.100.9:443",
    "Experiment": 4294967295,
    "Activity": 0,
    "StartTs": "2025-03-01T09:00:00.123456Z",
    "EndTs": "2025-03-01T09:05:00.5Z",
    "CurrentTs": "0001-01-01T00:00:00Z",
    "Info": {
        "tcpInfo": null
    },
    "Application": "my-transfer-tool",
    "FlowInfoChans": null
}
`,
      );
      assert.equal(sink.events.length, 1);
      assert.deepEqual(plain(sink.events[0]), {
        state: "end",
        protocol: "udp",
        family: "ipv4",
        src: "192.0.2.1/40000",
        dst: "198.51.100.9/443",
        experimentId: 4294967295,
        activityId: 0,
        startTime: parseRfc3339Micros("2025-03-01T09:00:00.123456Z"),
        endTime: parseRfc3339Micros("2025-03-01T09:05:00.5Z"),
        application: "my-transfer-tool",
      });
    });
  });
}

const GOOD = { State: 2, Src: "[2001:db8::1]:2345", Dst: "[2001:db8::2]:5777", Experiment: 1, Activity: 2 };

Deno.test("api: POST /flow fills StartTs of a start, derives Family and uses the configured application", async () => {
  await withApi("127.0.0.1", async ({ url, sink }) => {
    const before = nowMicros();
    const r = await post(url, JSON.stringify(GOOD));
    assertJsonReply(r, 200);
    const ev = sink.events[0]!;
    assert.equal(ev.family, "ipv6");
    assert.equal(r.json.Family, 10);
    assert.equal(ev.application, APP);
    assert.ok(ev.startTime! >= before && ev.startTime! <= nowMicros());
    assert.equal(r.json.StartTs, formatApiTime(ev.startTime));
  });
});

Deno.test("api: replies escape <, > and & the way Go's JSON encoder does", async () => {
  await withApi("127.0.0.1", async ({ url, sink }) => {
    const r = await post(url, JSON.stringify({ ...GOOD, Application: "a<b>&c" }));
    assertJsonReply(r, 200);
    assert.ok(r.text.includes('"Application": "a\\u003cb\\u003e\\u0026c"'), r.text);
    assert.equal(r.json.Application, "a<b>&c");
    assert.equal(sink.events[0]!.application, "a<b>&c");
  });
});

Deno.test("api: every 400 names the bad field and emits nothing", async () => {
  const { State: _s, ...noState } = GOOD;
  const cases: Array<[string, string, RegExp]> = [
    [JSON.stringify(noState), "State", /State is required/],
    [JSON.stringify({ ...GOOD, State: 4 }), "State", /State must be .* not 4/],
    [JSON.stringify({ ...GOOD, Src: "[2001:db8::1]" }), "Src", /Src "\[2001:db8::1\]" is not a valid/],
    [JSON.stringify({ ...GOOD, Dst: "10.0.0.1:80" }), "Dst", /Dst 10.0.0.1:80 is ipv4 but Src/],
    [JSON.stringify({ ...GOOD, Family: 2 }), "Family", /Family 2 \(ipv4\) does not match/],
    [
      JSON.stringify({ ...GOOD, Experiment: -1 }),
      "Experiment",
      /Experiment must be an integer in 0..4294967295, not -1/,
    ],
    [JSON.stringify({ ...GOOD, Experiment: 2 ** 32 }), "Experiment", /not 4294967296/],
    [JSON.stringify({ ...GOOD, Experiment: 1.5 }), "Experiment", /not 1.5/],
    [JSON.stringify({ ...GOOD, Experiment: "x" }), "Experiment", /not "x"/],
    [JSON.stringify({ ...GOOD, Activity: -1 }), "Activity", /Activity must be an integer/],
    [JSON.stringify({ ...GOOD, Colour: "blue" }), "Colour", /unknown key "Colour"/],
    ["", "body", /the request body is empty/],
    ["  \n", "body", /the request body is empty/],
    ["{State: 2}", "body", /not valid JSON/],
    ["[1, 2]", "body", /must be a JSON object/],
    ["42", "body", /must be a JSON object/],
    ["null", "body", /must be a JSON object/],
  ];
  await withApi("127.0.0.1", async ({ url, sink, plugin }) => {
    for (const [body, field, message] of cases) {
      const r = await post(url, body);
      assertJsonReply(r, 400);
      assert.ok(r.text.startsWith('{\n    "message": '), r.text);
      assert.equal(r.json.field, field, `field for body ${body}`);
      assert.match(String(r.json.message), message);
    }
    const bad = await post(url, new Uint8Array([0x7b, 0xff, 0x7d]));
    assertJsonReply(bad, 400);
    assert.match(String(bad.json.message), /not valid UTF-8/);
    assert.equal(sink.events.length, 0);
    // Counted by the key at fault; a key the API does not have is one reason, whatever its name.
    const rejected = Object.fromEntries(
      plugin.health().filter((m) => m.name === "flowd_api_requests_rejected_total").map((m) => [
        m.labels!.reason,
        m.value,
      ]),
    );
    assert.deepEqual(rejected, {
      State: 2,
      Src: 1,
      Dst: 1,
      Family: 1,
      Experiment: 4,
      Activity: 1,
      "unknown-key": 1,
      body: 7,
    });
  });
});

Deno.test("api: an oversize body is a 413 naming the limit, with Content-Length or chunked", async () => {
  await withApi("127.0.0.1", async ({ url, sink, plugin }) => {
    const big = JSON.stringify({ ...GOOD, Application: "x".repeat(LIMIT) });
    const declared = await post(url, big);
    assertJsonReply(declared, 413);
    assert.equal(declared.json.message, `the request body is larger than the limit of ${LIMIT} bytes`);

    // A long chunked upload (8 MiB, no Content-Length): the limit must be enforced while reading.
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(ctrl) {
        if (++pulled > 16384) return ctrl.close();
        ctrl.enqueue(new TextEncoder().encode(" ".repeat(512)));
      },
    });
    const chunked = await post(url, endless);
    assertJsonReply(chunked, 413);
    assert.match(String(chunked.json.message), /limit of 2048 bytes/);
    assert.ok(pulled > LIMIT / 512, "the client sent more than the limit");

    // Exactly at the limit is fine.
    const padded = JSON.stringify(GOOD).padEnd(LIMIT, " ");
    assert.equal(new TextEncoder().encode(padded).length, LIMIT);
    assertJsonReply(await post(url, padded), 200);
    assert.equal(sink.events.length, 1);

    // The abandoned upload must not hold up shutdown (a server draining it would, for ever).
    const t0 = performance.now();
    await plugin.stop();
    assert.ok(performance.now() - t0 < 1000, `stop() took ${performance.now() - t0} ms`);
  });
});

Deno.test("api: a body that is not declared as JSON is a 415", async () => {
  await withApi("127.0.0.1", async ({ url, sink }) => {
    const text = await post(url, JSON.stringify(GOOD), "text/plain");
    assertJsonReply(text, 415);
    assert.equal(text.json.message, 'Content-Type must be application/json, not "text/plain"');
    const form = await post(url, "State=2", "application/x-www-form-urlencoded");
    assertJsonReply(form, 415);
    const none = await post(url, new TextEncoder().encode(JSON.stringify(GOOD)), null);
    assertJsonReply(none, 415);
    assert.match(String(none.json.message), /no Content-Type/);
    assert.equal(sink.events.length, 0);
  });
});

Deno.test("api: unknown paths are 404 and wrong methods 405 with Allow, like echo", async () => {
  await withApi("::1", async ({ url, sink }) => {
    const missing = await call(`${url}/nope`);
    assertJsonReply(missing, 404);
    assert.equal(missing.text, '{"message":"Not Found"}\n');
    assertJsonReply(await call(`${url}/dummy/start/`), 404);

    const getFlow = await call(`${url}/flow`);
    assertJsonReply(getFlow, 405);
    assert.equal(getFlow.text, '{"message":"Method Not Allowed"}\n');
    assert.equal(getFlow.headers.get("allow"), "POST");

    const postDummy = await call(`${url}/dummy/start`, { method: "POST", body: "{}" });
    assertJsonReply(postDummy, 405);
    assert.equal(postDummy.headers.get("allow"), "GET");

    const head = await fetch(`${url}/dummy/start`, { method: "HEAD" });
    await head.body?.cancel();
    assert.equal(head.status, 405);
    assertJsonReply(await call(`${url}/`, { method: "DELETE" }), 405);
    assert.equal(sink.events.length, 0, "no event from HEAD or wrong methods");
  }, DUMMY_ON);
});

Deno.test("api: a refusing sink turns into 503 with its reason", async () => {
  await withApi("127.0.0.1", async ({ url, sink }) => {
    sink.refusal = "every backend queue is full";
    const r = await post(url, JSON.stringify(GOOD));
    assertJsonReply(r, 503);
    assert.equal(r.json.message, "the event was not accepted: every backend queue is full");
    const dummy = await call(`${url}/dummy/end`);
    assertJsonReply(dummy, 503);
    assert.equal(sink.events.length, 0);
    sink.refusal = undefined;
    assertJsonReply(await post(url, JSON.stringify(GOOD)), 200);
  }, DUMMY_ON);
});

Deno.test("api: a full backend queue (back-pressure) gives 503 with Retry-After and loses nothing", async () => {
  await withApi("127.0.0.1", async ({ url, sink, plugin }) => {
    sink.busy = new Promise(() => {});
    const r = await post(url, JSON.stringify(GOOD));
    assertJsonReply(r, 503);
    assert.equal(r.headers.get("retry-after"), "1");
    assert.match(String(r.json.message), /queue is full; retry later/);
    assert.equal(sink.events.length, 0, "the event was not half-taken");
    assert.equal(plugin.health().find((m) => m.name === "flowd_api_busy_total")?.value, 1);
    sink.busy = undefined;
    assertJsonReply(await post(url, JSON.stringify(GOOD)), 200);
    assert.equal(sink.events.length, 1);
  });
});

Deno.test("api: binding a port in use or a foreign address fails start() with a StartupError", async () => {
  await withApi("127.0.0.1", async ({ plugin }) => {
    const second = new ApiPlugin({ bindAddress: "127.0.0.1", bindPort: plugin.port, application: APP });
    await assert.rejects(second.start(new RecordingSink()), (err: unknown) => {
      assert.ok(err instanceof StartupError);
      assert.match(err.message, new RegExp(`api: cannot listen on 127.0.0.1:${plugin.port}: .*in use`));
      return true;
    });
    await second.stop();
  });
  const foreign = new ApiPlugin({ bindAddress: "192.0.2.1", bindPort: 0, application: APP });
  await assert.rejects(foreign.start(new RecordingSink()), /api: cannot listen on 192.0.2.1:0: /);
  assert.throws(
    () => new ApiPlugin({ bindAddress: "::1", bindPort: 70000, application: APP }),
    /bindPort 70000/,
  );
});

Deno.test("api: IPv6 wildcard and bracketed bind addresses work", async () => {
  for (const host of ["::", "[::1]"]) {
    await withApi(host, async ({ url }) => {
      assertJsonReply(await call(`${url}/`), 200);
    });
  }
});

Deno.test("api: stop() answers a stalled upload with 503 and does not wait for it", async () => {
  await withApi("127.0.0.1", async ({ url, sink, plugin }) => {
    let sent = false;
    let release = () => {};
    const stalled = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        if (!sent) {
          sent = true;
          ctrl.enqueue(new TextEncoder().encode('{"State": 2,'));
          return;
        }
        await new Promise<void>((r) => release = r);
        ctrl.close();
      },
    });
    const reply = post(url, stalled);
    while (!sent) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    await plugin.stop();
    assert.ok(performance.now() - t0 < 1000, `stop() took ${performance.now() - t0} ms`);
    const r = await reply;
    assertJsonReply(r, 503);
    assert.equal(r.json.message, "the daemon is shutting down");
    release();
    assert.equal(sink.events.length, 0);
  });
});

Deno.test("api: stop() answers a stalled upload with a Content-Length with 503 too", async () => {
  await withApi("127.0.0.1", async ({ sink, plugin }) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: plugin.port });
    try {
      const head =
        "POST /flow HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
      await conn.write(new TextEncoder().encode(head + '{"State": 2,'));
      await new Promise((r) => setTimeout(r, 50));
      const t0 = performance.now();
      await plugin.stop();
      assert.ok(performance.now() - t0 < 1000, `stop() took ${performance.now() - t0} ms`);
      let reply = "";
      const buf = new Uint8Array(4096);
      for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
        reply += new TextDecoder().decode(buf.subarray(0, n));
        if (reply.includes("shutting down")) break;
      }
      assert.match(reply, /^HTTP\/1.1 503 /);
      assert.match(reply, /"message": "the daemon is shutting down"/);
      assert.equal(sink.events.length, 0);
    } finally {
      conn.close();
    }
  });
});

Deno.test("api: logs accepted events at debug and rejections at info, rate-limited", async () => {
  const lines: string[] = [];
  setupLogging({ level: "debug", withTime: false, write: (line) => lines.push(line) });
  try {
    await withApi("127.0.0.1", async ({ url }) => {
      assertJsonReply(await post(url, JSON.stringify(GOOD)), 200);
      for (let i = 0; i < 5; i++) {
        assertJsonReply(await post(url, JSON.stringify({ ...GOOD, State: 9 })), 400);
      }
    });
  } finally {
    setupLogging({ level: "error", withTime: false, write: () => {} });
  }
  const mine = lines.filter((l) => l.includes("logger=plugins.api"));
  assert.ok(
    mine.some((l) =>
      l.startsWith("level=DEBUG") && l.includes('msg="api accepted a flow event"') &&
      l.includes('flow="start tcp [2001:db8::1]:2345 [2001:db8::2]:5777 exp=1 act=2"')
    ),
    mine.join("\n"),
  );
  const rejected = mine.filter((l) => l.includes('msg="api rejected a request"'));
  assert.equal(rejected.length, 1, "later rejections within the interval are suppressed");
  assert.ok(rejected[0]!.startsWith("level=INFO") && rejected[0]!.includes("status=400"), rejected[0]);
  assert.match(rejected[0]!, /reason="State must be .* not 9"/);
});

Deno.test("api: stop() is safe before start and twice, and closes the listener", async () => {
  const idle = new ApiPlugin({ bindAddress: "127.0.0.1", bindPort: 0, application: APP });
  await idle.stop();
  assert.throws(() => idle.port, /not been started/);

  const plugin = new ApiPlugin({ bindAddress: "127.0.0.1", bindPort: 0, application: APP });
  await plugin.start(new RecordingSink());
  const port = plugin.port;
  assertJsonReply(await call(`http://127.0.0.1:${port}/`), 200);
  await Promise.all([plugin.stop(), plugin.stop()]);
  await plugin.stop();
  await assert.rejects(fetch(`http://127.0.0.1:${port}/`), TypeError);
  await assert.rejects(plugin.start(new RecordingSink()), /already started/);
});

// ---- hardening: slow clients, the connection cap, truncated bodies, dummy routes, the bearer token ----

const SHORT_LIMITS = { headerTimeoutMs: 300, bodyTimeoutMs: 300, idleTimeoutMs: 300 };
const flowHead = (length: number, extra: string[] = []) =>
  requestHead("POST", "/flow", ["Content-Type: application/json", `Content-Length: ${length}`, ...extra]);

Deno.test("api: slow clients are closed at their timeouts: head never finished, body never finished, idle keep-alive", async () => {
  await withApi("127.0.0.1", async ({ plugin, sink }) => {
    await using head = await RawHttpClient.connect(plugin.port);
    await head.send("POST /flow HTTP/1.1\r\nHost: test\r\n");
    await using body = await RawHttpClient.connect(plugin.port);
    await body.send(flowHead(200) + '{"State": 2,');
    await using idle = await RawHttpClient.connect(plugin.port);
    await idle.send(requestHead("GET", "/"));
    assert.equal((await idle.response()).status, 200);

    const closed = await Promise.all([head, body, idle].map((c) => c.closedWithin(5000)));
    assert.deepEqual(closed.map((ms) => ms !== undefined), [true, true, true], `closed after ${closed} ms`);
    const late = await body.response(); // answered before it was closed
    assert.equal(late.status, 400);
    assert.match(JSON.parse(late.body).message, /did not arrive within 0.3 s/);
    assert.equal(sink.events.length, 0);
    const timeouts = Object.fromEntries(
      plugin.health().filter((m) => m.name === "flowd_http_connections_timed_out_total").map((
        m,
      ) => [m.labels!.timeout, m.value]),
    );
    assert.deepEqual(timeouts, { header: 1, body: 1, idle: 1, write: 0 });
  }, { limits: SHORT_LIMITS });
});

Deno.test("api: connections beyond maxConnections are closed at once, and accepted again once one closes", async () => {
  await withApi("127.0.0.1", async ({ plugin, url }) => {
    const held = await Promise.all([1, 2].map(() => RawHttpClient.connect(plugin.port)));
    try {
      await new Promise((r) => setTimeout(r, 50));
      await using third = await RawHttpClient.connect(plugin.port);
      assert.notEqual(await third.closedWithin(2000), undefined, "the third connection is closed");
      held.pop()!.close();
      const deadline = Date.now() + 3000;
      let status = 0;
      while (status !== 200 && Date.now() < deadline) {
        status = await fetch(`${url}/`).then(async (r) => (await r.body?.cancel(), r.status), () => 0);
      }
      assert.equal(status, 200);
      const refused = plugin.health().find((m) => m.name === "flowd_http_connections_refused_total");
      assert.ok(refused!.value >= 1);
    } finally {
      for (const c of held) c.close();
    }
  }, { limits: { maxConnections: 2 } });
});

Deno.test("api: a truncated body is a 400 (never a 500), logged once for many", async () => {
  using logs = captureLogs("info");
  await withApi("127.0.0.1", async ({ plugin, sink }) => {
    for (let i = 0; i < 25; i++) {
      await using c = await RawHttpClient.connect(plugin.port);
      await c.send(flowHead(500) + '{"State": 2, "Src": "[2001:db8::1]:2345"');
      await c.closeWrite();
      const r = await c.response();
      assert.equal(r.status, 400);
      assert.equal(r.headers.get("content-type"), "application/json");
      assert.equal(JSON.parse(r.body).message, "the request body ended before its declared length");
    }
    assert.equal(sink.events.length, 0);
  });
  const mine = logs.lines.filter((l) => l.includes("logger=plugins.api"));
  assert.ok(!mine.some((l) => /level=(ERROR|WARN)/.test(l)), mine.join("\n"));
  assert.equal(mine.filter((l) => /request refused/.test(l)).length, 1, mine.join("\n"));
});

Deno.test("api: POST /flow with Expect: 100-continue (curl over 1 KiB), chunked, and pipelined", async () => {
  await withApi("127.0.0.1", async ({ plugin, url, sink }) => {
    const padded = JSON.stringify(GOOD).padEnd(1500, " ");
    for (const extra of [[], ["-H", "Transfer-Encoding: chunked"]]) {
      const out = await new Deno.Command("curl", {
        args: [
          "-sS",
          "-H",
          "Content-Type: application/json",
          "--data-binary",
          padded,
          ...extra,
          `${url}/flow`,
        ],
        stdout: "piped",
      }).output();
      assert.equal(out.code, 0);
      assert.equal(JSON.parse(new TextDecoder().decode(out.stdout)).State, 2);
    }
    assert.equal(sink.events.length, 2);

    await using c = await RawHttpClient.connect(plugin.port);
    const body = JSON.stringify({ ...GOOD, State: "end" });
    await c.send(flowHead(body.length) + body + requestHead("GET", "/nope") + requestHead("GET", "/"));
    assert.deepEqual(
      [(await c.response()).status, (await c.response()).status, (await c.response()).status],
      [200, 404, 200],
    );
    assert.equal(sink.events[2]!.state, "end");
  });
});

Deno.test("api: oversized headers are a 431", async () => {
  await withApi("127.0.0.1", async ({ plugin }) => {
    await using c = await RawHttpClient.connect(plugin.port);
    await c.send(requestHead("GET", "/", [`Cookie: ${"x".repeat(20_000)}`]));
    const r = await c.response();
    assert.equal(r.status, 431);
    assert.match(JSON.parse(r.body).message, /larger than the limit of 16384 bytes/);
  });
});

Deno.test("api: the dummy routes are off by default: 404 like any unknown path, not listed", async () => {
  await withApi("127.0.0.1", async ({ url, sink }) => {
    for (const path of ["/dummy/start", "/dummy/end"]) {
      const r = await call(`${url}${path}`);
      assertJsonReply(r, 404);
      assert.equal(r.text, '{"message":"Not Found"}\n');
      assertJsonReply(await call(`${url}${path}`, { method: "POST", body: "{}" }), 404);
    }
    const routes = await call(`${url}/`);
    assert.deepEqual(routes.json, { ApiRoutes: [API_ROUTE_LIST, API_ROUTE_FLOW] });
    assert.equal(sink.events.length, 0);
  });
});

const API_ROUTE_LIST = { method: "GET", path: "/", name: "listRoutes" };
const API_ROUTE_FLOW = { method: "POST", path: "/flow", name: "postFlow" };
const TOKEN = "s3cret-T0ken_with.chars~";

async function withTokenFile(content: string | Uint8Array, fn: (path: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "flowd-api-token-" });
  try {
    const path = `${dir}/token`;
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await Deno.writeFile(path, content);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("api: with tokenFile, POST /flow needs the bearer token: missing or wrong 401, right 200; never logged", async () => {
  using logs = captureLogs("debug");
  await withTokenFile(`  ${TOKEN}\n`, async (tokenFile) => {
    await withApi("127.0.0.1", async ({ url, sink }) => {
      const send = (authorization?: string) =>
        call(`${url}/flow`, {
          method: "POST",
          body: JSON.stringify(GOOD),
          headers: { "content-type": "application/json", ...(authorization ? { authorization } : {}) },
        });
      for (const auth of [undefined, "Bearer wrong", `Bearer ${TOKEN}x`, `Basic ${btoa(TOKEN)}`, TOKEN]) {
        const r = await send(auth);
        assertJsonReply(r, 401);
        assert.equal(r.headers.get("www-authenticate"), "Bearer", String(auth));
        assert.ok(!r.text.includes(TOKEN), r.text);
      }
      assert.equal(sink.events.length, 0);
      assertJsonReply(await send(`Bearer ${TOKEN}`), 200);
      assertJsonReply(await send(`bearer  ${TOKEN}`), 200);
      assert.equal(sink.events.length, 2);
      // The dummy routes change state too: with a token they need it.
      assertJsonReply(await call(`${url}/dummy/start`), 401);
      const dummy = await call(`${url}/dummy/start`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assertJsonReply(dummy, 200);
      assertJsonReply(await call(`${url}/`), 200);
    }, { tokenFile, enableDummyEndpoints: true });
  });
  assert.ok(logs.lines.some((l) => /status=401/.test(l)), logs.lines.join("\n"));
  assert.ok(logs.lines.some((l) => /api listening.*bearerToken=true/.test(l)), logs.lines.join("\n"));
  for (const line of logs.lines) assert.ok(!line.includes(TOKEN), `the token is in a log line: ${line}`);
});

Deno.test("api: a token file that cannot be used stops the start with an error naming the path", async () => {
  const cases: Array<[string | Uint8Array, RegExp]> = [
    ["", /is empty/],
    [" \n\t\n", /is empty/],
    ["a".repeat(5000), /larger than 4096 bytes/],
    ["two words", /printable ASCII without spaces/],
    [new Uint8Array([0xff, 0xfe, 0x41]), /not valid UTF-8/],
  ];
  for (const [content, message] of cases) {
    await withTokenFile(content, async (tokenFile) => {
      const plugin = new ApiPlugin({ bindAddress: "127.0.0.1", bindPort: 0, application: APP, tokenFile });
      await assert.rejects(plugin.start(new RecordingSink()), (err: unknown) => {
        assert.ok(err instanceof StartupError);
        assert.ok(err.message.startsWith(`api: cannot use the token file ${tokenFile}: `), err.message);
        assert.match(err.message, message);
        return true;
      });
      await plugin.stop();
    });
  }
  const dir = await Deno.makeTempDir({ prefix: "flowd-api-token-" });
  try {
    const fifo = `${dir}/fifo`;
    await new Deno.Command("mkfifo", { args: [fifo] }).output();
    for (
      const [path, message] of [[`${dir}/missing`, /No such file/], [dir, /not a regular file/], [
        fifo,
        /not a regular file/,
      ]] as const
    ) {
      const plugin = new ApiPlugin({
        bindAddress: "127.0.0.1",
        bindPort: 0,
        application: APP,
        tokenFile: path,
      });
      await assert.rejects(
        plugin.start(new RecordingSink()),
        new RegExp(`token file ${path}: .*${message.source}`),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("POST /flow echoes a non-ASCII application as UTF-8 with a Content-Length in bytes", async () => {
  const app = "flöwd-€-😀<&>";
  await withApi("127.0.0.1", async ({ url }) => {
    const res = await fetch(`${url}/flow`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        State: 2,
        Protocol: 0,
        Src: "127.0.0.1:1",
        Dst: "127.0.0.2:2",
        Experiment: 1,
        Activity: 1,
      }),
    });
    const bytes = new Uint8Array(await res.arrayBuffer());
    assert.equal(res.status, 200);
    assert.equal(Number(res.headers.get("content-length")), bytes.byteLength);
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    assert.ok(text.includes('"Application": "flöwd-€-😀\\u003c\\u0026\\u003e",'), text);
    assert.equal(JSON.parse(text).Application, app);
  }, { application: app });
});
