/**
 * The IPFIX encoder against vectors written by hand from RFC 7011 (message header §3.1, set header
 * §3.3.2, template record §3.4.1, enterprise bit and PEN §3.2, padding §3.3.1) and the RFC 7012 / IANA
 * element ids and lengths; then message sizing and sequence numbers over several messages (§3.1: data
 * records sent before this message in the session, template records not counted).
 */
import assert from "node:assert/strict";
import { IPV4_TEMPLATE, IPV6_TEMPLATE } from "../../src/backends/ipfix/elements.ts";
import {
  type DataRecord,
  encodeDataSet,
  encodeMessage,
  encodeTemplateSet,
} from "../../src/backends/ipfix/encoder.ts";
import { ExportSession } from "../../src/backends/ipfix/session.ts";
import { IpAddress } from "../../src/net/ip.ts";

const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+|\|/g, "").match(/../g)!.map((b) => parseInt(b, 16)));
const toHex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

const PEN = "00007ed9"; // 32473, RFC 5612's documentation number
const TEMPLATE_SET = hex(`
  0002 0088
  0100 000e  001b 0010  001c 0010  0007 0002  000b 0002  0004 0001  001f 0004
             0001 0008  0002 0008  0098 0008  0099 0008  0088 0001  000e 0004
             8001 0004 ${PEN}  8002 0004 ${PEN}
  0101 000d  0008 0004  000c 0004  0007 0002  000b 0002  0004 0001
             0001 0008  0002 0008  0098 0008  0099 0008  0088 0001  000e 0004
             8001 0004 ${PEN}  8002 0004 ${PEN}
`);

function v6Record(n: number): DataRecord {
  return {
    sourceIPv6Address: IpAddress.parse("2001:db8::1").bytes(),
    destinationIPv6Address: IpAddress.parse("2001:db8::2").bytes(),
    sourceTransportPort: 40000 + n,
    destinationTransportPort: 1094,
    protocolIdentifier: 6,
    flowLabelIPv6: 0xd0124,
    octetDeltaCount: 13_142_382n,
    packetDeltaCount: 9204n,
    flowStartMilliseconds: 1_796_300_000_123,
    flowEndMilliseconds: 1_796_300_060_456,
    flowEndReason: 3,
    egressInterface: 7,
    scitagsExperimentId: 2,
    scitagsActivityId: 9,
  };
}

Deno.test("ipfix encoder: template set of the IPv6 and IPv4 templates, enterprise elements with the PEN", () => {
  assert.equal(toHex(encodeTemplateSet([IPV6_TEMPLATE, IPV4_TEMPLATE], 32473)), toHex(TEMPLATE_SET));
});

Deno.test("ipfix encoder: an IPv6 data record, network byte order, padded to 4 bytes", () => {
  const expected = hex(`
    0100 005c
    20010db8000000000000000000000001 20010db8000000000000000000000002
    9c41 0446 06 000d0124
    0000000000c8896e 00000000000023f4
    000001a23bd2cb7b 000001a23bd3b728
    03 00000007 00000002 00000009
    0000
  `);
  assert.equal(toHex(encodeDataSet(IPV6_TEMPLATE, [v6Record(1)])), toHex(expected));
});

Deno.test("ipfix encoder: an IPv4 data record (no flow label)", () => {
  const r: DataRecord = {
    sourceIPv4Address: hex("c0000201"),
    destinationIPv4Address: hex("c6336402"),
    sourceTransportPort: 5001,
    destinationTransportPort: 53,
    protocolIdentifier: 17,
    octetDeltaCount: 1n,
    packetDeltaCount: 2n,
    flowStartMilliseconds: 3,
    flowEndMilliseconds: 4,
    flowEndReason: 4,
    egressInterface: 0xffff_fffe,
    scitagsExperimentId: 0xffff_ffff,
    scitagsActivityId: 0,
  };
  const expected = hex(`
    0101 0040
    c0000201 c6336402 1389 0035 11
    0000000000000001 0000000000000002 0000000000000003 0000000000000004
    04 fffffffe ffffffff 00000000
    0000
  `);
  assert.equal(toHex(encodeDataSet(IPV4_TEMPLATE, [r])), toHex(expected));
});

Deno.test("ipfix encoder: message header (version 10, length, export time, sequence, domain)", () => {
  const set = hex("0002 0004");
  const m = encodeMessage({ exportTime: 1_796_300_060, sequence: 0xffff_ffff, observationDomainId: 77 }, [
    set,
  ]);
  assert.equal(toHex(m), toHex(hex("000a 0014 6b115d1c ffffffff 0000004d  0002 0004")));
});

Deno.test("ipfix encoder: records a missing field is refused, not written as zero", () => {
  const { flowLabelIPv6: _, ...partial } = v6Record(1);
  assert.throws(() => encodeDataSet(IPV6_TEMPLATE, [partial]), /lacks flowLabelIPv6/);
});

Deno.test("ipfix session: messages fit the size, templates first, sequence counts data records only", () => {
  // 1500-byte path MTU over IPv6: 1452 bytes of IPFIX message.
  const s = new ExportSession({
    observationDomainId: 5,
    pen: 32473,
    maxMessageSize: 1452,
    templates: [IPV6_TEMPLATE, IPV4_TEMPLATE],
  });
  const only = s.pack([], true, 100);
  assert.equal(only.length, 1);
  assert.equal(
    toHex(only[0]!.bytes),
    toHex(new Uint8Array([...hex("000a 0098 00000064 00000000 00000005"), ...TEMPLATE_SET])),
  );
  assert.equal(s.sequence, 0, "template records do not count");

  const records = Array.from({ length: 40 }, (_, i) => ({ template: IPV6_TEMPLATE, record: v6Record(i) }));
  const ms = s.pack(records, true, 200);
  // 16 + 136 (templates) + 4 + 15 × 86 = 1446, padded 1448; then 16 + 4 + 16 × 86 = 1396; then 9 (16 + 4 + 774 → 796).
  assert.deepEqual(ms.map((m) => [m.bytes.length, m.records]), [[1448, 15], [1396, 16], [796, 9]]);
  const seq = ms.map((m) => new DataView(m.bytes.buffer).getUint32(8));
  assert.deepEqual(seq, [0, 15, 31]);
  for (const m of ms) {
    const v = new DataView(m.bytes.buffer);
    assert.equal(v.getUint16(2), m.bytes.length, "header length is the message length");
    assert.ok(m.bytes.length <= 1452);
    // The sets add up to the message.
    let o = 16;
    while (o < m.bytes.length) o += v.getUint16(o + 2);
    assert.equal(o, m.bytes.length);
  }
  assert.equal(
    toHex(ms[1]!.bytes.subarray(16, 16 + 4)),
    "01000564",
    "data set of 16 records: 4 + 1376 bytes",
  );
  assert.equal(s.sequence, 40);
  s.reset();
  assert.equal(s.sequence, 0);
});

Deno.test("ipfix session: IPv4 and IPv6 records in one message get a data set each", () => {
  const s = new ExportSession({
    observationDomainId: 1,
    pen: 1,
    maxMessageSize: 1472,
    templates: [IPV6_TEMPLATE, IPV4_TEMPLATE],
  });
  const v4: DataRecord = {
    ...v6Record(0),
    sourceIPv4Address: hex("0a000001"),
    destinationIPv4Address: hex("0a000002"),
  };
  const [m] = s.pack(
    [
      { template: IPV6_TEMPLATE, record: v6Record(0) },
      { template: IPV4_TEMPLATE, record: v4 },
      { template: IPV4_TEMPLATE, record: v4 },
    ],
    false,
    0,
  );
  const v = new DataView(m!.bytes.buffer);
  assert.deepEqual([v.getUint16(16), v.getUint16(18)], [256, 92]);
  assert.deepEqual([v.getUint16(108), v.getUint16(110)], [257, 4 + 2 * 58]);
  assert.equal(m!.bytes.length, 16 + 92 + 120);
});
