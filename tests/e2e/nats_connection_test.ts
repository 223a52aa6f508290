/**
 * The shared NATS connection against real single-node servers: user + password file accepted and a wrong
 * password refused with a clear error, token file, TLS with a test-made CA (right client certificate
 * accepted, a certificate from another CA refused), and no server reachable. The secret never appears in
 * the error text.
 */
import assert from "node:assert/strict";
import {
  natsServerAvailable,
  startNatsCluster,
  startTlsNatsNode,
  tlsSettings,
} from "../helpers/nats_cluster.ts";
import { makeTestCerts } from "../helpers/test_certs.ts";
import { freePort } from "../helpers/daemon.ts";
import { type NatsConnectionSettings, openNatsConnection } from "../../src/net/nats_connection.ts";
import { StartupError } from "../../src/core/errors.ts";
import { logger } from "../../src/core/log.ts";

const available = natsServerAvailable();
if (!available) {
  console.error("SKIPPED (nats-server not installed; scripts/setup.sh installs it): nats connection");
}
const log = logger("test", "nats");
const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !available, sanitizeOps: false, sanitizeResources: false, fn });

/** The StartupError `fn` rejects with (fails the test on anything else). */
async function startupError(fn: () => Promise<unknown>): Promise<StartupError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof StartupError, `expected a StartupError, got ${err}`);
    return err;
  }
  assert.fail("expected the connection to be refused");
}

const includes = (text: string, part: string) => assert.ok(text.includes(part), `${part} not in: ${text}`);

async function secretFile(dir: string, name: string, value: string): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, value + "\n", { mode: 0o600 });
  return path;
}

test("nats connection: password file accepted, a wrong password refused clearly without showing it", async () => {
  await using cluster = await startNatsCluster({
    nodes: 1,
    extraConfig: 'authorization { user: flowd, password: "s3cret-right" }',
    probeAuth: { user: "flowd", pass: "s3cret-right" },
  });
  const base: NatsConnectionSettings = { servers: cluster.urls, user: "flowd", connectTimeout: 3 };
  const good = await openNatsConnection(
    { ...base, passwordFile: await secretFile(cluster.dir, "good", "s3cret-right") },
    "t",
    log,
    "backends.nats",
  );
  await good.close();
  const err = await startupError(
    () =>
      openNatsConnection(
        { ...base, passwordFile: cluster.dir + "/bad" },
        "t",
        log,
        "backends.nats",
      ),
  );
  includes(err.message, "cannot read passwordFile");
  await secretFile(cluster.dir, "bad", "s3cret-wrong");
  const refused = await startupError(
    () => openNatsConnection({ ...base, passwordFile: cluster.dir + "/bad" }, "t", log, "backends.nats"),
  );
  includes(refused.message, "refused the credentials");
  assert.ok(!refused.message.includes("s3cret"), refused.message);
});

test("nats connection: token file", async () => {
  await using cluster = await startNatsCluster({
    nodes: 1,
    extraConfig: 'authorization { token: "tok-123456" }',
    probeAuth: { token: "tok-123456" },
  });
  const nc = await openNatsConnection(
    {
      servers: cluster.urls,
      tokenFile: await secretFile(cluster.dir, "tok", "tok-123456"),
      connectTimeout: 3,
    },
    "t",
    log,
    "plugins.nats",
  );
  await nc.close();
  const wrong = await secretFile(cluster.dir, "tok2", "tok-wrong");
  const refused = await startupError(() =>
    openNatsConnection(
      { servers: cluster.urls, tokenFile: wrong, connectTimeout: 3 },
      "t",
      log,
      "plugins.nats",
    )
  );
  includes(refused.message, "refused the credentials");
});

test("nats connection: TLS with a test CA; a client certificate from another CA is refused", async () => {
  const certs = await makeTestCerts();
  try {
    await using cluster = await startTlsNatsNode(certs);
    const settings = (certFile: string, keyFile: string) => tlsSettings(cluster, certs, certFile, keyFile, 3);
    const nc = await openNatsConnection(
      settings(certs.clientCert, certs.clientKey),
      "t",
      log,
      "backends.nats",
    );
    await nc.close();
    const refused = await startupError(
      () =>
        openNatsConnection(settings(certs.wrongClientCert, certs.wrongClientKey), "t", log, "backends.nats"),
    );
    includes(refused.message, "TLS handshake failed");
    includes(refused.message, "certificate");
  } finally {
    await Deno.remove(certs.dir, { recursive: true });
  }
});

test("nats connection: nothing listening is reported as unreachable", async () => {
  const refused = await startupError(
    () =>
      openNatsConnection(
        { servers: [`nats://127.0.0.1:${freePort()}`], connectTimeout: 2 },
        "t",
        log,
        "backends.nats",
      ),
  );
  includes(refused.message, "no server could be reached");
});
