/**
 * How many 400-byte fireflies per second the firefly listener (src/plugins/firefly.ts) turns into flow
 * events: real UDP on 127.0.0.1, the whole path (receive, syslog header, JSON, schema check, event), a sink
 * that only counts. Method and numbers: bench/README.md.
 *
 *   deno run --allow-all bench/firefly_listener.ts [--seconds 5] [--runs 3] [--rates 0,20000,50000,100000]
 *     [--receivers raw,plugin]
 *
 * The parent compiles bench/udp_blast.c (gcc), then per run starts a receiver child process (this script
 * with --child) and the blaster, and reads the counts. Rate 0 means unpaced.
 */
import dgram from "node:dgram";
import process from "node:process";
import { parseArgs } from "node:util";
import type { EmitResult, EventSink } from "../src/core/component.ts";
import type { FlowEvent } from "../src/core/flow_event.ts";
import { FireflyPlugin } from "../src/plugins/firefly.ts";

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

/**
 * Receiver: prints its port, counts, exits 1 s after the last datagram with a JSON summary. `plugin` is the
 * firefly listener with a counting sink; `raw` a bare node:dgram socket counting datagrams (anchors-perf §3's
 * Deno receiver), the ceiling of the same pass.
 */
async function child(kind: "plugin" | "raw"): Promise<void> {
  let first = 0, last = 0, events = 0;
  const count = () => {
    const t = performance.now();
    if (events++ === 0) first = t;
    last = t;
  };
  let port: number;
  let stop: () => Promise<void>;
  let extra: Record<string, number> = {};
  if (kind === "raw") {
    const socket = dgram.createSocket("udp4");
    await new Promise<void>((r) => socket.bind(0, "127.0.0.1", () => r()));
    socket.on("message", count);
    port = socket.address().port;
    stop = () => new Promise((r) => socket.close(() => r()));
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
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    if (events > 0 && performance.now() - last > 1000) break;
  }
  const cpu = process.cpuUsage(cpu0);
  await stop();
  const seconds = (last - first) / 1000;
  const cpuUsPerEvent = events ? (cpu.user + cpu.system) / events : 0;
  console.log(
    JSON.stringify({ events, ...extra, seconds, rate: seconds > 0 ? events / seconds : 0, cpuUsPerEvent }),
  );
}

function rcvbufErrors(): number {
  const lines = Deno.readTextFileSync("/proc/net/snmp").split("\n").filter((l) => l.startsWith("Udp:"));
  const keys = lines[0]!.split(/\s+/), values = lines[1]!.split(/\s+/);
  return Number(values[keys.indexOf("RcvbufErrors")]);
}

async function run(kind: string, blast: string, payload: string, seconds: number, rate: number) {
  const receiver = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", new URL(import.meta.url).pathname, "--child", kind],
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
  const summary = JSON.parse(await nextLine());
  await receiver.status;
  reader.releaseLock();
  return { sent, ...summary, rcvbufErrors: rcvbufErrors() - errorsBefore };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      child: { type: "string" },
      receivers: { type: "string", default: "raw,plugin" },
      seconds: { type: "string", default: "5" },
      runs: { type: "string", default: "3" },
      rates: { type: "string", default: "0,20000,50000,100000" },
    },
  });
  if (values.child) return await child(values.child === "raw" ? "raw" : "plugin");
  const dir = await Deno.makeTempDir({ prefix: "flowd-bench-" });
  try {
    const blast = `${dir}/udp_blast`;
    const src = new URL("./udp_blast.c", import.meta.url).pathname;
    const cc = await new Deno.Command("gcc", { args: ["-O2", "-o", blast, src] }).output();
    if (!cc.success) throw new Error(new TextDecoder().decode(cc.stderr));
    const payload = `${dir}/firefly.txt`;
    const datagram = firefly400();
    await Deno.writeTextFile(payload, datagram);
    console.log(`datagram: ${new TextEncoder().encode(datagram).length} bytes`);
    for (const rate of values.rates.split(",").map(Number)) {
      for (const kind of values.receivers.split(",")) {
        const results = [];
        for (let i = 0; i < Number(values.runs); i++) {
          results.push(await run(kind, blast, payload, Number(values.seconds), rate));
        }
        const rates = results.map((r) => r.rate);
        const losses = results.map((r) => 1 - r.events / r.sent);
        console.log(
          `${kind} ${rate === 0 ? "unpaced" : `paced ${rate}/s`}: events/s median ${
            Math.round(median(rates))
          } ` +
            `(${Math.round(Math.min(...rates))}-${Math.round(Math.max(...rates))}), loss median ` +
            `${(median(losses) * 100).toFixed(1)} %, offered ${
              Math.round(median(results.map((r) => r.sent)) / Number(values.seconds))
            }/s`,
        );
        for (const r of results) console.log(`  ${JSON.stringify(r)}`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
