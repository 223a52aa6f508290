// rtnetlink and interface discovery against real namespaces; what `ip -j` reports is the reference.
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair, sh } from "../helpers/netns.ts";
import { IFA_F_NODAD, IFA_F_PERMANENT, Rtnetlink } from "../../src/net/rtnetlink.ts";
import { defaultRouteInterfaces, discoverPublicIpv6Interfaces } from "../../src/net/interface_discovery.ts";
import { IpAddress } from "../../src/net/ip.ts";

const nsPath = (ns: string) => `/run/netns/${ns}`;

interface IpLink {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  link_type: string;
}

interface IpAddr {
  ifindex: number;
  addr_info: { family: string; local: string; prefixlen: number; scope: string }[];
}

async function ipJson<T>(ns: string, args: string[]): Promise<T> {
  return JSON.parse((await sh(["ip", "-n", ns, "-j", ...args])).stdout) as T;
}

privilegedTest("links match what ip reports: index, name, flags, mtu, type", async () => {
  await using net = await createVethPair({ mtu: 1400 });
  using rt = Rtnetlink.open({ netns: nsPath(net.nsA) });
  // A new veth's carrier comes up a moment after both ends are up: compare once it has, or the two reads
  // below can see different operstates.
  for (let i = 0; !(await rt.links()).find((l) => l.name === net.ifA)?.running; i++) {
    if (i > 200) throw new Error(`${net.ifA} never got its carrier`);
    await new Promise((r) => setTimeout(r, 10));
  }
  const links = await rt.links();
  const reference = await ipJson<IpLink[]>(net.nsA, ["link", "show"]);
  assert.deepEqual(links.map((l) => l.index).sort(), reference.map((l) => l.ifindex).sort());
  for (const ref of reference) {
    const l = links.find((x) => x.index === ref.ifindex)!;
    assert.equal(l.name, ref.ifname);
    assert.equal(l.mtu, ref.mtu);
    assert.equal(l.up, ref.flags.includes("UP"), `${l.name} up flag`);
    assert.equal(l.loopback, ref.flags.includes("LOOPBACK"), `${l.name} loopback flag`);
    assert.equal(l.type, ref.link_type === "loopback" ? 772 : 1, `${l.name} type`);
  }
  const veth = links.find((l) => l.name === net.ifA)!;
  assert.equal(veth.mtu, 1400);
  assert.equal(veth.kind, "veth");
  assert.deepEqual(await rt.link(veth.index), veth);
  assert.equal(await rt.link(0x7ffffff0), undefined);
});

privilegedTest("addresses of both families match ip, with prefix length, scope and IFA_FLAGS", async () => {
  await using net = await createVethPair();
  using rt = Rtnetlink.open({ netns: nsPath(net.nsA) });
  const reference = await ipJson<IpAddr[]>(net.nsA, ["addr", "show"]);
  const expected = reference.flatMap((i) => i.addr_info.map((a) => `${i.ifindex} ${a.local}/${a.prefixlen}`))
    .sort();
  const all = await rt.addresses();
  assert.deepEqual(all.map((a) => `${a.ifindex} ${a.address}/${a.prefixLength}`).sort(), expected);
  const v6 = await rt.addresses("ipv6");
  assert.ok(v6.length > 0 && v6.every((a) => a.family === "ipv6"));
  assert.ok((await rt.addresses("ipv4")).every((a) => a.family === "ipv4"));
  const ula = all.find((a) => a.address.toString() === net.ip6A)!;
  assert.equal(ula.scope, 0);
  assert.equal(ula.flags & IFA_F_NODAD, IFA_F_NODAD, "added with nodad");
  assert.equal(ula.flags & IFA_F_PERMANENT, IFA_F_PERMANENT);
  const v4 = all.find((a) => a.address.toString() === net.ip4A)!;
  assert.equal(v4.prefixLength, 24);
  assert.equal(v4.label, net.ifA);
  const lo6 = all.find((a) => a.address.toString() === "::1")!;
  assert.equal(lo6.scope, 254, "host scope");
});

privilegedTest(
  "default routes per family: gateway, interface, metric, main table; IPv6-only works",
  async () => {
    await using net = await createVethPair();
    await net.exec(net.nsA, [
      "ip",
      "-6",
      "route",
      "add",
      "default",
      "via",
      net.ip6B,
      "dev",
      net.ifA,
      "metric",
      "100",
    ]);
    await net.exec(net.nsA, [
      "ip",
      "route",
      "add",
      "default",
      "via",
      net.ip4B,
      "dev",
      net.ifA,
      "metric",
      "50",
    ]);
    await net.exec(net.nsB, ["ip", "-6", "route", "add", "default", "via", net.ip6A, "dev", net.ifB]);
    using rtA = Rtnetlink.open({ netns: nsPath(net.nsA) });
    const indexA = (await rtA.links()).find((l) => l.name === net.ifA)!.index;

    const [r6] = await rtA.defaultRoutes("ipv6");
    assert.ok(r6, "IPv6 default route found");
    assert.equal(r6.table, 254);
    assert.equal(r6.priority, 100);
    assert.equal(r6.destination, undefined);
    assert.deepEqual(r6.nexthops.map((h) => [h.ifindex, String(h.gateway)]), [[indexA, net.ip6B]]);
    const [r4] = await rtA.defaultRoutes("ipv4");
    assert.ok(r4, "IPv4 default route found");
    assert.equal(r4.priority, 50);
    assert.deepEqual(r4.nexthops.map((h) => [h.ifindex, String(h.gateway)]), [[indexA, net.ip4B]]);

    const both = await defaultRouteInterfaces({ rtnetlink: rtA });
    assert.deepEqual(both.ipv4.map((i) => [i.name, String(i.gateway)]), [[net.ifA, net.ip4B]]);
    assert.deepEqual(both.ipv6.map((i) => [i.name, String(i.gateway)]), [[net.ifA, net.ip6B]]);

    // Namespace B has no IPv4 default route at all: an empty list, not an error.
    const onlyV6 = await defaultRouteInterfaces({ netns: nsPath(net.nsB) });
    assert.deepEqual(onlyV6.ipv4, []);
    assert.deepEqual(onlyV6.ipv6.map((i) => i.name), [net.ifB]);

    // A route lookup asks the kernel only; nothing is sent.
    using rtB = Rtnetlink.open({ netns: nsPath(net.nsB) });
    const viaDefault = await rtB.routeTo(IpAddress.parse("2a00:1450::99"));
    assert.equal(String(viaDefault?.nexthops[0]?.gateway), net.ip6A);
    assert.equal(await rtB.routeTo(IpAddress.parse("9.9.9.9")), undefined);
  },
);

privilegedTest(
  "discovery picks the up interface with a public IPv6 address, not loopback or down ones",
  async () => {
    await using net = await createVethPair();
    // Public-looking addresses are only configured; nothing is sent to them.
    await net.exec(net.nsA, ["ip", "addr", "add", "2a00:1450::1/64", "dev", net.ifA, "nodad"]);
    await net.exec(net.nsA, ["ip", "addr", "add", "2a00:1450:2::1/128", "dev", "lo"]);
    await net.exec(net.nsA, ["ip", "link", "add", "fgdown0", "type", "veth", "peer", "name", "fgdown1"]);
    await net.exec(net.nsA, ["ip", "addr", "add", "2a00:1450:3::1/64", "dev", "fgdown0", "nodad"]);

    const found = await discoverPublicIpv6Interfaces({ netns: nsPath(net.nsA) });
    assert.deepEqual(found.map((i) => [i.name, i.publicAddresses.map(String)]), [[net.ifA, [
      "2a00:1450::1",
    ]]]);
    // Namespace B only has a ULA and link-local addresses.
    assert.deepEqual(await discoverPublicIpv6Interfaces({ netns: nsPath(net.nsB) }), []);

    await net.exec(net.nsA, ["ip", "link", "set", "fgdown0", "up"]);
    const withSecond = await discoverPublicIpv6Interfaces({ netns: nsPath(net.nsA) });
    assert.deepEqual(withSecond.map((i) => i.name).sort(), [net.ifA, "fgdown0"].sort());

    await net.exec(net.nsA, ["ip", "link", "set", net.ifA, "down"]);
    const afterDown = await discoverPublicIpv6Interfaces({ netns: nsPath(net.nsA) });
    assert.deepEqual(afterDown.map((i) => i.name), ["fgdown0"]);
  },
);

privilegedTest("opening rtnetlink in a namespace that does not exist names the path", () => {
  assert.throws(
    () => Rtnetlink.open({ netns: "/run/netns/fg-no-such-namespace" }),
    /cannot open network namespace \/run\/netns\/fg-no-such-namespace: No such file or directory/,
  );
});
