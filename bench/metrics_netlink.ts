/**
 * `/metrics` of the real daemon with many watched TCP flows: the netlink enricher (period 1 s) sampling
 * real connections and the prometheus backend serving their per-flow series.
 *
 *   sudo deno run --allow-all bench/metrics_netlink.ts [--flows 1000,10000] [--rounds 10] [--idle 10]
 *   sudo deno run --allow-all bench/metrics_netlink.ts --quick        (under a minute)
 *
 * Needs root. A fresh network namespace (loopback only) holds everything: a child process started there
 * with `ip netns exec` and a raised open-file limit (`prlimit`) opens as many connections to a listener on
 * [::1] as the largest size asks for, then starts one flowd-go daemon per size (`src/main.ts`, config with
 * the named pipe, the prometheus backend and the netlink enricher) and announces the first N connections'
 * client ends to it through its named pipe. Once every daemon exports a series per flow, each is left alone
 * for `--idle` seconds (CPU from /proc/<pid>/stat, RSS from /proc/<pid>/status), then scraped in
 * interleaved rounds: daemon of each size, then the same number of bytes served as a fixed body by the same
 * HTTP server code in this process, on its fast path in one write (the ceiling: transfer and HTTP cost
 * with nothing rendered). Prints one JSON line per size (heapMB: the daemon's own process_heap_bytes at
 * the last scrape) and a summary; promtool checks one exposition per size. BENCH_SMAPS=1 prints each
 * daemon's largest mappings by RSS after the idle phase. The daemons run with the V8 flags the built
 * program ships with (scripts/v8-flags); `--source-v8` runs them with V8's defaults instead.
 */
import { getLogger } from "@logtape/logtape";
import { shippedV8Flags } from "./lib.ts";
import { HttpServer } from "../src/net/http_server.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] ?? fallback : fallback;
}

const QUICK = Deno.args.includes("--quick");
const SIZES = flag("flows", "1000,10000").split(",").map(Number);
const ROUNDS = Number(flag("rounds", QUICK ? "5" : "10"));
const IDLE_S = Number(flag("idle", QUICK ? "5" : "10"));
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const USER_HZ = 100;

interface Stats {
  median: number;
  p90: number;
}

function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { median: at(0.5), p90: at(0.9) };
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cpuTicks(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

function statusKiB(pid: number, key: string): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"));
  return Number(m?.[1] ?? NaN);
}

async function promtoolCheck(body: Uint8Array): Promise<string> {
  try {
    const child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(body);
    await w.close();
    const out = await child.output();
    const err = new TextDecoder().decode(out.stderr).trim();
    // Lint remarks (counter naming, ...) are not format errors; promtool exits 3 for them.
    return out.success ? "clean" : err.split("\n").slice(0, 3).join("; ");
  } catch {
    return "promtool not installed";
  }
}

async function scrape(port: number): Promise<{ ms: number; body: Uint8Array }> {
  const t0 = performance.now();
  const res = await fetch(`http://[::1]:${port}/metrics`);
  const body = await res.bytes();
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`scrape of port ${port}: status ${res.status}`);
  return { ms, body };
}

function countSeries(body: Uint8Array, name: string): number {
  const text = new TextDecoder().decode(body);
  let n = 0;
  for (let i = text.indexOf(`\n${name}{`); i >= 0; i = text.indexOf(`\n${name}{`, i + 1)) n++;
  return n;
}

/** A process metric's value from an exposition (the daemon's own view, at that scrape). */
function processMetric(body: Uint8Array, name: string): number {
  const m = new TextDecoder().decode(body).match(new RegExp(`^${name} (\\S+)$`, "m"));
  return Number(m?.[1] ?? NaN);
}

interface Daemon {
  flows: number;
  port: number;
  pipe: string;
  process: Deno.ChildProcess;
  log: string[];
}

function freePort(): number {
  const l = Deno.listen({ hostname: "::1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function startDaemon(dir: string, flows: number): Promise<Daemon> {
  const port = freePort();
  const pipe = `${dir}/np-${flows}`;
  const conf = `${dir}/conf-${flows}.yaml`;
  await Deno.writeTextFile(
    conf,
    `pidPath: ${dir}/flowd-${flows}.pid
workDir: ${dir}/work-${flows}
controlSocket: ${dir}/control-${flows}.sock
plugins:
  namedPipe:
    pipePath: ${pipe}
backends:
  prometheus:
    bindAddress: "::1"
    netlinkPort: ${port}
    skopsPort: 0
enrichers:
  period: 1000
  netlink: {}
`,
  );
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", ...shippedV8Flags(), ...v8Flags(), MAIN, "--conf", conf, "run"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const log: string[] = [];
  const ready = Promise.withResolvers<void>();
  (async () => {
    let rest = "";
    for await (const chunk of process.stderr.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      const lines = rest.split("\n");
      rest = lines.pop()!;
      for (const l of lines) {
        if (log.length < 2000) log.push(l);
        if (l.includes("let's go!")) ready.resolve();
      }
    }
    ready.reject(new Error(`daemon (${flows} flows) exited:\n${log.slice(-20).join("\n")}`));
  })();
  await ready.promise;
  return { flows, port, pipe, process, log };
}

/** Extra `deno run` flags for the daemons (`--daemon-flags "--cpu-prof --cpu-prof-dir=/tmp/p"`). */
function v8Flags(): string[] {
  const f = flag("daemon-flags", "");
  return f ? f.split(" ") : [];
}

/** Child, inside the namespace. */
async function child(): Promise<void> {
  const max = Math.max(...SIZES);
  // The server ends live in another process: one process may not hold 2 × 10,000 descriptors here.
  const acceptor = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL(import.meta.url).pathname, "--acceptor"],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = acceptor.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) first += (await reader.read()).value ?? "";
  const serverPort = Number(first.trim());
  const clients: Deno.Conn[] = [];
  const t0 = performance.now();
  for (let i = 0; i < max; i += 100) {
    const batch = Math.min(100, max - i);
    clients.push(
      ...await Promise.all(
        Array.from({ length: batch }, () => Deno.connect({ hostname: "::1", port: serverPort })),
      ),
    );
  }
  const openMs = performance.now() - t0;
  const dir = await Deno.makeTempDir({ prefix: "flowd-bench-metrics-" });
  const daemons: Daemon[] = [];
  try {
    for (const n of SIZES) daemons.push(await startDaemon(dir, n));
    for (const d of daemons) {
      const lines = clients.slice(0, d.flows).map((c) => {
        const l = c.localAddr as Deno.NetAddr, r = c.remoteAddr as Deno.NetAddr;
        return `start tcp ${l.hostname} ${l.port} ${r.hostname} ${r.port} ${1 + (l.port % 14)} ${
          l.port % 64
        }\n`;
      });
      const f = await Deno.open(d.pipe, { write: true });
      const bytes = new TextEncoder().encode(lines.join(""));
      for (let off = 0; off < bytes.byteLength;) off += await f.write(bytes.subarray(off));
      f.close();
    }
    // Every flow exported: one flow_tcp_rtt series each.
    const deadline = performance.now() + 120_000;
    for (const d of daemons) {
      for (;;) {
        const got = countSeries((await scrape(d.port)).body, "flow_tcp_rtt");
        if (got >= d.flows) break;
        if (performance.now() > deadline) throw new Error(`daemon ${d.flows}: ${got} flows exported`);
        await delay(500);
      }
    }
    await delay(3000); // a few periods with every flow
    // Idle: no scrape, the enricher's periods only.
    const before = daemons.map((d) => cpuTicks(d.process.pid));
    const t1 = performance.now();
    await delay(IDLE_S * 1000);
    const idleS = (performance.now() - t1) / 1000;
    const idleCores = daemons.map((d, i) => (cpuTicks(d.process.pid) - before[i]!) / USER_HZ / idleS);
    const idleRss = daemons.map((d) => statusKiB(d.process.pid, "VmRSS"));
    if (Deno.env.get("BENCH_SMAPS")) {
      for (const d of daemons) {
        const text = Deno.readTextFileSync(`/proc/${d.process.pid}/smaps`);
        const maps: [number, string][] = [];
        let cur = "";
        for (const line of text.split("\n")) {
          if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) cur = line;
          const m = line.match(/^Rss:\s+(\d+) kB/);
          if (m) maps.push([Number(m[1]), cur]);
        }
        maps.sort((a, b) => b[0] - a[0]);
        console.error(`smaps ${d.flows}:`, maps.slice(0, 12).map(([k, l]) => `${k} kB ${l}`).join("\n"));
      }
    }
    // Ceiling: the same bytes as a fixed body, same HTTP server code.
    const fixedBodies: Uint8Array[] = [];
    for (const d of daemons) fixedBodies.push((await scrape(d.port)).body.slice());
    // Answered on the server's fast path in one write: the cheapest way our server sends these bytes.
    const fixedServers = fixedBodies.map((body) =>
      HttpServer.listen(
        {
          hostname: "::1",
          port: 0,
          name: "fixed",
          log: getLogger(["bench"]),
          fast: () => ({ status: 200, headers: [["content-type", "text/plain"]], body }),
        },
        () => new Response("not here", { status: 404 }),
      )
    );
    const times = daemons.map(() => [] as number[]), fixed = daemons.map(() => [] as number[]);
    const last: Uint8Array[] = [];
    const scrapeCpu = daemons.map(() => 0);
    for (let r = 0; r < ROUNDS + 1; r++) {
      for (let i = 0; i < daemons.length; i++) {
        const c0 = cpuTicks(daemons[i]!.process.pid);
        const s = await scrape(daemons[i]!.port);
        if (r > 0) scrapeCpu[i]! += cpuTicks(daemons[i]!.process.pid) - c0;
        const f = await scrape(fixedServers[i]!.addr.port);
        if (r === 0) continue; // warm-up
        times[i]!.push(s.ms);
        fixed[i]!.push(f.ms);
        last[i] = s.body;
      }
      await delay(1000); // scrapes are seconds apart; let a period run in between
    }
    for (const s of fixedServers) await s.stop();
    const rows = [];
    for (let i = 0; i < daemons.length; i++) {
      const d = daemons[i]!, pid = d.process.pid;
      const t = stats(times[i]!), f = stats(fixed[i]!);
      rows.push({
        flows: d.flows,
        exported: countSeries(last[i]!, "flow_tcp_rtt"),
        scrapeMedianMs: +t.median.toFixed(1),
        scrapeP90Ms: +t.p90.toFixed(1),
        fixedBodyMedianMs: +f.median.toFixed(1),
        fixedBodyP90Ms: +f.p90.toFixed(1),
        bodyMB: +(last[i]!.byteLength / 1e6).toFixed(2),
        idleCores: +idleCores[i]!.toFixed(3),
        cpuMsPerScrape: Math.round((scrapeCpu[i]! * 1000) / USER_HZ / ROUNDS),
        idleRssMB: +(idleRss[i]! / 1024).toFixed(0),
        rssAfterScrapesMB: +(statusKiB(pid, "VmRSS") / 1024).toFixed(0),
        peakRssMB: +(statusKiB(pid, "VmHWM") / 1024).toFixed(0),
        heapMB: +(processMetric(last[i]!, "process_heap_bytes") / 1e6).toFixed(0),
        promtool: await promtoolCheck(last[i]!),
      });
    }
    console.log(JSON.stringify({ openMs: Math.round(openMs), idleS: +idleS.toFixed(1), rows }));
  } finally {
    for (const d of daemons) {
      try {
        d.process.kill("SIGTERM");
        await d.process.status;
      } catch { /* gone */ }
    }
    for (const c of clients) c.close();
    acceptor.kill("SIGTERM");
    await acceptor.status;
    await Deno.remove(dir, { recursive: true });
  }
}

async function sh(args: string[]): Promise<void> {
  const out = await new Deno.Command(args[0]!, { args: args.slice(1), stderr: "piped" }).output();
  if (!out.success) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("run as root: the benchmark creates a network namespace");
  const ns = `fgmetrics${Deno.pid}`;
  await sh(["ip", "netns", "add", ns]);
  let result: {
    openMs: number;
    idleS: number;
    rows: Array<Record<string, number | string> & { flows: number }>;
  };
  try {
    await sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
    const forwarded = Deno.args.filter((a) => a !== "--child");
    const out = await new Deno.Command("ip", {
      args: [
        ...["netns", "exec", ns, "prlimit", `--nofile=${Math.min(20000, Math.max(...SIZES) + 4096)}`],
        ...[
          Deno.execPath(),
          "run",
          "--allow-all",
          new URL(import.meta.url).pathname,
          "--child",
          ...forwarded,
        ],
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error("the child failed");
    result = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
  } finally {
    await sh(["ip", "netns", "del", ns]);
  }
  console.log(
    `flowd-go /metrics with watched TCP flows (netlink enricher, period 1 s) on ${Deno.osRelease()}, ` +
      `Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPUs; ${ROUNDS} interleaved rounds, ` +
      `idle CPU over ${result.idleS} s`,
  );
  for (const r of result.rows) console.log(JSON.stringify(r));
  const small = result.rows[0]!, big = result.rows.at(-1)!;
  if (result.rows.length > 1) {
    const scaled = (Number(small.scrapeMedianMs) * big.flows) / small.flows;
    console.log(
      `ceiling for ${big.flows} flows: ${small.flows}-flow scrape scaled ${scaled.toFixed(1)} ms; ` +
        `same bytes as a fixed body ${big.fixedBodyMedianMs} ms; measured ${big.scrapeMedianMs} ms`,
    );
  }
}

/** Holds the server ends of the connections until killed. */
async function acceptorMain(): Promise<void> {
  const listener = Deno.listen({ hostname: "::1", port: 0, backlog: 4096 } as Deno.TcpListenOptions);
  console.log((listener.addr as Deno.NetAddr).port);
  const held: Deno.Conn[] = [];
  for await (const c of listener) held.push(c);
}

if (Deno.args.includes("--acceptor")) await acceptorMain();
else if (Deno.args.includes("--child")) await child();
else await main();
