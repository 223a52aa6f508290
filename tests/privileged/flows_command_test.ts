/**
 * `flowd-go flows` against the real daemon: flowd-go in namespace A marks on A's veth, a real TCP flow goes
 * to namespace B; the listing, read through the control socket, gives the flow's packets and bytes as the
 * marker counted them (checked against what the sender wrote), shows a flow announced with a wrong port as
 * never seen, refuses a user the socket's mode excludes, and says plainly when no daemon runs.
 */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { runFlowd, startDaemon } from "../helpers/daemon.ts";
import { startPeer } from "../helpers/traffic_peer.ts";
import type { FlowReport } from "../../src/control/flows_report.ts";
import type { StatusReport } from "../../src/control/status_report.ts";

const SERVER_PORT = 5201;
const SENT = 200_000;

async function writePipe(path: string, line: string): Promise<void> {
  const f = await Deno.open(path, { write: true });
  await f.write(new TextEncoder().encode(line + "\n"));
  f.close();
}

privilegedTest(
  "flows command: packets and bytes marked per flow through the control socket; a wrong 5-tuple is never seen",
  async () => {
    await using net = await createVethPair();
    const dir = await Deno.makeTempDir({ prefix: "flowd-flows-" });
    await Deno.chmod(dir, 0o755); // only the socket's own mode decides who may connect
    const socket = `${dir}/control.sock`;
    try {
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ${dir}/pid
workDir: ${dir}
controlSocket: ${socket}
plugins:
  namedPipe: {pipePath: np, pipeMode: "0600"}
backends:
  marker:
    targetInterfaces: [${net.ifA}]
`,
      );
      await using daemon = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
      await daemon.waitForLine(/marker ready/);
      assert.equal((await Deno.lstat(socket)).mode! & 0o777, 0o660);

      await using server = startPeer(net.prefix(net.nsB), ["tcp-server", net.ip6B, String(SERVER_PORT)]);
      await server.expect("listening");
      await writePipe(`${dir}/np`, `start tcp ${net.ip6A} 40001 ${net.ip6B} ${SERVER_PORT} 2 9`);
      // Announced with a source port no connection uses: the marker holds it, nothing matches it.
      await writePipe(`${dir}/np`, `start tcp ${net.ip6A} 40009 ${net.ip6B} ${SERVER_PORT} 2 9`);
      await daemon.waitForLine(/marking flow.*40009/);

      await using client = startPeer(net.prefix(net.nsA), [
        "tcp-client",
        net.ip6A,
        "40001",
        net.ip6B,
        String(SERVER_PORT),
      ]);
      await client.expect("connected");
      await client.send(`send ${SENT}`);
      await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= SENT);

      const json = await runFlowd(["flows", "--socket", socket, "--format", "json"]);
      assert.equal(json.code, 0, json.stderr);
      const report = JSON.parse(json.stdout) as FlowReport;
      const bySport = (port: number) => report.flows.find((f) => f.src.port === port);
      const seen = bySport(40001)?.marking, never = bySport(40009)?.marking;
      assert.ok(seen && never, `both flows listed: ${json.stdout}`);
      assert.equal(seen.seen, true);
      const packets = Number(seen.packets), bytes = Number(seen.bytes);
      // Every data segment was marked; each skb's bytes are its payload plus its headers once (14 + 40 + 32
      // with timestamps), and the handshake's last ACK adds one packet without payload.
      const mss = 1500 - 40 - 32;
      assert.ok(packets >= Math.ceil(SENT / mss), `at least one packet per segment: ${packets}`);
      assert.ok(packets <= Math.ceil(SENT / mss) + 8, `no more packets than segments and ACKs: ${packets}`);
      assert.ok(bytes > SENT && bytes <= SENT + packets * (14 + 40 + 32), `bytes ${bytes} for ${SENT} sent`);
      assert.ok(seen.lastPacketAgoS !== null && seen.lastPacketAgoS < 10, "the last packet left just now");
      assert.equal(seen.tag?.startsWith("0x"), true);
      assert.deepEqual([never.seen, Number(never.packets)], [false, 0]);

      const table = await runFlowd(["flows", "--socket", socket, "--dst", `${net.ip6B}`]);
      assert.equal(table.code, 0, table.stderr);
      const line40009 = table.stdout.split("\n").find((l) => l.includes(":40009"));
      assert.match(line40009 ?? "", /never seen/);
      assert.match(table.stdout.split("\n")[0]!, /^Age\s+Proto\s+Local\s+Peer/);
      const filtered = await runFlowd(["flows", "--socket", socket, "--dst", "2001:db8::/32"]);
      assert.match(filtered.stdout, /\(no open flows\)/, "the --dst filter applies");

      // The socket is 0660 root:root: another user may not connect.
      const asNobody = await runFlowd(["flows", "--socket", socket], {
        prefix: ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"],
        env: { HOME: "/tmp", DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno` },
      });
      assert.equal(asNobody.code, 1);
      assert.match(asNobody.stderr, /not allowed to connect to .*control\.sock/);

      await client.send("close");
      await client.expect("closed");
      assert.equal(await daemon.stop(), 0);
      await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound, "the socket is removed at exit");
      const none = await runFlowd(["flows", "--socket", socket]);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /no flowd-go daemon is running \(nothing answers on .*control\.sock\)/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

privilegedTest(
  "status command: components with their state, the marker's hooks, and a vanished interface as degraded",
  async () => {
    await using net = await createVethPair();
    const dir = await Deno.makeTempDir({ prefix: "flowd-status-" });
    const socket = `${dir}/control.sock`;
    try {
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ${dir}/pid
workDir: ${dir}
controlSocket: ${socket}
plugins:
  namedPipe: {pipePath: np, pipeMode: "0600"}
backends:
  marker:
    targetInterfaces: [${net.ifA}]
`,
      );
      await using daemon = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
      await daemon.waitForLine(/marker ready/);
      await writePipe(`${dir}/np`, `start tcp ${net.ip6A} 40001 ${net.ip6B} ${SERVER_PORT} 2 9`);
      await writePipe(`${dir}/np`, "start tcp not-an-address 1 ::1 2 2 9");
      await daemon.waitForLine(/marking flow.*40001/);

      const first = await runFlowd(["status", "--socket", socket, "--format", "json"]);
      assert.equal(first.code, 0, first.stderr);
      const report = JSON.parse(first.stdout) as StatusReport;
      assert.equal(report.state, "running");
      assert.equal(report.configFile, conf);
      assert.match(report.commit, /^[0-9a-f]{7,40}(-dirty)?$|^unknown$/);
      const marker = report.components.find((c) => c.name === "marker")!;
      assert.equal(marker.state, "running");
      const hooks = marker.details?.hooks as { interface: string; hook: string; progId: number }[];
      assert.deepEqual(hooks.map((h) => [h.interface, h.hook]), [[net.ifA, "tcx"]]);
      assert.ok(hooks[0]!.progId > 0);
      assert.equal(report.backends.marker?.handled, 1);
      const pipe = report.components.find((c) => c.name === "namedPipe")!;
      const lines = (outcome: string) =>
        pipe.counters.find((m) => m.name === "flowd_named_pipe_lines_total" && m.labels?.outcome === outcome)
          ?.value;
      assert.deepEqual([lines("accepted"), lines("rejected")], [1, 1], JSON.stringify(pipe));

      const text = await runFlowd(["status", "--socket", socket]);
      assert.equal(text.code, 0);
      assert.match(text.stdout, new RegExp(`hook: ${net.ifA} tcx program \\d+`));
      assert.match(text.stdout, /backend marker: running\n {2}events: 1 handled, 0 dropped, 0 failed/);

      // The interface goes away: the marker notices within its check interval (5 s) and says so.
      await net.exec(net.nsA, ["ip", "link", "del", net.ifA]);
      let degraded: { code: number; stdout: string } | undefined;
      for (let i = 0; i < 80 && !degraded; i++) {
        const r = await runFlowd(["status", "--socket", socket]);
        if (r.code !== 0) degraded = r;
        else await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.ok(degraded, "status never turned degraded");
      assert.equal(degraded.code, 3);
      assert.match(degraded.stdout, new RegExp(`backend marker: degraded \\(interface ${net.ifA} vanished`));
      assert.match(degraded.stdout.split("\n")[0]!, /: degraded$/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
