/**
 * End to end: the real daemon as a separate process on loopback, with the api and namedPipe plugins and
 * the firefly backend; flows in through both plugins, fireflies out to a peer and a collector.
 */
import assert from "node:assert/strict";
import { freePort, startDaemon, udpReceiver } from "../helpers/daemon.ts";
import { ajvCheckFirefly } from "../helpers/firefly_schema.ts";
import { RawHttpClient, requestHead } from "../helpers/raw_http.ts";
import { parseExposition, samplesOf } from "../helpers/prom_text.ts";

const HEADER =
  /^<134>1 (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00) (\S+) (flowd-go-\S+) - firefly-json - (\{.*\})$/;

interface Firefly {
  version: number;
  "flow-lifecycle": { state: string; "start-time": string; "end-time"?: string; "current-time"?: string };
  "flow-id": Record<string, string | number>;
  context: { "experiment-id": number; "activity-id": number; application?: string };
}

function decode(datagram: string): { header: RegExpExecArray; doc: Firefly } {
  const header = HEADER.exec(datagram);
  assert.ok(header, `not a firefly with a syslog header: ${datagram}`);
  const doc = JSON.parse(header[4]!);
  const check = ajvCheckFirefly(doc);
  assert.ok(check.valid, `schema: ${check.errors.join("; ")} in ${header[4]}`);
  return { header, doc };
}

async function writeConfig(dir: string, text: string): Promise<string> {
  const path = `${dir}/conf.yaml`;
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("e2e: flows through the named pipe and the API become fireflies at the peer and the collector", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-e2e-" });
  await using peer = await udpReceiver("::1");
  await using collector = await udpReceiver("127.0.0.1");
  const apiPort = freePort("::1");
  const conf = await writeConfig(
    dir,
    `pidPath: ${dir}/flowd-go.pid
workDir: ${dir}/work
plugins:
  api:
    bindAddress: "::1"
    bindPort: ${apiPort}
  namedPipe:
    pipePath: np   # relative: lands in workDir
backends:
  firefly:
    destinationPort: ${peer.port}
    sendToCollector: true
    collectorAddress: 127.0.0.1
    collectorPort: ${collector.port}
`,
  );
  try {
    await using daemon = await startDaemon(conf);
    const pidText = await Deno.readTextFile(`${dir}/flowd-go.pid`);
    assert.equal(pidText, `${daemon.process.pid}\n`);
    const fifo = `${dir}/work/np`;
    assert.ok((await Deno.lstat(fifo)).isFifo);

    const writePipe = async (line: string) => {
      const f = await Deno.open(fifo, { write: true });
      await f.write(new TextEncoder().encode(line));
      f.close();
    };
    const post = async (body: unknown) => {
      const res = await fetch(`http://[::1]:${apiPort}/flow`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      assert.equal(res.status, 200, text);
    };

    await writePipe("start tcp ::1 40000 ::1 5201 2 9\n");
    await peer.waitFor(1);
    await post({ State: 2, Protocol: 1, Src: "[::1]:40001", Dst: "[::1]:5202", Experiment: 3, Activity: 14 });
    await peer.waitFor(2);
    await new Promise((r) => setTimeout(r, 20)); // distinct end times
    await writePipe("end tcp ::1 40000 ::1 5201 2 9\n");
    await peer.waitFor(3);
    await post({
      State: "end",
      Protocol: "udp",
      Src: "[::1]:40001",
      Dst: "[::1]:5202",
      Experiment: 3,
      Activity: 14,
    });
    const atPeer = await peer.waitFor(4);
    const atCollector = await collector.waitFor(4);
    assert.deepEqual(atCollector, atPeer, "the collector gets the same datagrams as the peer");

    const [pipeStart, apiStart, pipeEnd, apiEnd] = atPeer.map(decode);
    for (const { header, doc } of [pipeStart!, apiStart!, pipeEnd!, apiEnd!]) {
      assert.equal(header[2], Deno.hostname());
      assert.match(header[3]!, /^flowd-go-\d+\.\d+\.\d+/);
      assert.equal(doc.version, 1);
      assert.equal(doc.context.application, header[3]);
      assert.equal(doc["flow-id"].afi, "ipv6");
      assert.equal(doc["flow-id"]["src-ip"], "::1");
      assert.equal(doc["flow-id"]["dst-ip"], "::1");
    }
    assert.deepEqual(pipeStart!.doc["flow-id"], {
      afi: "ipv6",
      "src-ip": "::1",
      "dst-ip": "::1",
      protocol: "tcp",
      "src-port": 40000,
      "dst-port": 5201,
    });
    assert.deepEqual(pipeStart!.doc.context, {
      "experiment-id": 2,
      "activity-id": 9,
      application: pipeStart!.header[3],
    });
    assert.equal(pipeStart!.doc["flow-lifecycle"].state, "start");
    assert.equal(pipeStart!.doc["flow-lifecycle"]["end-time"], undefined);
    assert.equal(pipeStart!.doc["flow-lifecycle"]["current-time"], undefined);

    assert.equal(apiStart!.doc["flow-id"].protocol, "udp");
    assert.equal(apiStart!.doc["flow-id"]["src-port"], 40001);
    assert.equal(apiStart!.doc["flow-id"]["dst-port"], 5202);
    assert.deepEqual(apiStart!.doc.context, {
      "experiment-id": 3,
      "activity-id": 14,
      application: apiStart!.header[3],
    });

    // End fireflies carry the start time of their start, and an end time after it.
    for (const [start, end] of [[pipeStart!, pipeEnd!], [apiStart!, apiEnd!]] as const) {
      assert.equal(end.doc["flow-lifecycle"].state, "end");
      assert.equal(end.doc["flow-lifecycle"]["start-time"], start.doc["flow-lifecycle"]["start-time"]);
      const t0 = Date.parse(start.doc["flow-lifecycle"]["start-time"]);
      const t1 = Date.parse(end.doc["flow-lifecycle"]["end-time"]!);
      assert.ok(t1 >= t0 && t1 - t0 < 10_000, `end ${t1} after start ${t0}`);
      assert.deepEqual(end.doc["flow-id"], start.doc["flow-id"]);
    }

    assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.join("\n"));
    assert.ok(daemon.lines.some((l) => /msg=stopped/.test(l)));
    await assert.rejects(() => Deno.lstat(`${dir}/flowd-go.pid`), Deno.errors.NotFound);
    await assert.rejects(() => Deno.lstat(fifo), Deno.errors.NotFound);
    assert.ok(!daemon.lines.some((l) => /level=(ERROR|WARN)/.test(l)), daemon.lines.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e: SIGHUP reloads the configuration; a broken one is reported and the running one kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-e2e-" });
  const port1 = freePort(), port2 = freePort();
  const text = (port: number) =>
    `pidPath: ${dir}/pid\nworkDir: ${dir}\nplugins:\n  api: {bindPort: ${port}, enableDummyEndpoints: true}\nbackends:\n  firefly: {sendToDestination: false}\n`;
  const conf = await writeConfig(dir, text(port1));
  try {
    await using daemon = await startDaemon(conf);
    const first = await fetch(`http://127.0.0.1:${port1}/dummy/start`);
    await first.body?.cancel();
    assert.equal(first.status, 200);

    await Deno.writeTextFile(conf, "plugins:\n  api: {bindPort: banana}\n");
    daemon.process.kill("SIGHUP");
    await daemon.waitForLine(/configuration not reloaded, keeping the running one.*bindPort/);
    const still = await fetch(`http://127.0.0.1:${port1}/`);
    await still.body?.cancel();
    assert.equal(still.status, 200);

    await Deno.writeTextFile(conf, text(port2));
    daemon.process.kill("SIGHUP");
    await daemon.waitForLine(/api listening.*:(\d+)/, 10_000);
    // The second "let's go!" marks the restarted instance.
    const deadline = Date.now() + 10_000;
    while (daemon.lines.filter((l) => /let's go!/.test(l)).length < 2 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const moved = await fetch(`http://127.0.0.1:${port2}/`);
    await moved.body?.cancel();
    assert.equal(moved.status, 200);
    await assert.rejects(() => fetch(`http://127.0.0.1:${port1}/`));
    assert.equal(await daemon.stop("SIGINT"), 0);
    await assert.rejects(() => Deno.lstat(`${dir}/pid`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e: 200 stalled HTTP connections are all closed at the configured timeouts; the cap, the dummy routes and the token hold", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-e2e-" });
  const apiPort = freePort(), metricsPort = freePort();
  const token = "e2e-token-4f1d";
  await Deno.writeTextFile(`${dir}/token`, `${token}\n`);
  const conf = await writeConfig(
    dir,
    `pidPath: ${dir}/pid
workDir: ${dir}
plugins:
  api: {bindPort: ${apiPort}, headerTimeout: 0.5, bodyTimeout: 0.5, idleTimeout: 0.5, tokenFile: token}
backends:
  prometheus: {netlinkPort: ${metricsPort}, skopsPort: 0, headerTimeout: 0.5, idleTimeout: 0.5, maxConnections: 5}
`,
  );
  const clients: RawHttpClient[] = [];
  try {
    await using daemon = await startDaemon(conf);
    // The hostile campaign's slowloris mix: unfinished heads, unfinished bodies, idle keep-alives.
    for (let i = 0; i < 200; i++) {
      const c = await RawHttpClient.connect(apiPort);
      clients.push(c);
      if (i % 3 === 0) await c.send("POST /flow HTTP/1.1\r\nHost: test\r\nContent-Type: app");
      else if (i % 3 === 1) {
        await c.send(
          requestHead("POST", "/flow", ["Content-Type: application/json", "Content-Length: 300"]) + "{",
        );
      } else {
        await c.send(requestHead("GET", "/"));
        assert.equal((await c.response()).status, 200);
      }
    }
    const closed = await Promise.all(clients.map((c) => c.closedWithin(10_000)));
    const open = closed.filter((ms) => ms === undefined).length;
    assert.equal(open, 0, `${open} of 200 connections still open after 10 s`);

    // The metrics port: its cap refuses the sixth connection at once.
    const held = await Promise.all([1, 2, 3, 4, 5].map(() => RawHttpClient.connect(metricsPort)));
    clients.push(...held);
    await new Promise((r) => setTimeout(r, 100));
    await using sixth = await RawHttpClient.connect(metricsPort);
    assert.notEqual(await sixth.closedWithin(3000), undefined, "the sixth metrics connection is closed");
    for (const c of held) c.close();

    // Dummy routes are off by default; POST /flow needs the token.
    const base = `http://127.0.0.1:${apiPort}`;
    const dummy = await fetch(`${base}/dummy/start`);
    await dummy.body?.cancel();
    assert.equal(dummy.status, 404);
    const flow = JSON.stringify({
      State: 2,
      Src: "[2001:db8::1]:2345",
      Dst: "[2001:db8::2]:5777",
      Experiment: 2,
      Activity: 9,
    });
    const headers = { "content-type": "application/json" };
    const denied = await fetch(`${base}/flow`, { method: "POST", body: flow, headers });
    await denied.body?.cancel();
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get("www-authenticate"), "Bearer");
    const allowed = await fetch(`${base}/flow`, {
      method: "POST",
      body: flow,
      headers: { ...headers, authorization: `Bearer ${token}` },
    });
    await allowed.body?.cancel();
    assert.equal(allowed.status, 200);

    // What the operator sees: the counters, on the metrics port.
    let text = "";
    for (let tries = 0; tries < 50 && !text; tries++) {
      const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).catch(() => undefined);
      if (r?.status === 200) text = await r.text();
      else await (r?.body?.cancel(), new Promise((res) => setTimeout(res, 100)));
    }
    const families = parseExposition(text);
    const v = (name: string, labels: Record<string, string>) =>
      samplesOf(families, name, labels).map((s) => s.value);
    assert.deepEqual(v("flowd_http_connections_timed_out_total", { listener: "api", timeout: "header" }), [
      67,
    ]);
    assert.deepEqual(v("flowd_http_connections_timed_out_total", { listener: "api", timeout: "body" }), [67]);
    assert.deepEqual(v("flowd_http_connections_timed_out_total", { listener: "api", timeout: "idle" }), [66]);
    assert.deepEqual(v("flowd_http_connections_refused_total", { listener: "prometheus-netlink" }), [1]);

    assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.join("\n"));
    assert.ok(!daemon.lines.some((l) => l.includes(token)), "the token is in the log");
    assert.ok(!daemon.lines.some((l) => /level=ERROR/.test(l)), daemon.lines.join("\n"));
  } finally {
    for (const c of clients) c.close();
    await Deno.remove(dir, { recursive: true });
  }
});
