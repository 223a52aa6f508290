/**
 * Requests per second of POST /flow (200-byte JSON body) against the api plugin with a counting sink.
 *
 * The server runs in a child process (this file with --serve) so it has its own JS thread, as the daemon
 * would. Load comes from `wrk` when it is installed, else from this process: N keep-alive connections, each
 * sending a request and reading its response in a loop, over plain Deno.connect ("raw", far cheaper per
 * request than fetch) or over fetch ("deno").
 *
 *   deno run --allow-all bench/api_post.ts [--seconds 10] [--connections 32] [--warmup 3] [--client raw|deno|wrk]
 *                                          [--server api|bare|hono|ours|ours-hono|ours-const|plain]
 *                                          [--backend sink|firefly|prometheus] [--trees A,B [--rounds 3]]
 *
 * `--server bare` and `--server hono` run the anchor's two reference servers instead (req.json(), a small
 * JSON reply; plain Deno.serve or a 4-route Hono app), so figures taken without wrk can still be set
 * against the anchor on the same machine. `--server ours` and `--server ours-hono` run the same two
 * handlers on the daemon's own HTTP server (src/net/http_server.ts), which the api plugin uses;
 * `--server ours-const` answers every POST /flow on that server's fast path with a fixed reply of the
 * api's size (the server's own floor, without the api's parse, validation and echo).
 *
 * `--backend` says what the api plugin's events go to: `sink` (default) counts them; `firefly` and
 * `prometheus` put the daemon's event bus in between, with that real backend behind it. The firefly
 * backend sends to a collector on 127.0.0.1 only (not to the flows' documentation-prefix destinations):
 * a UDP sink in this process that counts what arrives.
 *
 * `--trees A,B` compares source trees (say an exported main and this branch) in the same interleaved rounds:
 * each round runs bare Deno.serve, then each tree's own `bench/api_post.ts --serve api`; medians and each
 * one's ratio to bare from the same rounds close the output.
 */
import { Hono } from "hono";
import { ApiPlugin } from "../src/plugins/api.ts";
import { HttpServer } from "../src/net/http_server.ts";
import { logger } from "../src/core/log.ts";
import { EventBus } from "../src/core/bus.ts";
import type { Backend, EventSink } from "../src/core/component.ts";
import { FireflyBackendSchema, PrometheusSchema } from "../src/config/schema.ts";
import { UdpBatchReceiver } from "../ffi/udp_batch.ts";

const BODY = (() => {
  const json = JSON.stringify({
    State: 2,
    Protocol: 0,
    Family: 10,
    Src: "[2001:db8::1]:2345",
    Dst: "[2001:db8::2]:5777",
    Experiment: 65535,
    Activity: 65535,
    StartTs: "2025-03-01T10:00:00.123456+01:00",
    Application: "bench",
  });
  return json.padEnd(200, " ");
})();

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] ?? fallback : fallback;
}

/** Child: serve until stdin closes, then report how many events the sink took. */
async function serve(kind: string): Promise<void> {
  let count = 0;
  let stop: () => Promise<void>;
  if (kind === "plain") {
    // The socket floor: a connection loop that answers every read with a fixed 200 of the api's size.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const reply = new TextEncoder().encode(
      `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 420\r\n\r\n${"x".repeat(420)}`,
    );
    (async () => {
      for await (const conn of listener) {
        conn.setNoDelay(true);
        (async () => {
          const buf = new Uint8Array(16384);
          try {
            while ((await conn.read(buf)) !== null) {
              count++;
              await conn.write(reply);
            }
          } catch { /* reset */ }
        })();
      }
    })().catch(() => {});
    console.log((listener.addr as Deno.NetAddr).port);
    stop = () => Promise.resolve(listener.close());
  } else if (kind === "ours-const") {
    const reply = {
      status: 200,
      headers: [["content-type", "application/json"]] as const,
      body: "x".repeat(420),
    };
    const server = HttpServer.listen({
      hostname: "127.0.0.1",
      port: 0,
      name: "bench",
      log: logger("bench"),
      fast: () => (count++, reply),
    }, () => new Response("not found", { status: 404 }));
    console.log(server.addr.port);
    stop = () => server.stop();
  } else if (["bare", "hono", "ours", "ours-hono"].includes(kind)) {
    // The anchor's reference servers: parse the body, answer a small JSON object, bare or through Hono.
    const handle = async (req: Request) => {
      await req.json();
      return Response.json({ ok: true, id: ++count });
    };
    const app = new Hono();
    app.get("/", (c) => c.text("root"));
    app.get("/health", (c) => c.text("ok"));
    app.post("/flow", (c) => handle(c.req.raw));
    app.get("/flows", (c) => c.json([]));
    const handler = kind === "bare" || kind === "ours" ? handle : app.fetch;
    if (kind.startsWith("ours")) {
      const server = HttpServer.listen({
        hostname: "127.0.0.1",
        port: 0,
        name: "bench",
        log: logger("bench"),
      }, handler);
      console.log(server.addr.port);
      stop = () => server.stop();
    } else {
      const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
      console.log(server.addr.port);
      stop = () => server.shutdown();
    }
  } else {
    const plugin = new ApiPlugin({ bindAddress: "127.0.0.1", bindPort: 0, application: "bench" });
    const backendKind = flag("backend", "sink");
    let sink: EventSink = {
      emit: () => {
        count++;
        return { accepted: true };
      },
    };
    let backend: Backend | undefined;
    // The daemon's bus with one real backend behind it (the daemon's capacities).
    const bus = new EventBus({ queueCapacity: 10_000, flowTableCapacity: 1_000_000 });
    if (backendKind === "firefly") {
      const { FireflyBackend } = await import("../src/backends/firefly.ts");
      const config = FireflyBackendSchema.parse({
        sendToDestination: false,
        sendToCollector: true,
        collectorAddress: "127.0.0.1",
        collectorPort: Number(flag("collector-port", "0")),
      });
      backend = new FireflyBackend({ config, hostname: "bench", appName: "flowd-go" });
    } else if (backendKind === "prometheus") {
      const { PrometheusBackend } = await import("../src/backends/prometheus.ts");
      const config = PrometheusSchema.parse({ netlinkPort: 0, skopsPort: 0 });
      backend = new PrometheusBackend({ config, version: "bench", health: () => bus.health() });
    } else if (backendKind !== "sink") {
      throw new Error(`--backend ${backendKind}: sink, firefly or prometheus`);
    }
    if (backend !== undefined) {
      await backend.start();
      bus.attachBackend(backend);
      sink = bus.sinkFor("api");
    }
    await plugin.start(sink);
    console.log(plugin.port);
    stop = async () => {
      await plugin.stop();
      if (backend === undefined) return;
      await bus.close(5000);
      await backend.stop();
      count = bus.received;
      const stats = (backend as { stats?: unknown }).stats;
      if (stats) {
        console.error(`backend ${backendKind}: ${JSON.stringify(stats)}, bus ${JSON.stringify(bus.stats())}`);
      }
    };
  }
  for await (const _ of Deno.stdin.readable) { /* wait for the parent to close stdin */ }
  await stop();
  console.log(count);
}

/** CPU seconds used so far by a process (user, system), from /proc. */
function cpuSeconds(pid: number): { user: number; sys: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime, stime in clock ticks (USER_HZ 100)
  return { user: Number(fields[11]) / 100, sys: Number(fields[12]) / 100 };
}

async function denoLoad(url: string, seconds: number, connections: number) {
  let ok = 0, bad = 0;
  const deadline = performance.now() + seconds * 1000;
  const loop = async () => {
    while (performance.now() < deadline) {
      const res = await fetch(url, {
        method: "POST",
        body: BODY,
        headers: { "content-type": "application/json" },
      });
      await res.arrayBuffer();
      if (res.status === 200) ok++;
      else bad++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: connections }, loop));
  return { ok, bad, elapsed: (performance.now() - t0) / 1000 };
}

/** Minimal keep-alive HTTP/1.1 client over Deno.connect: much cheaper per request than fetch. */
async function rawLoad(url: string, seconds: number, connections: number) {
  const { hostname, port, pathname } = new URL(url);
  const request = new TextEncoder().encode(
    `POST ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${BODY.length}\r\n\r\n${BODY}`,
  );
  const latin1 = new TextDecoder("latin1");
  let ok = 0, bad = 0;
  const deadline = performance.now() + seconds * 1000;
  const loop = async () => {
    const conn = await Deno.connect({ hostname, port: Number(port) });
    const buf = new Uint8Array(64 * 1024);
    let pending = "";
    try {
      while (performance.now() < deadline) {
        await conn.write(request);
        // Read one response: headers, then Content-Length bytes of body.
        for (;;) {
          const end = pending.indexOf("\r\n\r\n");
          if (end >= 0) {
            const length = Number(/content-length: (\d+)/i.exec(pending.slice(0, end))?.[1] ?? 0);
            if (pending.length >= end + 4 + length) {
              if (pending.startsWith("HTTP/1.1 200")) ok++;
              else bad++;
              pending = pending.slice(end + 4 + length);
              break;
            }
          }
          const n = await conn.read(buf);
          if (n === null) throw new Error("the server closed the connection");
          pending += latin1.decode(buf.subarray(0, n));
        }
      }
    } finally {
      conn.close();
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: connections }, loop));
  return { ok, bad, elapsed: (performance.now() - t0) / 1000 };
}

async function wrkLoad(url: string, seconds: number, connections: number) {
  const script = await Deno.makeTempFile({ suffix: ".lua" });
  await Deno.writeTextFile(
    script,
    `wrk.method = "POST"\nwrk.body = ${
      JSON.stringify(BODY)
    }\nwrk.headers["Content-Type"] = "application/json"\n`,
  );
  try {
    const out = await new Deno.Command("wrk", {
      args: ["-t2", `-c${connections}`, `-d${seconds}s`, "--latency", "-s", script, url],
      stdout: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const reqs = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
    return { ok: Math.round(reqs * seconds) - non2xx, bad: non2xx, elapsed: seconds };
  } finally {
    await Deno.remove(script);
  }
}

async function hasWrk(): Promise<boolean> {
  try {
    await new Deno.Command("wrk", { args: ["--version"], stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

interface Measured {
  rate: number;
  user: number;
  sys: number;
  ok: number;
  bad: number;
  events: number;
  fireflies: number;
}

/** One run: the server of `script` (this file, or another tree's copy) in a child, loaded by `client`. */
async function measure(
  script: string,
  server: string,
  backend: string,
  opts: { seconds: number; connections: number; warmup: number; client: string },
): Promise<Measured> {
  // The firefly backend's collector: counts the datagrams that arrive (recvmmsg, a large buffer).
  let fireflies = 0;
  const collector = UdpBatchReceiver.open({
    address: "127.0.0.1",
    port: 0,
    slotSize: 2048,
    receiveBufferBytes: 8 << 20,
  });
  collector.start(() => fireflies++);

  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      ...(Deno.env.get("BENCH_CPU_PROF")
        ? ["--cpu-prof", `--cpu-prof-dir=${Deno.env.get("BENCH_CPU_PROF")}`]
        : []),
      script,
      "--serve",
      server,
      "--backend",
      backend,
      "--collector-port",
      String(collector.port),
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const nextLine = async (): Promise<string> => {
    while (!buffered.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error("the server process ended early");
      buffered += value;
    }
    const i = buffered.indexOf("\n");
    const line = buffered.slice(0, i);
    buffered = buffered.slice(i + 1);
    return line;
  };
  const url = `http://127.0.0.1:${await nextLine()}/flow`;
  const load = opts.client === "wrk" ? wrkLoad : opts.client === "raw" ? rawLoad : denoLoad;

  if (opts.warmup > 0) await load(url, opts.warmup, opts.connections);
  const cpu0 = cpuSeconds(child.pid);
  const r = await load(url, opts.seconds, opts.connections);
  const cpu1 = cpuSeconds(child.pid);

  await child.stdin.close();
  const events = Number(await nextLine());
  await child.status;
  lines.releaseLock();
  await collector.close();
  return {
    rate: r.ok / r.elapsed,
    user: (cpu1.user - cpu0.user) / r.elapsed,
    sys: (cpu1.sys - cpu0.sys) / r.elapsed,
    ok: r.ok,
    bad: r.bad,
    events,
    fireflies,
  };
}

function report(label: string, m: Measured, opts: { seconds: number; connections: number; client: string }) {
  const cpu = m.user + m.sys;
  console.log(
    [
      `${label} POST /flow, ${BODY.length}-byte body, client ${opts.client}, ` +
      `${opts.connections} concurrent, ${opts.seconds}s`,
      `  ${Math.round(m.rate)} req/s (${m.ok} ok, ${m.bad} non-200), server CPU ${cpu.toFixed(2)} core ` +
      `(user ${m.user.toFixed(2)}, system ${m.sys.toFixed(2)}), ${
        (cpu / m.rate * 1e6).toFixed(1)
      } µs per request`,
      `  events counted by the sink (warm-up included): ${m.events}` +
      (label.includes("firefly") ? `, fireflies received: ${m.fireflies}` : ""),
    ].join("\n"),
  );
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const opts = {
    seconds: Number(flag("seconds", "10")),
    connections: Number(flag("connections", "32")),
    warmup: Number(flag("warmup", "3")),
    client: flag("client", (await hasWrk()) ? "wrk" : "raw"),
  };
  const server = flag("server", "api");
  const backend = flag("backend", "sink");
  const self = new URL(import.meta.url).pathname;
  const trees = flag("trees", "");
  if (trees === "") {
    const m = await measure(self, server, backend, opts);
    report(server === "api" ? `${server} (${backend})` : server, m, opts);
    return;
  }
  // --trees A,B: each round runs bare Deno.serve, then the api server of each tree (its own copy of this
  // file, so each tree's api and backends), interleaved; the summary gives medians and the ratio to bare.
  const roots = trees.split(",");
  const rounds = Number(flag("rounds", "3"));
  const runs = new Map<string, Measured[]>([
    ["bare", []],
    ...roots.map((t) => [t, []] as [string, Measured[]]),
  ]);
  for (let r = 0; r < rounds; r++) {
    for (const [name, list] of runs) {
      const script = name === "bare" ? self : `${name}/bench/api_post.ts`;
      const m = await measure(script, name === "bare" ? "bare" : server, backend, opts);
      list.push(m);
      report(`round ${r + 1}: ${name === "bare" ? "bare" : `api (${backend}) of ${name}`}`, m, opts);
    }
  }
  const bare = median(runs.get("bare")!.map((m) => m.rate));
  console.log(
    `\nmedians of ${rounds} rounds (req/s, µs CPU per request, ratio to bare Deno.serve of the same rounds)`,
  );
  for (const [name, list] of runs) {
    const rate = median(list.map((m) => m.rate));
    const us = list.map((m) => (m.user + m.sys) / m.rate * 1e6);
    console.log(
      `  ${(name === "bare" ? "bare Deno.serve" : `api (${backend}) ${name}`).padEnd(40)} ` +
        `${Math.round(rate)} (${list.map((m) => Math.round(m.rate / 100) / 10 + "k").join(", ")}), ` +
        `${median(us).toFixed(1)} µs (${Math.min(...us).toFixed(1)}-${Math.max(...us).toFixed(1)}), ` +
        `${(rate / bare).toFixed(2)}x`,
    );
  }
}

if (Deno.args.includes("--serve")) await serve(flag("serve", "api"));
else await main();
