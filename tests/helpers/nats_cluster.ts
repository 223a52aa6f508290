/**
 * A real three-node nats-server cluster with JetStream, on free loopback ports, for the nats backend's and
 * plugin's tests and the publish bench. Each node has its own store directory under one temp dir; the
 * nodes route to each other. `startNatsCluster` returns once a stream with three replicas can be created
 * (a cluster that has elected its meta leader), and disposal kills every node and removes the directory,
 * also when start-up failed half way.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnectionSettings } from "../../src/net/nats_connection.ts";
import { freePort } from "./daemon.ts";
import type { TestCerts } from "./test_certs.ts";

/** Extra settings written into every node's configuration. */
export interface NatsClusterOptions {
  /** Number of nodes (default 3). */
  nodes?: number;
  /** Lines added to each node's configuration (authorization, tls, ...). */
  extraConfig?: string;
  /** How long to wait for the cluster to take a replicated stream, ms (default 30 s). */
  readyTimeoutMs?: number;
  /** Options for the helper's own probe connection (credentials when extraConfig demands them). */
  probeAuth?: { user: string; pass: string } | { token: string };
  /** TLS files for the probe connection when the nodes require TLS. */
  probeTls?: { caFile: string; certFile?: string; keyFile?: string };
}

/** One node: its client port and its process while running. */
export interface NatsNode {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  /** True while its process runs. */
  readonly running: boolean;
}

/** A running cluster. */
export interface NatsCluster extends AsyncDisposable {
  readonly dir: string;
  readonly nodes: readonly NatsNode[];
  /** Client URLs of every node, comma-free list for a `servers` key. */
  readonly urls: string[];
  /** SIGKILLs node i (no goodbye to its peers). */
  kill(i: number): Promise<void>;
  /** SIGTERMs node i and waits for it to exit. */
  stop(i: number): Promise<void>;
  /** Starts node i again with its configuration and store, and waits for its client port. */
  start(i: number): Promise<void>;
  /** A client connection to the cluster (closed on the cluster's disposal if still open). */
  connect(): Promise<NatsConnection>;
  /** Waits until a replicated stream can be created (every node caught up after restarts). */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Every node's log so far (for failure messages). */
  logs(): string;
}

interface NodeState {
  name: string;
  port: number;
  url: string;
  configPath: string;
  process?: Deno.ChildProcess;
  log: string[];
  pump?: Promise<void>;
}

/** Whether nats-server is installed (tests skip loudly without it). */
export function natsServerAvailable(): boolean {
  try {
    return new Deno.Command("nats-server", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Starts the cluster; on any failure everything started so far is torn down before the error goes up. */
export async function startNatsCluster(opts: NatsClusterOptions = {}): Promise<NatsCluster> {
  const count = opts.nodes ?? 3;
  const dir = await Deno.makeTempDir({ prefix: "flowd-nats-cluster-" });
  const clientPorts = distinctPorts(count * 2);
  const routePorts = clientPorts.splice(count);
  const states: NodeState[] = [];
  const connections = new Set<NatsConnection>();
  for (let i = 0; i < count; i++) {
    const name = `n${i + 1}`;
    const store = `${dir}/${name}`;
    await Deno.mkdir(store);
    const routes = routePorts.filter((_, j) => j !== i).map((p) => `"nats-route://127.0.0.1:${p}"`);
    const config = [
      `server_name: ${name}`,
      `listen: "127.0.0.1:${clientPorts[i]}"`,
      `jetstream { store_dir: "${store}" }`,
      count > 1
        ? `cluster { name: flowdtest, listen: "127.0.0.1:${routePorts[i]}", routes: [${routes.join(", ")}] }`
        : "",
      opts.extraConfig ?? "",
    ].join("\n");
    const configPath = `${dir}/${name}.conf`;
    await Deno.writeTextFile(configPath, config + "\n");
    states.push({
      name,
      port: clientPorts[i]!,
      url: `nats://127.0.0.1:${clientPorts[i]}`,
      configPath,
      log: [],
    });
  }

  const spawn = (s: NodeState) => {
    const p = new Deno.Command("nats-server", {
      args: ["-c", s.configPath],
      stdout: "null",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    s.process = p;
    s.pump = (async () => {
      let buf = "";
      for await (const chunk of p.stderr.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        const parts = buf.split("\n");
        buf = parts.pop()!;
        s.log.push(...parts);
        if (s.log.length > 2000) s.log.splice(0, s.log.length - 2000);
      }
    })();
  };
  const end = async (s: NodeState, signal: Deno.Signal) => {
    const p = s.process;
    if (!p) return;
    try {
      p.kill(signal);
    } catch { /* gone */ }
    await p.status;
    await s.pump;
    s.process = undefined;
  };
  const logs = () => states.map((s) => `--- ${s.name}\n${s.log.slice(-40).join("\n")}`).join("\n");
  const probeOptions = () => ({
    servers: states.filter((s) => s.process).map((s) => s.url),
    ...(opts.probeAuth ?? {}),
    ...(opts.probeTls ? { tls: opts.probeTls } : {}),
    timeout: 2000,
  });

  const waitReady = async (timeoutMs = opts.readyTimeoutMs ?? 30_000) => {
    const deadline = performance.now() + timeoutMs;
    let last = "";
    while (performance.now() < deadline) {
      let nc: NatsConnection | undefined;
      try {
        nc = await connect(probeOptions());
        const jsm = await jetstreamManager(nc, { timeout: 3000 });
        const name = `PROBE_${crypto.randomUUID().slice(0, 8)}`;
        await jsm.streams.add({ name, subjects: [`probe.${name}`], num_replicas: Math.min(3, count) });
        await jsm.streams.delete(name);
        return;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      } finally {
        await nc?.close().catch(() => {});
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`nats cluster not ready after ${timeoutMs} ms (${last})\n${logs()}`);
  };

  const waitPort = async (s: NodeState) => {
    const deadline = performance.now() + 10_000;
    while (performance.now() < deadline) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: s.port })).close();
        return;
      } catch { /* not yet */ }
      if (!s.process) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`nats node ${s.name} does not listen on ${s.port}\n${logs()}`);
  };

  const cluster: NatsCluster = {
    dir,
    nodes: states.map((s) => ({
      name: s.name,
      port: s.port,
      url: s.url,
      get running() {
        return s.process !== undefined;
      },
    })),
    urls: states.map((s) => s.url),
    kill: (i) => end(states[i]!, "SIGKILL"),
    stop: (i) => end(states[i]!, "SIGTERM"),
    async start(i) {
      const s = states[i]!;
      if (s.process) return;
      spawn(s);
      await waitPort(s);
    },
    async connect() {
      const nc = await connect({ ...probeOptions(), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
      connections.add(nc);
      return nc;
    },
    waitReady,
    logs,
    async [Symbol.asyncDispose]() {
      for (const nc of connections) await nc.close().catch(() => {});
      await Promise.all(states.map((s) => end(s, "SIGKILL")));
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };

  try {
    for (const s of states) spawn(s);
    for (const s of states) await waitPort(s);
    await waitReady();
  } catch (err) {
    await cluster[Symbol.asyncDispose]();
    throw err;
  }
  return cluster;
}

/** `n` free loopback ports, all different (each one bound, read and released). */
function distinctPorts(n: number): number[] {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(freePort());
  return [...ports];
}

/** One JetStream node that takes only TLS clients with a certificate of the test CA. */
export function startTlsNatsNode(certs: TestCerts): Promise<NatsCluster> {
  return startNatsCluster({
    nodes: 1,
    extraConfig: `tls { cert_file: "${certs.serverCert}", key_file: "${certs.serverKey}", ` +
      `ca_file: "${certs.caFile}", verify: true, timeout: 2 }`,
    probeTls: { caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey },
  });
}

/** Connection settings for `cluster` trusting the test CA and presenting `certFile`/`keyFile`. */
export function tlsSettings(
  cluster: NatsCluster,
  certs: TestCerts,
  certFile: string,
  keyFile: string,
  connectTimeout: number,
): NatsConnectionSettings {
  return { servers: cluster.urls, tls: { caFile: certs.caFile, certFile, keyFile }, connectTimeout };
}

/** A message read back from a stream. */
export interface StreamMessage {
  subject: string;
  /** Its Nats-Msg-Id header ("" without one). */
  msgId: string;
  /** Its body as JSON. */
  doc: unknown;
}

/**
 * The stream's messages from its first: `count` of them, or (without a count) until the consumer has none
 * pending. The consumer is made again while the stream elects a leader (that times out), and a stream
 * holding fewer than `count` cannot hang the caller: the read stops after `timeoutMs` with what it got.
 */
export async function readStream(
  nc: NatsConnection,
  stream: string,
  count?: number,
  timeoutMs = 30_000,
): Promise<StreamMessage[]> {
  const out: StreamMessage[] = [];
  if (count === 0) return out;
  let consumer;
  for (let attempt = 1;; attempt++) {
    try {
      consumer = await jetstream(nc).consumers.get(stream);
      break;
    } catch (e) {
      if (attempt >= 10) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  const messages = await consumer.consume();
  const guard = setTimeout(() => messages.stop(), timeoutMs);
  try {
    for await (const m of messages) {
      out.push({ subject: m.subject, msgId: m.headers?.get("Nats-Msg-Id") ?? "", doc: m.json() });
      if (count === undefined ? m.info.pending === 0 : out.length >= count) break;
    }
  } finally {
    clearTimeout(guard);
    messages.stop();
  }
  return out;
}
