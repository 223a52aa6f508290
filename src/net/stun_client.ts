/**
 * A STUN Binding client (RFC 5389): asks a server which address it sees our requests coming from, which
 * behind NAT is the public address the firefly backend puts into fireflies.
 *
 * Written here rather than taken from the npm `stun` package: that package cannot address IPv6 literals,
 * and its dependencies are old. The request is sent from a chosen local address; it is retransmitted
 * (RFC 5389 §7.2.1) until the answer with our transaction id arrives or the timeout expires; answers with
 * another transaction id or a bad FINGERPRINT are ignored; the socket is always closed.
 */
import dgram from "node:dgram";
import { lookup } from "node:dns/promises";
import { type Endpoint, type Family, formatEndpoint, IpAddress, splitHostPort } from "./ip.ts";

export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_BINDING_REQUEST = 0x0001;
export const STUN_BINDING_SUCCESS = 0x0101;
export const STUN_BINDING_ERROR = 0x0111;

export const ATTR_MAPPED_ADDRESS = 0x0001;
export const ATTR_ERROR_CODE = 0x0009;
export const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
/** The value some servers used before RFC 5389 assigned 0x0020. */
export const ATTR_XOR_MAPPED_ADDRESS_OLD = 0x8020;
export const ATTR_SOFTWARE = 0x8022;
export const ATTR_FINGERPRINT = 0x8028;

const FINGERPRINT_XOR = 0x5354554e;
const HEADER_SIZE = 20;
/** RFC 5389 §7.2.1: the first retransmission after 500 ms, then doubling. */
const INITIAL_RTO_MS = 500;

/** A STUN exchange failed; the message says with which server and why. */
export class StunError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StunError";
  }
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE 802.3, as zlib), which the FINGERPRINT attribute uses. */
export function crc32(bytes: Uint8Array): number {
  if (crcTable === undefined) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of bytes) crc = crcTable[(crc ^ b) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** A fresh random 96-bit transaction id. */
export function newTransactionId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(12));
}

/** A Binding Request with SOFTWARE and FINGERPRINT attributes. */
export function encodeBindingRequest(transactionId: Uint8Array, software = "flowd-go"): Uint8Array {
  if (transactionId.length !== 12) throw new RangeError("a STUN transaction id has 12 bytes");
  const name = new TextEncoder().encode(software);
  const softwareLength = 4 + Math.ceil(name.length / 4) * 4;
  const length = softwareLength + 8;
  const out = new Uint8Array(HEADER_SIZE + length);
  const view = new DataView(out.buffer);
  view.setUint16(0, STUN_BINDING_REQUEST);
  view.setUint16(2, length);
  view.setUint32(4, STUN_MAGIC_COOKIE);
  out.set(transactionId, 8);
  view.setUint16(20, ATTR_SOFTWARE);
  view.setUint16(22, name.length);
  out.set(name, 24);
  const fp = HEADER_SIZE + softwareLength;
  view.setUint16(fp, ATTR_FINGERPRINT);
  view.setUint16(fp + 2, 4);
  view.setUint32(fp + 4, (crc32(out.subarray(0, fp)) ^ FINGERPRINT_XOR) >>> 0);
  return out;
}

/** A decoded Binding response. */
export type StunResponse =
  | {
    readonly kind: "success";
    readonly transactionId: Uint8Array;
    /** XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS. */
    readonly mapped: Endpoint;
    readonly software: string | undefined;
  }
  | {
    readonly kind: "error";
    readonly transactionId: Uint8Array;
    readonly code: number;
    readonly reason: string;
  };

function readAddress(value: Uint8Array, xor: boolean, transactionId: Uint8Array): Endpoint {
  if (value.length < 8) throw new StunError(`address attribute of ${value.length} bytes is too short`);
  const family = value[1];
  const size = family === 0x01 ? 4 : family === 0x02 ? 16 : 0;
  if (size === 0) throw new StunError(`address attribute has unknown family 0x${family?.toString(16)}`);
  if (value.length < 4 + size) throw new StunError(`address attribute of ${value.length} bytes is too short`);
  let port = (value[2]! << 8) | value[3]!;
  const bytes = value.slice(4, 4 + size);
  if (xor) {
    port ^= STUN_MAGIC_COOKIE >>> 16;
    const mask = new Uint8Array(16);
    new DataView(mask.buffer).setUint32(0, STUN_MAGIC_COOKIE);
    mask.set(transactionId, 4);
    for (let i = 0; i < size; i++) bytes[i]! ^= mask[i]!;
  }
  let address = IpAddress.fromBytes(bytes);
  // A dual-stack server may report an IPv4 client as ::ffff:a.b.c.d.
  if (address.isIpv4Mapped()) address = IpAddress.fromBytes(bytes.subarray(12));
  return { address, port };
}

/**
 * Decodes a Binding success or error response; throws `StunError` for anything else (not STUN, wrong
 * length, bad FINGERPRINT, no mapped address).
 */
export function decodeStunResponse(received: Uint8Array): StunResponse {
  // A copy: Node's Buffer.slice() shares memory, and the XOR below must not alter the datagram.
  const datagram = new Uint8Array(received);
  if (datagram.length < HEADER_SIZE) throw new StunError(`${datagram.length} bytes is too short for STUN`);
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  const type = view.getUint16(0);
  const length = view.getUint16(2);
  if ((datagram[0]! & 0xc0) !== 0 || view.getUint32(4) !== STUN_MAGIC_COOKIE) {
    throw new StunError("not a STUN message (no magic cookie)");
  }
  if (length % 4 !== 0 || HEADER_SIZE + length !== datagram.length) {
    throw new StunError(`STUN length field ${length} does not match the ${datagram.length}-byte datagram`);
  }
  if (type !== STUN_BINDING_SUCCESS && type !== STUN_BINDING_ERROR) {
    throw new StunError(
      `STUN message type 0x${type.toString(16).padStart(4, "0")} is not a Binding response`,
    );
  }
  const transactionId = datagram.slice(8, 20);
  let xorMapped: Endpoint | undefined, mapped: Endpoint | undefined, software: string | undefined;
  let error: { code: number; reason: string } | undefined;
  for (let at = HEADER_SIZE; at < datagram.length;) {
    if (at + 4 > datagram.length) throw new StunError("truncated STUN attribute header");
    const attrType = view.getUint16(at);
    const attrLength = view.getUint16(at + 2);
    const value = datagram.subarray(at + 4, at + 4 + attrLength);
    if (value.length !== attrLength) {
      throw new StunError(`STUN attribute 0x${attrType.toString(16)} is truncated`);
    }
    switch (attrType) {
      case ATTR_XOR_MAPPED_ADDRESS:
      case ATTR_XOR_MAPPED_ADDRESS_OLD:
        xorMapped ??= readAddress(value, true, transactionId);
        break;
      case ATTR_MAPPED_ADDRESS:
        mapped ??= readAddress(value, false, transactionId);
        break;
      case ATTR_SOFTWARE:
        software = new TextDecoder().decode(value);
        break;
      case ATTR_ERROR_CODE:
        if (value.length >= 4) {
          error = {
            code: (value[2]! & 0x7) * 100 + value[3]!,
            reason: new TextDecoder().decode(value.subarray(4)),
          };
        }
        break;
      case ATTR_FINGERPRINT: {
        const expected = (crc32(datagram.subarray(0, at)) ^ FINGERPRINT_XOR) >>> 0;
        if (attrLength !== 4 || view.getUint32(at + 4) !== expected) {
          throw new StunError("STUN FINGERPRINT does not match the message");
        }
        break;
      }
    }
    at += 4 + Math.ceil(attrLength / 4) * 4;
  }
  if (type === STUN_BINDING_ERROR) {
    return { kind: "error", transactionId, code: error?.code ?? 0, reason: error?.reason ?? "" };
  }
  const endpoint = xorMapped ?? mapped;
  if (endpoint === undefined) throw new StunError("STUN Binding response has no mapped address");
  return { kind: "success", transactionId, mapped: endpoint, software };
}

/** What `stunBinding` needs. */
export interface StunBindingOptions {
  /** "host:port" or "[ipv6]:port". */
  server: string;
  /** Send from this address (and its family); default: any address of the server's family. */
  localAddress?: IpAddress;
  timeoutMs: number;
  signal?: AbortSignal;
}

/** A successful Binding. */
export interface StunBindingResult {
  /** The address and port the server saw. */
  mapped: Endpoint;
  /** The server's address as resolved. */
  server: Endpoint;
  rttMs: number;
}

/** Resolves a server name to an address of the wanted family (any when undefined). */
async function resolveServer(text: string, family: Family | undefined): Promise<Endpoint> {
  let hostPort;
  try {
    hostPort = splitHostPort(text);
  } catch (err) {
    throw new StunError(`STUN server ${JSON.stringify(text)}: ${err instanceof Error ? err.message : err}`);
  }
  const literal = IpAddress.tryParse(hostPort.host);
  if (literal !== undefined) {
    if (family !== undefined && literal.family !== family) {
      throw new StunError(`STUN server ${text} is ${literal.family}, the local address ${family}`);
    }
    return { address: literal, port: hostPort.port };
  }
  try {
    const found = await lookup(
      hostPort.host,
      family === undefined ? {} : { family: family === "ipv4" ? 4 : 6 },
    );
    return { address: IpAddress.parse(found.address), port: hostPort.port };
  } catch (err) {
    const why = (err as { code?: string }).code ?? (err instanceof Error ? err.message : String(err));
    throw new StunError(`cannot resolve STUN server ${text}${family ? ` (${family})` : ""}: ${why}`);
  }
}

/**
 * One Binding transaction: resolve the server, send from `localAddress`, retransmit until an answer with
 * our transaction id, and return the mapped address. Throws `StunError` on every failure.
 */
export async function stunBinding(opts: StunBindingOptions): Promise<StunBindingResult> {
  const started = performance.now();
  const server = await resolveServer(opts.server, opts.localAddress?.family);
  if (opts.signal?.aborted) throw new StunError(`STUN query to ${opts.server} cancelled`);
  const family = server.address.family;
  const socket = dgram.createSocket({
    type: family === "ipv4" ? "udp4" : "udp6",
    ipv6Only: family === "ipv6",
  });
  const transactionId = newTransactionId();
  const request = encodeBindingRequest(transactionId);
  const serverText = formatEndpoint(server);
  const ignored: string[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let retransmit: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, opts.localAddress?.toString() ?? (family === "ipv4" ? "0.0.0.0" : "::"), () => {
        socket.off("error", reject);
        resolve();
      });
    }).catch((err) => {
      throw new StunError(
        `cannot bind a UDP socket to ${opts.localAddress ?? "any address"}: ${err.message}`,
      );
    });
    return await new Promise<StunBindingResult>((resolve, reject) => {
      const fail = (message: string) => reject(new StunError(message));
      socket.on("error", (err) => fail(`STUN query to ${serverText} failed: ${err.message}`));
      socket.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
        const from = IpAddress.tryParse(rinfo.address);
        if (from === undefined || !from.equals(server.address) || rinfo.port !== server.port) return;
        let response: StunResponse;
        try {
          response = decodeStunResponse(msg);
        } catch (err) {
          ignored.push(err instanceof Error ? err.message : String(err));
          return;
        }
        if (!response.transactionId.every((b, i) => b === transactionId[i])) {
          ignored.push("an answer to another transaction");
          return;
        }
        if (response.kind === "error") {
          fail(
            `STUN server ${serverText} answered error ${response.code}${
              response.reason ? ` ${response.reason}` : ""
            }`,
          );
        } else {
          resolve({ mapped: response.mapped, server, rttMs: performance.now() - started });
        }
      });
      let rto = INITIAL_RTO_MS;
      const send = () => {
        socket.send(request, server.port, server.address.toString(), (err) => {
          if (err) fail(`cannot send to STUN server ${serverText}: ${err.message}`);
        });
        retransmit = setTimeout(send, rto);
        rto *= 2;
      };
      timer = setTimeout(() => {
        const why = ignored.length ? `; ignored ${ignored.length} datagram(s): ${ignored.at(-1)}` : "";
        fail(`no answer from STUN server ${serverText} within ${opts.timeoutMs} ms${why}`);
      }, opts.timeoutMs);
      onAbort = () => fail(`STUN query to ${serverText} cancelled`);
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      send();
    });
  } finally {
    clearTimeout(timer);
    clearTimeout(retransmit);
    if (onAbort) opts.signal?.removeEventListener("abort", onAbort);
    await new Promise<void>((r) => {
      try {
        socket.close(() => r());
      } catch {
        r();
      }
    });
  }
}
