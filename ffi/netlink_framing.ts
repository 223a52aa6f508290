/**
 * Netlink message and attribute framing on plain bytes: building requests, splitting datagrams into
 * messages, walking attributes, decoding NLMSG_ERROR/NLMSG_DONE, and collecting a request's replies.
 *
 * Kept free of sockets so every rule (alignment, truncation, sequence checks, multipart ends) is testable
 * on crafted bytes. Host-order fields are little-endian: this code targets x86-64 and arm64 Linux.
 */

/** Size of `struct nlmsghdr`. */
export const NLMSG_HDRLEN = 16;
/** Size of `struct nlattr`/`struct rtattr` header. */
export const NLA_HDRLEN = 4;

/** Control message types. */
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

/** Request and reply header flags. */
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
/** Flags on an NLMSG_ERROR: the original request was left out / extended-ack attributes follow. */
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;

/** Attribute type bits that are flags, not part of the type. */
export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

/** Extended-ack attributes in NLMSG_ERROR and NLMSG_DONE. */
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;
export const NLMSGERR_ATTR_MISS_TYPE = 5;

/** Rounds up to the 4-byte boundary netlink messages and attributes are padded to. */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

/** A netlink failure: a kernel error reply, a failed socket call, or malformed bytes. */
export class NetlinkError extends Error {
  /** Positive errno, or 0 when the bytes themselves were wrong. */
  readonly errno: number;
  /** The kernel's extended-ack text, when it sent one. */
  readonly extAck: string | undefined;

  constructor(message: string, options: { errno?: number; extAck?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "NetlinkError";
    this.errno = options.errno ?? 0;
    this.extAck = options.extAck;
  }
}

/** One netlink message; `payload` is a view of the bytes after the header, without trailing padding. */
export interface NetlinkMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  readonly payload: Uint8Array;
}

/** One attribute; `type` has the nested/byte-order flag bits removed. */
export interface NetlinkAttribute {
  readonly type: number;
  readonly nested: boolean;
  readonly netByteOrder: boolean;
  /** The attribute's value (length from its header), without padding. */
  readonly value: Uint8Array;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Builds one message: header (length filled in) followed by the payload. */
export function encodeMessage(
  header: { type: number; flags: number; seq: number; pid?: number },
  payload: Uint8Array,
): Uint8Array {
  const length = NLMSG_HDRLEN + payload.byteLength;
  const out = new Uint8Array(align4(length));
  const v = view(out);
  v.setUint32(0, length, true);
  v.setUint16(4, header.type, true);
  v.setUint16(6, header.flags, true);
  v.setUint32(8, header.seq >>> 0, true);
  v.setUint32(12, header.pid ?? 0, true);
  out.set(payload, NLMSG_HDRLEN);
  return out;
}

/** Splits a received datagram into messages; throws `NetlinkError` on a length that does not fit. */
export function parseMessages(datagram: Uint8Array): NetlinkMessage[] {
  const messages: NetlinkMessage[] = [];
  const v = view(datagram);
  let offset = 0;
  while (offset < datagram.byteLength) {
    const left = datagram.byteLength - offset;
    if (left < NLMSG_HDRLEN) {
      throw new NetlinkError(`netlink datagram ends with ${left} stray bytes at offset ${offset}`);
    }
    const length = v.getUint32(offset, true);
    if (length < NLMSG_HDRLEN || length > left) {
      throw new NetlinkError(
        `netlink message at offset ${offset} claims ${length} bytes but ${left} remain (truncated or corrupt)`,
      );
    }
    messages.push({
      type: v.getUint16(offset + 4, true),
      flags: v.getUint16(offset + 6, true),
      seq: v.getUint32(offset + 8, true),
      pid: v.getUint32(offset + 12, true),
      payload: datagram.subarray(offset + NLMSG_HDRLEN, offset + length),
    });
    offset += align4(length);
  }
  return messages;
}

/** Walks the attributes in `bytes`; throws `NetlinkError` naming the offset of one that does not fit. */
export function parseAttributes(bytes: Uint8Array): NetlinkAttribute[] {
  const attributes: NetlinkAttribute[] = [];
  const v = view(bytes);
  let offset = 0;
  while (offset + NLA_HDRLEN <= bytes.byteLength) {
    const length = v.getUint16(offset, true);
    const rawType = v.getUint16(offset + 2, true);
    if (length < NLA_HDRLEN || offset + length > bytes.byteLength) {
      throw new NetlinkError(
        `netlink attribute type ${rawType & NLA_TYPE_MASK} at offset ${offset} claims ${length} bytes ` +
          `but ${bytes.byteLength - offset} remain`,
      );
    }
    attributes.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      netByteOrder: (rawType & NLA_F_NET_BYTEORDER) !== 0,
      value: bytes.subarray(offset + NLA_HDRLEN, offset + length),
    });
    offset += align4(length);
  }
  // Fewer than 4 bytes left can only be padding the sender did not strip; anything else is junk.
  if (offset < bytes.byteLength && bytes.subarray(offset).some((b) => b !== 0)) {
    throw new NetlinkError(`netlink attributes end with ${bytes.byteLength - offset} stray bytes`);
  }
  return attributes;
}

/** Attributes by type (the last one wins, as the kernel's own parsers do). */
export function attributeMap(bytes: Uint8Array): Map<number, Uint8Array> {
  const map = new Map<number, Uint8Array>();
  for (const a of parseAttributes(bytes)) map.set(a.type, a.value);
  return map;
}

/** Builds one attribute (header, value, padding). */
export function encodeAttribute(type: number, value: Uint8Array): Uint8Array {
  const length = NLA_HDRLEN + value.byteLength;
  const out = new Uint8Array(align4(length));
  const v = view(out);
  v.setUint16(0, length, true);
  v.setUint16(2, type, true);
  out.set(value, NLA_HDRLEN);
  return out;
}

/** Builds a nested attribute holding already-encoded attributes. */
export function encodeNested(type: number, children: readonly Uint8Array[]): Uint8Array {
  return encodeAttribute(type | NLA_F_NESTED, concatBytes(children));
}

/** Concatenates byte arrays (payload struct followed by attributes, for instance). */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.byteLength;
  }
  return out;
}

/** An attribute as an unsigned 8-bit value; throws if it is shorter. */
export function attrU8(value: Uint8Array, what = "attribute"): number {
  if (value.byteLength < 1) throw new NetlinkError(`${what} is empty, expected a u8`);
  return value[0]!;
}

/** An attribute as a host-order u32; throws if it is shorter. */
export function attrU32(value: Uint8Array, what = "attribute"): number {
  if (value.byteLength < 4) throw new NetlinkError(`${what} has ${value.byteLength} bytes, expected a u32`);
  return view(value).getUint32(0, true);
}

/** An attribute as a host-order u64; throws if it is shorter. */
export function attrU64(value: Uint8Array, what = "attribute"): bigint {
  if (value.byteLength < 8) throw new NetlinkError(`${what} has ${value.byteLength} bytes, expected a u64`);
  return view(value).getBigUint64(0, true);
}

const UTF8 = new TextDecoder();

/** An attribute as a string, up to its first NUL. */
export function attrString(value: Uint8Array): string {
  const nul = value.indexOf(0);
  return UTF8.decode(nul >= 0 ? value.subarray(0, nul) : value);
}

/** What an NLMSG_ERROR (or an NLMSG_DONE that carries an error) says. */
export interface ErrorReply {
  /** 0 for an acknowledgement, otherwise a positive errno. */
  readonly errno: number;
  readonly extAck: string | undefined;
  /** Byte offset of the offending attribute in the request, when the kernel named one. */
  readonly extAckOffset: number | undefined;
  /** Type of a required attribute the request lacked, when the kernel named one. */
  readonly missingAttribute: number | undefined;
}

function parseExtAck(tlvs: Uint8Array): Pick<ErrorReply, "extAck" | "extAckOffset" | "missingAttribute"> {
  let extAck: string | undefined, extAckOffset: number | undefined, missingAttribute: number | undefined;
  for (const a of parseAttributes(tlvs)) {
    if (a.type === NLMSGERR_ATTR_MSG) extAck = attrString(a.value);
    else if (a.type === NLMSGERR_ATTR_OFFS && a.value.byteLength >= 4) extAckOffset = attrU32(a.value);
    else if (a.type === NLMSGERR_ATTR_MISS_TYPE && a.value.byteLength >= 4) {
      missingAttribute = attrU32(a.value);
    }
  }
  return { extAck, extAckOffset, missingAttribute };
}

/** Decodes an NLMSG_ERROR message: errno, and the extended ack when present. */
export function parseErrorMessage(message: NetlinkMessage): ErrorReply {
  const p = message.payload;
  // struct nlmsgerr: int error, then the header of the request that failed.
  if (p.byteLength < 4 + NLMSG_HDRLEN) {
    throw new NetlinkError(`NLMSG_ERROR payload has ${p.byteLength} bytes, expected at least 20`);
  }
  const error = view(p).getInt32(0, true);
  let tlvStart = 4 + NLMSG_HDRLEN;
  if ((message.flags & NLM_F_CAPPED) === 0) {
    // Uncapped: the whole original request is echoed back before the attributes.
    const echoed = view(p).getUint32(4, true);
    tlvStart = 4 + align4(Math.max(echoed, NLMSG_HDRLEN));
  }
  const ext = (message.flags & NLM_F_ACK_TLVS) !== 0 && tlvStart < p.byteLength
    ? parseExtAck(p.subarray(tlvStart))
    : { extAck: undefined, extAckOffset: undefined, missingAttribute: undefined };
  return { errno: error === 0 ? 0 : -error, ...ext };
}

/** Decodes an NLMSG_DONE message: a dump may end with an error code and an extended ack. */
export function parseDoneMessage(message: NetlinkMessage): ErrorReply {
  const p = message.payload;
  const error = p.byteLength >= 4 ? view(p).getInt32(0, true) : 0;
  const ext = (message.flags & NLM_F_ACK_TLVS) !== 0 && p.byteLength > 4
    ? parseExtAck(p.subarray(4))
    : { extAck: undefined, extAckOffset: undefined, missingAttribute: undefined };
  return { errno: error === 0 ? 0 : -error, ...ext };
}

/** How a request is answered: a multipart dump ended by NLMSG_DONE, or replies ended by an ack. */
export type ReplyMode = "dump" | "ack";

/**
 * Collects the replies to one request from successive datagrams.
 *
 * Messages with another sequence number (left over from an abandoned request) are counted and skipped.
 * A kernel error ends collection with a `NetlinkError` built by `describe` (which supplies strerror text).
 */
export class ReplyCollector {
  readonly replies: NetlinkMessage[] = [];
  /** Messages skipped because their sequence number or port id belonged to another request. */
  skipped = 0;
  /** True when the kernel flagged the dump as inconsistent (the table changed while it was read). */
  interrupted = false;
  #done = false;

  constructor(
    readonly seq: number,
    readonly mode: ReplyMode,
    readonly portId: number,
    readonly describe: (reply: ErrorReply) => NetlinkError,
    /** Takes each reply as it comes instead of `replies` (its bytes may be reused after the call). */
    readonly onReply?: (reply: NetlinkMessage) => void,
  ) {}

  /** True once the last message of the answer was seen. */
  get done(): boolean {
    return this.#done;
  }

  /** Takes the messages of one datagram; returns `done`. Throws `NetlinkError` for a kernel error. */
  feed(messages: readonly NetlinkMessage[]): boolean {
    for (const m of messages) {
      if (this.#done) {
        this.skipped++;
        continue;
      }
      if (m.seq !== this.seq || (m.pid !== 0 && m.pid !== this.portId)) {
        this.skipped++;
        continue;
      }
      if ((m.flags & NLM_F_DUMP_INTR) !== 0) this.interrupted = true;
      if (m.type === NLMSG_NOOP) continue;
      if (m.type === NLMSG_OVERRUN) throw new NetlinkError("netlink reported a data overrun (NLMSG_OVERRUN)");
      if (m.type === NLMSG_ERROR) {
        const reply = parseErrorMessage(m);
        if (reply.errno !== 0) throw this.describe(reply);
        // An ack ends an ack-mode request; in a dump it can only mean the dump is over.
        this.#done = true;
        continue;
      }
      if (m.type === NLMSG_DONE) {
        const reply = parseDoneMessage(m);
        if (reply.errno !== 0) throw this.describe(reply);
        this.#done = true;
        continue;
      }
      if (this.onReply) this.onReply(m);
      else this.replies.push(m);
      // A single (non-multipart) reply to a dump request is the whole answer.
      if (this.mode === "dump" && (m.flags & NLM_F_MULTI) === 0) this.#done = true;
    }
    return this.#done;
  }
}
