/**
 * IPFIX records encoded per second: the exporter's packing of IPv6 flow records into 1452-byte messages
 * (src/backends/ipfix/session.ts: data sets written field by field from the element table, message
 * headers, sequence numbers), beside its ceiling in the same run: copying the same bytes from messages
 * built once (what an encoder that cost nothing beyond moving the bytes would do). Rounds interleaved.
 *
 *   deno run --allow-all bench/ipfix_export.ts [--rounds 5] [--records 200000] [--quick]
 */
import { IPV4_TEMPLATE, IPV6_TEMPLATE } from "../src/backends/ipfix/elements.ts";
import type { DataRecord } from "../src/backends/ipfix/encoder.ts";
import { ExportSession, type PendingRecord } from "../src/backends/ipfix/session.ts";
import { IpAddress } from "../src/net/ip.ts";
import { median, parseFlags, range } from "./lib.ts";

const flags = parseFlags({ rounds: "5", records: "200000", quick: "false" });
const rounds = flags.quick === "true" ? 3 : Number(flags.rounds);
const n = flags.quick === "true" ? 50_000 : Number(flags.records);

const src = IpAddress.parse("2001:db8::1").bytes(), dst = IpAddress.parse("2001:db8::2").bytes();
const records: PendingRecord[] = Array.from({ length: n }, (_, i) => {
  const record: DataRecord = {
    sourceIPv6Address: src,
    destinationIPv6Address: dst,
    sourceTransportPort: 1024 + (i % 60000),
    destinationTransportPort: 1094,
    protocolIdentifier: 6,
    flowLabelIPv6: 0xd0124,
    octetDeltaCount: BigInt(1_000_000 + i),
    packetDeltaCount: BigInt(700 + i),
    flowStartMilliseconds: 1_796_300_000_000 + i,
    flowEndMilliseconds: 1_796_300_060_000 + i,
    flowEndReason: 2,
    egressInterface: 3,
    scitagsExperimentId: 2,
    scitagsActivityId: 9,
  };
  return { template: IPV6_TEMPLATE, record };
});
const session = () =>
  new ExportSession({
    observationDomainId: 1,
    pen: 32473,
    maxMessageSize: 1452,
    templates: [IPV6_TEMPLATE, IPV4_TEMPLATE],
  });
const built = session().pack(records, false, 0).map((m) => m.bytes);
const out = new Uint8Array(1452);

function ours(): number {
  const t0 = performance.now();
  const ms = session().pack(records, false, 1);
  const dt = performance.now() - t0;
  if (ms.reduce((s, m) => s + m.records, 0) !== n) throw new Error("records lost");
  return n / (dt / 1000);
}

function ceiling(): number {
  const t0 = performance.now();
  let sum = 0;
  for (const m of built) {
    const copy = new Uint8Array(m.length);
    copy.set(m);
    out[0] = copy[17]!;
    sum += copy.length;
  }
  const dt = performance.now() - t0;
  if (sum === 0) throw new Error("nothing copied");
  return n / (dt / 1000);
}

ours(); // warm-up
ceiling();
const a: number[] = [], c: number[] = [];
for (let r = 0; r < rounds; r++) {
  a.push(ours());
  c.push(ceiling());
}
const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
console.log(
  `ipfix export, ${n} IPv6 records into ${built.length} messages of ≤ 1452 bytes, ${rounds} rounds, load ${load}`,
);
console.log(
  `  ours (encode + pack):  median ${Math.round(median(a))} records/s (${range(a)}), ${
    (1e6 / median(a)).toFixed(2)
  } µs/record`,
);
console.log(`  ceiling (copy bytes):  median ${Math.round(median(c))} records/s (${range(c)})`);
console.log(`  ratio ${(median(a) / median(c)).toFixed(3)}`);
