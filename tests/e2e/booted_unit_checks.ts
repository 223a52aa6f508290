/**
 * The RPM under a real systemd 252 (hardening issue item 6): a Debian 12 machine booted with
 * systemd-nspawn, the package installed with `rpm -i --nodeps`, and the unit driven as an operator would:
 * enable/start, the transient user and its capabilities, pipe and API, reload (good and refused), a start
 * that must fail, the marker on a veth into a host namespace with the label seen on the wire, kill -9 and
 * the restart, seven quick operator restarts, stop with the clean step, `rpm -e`.
 */
import assert from "node:assert/strict";
import { bootDebian, debianRoot } from "../helpers/booted_debian.ts";
import { sh } from "../helpers/netns.ts";
import { startCapture } from "../helpers/packet_capture.ts";
import { encodeFlowLabel, SEMANTIC_MASK } from "../../src/scitags/flow_label.ts";

/** CapEff of the daemon: CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39), nothing else. */
const DAEMON_CAPS = (1n << 12n) | (1n << 38n) | (1n << 39n);

/** Runs every check as steps of `t`; the RPM file is the package under test. */
export async function checkInBootedDebian(
  t: Deno.TestContext,
  rpmFile: string,
  scratch: string,
): Promise<void> {
  const t0 = performance.now();
  const { path: lower, made } = await debianRoot();
  const rootMs = performance.now() - t0;
  await using m = await bootDebian(lower, `${scratch}/machine`);
  const bootMs = performance.now() - t0 - rootMs;
  const systemctl = (...args: string[]) => m.run(["systemctl", ...args], { check: false });
  const mainPid = async () =>
    Number((await m.run(["systemctl", "show", "-p", "MainPID", "--value", "flowd-go"])).stdout);
  const conf = "/etc/flowd-go/conf.yaml";

  await t.step("booted: systemd 252 runs; rpm -i installs the package", async () => {
    assert.match((await m.run(["systemctl", "--version"])).stdout, /^systemd 252 /);
    await Deno.copyFile(rpmFile, `${m.root}/root/flowd-go.rpm`);
    const installed = await m.run(["rpm", "-i", "--nodeps", "/root/flowd-go.rpm"], { check: false });
    assert.equal(installed.code, 0, installed.stderr);
    assert.ok((await Deno.stat(`${m.root}/usr/bin/flowd-go`)).isFile);
  });

  await t.step(
    "booted: enable --now starts it (READY after every component), as a transient user with three capabilities",
    async () => {
      const started = await systemctl("enable", "--now", "flowd-go");
      assert.equal(started.code, 0, started.stderr);
      assert.equal((await systemctl("is-active", "flowd-go")).stdout.trim(), "active");
      const status = (await systemctl("show", "-p", "StatusText", "--value", "flowd-go")).stdout;
      assert.match(status, /^running: 2 plugins, 1 backends/);
      const proc = (await m.run(["cat", `/proc/${await mainPid()}/status`])).stdout;
      const uid = Number(/^Uid:\s+(\d+)/m.exec(proc)![1]);
      assert.ok(uid >= 61184 && uid <= 65519, `uid ${uid} is not a dynamic user's`);
      assert.equal(BigInt(`0x${/^CapEff:\s+([0-9a-f]+)/m.exec(proc)![1]}`), DAEMON_CAPS);
    },
  );

  await t.step("booted: a pipe line and an API flow become fireflies to the flow's peer", async () => {
    // The shipped configuration sends fireflies to each flow's destination, port 10514.
    const receiver = m.run([
      "timeout",
      "20",
      "python3",
      "-c",
      `import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.2",10514)); n=0
while n<2:
    d=s.recv(65535).decode(); n+=1; print(d,flush=True)`,
    ], { check: false });
    await new Promise((r) => setTimeout(r, 500));
    await m.shell(`echo "start tcp 127.0.0.1 41000 127.0.0.2 5201 2 9" > /run/flowd-go/np`);
    const api = await m.run([
      "curl",
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "-H",
      "Content-Type: application/json",
      "-d",
      '{"State":"start","Protocol":"tcp","Src":"127.0.0.1:41001","Dst":"127.0.0.2:5201","Experiment":3,"Activity":4}',
      "http://127.0.0.1:7777/flow",
    ]);
    assert.equal(api.stdout, "200");
    const got = await receiver;
    assert.equal(got.code, 0, `the fireflies did not come: ${got.stdout}`);
    assert.match(got.stdout, /"src-port":41000/);
    assert.match(got.stdout, /"src-port":41001/);
  });

  await t.step(
    "booted: systemctl reload succeeds for a good configuration and FAILS for a refused one; the daemon keeps running",
    async () => {
      const pid = await mainPid();
      assert.equal((await systemctl("reload", "flowd-go")).code, 0);
      await m.run(["cp", conf, "/root/conf.good"]);
      await m.shell(`echo "plugins: [" >> ${conf}`);
      assert.notEqual((await systemctl("reload", "flowd-go")).code, 0, "a refused reload must fail");
      assert.equal((await systemctl("is-active", "flowd-go")).stdout.trim(), "active");
      assert.equal(await mainPid(), pid, "the same daemon runs on");
      const journal = (await m.run(["journalctl", "-u", "flowd-go", "--no-pager"])).stdout;
      assert.match(journal, /Reload failed for flowd-go\.service/);
    },
  );

  await t.step("booted: systemctl start FAILS for a configuration that cannot start", async () => {
    assert.equal((await systemctl("stop", "flowd-go")).code, 0);
    const failed = await systemctl("start", "flowd-go"); // the broken file is still in place
    assert.notEqual(failed.code, 0);
    assert.equal((await systemctl("is-active", "flowd-go")).stdout.trim(), "failed");
    await m.run(["cp", "/root/conf.good", conf]);
    await systemctl("reset-failed", "flowd-go");
    assert.equal((await systemctl("start", "flowd-go")).code, 0);
  });

  const ns = `fgboot${Deno.pid % 100000}`;
  await sh(["ip", "netns", "add", ns]);
  try {
    await t.step("booted: the marker labels a real TCP flow on a veth out of the machine", async () => {
      await sh([
        "ip",
        "link",
        "add",
        "vA",
        "netns",
        String(m.leader),
        "type",
        "veth",
        "peer",
        "name",
        "vB",
        "netns",
        ns,
      ]);
      await m.shell("ip addr add fd00:b007::1/64 dev vA nodad && ip link set vA up && ip link set lo up");
      await sh(["ip", "-n", ns, "addr", "add", "fd00:b007::2/64", "dev", "vB", "nodad"]);
      await sh(["ip", "-n", ns, "link", "set", "vB", "up"]);
      const marked = (await m.run(["cat", conf])).stdout.replace(
        /^backends:\n/m,
        "backends:\n  marker:\n    targetInterfaces: [vA]\n    attachMode: tc\n",
      );
      await Deno.writeTextFile(`${m.root}${conf}`, marked);
      assert.equal((await systemctl("restart", "flowd-go")).code, 0);
      const server = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          ns,
          "python3",
          "-c",
          `import socket
s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(("fd00:b007::2",5201)); s.listen(1)
print("ready",flush=True)
c,_=s.accept(); c.recv(100); c.close()`,
        ],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const ready = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
      for (let seen = ""; !seen.includes("ready");) {
        const { value, done } = await ready.read();
        if (done) throw new Error("the TCP server in the host namespace did not start");
        seen += value;
      }
      try {
        await using capture = await startCapture(["ip", "netns", "exec", ns], "vB", [
          "ip6",
          "and",
          "tcp",
          "port",
          "5201",
        ]);
        await m.shell(`echo "start tcp fd00:b007::1 40000 fd00:b007::2 5201 2 9" > /run/flowd-go/np`);
        await new Promise((r) => setTimeout(r, 300));
        await m.run([
          "python3",
          "-c",
          `import socket,time
c=socket.socket(socket.AF_INET6); c.bind(("fd00:b007::1",40000)); c.connect(("fd00:b007::2",5201)); c.send(b"x"*50); time.sleep(0.2); c.close()`,
        ]);
        const packets = await capture.stop(["ipv6.src", "ipv6.flow"], "ipv6.src == fd00:b007::1");
        assert.ok(packets.length > 0, "no packet of the flow was captured");
        for (const p of packets) {
          assert.equal(
            Number(p["ipv6.flow"]) & SEMANTIC_MASK,
            encodeFlowLabel(2, 9, 0) & SEMANTIC_MASK,
            JSON.stringify(p),
          );
        }
      } finally {
        try {
          server.kill("SIGKILL");
        } catch { /* done */ }
        await ready.cancel();
        await server.status;
      }
      assert.match((await m.run(["tc", "filter", "show", "dev", "vA", "egress"])).stdout, /flowd_marker/);
    });

    await t.step(
      "booted: kill -9 of the daemon: the clean step runs, systemd restarts it, the hook is back once",
      async () => {
        const pid = await mainPid();
        await m.run(["kill", "-9", String(pid)]);
        const deadline = Date.now() + 30_000; // RestartSec=10s
        while (Date.now() < deadline) {
          const now = await mainPid();
          if (
            now !== 0 && now !== pid && (await systemctl("is-active", "flowd-go")).stdout.trim() === "active"
          ) break;
          await new Promise((r) => setTimeout(r, 250));
        }
        assert.notEqual(await mainPid(), pid, "systemd did not restart the killed daemon");
        const filters = (await m.run(["tc", "filter", "show", "dev", "vA", "egress"])).stdout;
        assert.equal(filters.match(/^filter .*handle .*flowd_marker/gm)?.length, 1, filters);
      },
    );

    await t.step("booted: seven operator restarts in a row all succeed (no start limit)", async () => {
      for (let i = 0; i < 7; i++) {
        const r = await systemctl("restart", "flowd-go");
        assert.equal(r.code, 0, `restart ${i + 1}: ${r.stderr}`);
      }
    });

    await t.step("booted: stop runs the clean step: no filter and no qdisc of ours left", async () => {
      assert.equal((await systemctl("stop", "flowd-go")).code, 0);
      assert.equal((await m.run(["tc", "filter", "show", "dev", "vA", "egress"])).stdout.trim(), "");
      assert.doesNotMatch((await m.run(["tc", "qdisc", "show", "dev", "vA"])).stdout, /clsact/);
      const journal = (await m.run(["journalctl", "-u", "flowd-go", "--no-pager"])).stdout;
      assert.doesNotMatch(journal, /cannot write the record|Permission denied/);
    });
  } finally {
    await sh(["ip", "netns", "del", ns], { check: false });
  }

  await t.step(
    "booted: systemd-analyze security of the loaded unit; rpm -e removes the package",
    async () => {
      const score = (await m.run(["systemd-analyze", "security", "flowd-go"], { check: false })).stdout;
      const level = /Overall exposure level for flowd-go\.service: (\d+\.\d+)/.exec(score)?.[1];
      console.error(`booted: systemd 252 rates the loaded unit ${level}`);
      assert.ok(level && Number(level) <= 3, score.slice(-400));
      const removed = await m.run(["rpm", "-e", "--nodeps", "flowd-go"], { check: false });
      assert.equal(removed.code, 0, removed.stderr);
      await assert.rejects(() => Deno.stat(`${m.root}/usr/bin/flowd-go`), Deno.errors.NotFound);
      assert.notEqual((await systemctl("cat", "flowd-go")).code, 0, "the unit is gone");
    },
  );
  console.error(
    `booted: root ${made ? "made" : "cached"} in ${(rootMs / 1000).toFixed(0)} s, boot ${
      (bootMs / 1000).toFixed(1)
    } s, ` +
      `everything ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  );
}
