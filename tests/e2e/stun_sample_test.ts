/**
 * `flowd-go stun sample` as a command: usage errors, help, and the mapping it prints on this host with no
 * network query at all (empty server lists), checked against what iproute2 reports. Discovery with real
 * servers runs in network namespaces (tests/privileged/public_address_netns_test.ts).
 */
import assert from "node:assert/strict";
import { runFlowd } from "../helpers/daemon.ts";
import { hasCommand } from "../helpers/privileged.ts";
import { sh } from "../helpers/netns.ts";

Deno.test("stun sample: usage errors exit 2 and name the problem", async () => {
  const cases: [string[], RegExp][] = [
    [["stun"], /"stun" needs a subcommand \(stun sample\)/],
    [["stun", "probe"], /"stun" has no subcommand "probe"/],
    [["stun", "sample", "--stun-server", "stun.example.org"], /invalid --stun-server "stun\.example\.org"/],
    [["stun", "sample", "--http-server", "ftp://x"], /invalid --http-server "ftp:\/\/x"/],
    [["stun", "sample", "--format", "yaml"], /invalid --format "yaml" \(use text or json\)/],
    [["conf", "--stun-server", "127.0.0.1:3478"], /only apply to "stun sample"/],
    [["stun", "sample", "extra"], /unexpected argument "extra"/],
  ];
  for (const [args, re] of cases) {
    const r = await runFlowd(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }
});

Deno.test("stun sample: help lists it and explains it", async () => {
  const main = await runFlowd(["help"]);
  assert.match(main.stdout, /\n {2}stun sample {2}show the private-to-public address mapping/);
  for (const args of [["help", "stun", "sample"], ["stun", "sample", "--help"], ["help", "stun"]]) {
    const r = await runFlowd(args);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: flowd-go \[flags\] stun sample \[--stun-server HOST:PORT\]/);
  }
});

/** Default-route interfaces and their addresses per family, as iproute2 sees them. */
async function iproute(): Promise<{ ifaces: Set<string>; addresses: Set<string> }> {
  const ifaces = new Set<string>(), addresses = new Set<string>();
  for (const family of ["-4", "-6"]) {
    const routes = JSON.parse((await sh(["ip", "-j", family, "route", "show", "default"])).stdout || "[]");
    const metrics = routes.map((r: { metric?: number }) => r.metric ?? 0);
    const best = Math.min(...metrics);
    for (const r of routes as { dev?: string; metric?: number }[]) {
      if ((r.metric ?? 0) !== best || !r.dev) continue;
      ifaces.add(`${r.dev}/${family === "-4" ? "ipv4" : "ipv6"}`);
      const info = JSON.parse((await sh(["ip", "-j", family, "addr", "show", "dev", r.dev])).stdout);
      for (const a of info[0]?.addr_info ?? []) {
        if (!a.tentative && !a.dadfailed) addresses.add(a.local);
      }
    }
  }
  return { ifaces, addresses };
}

Deno.test("stun sample: with no servers it lists this host's default-route addresses, queries nothing", async () => {
  if (!hasCommand("ip")) throw new Error("iproute2 (ip) is needed for this test");
  const dir = await Deno.makeTempDir({ prefix: "flowd-stun-sample-" });
  try {
    await Deno.writeTextFile(
      `${dir}/conf.yaml`,
      "backends:\n  firefly:\n    stun:\n      httpServers: []\n      stunServers: []\n" +
        '      manualMapping: {10.9.9.9: 203.0.114.1, "fd00:99::1": "2a02:db8::1"}\n',
    );
    const json = await runFlowd(["--conf", `${dir}/conf.yaml`, "stun", "sample", "--format", "json"]);
    assert.equal(json.code, 0, json.stderr);
    const out = JSON.parse(json.stdout);
    const expected = await iproute();
    assert.deepEqual(
      new Set(out.interfaces.map((i: { name: string; family: string }) => `${i.name}/${i.family}`)),
      expected.ifaces,
    );
    const onInterfaces = out.addresses.filter((a: { interface: string | null }) => a.interface !== null);
    assert.deepEqual(new Set(onInterfaces.map((a: { address: string }) => a.address)), expected.addresses);
    for (const a of onInterfaces) {
      assert.ok(["public", "link-local", "unmapped"].includes(a.outcome), JSON.stringify(a));
      assert.deepEqual(a.queries, [], "no server configured, so no query");
    }
    const manual = out.addresses.filter((a: { method: string | null }) => a.method === "manual");
    assert.deepEqual(
      manual.map((a: { address: string; public: string; via: string }) => [a.address, a.public, a.via]),
      [["10.9.9.9", "203.0.114.1", "manualMapping"], ["fd00:99::1", "2a02:db8::1", "manualMapping"]],
    );

    const text = await runFlowd(["--conf", `${dir}/conf.yaml`, "stun", "sample"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^default-route interfaces: /);
    assert.match(text.stdout, /\n10\.9\.9\.9 -> 203\.0\.114\.1 {2}by manual\n/);
    assert.equal(text.stderr, "", "nothing to warn about");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stun sample: an invalid configuration is one error line and exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-stun-sample-" });
  try {
    await Deno.writeTextFile(`${dir}/conf.yaml`, "backends:\n  firefly:\n    stun:\n      stunTimeout: -1\n");
    const r = await runFlowd(["--conf", `${dir}/conf.yaml`, "stun", "sample"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^level=ERROR logger=cli msg=".*conf\.yaml:4: backends\.firefly\.stun\.stunTimeout: /,
    );
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.equal(r.stdout, "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
