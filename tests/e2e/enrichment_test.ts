/**
 * End to end, as root: the real daemon with the iperf3 plugin, both enrichers, the firefly backend
 * (enrich: true) and prometheus. An iperf3 client on the host (in a cgroup of the test's own) sends to a
 * server in a network namespace over a veth pair; fireflies go to a collector on loopback, metrics are
 * scraped over HTTP. After SIGTERM no program of ours stays attached.
 */
import assert from "node:assert/strict";
import { freePort, startDaemon, udpReceiver } from "../helpers/daemon.ts";
import { hasCommand, privilegedTest } from "../helpers/privileged.ts";
import { createHostVeth } from "../helpers/host_veth.ts";
import { cgroupTree, createTestCgroup } from "../helpers/cgroup.ts";
import { assertValidFirefly } from "../helpers/firefly_schema.ts";
import { parseExposition, promtoolCheck, samplesOf } from "../helpers/prom_text.ts";
import { SockDiag, TCP_LISTEN } from "../../src/net/sock_diag.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Firefly {
  "flow-lifecycle": { state: string; "start-time": string; "current-time"?: string };
  "flow-id": { "src-port": number; "dst-port": number; "src-ip": string; "dst-ip": string };
  context: { "experiment-id": number; "activity-id": number; application?: string };
  netlink?: { tcpInfo: Record<string, number> | null; cong?: { algorithm: string } };
  skOps?: { tcpInfo: Record<string, number> | null; cong?: { algorithm: string } };
}

function decode(datagram: string): { doc: Firefly; bytes: number } {
  const json = datagram.slice(datagram.indexOf("{"));
  const doc = JSON.parse(json);
  assertValidFirefly(doc);
  return { doc, bytes: new TextEncoder().encode(datagram).length };
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(100);
  }
}

privilegedTest(
  "e2e: iperf3 flow → start/ongoing/end fireflies from both enrichers, per-flow metrics that move and vanish, nothing left attached",
  async () => {
    if (!hasCommand("iperf3")) throw new Error("this test needs iperf3");
    await using veth = await createHostVeth();
    await using cg = await createTestCgroup();
    await using collector = await udpReceiver("127.0.0.1");
    using diag = SockDiag.open({ netns: `/run/netns/${veth.ns}` });
    const dir = await Deno.makeTempDir({ prefix: "flowd-e2e-enrich-" });
    const netlinkPort = freePort("::1"), skopsPort = freePort("::1");
    const serverPort = 5271, clientPort = 40071;
    const conf = `${dir}/conf.yaml`;
    await Deno.writeTextFile(
      conf,
      `pidPath: ${dir}/flowd-go.pid
workDir: ${dir}/work
plugins:
  iperf3:
    minDestinationPort: ${serverPort}
    maxDestinationPort: ${serverPort}
    cgroupPath: ${cg.path}
    experimentIDs: [7]
    activityIDs: [8]
backends:
  firefly:
    sendToDestination: false
    sendToCollector: true
    collectorAddress: 127.0.0.1
    collectorPort: ${collector.port}
    enrich: true
    enrichmentMode: lean
  prometheus:
    bindAddress: "::1"
    netlinkPort: ${netlinkPort}
    skopsPort: ${skopsPort}
enrichers:
  period: 200
  netlink: {}
  skops:
    cgroupPath: ${cg.path}
    strategy: poll
`,
    );
    try {
      await using daemon = await startDaemon(conf);
      const ours = (await cgroupTree()).filter((p) => p.cgroup === cg.path).map((p) => p.name).sort();
      assert.deepEqual(ours, ["flowd_skops", "flowd_watcher"]);

      cg.spawn([...veth.prefix(), "iperf3", "-s", "-1", "-p", String(serverPort), "-B", veth.ip6Peer]);
      await until(
        "the iperf3 server",
        async () =>
          (await diag.dump({ family: "ipv6", states: 1 << TCP_LISTEN }, { srcPort: serverPort })).length > 0
            ? true
            : undefined,
      );
      const client = cg.spawn([
        ...["iperf3", "-c", veth.ip6Peer, "-p", String(serverPort), "--cport", String(clientPort)],
        ...["-t", "3", "-b", "20M", "-C", "cubic"],
      ]);

      const data = (d: Firefly) => d["flow-id"]["src-port"] === clientPort;
      const fireflies = () => collector.messages.map(decode);
      // Ongoing fireflies of the data connection from both enrichers, lean and within one packet.
      const netlinkOngoing = await until("two netlink ongoing fireflies of the data connection", () => {
        const got = fireflies().filter((f) => data(f.doc) && f.doc.netlink?.tcpInfo);
        return got.length >= 2 ? got : undefined;
      });
      await until(
        "a skops ongoing firefly",
        () => fireflies().find((f) => data(f.doc) && f.doc.skOps?.tcpInfo),
      );
      for (const f of fireflies().filter((f) => f.doc["flow-lifecycle"].state === "ongoing")) {
        assert.ok(f.bytes <= 1452, `${f.bytes} bytes`);
        assert.deepEqual(f.doc.context, {
          "experiment-id": 7,
          "activity-id": 8,
          application: f.doc.context.application,
        });
        assert.ok(f.doc["flow-lifecycle"]["current-time"]);
      }
      const [n1, n2] = [
        netlinkOngoing[0]!.doc.netlink!.tcpInfo!,
        netlinkOngoing.at(-1)!.doc.netlink!.tcpInfo!,
      ];
      assert.ok(n1.rtt! > 0 && n2.rtt! > 0, "rtt is measured");
      assert.ok(n2.bytesSent! > n1.bytesSent!, "bytes sent grow between periods");
      assert.equal(netlinkOngoing[0]!.doc.netlink!.cong?.algorithm, "cubic");

      // Metrics: the data connection's series on both ports, moving between scrapes.
      const scrape = async (port: number) => {
        const res = await fetch(`http://[::1]:${port}/metrics`);
        const text = await res.text();
        assert.equal(res.status, 200);
        return { text, families: parseExposition(text) };
      };
      const flowLabel = `<${clientPort}:${serverPort}>`;
      const acked = async (port: number) =>
        samplesOf((await scrape(port)).families, "flow_tcp_bytes_acked_total", { flow: flowLabel })[0]?.value;
      const a1 = await until("netlink metrics of the data connection", () => acked(netlinkPort));
      const b1 = await until("more acked bytes", async () => {
        const v = await acked(netlinkPort);
        return v !== undefined && v > a1 ? v : undefined;
      });
      assert.ok(b1 > a1);
      const s1 = await until("skops metrics of the data connection", () => acked(skopsPort));
      assert.ok(s1 > 0);
      const sample = await scrape(netlinkPort);
      const rtt = samplesOf(sample.families, "flow_tcp_rtt", { flow: flowLabel });
      assert.equal(rtt.length, 1);
      assert.deepEqual(
        { ...rtt[0]!.labels },
        { act: "8", exp: "7", src: veth.ip6Host, dst: veth.ip6Peer, flow: flowLabel, flavour: "Netlink" },
      );
      if (hasCommand("promtool")) {
        assert.deepEqual(await promtoolCheck(sample.text), []);
        assert.deepEqual(await promtoolCheck((await scrape(skopsPort)).text), []);
      }

      assert.equal((await client.status).code, 0, "iperf3 finished");
      // Ends: both connections, with their start's ids; then their series are gone from both ports.
      await until(
        "two end fireflies",
        () =>
          fireflies().filter((f) => f.doc["flow-lifecycle"].state === "end").length >= 2 ? true : undefined,
      );
      const starts = fireflies().filter((f) => f.doc["flow-lifecycle"].state === "start");
      assert.equal(starts.length, 2, "control and data connection");
      await until("the series to vanish", async () => {
        const left = [
          ...samplesOf((await scrape(netlinkPort)).families, "flow_tcp_rtt"),
          ...samplesOf((await scrape(skopsPort)).families, "flow_tcp_rtt"),
        ];
        return left.length === 0 ? true : undefined;
      });
      const after = await scrape(netlinkPort);
      assert.deepEqual(
        samplesOf(after.families, "flowd_flows_ended_total", { exp: "7", act: "8" }).map((s) => s.value),
        [2],
      );
      assert.ok(
        samplesOf(after.families, "flowd_tcp_sent_bytes_total", { exp: "7", act: "8" })[0]!.value > 1e6,
      );

      assert.equal(await daemon.stop("SIGTERM"), 0);
      assert.ok(daemon.lines.some((l) => /logger=enrichers.skops msg="sock_ops program attached"/.test(l)));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    // The kernel may finish releasing a closed link from a work queue: give it a moment on a busy machine.
    const ours = async () =>
      (await cgroupTree()).filter((p) => p.cgroup === cg.path || /^flowd_(skops|watcher)$/.test(p.name));
    let left = await ours();
    for (let i = 0; i < 40 && left.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      left = await ours();
    }
    assert.deepEqual(left, [], "no program of ours is attached after the daemon stopped");
  },
);
