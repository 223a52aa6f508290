/**
 * Builds Ethernet frames (optionally 802.1Q-tagged) carrying IPv6 or IPv4 with TCP, UDP or ICMPv6, and
 * computes what the SciTags marker must make of them, straight from the specification (flow label bits,
 * extension-header bytes), for BPF_PROG_TEST_RUN tests and benchmarks.
 */
import { IpAddress } from "../../src/net/ip.ts";

/** What goes into a test frame. */
export interface FrameSpec {
  /** 802.1Q tag control information (PCP, DEI, VID); no tag when undefined. */
  vlanTci?: number;
  /** IPv6 traffic class (DSCP << 2 | ECN). */
  trafficClass?: number;
  flowLabel?: number;
  hopLimit?: number;
  src: string;
  dst: string;
  /** "tcp", "udp", "icmpv6", or a raw next-header number. */
  protocol: "tcp" | "udp" | "icmpv6" | number;
  sport?: number;
  dport?: number;
  /** Bytes after the transport header (filled with a counting pattern). */
  payloadLength?: number;
  /** Leave out the Ethernet header (devices without one). */
  noEthernet?: boolean;
}

export const SRC_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
export const DST_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
export const ETH_HLEN = 14;
export const VLAN_HLEN = 4;
export const IPV6_HLEN = 40;

function nextHeaderOf(p: FrameSpec["protocol"]): number {
  return p === "tcp" ? 6 : p === "udp" ? 17 : p === "icmpv6" ? 58 : p;
}

function transportHeader(spec: FrameSpec, payloadLength: number): Uint8Array {
  const nh = nextHeaderOf(spec.protocol);
  const sport = spec.sport ?? 40000, dport = spec.dport ?? 5201;
  if (nh === 6) {
    const t = new Uint8Array(20);
    const dv = new DataView(t.buffer);
    dv.setUint16(0, sport);
    dv.setUint16(2, dport);
    dv.setUint32(4, 0x01020304);
    t[12] = 5 << 4; // data offset: 5 words
    t[13] = 0x18; // PSH|ACK
    dv.setUint16(14, 65535);
    return t;
  }
  if (nh === 17) {
    const t = new Uint8Array(8);
    const dv = new DataView(t.buffer);
    dv.setUint16(0, sport);
    dv.setUint16(2, dport);
    dv.setUint16(4, 8 + payloadLength);
    return t;
  }
  if (nh === 58) return Uint8Array.from([128, 0, 0, 0, 0x12, 0x34, 0, 1]); // echo request
  return new Uint8Array(0);
}

/** An IPv6 packet (fixed header + transport header + payload) without any link-layer header. */
export function ipv6Packet(spec: FrameSpec): Uint8Array {
  const payloadLength = spec.payloadLength ?? 0;
  const l4 = transportHeader(spec, payloadLength);
  const out = new Uint8Array(IPV6_HLEN + l4.length + payloadLength);
  const dv = new DataView(out.buffer);
  const tc = spec.trafficClass ?? 0;
  dv.setUint32(0, ((6 << 28) | (tc << 20) | ((spec.flowLabel ?? 0) & 0xfffff)) >>> 0);
  dv.setUint16(4, l4.length + payloadLength);
  out[6] = nextHeaderOf(spec.protocol);
  out[7] = spec.hopLimit ?? 64;
  out.set(IpAddress.parse(spec.src).bytes(), 8);
  out.set(IpAddress.parse(spec.dst).bytes(), 24);
  out.set(l4, IPV6_HLEN);
  for (let i = 0; i < payloadLength; i++) out[IPV6_HLEN + l4.length + i] = i & 0xff;
  return out;
}

function linkHeader(etherType: number, vlanTci: number | undefined): Uint8Array {
  const tagged = vlanTci !== undefined;
  const out = new Uint8Array(ETH_HLEN + (tagged ? VLAN_HLEN : 0));
  const dv = new DataView(out.buffer);
  out.set(DST_MAC, 0);
  out.set(SRC_MAC, 6);
  if (tagged) {
    dv.setUint16(12, 0x8100);
    dv.setUint16(14, vlanTci);
    dv.setUint16(16, etherType);
  } else {
    dv.setUint16(12, etherType);
  }
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** An Ethernet frame (tagged when `vlanTci` is set) carrying an IPv6 packet. */
export function ipv6Frame(spec: FrameSpec): Uint8Array {
  const packet = ipv6Packet(spec);
  return spec.noEthernet ? packet : concat(linkHeader(0x86dd, spec.vlanTci), packet);
}

/** An Ethernet frame carrying an IPv4/TCP packet (the marker must leave it alone). */
export function ipv4Frame(o: { vlanTci?: number; payloadLength?: number } = {}): Uint8Array {
  const payloadLength = o.payloadLength ?? 16;
  const ip = new Uint8Array(20 + 20 + payloadLength);
  const dv = new DataView(ip.buffer);
  ip[0] = 0x45;
  ip[1] = 0xb8;
  dv.setUint16(2, ip.length);
  ip[8] = 64;
  ip[9] = 6;
  ip.set([10, 0, 0, 1], 12);
  ip.set([10, 0, 0, 2], 16);
  dv.setUint16(20, 40000);
  dv.setUint16(22, 5201);
  ip[32] = 5 << 4;
  for (let i = 0; i < payloadLength; i++) ip[40 + i] = i & 0xff;
  return concat(linkHeader(0x0800, o.vlanTci), ip);
}

/** Where the IPv6 header starts in a frame built from `spec`. */
export function l3Offset(spec: Pick<FrameSpec, "vlanTci" | "noEthernet">): number {
  return spec.noEthernet ? 0 : ETH_HLEN + (spec.vlanTci !== undefined ? VLAN_HLEN : 0);
}

/** The frame with its flow label replaced by `label`, traffic class untouched (what label marking must give). */
export function withFlowLabel(frame: Uint8Array, l3: number, label: number): Uint8Array {
  const out = frame.slice();
  out[l3 + 1] = (out[l3 + 1]! & 0xf0) | ((label >>> 16) & 0x0f);
  out[l3 + 2] = (label >>> 8) & 0xff;
  out[l3 + 3] = label & 0xff;
  return out;
}

/** The flow label of the IPv6 packet at `l3`. */
export function flowLabelAt(frame: Uint8Array, l3: number): number {
  return ((frame[l3 + 1]! & 0x0f) << 16) | (frame[l3 + 2]! << 8) | frame[l3 + 3]!;
}

/** The traffic class of the IPv6 packet at `l3`. */
export function trafficClassAt(frame: Uint8Array, l3: number): number {
  return ((frame[l3]! & 0x0f) << 4) | (frame[l3 + 1]! >>> 4);
}

/** One SciTags option header: next header, length 0, option 0x1E of 3 bytes holding the tag, Pad1. */
export function optionHeader(next: number, tag: number): Uint8Array {
  return Uint8Array.from([next, 0, 0x1e, 3, (tag >>> 16) & 0xff, (tag >>> 8) & 0xff, tag & 0xff, 0]);
}

/**
 * The frame with the strategy's option header(s) inserted after the fixed IPv6 header, next header and
 * payload length updated. An in-band 802.1Q tag leaves the packet data for the skb's VLAN metadata
 * (`dropInBandTag`), which is how the marker makes room on tagged frames.
 */
export function withOptionHeaders(
  frame: Uint8Array,
  l3: number,
  strategy: "hopByHop" | "destination" | "hopByHopDestination",
  tag: number,
  dropInBandTag = false,
): Uint8Array {
  const ip = frame.slice(l3, l3 + IPV6_HLEN);
  const rest = frame.slice(l3 + IPV6_HLEN);
  const originalNext = ip[6]!;
  let ext: Uint8Array;
  if (strategy === "hopByHop") {
    ext = optionHeader(originalNext, tag);
    ip[6] = 0;
  } else if (strategy === "destination") {
    ext = optionHeader(originalNext, tag);
    ip[6] = 60;
  } else {
    ext = concat(optionHeader(60, tag), optionHeader(originalNext, tag));
    ip[6] = 0;
  }
  const dv = new DataView(ip.buffer);
  dv.setUint16(4, dv.getUint16(4) + ext.length);
  let link: Uint8Array = frame.slice(0, l3);
  if (dropInBandTag && l3 >= ETH_HLEN + VLAN_HLEN) {
    link = concat(frame.slice(0, 12), frame.slice(16, l3));
  }
  return concat(link, ip, ext, rest);
}

/** Hex dump for assertion messages. */
export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
