// The per-flow families' own renderer against prom-client (what rendered them first) for the same flows,
// compared as sets of samples; and the chunked rendering against the whole one, byte for byte.
import assert from "node:assert/strict";
import { Counter, Gauge, Registry } from "prom-client";
import {
  FLOW_FAMILY_NAMES,
  flowLabels,
  FlowSeries,
  LINE_ROOM,
  writeNumber,
} from "../../src/backends/prometheus_flows.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import type { FlowInfo, TcpInfo } from "../../src/core/flow_info.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { tcpInfoFixture } from "../helpers/flow_info_fixture.ts";
import { parseExposition, type PromFamily, promtoolCheck } from "../helpers/prom_text.ts";
import { hasCommand } from "../helpers/privileged.ts";

/** Each family's tcp_info field, written out here independently of the backend's table. */
const FIELDS: Record<string, keyof TcpInfo> = {
  flow_tcp_retrans: "retrans",
  flow_tcp_rto: "rto",
  flow_tcp_ato: "ato",
  flow_tcp_rtt: "rtt",
  flow_tcp_rtt_var: "rttVar",
  flow_tcp_minrtt: "minRtt",
  flow_tcp_pmtu: "pMtu",
  flow_tcp_mss: "sndMss",
  flow_tcp_rcvmss: "rcvMss",
  flow_tcp_advmss: "advMss",
  flow_tcp_cwnd: "sndCwnd",
  flow_tcp_ssthresh: "sndSsThresh",
  flow_tcp_lastsnd: "lastDataSent",
  flow_tcp_lastrcv: "lastDataRecv",
  flow_tcp_lastack: "lastAckRecv",
  flow_tcp_pacing_rate: "pacingRate",
  flow_tcp_delivery_rate: "deliveryRate",
  flow_tcp_delivered: "delivered",
  flow_tcp_busy: "busyTime",
  flow_tcp_rwnd_limited: "rwndLimited",
  flow_tcp_rcv_space: "rcvSpace",
  flow_tcp_rcv_ssthresh: "rcvSsThresh",
  flow_tcp_rcv_snd_wnd: "sndWnd",
  flow_tcp_bytes_sent_total: "bytesSent",
  flow_tcp_bytes_acked_total: "bytesAcked",
  flow_tcp_bytes_received_total: "bytesRecv",
  flow_tcp_segs_out_total: "segsOut",
  flow_tcp_segs_in_total: "segsIn",
  flow_tcp_data_segs_out_total: "dataSegsOut",
  flow_tcp_data_segs_in_total: "dataSegsIn",
};

/** A deterministic generator (mulberry32), so a failure can be rerun. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Case {
  key: string;
  flow: FlowEvent;
  info: FlowInfo;
}

/** Flows of both families, values from 0 to 2^64-1, some without tcp_info or congestion information. */
function cases(n: number, seed: number): Case[] {
  const r = random(seed);
  const value = (big: boolean) => {
    const kind = r();
    if (kind < 0.1) return 0;
    if (kind < 0.15 && big) return 18_446_744_073_709_551_615n;
    if (kind < 0.2 && big) return 9_007_199_254_740_993n;
    return Math.floor(r() * (kind < 0.6 ? 1000 : 4_294_967_295));
  };
  const out: Case[] = [];
  for (let i = 0; i < n; i++) {
    const v4 = i % 3 === 0;
    const flow: FlowEvent = {
      state: "start",
      protocol: "tcp",
      family: v4 ? "ipv4" : "ipv6",
      src: {
        address: IpAddress.parse(v4 ? `10.0.${i >> 8}.${i & 255}` : `2001:db8::${i.toString(16)}`),
        port: 1024 + i,
      },
      dst: { address: IpAddress.parse(v4 ? "192.0.2.7" : "2001:db8:ffff::7"), port: 5000 + (i % 7) },
      experimentId: 1 + (i % 14),
      activityId: i % 64,
      startTime: 1,
      application: "t",
    };
    const over: Record<string, number | bigint> = {};
    for (const field of Object.values(FIELDS)) {
      const current = tcpInfoFixture()[field];
      over[field] = typeof current === "bigint" ? BigInt(value(true)) : Number(value(false));
    }
    const info: FlowInfo = {
      ...(i % 17 === 5 ? {} : { tcpInfo: tcpInfoFixture(over as Partial<TcpInfo>) }),
      ...(i % 13 === 4
        ? {}
        : { cong: { algorithm: i % 29 === 3 ? 'we"ird\\alg\nname' : ["cubic", "bbr", "reno"][i % 3]! } }),
    };
    out.push({ key: `k${i}`, flow, info });
  }
  return out;
}

/** The same flows through prom-client: one labelled gauge or counter per family. */
async function reference(flows: Case[], ours: Map<string, PromFamily>): Promise<string> {
  const registry = new Registry();
  const labelNames = ["act", "exp", "src", "dst", "flow", "flavour"] as const;
  const metrics = new Map<string, Gauge | Counter>();
  for (const name of FLOW_FAMILY_NAMES) {
    const help = ours.get(name)?.help ?? "?";
    const counter = name.endsWith("_total");
    const names = name === "flow_tcp_rcv_ca_info" ? [...labelNames, "alg"] : [...labelNames];
    metrics.set(
      name,
      counter
        ? new Counter({ name, help, labelNames: names, registers: [registry] })
        : new Gauge({ name, help, labelNames: names, registers: [registry] }),
    );
  }
  for (const c of flows) {
    const labels = { ...flowLabels(c.flow, "Netlink") };
    const t = c.info.tcpInfo;
    if (t) {
      for (const [name, field] of Object.entries(FIELDS)) {
        const m = metrics.get(name)!, v = Number(t[field]);
        if (m instanceof Counter) m.inc(labels, v);
        else m.set(labels, v);
      }
    }
    if (c.info.cong) {
      (metrics.get("flow_tcp_rcv_ca_info") as Gauge).set({ ...labels, alg: c.info.cong.algorithm }, 1);
    }
  }
  return await registry.metrics();
}

/** A family's samples as a sorted list of `name{labels} value` keys. */
function sampleSet(f: PromFamily | undefined): string[] {
  return (f?.samples ?? []).map((s) =>
    `${s.name}${JSON.stringify(Object.entries(s.labels).sort(([a], [b]) => a < b ? -1 : 1))} ${s.value}`
  ).sort();
}

Deno.test("prometheus render: the per-flow families hold the same samples as prom-client renders for the same flows", async () => {
  for (const seed of [1, 2, 3]) {
    const flows = cases(300, seed);
    const series = new FlowSeries("Netlink", 10_000);
    // Two rounds of samples: the second (other values) is what must show.
    for (const c of cases(300, seed + 100)) series.update(c.key, c.flow, c.info);
    for (const c of flows) series.update(c.key, c.flow, c.info);
    const text = series.render();
    const ours = parseExposition(text);
    const theirs = parseExposition(await reference(flows, ours));
    assert.deepEqual([...ours.keys()].sort(), [...FLOW_FAMILY_NAMES].sort());
    for (const name of FLOW_FAMILY_NAMES) {
      assert.equal(ours.get(name)?.type, theirs.get(name)?.type, `${name}: TYPE`);
      const a = sampleSet(ours.get(name)), b = sampleSet(theirs.get(name));
      assert.ok(a.length > 250, `${name}: ${a.length} samples`);
      assert.deepEqual(a, b, `${name} (seed ${seed})`);
    }
    if (hasCommand("promtool")) assert.deepEqual(await promtoolCheck(text), [], "promtool");
  }
});

Deno.test("prometheus render: chunks of any size join to the same bytes; a flow ending mid-scrape is still whole", () => {
  const series = new FlowSeries("Netlink", 10_000);
  const flows = cases(120, 7);
  for (const c of flows) series.update(c.key, c.flow, c.info);
  const decoder = new TextDecoder();
  for (const size of [180, 257, 1000, 4096]) {
    const whole = series.render(); // what the scrape starts from
    const out = new Uint8Array(size);
    const cursor = series.cursor();
    let text = "", chunks = 0;
    while (!cursor.done) {
      const end = cursor.fill(out, 0);
      assert.ok(end > 0 || cursor.done, `chunk size ${size}: no progress`);
      text += decoder.decode(out.subarray(0, end));
      chunks++;
      if (chunks === 3) {
        // One flow ends while the scrape runs and another starts: it must not take the ended one's values.
        series.delete(flows[0]!.key);
        const other = cases(1, 99 + size)[0]!;
        series.update(`new${size}`, other.flow, other.info);
      }
    }
    assert.equal(text, whole, `chunk size ${size}`);
    assert.ok(chunks > 1);
    series.delete(`new${size}`);
    series.update(flows[0]!.key, flows[0]!.flow, flows[0]!.info);
  }
  assert.ok(LINE_ROOM >= 2 + 21 + 1, "room for `} `, a value and a newline");
});

Deno.test("prometheus render: numbers are written as String() writes them, at every digit count and edge", () => {
  const out = new Uint8Array(64), decoder = new TextDecoder();
  const values = [
    0,
    1,
    9,
    10,
    11,
    99,
    100,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 53 - 1,
    2 ** 53,
    2 ** 64,
    0.5,
    -1,
    -0,
  ];
  for (let d = 1; d <= 16; d++) values.push(10 ** d - 1, 10 ** d, 10 ** d + 1);
  const r = random(5);
  for (let i = 0; i < 20_000; i++) values.push(Math.floor(r() * 2 ** (1 + (i % 53))));
  for (const v of values) {
    const end = writeNumber(out, 3, v);
    assert.equal(decoder.decode(out.subarray(3, end)), String(v), `value ${v}`);
  }
});
