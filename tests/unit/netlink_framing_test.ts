import assert from "node:assert/strict";
import {
  align4,
  attributeMap,
  attrString,
  attrU32,
  concatBytes,
  encodeAttribute,
  encodeMessage,
  encodeNested,
  type ErrorReply,
  NetlinkError,
  type NetlinkMessage,
  NLA_F_NESTED,
  NLA_F_NET_BYTEORDER,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP_INTR,
  NLM_F_MULTI,
  NLMSG_DONE,
  NLMSG_ERROR,
  parseAttributes,
  parseErrorMessage,
  parseMessages,
  ReplyCollector,
} from "../../ffi/netlink_framing.ts";

const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const i32 = (n: number) => new Uint8Array(new Int32Array([n]).buffer);
const text = (s: string) => new TextEncoder().encode(`${s}\0`);

/** An NLMSG_ERROR payload: error code, echoed header (and request unless capped), optional TLVs. */
function errorMessage(
  seq: number,
  errno: number,
  opts: { capped?: boolean; echoedPayload?: Uint8Array; tlvs?: Uint8Array } = {},
): NetlinkMessage {
  const request = encodeMessage({ type: 18, flags: 5, seq }, opts.echoedPayload ?? new Uint8Array(0));
  const echoed = opts.capped ? request.subarray(0, 16) : request;
  const payload = concatBytes([i32(-errno), echoed, opts.tlvs ?? new Uint8Array(0)]);
  const flags = (opts.capped ? NLM_F_CAPPED : 0) | (opts.tlvs ? NLM_F_ACK_TLVS : 0);
  return parseMessages(encodeMessage({ type: NLMSG_ERROR, flags, seq }, payload))[0]!;
}

function describe(reply: ErrorReply): NetlinkError {
  return new NetlinkError(`failed errno ${reply.errno}${reply.extAck ? `: ${reply.extAck}` : ""}`, reply);
}

Deno.test("align4 rounds up to multiples of four", () => {
  assert.deepEqual([0, 1, 3, 4, 5, 8, 9].map(align4), [0, 4, 4, 4, 8, 8, 12]);
});

Deno.test("encodeMessage writes the header in host order and pads the payload", () => {
  const m = encodeMessage({ type: 20, flags: 0x301, seq: 0xdeadbeef, pid: 7 }, Uint8Array.of(1, 2, 3, 4, 5));
  assert.equal(m.byteLength, 24); // 16 + 5 padded to 24
  const v = new DataView(m.buffer);
  assert.equal(v.getUint32(0, true), 21); // nlmsg_len counts the unpadded payload
  assert.equal(v.getUint16(4, true), 20);
  assert.equal(v.getUint16(6, true), 0x301);
  assert.equal(v.getUint32(8, true), 0xdeadbeef);
  assert.equal(v.getUint32(12, true), 7);
  assert.deepEqual([...m.subarray(16)], [1, 2, 3, 4, 5, 0, 0, 0]);
});

Deno.test("parseMessages splits a datagram on aligned boundaries and trims each payload", () => {
  const a = encodeMessage({ type: 16, flags: NLM_F_MULTI, seq: 9 }, Uint8Array.of(1, 2, 3));
  const b = encodeMessage({ type: 16, flags: NLM_F_MULTI, seq: 9 }, Uint8Array.of(4, 5, 6, 7, 8));
  const msgs = parseMessages(concatBytes([a, b]));
  assert.equal(msgs.length, 2);
  assert.deepEqual([...msgs[0]!.payload], [1, 2, 3]);
  assert.deepEqual([...msgs[1]!.payload], [4, 5, 6, 7, 8]);
  assert.equal(msgs[1]!.seq, 9);
  assert.equal(msgs[1]!.flags, NLM_F_MULTI);
});

Deno.test("parseMessages rejects a message whose length runs past the datagram", () => {
  const m = encodeMessage({ type: 16, flags: 0, seq: 1 }, new Uint8Array(40));
  assert.throws(() => parseMessages(m.subarray(0, 30)), NetlinkError);
  assert.throws(() => parseMessages(m.subarray(0, 30)), /claims 56 bytes but 30 remain/);
});

Deno.test("parseMessages rejects a header shorter than 16 bytes and stray trailing bytes", () => {
  const m = encodeMessage({ type: 16, flags: 0, seq: 1 }, new Uint8Array(4));
  assert.throws(() => parseMessages(concatBytes([m, Uint8Array.of(1, 2, 3)])), /3 stray bytes/);
  const bad = m.slice();
  new DataView(bad.buffer).setUint32(0, 8, true);
  assert.throws(() => parseMessages(bad), /claims 8 bytes/);
});

Deno.test("parseAttributes masks the nested and byte-order flags off the type and walks nested attributes", () => {
  const inner = [encodeAttribute(1, text("veth")), encodeAttribute(2, u32(42))];
  const bytes = concatBytes([
    encodeAttribute(3, text("eth0")),
    encodeNested(18, inner),
    encodeAttribute(7 | NLA_F_NET_BYTEORDER, Uint8Array.of(0x14, 0x51)),
  ]);
  const attrs = parseAttributes(bytes);
  assert.deepEqual(attrs.map((a) => [a.type, a.nested, a.netByteOrder]), [
    [3, false, false],
    [18, true, false],
    [7, false, true],
  ]);
  assert.equal(attrString(attrs[0]!.value), "eth0");
  const nested = attributeMap(attrs[1]!.value);
  assert.equal(attrString(nested.get(1)!), "veth");
  assert.equal(attrU32(nested.get(2)!), 42);
  assert.deepEqual([...attrs[2]!.value], [0x14, 0x51]);
  assert.equal(new DataView(bytes.buffer).getUint16(4 + 8 + 2, true), 18 | NLA_F_NESTED);
});

Deno.test("parseAttributes uses each attribute's own length, including odd lengths and empty values", () => {
  const bytes = concatBytes([
    encodeAttribute(1, Uint8Array.of(9)), // 5 bytes, padded to 8
    encodeAttribute(2, new Uint8Array(0)),
    encodeAttribute(3, Uint8Array.of(1, 2, 3, 4, 5, 6, 7)),
  ]);
  const attrs = parseAttributes(bytes);
  assert.deepEqual(attrs.map((a) => [a.type, a.value.byteLength]), [[1, 1], [2, 0], [3, 7]]);
  // The final attribute's padding may be left off by the sender.
  assert.equal(parseAttributes(bytes.subarray(0, bytes.byteLength - 1)).length, 3);
});

Deno.test("parseAttributes rejects a truncated attribute, naming its type and offset", () => {
  const bytes = concatBytes([encodeAttribute(1, u32(1)), encodeAttribute(14, new Uint8Array(32))]);
  assert.throws(
    () => parseAttributes(bytes.subarray(0, 28)),
    /type 14 at offset 8 claims 36 bytes but 20 remain/,
  );
  const zeroLength = concatBytes([encodeAttribute(1, u32(1)), Uint8Array.of(0, 0, 5, 0)]);
  assert.throws(() => parseAttributes(zeroLength), /type 5 at offset 8 claims 0 bytes/);
});

Deno.test("attribute readers name what is too short", () => {
  assert.throws(() => attrU32(Uint8Array.of(1, 2), "IFLA_MTU"), /IFLA_MTU has 2 bytes, expected a u32/);
  assert.equal(attrString(Uint8Array.of(0x6c, 0x6f)), "lo"); // no NUL: whole value
});

Deno.test("NLMSG_ERROR with error 0 is an acknowledgement", () => {
  const reply = parseErrorMessage(errorMessage(5, 0, { capped: true }));
  assert.equal(reply.errno, 0);
  assert.equal(reply.extAck, undefined);
});

Deno.test("NLMSG_ERROR without extended ack gives the errno only", () => {
  const reply = parseErrorMessage(errorMessage(5, 19, { echoedPayload: new Uint8Array(16) }));
  assert.equal(reply.errno, 19);
  assert.equal(reply.extAck, undefined);
  assert.equal(reply.extAckOffset, undefined);
});

Deno.test("NLMSG_ERROR capped with extended ack: message, offset and missing attribute", () => {
  const tlvs = concatBytes([
    encodeAttribute(1, text("Attribute failed policy validation")),
    encodeAttribute(2, u32(32)),
    encodeAttribute(5, u32(3)),
  ]);
  const reply = parseErrorMessage(errorMessage(5, 22, { capped: true, tlvs }));
  assert.equal(reply.errno, 22);
  assert.equal(reply.extAck, "Attribute failed policy validation");
  assert.equal(reply.extAckOffset, 32);
  assert.equal(reply.missingAttribute, 3);
});

Deno.test("NLMSG_ERROR uncapped: the echoed request is skipped before the extended ack", () => {
  // The echoed request holds bytes that would parse as a bogus "message" attribute if not skipped.
  const echoed = concatBytes([new Uint8Array(16), encodeAttribute(1, text("not the ack"))]);
  const tlvs = encodeAttribute(1, text("real ack text"));
  const reply = parseErrorMessage(errorMessage(5, 95, { echoedPayload: echoed, tlvs }));
  assert.equal(reply.errno, 95);
  assert.equal(reply.extAck, "real ack text");
});

Deno.test("ReplyCollector gathers a multipart dump across datagrams until NLMSG_DONE", () => {
  const c = new ReplyCollector(77, "dump", 1234, describe);
  const part = (n: number) => encodeMessage({ type: 20, flags: NLM_F_MULTI, seq: 77, pid: 1234 }, u32(n));
  assert.equal(c.feed(parseMessages(concatBytes([part(1), part(2)]))), false);
  assert.equal(c.feed(parseMessages(part(3))), false);
  const done = encodeMessage({ type: NLMSG_DONE, flags: NLM_F_MULTI, seq: 77, pid: 1234 }, i32(0));
  assert.equal(c.feed(parseMessages(concatBytes([part(4), done]))), true);
  assert.deepEqual(c.replies.map((m) => attrU32(m.payload)), [1, 2, 3, 4]);
  assert.equal(c.interrupted, false);
  assert.equal(c.skipped, 0);
});

Deno.test("ReplyCollector with onReply hands each reply over as it is fed and keeps none", () => {
  const seen: number[] = [];
  const c = new ReplyCollector(77, "dump", 1234, describe, (m) => seen.push(attrU32(m.payload)));
  const part = (n: number) => encodeMessage({ type: 20, flags: NLM_F_MULTI, seq: 77, pid: 1234 }, u32(n));
  const stale = encodeMessage({ type: 20, flags: NLM_F_MULTI, seq: 76, pid: 1234 }, u32(99));
  c.feed(parseMessages(concatBytes([part(1), stale, part(2)])));
  assert.deepEqual(seen, [1, 2], "handed over before the next datagram");
  const done = encodeMessage({ type: NLMSG_DONE, flags: NLM_F_MULTI, seq: 77, pid: 1234 }, i32(0));
  assert.equal(c.feed(parseMessages(concatBytes([part(3), done, part(4)]))), true);
  assert.deepEqual(seen, [1, 2, 3], "nothing after NLMSG_DONE");
  assert.equal(c.replies.length, 0);
  assert.equal(c.skipped, 2);
});

Deno.test("ReplyCollector skips messages of other sequence numbers or port ids", () => {
  const c = new ReplyCollector(10, "dump", 1234, describe);
  const stale = encodeMessage({ type: 20, flags: NLM_F_MULTI, seq: 9, pid: 1234 }, u32(0));
  const foreign = encodeMessage({ type: 20, flags: NLM_F_MULTI, seq: 10, pid: 999 }, u32(0));
  const staleDone = encodeMessage({ type: NLMSG_DONE, flags: NLM_F_MULTI, seq: 9, pid: 1234 }, i32(0));
  const mine = encodeMessage({ type: 20, flags: NLM_F_MULTI, seq: 10, pid: 1234 }, u32(5));
  assert.equal(c.feed(parseMessages(concatBytes([stale, foreign, staleDone, mine]))), false);
  assert.equal(c.skipped, 3);
  assert.equal(c.replies.length, 1);
});

Deno.test("ReplyCollector turns NLMSG_ERROR into a NetlinkError carrying errno and extended ack", () => {
  const c = new ReplyCollector(5, "dump", 0, describe);
  const tlvs = encodeAttribute(1, text("Invalid family"));
  const err = (() => {
    try {
      c.feed([errorMessage(5, 22, { capped: true, tlvs })]);
    } catch (e) {
      return e;
    }
  })();
  assert.ok(err instanceof NetlinkError);
  assert.equal(err.errno, 22);
  assert.equal(err.extAck, "Invalid family");
  assert.match(err.message, /errno 22: Invalid family/);
});

Deno.test("ReplyCollector fails a dump that ends with an error in NLMSG_DONE", () => {
  const c = new ReplyCollector(5, "dump", 0, describe);
  const done = encodeMessage({ type: NLMSG_DONE, flags: NLM_F_MULTI, seq: 5 }, i32(-105));
  assert.throws(
    () => c.feed(parseMessages(done)),
    (e: unknown) => e instanceof NetlinkError && e.errno === 105,
  );
});

Deno.test("ReplyCollector notes a dump the kernel flagged as interrupted", () => {
  const c = new ReplyCollector(5, "dump", 0, describe);
  const m = encodeMessage({ type: 16, flags: NLM_F_MULTI | NLM_F_DUMP_INTR, seq: 5 }, u32(1));
  const done = encodeMessage({ type: NLMSG_DONE, flags: NLM_F_MULTI, seq: 5 }, i32(0));
  assert.equal(c.feed(parseMessages(concatBytes([m, done]))), true);
  assert.equal(c.interrupted, true);
});

Deno.test("ReplyCollector in ack mode returns the replies that precede the acknowledgement", () => {
  const c = new ReplyCollector(6, "ack", 0, describe);
  const reply = encodeMessage({ type: 24, flags: 0, seq: 6 }, u32(99));
  assert.equal(c.feed(parseMessages(reply)), false); // a plain reply does not end an ack-mode request
  assert.equal(c.feed([errorMessage(6, 0, { capped: true })]), true);
  assert.equal(c.replies.length, 1);
  assert.equal(attrU32(c.replies[0]!.payload), 99);
});

Deno.test("ReplyCollector treats a single non-multipart reply to a dump as the whole answer", () => {
  const c = new ReplyCollector(6, "dump", 0, describe);
  assert.equal(c.feed(parseMessages(encodeMessage({ type: 20, flags: 0, seq: 6 }, u32(1)))), true);
});
