/**
 * The firefly listener on real UDP sockets: fireflies in each emitter's style become one event each;
 * everything else is counted and logged, never an event; large datagrams are rejected, not truncated.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { ConfigError, StartupError } from "../../src/core/errors.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";
import { FireflyPlugin, type FireflyPluginOptions, RECEIVE_BUFFER_BYTES } from "../../src/plugins/firefly.ts";
import {
  FLOWD_GO_BARE,
  FLOWD_GO_END,
  FLOWD_GO_START,
  type Golden,
  GOLDENS,
} from "../helpers/firefly_goldens.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { RecordingSink } from "../helpers/recording_sink.ts";

type Loopback = "127.0.0.1" | "::1";

/** A sending socket; datagrams go to `port` on `to`. */
async function sender(
  to: Loopback,
): Promise<{ send(data: string | Uint8Array, port: number): Promise<void> } & AsyncDisposable> {
  const socket = dgram.createSocket(to === "::1" ? "udp6" : "udp4");
  await new Promise<void>((r) => socket.bind(0, to, () => r()));
  return {
    send: (data, port) =>
      new Promise((resolve, reject) =>
        socket.send(
          typeof data === "string" ? new TextEncoder().encode(data) : data,
          port,
          to,
          (err) => err ? reject(err) : resolve(),
        )
      ),
    [Symbol.asyncDispose]: () => new Promise<void>((r) => socket.close(() => r())),
  };
}

async function withListener(
  fn: (ctx: { plugin: FireflyPlugin; sink: RecordingSink }) => Promise<void>,
  extra: Partial<FireflyPluginOptions> = {},
): Promise<void> {
  const plugin = new FireflyPlugin({
    bindAddress: "127.0.0.1",
    bindPort: 0,
    bufferSize: 4096,
    deadline: 0,
    hasSyslogHeader: false,
    ...extra,
  });
  const sink = new RecordingSink();
  try {
    await plugin.start(sink);
    await fn({ plugin, sink });
  } finally {
    await plugin.stop();
  }
}

/** Waits until the listener has seen `n` datagrams (accepted or not). */
async function received(plugin: FireflyPlugin, n: number, timeoutMs = 3000): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (plugin.stats.received < n) {
    if (performance.now() > until) throw new Error(`only ${plugin.stats.received} of ${n} datagrams arrived`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function us(text: string | undefined): number | undefined {
  return text === undefined ? undefined : parseRfc3339Micros(text);
}

function assertEventMatches(golden: Golden, event: import("../../src/core/flow_event.ts").FlowEvent): void {
  const e = golden.expect;
  assert.deepEqual(
    {
      state: event.state,
      protocol: event.protocol,
      family: event.family,
      src: event.src.address.toString(),
      srcPort: event.src.port,
      dst: event.dst.address.toString(),
      dstPort: event.dst.port,
      experimentId: event.experimentId,
      activityId: event.activityId,
      application: event.application,
      start: event.startTime,
      end: event.endTime,
    },
    { ...e, start: us(e.start), end: us(e.end) },
    golden.name,
  );
}

Deno.test("firefly plugin: each emitter's fireflies become exactly one event each, field by field", async () => {
  await withListener(async ({ plugin, sink }) => {
    await using tx = await sender("127.0.0.1");
    for (const golden of GOLDENS) await tx.send(golden.datagram, plugin.port);
    await sink.waitFor(GOLDENS.length);
    await received(plugin, GOLDENS.length);
    assert.equal(sink.events.length, GOLDENS.length);
    GOLDENS.forEach((g, i) => assertEventMatches(g, sink.events[i]!));
    assert.equal(plugin.stats.accepted, GOLDENS.length);
    assert.equal(plugin.stats.repaired, 1, "only flowd-go's end firefly had an empty start-time");
    assert.deepEqual(Object.values(plugin.stats.rejected).filter((n) => n > 0), []);
  });
});

Deno.test("firefly plugin: the socket asks for a larger receive buffer than the kernel's default", async () => {
  await withListener(async ({ plugin }) => {
    const out = await new Deno.Command("ss", { args: ["-u", "-a", "-n", "-m", `sport = :${plugin.port}`] })
      .output();
    const rb = /rb(\d+)/.exec(new TextDecoder().decode(out.stdout));
    assert.ok(rb, "ss shows the socket's memory");
    const max = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_max"));
    // The kernel doubles what it grants (bookkeeping), capped at rmem_max.
    assert.equal(Number(rb[1]), 2 * Math.min(RECEIVE_BUFFER_BYTES, max));
  });
});

Deno.test("firefly plugin: an IPv6 listener receives fireflies sent to ::1", async () => {
  await withListener(async ({ plugin, sink }) => {
    await using tx = await sender("::1");
    await tx.send(FLOWD_GO_START.datagram, plugin.port);
    await tx.send(FLOWD_GO_BARE.datagram, plugin.port);
    await sink.waitFor(2);
    assertEventMatches(FLOWD_GO_START, sink.events[0]!);
    assertEventMatches(FLOWD_GO_BARE, sink.events[1]!);
  }, { bindAddress: "::1" });
});

Deno.test("firefly plugin: bound to :: it takes IPv4 senders too", async () => {
  await withListener(async ({ plugin, sink }) => {
    await using tx4 = await sender("127.0.0.1");
    await using tx6 = await sender("::1");
    await tx4.send(FLOWD_GO_START.datagram, plugin.port);
    await tx6.send(FLOWD_GO_END.datagram, plugin.port);
    await sink.waitFor(2);
    assert.deepEqual(sink.events.map((e) => e.state).sort(), ["end", "start"]);
  }, { bindAddress: "::" });
});

Deno.test("firefly plugin: malformed datagrams give no event, one log line and a counter per reason", async () => {
  using logs = captureLogs("info");
  const valid = JSON.parse(FLOWD_GO_BARE.datagram);
  const variant = (patch: (d: Record<string, Record<string, unknown>>) => void) => {
    const d = structuredClone(valid);
    patch(d);
    return JSON.stringify(d);
  };
  const bad: Array<[string, string | Uint8Array]> = [
    ["not-json", "<134>1 - h app - firefly-json - {not json"],
    ["not-json", "hello"],
    ["encoding", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
    ["syslog-header", "<134 - h app - firefly-json - {}"],
    ["not-a-firefly", "<134>1 - h app - other-msg - " + FLOWD_GO_BARE.datagram],
    ["unsupported-version", variant((d) => (d as Record<string, unknown>).version = 2)],
    ["schema", variant((d) => d["flow-id"]!["src-port"] = 0)],
    ["schema", variant((d) => d["flow-id"]!["src-ip"] = "192.0.2.1")], // afi says ipv6
    ["schema", variant((d) => delete d.context!["activity-id"])],
    ["flow-event", variant((d) => d.context!["experiment-id"] = 2 ** 40)],
  ];
  await withListener(async ({ plugin, sink }) => {
    await using tx = await sender("127.0.0.1");
    for (const [, datagram] of bad) await tx.send(datagram, plugin.port);
    // A valid one after the bad ones proves the listener is still alive.
    await tx.send(FLOWD_GO_BARE.datagram, plugin.port);
    await sink.waitFor(1);
    await received(plugin, bad.length + 1);
    assert.equal(sink.events.length, 1);
    assertEventMatches(FLOWD_GO_BARE, sink.events[0]!);
    const expected: Record<string, number> = {};
    for (const [reason] of bad) expected[reason] = (expected[reason] ?? 0) + 1;
    const counted = Object.fromEntries(Object.entries(plugin.stats.rejected).filter(([, n]) => n > 0));
    assert.deepEqual(counted, expected);
  });
  const lines = logs.matching(/ignoring a datagram that is not a valid firefly/);
  // Rate-limited per reason: the first of each reason is logged, naming it and the sender.
  assert.deepEqual(
    lines.map((l) => /reason=(\S+)/.exec(l)?.[1]).sort(),
    [...new Set(bad.map(([r]) => r))].sort(),
  );
  assert.ok(lines.every((l) => /from=127\.0\.0\.1:\d+/.test(l)), lines.join("\n"));
  assert.match(logs.matching(/reason=schema/)[0]!, /flow-id\.src-port: 0 is outside 1\.\.65535/);
});

Deno.test("firefly plugin: datagrams over bufferSize are rejected whole, never truncated into an event", async () => {
  using logs = captureLogs("info");
  // A valid firefly whose application string pads the datagram to exactly `total` bytes.
  const base = FLOWD_GO_BARE.datagram.replace('"flowd-go-3.0.0"', '""');
  const fill = (total: number) => {
    return base.replace('"application":""', `"application":"${"x".repeat(total - base.length)}"`);
  };
  await withListener(async ({ plugin, sink }) => {
    await using tx = await sender("127.0.0.1");
    await tx.send(fill(2048), plugin.port);
    await tx.send(fill(2049), plugin.port);
    await tx.send(fill(60_000), plugin.port);
    await received(plugin, 3);
    await sink.waitFor(1);
    assert.equal(sink.events.length, 1);
    assert.equal(new TextEncoder().encode(fill(2048)).length, 2048);
    assert.equal(sink.events[0]!.application, "x".repeat(2048 - base.length));
    assert.equal(plugin.stats.rejected.oversize, 2);
  }, { bufferSize: 2048 });
  const line = logs.matching(/reason=oversize/)[0];
  assert.ok(line, logs.lines.join("\n"));
  assert.match(line, /datagram of 2049 bytes is larger than bufferSize \(2048\)/);
});

Deno.test("firefly plugin: a large valid firefly under bufferSize arrives whole (no 1024-byte cut)", async () => {
  const app = "a".repeat(3800);
  const datagram = FLOWD_GO_BARE.datagram.replace("flowd-go-3.0.0", app);
  await withListener(async ({ plugin, sink }) => {
    await using tx = await sender("127.0.0.1");
    await tx.send(datagram, plugin.port);
    await sink.waitFor(1);
    assert.equal(sink.events[0]!.application, app);
  });
});

Deno.test("firefly plugin: hasSyslogHeader true requires the header; false takes both forms", async () => {
  await withListener(async ({ plugin, sink }) => {
    await using tx = await sender("127.0.0.1");
    await tx.send(FLOWD_GO_BARE.datagram, plugin.port);
    await tx.send(FLOWD_GO_START.datagram, plugin.port);
    await received(plugin, 2);
    await sink.waitFor(1);
    assert.equal(sink.events.length, 1);
    assert.equal(sink.events[0]!.application, "flowd-go-2.4.2");
    assert.equal(plugin.stats.rejected["syslog-header"], 1);
  }, { hasSyslogHeader: true });
});

Deno.test("firefly plugin: events the core refuses are counted, not lost silently", async () => {
  using logs = captureLogs("info");
  await withListener(async ({ plugin, sink }) => {
    sink.refuseWith = "queue full";
    await using tx = await sender("127.0.0.1");
    await tx.send(FLOWD_GO_START.datagram, plugin.port);
    await received(plugin, 1);
    assert.equal(plugin.stats.refused, 1);
    assert.equal(plugin.stats.accepted, 0);
  });
  assert.match(logs.matching(/was refused/)[0] ?? "", /reason="queue full"/);
});

Deno.test("firefly plugin: configuration and bind errors are clear", async () => {
  const base: FireflyPluginOptions = {
    bindAddress: "127.0.0.1",
    bindPort: 0,
    bufferSize: 4096,
    deadline: 0,
    hasSyslogHeader: false,
  };
  assert.throws(
    () => new FireflyPlugin({ ...base, bufferSize: 2047 }),
    (e) =>
      e instanceof ConfigError && /bufferSize 2047 is too small: make it at least 2048 bytes/.test(e.message),
  );
  assert.throws(
    () => new FireflyPlugin({ ...base, bindAddress: "localhost" }),
    (e) => e instanceof ConfigError && /"localhost" is not an IP address/.test(e.message),
  );
  await withListener(async ({ plugin }) => {
    const second = new FireflyPlugin({ ...base, bindPort: plugin.port });
    await assert.rejects(
      () => second.start(new RecordingSink()),
      (e) =>
        e instanceof StartupError &&
        new RegExp(`cannot listen on 127\\.0\\.0\\.1:${plugin.port}/udp`).test(e.message),
    );
    await second.stop();
  });
});

Deno.test("firefly plugin: with a deadline, an idle listener says so at debug level", async () => {
  using logs = captureLogs("debug");
  await withListener(async () => {
    await new Promise((r) => setTimeout(r, 1150));
  }, { deadline: 1 });
  assert.equal(logs.matching(/no firefly received within the deadline/).length, 1, logs.lines.join("\n"));
});
