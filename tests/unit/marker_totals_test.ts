import assert from "node:assert/strict";
import { MarkedTotals, MAX_TOTAL_PAIRS } from "../../src/backends/marker/marked_totals.ts";

const c = (packets: number, bytes: number) => ({
  packets: BigInt(packets),
  bytes: BigInt(bytes),
  firstJiffies: undefined,
  lastJiffies: undefined,
});

Deno.test("marked totals: retired counts plus the open flows', per pair; bounded with an overflow pair", () => {
  const t = new MarkedTotals();
  t.retire({ experimentId: 2, activityId: 9 }, c(5, 500));
  t.retire({ experimentId: 2, activityId: 9 }, c(1, 100));
  t.retire({ experimentId: 3, activityId: 1 }, undefined);
  t.retire({ experimentId: 3, activityId: 1 }, c(0, 0));
  const open = [{ ids: { experimentId: 2, activityId: 9 }, counters: c(2, 20) }, {
    ids: { experimentId: 4, activityId: 4 },
    counters: c(1, 1),
  }];
  assert.deepEqual(t.withOpen(open), [
    { exp: "2", act: "9", packets: 8n, bytes: 620n },
    { exp: "4", act: "4", packets: 1n, bytes: 1n },
  ]);
  assert.deepEqual(
    t.withOpen([]),
    [{ exp: "2", act: "9", packets: 6n, bytes: 600n }],
    "open counts are not kept",
  );
  for (let i = 0; i < MAX_TOTAL_PAIRS + 10; i++) t.retire({ experimentId: 100, activityId: i }, c(1, 1));
  const all = t.withOpen([]);
  assert.equal(all.length, MAX_TOTAL_PAIRS + 1);
  const other = all.find((x) => x.exp === "other")!;
  assert.deepEqual([other.act, other.packets], ["other", 11n]);
});
