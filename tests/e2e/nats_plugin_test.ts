/**
 * Plugin `nats` end to end: the real daemon reading a durable consumer on a real three-node cluster, its
 * events observed through backends.nats (a second stream of the same cluster). POST /flow bodies and
 * firefly documents reach the bus, a repeated start is harmless, malformed messages are terminated with a
 * logged reason (never delivered again), and a daemon restarted mid-stream loses no message.
 */
import assert from "node:assert/strict";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { runFlowd, startDaemon } from "../helpers/daemon.ts";
import {
  type NatsCluster,
  natsServerAvailable,
  readStream,
  startNatsCluster,
} from "../helpers/nats_cluster.ts";
import { buildFirefly, serializeFirefly } from "../../src/scitags/firefly.ts";
import { IpAddress } from "../../src/net/ip.ts";

const available = natsServerAvailable();
if (!available) {
  console.error("SKIPPED (nats-server not installed; scripts/setup.sh installs it): nats plugin");
}

interface Setup {
  dir: string;
  conf: string;
  control: string;
  controlStream: string;
  outStream: string;
}

async function setup(cluster: NatsCluster, name: string): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: `flowd-natsp-${name}-` });
  const s = {
    dir,
    conf: `${dir}/conf.yaml`,
    control: `ctl.${name}.node1`,
    controlStream: `CTL_${name.toUpperCase()}`,
    outStream: `OUT_${name.toUpperCase()}`,
  };
  const servers = `[${cluster.urls.join(", ")}]`;
  await Deno.writeTextFile(
    s.conf,
    `pidPath: ""
workDir: ${dir}/work
controlSocket: ${dir}/control.sock
plugins:
  nats:
    servers: ${servers}
    subject: ${s.control}
    stream: ${s.controlStream}
    createStream: true
    replicas: 3
    ackWait: 2
backends:
  nats:
    servers: ${servers}
    stream: ${s.outStream}
    subjectPrefix: out.${name}
    createStream: true
    replicas: 3
`,
  );
  return s;
}

/** The parts of a firefly document the checks read. */
type Doc = { "flow-id": { "src-port": number }; "flow-lifecycle": { state: string } };

const startBody = (port: number) => ({
  State: "start",
  Protocol: "tcp",
  Src: `[2001:db8::1]:${port}`,
  Dst: "[2001:db8::2]:443",
  Experiment: 2,
  Activity: 9,
});

/** The documents of the output stream so far. */
async function outDocs(nc: NatsConnection, stream: string): Promise<Doc[]> {
  const jsm = await jetstreamManager(nc);
  const n = (await jsm.streams.info(stream)).state.messages;
  if (n === 0) return [];
  return (await readStream(nc, stream, n)).map((m) => m.doc as Doc);
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const srcPort = (d: Doc) => d["flow-id"]["src-port"];
const stateOf = (d: Doc) => d["flow-lifecycle"].state;

Deno.test({
  name: "nats plugin: control messages reach the bus; malformed ones terminated; a restart loses nothing",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using cluster = await startNatsCluster();
    const nc = await cluster.connect();
    const js = jetstream(nc);
    const cleanup: string[] = [];
    try {
      await t.step(
        "POST /flow bodies and firefly documents; a repeated start; malformed messages",
        async () => {
          const s = await setup(cluster, "mixed");
          cleanup.push(s.dir);
          await using daemon = await startDaemon(s.conf);
          const firefly = serializeFirefly(buildFirefly({
            state: "end",
            protocol: "tcp",
            family: "ipv6",
            src: { address: IpAddress.parse("2001:db8::1"), port: 7001 },
            dst: { address: IpAddress.parse("2001:db8::2"), port: 443 },
            experimentId: 2,
            activityId: 9,
            startTime: 1_700_000_000_000_000,
            endTime: 1_700_000_001_000_000,
            application: "elsewhere",
          }));
          await js.publish(s.control, JSON.stringify(startBody(7000)));
          await js.publish(s.control, "this is not JSON");
          await js.publish(s.control, JSON.stringify({ ...startBody(7002), State: "sideways" }));
          await js.publish(s.control, firefly);
          await js.publish(s.control, JSON.stringify(startBody(7000))); // the same flow, still open
          await daemon.waitForLine(/message is no flow event; terminated.*reason=/);
          await waitFor(
            async () => (await outDocs(nc, s.outStream)).length >= 2,
            "the events in the output stream",
          );
          const docs = await outDocs(nc, s.outStream);
          assert.ok(
            docs.some((d) => srcPort(d) === 7000 && stateOf(d) === "start"),
            "the POST /flow body's start",
          );
          assert.ok(docs.some((d) => srcPort(d) === 7001 && stateOf(d) === "end"), "the firefly's end");
          assert.ok(!docs.some((d) => srcPort(d) === 7002), "the malformed start made no event");
          // Past ackWait: nothing waits for an ack or is delivered again (the malformed ones were terminated).
          await new Promise((r) => setTimeout(r, 2500));
          const made = await (await jetstreamManager(nc)).streams.info(s.controlStream);
          assert.deepEqual(
            made.config.subjects,
            ["ctl.mixed.>"],
            "created on the subject's parent, for a fleet",
          );
          const info = await (await jetstreamManager(nc)).consumers.info(
            s.controlStream,
            `flowd-${hostToken()}`,
          );
          assert.equal(info.num_pending, 0);
          assert.equal(info.num_ack_pending, 0);
          assert.equal(info.num_redelivered, 0);
          assert.equal(info.delivered.stream_seq, 5);
          // The log is rate-limited (one line, then a count): the counters tell both.
          assert.ok(daemon.lines.some((l) => /terminated.*reason=.*not valid JSON/.test(l)));
          const status = JSON.parse(
            (await runFlowd(["--conf", s.conf, "status", "--format", "json"])).stdout,
          );
          const plugin = status.components.find((c: { kind: string; name: string }) =>
            c.kind === "plugin" && c.name === "nats"
          );
          assert.equal(plugin.details.terminated, 2, JSON.stringify(plugin));
          assert.equal(plugin.details.accepted, 3, JSON.stringify(plugin));
          assert.equal(await daemon.stop(), 0);
        },
      );

      await t.step("daemon restarted mid-stream: every message becomes an event", async () => {
        const s = await setup(cluster, "restart");
        cleanup.push(s.dir);
        const n = 3000;
        const first = await startDaemon(s.conf);
        const publishing = (async () => {
          for (let i = 0; i < n; i += 100) {
            await Promise.all(
              Array.from(
                { length: 100 },
                (_, j) => js.publish(s.control, JSON.stringify(startBody(10_000 + i + j))),
              ),
            );
          }
        })();
        try {
          await waitFor(
            async () =>
              (await jetstreamManager(nc)).streams.info(s.outStream).then((i) => i.state.messages >= 300),
            "some events before the restart",
          );
        } finally {
          assert.equal(await first.stop(), 0);
        }
        // Restarted with a changed setting: the durable consumer made before is read on as it is.
        await Deno.writeTextFile(
          s.conf,
          (await Deno.readTextFile(s.conf)).replace("ackWait: 2", "ackWait: 3"),
        );
        await using second = await startDaemon(s.conf);
        await publishing;
        await waitFor(
          async () => {
            const ports = new Set((await outDocs(nc, s.outStream)).map(srcPort));
            return ports.size === n;
          },
          `all ${n} flows in the output stream`,
          60_000,
        );
        assert.equal(await second.stop(), 0);
      });
    } finally {
      await nc.close();
      for (const d of cleanup) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  },
});

function hostToken(): string {
  return Deno.hostname().replace(/[^A-Za-z0-9_\-]/g, "_");
}
