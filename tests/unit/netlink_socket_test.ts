// Real netlink sockets against the running kernel; rtnetlink reads need no privileges.
import assert from "node:assert/strict";
import { NETLINK_ROUTE, NetlinkError, NetlinkSocket } from "../../ffi/netlink.ts";
import {
  attributeMap,
  attrString,
  concatBytes,
  encodeAttribute,
  NLMSG_NOOP,
} from "../../ffi/netlink_framing.ts";

const RTM_NEWLINK = 16;
const RTM_GETLINK = 18;
const IFLA_IFNAME = 3;

function ifinfomsg(index = 0): Uint8Array {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setInt32(4, index, true);
  return b;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected the promise to reject");
}

Deno.test("a link dump returns the loopback interface as RTM_NEWLINK messages", async () => {
  using sock = NetlinkSocket.open(NETLINK_ROUTE);
  assert.ok(sock.portId > 0, "the kernel assigns a port id on bind");
  const replies = await sock.dump(RTM_GETLINK, ifinfomsg());
  assert.ok(replies.length >= 1);
  assert.ok(replies.every((m) => m.type === RTM_NEWLINK));
  const names = replies.map((m) => attrString(attributeMap(m.payload.subarray(16)).get(IFLA_IFNAME)!));
  assert.ok(names.includes("lo"), `links: ${names.join(", ")}`);
});

Deno.test("a request for a missing interface fails with ENODEV and the C library's text", async () => {
  using sock = NetlinkSocket.open(NETLINK_ROUTE);
  const err = await rejection(sock.request(RTM_GETLINK, ifinfomsg(0x7ffffff0)));
  assert.ok(err instanceof NetlinkError);
  assert.equal(err.errno, 19);
  assert.match(err.message, /No such device \(errno 19\)/);
});

Deno.test("the kernel's extended ack text reaches the NetlinkError", async () => {
  using sock = NetlinkSocket.open(NETLINK_ROUTE);
  // An interface name longer than IFNAMSIZ fails the attribute policy, which the kernel explains.
  const longName = new TextEncoder().encode(`${"x".repeat(30)}\0`);
  const err = await rejection(
    sock.request(RTM_GETLINK, concatBytes([ifinfomsg(), encodeAttribute(IFLA_IFNAME, longName)])),
  );
  assert.ok(err instanceof NetlinkError);
  assert.notEqual(err.errno, 0);
  assert.equal(err.extAck, "Attribute failed policy validation");
  assert.match(err.message, /: Attribute failed policy validation$/);
});

Deno.test("waiting for an answer that never comes keeps the event loop running and times out", async () => {
  using sock = NetlinkSocket.open(NETLINK_ROUTE, { timeoutMs: 400 });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  const started = performance.now();
  try {
    // The kernel answers a control-type message only when asked for an ack, and a dump request does not ask.
    const err = await rejection(sock.dump(NLMSG_NOOP, new Uint8Array(0)));
    assert.ok(err instanceof NetlinkError);
    assert.match(err.message, /no complete answer within 400 ms/);
  } finally {
    clearInterval(timer);
  }
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 390 && elapsed < 2000, `waited ${elapsed} ms`);
  assert.ok(ticks >= 10, `only ${ticks} timer ticks while waiting: the event loop was blocked`);
});

Deno.test("concurrent requests on one socket are serialised and each gets its own answer", async () => {
  using sock = NetlinkSocket.open(NETLINK_ROUTE);
  const [dumpA, single, dumpB] = await Promise.all([
    sock.dump(RTM_GETLINK, ifinfomsg()),
    sock.request(RTM_GETLINK, ifinfomsg(1)),
    sock.dump(RTM_GETLINK, ifinfomsg()),
  ]);
  assert.equal(dumpA.length, dumpB.length);
  assert.equal(single.length, 1);
  assert.equal(new DataView(single[0]!.payload.buffer, single[0]!.payload.byteOffset).getInt32(4, true), 1);
});

Deno.test("a closed socket refuses requests with a NetlinkError", async () => {
  const sock = NetlinkSocket.open(NETLINK_ROUTE);
  sock.close();
  sock.close(); // twice is fine
  assert.equal(sock.isOpen, false);
  const err = await rejection(sock.dump(RTM_GETLINK, ifinfomsg()));
  assert.ok(err instanceof NetlinkError);
  assert.match(err.message, /closed/);
});

Deno.test("opening a socket for a protocol the kernel lacks names the protocol", () => {
  assert.throws(
    () => NetlinkSocket.open(31),
    (e: unknown) => e instanceof NetlinkError && /protocol 31/.test(e.message),
  );
});
