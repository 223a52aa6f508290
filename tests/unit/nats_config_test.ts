/** The nats sections' keys: defaults, one way to authenticate, paired TLS files, subjects; the message id. */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load.ts";
import { ConfigError } from "../../src/core/errors.ts";
import { messageId, subjectToken } from "../../src/backends/nats.ts";
import { componentSpecs } from "../../src/wiring.ts";
import { IpAddress } from "../../src/net/ip.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";

const load = (text: string) => parseConfig(text, "test.yaml").config;
function fails(text: string, re: RegExp): void {
  assert.throws(() => load(text), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.match(err.message, re);
    return true;
  });
}

Deno.test("nats config: defaults, and paths resolved against workDir", () => {
  const c = load(
    "workDir: /var/w\nbackends:\n  nats: {user: u, passwordFile: pw, tls: {caFile: /etc/ca.pem}}\n",
  );
  const n = c.backends.nats!;
  assert.deepEqual(n.servers, ["nats://127.0.0.1:4222"]);
  assert.equal(n.subjectPrefix, "scitags.flows");
  assert.equal(n.stream, "SCITAGS_FLOWS");
  assert.equal(n.createStream, false);
  assert.equal(n.replicas, 1);
  const spec = componentSpecs(c, { hostname: "h" }).find((s) => s.slot === "backends.nats")!;
  const o = spec.options as {
    outboxPath: string;
    connection: { passwordFile: string; tls: { caFile: string } };
  };
  assert.equal(o.outboxPath, "/var/w/nats-outbox.log");
  assert.equal(o.connection.passwordFile, "/var/w/pw");
  assert.equal(o.connection.tls.caFile, "/etc/ca.pem");
});

Deno.test("nats config: wrong values are named", () => {
  fails("backends:\n  nats: {servers: [http://x:1]}\n", /servers.*expected a NATS server URL/);
  fails("backends:\n  nats: {servers: []}\n", /at least one server/);
  fails("backends:\n  nats: {subjectPrefix: 'a.*'}\n", /subjectPrefix.*expected a NATS subject/);
  fails(
    "backends:\n  nats: {user: u, tokenFile: t}\n",
    /one of user \(\+ passwordFile\), tokenFile or credsFile/,
  );
  fails("backends:\n  nats: {passwordFile: p}\n", /passwordFile.*needs user/);
  fails("backends:\n  nats: {tls: {certFile: c}}\n", /certFile and keyFile go together/);
  fails("backends:\n  nats: {replicas: 7}\n", /replicas.*1\.\.5/);
  fails("backends:\n  nats: {password: x}\n", /password/);
  fails("backends:\n  nats: {outboxMaxBytes: 1000}\n", /outboxMaxBytes.*65536\.\.1099511627776/);
  assert.equal(
    load("backends:\n  nats: {outboxMaxBytes: 1099511627776}\n").backends.nats!.outboxMaxBytes,
    2 ** 40,
  );
});

Deno.test("nats backend: message ids are the same for the same event and differ across states and times", () => {
  const e: FlowEvent = {
    state: "start",
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse("2001:db8::1"), port: 1000 },
    dst: { address: IpAddress.parse("2001:db8::2"), port: 2000 },
    experimentId: 2,
    activityId: 9,
    application: "t",
  };
  assert.equal(messageId("h", e, 5), messageId("h", { ...e }, 5));
  assert.notEqual(messageId("h", e, 5), messageId("h", { ...e, state: "end" }, 5));
  assert.notEqual(messageId("h", e, 5), messageId("h", e, 6));
  assert.notEqual(messageId("h", e, 5), messageId("g", e, 5));
  assert.equal(subjectToken("node1.example.org"), "node1_example_org");
  assert.equal(subjectToken("a b*>"), "a_b__");
});
