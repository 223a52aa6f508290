/** The on-disk outbox: recovery after reopen, acks in and out of order, a torn write, a corrupt record, the size limit, compaction. */
import assert from "node:assert/strict";
import { Outbox } from "../../src/core/outbox.ts";

const enc = new TextEncoder(), dec = new TextDecoder();
const texts = (box: Outbox) => [...box.unacked()].map((r) => dec.decode(r.payload));

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flowd-outbox-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("outbox: pending messages survive a reopen; acknowledged ones do not", () =>
  withDir((dir) => {
    const path = `${dir}/o.log`;
    const { outbox: a } = Outbox.open(path, 1 << 20);
    const seqs = ["m1", "m2", "m3", "m4"].map((m) => a.append(enc.encode(m))!.seq);
    assert.deepEqual(seqs, [1, 2, 3, 4]);
    a.ack(1);
    a.ack(2);
    a.flush(); // what the end of the turn does; close() is not called: as after a SIGKILL
    const { outbox: b, report } = Outbox.open(path, 1 << 20);
    assert.deepEqual(report, { recovered: 2, cutBytes: 0 });
    assert.deepEqual(texts(b), ["m3", "m4"]);
    assert.equal(b.append(enc.encode("m5"))!.seq, 5, "sequence numbers go on after a reopen");
    b.close();
    a.close();
  }));

Deno.test("outbox: acks out of order advance the watermark only over a run; a reopen sends the rest again", () =>
  withDir((dir) => {
    const path = `${dir}/o.log`;
    const { outbox: a } = Outbox.open(path, 1 << 20);
    for (const m of ["a", "b", "c", "d"]) a.append(enc.encode(m));
    a.ack(2);
    a.ack(3);
    assert.equal(a.depth, 4);
    assert.deepEqual(texts(a), ["a", "d"], "acked-ahead messages are not offered again");
    assert.equal(a.isPending(2), false);
    assert.equal(a.isPending(1), true);
    a.flush();
    // Reopened now: 2 and 3 come back (dedup by message id drops them at the broker).
    assert.deepEqual(texts(Outbox.open(path, 1 << 20).outbox), ["a", "b", "c", "d"]);
    a.ack(1);
    assert.equal(a.depth, 1);
    a.flush();
    assert.deepEqual(texts(Outbox.open(path, 1 << 20).outbox), ["d"]);
    a.close();
  }));

Deno.test("outbox: a torn write at the end is cut on open and the file goes on cleanly", () =>
  withDir((dir) => {
    const path = `${dir}/o.log`;
    const { outbox: a } = Outbox.open(path, 1 << 20);
    for (const m of ["one", "two", "three"]) a.append(enc.encode(m));
    a.close();
    const size = Deno.statSync(path).size;
    Deno.truncateSync(path, size - 2); // the last record's write was cut short
    const { outbox: b, report } = Outbox.open(path, 1 << 20);
    assert.equal(report.recovered, 2);
    assert.equal(report.cutBytes, 17 + 5 - 2);
    assert.match(report.cutReason!, /torn record/);
    assert.equal(Deno.statSync(path).size, size - 17 - 5, "the torn tail is removed from the file");
    b.append(enc.encode("four"));
    b.close();
    const { outbox: c, report: again } = Outbox.open(path, 1 << 20);
    assert.deepEqual(again, { recovered: 3, cutBytes: 0 });
    assert.deepEqual(texts(c), ["one", "two", "four"]);
    c.close();
  }));

Deno.test("outbox: a record whose checksum fails cuts the file from there, and says so", () =>
  withDir((dir) => {
    const path = `${dir}/o.log`;
    const { outbox: a } = Outbox.open(path, 1 << 20);
    for (const m of ["alpha", "bravo", "charlie"]) a.append(enc.encode(m));
    a.close();
    const bytes = Deno.readFileSync(path);
    bytes[22 + 17 + 1]! ^= 0x20; // a payload byte of the second record ("bravo" → "bRavo")
    Deno.writeFileSync(path, bytes);
    const { outbox: b, report } = Outbox.open(path, 1 << 20);
    assert.equal(report.recovered, 1);
    assert.match(report.cutReason!, /checksum does not match at byte 22/);
    assert.equal(report.cutBytes, bytes.length - 22);
    assert.deepEqual(texts(b), ["alpha"]);
    b.close();
  }));

Deno.test("outbox: full means refused and counted, never waiting; room comes back with acks", () =>
  withDir((dir) => {
    const { outbox } = Outbox.open(`${dir}/o.log`, 1000);
    const payload = new Uint8Array(100);
    for (let i = 0; i < 10; i++) assert.ok(outbox.append(payload), `message ${i} fits`);
    assert.equal(outbox.append(payload), undefined);
    assert.equal(outbox.append(payload), undefined);
    assert.equal(outbox.refused, 2);
    assert.equal(outbox.pendingBytes, 1000);
    outbox.ack(1);
    assert.ok(outbox.append(payload));
    outbox.close();
  }));

Deno.test("outbox: a large acknowledged prefix is compacted away; the state survives it", () =>
  withDir((dir) => {
    const path = `${dir}/o.log`;
    const { outbox } = Outbox.open(path, 64 << 20);
    const big = new Uint8Array(64 << 10).fill(7);
    for (let i = 0; i < 200; i++) {
      const r = outbox.append(big)!;
      if (i < 190) outbox.ack(r.seq);
      outbox.flush();
    }
    assert.ok(outbox.compactions >= 1);
    assert.ok(Deno.statSync(path).size < 12 << 20, `file is ${Deno.statSync(path).size} bytes`);
    const { outbox: again, report } = Outbox.open(path, 64 << 20);
    assert.equal(report.recovered, 10);
    assert.deepEqual([...again.unacked()].map((r) => r.seq), [
      191,
      192,
      193,
      194,
      195,
      196,
      197,
      198,
      199,
      200,
    ]);
    again.close();
    outbox.close();
    assert.equal(Outbox.open(path, 64 << 20).report.recovered, 10);
  }));
