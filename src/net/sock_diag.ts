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

function words(bytes: Uint8Array): [number, number, number, number] {
  const v = dataView(bytes);
  return [v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true), v.getUint32(12, true)];
}

/** Decodes struct inet_diag_msg (the first 72 bytes of a reply). */
export function parseSocket(payload: Uint8Array): InetDiagSocket {
  if (payload.byteLength < MSG_SIZE) {
    throw new NetlinkError(`inet_diag_msg has ${payload.byteLength} bytes, expected at least ${MSG_SIZE}`);
  }
  const v = dataView(payload);
  const family = payload[0]!;
  const addressLength = family === AF_INET ? 4 : 16;
  const srcRaw = payload.subarray(8, 24);
  const dstRaw = payload.subarray(24, 40);
  return {
    family,
    state: payload[1]!,
    timer: payload[2]!,
    retrans: payload[3]!,
    id: {
      srcPort: v.getUint16(4, false),
      dstPort: v.getUint16(6, false),
      src: IpAddress.fromBytes(srcRaw.subarray(0, addressLength)),
      dst: IpAddress.fromBytes(dstRaw.subarray(0, addressLength)),
      srcIP: words(srcRaw),
      dstIP: words(dstRaw),
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

/**
 * Decodes struct tcp_info of any length the kernel sends. Offsets are those of the kernel's struct (checked
 * against its BTF). flowd-go's 56 fields read as 0 when the kernel's struct ends before them, as flowd-go's
 * zero-filled copy does; the later fields are only present when sent.
 */
export function parseTcpInfo(bytes: Uint8Array): TcpInfo {
  const v = dataView(bytes);
  const n = bytes.byteLength;
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

/** Decodes one SOCK_DIAG_BY_FAMILY reply: the socket and every attribute this module knows; others are skipped. */
export function parseSockDiagMessage(message: NetlinkMessage, requestProtocol = IPPROTO_TCP): SockDiagResult {
  const socket = parseSocket(message.payload);
  const result: { -readonly [K in keyof SockDiagResult]: SockDiagResult[K] } = { socket };
  let info: Uint8Array | undefined;
  for (const a of parseAttributes(message.payload.subarray(MSG_SIZE))) {
    switch (a.type) {
      case INET_DIAG_INFO:
        info = a.value;
        break;
      case INET_DIAG_CONG:
        result.cong = { algorithm: attrString(a.value) };
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
