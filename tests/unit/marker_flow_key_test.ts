import assert from "node:assert/strict";
import {
  decodeFlowKey,
  encodeFlowKey,
  type FlowIdentity,
  FlowKeyError,
} from "../../src/backends/marker/flow_key.ts";
import { IpAddress } from "../../src/net/ip.ts";

const flow = (
  src: string,
  sport: number,
  dst: string,
  dport: number,
  protocol: "tcp" | "udp" = "tcp",
): FlowIdentity => ({
  protocol,
  src: { address: IpAddress.parse(src), port: sport },
  dst: { address: IpAddress.parse(dst), port: dport },
});

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("marker flow key: both addresses, both ports big-endian, protocol, zero padding (40 bytes)", () => {
  const key = encodeFlowKey(flow("2001:db8::2", 40000, "2001:db8:0:1::1", 5201));
  assert.equal(key.length, 40);
  assert.equal(
    hex(key),
    "20010db8000000000000000000000002" + // source (the local end)
      "20010db8000000010000000000000001" + // destination
      "9c40" + "1451" + "06" + "000000", // 40000, 5201, TCP, padding
  );
  assert.equal(encodeFlowKey(flow("::1", 1, "::2", 2, "udp"))[36], 17);
});

Deno.test("marker flow key: flows differing in any one field get different keys", () => {
  const base = hex(encodeFlowKey(flow("2001:db8::2", 40000, "2001:db8::9", 443)));
  for (
    const other of [
      flow("2001:db8::3", 40000, "2001:db8::9", 443), // the original's key left the source address out
      flow("2001:db8::2", 40001, "2001:db8::9", 443),
      flow("2001:db8::2", 40000, "2001:db8::8", 443),
      flow("2001:db8::2", 40000, "2001:db8::9", 444),
      flow("2001:db8::2", 40000, "2001:db8::9", 443, "udp"),
    ]
  ) assert.notEqual(hex(encodeFlowKey(other)), base);
});

Deno.test("marker flow key: decodes back to the same flow", () => {
  const f = flow("fd00::a:1", 65535, "2001:db8::ff", 0, "udp");
  const back = decodeFlowKey(encodeFlowKey(f));
  assert.equal(back.protocol, "udp");
  assert.equal(String(back.src.address), "fd00::a:1");
  assert.equal(back.src.port, 65535);
  assert.equal(String(back.dst.address), "2001:db8::ff");
  assert.equal(back.dst.port, 0);
  assert.throws(() => decodeFlowKey(new Uint8Array(24)), /40 bytes, not 24/);
  const bad = encodeFlowKey(f);
  bad[36] = 1;
  assert.throws(() => decodeFlowKey(bad), /protocol 1/);
});

Deno.test("marker flow key: IPv4 and IPv4-mapped addresses and bad ports are refused, naming the field", () => {
  assert.throws(() => encodeFlowKey(flow("10.0.0.1", 1, "10.0.0.2", 2)), FlowKeyError);
  assert.throws(
    () => encodeFlowKey(flow("::ffff:10.0.0.1", 1, "::1", 2)),
    /source address ::ffff:10\.0\.0\.1 is not IPv6/,
  );
  assert.throws(() => encodeFlowKey(flow("::1", 1, "::ffff:1.2.3.4", 2)), /destination address/);
  assert.throws(() => encodeFlowKey(flow("::1", 70000, "::2", 2)), /source port 70000/);
  assert.throws(() => encodeFlowKey(flow("::1", 1, "::2", -1)), /destination port -1/);
});
