/**
 * plugins.nats into the marker, on the wire: flowd-go runs in namespace A with the marker on A's veth and
 * the nats plugin reading a real nats-server (JetStream) in the same namespace; a flow announced by
 * publishing a POST /flow body to the control subject is labelled on real TCP traffic to namespace B
 * (captured there with tshark), its end published the same way stops the marking.
 */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { freePort, startDaemon, superviseProcess } from "../helpers/daemon.ts";
import { startPeer } from "../helpers/traffic_peer.ts";
import { dataSegmentsAround, flowLabelsOf, startCapture } from "../helpers/packet_capture.ts";
import { natsServerAvailable } from "../helpers/nats_cluster.ts";
import { decodeFlowLabel } from "../../src/scitags/flow_label.ts";

const SERVER_PORT = 5201;
const REPO = new URL("../../", import.meta.url).pathname;
type Packet = Record<string, string>;

const NAME = "nats plugin: a flow announced on the control subject is labelled on the wire";
if (!natsServerAvailable()) {
  console.error(`SKIPPED (nats-server not installed; scripts/setup.sh installs it): ${NAME}`);
  Deno.test({ name: `${NAME} [SKIPPED: no nats-server]`, ignore: true, fn() {} });
} else {
  privilegedTest(NAME, async () => {
    await using net = await createVethPair();
    await net.exec(net.nsA, ["sysctl", "-qw", "net.ipv6.auto_flowlabels=0"]);
    const dir = await Deno.makeTempDir({ prefix: "flowd-nats-marker-" });
    try {
      // Its own namespace, so the port only needs to be free in the root one (a likely guess inside A too).
      const natsPort = freePort();
      await using _server = superviseProcess(net.prefix(net.nsA)[0]!, [
        ...net.prefix(net.nsA).slice(1),
        "nats-server",
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        String(natsPort),
        "-sd",
        `${dir}/store`,
      ]);
      /** Publishes (from inside namespace A) a POST /flow body to the control subject, retrying until up. */
      const publish = async (body: unknown) => {
        const code = `import { connect } from "@nats-io/transport-node";
        import { jetstream } from "@nats-io/jetstream";
        let nc;
        for (let i = 0; i < 100 && !nc; i++) {
          try { nc = await connect({ servers: "127.0.0.1:${natsPort}" }); }
          catch { await new Promise((r) => setTimeout(r, 100)); }
        }
        const js = jetstream(nc);
        for (let i = 0; ; i++) {
          try { await js.publish("scitags.control.node", ${JSON.stringify(JSON.stringify(body))}); break; }
          catch (e) { if (i > 50) throw e; await new Promise((r) => setTimeout(r, 100)); }
        }
        await nc.close();`;
        const out = await new Deno.Command(net.prefix(net.nsA)[0]!, {
          args: [...net.prefix(net.nsA).slice(1), Deno.execPath(), "eval", code],
          cwd: REPO,
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.ok(out.success, new TextDecoder().decode(out.stderr));
      };
      const flow = (state: string) => ({
        State: state,
        Protocol: "tcp",
        Src: `[${net.ip6A}]:40001`,
        Dst: `[${net.ip6B}]:${SERVER_PORT}`,
        Experiment: 2,
        Activity: 9,
      });
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ""
workDir: ${dir}
controlSocket: ${dir}/control.sock
plugins:
  nats:
    servers: [nats://127.0.0.1:${natsPort}]
    subject: scitags.control.node
    createStream: true
    connectTimeout: 10
backends:
  marker:
    targetInterfaces: [${net.ifA}]
    markingStrategy: label
`,
      );
      // A server not listening yet is only a warning for the plugin: it connects on its next try.
      await using daemon = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
      await daemon.waitForLine(/marker ready/);
      await daemon.waitForLine(/reading flow events/, 20_000);

      await using server = startPeer(net.prefix(net.nsB), ["tcp-server", net.ip6B, String(SERVER_PORT)]);
      await server.expect("listening");
      await using capture = await startCapture(net.prefix(net.nsB), net.ifB, [
        "ip6",
        "and",
        "tcp",
        "port",
        String(SERVER_PORT),
      ]);

      await publish(flow("start"));
      await daemon.waitForLine(/marking flow.*40001/, 20_000);
      const client = startPeer(net.prefix(net.nsA), [
        "tcp-client",
        net.ip6A,
        "40001",
        net.ip6B,
        String(SERVER_PORT),
      ]);
      await client.expect("connected");
      await client.send("send 20000");
      await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= 20000);

      await publish(flow("end"));
      await daemon.waitForLine(/stopped marking flow.*40001/, 20_000);
      await client.send("send 3000");
      await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= 23000);
      await client.send("close");
      await client.expect("closed");
      await client[Symbol.asyncDispose]();

      const packets = await capture.stop([
        "ipv6.src",
        "tcp.srcport",
        "tcp.seq",
        "tcp.len",
        "ipv6.flow",
      ]) as Packet[];
      const { before, after } = dataSegmentsAround(packets, net.ip6A, 40001, 20001);
      assert.ok(before.length > 0 && after.length > 0, `${packets.length} packets captured`);
      const labels = flowLabelsOf(before);
      assert.equal(labels.size, 1, `one label: ${[...labels].map((l) => l.toString(16))}`);
      const d = decodeFlowLabel([...labels][0]!);
      assert.deepEqual([d.experimentId, d.activityId], [2, 9]);
      assert.deepEqual(flowLabelsOf(after), new Set([0]), "unmarked after the end");
      assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.slice(-20).join("\n"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
