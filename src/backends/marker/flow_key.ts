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

/** The 16 bytes the packet carries for an IPv6 address; IPv4 (and IPv4-mapped) addresses are refused. */
function ipv6Bytes(what: string, address: IpAddress): Uint8Array {
  if (address.family !== "ipv6" || address.isIpv4Mapped()) {
    throw new FlowKeyError(`${what} address ${address} is not IPv6; the marker only marks IPv6 packets`);
  }
  return address.bytes();
}

function checkPort(what: string, port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new FlowKeyError(`${what} port ${port} is not an integer in 0..65535`);
  }
}

/** Encodes the key of a flow. */
export function encodeFlowKey(flow: FlowIdentity): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(FLOW_KEY_SIZE);
  const dv = new DataView(out.buffer);
  out.set(ipv6Bytes("source", flow.src.address), 0);
  out.set(ipv6Bytes("destination", flow.dst.address), 16);
  checkPort("source", flow.src.port);
  checkPort("destination", flow.dst.port);
  dv.setUint16(32, flow.src.port, false);
  dv.setUint16(34, flow.dst.port, false);
  const proto = IPPROTO[flow.protocol];
  if (proto === undefined) throw new FlowKeyError(`protocol ${flow.protocol} is neither tcp nor udp`);
  out[36] = proto;
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
