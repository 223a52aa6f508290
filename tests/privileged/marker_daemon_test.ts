/**
 * The marker in the real daemon: flowd-go runs inside namespace A with the marker on A's veth, flows are
 * started and ended through the named pipe and the REST API, real TCP traffic goes to namespace B, where
 * it is captured and decoded with tshark.
 */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair, type VethPair } from "../helpers/netns.ts";
import { startDaemon } from "../helpers/daemon.ts";
import { startPeer } from "../helpers/traffic_peer.ts";
import { dataSegmentsAround, flowLabelsOf, startCapture } from "../helpers/packet_capture.ts";
import { decodeFlowLabel } from "../../src/scitags/flow_label.ts";
import { BPF_TCX_EGRESS, tcxProgramIds } from "../../ffi/libbpf.ts";
import { inNamespace } from "../../src/backends/marker/our_hooks.ts";

const SERVER_PORT = 5201;
type Packet = Record<string, string>;

async function apiInNamespace(net: VethPair, port: number, body: unknown): Promise<number> {
  const code = `const r = await fetch("http://[::1]:${port}/flow", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: ${JSON.stringify(JSON.stringify(body))}});
    console.log(r.status); await r.body?.cancel();`;
  const out = await net.exec(net.nsA, [Deno.execPath(), "eval", code]);
  return Number(out.stdout.trim());
}

async function writePipe(path: string, line: string): Promise<void> {
  const f = await Deno.open(path, { write: true });
  await f.write(new TextEncoder().encode(line + "\n"));
  f.close();
}

privilegedTest(
  "marker daemon: flows from the pipe and the API are labelled on the wire, and unlabelled after their end",
  async () => {
    await using net = await createVethPair();
    await net.exec(net.nsA, ["sysctl", "-qw", "net.ipv6.auto_flowlabels=0"]); // unmarked packets carry label 0
    const dir = await Deno.makeTempDir({ prefix: "flowd-marker-e2e-" });
    try {
      const apiPort = 17777;
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ${dir}/pid
workDir: ${dir}
plugins:
  namedPipe: {pipePath: np, pipeMode: "0600"}
  api: {bindAddress: "::1", bindPort: ${apiPort}}
backends:
  marker:
    targetInterfaces: [${net.ifA}]
    markingStrategy: label
`,
      );
      await using daemon = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
      await daemon.waitForLine(/marker ready/);

      await using server = startPeer(net.prefix(net.nsB), ["tcp-server", net.ip6B, String(SERVER_PORT)]);
      await server.expect("listening");
      await using capture = await startCapture(net.prefix(net.nsB), net.ifB, ["ip6"]);

      // Flow 1 through the pipe, flow 2 through the API, flow 3 never announced.
      await writePipe(`${dir}/np`, `start tcp ${net.ip6A} 40001 ${net.ip6B} ${SERVER_PORT} 2 9`);
      assert.equal(
        await apiInNamespace(net, apiPort, {
          State: 2,
          Protocol: 0,
          Src: `[${net.ip6A}]:40002`,
          Dst: `[${net.ip6B}]:${SERVER_PORT}`,
          Experiment: 3,
          Activity: 14,
        }),
        200,
      );
      await daemon.waitForLine(/marking flow.*40002/);
      await daemon.waitForLine(/marking flow.*40001/);

      let received = 0;
      const clients = [];
      for (const sport of [40001, 40002, 40003]) {
        const c = startPeer(net.prefix(net.nsA), [
          "tcp-client",
          net.ip6A,
          String(sport),
          net.ip6B,
          String(SERVER_PORT),
        ]);
        clients.push(c);
        await c.expect("connected");
        await c.send("send 20000");
        received += 20000;
        await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= 20000);
      }

      // End flow 1: its further packets are no longer marked.
      await writePipe(`${dir}/np`, `end tcp ${net.ip6A} 40001 ${net.ip6B} ${SERVER_PORT} 2 9`);
      await daemon.waitForLine(/stopped marking flow.*40001/);
      await clients[0]!.send("send 3000");
      await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= 23000);
      for (const c of clients) {
        await c.send("close");
        await c.expect("closed");
        await c[Symbol.asyncDispose]();
      }

      const packets = await capture.stop([
        "ipv6.src",
        "tcp.srcport",
        "tcp.seq",
        "tcp.len",
        "ipv6.flow",
        "ipv6.tclass",
      ]) as Packet[];
      const sent = (sport: number) =>
        packets.filter((p) => p["ipv6.src"] === net.ip6A && Number(p["tcp.srcport"]) === sport);
      const labels = (ps: Packet[]) => ps.map((p) => parseInt(p["ipv6.flow"]!, 16));

      const { before, after } = dataSegmentsAround(packets, net.ip6A, 40001, 20001);
      assert.ok(before.length > 0 && after.length > 0, `flow 1: ${sent(40001).length} packets`);
      const l1 = flowLabelsOf(before);
      assert.equal(
        l1.size,
        1,
        `one label (constant entropy) for flow 1: ${[...l1].map((l) => l.toString(16))}`,
      );
      const d1 = decodeFlowLabel([...l1][0]!);
      assert.deepEqual([d1.experimentId, d1.activityId], [2, 9]);
      assert.deepEqual(new Set(labels(after)), new Set([0]), "flow 1 unmarked after its end event");

      const l2 = new Set(labels(sent(40002)));
      assert.equal(l2.size, 1);
      const d2 = decodeFlowLabel([...l2][0]!);
      assert.deepEqual([d2.experimentId, d2.activityId], [3, 14]);

      assert.deepEqual(new Set(labels(sent(40003))), new Set([0]), "an unannounced flow stays unmarked");
      for (const p of [...sent(40001), ...sent(40002)]) {
        assert.equal(parseInt(p["ipv6.tclass"]!, 16), 0, "traffic class kept");
      }

      assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.join("\n"));
      const ifindex =
        JSON.parse((await net.exec(net.nsA, ["ip", "-j", "link", "show", net.ifA])).stdout)[0].ifindex;
      const tcx = inNamespace(`/run/netns/${net.nsA}`, () => tcxProgramIds(ifindex, BPF_TCX_EGRESS));
      assert.deepEqual(tcx, [], "no TCX program left on the interface after the daemon stopped");
      const filters = await net.exec(net.nsA, ["tc", "filter", "show", "dev", net.ifA, "egress"], {
        check: false,
      });
      assert.equal(filters.stdout.trim(), "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

privilegedTest(
  "marker daemon: perfSONAR marks every IPv6 packet of the host, and stops when the daemon stops",
  async () => {
    await using net = await createVethPair();
    await net.exec(net.nsA, ["sysctl", "-qw", "net.ipv6.auto_flowlabels=0"]);
    const dir = await Deno.makeTempDir({ prefix: "flowd-perfsonar-" });
    try {
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ""
workDir: ${dir}
plugins:
  perfsonar: {experimentId: 5, activityId: 2}
backends:
  marker: {targetInterfaces: [${net.ifA}]}
`,
      );
      await using daemon = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
      assert.ok(
        daemon.lines.some((l) => /overriding backends\.marker\.matchAll/.test(l)),
        "the override is announced",
      );
      await daemon.waitForLine(/marking all IPv6 traffic/);
      // Resolve B's address first, so no datagram waits on neighbour discovery during the capture.
      await using warmUp = startPeer(net.prefix(net.nsA), [
        "udp-send",
        net.ip6A,
        "7000",
        net.ip6B,
        "9",
        "10",
      ]);
      await warmUp.expect("sent");
      await new Promise((r) => setTimeout(r, 300));
      await using capture = await startCapture(net.prefix(net.nsB), net.ifB, ["ip6", "and", "udp"]);
      // UDP from two source ports: every IPv6 packet carries the one tag.
      await using sender = startPeer(net.prefix(net.nsA), [
        "udp-send",
        net.ip6A,
        "7001",
        net.ip6B,
        "9",
        "100",
        "200",
      ]);
      await sender.expect("sent");
      await using sender2 = startPeer(net.prefix(net.nsA), [
        "udp-send",
        net.ip6A,
        "7002",
        net.ip6B,
        "9",
        "300",
      ]);
      await sender2.expect("sent");
      await capture.waitFrames(3);
      await new Promise((r) => setTimeout(r, 100)); // the warm-up datagram may still be in flight
      const packets = (await capture.stop(["ipv6.src", "ipv6.flow", "udp.srcport"])) as Packet[];
      const udp = packets.filter((p) =>
        p["ipv6.src"] === net.ip6A && ["7001", "7002"].includes(p["udp.srcport"]!)
      );
      assert.equal(udp.length, 3, JSON.stringify(packets));
      for (const p of udp) {
        const d = decodeFlowLabel(parseInt(p["ipv6.flow"]!, 16));
        assert.deepEqual([d.experimentId, d.activityId], [5, 2]);
      }
      assert.equal(await daemon.stop(), 0, daemon.lines.join("\n"));
      assert.ok(daemon.lines.some((l) => /stopped marking all IPv6 traffic/.test(l)));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
