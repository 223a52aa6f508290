/**
 * The ipfix backend on loopback with a stand-in counter source: templates at start, delta records per
 * active timeout, the final record at the end (with the marker's final counts, whichever queue is first),
 * lack of resources for an evicted flow, forced end at stop, template refresh, a TCP collector, an
 * unreachable one, and the configuration errors (port 0, no marker, a name that does not resolve).
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { IpfixBackend } from "../../src/backends/ipfix/backend.ts";
import { parseConfig } from "../../src/config/load.ts";
import { IpfixSchema } from "../../src/config/schema.ts";
import { FlowCounterHub, type FlowCounts } from "../../src/core/flow_counters.ts";
import { type FlowEvent, flowKey } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { type DecodedMessage, decodeIpfix } from "../helpers/ipfix_decode.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function flow(state: "start" | "end", sport: number, family: "ipv6" | "ipv4" = "ipv6"): FlowEvent {
  const [a, b] = family === "ipv6" ? ["2001:db8::1", "2001:db8::2"] : ["192.0.2.1", "198.51.100.2"];
  return {
    state,
    protocol: "tcp",
    family,
    src: { address: IpAddress.parse(a), port: sport },
    dst: { address: IpAddress.parse(b), port: 1094 },
    experimentId: 2,
    activityId: 9,
    application: "test",
    startTime: 1_796_300_000_000_000,
  };
}

/** A counter source whose counts the test sets. */
class FakeCounts {
  readonly counts = new Map<string, FlowCounts>();
  set(f: FlowEvent, packets: number, bytes: number): void {
    this.counts.set(flowKey(f), {
      packets: BigInt(packets),
      bytes: BigInt(bytes),
      firstMs: 1_796_300_000_100,
      lastMs: 1_796_300_000_200 + packets,
      flowLabel: 0xd0124,
      egressInterface: 3,
    });
  }
  countsOf(f: FlowEvent): FlowCounts | undefined {
    return this.counts.get(flowKey(f));
  }
}

async function udpCollector() {
  const socket = dgram.createSocket("udp4");
  const messages: DecodedMessage[] = [];
  const known = new Map();
  socket.on("message", (data: Uint8Array) => messages.push(decodeIpfix(new Uint8Array(data), known)));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  return {
    port: socket.address().port,
    messages,
    records: () => messages.flatMap((m) => m.records.map((r) => r.values)),
    close: () => new Promise<void>((r) => socket.close(() => r())),
  };
}

function config(collectors: unknown[], extra: Record<string, unknown> = {}) {
  return IpfixSchema.parse({
    collectors,
    activeTimeout: 0.3,
    templateRefresh: 0.5,
    observationDomainId: 9,
    ...extra,
  });
}

Deno.test("ipfix backend: templates, active-timeout deltas, final record, forced end at stop", async () => {
  const col = await udpCollector();
  const hub = new FlowCounterHub();
  const fake = new FakeCounts();
  const leave = hub.register(fake);
  const b = new IpfixBackend({ config: config([{ address: "127.0.0.1", port: col.port }]), counters: hub });
  try {
    await b.start();
    const f1 = flow("start", 40001), f2 = flow("start", 40002);
    await b.handle(f1);
    await b.handle(f2);
    fake.set(f1, 10, 15_000);
    await sleep(450);
    fake.set(f1, 25, 37_000);
    fake.set(f2, 4, 400);
    await sleep(400);
    // The marker took the end first: the flow is gone from its map, its final counts are with the hub.
    fake.counts.delete(flowKey(f1));
    hub.retire(f1, { ...fake.countsOf(f2)!, packets: 30n, bytes: 40_000n }, "end");
    await b.handle(flow("end", 40001));
    await sleep(200);
    assert.equal(b.status().state, "running");
  } finally {
    await b.stop();
    leave();
  }
  await sleep(50);
  await col.close();
  assert.deepEqual(col.messages[0]!.templates.map((t) => t.id), [256, 257], "templates first");
  for (const m of col.messages) assert.equal(m.domain, 9);
  // Sequence: data records before each message.
  let seen = 0;
  for (const m of col.messages) {
    assert.equal(m.sequence, seen);
    seen += m.records.length;
  }
  const r1 = col.records().filter((r) => r["7"] === 40001);
  assert.deepEqual(r1.map((r) => [r["136"], r["2"], r["1"]]), [
    [2, 10n, 15_000n],
    [2, 15n, 22_000n],
    [3, 5n, 3000n],
  ]);
  assert.equal(r1[0]!["27"], "2001:db8::1");
  assert.equal(r1[0]!["28"], "2001:db8::2");
  assert.deepEqual([r1[0]!["11"], r1[0]!["4"], r1[0]!["31"], r1[0]!["14"]], [1094, 6, 0xd0124, 3]);
  assert.deepEqual([r1[0]!["32473:1"], r1[0]!["32473:2"]], [2, 9]);
  assert.deepEqual([r1[0]!["152"], r1[0]!["153"]], [1_796_300_000_100n, 1_796_300_000_210n]);
  const r2 = col.records().filter((r) => r["7"] === 40002);
  assert.deepEqual(
    r2.map((r) => [r["136"], r["2"]]),
    [[2, 4n], [4, 0n]],
    "f2: a record, then its forced end at stop",
  );
});

Deno.test("ipfix backend: forced end at stop, and lack of resources for a flow the marker evicted", async () => {
  const col = await udpCollector();
  const hub = new FlowCounterHub();
  const fake = new FakeCounts();
  const leave = hub.register(fake);
  const b = new IpfixBackend({
    config: config([{ address: "127.0.0.1", port: col.port }], { activeTimeout: 60 }),
    counters: hub,
  });
  try {
    await b.start();
    const f1 = flow("start", 40001), f2 = flow("start", 40002), f4 = flow("start", 5001, "ipv4");
    for (const f of [f1, f2, f4]) await b.handle(f);
    fake.set(f1, 7, 700);
    fake.set(f2, 3, 300);
    fake.set(f4, 2, 120);
    // The marker evicts f2 for a newer flow: no longer counted, final counts with the hub.
    fake.counts.delete(flowKey(f2));
    hub.retire(f2, { ...fake.countsOf(f1)!, packets: 3n, bytes: 300n }, "evicted");
    await b.handle(flow("end", 40002)); // not yet: the bus still has it open; the end comes later
    const st = b.status();
    assert.equal((st.details as { flows: number }).flows, 2);
  } finally {
    await b.stop();
    leave();
  }
  await sleep(50);
  await col.close();
  const by = (port: number) => col.records().filter((r) => r["7"] === port).map((r) => r["136"]);
  assert.deepEqual(by(40001), [4], "forced end at shutdown");
  assert.deepEqual(by(40002), [5], "lack of resources");
  const v4 = col.records().filter((r) => r["7"] === 5001);
  assert.deepEqual(v4.map((r) => [r["8"], r["12"], r["136"], r["2"]]), [[
    "192.0.2.1",
    "198.51.100.2",
    4,
    2n,
  ]]);
  assert.equal(v4[0]!["31"], undefined, "no flow label in the IPv4 template");
});

Deno.test("ipfix backend: an end seen before the marker's waits for its final counts", async () => {
  const col = await udpCollector();
  const hub = new FlowCounterHub();
  const fake = new FakeCounts();
  const leave = hub.register(fake);
  const b = new IpfixBackend({
    config: config([{ address: "127.0.0.1", port: col.port }], { activeTimeout: 60 }),
    counters: hub,
  });
  try {
    await b.start();
    const f1 = flow("start", 40001);
    await b.handle(f1);
    fake.set(f1, 5, 500);
    await b.handle(flow("end", 40001)); // the marker still counts it
    await sleep(250);
    assert.equal(col.records().length, 0, "no record while the marker may still count packets");
    fake.counts.delete(flowKey(f1));
    hub.retire(
      f1,
      { ...(await Promise.resolve({ packets: 6n, bytes: 620n, firstMs: 1, lastMs: 2 })) },
      "end",
    );
    await sleep(250);
  } finally {
    await b.stop();
    leave();
  }
  await sleep(50);
  await col.close();
  assert.deepEqual(col.records().map((r) => [r["136"], r["2"], r["1"]]), [[3, 6n, 620n]]);
});

Deno.test("ipfix backend: UDP templates are resent every templateRefresh seconds without records", async () => {
  const col = await udpCollector();
  const hub = new FlowCounterHub();
  const b = new IpfixBackend({
    config: config([{ address: "127.0.0.1", port: col.port }], { templateRefresh: 0.2 }),
    counters: hub,
  });
  await b.start();
  await sleep(1000);
  await b.stop();
  await sleep(50);
  await col.close();
  const n = col.messages.filter((m) => m.templates.length === 2).length;
  assert.ok(n >= 4 && n <= 7, `${n} template messages in 1 s at 0.2 s`);
});

Deno.test("ipfix backend: a TCP collector gets the templates first, a refused one fails records, never the start", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const closedPort = (() => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const p = (l.addr as Deno.NetAddr).port;
    l.close();
    return p;
  })();
  const received: Uint8Array[] = [];
  const accepted = (async () => {
    const conn = await listener.accept();
    for await (const chunk of conn.readable) received.push(chunk);
  })();
  const hub = new FlowCounterHub();
  const fake = new FakeCounts();
  const leave = hub.register(fake);
  const b = new IpfixBackend({
    config: config([
      { address: "127.0.0.1", port, transport: "tcp" },
      { address: "127.0.0.1", port: closedPort, transport: "tcp" },
    ]),
    counters: hub,
  });
  try {
    await b.start();
    const st = b.status();
    assert.equal(st.state, "degraded");
    assert.match(st.reason!, new RegExp(`tcp:127.0.0.1:${closedPort}`));
    const f1 = flow("start", 40001);
    await b.handle(f1);
    fake.set(f1, 3, 300);
    await sleep(500);
    const collectors = (b.status().details as { collectors: Array<Record<string, unknown>> }).collectors;
    assert.equal(collectors[0]!.recordsSent, 1);
    assert.equal(collectors[1]!.recordsFailed, 1, "the refused collector's record is counted as failed");
    const failed = b.health().find((h) =>
      h.name === "flowd_ipfix_records_total" && h.labels?.outcome === "failed" &&
      h.labels?.collector === `tcp:127.0.0.1:${closedPort}`
    );
    assert.equal(failed?.value, 1);
  } finally {
    await b.stop();
    leave();
  }
  await accepted;
  listener.close();
  const stream = new Uint8Array(received.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of received) stream.set(c, (o += c.length) - c.length);
  const known = new Map();
  const messages: DecodedMessage[] = [];
  for (let p = 0; p < stream.length;) {
    const len = new DataView(stream.buffer, p).getUint16(2);
    messages.push(decodeIpfix(stream.subarray(p, p + len), known));
    p += len;
  }
  assert.deepEqual(messages[0]!.templates.map((t) => t.id), [256, 257]);
  assert.equal(messages.filter((m) => m.templates.length > 0).length, 1, "templates once per connection");
  const recs = messages.flatMap((m) => m.records);
  assert.deepEqual(recs.map((r) => [r.values["136"], r.values["2"]]), [[2, 3n], [4, 0n]]);
  assert.deepEqual(messages.map((m) => m.sequence), [0, 0, 1], "sequence: data records before each message");
});

Deno.test("ipfix configuration: port 0, no marker and an unresolvable collector are refused clearly", async () => {
  const base = (ipfix: string, marker = "  marker: {}\n") => `backends:\n${marker}  ipfix:\n${ipfix}`;
  assert.throws(
    () => parseConfig(base("    collectors: [{address: 127.0.0.1, port: 0}]\n"), "conf.yaml"),
    /port.*expected a port number in 1\.\.65535, got 0/,
  );
  assert.throws(
    () => parseConfig(base("    collectors: [{address: 127.0.0.1}]\n", ""), "conf.yaml"),
    /backends\.ipfix.*needs backends\.marker/,
  );
  assert.throws(() => parseConfig(base("    collectors: []\n"), "conf.yaml"), /at least one collector/);
  const ok = parseConfig(base("    collectors: [{address: collector.example}]\n"), "conf.yaml").config;
  assert.deepEqual(ok.backends.ipfix!.collectors, [{
    address: "collector.example",
    port: 4739,
    transport: "udp",
  }]);
  const b = new IpfixBackend({
    config: ok.backends.ipfix!,
    counters: new FlowCounterHub(),
    lookupFn: () => Promise.reject(new Error("getaddrinfo ENOTFOUND collector.example")),
  });
  await assert.rejects(
    () => b.start(),
    /backends\.ipfix\.collectors\[0\]\.address: cannot resolve "collector\.example": getaddrinfo ENOTFOUND/,
  );
});

Deno.test("ipfix backend: UDP templates also go every templateRefreshPackets messages", async () => {
  const col = await udpCollector();
  const hub = new FlowCounterHub();
  const fake = new FakeCounts();
  const leave = hub.register(fake);
  const b = new IpfixBackend({
    config: config([{ address: "127.0.0.1", port: col.port }], {
      templateRefresh: 86_400,
      templateRefreshPackets: 2,
      activeTimeout: 0.1,
    }),
    counters: hub,
  });
  try {
    await b.start();
    const f = flow("start", 40001);
    await b.handle(f);
    // A new count every 150 ms: one record (one message) per active timeout.
    for (let i = 1; i <= 6; i++) {
      fake.set(f, i, i * 100);
      await sleep(150);
    }
  } finally {
    await b.stop();
    leave();
  }
  await sleep(50);
  await col.close();
  // Templates alone at start, then with every second message after the previous templates.
  const pattern = col.messages.map((m) => m.templates.length > 0 ? "T" : "-").join("");
  assert.match(pattern, /^T(-T)+-?$/, pattern);
  assert.ok(col.messages.length >= 6, pattern);
});
