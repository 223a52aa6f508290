/**
 * The firefly path against real peers and hostile senders (hardening issue items 7, 8, 11, 21): flowd's
 * null start-time, XRootD's usage and netlink relayed on, times no firefly can carry refused at every
 * input, and the listener taking datagrams only from allowed sources at a bounded rate.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { EventBus } from "../../src/core/bus.ts";
import type { Backend } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { FireflyPlugin, type FireflyPluginOptions } from "../../src/plugins/firefly.ts";
import { parseApiFlowBody } from "../../src/plugins/api_json.ts";
import { buildFirefly, FireflyBuildError, parseFirefly } from "../../src/scitags/firefly.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { XROOTD_END } from "../helpers/firefly_goldens.ts";
import { assertValidFirefly } from "../helpers/firefly_schema.ts";
import { captureLogs } from "../helpers/log_capture.ts";

/** Sends datagrams from a chosen loopback address. */
async function sender(from: string) {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((r) => socket.bind(0, from, () => r()));
  return {
    send: (data: string, port: number) =>
      new Promise<void>((resolve, reject) =>
        socket.send(new TextEncoder().encode(data), port, "127.0.0.1", (err) => err ? reject(err) : resolve())
      ),
    [Symbol.asyncDispose]: () => new Promise<void>((r) => socket.close(() => r())),
  };
}

/** A backend that records what the bus hands it. */
class Recorder implements Backend {
  readonly name = "recorder";
  readonly events: FlowEvent[] = [];
  start = () => Promise.resolve();
  handle = (e: FlowEvent) => (this.events.push(e), Promise.resolve());
  stop = () => Promise.resolve();
}

async function listener(extra: Partial<FireflyPluginOptions> = {}) {
  const plugin = new FireflyPlugin({
    bindAddress: "127.0.0.1",
    bindPort: 0,
    bufferSize: 4096,
    deadline: 0,
    hasSyslogHeader: false,
    ...extra,
  });
  const bus = new EventBus({ queueCapacity: 1000, flowTableCapacity: 1000 });
  const recorder = new Recorder();
  bus.attachBackend(recorder);
  await plugin.start(bus);
  return {
    plugin,
    recorder,
    async until(pred: () => boolean, what: string) {
      const deadline = performance.now() + 3000;
      while (!pred()) {
        if (performance.now() > deadline) throw new Error(`timed out: ${what}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    [Symbol.asyncDispose]: async () => {
      await plugin.stop();
      await bus.close(1000);
    },
  };
}

const flowdPy = (state: "start" | "end", startTime: string | null) =>
  JSON.stringify({
    version: 1,
    "flow-lifecycle": {
      state,
      "start-time": startTime,
      ...(state === "end" ? { "end-time": "2026-03-01T10:05:00.000000+00:00" } : {}),
    },
    "flow-id": {
      afi: "ipv6",
      "src-ip": "2001:db8::1",
      "dst-ip": "2001:db8::2",
      protocol: "tcp",
      "src-port": 40000,
      "dst-port": 1094,
    },
    context: { "experiment-id": 2, "activity-id": 3, application: "flowd" },
  });

Deno.test('firefly: the Python flowd\'s end firefly with "start-time": null ends the flow with the start it began with', async () => {
  await using l = await listener();
  await using s = await sender("127.0.0.1");
  await s.send(flowdPy("start", "2026-03-01T10:00:00.000000+00:00"), l.plugin.port);
  await s.send(flowdPy("end", null), l.plugin.port);
  await l.until(() => l.recorder.events.length === 2, "start and end events");
  const [, end] = l.recorder.events;
  assert.equal(end!.state, "end");
  assert.equal(
    end!.startTime,
    parseRfc3339Micros("2026-03-01T10:00:00Z"),
    "the start time of the flow's start",
  );
  assert.equal(l.plugin.stats.repaired, 1);
  assertValidFirefly(buildFirefly(end!));
});

Deno.test("firefly: XRootD's usage and netlink blocks are relayed on, schema-valid", async () => {
  await using l = await listener();
  await using s = await sender("127.0.0.1");
  await s.send(XROOTD_END.datagram, l.plugin.port);
  await l.until(() => l.recorder.events.length === 1, "the XRootD end event");
  const doc = buildFirefly(l.recorder.events[0]!);
  assert.deepEqual(doc.usage, { received: 1024, sent: 987654321 });
  assert.deepEqual(doc.netlink, { rtt: 0.012 });
  assertValidFirefly(doc);
});

Deno.test("firefly: a time beyond the year 9999 in UTC is refused at the listener, the API and the builder", () => {
  // 23:59:59 at UTC-5 on the last day of 9999 is already the year 10000 in UTC.
  const late = "9999-12-31T23:59:59-05:00";
  const doc = JSON.parse(flowdPy("end", "2026-03-01T10:00:00.000000+00:00"));
  doc["flow-lifecycle"]["end-time"] = late;
  assert.throws(
    () => parseFirefly(JSON.stringify(doc)),
    /end-time: "9999-12-31T23:59:59-05:00" is not an RFC 3339/,
  );
  assert.throws(
    () =>
      parseApiFlowBody(
        {
          State: "end",
          Protocol: "tcp",
          Src: "[2001:db8::1]:1",
          Dst: "[2001:db8::2]:2",
          Experiment: 2,
          Activity: 3,
          EndTs: late,
        },
        0,
        "t",
      ),
    /EndTs/,
  );
  const event: FlowEvent = {
    state: "end",
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse("2001:db8::1"), port: 1 },
    dst: { address: IpAddress.parse("2001:db8::2"), port: 2 },
    experimentId: 2,
    activityId: 3,
    endTime: 253402318800 * 1_000_000,
    application: "t",
  };
  assert.throws(
    () => buildFirefly(event),
    (err: Error) => err instanceof FireflyBuildError && /0000-9999/.test(err.message),
  );
});

Deno.test("firefly listener: datagrams from sources outside allowedSources are dropped and counted", async () => {
  await using l = await listener({ allowedSources: ["127.0.0.1/32"] });
  await using stranger = await sender("127.0.0.2");
  await using friend = await sender("127.0.0.1");
  for (let i = 0; i < 5; i++) await stranger.send(flowdPy("start", "2026-03-01T10:00:00Z"), l.plugin.port);
  await friend.send(flowdPy("start", "2026-03-01T10:00:00Z"), l.plugin.port);
  await l.until(() => l.plugin.stats.received === 6, "six datagrams");
  await l.until(() => l.recorder.events.length === 1, "the friend's event");
  assert.equal(l.plugin.stats.rejected["source-not-allowed"], 5);
  const metric = l.plugin.health().find((m) => m.labels?.reason === "source-not-allowed");
  assert.equal(metric?.value, 5);
});

Deno.test("firefly listener: one source beyond rateLimit is cut to its burst, others unaffected", async () => {
  await using l = await listener({ rateLimit: 1, rateBurst: 5 });
  await using noisy = await sender("127.0.0.3");
  await using quiet = await sender("127.0.0.4");
  for (let i = 0; i < 20; i++) {
    const doc = JSON.parse(flowdPy("start", "2026-03-01T10:00:00Z"));
    doc["flow-id"]["src-port"] = 10000 + i;
    await noisy.send(JSON.stringify(doc), l.plugin.port);
  }
  await quiet.send(flowdPy("start", "2026-03-01T10:00:00Z"), l.plugin.port);
  await l.until(() => l.plugin.stats.received === 21, "21 datagrams");
  assert.equal(l.plugin.stats.rejected["rate-limited"], 15);
  await l.until(() => l.recorder.events.length === 6, "five from the noisy source, one from the quiet");
});

Deno.test("firefly listener: allowing other hosts is warned about at start", async () => {
  using logs = captureLogs("info");
  await using _l = await listener({ allowedSources: ["127.0.0.0/8", "192.0.2.0/24"] });
  assert.equal(logs.matching(/level=WARN .*takes datagrams from other hosts/).length, 1);
  await using _m = await listener();
  assert.equal(
    logs.matching(/level=WARN .*takes datagrams from other hosts/).length,
    1,
    "loopback only: no warning",
  );
});
