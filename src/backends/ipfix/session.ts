/**
 * One transport session's message stream (RFC 7011 §10): packs pending data records, grouped by
 * template, into messages no larger than `maxMessageSize`, templates first when asked, and keeps the
 * sequence number (data records sent before each message, modulo 2^32) of the session.
 */
import { recordLength, type Template } from "./elements.ts";
import {
  type DataRecord,
  dataSetLength,
  encodeDataSet,
  encodeMessage,
  encodeTemplateSet,
  MESSAGE_HEADER_LENGTH,
  SET_HEADER_LENGTH,
  templateSetLength,
} from "./encoder.ts";

/** A record and the template it is written with. */
export interface PendingRecord {
  readonly template: Template;
  readonly record: DataRecord;
}

/** A message ready to send and the data records in it. */
export interface PackedMessage {
  readonly bytes: Uint8Array;
  readonly records: number;
}

export interface SessionOptions {
  readonly observationDomainId: number;
  readonly pen: number;
  readonly maxMessageSize: number;
  readonly templates: readonly Template[];
}

export class ExportSession {
  #sequence = 0;
  readonly #templateSet: Uint8Array;

  constructor(private readonly opts: SessionOptions) {
    this.#templateSet = encodeTemplateSet(opts.templates, opts.pen);
    const smallest = MESSAGE_HEADER_LENGTH + templateSetLength(opts.templates);
    if (opts.maxMessageSize < smallest) {
      throw new RangeError(`an IPFIX message of ${opts.maxMessageSize} bytes cannot hold the templates`);
    }
  }

  /** The sequence number the next message carries. */
  get sequence(): number {
    return this.#sequence;
  }

  /** A new transport session (a TCP reconnection): the sequence starts over. */
  reset(): void {
    this.#sequence = 0;
  }

  /**
   * Messages carrying `records` in order (consecutive records of one template share a data set), the
   * template set at the head of the first when `withTemplates` (a template-only message when there are
   * no records). Advances the sequence number as if every message were sent.
   */
  pack(records: readonly PendingRecord[], withTemplates: boolean, exportTime: number): PackedMessage[] {
    const out: PackedMessage[] = [];
    const max = this.opts.maxMessageSize;
    let sets: Uint8Array[] = [];
    let size = MESSAGE_HEADER_LENGTH;
    let inMessage = 0;
    const close = () => {
      const bytes = encodeMessage({
        exportTime,
        sequence: this.#sequence,
        observationDomainId: this.opts.observationDomainId,
      }, sets);
      out.push({ bytes, records: inMessage });
      this.#sequence = (this.#sequence + inMessage) >>> 0;
      sets = [];
      size = MESSAGE_HEADER_LENGTH;
      inMessage = 0;
    };
    if (withTemplates) {
      sets.push(this.#templateSet);
      size += this.#templateSet.length;
    }
    let i = 0;
    while (i < records.length) {
      const t = records[i]!.template;
      let j = i;
      while (j < records.length && records[j]!.template === t) j++;
      // Records of t from i to j: as many per data set as the room left allows.
      const per = recordLength(t);
      while (i < j) {
        let fit = Math.floor((max - size - SET_HEADER_LENGTH) / per);
        while (fit > 0 && size + dataSetLength(t, fit) > max) fit--;
        if (fit <= 0) {
          if (sets.length === 0) {
            throw new RangeError(`an IPFIX message of ${max} bytes cannot hold a record`);
          }
          close();
          continue;
        }
        const n = Math.min(fit, j - i);
        const set = encodeDataSet(t, records.slice(i, i + n).map((r) => r.record));
        sets.push(set);
        size += set.length;
        inMessage += n;
        i += n;
      }
    }
    if (sets.length > 0) close();
    return out;
  }
}
