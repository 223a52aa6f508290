/**
 * How many 400-byte fireflies per second the firefly listener (src/plugins/firefly.ts) turns into flow
 * events, beside the ceiling of the same run: real UDP on 127.0.0.1, the whole path (receive, syslog header,
 * JSON, schema check, source gate, event), a sink that only counts. Method and numbers: bench/README.md.
 *
 *   deno run --allow-all bench/firefly_listener.ts [--quick] [--seconds 5] [--runs 3]
 *     [--rates 10000,30000,50000,80000,0] [--receivers dgram,mmsg,plugin]
 *
 * Receivers: `dgram` a bare node:dgram socket that only counts (anchors-perf §3's Deno receiver), `mmsg` a
 * bare ffi/udp_batch receiver (recvmmsg) that only counts, with the plugin's SO_RCVBUF, `plugin` the firefly listener. The parent compiles
 * bench/udp_blast.c (gcc), then per rate runs `--runs` rounds, each round every receiver once (in a rotating
 * order), each as a child process fed by the blaster. Rate 0 means unpaced. `--quick`: 1 s per run, 1 round.
 */
import dgram from "node:dgram";
import process from "node:process";
import { parseArgs } from "node:util";
import { UdpBatchReceiver } from "../ffi/udp_batch.ts";
import type { EmitResult, EventSink } from "../src/core/component.ts";
import type { FlowEvent } from "../src/core/flow_event.ts";
import { FireflyPlugin, RECEIVE_BUFFER_BYTES } from "../src/plugins/firefly.ts";

/** A flowd-go style start firefly with header, padded (application) to exactly 400 bytes. */
export function firefly400(): string {
  const head = "<134>1 2026-11-20T23:00:00.000001+00:00 bench.example.org flowd-go-3.0.0 - firefly-json - ";
  const body = (app: string) =>
    '{"version":1,"flow-lifecycle":{"state":"start","start-time":"2026-11-20T23:00:00.000001+00:00"},' +
    '"flow-id":{"afi":"ipv6","src-ip":"2001:db8::1","dst-ip":"2001:db8::2","protocol":"tcp","src-port":2345,' +
    `"dst-port":5777},"context":{"experiment-id":2,"activity-id":9,"application":"${app}"}}`;
  const text = head + body("");
  return head + body("x".repeat(400 - text.length));
}

type Kind = "dgram" | "mmsg" | "plugin";
const KINDS: readonly Kind[] = ["dgram", "mmsg", "plugin"];

/**
 * Receiver: prints its port, counts until it reads a line on stdin (the parent sends one once the blaster
 * is done and the queue has drained), then prints a JSON summary.
 */
async function child(kind: Kind): Promise<void> {
  let first = 0, last = 0, events = 0;
  const count = () => {
    const t = performance.now();
    if (events++ === 0) first = t;
    last = t;
  };
  let port: number;
  let stop: () => Promise<void>;
  let extra: Record<string, number> = {};
  if (kind === "dgram") {
    const socket = dgram.createSocket("udp4");
    await new Promise<void>((r) => socket.bind(0, "127.0.0.1", () => r()));
    socket.on("message", count);
    port = socket.address().port;
    stop = () => new Promise((r) => socket.close(() => r()));
  } else if (kind === "mmsg") {
    // The same receive buffer as the plugin's, so the ceiling differs from it only by the work per datagram.
    const rx = UdpBatchReceiver.open({
      address: "127.0.0.1",
      port: 0,
      slotSize: 4096,
      receiveBufferBytes: RECEIVE_BUFFER_BYTES,
    });
    rx.start(count);
    port = rx.port;
    stop = async () => {
      extra = { batches: rx.stats.batches };
      await rx.close();
    };
  } else {
    const sink: EventSink = {
      emit(_e: FlowEvent): EmitResult {
        count();
        return { accepted: true };
      },
    };
    const plugin = new FireflyPlugin({
      bindAddress: "127.0.0.1",
      bindPort: 0,
      bufferSize: 4096,
      deadline: 0,
      hasSyslogHeader: false,
      // One sender stands for many here: a limit far above the offered rate, so every datagram goes
      // through the token bucket (as with the default limit) but none is refused.
      rateLimit: 1e9,
      rateBurst: 1e9,
    });
    await plugin.start(sink);
    port = plugin.port;
    stop = async () => {
      await plugin.stop();
      extra = {
        received: plugin.stats.received,
        rejected: Object.values(plugin.stats.rejected).reduce((a, b) => a + b, 0),
      };
    };
  }
  console.log(JSON.stringify({ port }));
  const cpu0 = process.cpuUsage();
  const stdin = Deno.stdin.readable.getReader();
  await stdin.read();
  stdin.releaseLock();
  const cpu = process.cpuUsage(cpu0);
  await stop();
  const seconds = (last - first) / 1000;
  console.log(JSON.stringify({
    events,
    ...extra,
    seconds,
    rate: seconds > 0 ? events / seconds : 0,
    cpuUsPerEvent: events ? (cpu.user + cpu.system) / events : 0,
  }));
}

function rcvbufErrors(): number {
  const lines = Deno.readTextFileSync("/proc/net/snmp").split("\n").filter((l) => l.startsWith("Udp:"));
  const keys = lines[0]!.split(/\s+/), values = lines[1]!.split(/\s+/);
  return Number(values[keys.indexOf("RcvbufErrors")]);
}

interface RunResult {
  sent: number;
  events: number;
  rate: number;
  cpuUsPerEvent: number;
  rcvbufErrors: number;
  loss: number;
}

async function run(kind: Kind, blast: string, payload: string, seconds: number, rate: number) {
  const receiver = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", new URL(import.meta.url).pathname, "--child", kind],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = receiver.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const nextLine = async (): Promise<string> => {
    while (!buf.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("receiver ended early");
      buf += value;
    }
    const i = buf.indexOf("\n");
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    return line;
  };
  const { port } = JSON.parse(await nextLine());
  const errorsBefore = rcvbufErrors();
  const sender = await new Deno.Command(blast, {
    args: ["127.0.0.1", String(port), String(seconds), String(rate), payload],
    stdout: "piped",
  }).output();
  const sent = Number(new TextDecoder().decode(sender.stdout).trim());
  // What is still queued (at most one receive buffer, ~500 datagrams) is read well within this.
  await new Promise((r) => setTimeout(r, 300));
  const writer = receiver.stdin.getWriter();
  await writer.write(new TextEncoder().encode("stop\n"));
  await writer.close();
  const summary = JSON.parse(await nextLine());
  await receiver.status;
  reader.releaseLock();
  const errors = rcvbufErrors() - errorsBefore;
  return { sent, ...summary, rcvbufErrors: errors, loss: errors / sent } as RunResult;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** "median (min–max)" of the values, formatted by `f`; just the value when there is one. */
function spread(xs: number[], f: (x: number) => string): string {
  return xs.length === 1 ? f(xs[0]!) : `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
}

const int = (x: number) => Math.round(x).toLocaleString("en-US");
const pct = (x: number) => `${(x * 100).toFixed(x < 0.1 ? 2 : 1)} %`;
const us = (x: number) => `${x.toFixed(1)} µs`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      child: { type: "string" },
      quick: { type: "boolean", default: false },
      receivers: { type: "string", default: KINDS.join(",") },
      seconds: { type: "string" },
      runs: { type: "string" },
      rates: { type: "string", default: "10000,30000,50000,80000,0" },
    },
  });
  if (values.child) return await child(values.child as Kind);
  const seconds = Number(values.seconds ?? (values.quick ? 1 : 5));
  const runs = Number(values.runs ?? (values.quick ? 1 : 3));
  const kinds = values.receivers.split(",").map((k) => {
    if (!KINDS.includes(k as Kind)) throw new Error(`unknown receiver ${k}: use ${KINDS.join(", ")}`);
    return k as Kind;
  });
  const rates = values.rates.split(",").map(Number);
  const dir = await Deno.makeTempDir({ prefix: "flowd-bench-" });
  try {
    const blast = `${dir}/udp_blast`;
    const src = new URL("./udp_blast.c", import.meta.url).pathname;
    const cc = await new Deno.Command("gcc", { args: ["-O2", "-o", blast, src] }).output();
    if (!cc.success) throw new Error(new TextDecoder().decode(cc.stderr));
    const payload = `${dir}/firefly.txt`;
    const datagram = firefly400();
    await Deno.writeTextFile(payload, datagram);
    const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
    console.log(
      `datagram ${
        new TextEncoder().encode(datagram).length
      } bytes, ${seconds} s per run, ${runs} round(s), ` +
        `receivers ${kinds.join(",")}, rmem_default ${
          Deno.readTextFileSync("/proc/sys/net/core/rmem_default").trim()
        }, rmem_max ${Deno.readTextFileSync("/proc/sys/net/core/rmem_max").trim()}, load ${load}, ${
          new Date().toISOString()
        }`,
    );
    const rows: string[][] = [];
    for (const rate of rates) {
      const results = new Map<Kind, RunResult[]>(kinds.map((k) => [k, []]));
      for (let round = 0; round < runs; round++) {
        // Rotate the order, so no receiver always runs first (or right after the same one).
        const order = kinds.map((_, i) => kinds[(i + round) % kinds.length]!);
        for (const kind of order) {
          const r = await run(kind, blast, payload, seconds, rate);
          results.get(kind)!.push(r);
          console.log(`  ${rate || "unpaced"} ${kind} ${JSON.stringify(r)}`);
        }
      }
      const offered = median([...results.values()].flat().map((r) => r.sent / seconds));
      const row = [rate === 0 ? `unpaced (${int(offered)}/s offered)` : `${int(rate)}/s`];
      for (const kind of kinds) {
        const rs = results.get(kind)!;
        row.push(
          `${spread(rs.map((r) => r.rate), int)}, loss ${spread(rs.map((r) => r.loss), pct)}`,
          spread(rs.map((r) => r.cpuUsPerEvent), us),
        );
      }
      rows.push(row);
    }
    const header = ["offered", ...kinds.flatMap((k) => [`${k}: received/s, loss`, `${k}: CPU/datagram`])];
    console.log(`\n| ${header.join(" | ")} |\n|${header.map(() => " ---: |").join("")}`);
    for (const row of rows) console.log(`| ${row.join(" | ")} |`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
