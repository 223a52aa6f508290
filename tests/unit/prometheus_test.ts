// The Prometheus backend, scraped over HTTP on loopback.
import assert from "node:assert/strict";
import { PrometheusBackend } from "../../src/backends/prometheus.ts";
import { IdPairLabels } from "../../src/backends/prometheus_aggregates.ts";
import { FLOW_FAMILY_NAMES } from "../../src/backends/prometheus_flows.ts";
import { cpuSeconds } from "../../src/backends/prometheus_process.ts";
import { PrometheusSchema } from "../../src/config/schema.ts";
import type { EnrichmentSample, Flavour } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { StartupError } from "../../src/core/errors.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { freePort } from "../helpers/daemon.ts";
import { hasCommand } from "../helpers/privileged.ts";
import { flowInfoFixture, tcpInfoFixture } from "../helpers/flow_info_fixture.ts";
import { parseExposition, promtoolCheck, samplesOf } from "../helpers/prom_text.ts";
import { RawHttpClient, requestHead } from "../helpers/raw_http.ts";

const HAS_PROMTOOL = hasCommand("promtool");
if (!HAS_PROMTOOL) console.error("SKIPPED (needs promtool, Debian package prometheus): promtool checks");

function flow(sport: number, over: Partial<FlowEvent> = {}): FlowEvent {
  return {
    state: "start",
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse("2001:db8::1"), port: sport },
    dst: { address: IpAddress.parse("2001:db8::2"), port: 5777 },
    experimentId: 2,
    activityId: 9,
    startTime: 1,
    application: "t",
    ...over,
  };
}

function sample(f: FlowEvent, flavour: Flavour, tcp = {}, alg = "cubic"): EnrichmentSample {
  return {
    flavour,
    flow: f,
    time: 2,
    info: { ...flowInfoFixture(), tcpInfo: tcpInfoFixture(tcp), cong: { algorithm: alg } },
  };
}

async function scrape(url: string) {
  const res = await fetch(url);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  return { text, families: parseExposition(text) };
}

async function backend(over: Record<string, unknown> = {}, maxFlows?: number) {
  const b: PrometheusBackend = new PrometheusBackend({
    config: PrometheusSchema.parse({ netlinkPort: freePort(), skopsPort: freePort(), ...over }),
    version: "3.0.0-test",
    maxFlows,
    health: () => b.health(),
  });
  await b.start();
  return b;
}

function url(b: PrometheusBackend, flavour: Flavour): string {
  const a = b.address(flavour)!;
  return `http://${a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname}:${a.port}/metrics`;
}

Deno.test("prometheus: per-flow series with the original's names and labels, values from the latest sample", async () => {
  const b = await backend();
  try {
    const a = flow(2345), c = flow(2346); // same hosts and ids: only the ports tell them apart
    await b.handle(a);
    await b.handle(c);
    b.enrich(sample(a, "Netlink", { rtt: 1000, retrans: 2, lastAckRecv: 77, rcvMss: 1200 }, "bbr"));
    b.enrich(sample(a, "Netlink", { rtt: 1500, retrans: 2, lastAckRecv: 78, rcvMss: 1200 }, "cubic"));
    b.enrich(sample(c, "Netlink", { rtt: 9000 }));
    b.enrich(sample(a, "Ebpf", { rtt: 1400 }));
    const { text, families } = await scrape(url(b, "Netlink"));
    const labelsA = {
      act: "9",
      exp: "2",
      src: "2001:db8::1",
      dst: "2001:db8::2",
      flow: "<2345:5777>",
      flavour: "Netlink",
    };
    assert.deepEqual(samplesOf(families, "flow_tcp_rtt", labelsA).map((s) => s.value), [1500]);
    assert.deepEqual(samplesOf(families, "flow_tcp_rtt", { flow: "<2346:5777>" }).map((s) => s.value), [
      9000,
    ]);
    assert.deepEqual(samplesOf(families, "flow_tcp_rtt").map((s) => s.labels), [
      labelsA,
      { ...labelsA, flow: "<2346:5777>" },
    ]);
    assert.deepEqual(
      samplesOf(families, "flow_tcp_retrans", labelsA).map((s) => s.value),
      [2],
      "set, not added",
    );
    assert.deepEqual(samplesOf(families, "flow_tcp_lastack", labelsA).map((s) => s.value), [78]);
    assert.deepEqual(samplesOf(families, "flow_tcp_rcvmss", labelsA).map((s) => s.value), [1200]);
    assert.deepEqual(samplesOf(families, "flow_tcp_bytes_acked_total", labelsA).map((s) => s.value), [
      123456,
    ]);
    assert.equal(families.get("flow_tcp_bytes_acked_total")?.type, "counter");
    assert.equal(families.get("flow_tcp_rtt")?.type, "gauge");
    assert.deepEqual(
      samplesOf(families, "flow_tcp_rcv_ca_info", labelsA).map((s) => [s.labels.alg, s.value]),
      [["cubic", 1]],
      "one series: the algorithm in use now",
    );
    for (const name of FLOW_FAMILY_NAMES) assert.ok(families.get(name)?.help, `${name} has help`);
    // The skops flavour is on its own port, with its own flavour label.
    const ebpf = await scrape(url(b, "Ebpf"));
    assert.deepEqual(
      samplesOf(ebpf.families, "flow_tcp_rtt").map((s) => [s.labels.flavour, s.value]),
      [["Ebpf", 1400]],
    );
    if (HAS_PROMTOOL) {
      assert.deepEqual(await promtoolCheck(text), []);
      assert.deepEqual(await promtoolCheck(ebpf.text), []);
    }
  } finally {
    await b.stop();
  }
});

Deno.test("prometheus: a flow's series vanish at its end; the aggregates keep counting", async () => {
  const b = await backend();
  try {
    const a = flow(2345), c = flow(2346, { experimentId: 3, activityId: 4 });
    await b.handle(a);
    await b.handle(c);
    b.enrich(sample(a, "Netlink", { bytesSent: 1000n, bytesAcked: 900n }));
    b.enrich(sample(a, "Netlink", { bytesSent: 5000n, bytesAcked: 4000n }));
    b.enrich(sample(c, "Netlink", { bytesSent: 70n, bytesAcked: 70n }));
    await b.handle({ ...a, state: "end", endTime: 3 });
    const { text, families } = await scrape(url(b, "Netlink"));
    assert.deepEqual(samplesOf(families, "flow_tcp_rtt").map((s) => s.labels.flow), ["<2346:5777>"]);
    for (const name of FLOW_FAMILY_NAMES) {
      assert.equal(samplesOf(families, name, { flow: "<2345:5777>" }).length, 0, `${name} of the ended flow`);
    }
    const v = (name: string, l: Record<string, string>) => samplesOf(families, name, l).map((s) => s.value);
    assert.deepEqual(v("flowd_flows_started_total", { exp: "2", act: "9" }), [1]);
    assert.deepEqual(v("flowd_flows_ended_total", { exp: "2", act: "9" }), [1]);
    assert.deepEqual(v("flowd_flows_active", { exp: "2", act: "9" }), [0]);
    assert.deepEqual(v("flowd_flows_active", { exp: "3", act: "4" }), [1]);
    assert.deepEqual(
      v("flowd_tcp_sent_bytes_total", { exp: "2", act: "9" }),
      [5000],
      "deltas add up to the total",
    );
    assert.deepEqual(v("flowd_tcp_acked_bytes_total", { exp: "3", act: "4" }), [70]);
    assert.deepEqual(v("flowd_tcp_rtt_seconds_count", { exp: "2", act: "9" }), [2]);
    assert.deepEqual(v("flowd_enrichment_samples_total", {}), [3]);
    assert.ok(v("process_cpu_seconds_total", {})[0]! > 0);
    assert.ok(v("process_resident_memory_bytes", {})[0]! > 1e6);
    assert.ok(v("process_open_fds", {})[0]! > 2);
    assert.deepEqual(samplesOf(families, "flowd_build_info").map((s) => s.labels), [{
      version: "3.0.0-test",
    }]);
    if (HAS_PROMTOOL) assert.deepEqual(await promtoolCheck(text), []);
  } finally {
    await b.stop();
  }
});

Deno.test("prometheus: IPv6 bind address, a disabled flavour, 404/405, a taken port fails the start", async () => {
  const b = await backend({ bindAddress: "::1", skopsPort: 0 });
  try {
    assert.equal(b.address("Netlink")?.hostname, "::1");
    assert.equal(b.address("Ebpf"), undefined);
    b.enrich(sample(flow(1), "Ebpf")); // ignored: no skops metrics (the original panicked)
    const base = url(b, "Netlink");
    const notFound = await fetch(base.replace("/metrics", "/"));
    assert.equal(notFound.status, 404);
    await notFound.body?.cancel();
    const post = await fetch(base, { method: "POST" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
    const taken = new PrometheusBackend({
      config: PrometheusSchema.parse({
        bindAddress: "::1",
        netlinkPort: b.address("Netlink")!.port,
        skopsPort: 0,
      }),
      version: "x",
    });
    await assert.rejects(
      () => taken.start(),
      (err) => err instanceof StartupError && /cannot listen on \[::1\]:/.test(err.message),
    );
    await taken.stop();
  } finally {
    await b.stop();
  }
});

Deno.test("prometheus: per-flow series are capped; flows beyond the cap still count in the aggregates", async () => {
  const b = await backend({}, 2);
  try {
    for (const port of [1, 2, 3]) b.enrich(sample(flow(port), "Netlink", { bytesSent: 10n }));
    const { families } = await scrape(url(b, "Netlink"));
    assert.equal(samplesOf(families, "flow_tcp_rtt").length, 2);
    assert.deepEqual(samplesOf(families, "flowd_tcp_sent_bytes_total").map((s) => s.value), [30]);
    assert.equal(b.exportedFlows("Netlink"), 2);
  } finally {
    await b.stop();
  }
});

Deno.test("prometheus: (experiment, activity) label pairs are bounded", () => {
  const labels = new IdPairLabels(2);
  assert.deepEqual(labels.of({ experimentId: 1, activityId: 1 }), { exp: "1", act: "1" });
  assert.deepEqual(labels.of({ experimentId: 1, activityId: 2 }), { exp: "1", act: "2" });
  assert.deepEqual(labels.of({ experimentId: 9, activityId: 9 }), { exp: "other", act: "other" });
  assert.deepEqual(
    labels.of({ experimentId: 1, activityId: 1 }),
    { exp: "1", act: "1" },
    "admitted pairs stay",
  );
});

Deno.test("prometheus: CPU seconds from /proc/self/stat, a command name with spaces and parentheses included", () => {
  const stat = "4242 (we ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 123 0 0";
  assert.equal(cpuSeconds(stat), 3.25);
  assert.ok(cpuSeconds(Deno.readTextFileSync("/proc/self/stat")) > 0);
});

Deno.test("prometheus: the metrics listener closes slow and idle connections, caps them, and counts it", async () => {
  const b = await backend({ skopsPort: 0, headerTimeout: 0.3, idleTimeout: 0.3, maxConnections: 3 });
  try {
    const port = b.address("Netlink")!.port;
    await using partial = await RawHttpClient.connect(port);
    await partial.send("GET /metrics HTTP/1.1\r\nHost: test\r\n");
    await using idle = await RawHttpClient.connect(port);
    await idle.send(requestHead("GET", "/metrics"));
    assert.equal((await idle.response()).status, 200);
    await using silent = await RawHttpClient.connect(port);
    await new Promise((r) => setTimeout(r, 50));
    await using fourth = await RawHttpClient.connect(port);
    assert.notEqual(await fourth.closedWithin(2000), undefined, "beyond maxConnections: closed at once");
    const closed = await Promise.all([partial, idle, silent].map((c) => c.closedWithin(5000)));
    assert.deepEqual(closed.map((ms) => ms !== undefined && ms > 100), [true, true, true], `${closed}`);

    const { families } = await scrape(url(b, "Netlink"));
    const v = (name: string, l: Record<string, string>) =>
      samplesOf(families, name, { listener: "prometheus-netlink", ...l }).map((s) => s.value);
    assert.deepEqual(v("flowd_http_connections_timed_out_total", { timeout: "header" }), [2]);
    assert.deepEqual(v("flowd_http_connections_timed_out_total", { timeout: "idle" }), [1]);
    assert.deepEqual(v("flowd_http_connections_refused_total", {}), [1]);
  } finally {
    await b.stop();
  }
});

Deno.test("prometheus: flowd_flows_active counts flows seen starting only, and ids beyond the registry's range are 'invalid'", async () => {
  const b = await backend();
  try {
    await b.handle(flow(3000, { state: "end" })); // never started
    await b.handle(flow(3001));
    await b.handle(flow(3001)); // started again: still one open flow
    await b.handle(flow(3002));
    await b.handle(flow(3002, { state: "end" }));
    await b.handle(flow(3002, { state: "end" })); // ended twice
    await b.handle(flow(3003, { experimentId: 4_010_000_001, activityId: 1 }));
    await b.handle(flow(3004, { experimentId: 2, activityId: 64 }));
    const { families } = await scrape(url(b, "Netlink"));
    const active = samplesOf(families, "flowd_flows_active");
    assert.deepEqual(
      active.map((s) => [s.labels.exp, s.labels.act, s.value]).sort(),
      [["2", "9", 1], ["invalid", "invalid", 2]],
    );
    assert.ok(active.every((s) => s.value >= 0));
    const labels = samplesOf(families, "flowd_flows_started_total").map((s) => s.labels.exp);
    assert.ok(!labels.includes("4010000001"), "an unbounded id became a label");
  } finally {
    await b.stop();
  }
});

Deno.test("prometheus: flow counts carry on across scrapes, in the order the pairs first started or ended", async () => {
  const b = await backend();
  const series = (families: Parameters<typeof samplesOf>[0], name: string) =>
    samplesOf(families, name).map((s) => `${s.labels.exp}/${s.labels.act}=${s.value}`);
  try {
    await b.handle(flow(4000, { state: "end", experimentId: 7, activityId: 1 })); // an end first: no start series
    await b.handle(flow(4001, { experimentId: 3, activityId: 4 }));
    await b.handle(flow(4002));
    await b.handle({ ...flow(4009, { experimentId: 5, activityId: 5 }), state: "ongoing" }); // counted nowhere
    let { families } = await scrape(url(b, "Netlink"));
    assert.deepEqual(series(families, "flowd_flows_started_total"), ["3/4=1", "2/9=1"]);
    assert.deepEqual(series(families, "flowd_flows_ended_total"), ["7/1=1"]);
    assert.deepEqual(series(families, "flowd_flows_active"), ["3/4=1", "2/9=1"]);
    await b.handle(flow(4003));
    await b.handle(flow(4001, { state: "end", experimentId: 3, activityId: 4 }));
    await b.handle(flow(4002, { state: "end" }));
    ({ families } = await scrape(url(b, "Netlink")));
    ({ families } = await scrape(url(b, "Netlink"))); // a scrape in between changes nothing
    assert.deepEqual(series(families, "flowd_flows_started_total"), ["3/4=1", "2/9=2"]);
    assert.deepEqual(series(families, "flowd_flows_ended_total"), ["7/1=1", "3/4=1", "2/9=1"]);
    assert.deepEqual(series(families, "flowd_flows_active"), ["3/4=0", "2/9=1"]);
  } finally {
    await b.stop();
  }
});
