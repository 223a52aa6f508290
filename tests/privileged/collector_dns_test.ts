/**
 * A collector host name whose DNS never answers (hardening issue item 17): in a network namespace whose
 * resolv.conf names a server on its own loopback that swallows every query, the daemon starts at once,
 * fireflies to the flow's peer leave at once, and SIGTERM stops it promptly with status 0.
 */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { startDaemon } from "../helpers/daemon.ts";
import { sh } from "../helpers/netns.ts";
import { type LineProcess, spawnLines } from "../helpers/process_lines.ts";

/** A python3 UDP socket in `ns` on 127.0.0.1:`port`: prints each datagram (or swallows them all). */
function udpProcess(ns: string, port: number, print: boolean): LineProcess {
  const code = `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
s.bind(("127.0.0.1",${port}))
print("ready",flush=True)
while True:
    d=s.recv(65535)
    ${
    print
      ? 'sys.stdout.write(d.decode("utf-8","replace").replace("\\n"," ")+"\\n"); sys.stdout.flush()'
      : "pass"
  }
`;
  return spawnLines("ip", ["netns", "exec", ns, "python3", "-c", code]);
}

privilegedTest(
  "collector DNS that never answers: start, peer fireflies and SIGTERM never wait on it",
  async () => {
    const ns = `fgdns${Deno.pid % 100000}`;
    const etc = `/etc/netns/${ns}`;
    const dir = await Deno.makeTempDir({ prefix: "flowd-go-dns-" });
    const procs: LineProcess[] = [];
    await sh(["ip", "netns", "add", ns]);
    try {
      await sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
      // `ip netns exec` binds this file over /etc/resolv.conf for everything run in the namespace.
      await Deno.mkdir(etc, { recursive: true });
      await Deno.writeTextFile(`${etc}/resolv.conf`, "nameserver 127.0.0.1\noptions timeout:30 attempts:3\n");
      const swallower = udpProcess(ns, 53, false);
      const peer = udpProcess(ns, 10514, true);
      procs.push(swallower, peer);
      await swallower.waitFor(/^ready$/, "the silent DNS server");
      await peer.waitFor(/^ready$/, "the peer's firefly receiver");

      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `workDir: ${dir}
pidPath: flowd-go.pid
plugins:
  namedPipe:
    pipePath: ${dir}/np
backends:
  firefly:
    destinationPort: 10514
    sendToCollector: true
    collectorAddress: collector.example.org
    collectorPort: 9
`,
      );
      const t0 = performance.now();
      await using daemon = await startDaemon(conf, [], { prefix: ["ip", "netns", "exec", ns] });
      const startMs = performance.now() - t0;
      const lines = Array.from(
        { length: 20 },
        (_, i) => `start udp 127.0.0.1 ${30000 + i} 127.0.0.1 40000 2 3\n`,
      );
      const t1 = performance.now();
      await Deno.writeTextFile(`${dir}/np`, lines.join(""));
      const until = performance.now() + 3000;
      while (peer.lines.filter((x) => x.includes("firefly-json")).length < 20 && performance.now() < until) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(
        peer.lines.filter((x) => x.includes("firefly-json")).length,
        20,
        "20 fireflies at the peer",
      );
      const deliveredMs = performance.now() - t1;
      const t2 = performance.now();
      const code = await daemon.stop("SIGTERM");
      const stopMs = performance.now() - t2;
      console.error(
        `DNS never answers: ready in ${startMs.toFixed(0)} ms, 20 peer fireflies in ${
          deliveredMs.toFixed(0)
        } ms, ` +
          `SIGTERM exit ${code} in ${stopMs.toFixed(0)} ms`,
      );
      assert.equal(code, 0, daemon.lines.join("\n"));
      assert.ok(startMs < 3000, `start took ${startMs} ms`);
      assert.ok(stopMs < 3000, `stop took ${stopMs} ms`);
      assert.ok(
        daemon.lines.some((l) => /no address for the collector yet/.test(l)),
        "fireflies meant for the unresolved collector are reported",
      );
    } finally {
      for (const p of procs) await p[Symbol.asyncDispose]();
      await sh(["ip", "netns", "del", ns], { check: false });
      await Deno.remove(etc, { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
);
