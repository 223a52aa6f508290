import assert from "node:assert/strict";
import { type FlowEvent, flowKey } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";

const ev = (srcPort: number, src = "2001:db8::1"): FlowEvent => ({
  state: "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: IpAddress.parse(src), port: srcPort },
  dst: { address: IpAddress.parse("2001:db8::2"), port: 5201 },
  experimentId: 2,
  activityId: 3,
  application: "t",
});

Deno.test("flowKey: equal flows share a key, other endpoints get another, the cache stays hidden", () => {
  const a = ev(1234);
  const k = flowKey(a);
  assert.deepStrictEqual(flowKey(a), k);
  assert.deepStrictEqual(flowKey(ev(1234)), k);
  assert.notStrictEqual(flowKey(ev(1235)), k);
  assert.notStrictEqual(flowKey(ev(1234, "2001:db8::3")), k);
  assert.deepStrictEqual(Object.keys(a).includes("flowKey"), false);
  assert.deepStrictEqual(
    Object.getOwnPropertySymbols({ ...a }).length,
    0,
    "a spread copy does not inherit the key",
  );
  // A copy with another source port must not carry the first one's key.
  assert.notStrictEqual(flowKey({ ...a, src: { ...a.src, port: 9 } }), k);
  assert.deepStrictEqual(flowKey(Object.freeze(ev(1234))), k);
  assert(Object.getOwnPropertyDescriptor(a, Object.getOwnPropertySymbols(a)[0]!)?.enumerable === false);
});

Deno.test("flowKey: keys of many objects stay their own (the descriptor reused between calls)", () => {
  const events = Array.from({ length: 500 }, (_, i) => ev(i));
  const keys = events.map(flowKey);
  assert.deepStrictEqual(new Set(keys).size, 500);
  events.forEach((e, i) => assert.deepStrictEqual(flowKey(e), keys[i]));
  events.forEach((e, i) => assert.deepStrictEqual(flowKey({ ...e }), keys[i]));
});
