import assert from "node:assert/strict";
import { formatEndpoint, IpAddress, joinHostPort, parseEndpoint } from "../../src/net/ip.ts";

Deno.test("ip: canonical text (RFC 5952) of valid literals", () => {
  const cases: [string, string, "ipv4" | "ipv6"][] = [
    ["1.2.3.4", "1.2.3.4", "ipv4"],
    ["0.0.0.0", "0.0.0.0", "ipv4"],
    ["::", "::", "ipv6"],
    ["::1", "::1", "ipv6"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1", "ipv6"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", "ipv6"], // first of two equal runs
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1", "ipv6"], // longest run wins
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1", "ipv6"], // a single zero group is not compressed
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0", "ipv6"],
    ["::ffff:10.0.0.1", "::ffff:10.0.0.1", "ipv6"],
    ["::ffff:a00:1", "::ffff:10.0.0.1", "ipv6"],
    ["1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304", "ipv6"],
    ["fe80::1%eth0", "fe80::1%eth0", "ipv6"],
    ["0001:0002::00ff", "1:2::ff", "ipv6"],
  ];
  for (const [text, canonical, family] of cases) {
    const ip = IpAddress.parse(text);
    assert.equal(ip.toString(), canonical, text);
    assert.equal(ip.family, family, text);
    assert.equal(IpAddress.parse(canonical).toString(), canonical, "canonical text parses back to itself");
  }
});

Deno.test("ip: invalid literals are refused", () => {
  for (
    const text of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "01.2.3.4",
      "1.2.3.-4",
      " 1.2.3.4",
      ":::",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7:8::",
      "12345::",
      "g::1",
      "::1%",
      "::1%bad zone",
      "1.2.3.4%eth0",
      "[::1]",
      "localhost",
    ]
  ) {
    assert.equal(IpAddress.tryParse(text), undefined, JSON.stringify(text));
    assert.throws(() => IpAddress.parse(text), SyntaxError);
  }
});

Deno.test("ip: bytes round trip and predicates", () => {
  const ip = IpAddress.parse("2001:db8::1");
  assert.deepEqual([...ip.bytes()], [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1]);
  assert.equal(IpAddress.fromBytes(ip.bytes()).toString(), "2001:db8::1");
  assert.ok(IpAddress.parse("::1").isLoopback());
  assert.ok(IpAddress.parse("127.8.9.10").isLoopback());
  assert.ok(!IpAddress.parse("::2").isLoopback());
  assert.ok(IpAddress.parse("::").isUnspecified());
  assert.ok(IpAddress.parse("::ffff:1.2.3.4").isIpv4Mapped());
  assert.throws(() => IpAddress.fromBytes(new Uint8Array(5)), RangeError);
  const copy = ip.bytes();
  copy[0] = 0;
  assert.equal(ip.toString(), "2001:db8::1", "bytes() is a copy");
});

Deno.test("ip: endpoints with brackets for IPv6 only", () => {
  assert.equal(formatEndpoint(parseEndpoint("[::1]:7777")), "[::1]:7777");
  assert.equal(formatEndpoint(parseEndpoint("127.0.0.1:80")), "127.0.0.1:80");
  for (const bad of ["::1:80", "[1.2.3.4]:80", "1.2.3.4", "[::1]", "[::1]:70000", "host:80"]) {
    assert.throws(() => parseEndpoint(bad), Error, bad);
  }
  assert.equal(joinHostPort("::1", 53), "[::1]:53");
  assert.equal(joinHostPort("example.org", 53), "example.org:53");
});
