/**
 * The packaging files agree with each other and with the code: versions, paths, the shipped configuration.
 * (tests/e2e/package_test.ts builds and runs the package itself.)
 */
import assert from "node:assert/strict";
import { loadConfigFile } from "../../src/config/load.ts";
import { DEFAULT_LEDGER_PATH } from "../../src/backends/marker/qdisc_ledger.ts";
import { parseUnit, serviceValue } from "../helpers/unit_sandbox.ts";

const read = (path: string) => Deno.readTextFileSync(new URL(`../../${path}`, import.meta.url));
const spec = read("rpm/flowd-go.spec");
const unit = parseUnit(read("systemd/flowd-go.service"));

Deno.test("packaging: the spec's version is deno.json's, its Deno is the pinned one", () => {
  const version = JSON.parse(read("deno.json")).version as string;
  assert.equal(/^Version:\s+(\S+)$/m.exec(spec)?.[1], version.replaceAll("-", "~"));
  const pinned = /^DENO_VERSION="(.+)"$/m.exec(read("scripts/setup.sh"))?.[1];
  assert.ok(pinned);
  assert.equal(/^%global deno_version (\S+)$/m.exec(spec)?.[1], pinned);
});

Deno.test("packaging: the shipped conf.yaml parses and keeps the service's files where it may write", async () => {
  const { config } = await loadConfigFile(new URL("../../rpm/conf.yaml", import.meta.url).pathname);
  const runtimeDir = `/run/${serviceValue(unit, "RuntimeDirectory")}`;
  const cacheDir = `/var/cache/${serviceValue(unit, "CacheDirectory")}`;
  assert.ok(config.pidPath.startsWith(`${runtimeDir}/`), config.pidPath);
  assert.ok(config.plugins.namedPipe?.pipePath.startsWith(`${runtimeDir}/`), "pipePath");
  assert.equal(config.workDir, cacheDir);
  assert.ok(DEFAULT_LEDGER_PATH.startsWith(`${runtimeDir}/`), "the marker's ledger");
  // A sensible daemon: sources and a backend enabled, the API on loopback only.
  assert.equal(config.plugins.api?.bindAddress, "127.0.0.1");
  assert.ok(config.backends.firefly);
});

Deno.test("packaging: the unit runs the installed paths, and the spec installs them", () => {
  const exec = serviceValue(unit, "ExecStart")!.split(/\s+/);
  assert.deepEqual(exec, ["/usr/bin/flowd-go", "--conf", "/etc/flowd-go/conf.yaml", "run"]);
  assert.equal(serviceValue(unit, "ExecStopPost"), "!/usr/bin/flowd-go marker clean");
  assert.match(spec, /%config\(noreplace\) %\{_sysconfdir\}\/flowd-go\/conf\.yaml/);
  assert.match(spec, /^Requires:\s+libbpf\.so\.1\(\)\(64bit\)$/m);
  for (const post of ["%systemd_post", "%systemd_preun", "%systemd_postun_with_restart"]) {
    assert.match(spec, new RegExp(`^${post} flowd-go\\.service$`, "m"));
  }
});
