/**
 * TCP socket statistics from the kernel (NETLINK_SOCK_DIAG, inet_diag): tcp_info, congestion control,
 * memory, TOS and the congestion-control specific blocks, for the netlink enricher.
 *
 * Field names follow flowd-go's "full" enrichment names so the firefly and Prometheus backends can use
 * the objects as they are. Kernel structures are read by their attribute length: newer kernels append
 * fields (6.18 returns a 280-byte tcp_info) and older ones return fewer.
 */
import {
  NETLINK_SOCK_DIAG,
  type NetlinkMessage,
  NetlinkSocket,
  type NetlinkSocketOptions,
} from "../../ffi/netlink.ts";
import {
  attrString,
  attrU32,
  attrU64,
  attrU8,
  NetlinkError,
  NLA_TYPE_MASK,
  parseAttributes,
} from "../../ffi/netlink_framing.ts";
import { type Endpoint, type Family, IpAddress } from "./ip.ts";

/** Netlink message type of inet_diag requests and replies. */
export const SOCK_DIAG_BY_FAMILY = 20;

/** inet_diag reply attributes. */
export const INET_DIAG_MEMINFO = 1;
export const INET_DIAG_INFO = 2;
export const INET_DIAG_VEGASINFO = 3;
export const INET_DIAG_CONG = 4;
export const INET_DIAG_TOS = 5;
export const INET_DIAG_TCLASS = 6;
export const INET_DIAG_SKMEMINFO = 7;
export const INET_DIAG_SHUTDOWN = 8;
export const INET_DIAG_DCTCPINFO = 9;
export const INET_DIAG_PROTOCOL = 10;
export const INET_DIAG_SKV6ONLY = 11;
export const INET_DIAG_MARK = 15;
export const INET_DIAG_BBRINFO = 16;
export const INET_DIAG_CLASS_ID = 17;
export const INET_DIAG_CGROUP_ID = 21;

/** The request's extension bit for a reply attribute (DCTCP and BBR info come with the Vegas bit). */
export function extensionBit(attribute: number): number {
  return 1 << (attribute - 1);
}

/** Every extension the 8-bit request field can ask for. */
export const INET_DIAG_EXT_ALL = 0xff;

/** TCP states (include/net/tcp_states.h). */
export const TCP_ESTABLISHED = 1;
export const TCP_LISTEN = 10;

/** State bitmask for every state. */
export const TCPF_ALL = 0xffffffff;
/** flowd-go's default state mask: every ordinary state except LISTEN. */
export const TCPF_ALL_BUT_LISTEN = 0xbff;

export const IPPROTO_TCP = 6;

const AF_INET = 2;
const AF_INET6 = 10;
const REQUEST_SIZE = 56;
const MSG_SIZE = 72;
/** Cookie value that tells the kernel not to check the socket cookie. */
const NO_COOKIE = 0xffffffff;

/** The kernel's socket identity: ports in host order, addresses as read (IPv4 sockets give IPv4). */
export interface SocketId {
  readonly srcPort: number;
  readonly dstPort: number;
  readonly src: IpAddress;
  readonly dst: IpAddress;
  /** The raw 16-byte address fields as four host-order words, as flowd-go reports them. */
  readonly srcIP: readonly [number, number, number, number];
  readonly dstIP: readonly [number, number, number, number];
  readonly ifId: number;
  readonly cookie: readonly [number, number];
}

/** struct inet_diag_msg: the socket itself (flowd-go's `skBuff`). */
export interface InetDiagSocket {
  /** 2 (AF_INET) or 10 (AF_INET6). */
  readonly family: number;
  readonly state: number;
  readonly timer: number;
  readonly retrans: number;
  readonly id: SocketId;
  readonly expires: number;
  readonly rQueue: number;
  readonly wQueue: number;
  readonly uid: number;
  readonly iNode: number;
}

/**
 * struct tcp_info. The 56 fields flowd-go knows are always present (0 when an older kernel omits them);
 * later fields are present only when the kernel sent them. u64 counters are bigint so none loses precision
 * (maxPacingRate is often 2^64-1).
 */
export interface TcpInfo {
  readonly state: number;
  readonly caState: number;
  readonly retransmits: number;
  readonly probes: number;
  readonly backoff: number;
  readonly options: number;
  readonly sndWscale: number;
  readonly rcvdWscale: number;
  readonly deliveryRateAppLimited: number;
  /** Both bits of tcpi_fastopen_client_fail: 0..3. */
  readonly fastOpenClientFail: number;
  readonly rto: number;
  readonly ato: number;
  readonly sndMss: number;
  readonly rcvMss: number;
  readonly unAcked: number;
  readonly sAcked: number;
  readonly lost: number;
  readonly retrans: number;
  readonly fAckets: number;
  readonly lastDataSent: number;
  readonly lastAckSent: number;
  readonly lastDataRecv: number;
  readonly lastAckRecv: number;
  readonly pMtu: number;
  readonly rcvSsThresh: number;
  readonly rtt: number;
  readonly rttVar: number;
  readonly sndSsThresh: number;
  readonly sndCwnd: number;
  readonly advMss: number;
  readonly reordering: number;
  readonly rcvRtt: number;
  readonly rcvSpace: number;
  readonly totalRetrans: number;
  readonly pacingRate: bigint;
  readonly maxPacingRate: bigint;
  readonly bytesAcked: bigint;
  readonly bytesRecv: bigint;
  readonly segsOut: number;
  readonly segsIn: number;
  readonly notsentBytes: number;
  readonly minRtt: number;
  readonly dataSegsIn: number;
  readonly dataSegsOut: number;
  readonly deliveryRate: bigint;
  readonly busyTime: bigint;
  readonly rwndLimited: bigint;
  readonly sndBufLimited: bigint;
  readonly delivered: number;
  readonly deliveredCe: number;
  readonly bytesSent: bigint;
  readonly bytesRetrans: bigint;
  readonly dsAckDups: number;
  readonly reordSeen: number;
  readonly rcvOooPack: number;
  readonly sndWnd: number;
  // Fields flowd-go does not know about, present when the kernel sends them.
  readonly rcvWnd?: number;
  readonly rehash?: number;
  readonly totalRto?: number;
  readonly totalRtoRecoveries?: number;
  readonly totalRtoTime?: number;
  readonly receivedCe?: number;
  readonly deliveredE1Bytes?: number;
  readonly deliveredE0Bytes?: number;
  readonly deliveredCeBytes?: number;
  readonly receivedE1Bytes?: number;
  readonly receivedE0Bytes?: number;
  readonly receivedCeBytes?: number;
  readonly accecnFailMode?: number;
  readonly accecnOptSeen?: number;
}

/** struct inet_diag_meminfo. */
export interface MemInfo {
  readonly rMem: number;
  readonly wMem: number;
  readonly fMem: number;
  readonly tMem: number;
}

/** SK_MEMINFO_* array (names as flowd-go spells them, including the capital W). */
export interface SkMemInfo {
  readonly rMemAlloc: number;
  readonly rcvBuff: number;
  readonly WMemAlloc: number;
  readonly sndBuff: number;
  readonly fwdAlloc: number;
  readonly wMemQueued: number;
  readonly optMem: number;
  readonly backlog: number;
  readonly drops: number;
}

/** struct tcpvegas_info. */
export interface VegasInfo {
  readonly enabled: number;
  readonly rttCount: number;
  readonly rtt: number;
  readonly minRtt: number;
}

/** struct tcp_dctcp_info. */
export interface DctcpInfo {
  readonly enabled: number;
  readonly ceState: number;
  readonly alpha: number;
  readonly abeCn: number;
  readonly abTot: number;
}

/** struct tcp_bbr_info, with the bandwidth halves joined. */
export interface BbrInfo {
  /** Bandwidth estimate, bytes per second. */
  readonly bbrBW: bigint;
  readonly bbrMinRTT: number;
  readonly bbrPacingGain: number;
  readonly bbrCwndGain: number;
}

/** One socket and whatever attributes the kernel sent about it. */
export interface SockDiagResult {
  readonly socket: InetDiagSocket;
  readonly tcpInfo?: TcpInfo;
  readonly cong?: { readonly algorithm: string };
  readonly memInfo?: MemInfo;
  readonly skMemInfo?: SkMemInfo;
  readonly tos?: { readonly tos: number };
  /** IPv6 traffic class. */
  readonly tclass?: number;
  /** SHUT_RD (1) / SHUT_WR (2) bits the socket was shut down with. */
  readonly shutdown?: number;
  readonly vegasInfo?: VegasInfo;
  readonly dctcpInfo?: DctcpInfo;
  readonly bbr?: BbrInfo;
  readonly protocol?: number;
  readonly v6Only?: boolean;
  readonly mark?: number;
  readonly classId?: number;
  readonly cgroupId?: bigint;
}

/** What to ask for. */
export interface SockDiagRequest {
  readonly family: Family;
  /** IPPROTO_* (default TCP). */
  readonly protocol?: number;
  /** Extension bitmask (default all). */
  readonly extensions?: number;
  /** TCP state bitmask, bit n for state n (default every state). Ignored by exact lookups. */
  readonly states?: number;
}

/** Which sockets of a dump to keep; unset fields match anything. `src` is the local end. */
export interface SocketFilter {
  readonly srcPort?: number;
  readonly dstPort?: number;
  readonly src?: IpAddress;
  readonly dst?: IpAddress;
}

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function afOf(family: Family): number {
  return family === "ipv4" ? AF_INET : AF_INET6;
}

/** IPv4 for an IPv4-mapped IPv6 address, so dual-stack sockets compare equal to IPv4 flows. */
function unmapped(address: IpAddress): IpAddress {
  return address.isIpv4Mapped() ? IpAddress.fromBytes(address.bytes().subarray(12)) : address;
}

function sameAddress(a: IpAddress, b: IpAddress): boolean {
  return unmapped(a).equals(unmapped(b));
}

/** Builds struct inet_diag_req_v2; with `exact`, the id also carries addresses and "no cookie". */
export function encodeRequest(
  request: SockDiagRequest,
  id: { srcPort?: number; dstPort?: number; src?: IpAddress; dst?: IpAddress } = {},
  exact = false,
): Uint8Array {
  const out = new Uint8Array(REQUEST_SIZE);
  const v = dataView(out);
  out[0] = afOf(request.family);
  out[1] = request.protocol ?? IPPROTO_TCP;
  out[2] = (request.extensions ?? INET_DIAG_EXT_ALL) & 0xff;
  v.setUint32(4, (request.states ?? TCPF_ALL) >>> 0, true);
  v.setUint16(8, id.srcPort ?? 0, false);
  v.setUint16(10, id.dstPort ?? 0, false);
  for (const [offset, address] of [[12, id.src], [28, id.dst]] as const) {
    if (address === undefined) continue;
    const bytes = request.family === "ipv4" ? unmapped(address).bytes() : address.bytes();
    if (bytes.byteLength !== (request.family === "ipv4" ? 4 : 16)) {
      throw new RangeError(`address ${address} does not belong to a ${request.family} request`);
    }
    out.set(bytes, offset);
  }
  if (exact) {
    v.setUint32(48, NO_COOKIE, true);
    v.setUint32(52, NO_COOKIE, true);
  }
  return out;
}

function words(v: DataView, offset: number): [number, number, number, number] {
  return [
    v.getUint32(offset, true),
    v.getUint32(offset + 4, true),
    v.getUint32(offset + 8, true),
    v.getUint32(offset + 12, true),
  ];
}

function sameWords(v: DataView, offset: number, w: readonly [number, number, number, number]): boolean {
  return v.getUint32(offset, true) === w[0] && v.getUint32(offset + 4, true) === w[1] &&
    v.getUint32(offset + 8, true) === w[2] && v.getUint32(offset + 12, true) === w[3];
}

/**
 * Decodes struct inet_diag_msg (the first 72 bytes of a reply). With `previous` (the same socket's
 * identity from an earlier reply), its address objects are reused when the bytes are the same.
 */
export function parseSocket(payload: Uint8Array, previous?: SocketId): InetDiagSocket {
  if (payload.byteLength < MSG_SIZE) {
    throw new NetlinkError(`inet_diag_msg has ${payload.byteLength} bytes, expected at least ${MSG_SIZE}`);
  }
  const v = dataView(payload);
  const family = payload[0]!;
  const addressLength = family === AF_INET ? 4 : 16;
  const reuse = previous !== undefined && previous.src.family === (family === AF_INET ? "ipv4" : "ipv6") &&
    sameWords(v, 8, previous.srcIP) && sameWords(v, 24, previous.dstIP);
  return {
    family,
    state: payload[1]!,
    timer: payload[2]!,
    retrans: payload[3]!,
    id: {
      srcPort: v.getUint16(4, false),
      dstPort: v.getUint16(6, false),
      src: reuse ? previous.src : IpAddress.fromBytes(payload.subarray(8, 8 + addressLength)),
      dst: reuse ? previous.dst : IpAddress.fromBytes(payload.subarray(24, 24 + addressLength)),
      srcIP: reuse ? previous.srcIP : words(v, 8),
      dstIP: reuse ? previous.dstIP : words(v, 24),
      ifId: v.getUint32(40, true),
      cookie: [v.getUint32(44, true), v.getUint32(48, true)],
    },
    expires: v.getUint32(52, true),
    rQueue: v.getUint32(56, true),
    wQueue: v.getUint32(60, true),
    uid: v.getUint32(64, true),
    iNode: v.getUint32(68, true),
  };
}

/** Fields after flowd-go's 56 (kernel 6.x additions): name, offset, width in bytes. Checked against BTF. */
type ExtraField = { [K in keyof TcpInfo]-?: undefined extends TcpInfo[K] ? K : never }[keyof TcpInfo];

const TCP_INFO_EXTRA: readonly (readonly [ExtraField, number, 2 | 4])[] = [
  ["rcvWnd", 232, 4],
  ["rehash", 236, 4],
  ["totalRto", 240, 2],
  ["totalRtoRecoveries", 242, 2],
  ["totalRtoTime", 244, 4],
  ["receivedCe", 248, 4],
  ["deliveredE1Bytes", 252, 4],
  ["deliveredE0Bytes", 256, 4],
  ["deliveredCeBytes", 260, 4],
  ["receivedE1Bytes", 264, 4],
  ["receivedE0Bytes", 268, 4],
  ["receivedCeBytes", 272, 4],
  ["accecnFailMode", 276, 2],
  ["accecnOptSeen", 278, 2],
];

/** Bytes of tcp_info up to flowd-go's last field (tcpi_snd_wnd), and of kernel 6.18's whole struct. */
const TCP_INFO_FLOWD_SIZE = 232;
const TCP_INFO_6_18_SIZE = 280;

/**
 * parseTcpInfo when every flowd-go field is there (any kernel since 5.4 or so): plain reads at fixed
 * offsets, no bounds checks per field; it runs once per watched flow and period.
 */
function parseFullTcpInfo(v: DataView, n: number): TcpInfo {
  const scales = v.getUint8(6), bits = v.getUint8(7);
  const info: { -readonly [K in keyof TcpInfo]: TcpInfo[K] } = {
    state: v.getUint8(0),
    caState: v.getUint8(1),
    retransmits: v.getUint8(2),
    probes: v.getUint8(3),
    backoff: v.getUint8(4),
    options: v.getUint8(5),
    sndWscale: scales & 0x0f,
    rcvdWscale: scales >> 4,
    deliveryRateAppLimited: bits & 0x1,
    fastOpenClientFail: (bits >> 1) & 0x3,
    rto: v.getUint32(8, true),
    ato: v.getUint32(12, true),
    sndMss: v.getUint32(16, true),
    rcvMss: v.getUint32(20, true),
    unAcked: v.getUint32(24, true),
    sAcked: v.getUint32(28, true),
    lost: v.getUint32(32, true),
    retrans: v.getUint32(36, true),
    fAckets: v.getUint32(40, true),
    lastDataSent: v.getUint32(44, true),
    lastAckSent: v.getUint32(48, true),
    lastDataRecv: v.getUint32(52, true),
    lastAckRecv: v.getUint32(56, true),
    pMtu: v.getUint32(60, true),
    rcvSsThresh: v.getUint32(64, true),
    rtt: v.getUint32(68, true),
    rttVar: v.getUint32(72, true),
    sndSsThresh: v.getUint32(76, true),
    sndCwnd: v.getUint32(80, true),
    advMss: v.getUint32(84, true),
    reordering: v.getUint32(88, true),
    rcvRtt: v.getUint32(92, true),
    rcvSpace: v.getUint32(96, true),
    totalRetrans: v.getUint32(100, true),
    pacingRate: v.getBigUint64(104, true),
    maxPacingRate: v.getBigUint64(112, true),
    bytesAcked: v.getBigUint64(120, true),
    bytesRecv: v.getBigUint64(128, true),
    segsOut: v.getUint32(136, true),
    segsIn: v.getUint32(140, true),
    notsentBytes: v.getUint32(144, true),
    minRtt: v.getUint32(148, true),
    dataSegsIn: v.getUint32(152, true),
    dataSegsOut: v.getUint32(156, true),
    deliveryRate: v.getBigUint64(160, true),
    busyTime: v.getBigUint64(168, true),
    rwndLimited: v.getBigUint64(176, true),
    sndBufLimited: v.getBigUint64(184, true),
    delivered: v.getUint32(192, true),
    deliveredCe: v.getUint32(196, true),
    bytesSent: v.getBigUint64(200, true),
    bytesRetrans: v.getBigUint64(208, true),
    dsAckDups: v.getUint32(216, true),
    reordSeen: v.getUint32(220, true),
    rcvOooPack: v.getUint32(224, true),
    sndWnd: v.getUint32(228, true),
  };
  if (n >= TCP_INFO_6_18_SIZE) {
    // One shape for every reply of a recent kernel, rather than fields added one by one.
    return {
      ...info,
      rcvWnd: v.getUint32(232, true),
      rehash: v.getUint32(236, true),
      totalRto: v.getUint16(240, true),
      totalRtoRecoveries: v.getUint16(242, true),
      totalRtoTime: v.getUint32(244, true),
      receivedCe: v.getUint32(248, true),
      deliveredE1Bytes: v.getUint32(252, true),
      deliveredE0Bytes: v.getUint32(256, true),
      deliveredCeBytes: v.getUint32(260, true),
      receivedE1Bytes: v.getUint32(264, true),
      receivedE0Bytes: v.getUint32(268, true),
      receivedCeBytes: v.getUint32(272, true),
      accecnFailMode: v.getUint16(276, true),
      accecnOptSeen: v.getUint16(278, true),
    };
  }
  for (const [name, offset, width] of TCP_INFO_EXTRA) {
    if (offset + width > n) break;
    info[name] = width === 2 ? v.getUint16(offset, true) : v.getUint32(offset, true);
  }
  return info;
}

/**
 * Decodes struct tcp_info of any length the kernel sends. Offsets are those of the kernel's struct (checked
 * against its BTF). flowd-go's 56 fields read as 0 when the kernel's struct ends before them, as flowd-go's
 * zero-filled copy does; the later fields are only present when sent.
 */
export function parseTcpInfo(bytes: Uint8Array): TcpInfo {
  const v = dataView(bytes);
  const n = bytes.byteLength;
  if (n >= TCP_INFO_FLOWD_SIZE) return parseFullTcpInfo(v, n);
  const u8 = (o: number) => (o < n ? v.getUint8(o) : 0);
  const u32 = (o: number) => (o + 4 <= n ? v.getUint32(o, true) : 0);
  const u64 = (o: number) => (o + 8 <= n ? v.getBigUint64(o, true) : 0n);
  // `__u8 tcpi_snd_wscale:4, tcpi_rcv_wscale:4`: little-endian bitfields fill from the low bit up.
  const scales = u8(6);
  // `__u8 tcpi_delivery_rate_app_limited:1, tcpi_fastopen_client_fail:2`.
  const bits = u8(7);
  const info: { -readonly [K in keyof TcpInfo]: TcpInfo[K] } = {
    state: u8(0),
    caState: u8(1),
    retransmits: u8(2),
    probes: u8(3),
    backoff: u8(4),
    options: u8(5),
    sndWscale: scales & 0x0f,
    rcvdWscale: scales >> 4,
    deliveryRateAppLimited: bits & 0x1,
    fastOpenClientFail: (bits >> 1) & 0x3,
    rto: u32(8),
    ato: u32(12),
    sndMss: u32(16),
    rcvMss: u32(20),
    unAcked: u32(24),
    sAcked: u32(28),
    lost: u32(32),
    retrans: u32(36),
    fAckets: u32(40),
    lastDataSent: u32(44),
    lastAckSent: u32(48),
    lastDataRecv: u32(52),
    lastAckRecv: u32(56),
    pMtu: u32(60),
    rcvSsThresh: u32(64),
    rtt: u32(68),
    rttVar: u32(72),
    sndSsThresh: u32(76),
    sndCwnd: u32(80),
    advMss: u32(84),
    reordering: u32(88),
    rcvRtt: u32(92),
    rcvSpace: u32(96),
    totalRetrans: u32(100),
    pacingRate: u64(104),
    maxPacingRate: u64(112),
    bytesAcked: u64(120),
    bytesRecv: u64(128),
    segsOut: u32(136),
    segsIn: u32(140),
    notsentBytes: u32(144),
    minRtt: u32(148),
    dataSegsIn: u32(152),
    dataSegsOut: u32(156),
    deliveryRate: u64(160),
    busyTime: u64(168),
    rwndLimited: u64(176),
    sndBufLimited: u64(184),
    delivered: u32(192),
    deliveredCe: u32(196),
    bytesSent: u64(200),
    bytesRetrans: u64(208),
    dsAckDups: u32(216),
    reordSeen: u32(220),
    rcvOooPack: u32(224),
    sndWnd: u32(228),
  };
  for (const [name, offset, width] of TCP_INFO_EXTRA) {
    if (offset + width > n) break;
    info[name] = width === 2 ? v.getUint16(offset, true) : v.getUint32(offset, true);
  }
  return info;
}

function u32s(bytes: Uint8Array, count: number): number[] {
  const v = dataView(bytes);
  const out: number[] = [];
  // Missing trailing words read as 0, as flowd-go's zero-filled copies do.
  for (let i = 0; i < count; i++) out.push((i + 1) * 4 <= bytes.byteLength ? v.getUint32(i * 4, true) : 0);
  return out;
}

/** INET_DIAG_CONG: a short NUL-terminated ASCII name ("cubic", "bbr"), read without a TextDecoder. */
function congestionName(value: Uint8Array): string {
  let end = value.indexOf(0);
  if (end < 0) end = value.byteLength;
  if (end > 32) return attrString(value);
  let name = "";
  for (let i = 0; i < end; i++) {
    const b = value[i]!;
    if (b >= 0x80) return attrString(value);
    name += String.fromCharCode(b);
  }
  return name;
}

/**
 * The attributes after inet_diag_msg, as `parseAttributes` reads them (same errors), without the flags
 * nobody here uses.
 */
function attributesOf(payload: Uint8Array): { type: number; value: Uint8Array }[] {
  const out: { type: number; value: Uint8Array }[] = [];
  const end = payload.byteLength;
  let offset = MSG_SIZE;
  while (offset + 4 <= end) {
    const length = payload[offset]! | (payload[offset + 1]! << 8);
    const type = (payload[offset + 2]! | (payload[offset + 3]! << 8)) & NLA_TYPE_MASK;
    if (length < 4 || offset + length > end) {
      // The framing module words the error.
      parseAttributes(payload.subarray(MSG_SIZE));
      throw new NetlinkError(`netlink attribute at offset ${offset - MSG_SIZE} does not fit`);
    }
    out.push({ type, value: payload.subarray(offset + 4, offset + length) });
    offset += (length + 3) & ~3;
  }
  return out;
}

/** Decodes one SOCK_DIAG_BY_FAMILY reply: the socket and every attribute this module knows; others are skipped. */
export function parseSockDiagMessage(
  message: Pick<NetlinkMessage, "payload">,
  requestProtocol = IPPROTO_TCP,
  previous?: SocketId,
): SockDiagResult {
  const payload = message.payload;
  const socket = parseSocket(payload, previous);
  const result: { -readonly [K in keyof SockDiagResult]: SockDiagResult[K] } = { socket };
  let info: Uint8Array | undefined;
  for (const a of attributesOf(payload)) {
    switch (a.type) {
      case INET_DIAG_INFO:
        info = a.value;
        break;
      case INET_DIAG_CONG:
        result.cong = { algorithm: congestionName(a.value) };
        break;
      case INET_DIAG_MEMINFO: {
        const [rMem, wMem, fMem, tMem] = u32s(a.value, 4) as [number, number, number, number];
        result.memInfo = { rMem, wMem, fMem, tMem };
        break;
      }
      case INET_DIAG_SKMEMINFO: {
        const w = u32s(a.value, 9) as [
          number,
          number,
          number,
          number,
          number,
          number,
          number,
          number,
          number,
        ];
        result.skMemInfo = {
          rMemAlloc: w[0],
          rcvBuff: w[1],
          WMemAlloc: w[2],
          sndBuff: w[3],
          fwdAlloc: w[4],
          wMemQueued: w[5],
          optMem: w[6],
          backlog: w[7],
          drops: w[8],
        };
        break;
      }
      case INET_DIAG_TOS:
        result.tos = { tos: attrU8(a.value, "INET_DIAG_TOS") };
        break;
      case INET_DIAG_TCLASS:
        result.tclass = attrU8(a.value, "INET_DIAG_TCLASS");
        break;
      case INET_DIAG_SHUTDOWN:
        result.shutdown = attrU8(a.value, "INET_DIAG_SHUTDOWN");
        break;
      case INET_DIAG_VEGASINFO: {
        const [enabled, rttCount, rtt, minRtt] = u32s(a.value, 4) as [number, number, number, number];
        result.vegasInfo = { enabled, rttCount, rtt, minRtt };
        break;
      }
      case INET_DIAG_DCTCPINFO: {
        // Two u16s share the first word; alpha, ab_ecn and ab_tot are the next three words.
        const [first, alpha, abeCn, abTot] = u32s(a.value, 4) as [number, number, number, number];
        result.dctcpInfo = { enabled: first & 0xffff, ceState: first >>> 16, alpha, abeCn, abTot };
        break;
      }
      case INET_DIAG_BBRINFO: {
        const [lo, hi, minRtt, pacingGain, cwndGain] = u32s(a.value, 5) as [
          number,
          number,
          number,
          number,
          number,
        ];
        result.bbr = {
          bbrBW: (BigInt(hi) << 32n) | BigInt(lo),
          bbrMinRTT: minRtt,
          bbrPacingGain: pacingGain,
          bbrCwndGain: cwndGain,
        };
        break;
      }
      case INET_DIAG_PROTOCOL:
        result.protocol = attrU8(a.value, "INET_DIAG_PROTOCOL");
        break;
      case INET_DIAG_SKV6ONLY:
        result.v6Only = attrU8(a.value, "INET_DIAG_SKV6ONLY") !== 0;
        break;
      case INET_DIAG_MARK:
        result.mark = attrU32(a.value, "INET_DIAG_MARK");
        break;
      case INET_DIAG_CLASS_ID:
        result.classId = attrU32(a.value, "INET_DIAG_CLASS_ID");
        break;
      case INET_DIAG_CGROUP_ID:
        result.cgroupId = attrU64(a.value, "INET_DIAG_CGROUP_ID");
        break;
      default:
        // Newer kernels add attributes (ULP info, BPF storages, ...); they must not spoil the rest.
        break;
    }
  }
  // INET_DIAG_INFO holds tcp_info only for TCP; a PROTOCOL attribute, when sent, says what the socket is.
  if (info !== undefined && (result.protocol ?? requestProtocol) === IPPROTO_TCP) {
    result.tcpInfo = parseTcpInfo(info);
  }
  return result;
}

/** True when a socket's identity satisfies the filter (IPv4-mapped addresses equal their IPv4 form). */
export function matchesFilter(id: SocketId, filter: SocketFilter): boolean {
  if (filter.srcPort !== undefined && filter.srcPort !== 0 && id.srcPort !== filter.srcPort) return false;
  if (filter.dstPort !== undefined && filter.dstPort !== 0 && id.dstPort !== filter.dstPort) return false;
  if (filter.src !== undefined && !sameAddress(id.src, filter.src)) return false;
  if (filter.dst !== undefined && !sameAddress(id.dst, filter.dst)) return false;
  return true;
}

/** 16-bit units of an address for a socket key: 2 for IPv4 (IPv4-mapped included), 8 for IPv6. */
function addressUnits(b: Uint8Array, at: number, v4: boolean): string {
  const u = (i: number) => (b[at + i]! << 8) | b[at + i + 1]!;
  return v4
    ? String.fromCharCode(u(0), u(2))
    : String.fromCharCode(u(0), u(2), u(4), u(6), u(8), u(10), u(12), u(14));
}

function mappedAt(b: Uint8Array, at: number): boolean {
  for (let i = 0; i < 10; i++) if (b[at + i] !== 0) return false;
  return b[at + 10] === 0xff && b[at + 11] === 0xff;
}

/**
 * A compact key of a socket's 5-tuple (local end first; IPv4-mapped addresses as IPv4), equal to
 * `replyKey` of the kernel's reply about that socket. For matching dump replies against watched flows
 * without decoding replies that match nothing.
 */
export function socketKey(local: Endpoint, remote: Endpoint): string {
  const l = unmapped(local.address).bytes(), r = unmapped(remote.address).bytes();
  const l4 = l.byteLength === 4, r4 = r.byteLength === 4;
  return String.fromCharCode((l4 ? 0 : 2) | (r4 ? 0 : 1), local.port, remote.port) +
    addressUnits(l, 0, l4) + addressUnits(r, 0, r4);
}

/** `socketKey` of the socket an inet_diag reply (its payload) describes. */
export function replyKey(payload: Uint8Array): string {
  if (payload.byteLength < MSG_SIZE) {
    throw new NetlinkError(`inet_diag_msg has ${payload.byteLength} bytes, expected at least ${MSG_SIZE}`);
  }
  const v4 = payload[0] === AF_INET;
  const s4 = v4 || mappedAt(payload, 8), d4 = v4 || mappedAt(payload, 24);
  const sport = (payload[4]! << 8) | payload[5]!, dport = (payload[6]! << 8) | payload[7]!;
  return String.fromCharCode((s4 ? 0 : 2) | (d4 ? 0 : 1), sport, dport) +
    addressUnits(payload, s4 && !v4 ? 20 : 8, s4) + addressUnits(payload, d4 && !v4 ? 36 : 24, d4);
}

/** Request attribute carrying a socket filter program (inet_diag bytecode). */
const INET_DIAG_REQ_BYTECODE = 1;
const INET_DIAG_BC_JMP = 1;
const INET_DIAG_BC_S_EQ = 11;
const INET_DIAG_BC_D_EQ = 12;
/** Ports one kernel filter lists at most (the kernel runs one test per port and socket). */
export const MAX_FILTER_PORTS = 64;

/** Which sockets a dump returns, by port, decided in the kernel before it fills any attribute. */
export interface PortFilter {
  /** `local` tests the socket's own port, `remote` its peer's. */
  readonly end: "local" | "remote";
  /** 1 to `MAX_FILTER_PORTS` ports; a socket with any of them is returned. */
  readonly ports: readonly number[];
}

/**
 * The INET_DIAG_REQ_BYTECODE attribute of a port filter, built as `ss` builds "port = a or port = b":
 * each test is followed by a jump to the end (accept), which the test skips when it fails; the last
 * test's failure jumps past the end (reject). Every op is on the chain of "yes" jumps, which is what the
 * kernel's check of the program walks.
 */
export function encodePortFilter(filter: PortFilter): Uint8Array {
  const n = filter.ports.length;
  if (n === 0 || n > MAX_FILTER_PORTS) {
    throw new RangeError(`a port filter lists 1..${MAX_FILTER_PORTS} ports, not ${n}`);
  }
  const length = 12 * (n - 1) + 8;
  const out = new Uint8Array(4 + length);
  const v = dataView(out);
  v.setUint16(0, 4 + length, true);
  v.setUint16(2, INET_DIAG_REQ_BYTECODE, true);
  const code = filter.end === "local" ? INET_DIAG_BC_S_EQ : INET_DIAG_BC_D_EQ;
  filter.ports.forEach((port, i) => {
    const at = 4 + 12 * i;
    // struct inet_diag_bc_op { u8 code; u8 yes; u16 no; }, the port in the `no` of a second op.
    out[at] = code;
    out[at + 1] = 8;
    v.setUint16(at + 2, 12, true);
    v.setUint16(at + 6, port, true);
    if (i === n - 1) return;
    out[at + 8] = INET_DIAG_BC_JMP;
    out[at + 9] = 4;
    v.setUint16(at + 10, length - (12 * i + 8), true);
  });
  return out;
}

/** A sock_diag connection; one per enricher, closed on stop. */
export class SockDiag implements Disposable {
  readonly #socket: NetlinkSocket;

  private constructor(socket: NetlinkSocket) {
    this.#socket = socket;
  }

  /** Opens a NETLINK_SOCK_DIAG socket (optionally inside another network namespace). */
  static open(options: NetlinkSocketOptions = {}): SockDiag {
    return new SockDiag(NetlinkSocket.open(NETLINK_SOCK_DIAG, options));
  }

  /**
   * Dumps the sockets of one family and protocol. The kernel applies the state mask and non-zero ports;
   * addresses in `filter` are then checked here, since the kernel's dump ignores them. An IPv4 dump lists
   * AF_INET sockets only: IPv4 flows on dual-stack sockets show up in the IPv6 dump, IPv4-mapped.
   */
  async dump(request: SockDiagRequest, filter: SocketFilter = {}): Promise<SockDiagResult[]> {
    const payload = encodeRequest(request, { srcPort: filter.srcPort, dstPort: filter.dstPort });
    const replies = await this.#socket.dump(SOCK_DIAG_BY_FAMILY, payload);
    const out: SockDiagResult[] = [];
    for (const m of replies) {
      if (m.type !== SOCK_DIAG_BY_FAMILY) continue;
      const r = parseSockDiagMessage(m, request.protocol ?? IPPROTO_TCP);
      if (matchesFilter(r.socket.id, filter)) out.push(r);
    }
    return out;
  }

  /**
   * The raw replies of a dump (inet_diag payloads, undecoded), optionally filtered by port in the kernel:
   * for callers that match replies against many flows with `replyKey` and decode only the matches.
   */
  async dumpReplies(request: SockDiagRequest, ports?: PortFilter): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    await this.eachDumpReply(request, ports, (payload) => out.push(payload.slice()));
    return out;
  }

  /**
   * Like `dumpReplies`, but each raw reply goes to `onReply` as it arrives, valid during the call only:
   * a dump of 10,000 sockets then never exists whole (its replies and their copies made every round a
   * burst of garbage that survived into the old generation).
   */
  async eachDumpReply(
    request: SockDiagRequest,
    ports: PortFilter | undefined,
    onReply: (payload: Uint8Array) => void,
  ): Promise<void> {
    let payload = encodeRequest(request);
    if (ports !== undefined) {
      const bytecode = encodePortFilter(ports);
      const withFilter = new Uint8Array(payload.byteLength + bytecode.byteLength);
      withFilter.set(payload);
      withFilter.set(bytecode, payload.byteLength);
      payload = withFilter;
    }
    await this.#socket.dumpEach(SOCK_DIAG_BY_FAMILY, payload, (m) => {
      if (m.type === SOCK_DIAG_BY_FAMILY) onReply(m.payload);
    });
  }

  /**
   * The one socket with exactly this 5-tuple (`local` is this host's end), or undefined if there is none.
   * An IPv4 flow also finds a dual-stack IPv6 socket carrying it.
   */
  async lookup(
    local: Endpoint,
    remote: Endpoint,
    options: Omit<SockDiagRequest, "family" | "states"> = {},
  ): Promise<SockDiagResult | undefined> {
    const family: Family =
      unmapped(local.address).family === "ipv4" && unmapped(remote.address).family === "ipv4"
        ? "ipv4"
        : "ipv6";
    const request = { ...options, family };
    const payload = encodeRequest(request, {
      srcPort: local.port,
      dstPort: remote.port,
      src: local.address,
      dst: remote.address,
    }, true);
    let replies: NetlinkMessage[];
    try {
      replies = await this.#socket.request(SOCK_DIAG_BY_FAMILY, payload);
    } catch (err) {
      if (err instanceof NetlinkError && err.errno === 2 /* ENOENT */) return undefined;
      throw err;
    }
    const reply = replies.find((m) => m.type === SOCK_DIAG_BY_FAMILY);
    if (reply === undefined) return undefined;
    const result = parseSockDiagMessage(reply, request.protocol ?? IPPROTO_TCP);
    // With no connected socket left the kernel may answer with the listener on the local port.
    const wanted = { srcPort: local.port, dstPort: remote.port, src: local.address, dst: remote.address };
    return matchesFilter(result.socket.id, wanted) ? result : undefined;
  }

  /** Closes the socket. */
  close(): void {
    this.#socket.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
