/**
 * The flowLabels key: the full identity of an egress flow as the packet carries it (both addresses,
 * both ports, protocol), so two flows that share a destination never collide (the original keyed on
 * the destination and ports only).
 *
 * Layout (40 bytes, every field in network byte order, exactly as on the wire):
 *
 * | offset | size | field                                   |
 * |--------|------|-----------------------------------------|
 * | 0      | 16   | source address (the local end)          |
 * | 16     | 16   | destination address (the peer)          |
 * | 32     | 2    | source port, big-endian                 |
 * | 34     | 2    | destination port, big-endian            |
 * | 36     | 1    | protocol: 6 (TCP) or 17 (UDP)           |
 * | 37     | 3    | zero                                    |
 */
import type { Endpoint, Protocol } from "../../core/flow_event.ts";
import { IpAddress } from "../../net/ip.ts";
import { FLOW_KEY_SIZE } from "./layout.ts";

/** IANA protocol numbers of the transports the marker handles. */
export const IPPROTO: Readonly<Record<Protocol, number>> = { tcp: 6, udp: 17 };

/** The fields a key is made of; `src` is the local end, as in flow events. */
export interface FlowIdentity {
  readonly protocol: Protocol;
  readonly src: Endpoint;
  readonly dst: Endpoint;
}

/** Thrown when a flow cannot be a marker key (IPv4, bad port); the message names the field. */
export class FlowKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FlowKeyError";
  }
}

function checkIpv6(what: string, address: IpAddress): void {
  if (address.family !== "ipv6" || address.isIpv4Mapped()) {
    throw new FlowKeyError(`${what} address ${address} is not IPv6; the marker only marks IPv6 packets`);
  }
}

function checkPort(what: string, port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new FlowKeyError(`${what} port ${port} is not an integer in 0..65535`);
  }
}

/** Encodes the key of a flow. */
export function encodeFlowKey(flow: FlowIdentity): Uint8Array<ArrayBuffer> {
  return encodeFlowKeyInto(flow, new Uint8Array(FLOW_KEY_SIZE));
}

/**
 * Encodes the key of a flow into `out` (FLOW_KEY_SIZE bytes, overwritten whole) and returns it: the map
 * updates reuse one buffer, since a fresh typed array per call cost more than the update itself.
 */
export function encodeFlowKeyInto(flow: FlowIdentity, out: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const src = flow.src, dst = flow.dst;
  checkIpv6("source", src.address);
  checkIpv6("destination", dst.address);
  checkPort("source", src.port);
  checkPort("destination", dst.port);
  const proto = IPPROTO[flow.protocol];
  if (proto === undefined) throw new FlowKeyError(`protocol ${flow.protocol} is neither tcp nor udp`);
  for (let i = 0; i < 16; i++) {
    out[i] = src.address.byteAt(i);
    out[16 + i] = dst.address.byteAt(i);
  }
  out[32] = src.port >> 8;
  out[33] = src.port & 0xff;
  out[34] = dst.port >> 8;
  out[35] = dst.port & 0xff;
  out[36] = proto;
  out[37] = out[38] = out[39] = 0;
  return out;
}

/** Decodes a key read back from the map (for listings and logs). */
export function decodeFlowKey(bytes: Uint8Array): FlowIdentity {
  if (bytes.length !== FLOW_KEY_SIZE) {
    throw new FlowKeyError(`a flow key has ${FLOW_KEY_SIZE} bytes, not ${bytes.length}`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const proto = bytes[36];
  const protocol: Protocol | undefined = proto === 6 ? "tcp" : proto === 17 ? "udp" : undefined;
  if (protocol === undefined) {
    throw new FlowKeyError(`flow key protocol ${proto} is neither 6 (tcp) nor 17 (udp)`);
  }
  return {
    protocol,
    src: { address: IpAddress.fromBytes(bytes.subarray(0, 16)), port: dv.getUint16(32, false) },
    dst: { address: IpAddress.fromBytes(bytes.subarray(16, 32)), port: dv.getUint16(34, false) },
  };
}
