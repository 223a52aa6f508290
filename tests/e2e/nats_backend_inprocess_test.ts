/**
 * The nats backend in process against a real single-node JetStream server: ongoing documents from
 * enrichment samples (schema-valid, on `.ongoing`, the sample's statistics under netlink/skOps), a
 * refused outbox when full (counted, nothing waits), and TLS with a test-made CA: the right client
 * certificate publishes, one from another CA fails the start naming the refused certificate.
 */
import assert from "node:assert/strict";
import { NatsBackend } from "../../src/backends/nats.ts";
import { NatsBackendSchema } from "../../src/config/schema.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { StartupError } from "../../src/core/errors.ts";
import { IpAddress } from "../../src/net/ip.ts";
import type { NatsConnectionSettings } from "../../src/net/nats_connection.ts";
import { assertValidFirefly } from "../helpers/firefly_schema.ts";
import { flowInfoFixture, tcpInfoFixture } from "../helpers/flow_info_fixture.ts";
import {
  natsServerAvailable,
  readStream,
  startNatsCluster,
  startTlsNatsNode,
  tlsSettings,
} from "../helpers/nats_cluster.ts";
import { makeTestCerts } from "../helpers/test_certs.ts";

const available = natsServerAvailable();
if (!available) {
  console.error("SKIPPED (nats-server not installed; scripts/setup.sh installs it): nats backend");
}
const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !available, sanitizeOps: false, sanitizeResources: false, fn });

const flow: FlowEvent = {
  state: "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: IpAddress.parse("2001:db8::1"), port: 2345 },
  dst: { address: IpAddress.parse("2001:db8::2"), port: 5777 },
  experimentId: 2,
  activityId: 9,
  startTime: 1_790_000_000_000_000,
  application: "flowd-go-test",
};

function backend(dir: string, connection: NatsConnectionSettings, extra: Record<string, unknown> = {}) {
  return new NatsBackend({
    config: NatsBackendSchema.parse({
      servers: connection.servers,
      stream: "INPROC",
      subjectPrefix: "inproc",
      createStream: true,
      ...extra,
    }),
    hostname: "h1",
    appName: "flowd-go-test",
    outboxPath: `${dir}/outbox.log`,
    connection,
  });
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("nats backend: enrichment samples become ongoing documents on <prefix>.<host>.ongoing", async () => {
  await using cluster = await startNatsCluster({ nodes: 1 });
  const b = backend(cluster.dir, { servers: cluster.urls, connectTimeout: 3 }, { enrich: true });
  await b.start();
  try {
    b.handle(flow);
    b.enrich({ flavour: "Netlink", flow, time: flow.startTime! + 1_000_000, info: flowInfoFixture() });
    b.enrich({
      flavour: "Ebpf",
      flow,
      time: flow.startTime! + 2_000_000,
      info: { tcpInfo: tcpInfoFixture(), cong: { algorithm: "bbr" } },
    });
    b.handle({ ...flow, state: "end", endTime: flow.startTime! + 3_000_000 });
    await until(() => b.stats.acked === 4, "four acknowledgements");
  } finally {
    await b.stop();
  }
  const nc = await cluster.connect();
  const got = (await readStream(nc, "INPROC")).map((m) => ({
    subject: m.subject,
    doc: m.doc as Record<string, unknown>,
  }));
  assert.deepEqual(got.map((g) => g.subject), [
    "inproc.h1.start",
    "inproc.h1.ongoing",
    "inproc.h1.ongoing",
    "inproc.h1.end",
  ]);
  for (const g of got) assertValidFirefly(g.doc);
  assert.ok("netlink" in got[1]!.doc, JSON.stringify(got[1]!.doc));
  assert.ok("skOps" in got[2]!.doc, JSON.stringify(got[2]!.doc));
});

test("nats backend: a full outbox refuses events at once and counts them", async () => {
  await using cluster = await startNatsCluster({ nodes: 1 });
  // Nothing listens here: the backend starts (unreachable is only a warning) and everything waits.
  const b = backend(cluster.dir, { servers: ["nats://127.0.0.1:1"], connectTimeout: 0.5 }, {
    outboxMaxBytes: 65_536,
  });
  await b.start();
  try {
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) b.handle({ ...flow, src: { ...flow.src, port: 1000 + i } });
    assert.ok(performance.now() - t0 < 1000, "handle never waits");
    assert.ok(b.stats.refused > 0, JSON.stringify(b.stats));
    const depth = b.status().details!.outboxDepth as number;
    assert.equal(depth + b.stats.refused, 1000);
    assert.equal(b.status().state, "degraded");
    const refused = b.health().find((m) => m.labels?.reason === "outbox-full")!;
    assert.equal(refused.value, b.stats.refused);
  } finally {
    await b.stop();
  }
});

test("nats backend: TLS with a test CA; a client certificate from another CA fails the start", async () => {
  const certs = await makeTestCerts();
  try {
    await using cluster = await startTlsNatsNode(certs);
    const settings = (certFile: string, keyFile: string) => tlsSettings(cluster, certs, certFile, keyFile, 2);
    const good = backend(cluster.dir, settings(certs.clientCert, certs.clientKey));
    await good.start();
    try {
      good.handle(flow);
      await until(() => good.stats.acked === 1, "the acknowledgement over TLS");
    } finally {
      await good.stop();
    }
    const bad = backend(cluster.dir, settings(certs.wrongClientCert, certs.wrongClientKey));
    try {
      await bad.start();
      assert.fail("a refused client certificate must fail the start");
    } catch (err) {
      assert.ok(err instanceof StartupError, String(err));
      assert.match(err.message, /backends\.nats: .*the server refused the client certificate/);
    } finally {
      await bad.stop();
    }
  } finally {
    await Deno.remove(certs.dir, { recursive: true });
  }
});

test("nats backend: an outbox that cannot be opened fails the start, naming the path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-nats-outbox-" });
  try {
    const b = backend(`${dir}/missing-dir`, { servers: ["nats://127.0.0.1:1"], connectTimeout: 0.5 });
    await assert.rejects(
      () => b.start(),
      (err: unknown) =>
        err instanceof StartupError &&
        err.message.includes(`cannot open the outbox ${dir}/missing-dir/outbox.log`),
    );
    await b.stop();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
