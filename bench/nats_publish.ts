/**
 * Flow events published with acknowledgements through a real three-node JetStream cluster on loopback
 * (stream replicas 3): the nats backend (src/backends/nats.ts: firefly document built per event, outbox
 * record written, publish with Nats-Msg-Id, ack matched and recorded) beside its ceiling in the same run:
 * a bare client publishing the same document bytes with the same reply-subject scheme and the same bound
 * in flight, no outbox and nothing built (what the cluster and the client library take at most). Each
 * round has fresh streams; rounds interleaved; medians and ratio.
 *
 *   deno run --allow-all bench/nats_publish.ts [--rounds 5] [--events 50000] [--inflight 1024] [--quick]
 */
import { headers, type NatsConnection, nuid } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { NatsBackend } from "../src/backends/nats.ts";
import { NatsBackendSchema } from "../src/config/schema.ts";
import type { FlowEvent } from "../src/core/flow_event.ts";
import { IpAddress } from "../src/net/ip.ts";
import { buildFirefly, serializeFirefly } from "../src/scitags/firefly.ts";
import { startNatsCluster } from "../tests/helpers/nats_cluster.ts";
import { median, parseFlags, range } from "./lib.ts";

const flags = parseFlags({ rounds: "5", events: "50000", inflight: "1024", quick: "false" });
const quick = flags.quick === "true";
const rounds = quick ? 2 : Number(flags.rounds);
const n = quick ? 20_000 : Number(flags.events);
const inflight = Number(flags.inflight);

const src = IpAddress.parse("2001:db8::1"), dst = IpAddress.parse("2001:db8::2");
const events: FlowEvent[] = Array.from({ length: n }, (_, i) => ({
  state: i % 2 ? "end" : "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: src, port: 1024 + ((i >> 1) % 60000) },
  dst: { address: dst, port: 1094 + Math.floor(i / 120000) },
  experimentId: 2,
  activityId: 9,
  startTime: 1_796_300_000_000_000 + i,
  ...(i % 2 ? { endTime: 1_796_300_000_000_000 + i } : {}),
  application: "bench",
}));
const body = new TextEncoder().encode(serializeFirefly(buildFirefly(events[0]!, { currentTime: 1 })));

await using cluster = await startNatsCluster();
const nc = await cluster.connect();
const jsm = await jetstreamManager(nc);
const dir = await Deno.makeTempDir({ prefix: "flowd-bench-nats-" });
let round = 0;

async function ours(): Promise<number> {
  const name = `OURS${round}`;
  const config = NatsBackendSchema.parse({
    servers: cluster.urls,
    stream: name,
    subjectPrefix: `b.ours${round}`,
    createStream: true,
    replicas: 3,
    maxInFlight: inflight,
  });
  const backend = new NatsBackend({
    config,
    hostname: "bench",
    appName: "bench",
    outboxPath: `${dir}/outbox-${round}.log`,
    connection: { servers: cluster.urls, connectTimeout: 5 },
  });
  await backend.start();
  const t0 = performance.now();
  // As the bus hands events over: in bursts, yielding between them.
  for (let i = 0; i < n; i += 256) {
    for (let j = i; j < Math.min(n, i + 256); j++) backend.handle(events[j]!);
    await new Promise((r) => setTimeout(r, 0));
  }
  while (backend.stats.acked + backend.stats.duplicates < n) await new Promise((r) => setTimeout(r, 1));
  const dt = performance.now() - t0;
  await backend.stop();
  if (backend.stats.duplicates || backend.stats.failed) {
    throw new Error(`duplicates ${backend.stats.duplicates} failed ${backend.stats.failed}`);
  }
  await jsm.streams.delete(name);
  return n / (dt / 1000);
}

async function ceiling(conn: NatsConnection): Promise<number> {
  const name = `BARE${round}`;
  await jsm.streams.add({ name, subjects: [`b.bare${round}.>`], num_replicas: 3 });
  const subject = `b.bare${round}.x`;
  const prefix = `_INBOX.bench.${nuid.next()}`;
  let acked = 0, sent = 0, outstanding = 0;
  let wake: (() => void) | undefined;
  const sub = conn.subscribe(`${prefix}.*`, {
    callback: () => {
      acked++;
      outstanding--;
      wake?.();
    },
  });
  const t0 = performance.now();
  while (sent < n) {
    while (outstanding < inflight && sent < n) {
      const h = headers();
      h.set("Nats-Msg-Id", `m${sent}`);
      conn.publish(subject, body, { reply: `${prefix}.${sent}`, headers: h });
      sent++;
      outstanding++;
    }
    await new Promise<void>((r) => wake = r);
  }
  while (acked < n) await new Promise<void>((r) => wake = r);
  const dt = performance.now() - t0;
  sub.unsubscribe();
  await jsm.streams.delete(name);
  return n / (dt / 1000);
}

await ours(); // warm-up
await ceiling(nc);
const a: number[] = [], c: number[] = [];
for (round = 1; round <= rounds; round++) {
  a.push(await ours());
  c.push(await ceiling(nc));
}
await nc.close();
await Deno.remove(dir, { recursive: true });
const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
console.log(
  `nats publish, ${n} events of ${body.length} bytes, 3-node cluster R3, ${inflight} in flight, ${rounds} rounds, ` +
    `load ${load}`,
);
console.log(
  `  ours (backend: build + outbox + publish + ack):  median ${Math.round(median(a))} events/s (${range(a)})`,
);
console.log(
  `  ceiling (bare client, same bytes and bound):     median ${Math.round(median(c))} msgs/s (${range(c)})`,
);
console.log(`  ratio ${(median(a) / median(c)).toFixed(3)}`);
