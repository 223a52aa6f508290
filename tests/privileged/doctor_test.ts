/**
 * `flowd-go doctor` on this host, as root: it passes for a configuration the host can run, proving the
 * marker by loading and attaching it in a private namespace it then deletes; it fails, naming the check and
 * the fix, for a target interface that does not exist, and when the process has no capabilities.
 */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { freePort, runFlowd } from "../helpers/daemon.ts";

async function netnsNames(): Promise<string[]> {
  const out = await new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).split("\n").map((l) => l.split(" ")[0]!).filter(Boolean);
}

function config(dir: string, interfaces: string[], attachMode: string, port: number): string {
  return `workDir: ${dir}
plugins:
  namedPipe: {pipePath: np}
  api: {bindAddress: 127.0.0.1, bindPort: ${port}}
backends:
  marker: {targetInterfaces: [${interfaces.join(", ")}], attachMode: ${attachMode}}
enrichers:
  skops: {}
`;
}

/** The check lines, by check name: [verdict, rest of the line]. */
function checks(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const m = /^(pass|WARN|FAIL)\s+([^:]+): (.*)$/.exec(line);
    if (m) out.set(m[2]!, `${m[1]} ${m[3]}`);
  }
  return out;
}

privilegedTest(
  "doctor: passes here, proving the marker loads and attaches (TCX and clsact); cleans up",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "flowd-doctor-" });
    try {
      for (const [mode, hook] of [["auto", "a TCX link"], ["tc", "a clsact filter"]] as const) {
        const conf = `${dir}/conf-${mode}.yaml`;
        await Deno.writeTextFile(conf, config(dir, ["lo"], mode, freePort()));
        const before = await netnsNames();
        const r = await runFlowd(["--conf", conf, "doctor"]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        const c = checks(r.stdout);
        for (
          const name of [
            "kernel",
            "capabilities",
            "bpf syscall",
            "libbpf",
            "btf",
            "cgroup v2",
            "interface lo",
          ]
        ) {
          assert.match(c.get(name) ?? "(missing)", /^pass /, `${name}: ${c.get(name)}`);
        }
        assert.match(c.get("marker probe") ?? "", new RegExp(`^pass .*attaches with ${hook}`));
        assert.match(c.get("api port") ?? "", /^pass .* free/);
        assert.match(r.stdout, /^ok: this host can run the configuration/m);
        assert.equal(r.stderr, "", "the probe's attach and detach are not logged at the default level");
        assert.deepEqual(await netnsNames(), before, "the probe's namespace is deleted");
      }

      // A port already taken is a warning (a running daemon holds it), not a failure.
      const port = freePort();
      using listener = Deno.listen({ hostname: "127.0.0.1", port });
      await Deno.writeTextFile(`${dir}/busy.yaml`, config(dir, ["lo"], "auto", port));
      const busy = await runFlowd(["--conf", `${dir}/busy.yaml`, "doctor"]);
      assert.equal(busy.code, 0, busy.stdout);
      assert.match(checks(busy.stdout).get("api port") ?? "", /^WARN .*in use/);
      assert.ok(listener.addr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

privilegedTest("doctor: a missing interface and missing capabilities fail, each with its fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-doctor-" });
  try {
    const conf = `${dir}/conf.yaml`;
    await Deno.writeTextFile(conf, config(dir, ["lo", "flowd-nosuch0"], "auto", freePort()));
    const missing = await runFlowd(["--conf", conf, "doctor"]);
    assert.equal(missing.code, 1, missing.stdout);
    assert.match(
      missing.stdout,
      /^FAIL\s+interface flowd-nosuch0: no such interface\n\s+fix: .*targetInterfaces/m,
    );
    assert.match(missing.stdout, /^not ready: 1 check failed$/m);

    await Deno.writeTextFile(conf, config(dir, ["lo"], "auto", freePort()));
    const before = await netnsNames();
    const noCaps = await runFlowd(["--conf", conf, "doctor"], {
      prefix: ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"],
    });
    assert.equal(noCaps.code, 1, noCaps.stdout);
    const c = checks(noCaps.stdout);
    assert.match(c.get("capabilities") ?? "", /^FAIL missing CAP_BPF, CAP_NET_ADMIN/);
    assert.match(noCaps.stdout, /fix: run as root, or grant CAP_BPF CAP_NET_ADMIN/);
    assert.match(c.get("bpf syscall") ?? "", /^FAIL .*Operation not permitted/);
    assert.match(c.get("marker probe") ?? "", /^FAIL the marker program does not load/);
    assert.deepEqual(await netnsNames(), before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
