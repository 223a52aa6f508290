/**
 * A full marker map (hardening issue item 23): the kernel map holds exactly maxFlows flows, the policy
 * decides what goes (the oldest-started flow, or the new one), every eviction or refusal is counted and
 * warned about once per interval, and an end of an evicted flow is harmless.
 */
import assert from "node:assert/strict";
import { LibbpfError } from "../../ffi/libbpf.ts";
import { MarkerBackend } from "../../src/backends/marker/backend.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { privilegedTest } from "../helpers/privileged.ts";
import { freePort, startDaemon } from "../helpers/daemon.ts";
import { parseExposition, samplesOf } from "../helpers/prom_text.ts";

function flow(state: FlowEvent["state"], sport: number): FlowEvent {
  return {
    state,
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse("2001:db8::1"), port: sport },
    dst: { address: IpAddress.parse("2001:db8::2"), port: 443 },
    experimentId: 3,
    activityId: 14,
    application: "test",
  };
}

async function backend(whenFull: "evictOldest" | "refuse", maxFlows = 64) {
  const dir = await Deno.makeTempDir();
  const b = new MarkerBackend({
    config: {
      targetInterfaces: [],
      discoverInterfaces: false,
      removeQdisc: true,
      programPath: "",
      markingStrategy: "label",
      debugMode: false,
      matchAll: false,
      attachMode: "auto",
      maxFlows,
      whenFull,
    },
    ledgerPath: `${dir}/q.json`,
    checkIntervalMs: 0,
  });
  await b.start();
  return {
    b,
    async [Symbol.asyncDispose]() {
      await b.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const metric = (b: MarkerBackend, name: string) => b.health().find((m) => m.name === name)?.value;
const kernelPorts = (b: MarkerBackend) =>
  b.program!.flows().map((f) => f.flow.src.port).sort((x, y) => x - y);

privilegedTest(
  "marker map full, evictOldest: the newest 64 of 100 flows stay marked, 36 evictions counted, one warning",
  async () => {
    using logs = captureLogs("info");
    await using m = await backend("evictOldest");
    for (let i = 0; i < 100; i++) await m.b.handle(flow("start", 10000 + i));
    assert.deepEqual(
      kernelPorts(m.b),
      Array.from({ length: 64 }, (_, i) => 10036 + i),
      "the oldest 36 left the map",
    );
    assert.equal(m.b.stats.evicted, 36);
    assert.equal(metric(m.b, "flowd_marker_flows_evicted_total"), 36);
    assert.equal(metric(m.b, "flowd_marker_flows"), 64);
    assert.equal(logs.matching(/level=WARN .*flow map is full/).length, 1, "warned once, not 36 times");
    // The end of an evicted flow is harmless; a flow started again does not count twice.
    await m.b.handle(flow("end", 10000));
    await m.b.handle(flow("start", 10099));
    assert.equal(m.b.stats.endsNotMarked, 1);
    assert.equal(m.b.stats.failed, 0);
    assert.equal(metric(m.b, "flowd_marker_flows"), 64);
    // The kernel map really is 64 entries big: a 65th key does not fit.
    assert.throws(() => m.b.program!.setFlow(flow("start", 20000), 0x12345), (err: Error) => {
      assert.ok(err instanceof LibbpfError);
      assert.equal(err.errno, 7, "E2BIG: the map is full");
      return true;
    });
  },
);

privilegedTest("marker map full, refuse: the first 64 flows stay, 36 refused and counted", async () => {
  await using m = await backend("refuse");
  for (let i = 0; i < 100; i++) await m.b.handle(flow("start", 10000 + i));
  assert.deepEqual(kernelPorts(m.b), Array.from({ length: 64 }, (_, i) => 10000 + i));
  assert.equal(m.b.stats.refused, 36);
  assert.equal(metric(m.b, "flowd_marker_flows_refused_total"), 36);
  // An end frees a place for the next flow.
  await m.b.handle(flow("end", 10000));
  await m.b.handle(flow("start", 30000));
  assert.ok(kernelPorts(m.b).includes(30000));
});

privilegedTest(
  "marker map full in the daemon: 150,000 flows through the pipe into 100,000 places, 50,000 evictions on /metrics",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "flowd-marker-full-" });
    const port = freePort();
    const conf = `${dir}/conf.yaml`;
    await Deno.writeTextFile(
      conf,
      `pidPath: ${dir}/flowd-go.pid
workDir: ${dir}
controlSocket: ""
plugins:
  namedPipe:
    pipePath: np
    buffSize: 65536
backends:
  marker:
    targetInterfaces: []
    maxFlows: 100000
  prometheus:
    bindAddress: 127.0.0.1
    netlinkPort: ${port}
    skopsPort: 0
`,
    );
    try {
      await using daemon = await startDaemon(conf);
      const value = async (name: string, backend?: string) => {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        return samplesOf(parseExposition(text), name).filter((x) => !backend || x.labels.backend === backend)
          .reduce((s, x) => s + x.value, 0);
      };
      const f = await Deno.open(`${dir}/np`, { write: true });
      const enc = new TextEncoder();
      const deadline = performance.now() + 120_000;
      for (let b = 0; b < 30; b++) {
        const lines = Array.from({ length: 5000 }, (_, i) => {
          const n = b * 5000 + i;
          return `start tcp 2001:db8::${Math.floor(n / 60000) + 1} ${
            (n % 60000) + 1
          } 2001:db8::ffff 443 3 14\n`;
        });
        await f.write(enc.encode(lines.join("")));
        // Paced by the daemon itself: the next 5,000 only once the marker has handled these (its queue holds 10,000).
        while (await value("flowd_bus_events_handled_total", "marker") < (b + 1) * 5000) {
          if (performance.now() > deadline) {
            throw new Error(
              `the marker handled too few: ${await value("flowd_bus_events_handled_total", "marker")}`,
            );
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      f.close();
      assert.equal(await value("flowd_marker_flows_evicted_total"), 50_000);
      assert.equal(await value("flowd_marker_flows"), 100_000);
      assert.equal(await value("flowd_bus_events_dropped_total"), 0);
      assert.equal(daemon.lines.filter((l) => /flow map is full/.test(l)).length <= 10, true, "rate-limited");
      assert.equal(await daemon.stop("SIGTERM"), 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
