/**
 * A small IPFIX reader for tests (RFC 7011 §3): messages into header fields, template records and data
 * records with their values as numbers or bigints (addresses as text), independent of the encoder.
 */
import { IpAddress } from "../../src/net/ip.ts";

export interface DecodedField {
  id: number;
  length: number;
  pen?: number;
}

export interface DecodedMessage {
  version: number;
  length: number;
  exportTime: number;
  sequence: number;
  domain: number;
  templates: Array<{ id: number; fields: DecodedField[] }>;
  /** Data records: field key ("id" or "pen:id") → value. */
  records: Array<{ templateId: number; values: Record<string, number | bigint | string> }>;
}

/** Decodes one message, learning templates into (and reading data sets through) `known`. */
export function decodeIpfix(bytes: Uint8Array, known: Map<number, DecodedField[]>): DecodedMessage {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const m: DecodedMessage = {
    version: v.getUint16(0),
    length: v.getUint16(2),
    exportTime: v.getUint32(4),
    sequence: v.getUint32(8),
    domain: v.getUint32(12),
    templates: [],
    records: [],
  };
  if (m.length !== bytes.length) throw new Error(`message length ${m.length} != ${bytes.length}`);
  let o = 16;
  while (o < bytes.length) {
    const setId = v.getUint16(o), setLen = v.getUint16(o + 2);
    if (setLen < 4 || o + setLen > bytes.length) throw new Error(`bad set length ${setLen} at ${o}`);
    const end = o + setLen;
    let p = o + 4;
    if (setId === 2) {
      while (end - p >= 4) {
        const id = v.getUint16(p), count = v.getUint16(p + 2);
        p += 4;
        const fields: DecodedField[] = [];
        for (let i = 0; i < count; i++) {
          const raw = v.getUint16(p), length = v.getUint16(p + 2);
          p += 4;
          if (raw & 0x8000) {
            fields.push({ id: raw & 0x7fff, length, pen: v.getUint32(p) });
            p += 4;
          } else fields.push({ id: raw, length });
        }
        known.set(id, fields);
        m.templates.push({ id, fields });
      }
    } else if (setId >= 256) {
      const fields = known.get(setId);
      if (!fields) throw new Error(`data set ${setId} before its template`);
      const size = fields.reduce((s, f) => s + f.length, 0);
      while (end - p >= size) {
        const values: Record<string, number | bigint | string> = {};
        for (const f of fields) {
          const key = f.pen === undefined ? String(f.id) : `${f.pen}:${f.id}`;
          const b = bytes.subarray(p, p + f.length);
          values[key] =
            f.length === 16 || (f.length === 4 && (f.id === 8 || f.id === 12) && f.pen === undefined)
              ? IpAddress.fromBytes(b).toString()
              : f.length === 8
              ? new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0)
              : b.reduce((n, x) => n * 256 + x, 0);
          p += f.length;
        }
        m.records.push({ templateId: setId, values });
      }
      if (end - p >= 4 || bytes.subarray(p, end).some((x) => x !== 0)) throw new Error("bad padding");
    }
    o = end;
  }
  return m;
}
