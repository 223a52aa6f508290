/** The counter hub between the marker and its readers: sources while they run, final counts kept only for readers. */
import assert from "node:assert/strict";
import { FlowCounterHub, type FlowCounts } from "../../src/core/flow_counters.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";

const flow = (sport: number): FlowEvent => ({
  state: "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: IpAddress.parse("2001:db8::1"), port: sport },
  dst: { address: IpAddress.parse("2001:db8::2"), port: 1094 },
  experimentId: 2,
  activityId: 9,
  application: "test",
});
const counts = (packets: number): FlowCounts => ({
  packets: BigInt(packets),
  bytes: BigInt(packets * 100),
  firstMs: 1,
  lastMs: 2,
});

Deno.test("flow counter hub: reads go to the registered sources until they leave", () => {
  const hub = new FlowCounterHub();
  assert.equal(hub.countsOf(flow(1)), undefined);
  const leave = hub.register({ countsOf: (f) => f.src.port === 1 ? counts(5) : undefined });
  assert.equal(hub.counting, true);
  assert.equal(hub.countsOf(flow(1))?.packets, 5n);
  assert.equal(hub.countsOf(flow(2)), undefined);
  leave();
  assert.equal(hub.countsOf(flow(1)), undefined);
  assert.equal(hub.counting, false);
});

Deno.test("flow counter hub: final counts are kept only while a reader is there, taken once, bounded", () => {
  const hub = new FlowCounterHub();
  hub.retire(flow(1), counts(3), "end");
  assert.equal(hub.takeRetired(flow(1)), undefined, "nobody reads: nothing kept");
  const leave = hub.addReader();
  assert.equal(hub.hasReaders, true);
  hub.retire(flow(1), counts(3), "evicted");
  // A copy of the event (the end, another object) finds it: keyed by the 5-tuple.
  const taken = hub.takeRetired({ ...flow(1), state: "end" });
  assert.deepEqual([taken?.counts.packets, taken?.reason], [3n, "evicted"]);
  assert.equal(hub.takeRetired(flow(1)), undefined, "taken once");
  hub.retire(flow(2), counts(1), "end");
  hub.forgetRetired(flow(2));
  assert.equal(hub.takeRetired(flow(2)), undefined, "a new start of the 5-tuple forgets the old end");
  for (let p = 1; p <= 20_000; p++) hub.retire(flow(p), counts(p), "end");
  assert.equal(hub.takeRetired(flow(1)), undefined, "the oldest are dropped beyond the bound");
  assert.equal(hub.takeRetired(flow(20_000))?.counts.packets, 20_000n);
  leave();
  hub.retire(flow(7), counts(7), "end");
  assert.equal(hub.takeRetired(flow(7)), undefined, "the last reader left: nothing kept");
});
