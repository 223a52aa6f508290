/**
 * The recvmmsg receiver (ffi/udp_batch.ts) on real loopback sockets: batches from IPv4 and IPv6 senders with
 * their addresses and ports, a dual-stack socket's IPv4-mapped senders, truncation reported with the real
 * length, a close while waiting that returns at once, and bind errors carrying errno; the sender's
 * per-datagram outcomes.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { UdpBatchReceiver, UdpSender, UdpSocketError } from "../../ffi/udp_batch.ts";

interface Got {
  text: string;
  length: number;
  kept: number;
  address: string;
  port: number;
}

/** A bound sending socket on `from`. */
async function sender(type: "udp4" | "udp6", from: string): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type, ipv6Only: type === "udp6" });
  await new Promise<void>((r) => socket.bind(0, from, () => r()));
  return socket;
}

function send(socket: dgram.Socket, data: string | Uint8Array, port: number, to: string): Promise<void> {
  return new Promise((resolve, reject) =>
    socket.send(
      typeof data === "string" ? new TextEncoder().encode(data) : data,
      port,
      to,
      (err) => err ? reject(err) : resolve(),
    )
  );
}

function closeSocket(socket: dgram.Socket): Promise<void> {
  return new Promise((r) => socket.close(() => r()));
}

async function until(what: string, done: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function collector(): { got: Got[]; handler: (d: Uint8Array, l: number, a: string, p: number) => void } {
  const got: Got[] = [];
  const decoder = new TextDecoder();
  return {
    got,
    handler: (data, length, address, port) =>
      got.push({ text: decoder.decode(data), length, kept: data.length, address, port }),
  };
}

Deno.test("udp batch receiver: a burst from an IPv4 sender arrives in order, in batches, with the sender's address", async () => {
  const rx = UdpBatchReceiver.open({ address: "127.0.0.1", port: 0, slotSize: 2048, batch: 8 });
  const { got, handler } = collector();
  const tx = await sender("udp4", "127.0.0.1");
  try {
    assert.equal(rx.family, "ipv4");
    assert.ok(rx.port > 0);
    // Queued before the loop starts, so the first drain finds them all: 100 datagrams in batches of 8.
    for (let i = 0; i < 100; i++) await send(tx, `datagram ${i}`, rx.port, "127.0.0.1");
    rx.start(handler);
    await until("100 datagrams", () => got.length === 100);
    assert.deepEqual(got.map((g) => g.text), Array.from({ length: 100 }, (_, i) => `datagram ${i}`));
    assert.ok(got.every((g) => g.address === "127.0.0.1" && g.port === tx.address().port));
    assert.ok(got.every((g) => g.length === g.kept && g.length === new TextEncoder().encode(g.text).length));
    assert.equal(rx.stats.datagrams, 100);
    assert.ok(rx.stats.batches >= 13 && rx.stats.batches < 100, `batches: ${rx.stats.batches}`);
    assert.equal(rx.stats.truncated, 0);
    // And the loop keeps going after the first drain: one more, after a wait on poll.
    await new Promise((r) => setTimeout(r, 50));
    await send(tx, "late", rx.port, "127.0.0.1");
    await until("the late datagram", () => got.length === 101);
    assert.equal(got[100]!.text, "late");
  } finally {
    await closeSocket(tx);
    await rx.close();
  }
});

Deno.test("udp batch receiver: IPv6 senders on ::1, and IPv4-mapped senders on a dual-stack ::", async () => {
  const v6 = UdpBatchReceiver.open({ address: "::1", port: 0, slotSize: 2048 });
  const dual = UdpBatchReceiver.open({ address: "::", port: 0, slotSize: 2048, v6Only: false });
  const a = collector(), b = collector();
  const tx6 = await sender("udp6", "::1");
  const tx4 = await sender("udp4", "127.0.0.1");
  try {
    assert.equal(v6.family, "ipv6");
    v6.start(a.handler);
    dual.start(b.handler);
    for (let i = 0; i < 10; i++) await send(tx6, `six ${i}`, v6.port, "::1");
    await send(tx4, "four", dual.port, "127.0.0.1");
    await send(tx6, "six", dual.port, "::1");
    await until("ten datagrams on ::1", () => a.got.length === 10);
    await until("two datagrams on ::", () => b.got.length === 2);
    assert.deepEqual(a.got.map((g) => g.text), Array.from({ length: 10 }, (_, i) => `six ${i}`));
    assert.ok(a.got.every((g) => g.address === "::1" && g.port === tx6.address().port));
    const byText = Object.fromEntries(b.got.map((g) => [g.text, g]));
    assert.equal(byText.four!.address, "::ffff:127.0.0.1");
    assert.equal(byText.four!.port, tx4.address().port);
    assert.equal(byText.six!.address, "::1");
  } finally {
    await closeSocket(tx6);
    await closeSocket(tx4);
    await v6.close();
    await dual.close();
  }
});

Deno.test("udp batch receiver: a v6-only socket on :: leaves IPv4 to others; a dual-stack one does not", async () => {
  const only6 = UdpBatchReceiver.open({ address: "::", port: 0, slotSize: 2048, v6Only: true });
  // The same port on 0.0.0.0 is free exactly because the IPv6 socket is v6-only.
  const v4 = UdpBatchReceiver.open({ address: "0.0.0.0", port: only6.port, slotSize: 2048 });
  await v4.close();
  await only6.close();
  const dual = UdpBatchReceiver.open({ address: "::", port: 0, slotSize: 2048, v6Only: false });
  try {
    assert.throws(
      () => UdpBatchReceiver.open({ address: "0.0.0.0", port: dual.port, slotSize: 2048 }),
      (e) => e instanceof UdpSocketError && e.errno === 98,
    );
  } finally {
    await dual.close();
  }
});

Deno.test("udp batch receiver: datagrams longer than the slot are truncated and report their real length", async () => {
  const rx = UdpBatchReceiver.open({ address: "127.0.0.1", port: 0, slotSize: 2048, batch: 4 });
  const { got, handler } = collector();
  const tx = await sender("udp4", "127.0.0.1");
  try {
    rx.start(handler);
    await send(tx, "a".repeat(2048), rx.port, "127.0.0.1");
    await send(tx, "b".repeat(2049), rx.port, "127.0.0.1");
    await send(tx, "c".repeat(60_000), rx.port, "127.0.0.1");
    await send(tx, "d", rx.port, "127.0.0.1");
    await until("four datagrams", () => got.length === 4);
    assert.deepEqual(got.map((g) => [g.text[0], g.length, g.kept]), [
      ["a", 2048, 2048],
      ["b", 2049, 2048],
      ["c", 60_000, 2048],
      ["d", 1, 1],
    ]);
    assert.equal(got[1]!.text, "b".repeat(2048));
    assert.equal(rx.stats.truncated, 2);
  } finally {
    await closeSocket(tx);
    await rx.close();
  }
});

Deno.test("udp batch receiver: close while waiting on poll returns at once and the port is free again", async () => {
  const rx = UdpBatchReceiver.open({ address: "127.0.0.1", port: 0, slotSize: 2048 });
  const { got, handler } = collector();
  rx.start(handler);
  await new Promise((r) => setTimeout(r, 50)); // the loop now waits in poll on a pool thread
  const t0 = performance.now();
  await rx.close();
  const took = performance.now() - t0;
  assert.ok(took < 100, `close took ${took.toFixed(1)} ms`);
  assert.equal(got.length, 0);
  await rx.close(); // twice is fine
  assert.throws(() => rx.start(handler), /already started/);
  // The descriptor is closed: the port can be bound again.
  const again = UdpBatchReceiver.open({ address: "127.0.0.1", port: rx.port, slotSize: 2048 });
  await again.close();
});

Deno.test("udp batch receiver: a handler that throws is reported and the next datagrams still arrive", async () => {
  const errors: string[] = [];
  const rx = UdpBatchReceiver.open({
    address: "127.0.0.1",
    port: 0,
    slotSize: 2048,
    onError: (message, err) => errors.push(`${message}: ${(err as Error).message}`),
  });
  const texts: string[] = [];
  const tx = await sender("udp4", "127.0.0.1");
  try {
    rx.start((data) => {
      const text = new TextDecoder().decode(data);
      if (text === "boom") throw new Error("handler bug");
      texts.push(text);
    });
    await send(tx, "one", rx.port, "127.0.0.1");
    await send(tx, "boom", rx.port, "127.0.0.1");
    await send(tx, "two", rx.port, "127.0.0.1");
    await until("two good datagrams", () => texts.length === 2);
    assert.deepEqual(texts, ["one", "two"]);
    assert.deepEqual(errors, ["the datagram handler failed: handler bug"]);
    assert.equal(rx.stats.errors, 1);
  } finally {
    await closeSocket(tx);
    await rx.close();
  }
});

Deno.test("udp batch receiver: bind errors carry errno; bad addresses and slot sizes are refused", async () => {
  const rx = UdpBatchReceiver.open({ address: "127.0.0.1", port: 0, slotSize: 2048 });
  try {
    assert.throws(
      () => UdpBatchReceiver.open({ address: "127.0.0.1", port: rx.port, slotSize: 2048 }),
      (e) =>
        e instanceof UdpSocketError && e.func === "bind" && e.errno === 98 &&
        new RegExp(`cannot bind 127\\.0\\.0\\.1:${rx.port}: Address already in use`).test(e.message),
    );
  } finally {
    await rx.close();
  }
  assert.throws(
    () => UdpBatchReceiver.open({ address: "192.0.2.1", port: 0, slotSize: 2048 }),
    (e) =>
      e instanceof UdpSocketError && e.func === "bind" && /Cannot assign requested address/.test(e.message),
  );
  assert.throws(() => UdpBatchReceiver.open({ address: "localhost", port: 0, slotSize: 2048 }), TypeError);
  assert.throws(() => UdpBatchReceiver.open({ address: "::1", port: 0, slotSize: 0 }), RangeError);
  assert.throws(() => UdpBatchReceiver.open({ address: "::1", port: 0, slotSize: 70_000 }), RangeError);
});

Deno.test("udp batch receiver: large slots shrink the batch to bound the buffers; SO_RCVBUF is applied", async () => {
  const rx = UdpBatchReceiver.open({
    address: "127.0.0.1",
    port: 0,
    slotSize: 65536,
    batch: 256,
    receiveBufferBytes: 65536,
  });
  try {
    assert.equal(rx.batch, 64, "4 MiB of 64 KiB slots");
    // The kernel doubles the value it is given (for its bookkeeping).
    assert.equal(rx.receiveBufferBytes(), 131072);
  } finally {
    await rx.close();
  }
  const small = UdpBatchReceiver.open({ address: "127.0.0.1", port: 0, slotSize: 4096, batch: 500 });
  assert.equal(small.batch, 500);
  await small.close();
});

Deno.test("udp sender: one call sends to several destinations, each outcome reported at once", async () => {
  const rx4 = UdpBatchReceiver.open({ address: "127.0.0.1", port: 0, slotSize: 2048 });
  const rx6 = UdpBatchReceiver.open({ address: "::1", port: 0, slotSize: 2048 });
  const a = collector(), b = collector();
  rx4.start(a.handler);
  rx6.start(b.handler);
  const tx4 = UdpSender.open("ipv4");
  const tx6 = UdpSender.open("ipv6");
  try {
    const data = new TextEncoder().encode("x".repeat(400));
    assert.deepEqual(
      tx4.send([
        { data, address: "127.0.0.1", port: rx4.port },
        { data: new TextEncoder().encode("small"), address: "127.0.0.1", port: rx4.port },
        { data, address: "::1", port: rx6.port }, // the other family: refused, the rest still sent
        { data: new Uint8Array(70_000), address: "127.0.0.1", port: rx4.port }, // EMSGSIZE
        { data, address: "127.0.0.1", port: rx4.port },
      ]),
      [400, 5, -97, -90, 400],
    );
    assert.deepEqual(tx6.send([{ data, address: "::1", port: rx6.port }]), [400]);
    assert.equal(await tx6.writable(100), true);
    await until("three datagrams on 127.0.0.1", () => a.got.length === 3);
    await until("one datagram on ::1", () => b.got.length === 1);
    assert.deepEqual(a.got.map((g) => g.length), [400, 5, 400]);
    assert.equal(a.got[1]!.text, "small");
    assert.equal(b.got[0]!.address, "::1");
    // Batches of up to four go through structs the sender keeps: reused call after call, each time right.
    const sent: string[] = [];
    for (let round = 0; round < 30; round++) {
      const batch = Array.from(
        { length: 1 + (round % 4) },
        (_, i) => `r${round}d${i}`.padEnd(80 + round, "."),
      );
      const results = tx4.send(
        batch.map((t) => ({ data: new TextEncoder().encode(t), address: "127.0.0.1", port: rx4.port })),
      );
      assert.deepEqual(results, batch.map((t) => t.length));
      sent.push(...batch);
    }
    await until("the small batches on 127.0.0.1", () => a.got.length === 3 + sent.length);
    assert.deepEqual(a.got.slice(3).map((g) => g.text), sent);
    tx4.close();
    assert.deepEqual(tx4.send([{ data, address: "127.0.0.1", port: rx4.port }]), [-9], "closed: EBADF");
  } finally {
    tx4.close();
    tx6.close();
    await rx4.close();
    await rx6.close();
  }
});

Deno.test("udp sender: large batches from one shared buffer and from buffers of their own, each datagram intact", async () => {
  const rx = UdpBatchReceiver.open({
    address: "127.0.0.1",
    port: 0,
    slotSize: 512,
    receiveBufferBytes: 4 << 20,
  });
  const got = collector();
  rx.start(got.handler);
  const tx = UdpSender.open("ipv4");
  try {
    const encoder = new TextEncoder();
    const sent: string[] = [];
    // Batches that grow the kept structs (5, 40, 100 datagrams) and then reuse them (3, 40 again).
    for (const [round, n] of [5, 40, 100, 3, 40].entries()) {
      const shared = new Uint8Array(64 * 1024);
      let used = 0;
      const batch = Array.from({ length: n }, (_, i) => {
        const text = `b${round}d${i}`.padEnd(70 + ((i * 37) % 300), String.fromCharCode(97 + (i % 26)));
        sent.push(text);
        // Every third one in an array of its own; the others in the shared buffer, back to back.
        if (i % 3 === 0) return { data: encoder.encode(text), address: "127.0.0.1", port: rx.port };
        const { written } = encoder.encodeInto(text, shared.subarray(used));
        const data = shared.subarray(used, used + written);
        used += written;
        return { data, address: "127.0.0.1", port: rx.port };
      });
      assert.deepEqual(tx.send(batch), batch.map((d) => d.data.byteLength));
    }
    await until("every datagram", () => got.got.length === sent.length);
    assert.deepEqual(got.got.map((g) => g.text), sent);
  } finally {
    tx.close();
    await rx.close();
  }
});
