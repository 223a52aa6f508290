// The private-range list and the pure selection rules of interface discovery.
import assert from "node:assert/strict";
import { IpAddress } from "../../src/net/ip.ts";
import {
  isLinkLocal,
  isPrivateAddress,
  parsePrefix,
  prefixContains,
  PRIVATE_PREFIXES,
} from "../../src/net/private_ranges.ts";
import {
  selectDefaultRouteInterfaces,
  selectPublicIpv6Interfaces,
} from "../../src/net/interface_discovery.ts";
import type { InterfaceAddress, Link, Route } from "../../src/net/rtnetlink.ts";

const ip = (s: string) => IpAddress.parse(s);

Deno.test("the private list has the original's 26 IPv4 and 24 IPv6 prefixes", () => {
  assert.equal(PRIVATE_PREFIXES.filter((p) => p.address.family === "ipv4").length, 26);
  assert.equal(PRIVATE_PREFIXES.filter((p) => p.address.family === "ipv6").length, 24);
});

Deno.test("private and public addresses are told apart", () => {
  for (
    const s of [
      "10.1.2.3",
      "172.31.255.255",
      "192.168.0.1",
      "100.64.0.1",
      "127.0.0.1",
      "169.254.1.1",
      "192.0.2.10",
      "224.0.0.251",
      "255.255.255.255",
      "::",
      "::1",
      "fe80::1",
      "fd00::2",
      "2001:db8::1",
      "2002:c000:201::1",
      "3fff::1",
      "ff02::1",
      "64:ff9b::1.2.3.4",
    ]
  ) assert.ok(isPrivateAddress(ip(s)), `${s} should be private`);
  for (const s of ["8.8.8.8", "193.0.14.129", "2a00:1450::1", "2620:fe::fe", "2001:200::1", "172.32.0.1"]) {
    assert.ok(!isPrivateAddress(ip(s)), `${s} should be public`);
  }
});

Deno.test("containment is family-strict: an IPv4-mapped address is not inside an IPv4 prefix", () => {
  assert.ok(!prefixContains(parsePrefix("10.0.0.0/8"), ip("::ffff:10.0.0.1")));
  assert.ok(
    !isPrivateAddress(ip("::ffff:10.0.0.1")),
    "the IPv4-mapped range is left out, as in the original",
  );
  assert.ok(!prefixContains(parsePrefix("::/128"), ip("0.0.0.0")));
});

Deno.test("prefix containment respects partial bytes", () => {
  const p = parsePrefix("fe80::/10");
  assert.ok(prefixContains(p, ip("febf:ffff::1")));
  assert.ok(!prefixContains(p, ip("fec0::1")));
  assert.ok(prefixContains(parsePrefix("0.0.0.0/0"), ip("203.0.113.9")));
  assert.ok(isLinkLocal(ip("fe80::1")) && !isLinkLocal(ip("fd00::1")) && !isLinkLocal(ip("169.254.0.1")));
});

Deno.test("parsePrefix names malformed text", () => {
  assert.throws(() => parsePrefix("10.0.0.0/33"), /"10.0.0.0\/33" has a prefix length above 32/);
  assert.throws(() => parsePrefix("fe80::/1x"), /not a decimal number/);
  assert.throws(() => parsePrefix("example/8"), /is not an address prefix/);
  assert.equal(parsePrefix("2001:db8::1").length, 128);
});

function link(index: number, name: string, opts: { up?: boolean; loopback?: boolean } = {}): Link {
  const up = opts.up ?? true;
  return {
    index,
    name,
    flags: (up ? 1 : 0) | (opts.loopback ? 8 : 0),
    up,
    running: up,
    loopback: opts.loopback ?? false,
    type: opts.loopback ? 772 : 1,
    mtu: 1500,
    operState: undefined,
    kind: undefined,
    hardwareAddress: undefined,
  };
}

function addr(ifindex: number, text: string, flags = 0x80): InterfaceAddress {
  const address = ip(text);
  return {
    ifindex,
    family: address.family,
    address,
    peer: undefined,
    prefixLength: 64,
    scope: 0,
    flags,
    label: undefined,
  };
}

Deno.test("public-IPv6 selection skips down interfaces, loopback, private-only and failed addresses", () => {
  const links = [
    link(1, "lo", { loopback: true }),
    link(2, "eth0"),
    link(3, "eth1", { up: false }),
    link(4, "eth2"),
    link(5, "eth3"),
    link(6, "eth4"),
  ];
  const addresses = [
    addr(1, "2a00:1450:1::1"), // loopback: never a target
    addr(2, "fe80::1"),
    addr(2, "2a00:1450::1"),
    addr(2, "2a00:1450::2"),
    addr(3, "2a00:1450:2::1"), // down
    addr(4, "fd00::1"), // ULA only
    addr(4, "8.8.8.8"), // a public IPv4 does not count
    addr(5, "2a00:1450:3::1", 0x08), // duplicate address detection failed
    addr(6, "2001:db8::7"), // documentation range
  ];
  const got = selectPublicIpv6Interfaces(links, addresses);
  assert.deepEqual(got.map((i) => [i.index, i.name, i.publicAddresses.map(String)]), [
    [2, "eth0", ["2a00:1450::1", "2a00:1450::2"]],
  ]);
});

function route(
  priority: number,
  hops: [number, string | undefined][],
  family: "ipv4" | "ipv6" = "ipv6",
): Route {
  return {
    family,
    table: 254,
    protocol: 4,
    scope: 0,
    type: 1,
    flags: 0,
    destination: undefined,
    destinationLength: 0,
    priority,
    preferredSource: undefined,
    nexthops: hops.map(([ifindex, gw]) => ({
      ifindex,
      gateway: gw === undefined ? undefined : ip(gw),
      weight: 1,
      flags: 0,
    })),
  };
}

Deno.test("default-route interfaces keep route order, list each interface once and skip down links", () => {
  const links = [link(2, "eth0"), link(3, "eth1"), link(4, "eth2", { up: false })];
  const routes = [
    route(100, [[3, "fe80::1"]]),
    route(200, [[2, "fe80::2"], [3, "fe80::3"], [4, "fe80::4"]]), // multipath
    route(300, [[9, undefined]]), // unknown interface
  ];
  const got = selectDefaultRouteInterfaces(routes, links);
  assert.deepEqual(got.map((r) => [r.name, String(r.gateway), r.priority]), [
    ["eth1", "fe80::1", 100],
    ["eth0", "fe80::2", 200],
  ]);
});
