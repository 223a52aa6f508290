// The marker's counter slots: never-used slots first, freed ones reused oldest-freed first and flagged for zeroing.
import assert from "node:assert/strict";
import { CounterSlots } from "../../src/backends/marker/counter_slots.ts";
import { MarkedFlows } from "../../src/backends/marker/marked_flows.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";

Deno.test("counter slots: fresh slots in order, then freed ones in the order they were freed, each flagged reused", () => {
  const slots = new CounterSlots(3);
  assert.deepEqual([slots.take(), slots.take(), slots.take()], [
    { slot: 0, reused: false },
    { slot: 1, reused: false },
    { slot: 2, reused: false },
  ]);
  assert.equal(slots.take(), undefined, "all three are owned");
  slots.release(2);
  slots.release(0);
  assert.equal(slots.inUse, 1);
  assert.deepEqual(slots.take(), { slot: 2, reused: true });
  slots.release(1);
  assert.deepEqual([slots.take(), slots.take(), slots.take()], [
    { slot: 0, reused: true },
    { slot: 1, reused: true },
    undefined,
  ]);
  assert.throws(() => slots.release(7), /counter slot 7 was never handed out/);
});

const flow = (port: number): FlowEvent => ({
  state: "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: IpAddress.parse("2001:db8::1"), port },
  dst: { address: IpAddress.parse("2001:db8::2"), port: 443 },
  experimentId: 2,
  activityId: 3,
  application: "test",
});

Deno.test("marked flows: a flow keeps its slot when started again; an evicted flow's slot goes to the newcomer, zeroed", () => {
  const marked = new MarkedFlows(2, "evictOldest");
  assert.deepEqual(marked.admit(flow(1)), { kind: "new", counterSlot: 0, resetCounters: false });
  assert.deepEqual(marked.admit(flow(2)), { kind: "new", counterSlot: 1, resetCounters: false });
  assert.deepEqual(marked.admit(flow(1)), { kind: "again", counterSlot: 0 });
  // flow 2 is now the oldest start.
  const evict = marked.admit(flow(3));
  assert.equal(evict.kind, "evict");
  assert.ok(evict.kind === "evict");
  assert.equal(evict.victim.src.port, 2);
  assert.deepEqual([evict.counterSlot, evict.resetCounters], [1, true]);
  assert.equal(marked.forget(flow(1)), 0);
  assert.equal(marked.forget(flow(1)), undefined, "forgotten once");
  assert.deepEqual(marked.admit(flow(4)), { kind: "new", counterSlot: 0, resetCounters: true });
  assert.deepEqual([...marked.values()].map((m) => [m.event.src.port, m.counterSlot]), [[3, 1], [4, 0]]);
});
