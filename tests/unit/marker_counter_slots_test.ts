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

Deno.test("counter slots: claimed slots (adopted flows) stay owned; the gaps below them are free and reset", () => {
  const slots = new CounterSlots(8);
  slots.claim([5, 1, 3]);
  assert.equal(slots.inUse, 3);
  // Never-used slots first, as always; then the gaps, flagged for zeroing.
  assert.deepEqual([slots.take(), slots.take()], [{ slot: 6, reused: false }, { slot: 7, reused: false }]);
  const taken = [slots.take(), slots.take(), slots.take()];
  assert.deepEqual(taken.map((t) => t!.slot), [0, 2, 4]);
  assert.ok(taken.every((t) => t!.reused), "a gap may hold the earlier run's counts: reset it");
  assert.equal(slots.take(), undefined);
  slots.release(3);
  assert.deepEqual(slots.take(), { slot: 3, reused: true });
  assert.throws(() => new CounterSlots(4).claim([4]), /not below 4/);
  const busy = new CounterSlots(4);
  busy.take();
  assert.throws(() => busy.claim([2]), /before any is taken/);
});
