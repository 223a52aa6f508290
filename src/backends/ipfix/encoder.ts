/**
 * IPFIX message encoding (RFC 7011): the 16-byte message header, template sets and data sets, written
 * from the element table. Sets are padded with zeros to a multiple of 4 bytes (§3.3.1: padding shorter
 * than a record, so collectors skip it). Pure functions of their inputs, so tests compare bytes.
 */
import { ELEMENT_SPECS, type ElementName, recordLength, type Template } from "./elements.ts";

export const IPFIX_VERSION = 10;
export const MESSAGE_HEADER_LENGTH = 16;
export const SET_HEADER_LENGTH = 4;
export const TEMPLATE_SET_ID = 2;

/** A field value: numbers and bigints for integers and times (ms since the epoch), bytes for addresses. */
export type FieldValue = number | bigint | Uint8Array;

/** One data record: a value for every field of its template. */
export type DataRecord = Readonly<Partial<Record<ElementName, FieldValue>>>;

/** What goes into a message header besides its length. */
export interface MessageHeader {
  /** Export time, seconds since the epoch. */
  readonly exportTime: number;
  /** Data records sent in this transport session before this message, modulo 2^32. */
  readonly sequence: number;
  readonly observationDomainId: number;
}

const pad4 = (n: number) => (n + 3) & ~3;

/** Bytes a template set with these templates takes. */
export function templateSetLength(templates: readonly Template[]): number {
  let n = SET_HEADER_LENGTH;
  for (const t of templates) {
    n += 4;
    for (const f of t.fields) n += ELEMENT_SPECS[f].enterprise ? 8 : 4;
  }
  return pad4(n);
}

/** Bytes a data set of `count` records of the template takes, padding included. */
export function dataSetLength(t: Template, count: number): number {
  return pad4(SET_HEADER_LENGTH + count * recordLength(t));
}

/** A template set (set id 2) describing the templates; enterprise fields carry `pen`. */
export function encodeTemplateSet(templates: readonly Template[], pen: number): Uint8Array {
  const out = new Uint8Array(templateSetLength(templates));
  const v = new DataView(out.buffer);
  v.setUint16(0, TEMPLATE_SET_ID);
  v.setUint16(2, out.length);
  let o = SET_HEADER_LENGTH;
  for (const t of templates) {
    v.setUint16(o, t.id);
    v.setUint16(o + 2, t.fields.length);
    o += 4;
    for (const f of t.fields) {
      const e = ELEMENT_SPECS[f];
      const enterprise = e.enterprise === true;
      v.setUint16(o, enterprise ? 0x8000 | e.id : e.id);
      v.setUint16(o + 2, e.length);
      o += 4;
      if (enterprise) {
        v.setUint32(o, pen);
        o += 4;
      }
    }
  }
  return out;
}

/** A data set (set id = template id) of the records, each field written as the table says. */
export function encodeDataSet(t: Template, records: readonly DataRecord[]): Uint8Array {
  const out = new Uint8Array(dataSetLength(t, records.length));
  const v = new DataView(out.buffer);
  v.setUint16(0, t.id);
  v.setUint16(2, out.length);
  let o = SET_HEADER_LENGTH;
  for (const r of records) {
    for (const f of t.fields) {
      const e = ELEMENT_SPECS[f];
      writeField(v, out, o, f, e.type, r[f]);
      o += e.length;
    }
  }
  return out;
}

function writeField(v: DataView, out: Uint8Array, o: number, name: string, type: string, value: unknown) {
  if (value === undefined) throw new RangeError(`IPFIX record lacks ${name}`);
  switch (type) {
    case "unsigned8":
      v.setUint8(o, Number(value));
      return;
    case "unsigned16":
      v.setUint16(o, Number(value));
      return;
    case "unsigned32":
      v.setUint32(o, Number(value));
      return;
    case "unsigned64":
    case "dateTimeMilliseconds":
      v.setBigUint64(o, BigInt.asUintN(64, BigInt(value as number | bigint)));
      return;
    case "ipv4Address":
    case "ipv6Address": {
      const bytes = value as Uint8Array;
      const len = type === "ipv4Address" ? 4 : 16;
      if (!(bytes instanceof Uint8Array) || bytes.length !== len) {
        throw new RangeError(`IPFIX field ${name} needs ${len} address bytes`);
      }
      out.set(bytes, o);
      return;
    }
  }
}

/** A message: header (version 10, total length, export time, sequence, domain) then the sets as given. */
export function encodeMessage(header: MessageHeader, sets: readonly Uint8Array[]): Uint8Array {
  let length = MESSAGE_HEADER_LENGTH;
  for (const s of sets) length += s.length;
  if (length > 0xffff) throw new RangeError(`IPFIX message of ${length} bytes exceeds 65535`);
  const out = new Uint8Array(length);
  const v = new DataView(out.buffer);
  v.setUint16(0, IPFIX_VERSION);
  v.setUint16(2, length);
  v.setUint32(4, header.exportTime >>> 0);
  v.setUint32(8, header.sequence >>> 0);
  v.setUint32(12, header.observationDomainId >>> 0);
  let o = MESSAGE_HEADER_LENGTH;
  for (const s of sets) {
    out.set(s, o);
    o += s.length;
  }
  return out;
}
