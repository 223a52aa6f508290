/**
 * Backend `nats` end to end: the real daemon (named pipe in, nats backend out) against a real three-node
 * JetStream cluster on loopback (stream replicas 3). Every scenario has its own stream, subject prefix and
 * work dir; every message in the stream is read back and checked: each event exactly once (count and
 * unique Nats-Msg-Id), firefly JSON v1 bodies, and a flow's start before its end.
 */
import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { type Daemon, runFlowd, startDaemon } from "../helpers/daemon.ts";
import {
  type NatsCluster,
  natsServerAvailable,
  readStream,
  startNatsCluster,
} from "../helpers/nats_cluster.ts";
import { subjectToken } from "../../src/backends/nats.ts";

const available = natsServerAvailable();
if (!available) {
  console.error("SKIPPED (nats-server not installed; scripts/setup.sh installs it): nats backend");
}
const host = subjectToken(Deno.hostname());

/** A daemon's files and the names of its stream. */
interface Setup {
  dir: string;
  conf: string;
  stream: string;
  prefix: string;
  fifo: string;
}

async function setup(cluster: NatsCluster, name: string, extra = ""): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: `flowd-nats-${name}-` });
  const stream = `T_${name.toUpperCase()}`;
  const prefix = `test.${name}`;
  const conf = `${dir}/conf.yaml`;
  await Deno.writeTextFile(
    conf,
    `pidPath: ""
workDir: ${dir}/work
controlSocket: ${dir}/control.sock
plugins:
  namedPipe: {pipePath: np}
backends:
  nats:
    servers: [${cluster.urls.join(", ")}]
    stream: ${stream}
    subjectPrefix: ${prefix}
    createStream: true
    replicas: 3
    ackTimeout: 1
${extra}`,
  );
  return { dir, conf, stream, prefix, fifo: `${dir}/work/np` };
}

/** Pipe lines for flows [from, to): all starts, then all ends (port = flow number). */
function flowLines(from: number, to: number, state: "start" | "end"): string {
  const out: string[] = [];
  for (let i = from; i < to; i++) {
    out.push(`${state} tcp 127.0.0.1 ${10000 + (i % 50000)} 127.0.0.2 ${2000 + Math.floor(i / 50000)} 2 9`);
  }
  return out.join("\n") + "\n";
}

async function writePipe(fifo: string, text: string): Promise<void> {
  const f = await Deno.open(fifo, { write: true });
  try {
    const bytes = new TextEncoder().encode(text);
    for (let done = 0; done < bytes.length;) done += await f.write(bytes.subarray(done));
  } finally {
    f.close();
  }
}

/**
 * Waits until the stream's info reads `n` messages (`exact`) or at least `n`, and fails with what it read
 * last after the timeout. Polled, because right after a node rejoins, its answer can come from a replica
 * still catching up (it once read 1,024 of 20,000 the stream had acknowledged).
 */
async function waitForMessages(
  nc: NatsConnection,
  stream: string,
  n: number,
  timeoutMs: number,
  exact = false,
) {
  const deadline = performance.now() + timeoutMs;
  let have = -1;
  while (performance.now() < deadline) {
    try {
      const jsm = await jetstreamManager(nc, { checkAPI: false });
      have = (await jsm.streams.info(stream)).state.messages;
      if (exact ? have === n : have >= n) return;
    } catch { /* leader election after a restart: ask again */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `stream ${stream} holds ${have} messages, want ${exact ? "" : "at least "}${n} (${timeoutMs} ms)`,
  );
}

/** Every message of the stream, checked: exactly `n`, unique ids, firefly v1, start before end per flow. */
async function checkExactlyOnce(nc: NatsConnection, s: Setup, n: number, checkOrder = true): Promise<void> {
  // Exactly n: fewer is a loss, more a duplicate the deduplication window let through.
  await waitForMessages(nc, s.stream, n, 30_000, true);
  // All n (the consumer's pending count can read 0 early right after a cluster restart).
  const messages = await readStream(nc, s.stream, n);
  assert.equal(messages.length, n);
  const ids = new Set<string>();
  const firstState = new Map<string, string>();
  for (const m of messages) {
    assert.ok(m.msgId, "every message has a Nats-Msg-Id");
    assert.ok(!ids.has(m.msgId), `duplicate message ${m.msgId}`);
    ids.add(m.msgId);
    const doc = m.doc as {
      version: number;
      "flow-lifecycle": { state: string };
      "flow-id": { "src-port": number };
    };
    assert.equal(doc.version, 1);
    const state = doc["flow-lifecycle"].state;
    assert.equal(m.subject, `${s.prefix}.${host}.${state}`);
    const flow = `${doc["flow-id"]["src-port"]}`;
    if (checkOrder) {
      if (state === "start") {
        assert.ok(!firstState.has(flow), `flow ${flow}: a second start or a start after its end`);
        firstState.set(flow, "start");
      } else {
        assert.equal(firstState.get(flow), "start", `flow ${flow}: end before its start`);
        firstState.set(flow, "end");
      }
    }
  }
}

/** The daemon's status as JSON (through its control socket). */
async function status(
  s: Setup,
): Promise<{ components: { kind: string; name: string; details?: Record<string, unknown> }[] }> {
  const out = await runFlowd(["--conf", s.conf, "status", "--format", "json"]);
  return JSON.parse(out.stdout);
}

async function natsDetails(s: Setup): Promise<Record<string, unknown>> {
  const st = await status(s);
  const c = st.components.find((c) => c.kind === "backend" && c.name === "nats");
  assert.ok(c, `no backends.nats in ${JSON.stringify(st)}`);
  return c.details ?? {};
}

Deno.test({
  name: "nats backend: exactly once through a three-node cluster, with a node killed, an outage, a SIGKILL",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using cluster = await startNatsCluster();
    const nc = await cluster.connect();
    const cleanup: string[] = [];
    try {
      await t.step("100,000 events arrive exactly once, in order per flow", async () => {
        const s = await setup(cluster, "bulk");
        cleanup.push(s.dir);
        await using daemon = await startDaemon(s.conf);
        const t0 = performance.now();
        await writePipe(s.fifo, flowLines(0, 50_000, "start"));
        await writePipe(s.fifo, flowLines(0, 50_000, "end"));
        await waitForMessages(nc, s.stream, 100_000, 60_000);
        console.error(`100,000 events in the stream after ${(performance.now() - t0).toFixed(0)} ms`);
        await checkExactlyOnce(nc, s, 100_000);
        const d = await natsDetails(s);
        assert.equal(d.outboxDepth, 0);
        assert.equal(d.acked, 100_000);
        await stopped(daemon);
      });

      /** Every node up and the cluster taking replicated streams (a failed step must not spoil the next). */
      const allUp = async () => {
        for (let i = 0; i < 3; i++) await cluster.start(i);
        await cluster.waitReady();
      };

      await t.step(
        "a reload replacing the backend: its outbox carries over, nothing emitted meanwhile is lost",
        async () => {
          const s = await setup(cluster, "reload");
          cleanup.push(s.dir);
          await using daemon = await startDaemon(s.conf);
          await writePipe(s.fifo, flowLines(0, 5_000, "start"));
          await Deno.writeTextFile(
            s.conf,
            (await Deno.readTextFile(s.conf)).replace("ackTimeout: 1", "ackTimeout: 2"),
          );
          daemon.process.kill("SIGHUP");
          await daemon.waitForLine(/configuration reloaded.*replaced=backends\.nats/);
          await writePipe(s.fifo, flowLines(0, 5_000, "end"));
          await waitForMessages(nc, s.stream, 10_000, 60_000);
          await checkExactlyOnce(nc, s, 10_000);
          await stopped(daemon);
        },
      );

      await t.step("one node killed mid-run: still exactly once", async () => {
        const s = await setup(cluster, "kill");
        cleanup.push(s.dir);
        await using daemon = await startDaemon(s.conf);
        await writePipe(s.fifo, flowLines(0, 10_000, "start"));
        await cluster.kill(0);
        await writePipe(s.fifo, flowLines(0, 10_000, "end"));
        await waitForMessages(nc, s.stream, 20_000, 60_000);
        await stopped(daemon);
        // Read back from the two nodes that acknowledged it all (the stream's quorum), before the killed
        // node rejoins: its catching up is the server's business, not what this step proves.
        await checkExactlyOnce(nc, s, 20_000, false);
        await cluster.start(0);
        await cluster.waitReady();
      });

      await t.step("all nodes stopped for 10 s, then started: the outbox drains, exactly once", async () => {
        await allUp();
        const s = await setup(cluster, "outage");
        cleanup.push(s.dir);
        await using daemon = await startDaemon(s.conf);
        await writePipe(s.fifo, flowLines(0, 2_000, "start"));
        for (let i = 0; i < 3; i++) await cluster.stop(i);
        await writePipe(s.fifo, flowLines(0, 2_000, "end"));
        await writePipe(s.fifo, flowLines(2_000, 5_000, "start"));
        await new Promise((r) => setTimeout(r, 10_000));
        const during = await natsDetails(s);
        assert.ok(Number(during.outboxDepth) > 0, `events wait in the outbox: ${JSON.stringify(during)}`);
        assert.equal(during.connected, false, daemon.lines.filter((l) => /NATS/.test(l)).join("\n"));
        for (let i = 0; i < 3; i++) await cluster.start(i);
        await cluster.waitReady();
        await waitForMessages(nc, s.stream, 7_000, 60_000);
        await checkExactlyOnce(nc, s, 7_000, false);
        await waitFor(async () => (await natsDetails(s)).outboxDepth === 0, "the outbox to drain");
        await stopped(daemon);
      });

      await t.step(
        "daemon SIGKILLed with a full outbox, restarted before the cluster: exactly once",
        async () => {
          await allUp();
          const s = await setup(cluster, "sigkill");
          cleanup.push(s.dir);
          const first = await startDaemon(s.conf);
          try {
            await writePipe(s.fifo, flowLines(0, 1_000, "start"));
            await waitForMessages(nc, s.stream, 1_000, 30_000);
            for (let i = 0; i < 3; i++) await cluster.stop(i);
            await writePipe(s.fifo, flowLines(0, 1_000, "end"));
            await writePipe(s.fifo, flowLines(1_000, 4_000, "start"));
            await waitFor(
              async () => (await natsDetails(s)).outboxDepth === 4_000,
              "4000 events in the outbox",
            );
          } finally {
            await first.stop("SIGKILL");
          }
          // Restarted while the cluster is still down: the daemon starts all the same (marking never waits on
          // NATS), keeps its outbox, and sends it once the cluster is back.
          await using second = await startDaemon(s.conf);
          await second.waitForLine(/outbox holds events not yet acknowledged.*events=4000/);
          await second.waitForLine(/NATS unreachable at start; events wait in the outbox/);
          for (let i = 0; i < 3; i++) await cluster.start(i);
          await cluster.waitReady();
          await waitForMessages(nc, s.stream, 5_000, 60_000);
          await checkExactlyOnce(nc, s, 5_000, false);
          await stopped(second);
        },
      );
    } finally {
      await nc.close();
      for (const d of cleanup) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "nats backend: a wrong password fails the start with a clear error, the secret not logged",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using cluster = await startNatsCluster({
      nodes: 1,
      extraConfig: 'authorization { user: flowd, password: "right-secret" }',
      probeAuth: { user: "flowd", pass: "right-secret" },
    });
    const dir = await Deno.makeTempDir({ prefix: "flowd-nats-auth-" });
    try {
      await Deno.writeTextFile(`${dir}/password`, "wrong-secret\n");
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ""\nworkDir: ${dir}\ncontrolSocket: ${dir}/c.sock\nbackends:\n  nats:\n` +
          `    servers: [${
            cluster.urls[0]
          }]\n    user: flowd\n    passwordFile: password\n    createStream: true\n`,
      );
      const out = await runFlowd(["--conf", conf, "run"]);
      assert.notEqual(out.code, 0);
      assert.match(out.stderr, /backends\.nats: cannot connect to .*the server refused the credentials/);
      assert.ok(!out.stderr.includes("wrong-secret"), out.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

async function stopped(daemon: Daemon): Promise<void> {
  assert.equal(await daemon.stop(), 0, daemon.lines.slice(-20).join("\n"));
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`timed out waiting for ${what}`);
}
