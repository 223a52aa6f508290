/**
 * A daemon killed with SIGKILL leaves its clsact filter, program and maps behind, so marking goes on. The
 * next run adopts them: it loads onto the leftover's flow and counter maps, takes the flows back into its
 * table (listed by `flowd-go flows`, ended by the usual end line) and the counts carry on from where they
 * were; nothing is left at the end.
 */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { runFlowd, startDaemon } from "../helpers/daemon.ts";
import { startPeer } from "../helpers/traffic_peer.ts";
import type { FlowReport } from "../../src/control/flows_report.ts";

const SERVER_PORT = 5201;

async function writePipe(path: string, line: string): Promise<void> {
  const f = await Deno.open(path, { write: true });
  await f.write(new TextEncoder().encode(line + "\n"));
  f.close();
}

privilegedTest(
  "marker adoption: after SIGKILL, the next run keeps the flows and their counters (tc mode)",
  async () => {
    await using net = await createVethPair();
    const dir = await Deno.makeTempDir({ prefix: "flowd-adopt-" });
    const socket = `${dir}/control.sock`;
    try {
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ${dir}/pid
workDir: ${dir}
controlSocket: ${socket}
plugins:
  namedPipe: {pipePath: np}
backends:
  marker: {targetInterfaces: [${net.ifA}], attachMode: tc, maxFlows: 1000}
`,
      );
      const listing = async () => {
        const r = await runFlowd(["flows", "--socket", socket, "--format", "json"]);
        assert.equal(r.code, 0, r.stderr);
        return (JSON.parse(r.stdout) as FlowReport).flows;
      };
      await using server = startPeer(net.prefix(net.nsB), ["tcp-server", net.ip6B, String(SERVER_PORT)]);
      await server.expect("listening");
      await using client = startPeer(net.prefix(net.nsA), [
        "tcp-client",
        net.ip6A,
        "40001",
        net.ip6B,
        String(SERVER_PORT),
      ]);
      await client.expect("connected");

      await using first = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
      await first.waitForLine(/marker ready/);
      await writePipe(`${dir}/np`, `start tcp ${net.ip6A} 40001 ${net.ip6B} ${SERVER_PORT} 2 9`);
      await first.waitForLine(/marking flow/);
      await client.send("send 100000");
      await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= 100_000);
      const before = (await listing())[0]!.marking!;
      assert.ok(Number(before.packets) > 0, JSON.stringify(before));

      assert.equal(await first.stop("SIGKILL"), 137);
      await Deno.remove(socket).catch(() => {});
      // The filter outlived its process: packets are still marked (and counted) with nobody running.
      await client.send("send 100000");
      await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= 200_000);

      await using second = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
      const adopted = await second.waitForLine(/adopted the flows and counters/);
      assert.match(adopted, new RegExp(`interface=${net.ifA} .*flows=1`));
      await second.waitForLine(/marker ready/);
      const flows = await listing();
      assert.equal(flows.length, 1, JSON.stringify(flows));
      const f = flows[0]!;
      assert.deepEqual([f.src.port, f.experiment.id, f.activity.id, f.plugin], [40001, 2, 9, null]);
      const carried = Number(f.marking!.packets);
      assert.ok(carried > Number(before.packets), `counts carried on: ${before.packets} → ${carried}`);
      assert.equal(f.marking!.tag, before.tag, "the same tag");

      await client.send("send 100000");
      await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= 300_000);
      assert.ok(Number((await listing())[0]!.marking!.packets) > carried, "and go on counting");

      // The end line of the flow, as its writer sends it, ends the adopted flow.
      await writePipe(`${dir}/np`, `end tcp ${net.ip6A} 40001 ${net.ip6B} ${SERVER_PORT} 2 9`);
      for (let i = 0; i < 50 && (await listing()).length > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(await listing(), []);
      await client.send("close");
      assert.equal(await second.stop(), 0);
      const left = await net.exec(net.nsA, ["tc", "filter", "show", "dev", net.ifA, "egress"]);
      assert.equal(left.stdout.trim(), "", "nothing left on the interface");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
