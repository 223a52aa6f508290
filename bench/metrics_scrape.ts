/**
 * How long a Prometheus scrape of /metrics takes with many tracked flows, and what a sample costs the
 * backend: the prometheus backend fed with one sample per flow (every field set, as the netlink enricher
 * delivers them), then scraped over HTTP on loopback.
 *
 *   deno run --allow-all bench/metrics_scrape.ts [--flows 1000,10000] [--rounds 10]
 *
 * No privileges needed. Reported per flow count: time of one round of samples (one per flow, what every
 * enrichment period costs), the time to produce the exposition in the process, scrape time over HTTP
 * (median and p90, body read to the end by the client), the size of the exposition and its number of
 * series, and the heap in use. promtool (if installed) checks one exposition.
 */
import { PrometheusBackend } from "../src/backends/prometheus.ts";
import { PrometheusSchema } from "../src/config/schema.ts";
import type { EnrichmentSample } from "../src/core/component.ts";
import type { FlowEvent } from "../src/core/flow_event.ts";
import { IpAddress } from "../src/net/ip.ts";
import { flowInfoFixture, tcpInfoFixture } from "../tests/helpers/flow_info_fixture.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] ?? fallback : fallback;
}

const sizes = flag("flows", "1000,10000").split(",").map(Number);
const rounds = Number(flag("rounds", "10"));

function stats(samples: number[]): { median: number; p90: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { median: at(0.5), p90: at(0.9) };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function promtoolCheck(text: string): Promise<string> {
  try {
    const child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    })
      .spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(text));
    await w.close();
    const out = await child.output();
    return out.success ? "clean" : new TextDecoder().decode(out.stderr).split("\n").slice(0, 3).join("; ");
  } catch {
    return "promtool not installed";
  }
}

for (const n of sizes) {
  const port = freePort();
  const backend = new PrometheusBackend({
    config: PrometheusSchema.parse({ netlinkPort: port, skopsPort: 0 }),
    version: "bench",
  });
  await backend.start();
  const base = IpAddress.parse("2001:db8::1").bytes();
  const flows: FlowEvent[] = [];
  for (let i = 0; i < n; i++) {
    const dst = Uint8Array.from(base);
    dst[14] = (i >> 8) & 0xff;
    dst[15] = i & 0xff;
    flows.push({
      state: "start",
      protocol: "tcp",
      family: "ipv6",
      src: { address: IpAddress.parse("2001:db8::2"), port: 10000 + (i % 50000) },
      dst: { address: IpAddress.fromBytes(dst), port: 1094 },
      experimentId: 1 + (i % 14),
      activityId: i % 64,
      startTime: 1,
      application: "bench",
    });
  }
  for (const f of flows) await backend.handle(f);
  const info = flowInfoFixture();
  const sampleRounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    // Built before the clock starts: only the backend's work is timed.
    const round: EnrichmentSample[] = flows.map((f) => ({
      flavour: "Netlink",
      flow: f,
      time: r,
      info: { ...info, tcpInfo: tcpInfoFixture({ bytesSent: BigInt(r * 1000), rtt: 1000 + r }) },
    }));
    const t0 = performance.now();
    for (const sample of round) backend.enrich(sample);
    sampleRounds.push(performance.now() - t0);
  }
  const renders: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    await backend.metricsText("Netlink");
    renders.push(performance.now() - t0);
  }
  const scrapes: number[] = [];
  let text = "";
  for (let r = 0; r < rounds + 1; r++) {
    const t0 = performance.now();
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    text = await res.text();
    if (r > 0) scrapes.push(performance.now() - t0); // the first one warms up
  }
  const series = text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
  const check = n <= 10000 ? await promtoolCheck(text) : "skipped";
  const samples = stats(sampleRounds), scrape = stats(scrapes), render = stats(renders);
  console.log(JSON.stringify({
    flows: n,
    sampleRoundMs: Number(samples.median.toFixed(2)),
    usPerSample: Number(((samples.median * 1000) / n).toFixed(2)),
    renderMedianMs: Number(render.median.toFixed(1)),
    scrapeMedianMs: Number(scrape.median.toFixed(1)),
    scrapeP90Ms: Number(scrape.p90.toFixed(1)),
    bytes: text.length,
    series,
    heapMiB: Number((Deno.memoryUsage().heapUsed / 2 ** 20).toFixed(1)),
    promtool: check,
  }));
  await backend.stop();
}
