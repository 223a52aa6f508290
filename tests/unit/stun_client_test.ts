/**
 * The STUN Binding client: RFC 5769 test vectors, the request's wire form checked by the npm `stun`
 * package's decoder, and live exchanges with that package's server on IPv4 and IPv6 loopback.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import stun from "stun";
import {
  crc32,
  decodeStunResponse,
  encodeBindingRequest,
  STUN_MAGIC_COOKIE,
  stunBinding,
  StunError,
} from "../../src/net/stun_client.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { startStunServer } from "../helpers/stun_server.ts";

const hex = (text: string) =>
  Uint8Array.from(text.replace(/\s+/g, "").match(/../g)!.map((h) => parseInt(h, 16)));

// RFC 5769 §2.2 and §2.3: Binding success responses (with MESSAGE-INTEGRITY, which the client ignores).
const RFC5769_IPV4 = hex(`
  0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);
const RFC5769_IPV6 = hex(`
  01010048 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9 00080014 a382954e 4be67bf1
  1784c97c 8292c275 bfe3ed41 80280004 c8fb0b4c`);
const RFC5769_TXID = hex("b7e7a701 bc34d686 fa87dfae");

function rejectsWith(re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof StunError, `expected StunError, got ${e}`);
    assert.match(e.message, re);
    return true;
  };
}

Deno.test("stun: crc32 is the IEEE CRC (check value of 123456789)", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});

Deno.test("stun: RFC 5769 IPv4 and IPv6 responses decode to the published addresses", () => {
  const v4 = decodeStunResponse(RFC5769_IPV4);
  assert.equal(v4.kind, "success");
  if (v4.kind !== "success") return;
  assert.deepEqual(v4.transactionId, RFC5769_TXID);
  assert.equal(v4.mapped.address.toString(), "192.0.2.1");
  assert.equal(v4.mapped.port, 32853);
  assert.equal(v4.software, "test vector");
  const v6 = decodeStunResponse(RFC5769_IPV6);
  assert.ok(v6.kind === "success");
  assert.equal(v6.mapped.address.toString(), "2001:db8:1234:5678:11:2233:4455:6677");
  assert.equal(v6.mapped.port, 32853);
});

Deno.test("stun: malformed or corrupted responses are refused with the reason", () => {
  const flip = (bytes: Uint8Array, at: number) => {
    const copy = bytes.slice();
    copy[at]! ^= 0x01;
    return copy;
  };
  assert.throws(() => decodeStunResponse(RFC5769_IPV4.subarray(0, 19)), rejectsWith(/too short/));
  assert.throws(() => decodeStunResponse(flip(RFC5769_IPV4, 4)), rejectsWith(/no magic cookie/));
  assert.throws(() => decodeStunResponse(flip(RFC5769_IPV4, 45)), rejectsWith(/FINGERPRINT does not match/));
  assert.throws(() => decodeStunResponse(RFC5769_IPV4.subarray(0, 68)), rejectsWith(/length field 60/));
  const request = encodeBindingRequest(RFC5769_TXID);
  assert.throws(() => decodeStunResponse(request), rejectsWith(/type 0x0001 is not a Binding response/));
  // A success response without any address attribute.
  const bare = hex("01010000 2112a442 b7e7a701 bc34d686 fa87dfae");
  assert.throws(() => decodeStunResponse(bare), rejectsWith(/no mapped address/));
  // An error response with ERROR-CODE 420 "Unknown Attribute" (21 bytes of value, padded to 24).
  const errorResponse = new Uint8Array([
    ...hex("0111001c 2112a442 b7e7a701 bc34d686 fa87dfae 00090015 00000414"),
    ...new TextEncoder().encode("Unknown Attribute"),
    0,
    0,
    0,
  ]);
  const decoded = decodeStunResponse(errorResponse);
  assert.deepEqual(decoded.kind === "error" ? [decoded.code, decoded.reason] : [], [
    420,
    "Unknown Attribute",
  ]);
});

Deno.test("stun: our Binding Request is well formed for another implementation (npm stun decodes it)", () => {
  const request = encodeBindingRequest(RFC5769_TXID);
  const view = new DataView(request.buffer);
  assert.equal(view.getUint16(0), 0x0001);
  assert.equal(view.getUint16(2), request.length - 20);
  assert.equal(view.getUint32(4), STUN_MAGIC_COOKIE);
  const lib = stun as unknown as {
    decode(
      b: Uint8Array,
    ): { type: number; transactionId: Uint8Array; getAttribute(t: number): { value: unknown } };
    validateFingerprint(m: unknown): boolean;
  };
  const message = lib.decode(Buffer.from(request));
  assert.equal(message.type, 0x0001);
  assert.deepEqual(new Uint8Array(message.transactionId), RFC5769_TXID);
  assert.equal(String(message.getAttribute(0x8022).value), "flowd-go");
  assert.equal(lib.validateFingerprint(message), true);
});

Deno.test("stun: Binding against the npm stun server on IPv4 loopback, sent from the chosen address", async () => {
  await using server = await startStunServer("127.0.0.1", { reportAs: "203.0.114.5", reportPort: 40000 });
  const result = await stunBinding({
    server: server.hostPort,
    localAddress: IpAddress.parse("127.0.0.2"),
    timeoutMs: 2000,
  });
  assert.equal(result.mapped.address.toString(), "203.0.114.5");
  assert.equal(result.mapped.port, 40000);
  assert.equal(result.server.port, server.port);
  assert.deepEqual(server.requests.map((r) => r.address), ["127.0.0.2"]);
});

Deno.test("stun: Binding over IPv6 loopback, XOR with the transaction id decoded right", async () => {
  await using server = await startStunServer("::1", { reportAs: "2a02:db8:ffff::17" });
  const result = await stunBinding({
    server: server.hostPort,
    localAddress: IpAddress.parse("::1"),
    timeoutMs: 2000,
  });
  assert.equal(result.mapped.address.toString(), "2a02:db8:ffff::17");
  assert.equal(result.mapped.port, server.requests[0]!.port, "the port the server saw");
});

Deno.test("stun: a host name is resolved for the local address's family", async () => {
  await using server = await startStunServer("127.0.0.1", { reportAs: "198.18.0.1" });
  const result = await stunBinding({
    server: `localhost:${server.port}`,
    localAddress: IpAddress.parse("127.0.0.1"),
    timeoutMs: 2000,
  });
  assert.equal(result.server.address.toString(), "127.0.0.1");
  assert.equal(result.mapped.address.toString(), "198.18.0.1");
});

Deno.test("stun: MAPPED-ADDRESS only (RFC 3489 servers) is accepted", async () => {
  await using server = await startStunServer("127.0.0.1", { mode: "mapped-only", reportAs: "203.0.114.9" });
  const result = await stunBinding({ server: server.hostPort, timeoutMs: 2000 });
  assert.equal(result.mapped.address.toString(), "203.0.114.9");
});

Deno.test("stun: answers to another transaction and corrupted answers are ignored, the right one taken", async () => {
  for (const mode of ["other-transaction-first", "bad-fingerprint-first"] as const) {
    await using server = await startStunServer("127.0.0.1", { mode, reportAs: "203.0.114.10" });
    const result = await stunBinding({ server: server.hostPort, timeoutMs: 2000 });
    assert.equal(result.mapped.address.toString(), "203.0.114.10", mode);
  }
});

Deno.test("stun: an error response is a clear failure", async () => {
  await using server = await startStunServer("127.0.0.1", { mode: "error" });
  await assert.rejects(
    () => stunBinding({ server: server.hostPort, timeoutMs: 2000 }),
    rejectsWith(/STUN server 127\.0\.0\.1:\d+ answered error 400 Bad Request/),
  );
});

Deno.test("stun: a silent server times out after retransmissions; the socket is closed", async () => {
  await using server = await startStunServer("127.0.0.1", { mode: "silent" });
  const t0 = performance.now();
  await assert.rejects(
    () => stunBinding({ server: server.hostPort, timeoutMs: 700 }),
    rejectsWith(/no answer from STUN server 127\.0\.0\.1:\d+ within 700 ms/),
  );
  const elapsed = performance.now() - t0;
  assert.ok(elapsed >= 690 && elapsed < 1500, `took ${elapsed} ms`);
  assert.equal(server.requests.length, 2, "sent at 0 and retransmitted at 500 ms");
  // The sanitizers fail this test if the client's socket or timers were left open.
});

Deno.test("stun: family mismatch, bad server text and cancellation fail fast and clearly", async () => {
  await using server = await startStunServer("::1");
  await assert.rejects(
    () =>
      stunBinding({ server: server.hostPort, localAddress: IpAddress.parse("127.0.0.1"), timeoutMs: 2000 }),
    rejectsWith(/is ipv6, the local address ipv4/),
  );
  await assert.rejects(() => stunBinding({ server: "::1:3478", timeoutMs: 100 }), rejectsWith(/host:port/));
  await using silent = await startStunServer("127.0.0.1", { mode: "silent" });
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 50);
  const t0 = performance.now();
  await assert.rejects(
    () => stunBinding({ server: silent.hostPort, timeoutMs: 5000, signal: abort.signal }),
    rejectsWith(/cancelled/),
  );
  assert.ok(performance.now() - t0 < 1000);
});
