/**
 * Public-address mapping for real, in network namespaces: namespace A has private addresses and default
 * routes through namespace B, where HTTP and STUN services (and a collector) run. `stun sample` and the
 * daemon run inside A, so default-route detection goes through rtnetlink on A's routes, and queries leave
 * from A's addresses. Nothing leaves the namespaces.
 */
import assert from "node:assert/strict";
import { runFlowd, startDaemon } from "../helpers/daemon.ts";
import { createVethPair, sh, type VethPair } from "../helpers/netns.ts";
import { defaultRouteAddresses } from "../../src/net/public_address.ts";
import { Rtnetlink } from "../../src/net/rtnetlink.ts";
import { hasCommand, privilegedTest } from "../helpers/privileged.ts";

const SERVERS = new URL("../helpers/discovery_servers_main.ts", import.meta.url).pathname;
const PUBLIC4 = "203.0.114.1";
const PUBLIC6 = "2a02:db8:7::1";

interface Line {
  event: string;
  [key: string]: unknown;
}

/** The servers process in a namespace, its JSON lines collected. */
async function startServers(net: VethPair, ns: string, settings: Record<string, unknown>) {
  const child = new Deno.Command(net.prefix(ns)[0]!, {
    args: [
      ...net.prefix(ns).slice(1),
      Deno.execPath(),
      "run",
      "--allow-all",
      "--quiet",
      SERVERS,
      JSON.stringify({ public4: PUBLIC4, public6: PUBLIC6, ...settings }),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: Line[] = [];
  const pump = (async () => {
    let buf = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      const parts = buf.split("\n");
      buf = parts.pop() ?? "";
      for (const p of parts) if (p.trim()) lines.push(JSON.parse(p));
    }
  })();
  const waitFor = async (pred: (l: Line) => boolean, timeoutMs = 10_000): Promise<Line> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const hit = lines.find(pred);
      if (hit) return hit;
      if (Date.now() > until) throw new Error(`servers: timed out; lines: ${JSON.stringify(lines)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const ready = await waitFor((l) => l.event === "ready");
  return {
    lines,
    ready: ready as Line & {
      http: Record<string, number>;
      stun: Record<string, number>;
      collector: number | null;
    },
    waitFor,
    async stop(): Promise<void> {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await pump;
    },
  };
}

async function addDefaultRoutes(net: VethPair, families: ("ipv4" | "ipv6")[]): Promise<void> {
  if (families.includes("ipv4")) await net.exec(net.nsA, ["ip", "route", "add", "default", "via", net.ip4B]);
  if (families.includes("ipv6")) {
    await net.exec(net.nsA, ["ip", "-6", "route", "add", "default", "via", net.ip6B, "dev", net.ifA]);
  }
}

interface SampleAddress {
  interface: string | null;
  address: string;
  outcome: string;
  public: string | null;
  method: string | null;
  via: string | null;
  queries: { method: string; server: string; found: string | null; error: string | null }[];
}

privilegedTest("netns: stun sample maps IPv4 by HTTP and IPv6 by STUN, from A's addresses", async () => {
  if (!hasCommand("ip")) throw new Error("iproute2 (ip) is needed");
  await using net = await createVethPair();
  await addDefaultRoutes(net, ["ipv4", "ipv6"]);
  const servers = await startServers(net, net.nsB, { http: [net.ip4B], stun: [net.ip6B] });
  const dir = await Deno.makeTempDir({ prefix: "flowd-netns-" });
  try {
    const httpUrl = `http://${net.ip4B}:${servers.ready.http[net.ip4B]}/ip`;
    const stunServer = `[${net.ip6B}]:${servers.ready.stun[net.ip6B]}`;
    await Deno.writeTextFile(
      `${dir}/conf.yaml`,
      `backends:\n  firefly:\n    stun:\n      httpServers: ["${httpUrl}"]\n      stunServers: ["${stunServer}"]\n` +
        `      httpTimeout: 2\n      stunTimeout: 2\n`,
    );
    const r = await runFlowd(["--conf", `${dir}/conf.yaml`, "stun", "sample", "--format", "json"], {
      prefix: net.prefix(net.nsA),
    });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(
      out.interfaces.map((
        i: { family: string; name: string; gateway: string },
      ) => [i.family, i.name, i.gateway]),
      [["ipv4", net.ifA, net.ip4B], ["ipv6", net.ifA, net.ip6B]],
    );
    const byAddress = new Map<string, SampleAddress>(out.addresses.map((a: SampleAddress) => [a.address, a]));
    const v4 = byAddress.get(net.ip4A)!;
    assert.deepEqual([v4.outcome, v4.public, v4.method, v4.via], ["mapped", PUBLIC4, "http", httpUrl]);
    const v6 = byAddress.get(net.ip6A)!;
    assert.deepEqual([v6.outcome, v6.public, v6.method, v6.via], ["mapped", PUBLIC6, "stun", stunServer]);
    assert.match(v6.queries[0]!.error ?? "", /is ipv4, the local address ipv6/);
    for (const a of out.addresses as SampleAddress[]) {
      if (a.address.startsWith("fe80:")) assert.deepEqual([a.outcome, a.queries], ["link-local", []]);
    }
    await servers.stop();
    // Each query left from the address it resolved (a STUN request may be retransmitted: same source).
    const seen = servers.lines.filter((l) => l.event === "http" || l.event === "stun").map((l) =>
      `${l.event} ${l.remote}`
    );
    assert.deepEqual(
      [...new Set(seen)],
      [`http ${net.ip4A}`, `stun ${net.ip6A}`],
      JSON.stringify(servers.lines),
    );
  } finally {
    await servers.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

privilegedTest(
  "netns: an IPv6-only namespace still finds its default interface (the original failed)",
  async () => {
    await using net = await createVethPair();
    await addDefaultRoutes(net, ["ipv6"]);
    const servers = await startServers(net, net.nsB, { http: [net.ip6B], stun: [] });
    try {
      const url = `http://[${net.ip6B}]:${servers.ready.http[net.ip6B]}/ip`;
      const r = await runFlowd(["stun", "sample", "--http-server", url, "--format", "json"], {
        prefix: net.prefix(net.nsA),
      });
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.deepEqual(out.interfaces.map((i: { family: string }) => i.family), ["ipv6"]);
      const mapped = out.addresses.filter((a: SampleAddress) => a.outcome === "mapped");
      assert.deepEqual(mapped.map((a: SampleAddress) => [a.address, a.public, a.method]), [[
        net.ip6A,
        PUBLIC6,
        "http",
      ]]);
      assert.ok(
        !out.addresses.some((a: SampleAddress) => a.address === net.ip4A),
        "no IPv4 default route: not listed",
      );
    } finally {
      await servers.stop();
    }
  },
);

privilegedTest("netns: the daemon's fireflies carry A's public addresses, at the peer in B", async () => {
  await using net = await createVethPair();
  await addDefaultRoutes(net, ["ipv4", "ipv6"]);
  const servers = await startServers(net, net.nsB, { http: [net.ip4B, net.ip6B], stun: [], collector: "::" });
  const dir = await Deno.makeTempDir({ prefix: "flowd-netns-" });
  try {
    const urls = [net.ip4B, `[${net.ip6B}]`].map((h, i) =>
      `http://${h}:${servers.ready.http[i === 0 ? net.ip4B : net.ip6B]}/ip`
    );
    await Deno.writeTextFile(
      `${dir}/conf.yaml`,
      `pidPath: ${dir}/pid
workDir: ${dir}
controlSocket: ""
plugins:
  namedPipe: {pipePath: np}
backends:
  firefly:
    destinationPort: ${servers.ready.collector}
    stun:
      httpServers: ${JSON.stringify(urls)}
      stunServers: []
      manualMapping: {"10.213.9.9": "203.0.114.99"}
`,
    );
    await using daemon = await startDaemon(`${dir}/conf.yaml`, [], { prefix: net.prefix(net.nsA) });
    assert.ok(
      daemon.lines.some((l) => /fireflies will carry a public source address.*private=10\.213\.0\.1/.test(l)),
    );
    for (
      const line of [
        `start tcp ${net.ip4A} 40000 ${net.ip4B} 1094 2 3`,
        `start tcp ${net.ip6A} 40001 ${net.ip6B} 1094 2 3`,
        `start udp 10.213.9.9 40002 ${net.ip4B} 1094 2 3`,
      ]
    ) {
      const f = await Deno.open(`${dir}/np`, { write: true });
      await f.write(new TextEncoder().encode(line + "\n"));
      f.close();
    }
    try {
      await servers.waitFor(() => servers.lines.filter((l) => l.event === "datagram").length >= 3);
    } catch (err) {
      throw new Error(`${err}\ndaemon:\n${daemon.lines.join("\n")}`);
    }
    const got = servers.lines.filter((l) => l.event === "datagram").map((l) => {
      const text = String(l.text);
      return JSON.parse(text.slice(text.indexOf("{")))["flow-id"]["src-ip"];
    });
    assert.deepEqual(got.sort(), [PUBLIC4, "203.0.114.99", PUBLIC6].sort());
    assert.equal(await daemon.stop(), 0);
    assert.ok(!daemon.lines.some((l) => /level=(WARN|ERROR)/.test(l)), daemon.lines.join("\n"));
  } finally {
    await servers.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

privilegedTest(
  "netns: mapping takes the preferred default route per family and skips tentative addresses",
  async () => {
    await using net = await createVethPair();
    const inA = (cmd: string[]) => net.exec(net.nsA, cmd);
    // A second interface: a veth pair kept inside A (the dummy driver may be missing).
    await inA(["ip", "link", "add", "side7", "type", "veth", "peer", "name", "side7p"]);
    await inA(["ip", "addr", "add", "10.77.0.1/24", "dev", "side7"]);
    await inA(["ip", "link", "set", "side7p", "up"]);
    await inA(["ip", "link", "set", "side7", "up"]);
    // IPv4: two default routes, side7's has the lower metric. IPv6: only through the veth.
    await inA(["ip", "route", "add", "default", "via", net.ip4B, "metric", "200"]);
    await inA(["ip", "route", "add", "default", "dev", "side7", "metric", "50"]);
    await inA(["ip", "-6", "route", "add", "default", "via", net.ip6B, "dev", net.ifA]);
    // An address still in duplicate-address detection cannot be bound yet: left out.
    await inA(["sysctl", "-qw", `net.ipv6.conf.${net.ifA}.dad_transmits=3`]);
    await inA(["sysctl", "-qw", `net.ipv6.neigh.${net.ifA}.retrans_time_ms=2000`]);
    await inA(["ip", "addr", "add", "fd00:5ec:7a6::77/64", "dev", net.ifA]);
    using rt = Rtnetlink.open({ netns: `/run/netns/${net.nsA}` });
    const { interfaces, addresses } = await defaultRouteAddresses(rt);
    assert.deepEqual(interfaces.map((i) => [i.family, i.name, i.priority]), [["ipv4", "side7", 50], [
      "ipv6",
      net.ifA,
      1024,
    ]]);
    const listed = addresses.map((a) => `${a.interface} ${a.address}`);
    assert.ok(listed.includes("side7 10.77.0.1"), listed.join(", "));
    assert.ok(!listed.includes(`${net.ifA} ${net.ip4A}`), "the veth is not the preferred IPv4 route");
    assert.ok(listed.includes(`${net.ifA} ${net.ip6A}`), listed.join(", "));
    const tentative = (await sh(["ip", "-n", net.nsA, "-6", "addr", "show", "tentative"])).stdout;
    assert.match(tentative, /fd00:5ec:7a6::77/, "the address is still tentative while we look");
    assert.ok(!listed.some((l) => l.includes("fd00:5ec:7a6::77")), listed.join(", "));
  },
);
