/**
 * flowd_marked_packets_total / flowd_marked_bytes_total: the kernel's per-flow counters summed per
 * (experiment, activity), run on frames built here (BPF_PROG_TEST_RUN). They only grow: a flow that ends
 * or is evicted keeps its counts in the totals although its counter slot is reused.
 */
import assert from "node:assert/strict";
import { progTestRun } from "../../ffi/libbpf.ts";
import { MarkerBackend } from "../../src/backends/marker/backend.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { privilegedTest } from "../helpers/privileged.ts";
import { ipv6Frame } from "../helpers/ipv6_frames.ts";

const LOCAL = "2001:db8:1::10";
const PEER = "2001:db8:2::20";

function flow(state: FlowEvent["state"], sport: number, experimentId: number, activityId: number): FlowEvent {
  return {
    state,
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse(LOCAL), port: sport },
    dst: { address: IpAddress.parse(PEER), port: 443 },
    experimentId,
    activityId,
    application: "test",
  };
}

function totals(b: MarkerBackend): Record<string, [number, number]> {
  const out: Record<string, [number, number]> = {};
  for (const m of b.health()) {
    if (m.name !== "flowd_marked_packets_total" && m.name !== "flowd_marked_bytes_total") continue;
    const k = `${m.labels!.exp}/${m.labels!.act}`;
    out[k] ??= [0, 0];
    out[k][m.name === "flowd_marked_packets_total" ? 0 : 1] = m.value;
  }
  return out;
}

privilegedTest(
  "marker totals: packets and bytes per (experiment, activity) that survive ends and evictions",
  async () => {
    const dir = await Deno.makeTempDir();
    const b = new MarkerBackend({
      config: {
        targetInterfaces: [],
        discoverInterfaces: false,
        removeQdisc: true,
        programPath: "",
        markingStrategy: "label",
        debugMode: false,
        matchAll: false,
        attachMode: "auto",
        maxFlows: 2,
        whenFull: "evictOldest",
      },
      ledgerPath: `${dir}/q.json`,
      checkIntervalMs: 0,
    });
    await b.start();
    try {
      const fd = b.program!.programFd("ethernet");
      const send = (sport: number, times: number, payloadLength = 100) => {
        const frame = ipv6Frame({ src: LOCAL, dst: PEER, protocol: "tcp", sport, dport: 443, payloadLength });
        for (let i = 0; i < times; i++) progTestRun(fd, { data: frame });
        return times * frame.length; // the label strategy does not change a packet's length
      };
      assert.deepEqual(totals(b), {}, "nothing marked yet");
      await b.handle(flow("start", 40001, 2, 9));
      await b.handle(flow("start", 40002, 3, 14));
      const a1 = send(40001, 5), c1 = send(40002, 2, 300);
      send(40099, 4); // no such flow: not counted
      assert.deepEqual(totals(b), { "2/9": [5, a1], "3/14": [2, c1] });

      // The end carries other ids: the counts stay with the ids the packets were marked with.
      await b.handle(flow("end", 40001, 7, 7));
      assert.deepEqual(totals(b), { "2/9": [5, a1], "3/14": [2, c1] }, "an ended flow's counts are kept");

      // 40003 takes the freed slot; it starts from zero, the totals go on.
      await b.handle(flow("start", 40003, 2, 9));
      const a3 = send(40003, 3);
      assert.deepEqual(totals(b), { "2/9": [8, a1 + a3], "3/14": [2, c1] });

      // The map holds two: 40004 evicts the oldest (40002), whose counts stay in 3/14.
      await b.handle(flow("start", 40004, 3, 14));
      assert.equal(b.stats.evicted, 1);
      const c4 = send(40004, 1, 50);
      send(40002, 10); // evicted: no longer marked, no longer counted
      assert.deepEqual(totals(b), { "2/9": [8, a1 + a3], "3/14": [3, c1 + c4] });
    } finally {
      await b.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
