/**
 * End to end: the real daemon as a firefly relay. Fireflies in each emitter's style arrive at its firefly
 * listener (IPv6 loopback); the firefly backend sends one firefly per valid datagram to a loopback collector.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { freeUdpPort, startDaemon, udpReceiver } from "../helpers/daemon.ts";
import { ajvCheckFirefly } from "../helpers/firefly_schema.ts";
import {
  DCACHE_START,
  FLOWD_GO_END,
  FLOWD_GO_START,
  FLOWD_PY_START,
  XROOTD_END,
} from "../helpers/firefly_goldens.ts";
import { formatMicrosUtc, parseRfc3339Micros } from "../../src/core/time.ts";

const HEADER = /^<134>1 (\S+) (\S+) (flowd-go-\S+) - firefly-json - (\{.*\})$/;

function utc(text: string): string {
  return formatMicrosUtc(parseRfc3339Micros(text)!);
}

Deno.test("e2e: the daemon relays fireflies from every emitter to the collector, and drops bad datagrams", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-e2e-relay-" });
  await using collector = await udpReceiver("127.0.0.1");
  const listenPort = await freeUdpPort("::1");
  const conf = `${dir}/conf.yaml`;
  await Deno.writeTextFile(
    conf,
    `pidPath: ${dir}/pid
workDir: ${dir}
plugins:
  firefly:
    bindAddress: "::1"
    bindPort: ${listenPort}
backends:
  firefly:
    sendToDestination: false   # the goldens' peers are not ours to send to
    sendToCollector: true
    collectorAddress: 127.0.0.1
    collectorPort: ${collector.port}
`,
  );
  const tx = dgram.createSocket("udp6");
  await new Promise<void>((r) => tx.bind(0, "::1", () => r()));
  const send = (text: string) =>
    new Promise<void>((resolve, reject) =>
      tx.send(new TextEncoder().encode(text), listenPort, "::1", (err) => err ? reject(err) : resolve())
    );
  try {
    await using daemon = await startDaemon(conf);
    await daemon.waitForLine(/listening for fireflies/);
    const inputs = [FLOWD_PY_START, FLOWD_GO_START, XROOTD_END, DCACHE_START, FLOWD_GO_END];
    for (const golden of inputs) {
      await send(golden.datagram);
      if (golden === DCACHE_START) await send('<134>1 - h app - firefly-json - {"version":1}');
      await collector.waitFor(inputs.indexOf(golden) + 1);
    }
    await daemon.waitForLine(/ignoring a datagram that is not a valid firefly.*reason=schema/);
    await new Promise((r) => setTimeout(r, 100)); // nothing more may arrive
    assert.equal(collector.messages.length, inputs.length, collector.messages.join("\n"));

    const out = collector.messages.map((m) => {
      const h = HEADER.exec(m);
      assert.ok(h, `not a firefly with a header: ${m}`);
      const doc = JSON.parse(h[4]!);
      const check = ajvCheckFirefly(doc);
      assert.ok(check.valid, `schema: ${check.errors.join("; ")}`);
      return doc;
    });
    inputs.forEach((golden, i) => {
      const sent = JSON.parse(golden.datagram.slice(golden.datagram.indexOf("{")).replace(/\0$/, ""));
      const doc = out[i];
      assert.deepEqual(doc["flow-id"], sent["flow-id"], golden.name);
      assert.deepEqual(doc.context, sent.context, golden.name);
      assert.equal(doc["flow-lifecycle"].state, sent["flow-lifecycle"].state);
      if (golden.expect.start) assert.equal(doc["flow-lifecycle"]["start-time"], utc(golden.expect.start));
      if (golden.expect.end) assert.equal(doc["flow-lifecycle"]["end-time"], utc(golden.expect.end));
      // What the sender reported goes on (XRootD's byte counts and rtt); nothing is made up.
      assert.deepEqual(doc.usage, sent.usage, `${golden.name}: usage relayed as received`);
      assert.deepEqual(doc.netlink, sent.netlink, `${golden.name}: netlink relayed as received`);
    });
    // flowd-go 2.4.2's end came with "start-time": ""; the relay supplies the start it saw earlier.
    assert.equal(out[4]["flow-lifecycle"]["start-time"], utc(FLOWD_GO_START.expect.start!));

    assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.join("\n"));
  } finally {
    await new Promise<void>((r) => tx.close(() => r()));
    await Deno.remove(dir, { recursive: true });
  }
});
