/**
 * What systemd sees (hardening issue item 3): sd_notify messages at start, reload and stop, sent to a
 * real AF_UNIX datagram socket (a path and an abstract name), and `flowd-go reload`, the unit's
 * ExecReload, failing for a refused configuration while the daemon keeps running.
 */
import assert from "node:assert/strict";
import { SystemdNotifier } from "../../src/core/sd_notify.ts";
import { flowdCommand, freePort, runFlowd, startDaemon, superviseProcess } from "../helpers/daemon.ts";
import { type LineProcess, spawnLines } from "../helpers/process_lines.ts";

/** A python3 AF_UNIX datagram socket printing each message on one line (newlines as "|"). */
async function notifySocket(name: string): Promise<LineProcess> {
  const code = `import socket,sys
s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)
name=sys.argv[1]
s.bind("\\0"+name[1:] if name.startswith("@") else name)
print("ready",flush=True)
while True:
    print(s.recv(4096).decode().rstrip("\\n").replace("\\n","|"),flush=True)
`;
  const p = spawnLines("python3", ["-c", code, name]);
  await p.waitFor(/^ready$/, "the notify socket");
  return p;
}

Deno.test("sd_notify: messages reach a path socket and an abstract one, one datagram each", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-notify-" });
  try {
    for (const name of [`${dir}/notify`, `@flowd-go-test-${Deno.pid}`]) {
      await using sock = await notifySocket(name);
      const n = new SystemdNotifier(name);
      n.ready("running: 1 plugins");
      n.reloading();
      n.reloaded("running: 1 plugins; reload refused: bad\nline");
      n.stopping();
      await sock.waitFor(/^STOPPING=1/, "four messages");
      assert.equal(sock.lines[1], `READY=1|STATUS=running: 1 plugins|MAINPID=${Deno.pid}`);
      assert.match(
        sock.lines[2]!,
        /^RELOADING=1\|MONOTONIC_USEC=\d{4,}\|STATUS=reloading the configuration$/,
      );
      assert.equal(sock.lines[3], "READY=1|STATUS=running: 1 plugins; reload refused: bad; line");
      assert.equal(sock.lines[4], "STOPPING=1|STATUS=stopping");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(new SystemdNotifier(undefined).active, false, "no socket, no messages");
});

function config(dir: string, apiPort: number): string {
  return `pidPath: ${dir}/flowd-go.pid\nworkDir: ${dir}\nplugins:\n  api:\n    bindPort: ${apiPort}\n`;
}

Deno.test("sd_notify: the daemon says READY after start, RELOADING/READY around a reload, STOPPING at the end", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-notify-d-" });
  try {
    await using sock = await notifySocket(`${dir}/notify`);
    const conf = `${dir}/conf.yaml`;
    await Deno.writeTextFile(conf, config(dir, freePort()));
    const { cmd, args } = flowdCommand(["--conf", conf, "run"]);
    await using daemon = superviseProcess(cmd, args, { NOTIFY_SOCKET: `${dir}/notify` });
    const ready = await sock.waitFor(/^READY=1/, "READY");
    assert.match(ready, /STATUS=running: 1 plugins, 0 backends, 0 enrichers \(api\)/);
    assert.ok(daemon.lines.some((l) => /let's go!/.test(l)), "READY comes after every component started");
    daemon.process.kill("SIGHUP");
    await sock.waitFor(/^RELOADING=1\|MONOTONIC_USEC=\d+/, "RELOADING");
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(sock.lines.filter((l) => l.startsWith("READY=1")).length, 2, "READY again after the reload");
    assert.equal(await daemon.stop("SIGTERM"), 0);
    await sock.waitFor(/^STOPPING=1/, "STOPPING");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("flowd-go reload: 0 when applied; 1 when refused, while the daemon keeps running on the old configuration", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-reload-cmd-" });
  try {
    const conf = `${dir}/conf.yaml`;
    const port = freePort();
    await Deno.writeTextFile(conf, config(dir, port));
    await using daemon = await startDaemon(conf);
    const pid = String(daemon.process.pid);

    const applied = await runFlowd(["--conf", conf, "reload", "--pid", pid]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /^reloaded: running: 1 plugins/);

    // A configuration that loads but cannot start: its API port is taken.
    const blocker = Deno.listen({ hostname: "127.0.0.1", port: freePort() });
    try {
      await Deno.writeTextFile(conf, config(dir, blocker.addr.port));
      const refused = await runFlowd(["--conf", conf, "reload"]); // the PID from the PID file
      assert.equal(refused.code, 1, refused.stdout + refused.stderr);
      assert.match(
        refused.stderr,
        /reload refused, the previous configuration keeps running: .*cannot listen/,
      );
    } finally {
      blocker.close();
    }
    // A configuration that does not even load.
    await Deno.writeTextFile(conf, "plugins: [\n");
    const broken = await runFlowd(["--conf", conf, "reload", "--pid", pid]);
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /invalid YAML/);
    // Still serving on the old port.
    const res = await fetch(`http://127.0.0.1:${port}/`);
    await res.body?.cancel();
    assert.ok(res.status < 500);
    assert.equal(await daemon.stop("SIGTERM"), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
