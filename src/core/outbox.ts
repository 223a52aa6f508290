/**
 * An on-disk outbox: messages a backend has taken but its broker has not acknowledged yet, kept in one
 * append-only file so that an outage, a restart or a SIGKILL loses none of them. Generic over the broker
 * (the nats backend uses it; a Kafka one could).
 *
 * File: a sequence of records, each `type u8 | length u32 | crc32 u32 | seq u64 | payload`, the CRC over
 * type, seq and payload. A data record carries one message; an ack record (empty payload) says every
 * message with a sequence number below `seq` is acknowledged. Acks beyond the first unacknowledged message
 * are not written: after a restart those messages are sent again, and the broker's deduplication (the
 * message id is stored with the message) drops the copies.
 *
 * Opening reads the file, cuts a torn or corrupt tail (from the first bad record to the end: nothing after
 * it can be framed reliably) and reports how much was cut. When the acknowledged prefix is large, the
 * file is rewritten with only the pending messages (to a temp file, then renamed over the old one).
 *
 * Full: `append` refuses a message once the pending payload reaches `maxBytes` (the caller counts and
 * logs it); nothing ever waits on the disk beyond one write per event-loop turn.
 */
import zlib from "node:zlib";

/** One message waiting for its acknowledgement. */
export interface OutboxRecord {
  readonly seq: number;
  readonly payload: Uint8Array;
}

/** What opening the file found. */
export interface OutboxOpenReport {
  /** Pending messages recovered. */
  recovered: number;
  /** Bytes cut from the end (a torn write or a corrupt record), 0 when the file was whole. */
  cutBytes: number;
  /** Why the tail was cut, when it was. */
  cutReason?: string;
}

const TYPE_DATA = 1;
const TYPE_ACK = 2;
const HEADER = 17;
/** Largest payload a record may carry (a firefly document is a few hundred bytes). */
export const MAX_RECORD_PAYLOAD = 1 << 20;
/** Rewrite the file once this many bytes of it are acknowledged messages and ack records. */
const COMPACT_AFTER_BYTES = 8 << 20;

/** CRC-32 (IEEE, zlib's: native, ~25 times faster than a table loop in JS) of type, seq and payload. */
function crc32(header: Uint8Array, payload: Uint8Array): number {
  return zlib.crc32(payload, zlib.crc32(header.subarray(9, HEADER), zlib.crc32(header.subarray(0, 1))));
}

function encodeRecord(type: number, seq: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER + payload.length);
  const v = new DataView(out.buffer);
  v.setUint8(0, type);
  v.setUint32(1, payload.length);
  v.setBigUint64(9, BigInt(seq));
  out.set(payload, HEADER);
  v.setUint32(5, crc32(out, payload));
  return out;
}

/** The outbox; `open` reads or creates its file. Single-threaded use from one component. */
export class Outbox {
  /** Pending messages, oldest first. */
  readonly #pending: OutboxRecord[] = [];
  /** Index in #pending of the oldest not yet acknowledged (those before it are acked, awaiting compaction). */
  #head = 0;
  /** Sequence numbers acknowledged out of order, above the oldest unacknowledged one. */
  readonly #ackedAhead = new Set<number>();
  #nextSeq = 1;
  #pendingBytes = 0;
  /** Bytes of the file taken by acknowledged messages and ack records. */
  #deadBytes = 0;
  #fileBytes = 0;
  #writeQueue: Uint8Array[] = [];
  #flushScheduled = false;
  /** Acks arrived since the last flush: the watermark record is due. */
  #ackDirty = false;
  /** The ack watermark last written. */
  #writtenWatermark = 0;
  #file: Deno.FsFile | undefined;
  /** Messages refused because the outbox was full. */
  refused = 0;
  /** Compactions done. */
  compactions = 0;
  /** Writes (and compactions) that failed; the last one's message. */
  writeErrors = 0;
  lastWriteError: string | undefined;
  /** Told about every failed write (for a rate-limited log line). */
  onWriteError: ((message: string) => void) | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(readonly path: string, readonly maxBytes: number) {}

  /** Opens (creating) the outbox at `path`, recovering pending messages and cutting a bad tail. */
  static open(path: string, maxBytes: number): { outbox: Outbox; report: OutboxOpenReport } {
    const box = new Outbox(path, maxBytes);
    let data: Uint8Array;
    try {
      data = Deno.readFileSync(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      data = new Uint8Array(0);
    }
    const report = box.#recover(data);
    box.#file = Deno.openSync(path, { read: true, write: true, create: true, mode: 0o600 });
    if (report.cutBytes > 0) box.#file.truncateSync(box.#fileBytes);
    box.#file.seekSync(box.#fileBytes, Deno.SeekMode.Start);
    return { outbox: box, report };
  }

  #recover(data: Uint8Array): OutboxOpenReport {
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const all: OutboxRecord[] = [];
    let watermark = 0, off = 0, cutReason: string | undefined;
    while (off < data.length) {
      if (data.length - off < HEADER) {
        cutReason = "a torn record header at the end";
        break;
      }
      const type = view.getUint8(off), len = view.getUint32(off + 1), crc = view.getUint32(off + 5);
      const seq = Number(view.getBigUint64(off + 9));
      if ((type !== TYPE_DATA && type !== TYPE_ACK) || len > MAX_RECORD_PAYLOAD) {
        cutReason = `a record with a bad header at byte ${off}`;
        break;
      }
      if (data.length - off - HEADER < len) {
        cutReason = "a torn record at the end";
        break;
      }
      const payload = data.subarray(off + HEADER, off + HEADER + len);
      if (crc32(data.subarray(off, off + HEADER), payload) !== crc) {
        cutReason = `a record whose checksum does not match at byte ${off}`;
        break;
      }
      if (type === TYPE_DATA) all.push({ seq, payload: payload.slice() });
      else watermark = Math.max(watermark, seq);
      off += HEADER + len;
    }
    this.#fileBytes = off;
    let maxSeq = watermark - 1;
    for (const r of all) {
      maxSeq = Math.max(maxSeq, r.seq);
      if (r.seq >= watermark) {
        this.#pending.push(r);
        this.#pendingBytes += r.payload.length;
      }
    }
    this.#nextSeq = Math.max(maxSeq + 1, 1);
    this.#writtenWatermark = watermark;
    let live = 0;
    for (const r of this.#pending) live += HEADER + r.payload.length;
    this.#deadBytes = off - live;
    return {
      recovered: this.#pending.length,
      cutBytes: data.length - off,
      ...(cutReason ? { cutReason } : {}),
    };
  }

  /** Messages not yet acknowledged. */
  get depth(): number {
    return this.#pending.length - this.#head;
  }

  /** Payload bytes of the messages not yet acknowledged. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** The size of the file (after pending writes). */
  get fileBytes(): number {
    return this.#fileBytes;
  }

  /**
   * Takes a message: its record goes to the file at the end of this event-loop turn (one write for all
   * the turn's records). Returns the record, or undefined when the outbox is full (counted in `refused`).
   */
  append(payload: Uint8Array): OutboxRecord | undefined {
    if (payload.length > MAX_RECORD_PAYLOAD) throw new RangeError(`message of ${payload.length} bytes`);
    if (this.#pendingBytes + payload.length > this.maxBytes) {
      this.refused++;
      return undefined;
    }
    const record = { seq: this.#nextSeq++, payload };
    this.#pending.push(record);
    this.#pendingBytes += payload.length;
    this.#queueWrite(encodeRecord(TYPE_DATA, record.seq, payload));
    return record;
  }

  /** The pending messages from the oldest unacknowledged on, in order (acked-ahead ones included). */
  *unacked(): Iterable<OutboxRecord> {
    for (let i = this.#head; i < this.#pending.length; i++) {
      const r = this.#pending[i]!;
      if (!this.#ackedAhead.has(r.seq)) yield r;
    }
  }

  /** Whether `seq` is still waiting for its acknowledgement. */
  isPending(seq: number): boolean {
    const first = this.#pending[this.#head];
    return first !== undefined && seq >= first.seq && !this.#ackedAhead.has(seq) &&
      seq <= this.#pending[this.#pending.length - 1]!.seq;
  }

  /** Records the broker's acknowledgement of `seq`; advances the durable watermark over a run of acks. */
  ack(seq: number): void {
    const first = this.#pending[this.#head];
    if (first === undefined || seq < first.seq || seq >= this.#nextSeq) return;
    if (seq !== first.seq) {
      this.#ackedAhead.add(seq);
      return;
    }
    this.#advance();
    while (true) {
      const next = this.#pending[this.#head];
      if (next === undefined || !this.#ackedAhead.delete(next.seq)) break;
      this.#advance();
    }
    // One ack record per turn at most, written after the turn's data records (see flush).
    this.#ackDirty = true;
    this.#scheduleFlush();
  }

  #advance(): void {
    const r = this.#pending[this.#head++]!;
    this.#pendingBytes -= r.payload.length;
    this.#deadBytes += HEADER + r.payload.length;
    // Drop acked records from memory in chunks (shifting one by one would be quadratic).
    if (this.#head > 4096 && this.#head * 2 > this.#pending.length) {
      this.#pending.splice(0, this.#head);
      this.#head = 0;
    }
  }

  #queueWrite(bytes: Uint8Array): void {
    this.#writeQueue.push(bytes);
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** Writes what is queued now (also called at the end of each turn, and by close). */
  flush(): void {
    this.#flushScheduled = false;
    if (this.#ackDirty) {
      this.#ackDirty = false;
      const watermark = this.#pending[this.#head]?.seq ?? this.#nextSeq;
      if (watermark > this.#writtenWatermark) {
        this.#writtenWatermark = watermark;
        const ack = encodeRecord(TYPE_ACK, watermark, new Uint8Array(0));
        this.#writeQueue.push(ack);
        this.#deadBytes += ack.length;
      }
    }
    if (!this.#file || this.#writeQueue.length === 0) return;
    const parts = this.#writeQueue;
    this.#writeQueue = [];
    const buf = joinBytes(parts);
    try {
      writeWholeSync(this.#file, buf);
    } catch (err) {
      this.#writeFailed(err, buf);
      return;
    }
    this.#fileBytes += buf.length;
    if (this.#deadBytes > COMPACT_AFTER_BYTES && this.#deadBytes * 2 > this.#fileBytes) {
      try {
        this.compact();
      } catch (err) {
        // The old file is still whole: it only keeps growing until a compaction succeeds.
        this.#noteError(err);
      }
    }
  }

  /**
   * A write failed (disk full, I/O error): the file is cut back to its last whole record, the bytes wait
   * for the next try (in a second, or the next turn's flush), and the messages stay pending in memory, so
   * they are still published; only a crash before a write succeeds would lose them.
   */
  #writeFailed(err: unknown, buf: Uint8Array): void {
    this.#noteError(err);
    try {
      this.#file!.truncateSync(this.#fileBytes);
      this.#file!.seekSync(this.#fileBytes, Deno.SeekMode.Start);
    } catch { /* the next write fails the same way and is counted */ }
    this.#writeQueue.unshift(buf);
    if (this.#retryTimer === undefined) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined;
        this.flush();
      }, 1000);
      Deno.unrefTimer(this.#retryTimer as unknown as number);
    }
  }

  #noteError(err: unknown): void {
    this.writeErrors++;
    this.lastWriteError = err instanceof Error ? err.message : String(err);
    this.onWriteError?.(this.lastWriteError);
  }

  /** Rewrites the file with the pending messages only (temp file, fsync, rename). */
  compact(): void {
    if (!this.#file) return;
    const tmp = `${this.path}.tmp`;
    const parts: Uint8Array[] = [];
    const watermark = this.#pending[this.#head]?.seq ?? this.#nextSeq;
    parts.push(encodeRecord(TYPE_ACK, watermark, new Uint8Array(0)));
    for (let i = this.#head; i < this.#pending.length; i++) {
      const r = this.#pending[i]!;
      parts.push(encodeRecord(TYPE_DATA, r.seq, r.payload));
    }
    const buf = joinBytes(parts);
    try {
      const f = Deno.openSync(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
      try {
        writeWholeSync(f, buf);
        f.syncSync();
      } finally {
        f.close();
      }
      Deno.renameSync(tmp, this.path);
    } catch (err) {
      try {
        Deno.removeSync(tmp);
      } catch { /* never made */ }
      throw err;
    }
    // The rewrite holds the whole state: records still queued for the old file would be copies.
    this.#writeQueue = [];
    this.#ackDirty = false;
    this.#file.close();
    this.#file = Deno.openSync(this.path, { read: true, write: true });
    this.#file.seekSync(0, Deno.SeekMode.End);
    this.#pending.splice(0, this.#head);
    this.#head = 0;
    this.#fileBytes = buf.length;
    this.#deadBytes = parts[0]!.length;
    this.#writtenWatermark = watermark;
    this.compactions++;
  }

  /** Writes what is queued and closes the file (compacted when nothing is pending). */
  close(): void {
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.flush();
    if (this.#file && this.depth === 0 && this.#fileBytes > 0) {
      try {
        this.compact();
      } catch (err) {
        this.#noteError(err);
      }
    }
    this.#file?.close();
    this.#file = undefined;
  }
}

/** The parts one after another in one buffer (one write for all records of a turn). */
function joinBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const buf = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    buf.set(p, off);
    off += p.length;
  }
  return buf;
}

/** Writes all of `buf` (a file write may take only part of it). */
function writeWholeSync(file: Deno.FsFile, buf: Uint8Array): void {
  for (let done = 0; done < buf.length;) done += file.writeSync(buf.subarray(done));
}
