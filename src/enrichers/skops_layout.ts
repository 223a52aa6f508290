/**
 * The interface of the skops BPF object (bpf/skops.h mirrored once): names, the configuration, the
 * flow key, and the ring-buffer record with the arithmetic tcp_get_info() does on it.
 * tests/unit/skops_layout_test.ts checks the offsets against the BTF of the built object.
 */
import type { FlowInfo, TcpInfo } from "../core/flow_info.ts";
import type { Endpoint } from "../net/ip.ts";
import { sockAddressBytes } from "../bpf/sock_addr.ts";

/** The sock_ops program. */
export const SKOPS_PROGRAM_NAME = "flowd_skops";
/** Hash map of the flows to report: `struct skops_flow_key` → `struct skops_flow_state`. */
export const WATCHED_FLOWS_MAP = "watchedFlows";
/** The ring buffer of records. */
export const RECORDS_MAP = "tcpStats";
/** Per-CPU count of records lost to a full ring buffer. */
export const LOST_MAP = "lostRecords";
/** Global-data section of `struct skops_config`. */
export const CONFIG_SECTION = ".rodata.config";

export const CONFIG_SIZE = 16;
export const KEY_SIZE = 40;
export const FLOW_STATE_SIZE = 8;
export const RECORD_SIZE = 312;

/** `enum skops_strategy`. */
export const STRATEGY_CODES = { poll: 0, transition: 1 } as const;
export type SkopsStrategy = keyof typeof STRATEGY_CODES;

/** `enum skops_event`: why a record was written. */
export const EVENT_RTT = 1;
export const EVENT_STATE = 2;

/** The bytes of `struct skops_config`. */
export function encodeConfig(o: { intervalMs: number; strategy: SkopsStrategy }): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(CONFIG_SIZE);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt(o.intervalMs) * 1_000_000n, true);
  v.setUint32(8, STRATEGY_CODES[o.strategy], true);
  return out;
}

/** The bytes of `struct skops_flow_key` for a connection seen from this host. */
export function encodeFlowKey(local: Endpoint, remote: Endpoint): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(KEY_SIZE);
  out.set(sockAddressBytes(local.address), 0);
  out.set(sockAddressBytes(remote.address), 16);
  const v = new DataView(out.buffer);
  v.setUint16(32, local.port, true);
  v.setUint16(34, remote.port, true);
  return out;
}

/** A compact string of key bytes, to find the flow a record belongs to. */
export function keyId(key: Uint8Array): string {
  return String.fromCharCode(...key.subarray(0, KEY_SIZE));
}

/**
 * Field offsets of `struct skops_record` (name as in C, offset, size in bytes). The decoder below reads
 * through this table's constants, and the layout test compares it with the object's BTF.
 */
export const RECORD_FIELDS = {
  key: [0, 40],
  ktime_ns: [40, 8],
  jiffies: [48, 8],
  pacing_rate: [56, 8],
  max_pacing_rate: [64, 8],
  bytes_acked: [72, 8],
  bytes_received: [80, 8],
  bytes_sent: [88, 8],
  bytes_retrans: [96, 8],
  event: [104, 4],
  new_state: [108, 4],
  rto_jiffies: [112, 4],
  ato_jiffies: [116, 4],
  snd_mss: [120, 4],
  rcv_mss: [124, 4],
  unacked: [128, 4],
  sacked: [132, 4],
  lost: [136, 4],
  retrans: [140, 4],
  lsndtime: [144, 4],
  lrcvtime: [148, 4],
  rcv_tstamp: [152, 4],
  pmtu: [156, 4],
  rcv_ssthresh: [160, 4],
  srtt_us8: [164, 4],
  mdev_us4: [168, 4],
  snd_ssthresh: [172, 4],
  snd_cwnd: [176, 4],
  advmss: [180, 4],
  reordering: [184, 4],
  rcv_rtt_us8: [188, 4],
  rcv_space: [192, 4],
  total_retrans: [196, 4],
  segs_out: [200, 4],
  segs_in: [204, 4],
  write_seq: [208, 4],
  snd_nxt: [212, 4],
  min_rtt: [216, 4],
  data_segs_in: [220, 4],
  data_segs_out: [224, 4],
  rate_delivered: [228, 4],
  rate_interval_us: [232, 4],
  chrono_start: [236, 4],
  chrono_stat: [240, 12],
  delivered: [252, 4],
  delivered_ce: [256, 4],
  dsack_dups: [260, 4],
  reord_seen: [264, 4],
  rcv_ooopack: [268, 4],
  snd_wnd: [272, 4],
  rcv_wnd: [276, 4],
  state: [280, 1],
  ca_state: [281, 1],
  retransmits: [282, 1],
  probes: [283, 1],
  backoff: [284, 1],
  options: [285, 1],
  snd_wscale: [286, 1],
  rcv_wscale: [287, 1],
  rate_app_limited: [288, 1],
  fastopen_client_fail: [289, 1],
  chrono_type: [290, 1],
  reserved: [291, 1],
  ca_name: [292, 16],
  reserved2: [308, 4],
} as const satisfies Record<string, readonly [number, number]>;

/** A decoded record. */
export interface SkopsRecord {
  /** The flow key as `keyId` gives it. */
  readonly keyId: string;
  /** `EVENT_RTT` or `EVENT_STATE`. */
  readonly event: number;
  /** The state entered (state changes) or the current state. */
  readonly newState: number;
  readonly info: FlowInfo;
}

/** Congestion-control names seen, by their NUL-padded bytes (there are a handful; decode each once). */
const caNames = new Map<string, string>();
const decoder = new TextDecoder();

function caName(bytes: Uint8Array): string {
  const raw = bytes.subarray(RECORD_FIELDS.ca_name[0], RECORD_FIELDS.ca_name[0] + RECORD_FIELDS.ca_name[1]);
  const key = String.fromCharCode.apply(null, raw as unknown as number[]);
  let name = caNames.get(key);
  if (name === undefined) {
    const nul = raw.indexOf(0);
    name = decoder.decode(raw.subarray(0, nul < 0 ? raw.length : nul));
    if (caNames.size < 64) caNames.set(key, name);
  }
  return name;
}

const F = RECORD_FIELDS;

/**
 * Decodes a record into tcp_info as the kernel's tcp_get_info() would report it: times in jiffies are
 * converted with the kernel's `hz` (exactly, where the kernel divides USEC_PER_SEC by HZ first), srtt and
 * mdev are unscaled, and the delivery rate, not-sent bytes and busy times are derived. For a state change
 * `state` is the state entered. Throws a RangeError for a record of the wrong size.
 */
export function decodeRecord(bytes: Uint8Array, hz: number): SkopsRecord {
  if (bytes.byteLength !== RECORD_SIZE) {
    throw new RangeError(`skops record has ${bytes.byteLength} bytes, expected ${RECORD_SIZE}`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (f: readonly [number, number]) => v.getUint32(f[0], true);
  const u64 = (f: readonly [number, number]) => v.getBigUint64(f[0], true);

  // The low 32 bits of jiffies, as the kernel's tcp_jiffies32; differences wrap like u32 arithmetic.
  const now = v.getUint32(F.jiffies[0], true);
  const since = (stamp: number) => (now - stamp) >>> 0;
  const toUs = (jiffies: number) => Math.floor((jiffies * 1_000_000) / hz);
  const toMs = (jiffies: number) => Math.floor((jiffies * 1000) / hz);

  const event = u32(F.event);
  const newState = u32(F.new_state);
  const sndMss = u32(F.snd_mss);
  const rate = u32(F.rate_delivered), interval = u32(F.rate_interval_us);
  // The chrono running since chrono_start (type 1-3) has not been added to its total yet.
  const chronoType = bytes[F.chrono_type[0]]!;
  const running = chronoType ? since(u32(F.chrono_start)) : 0;
  const chrono = (i: number) =>
    BigInt(toUs(v.getUint32(F.chrono_stat[0] + 4 * i, true) + (chronoType === i + 1 ? running : 0)));
  const busy = chrono(0), rwnd = chrono(1), sndbuf = chrono(2);

  const tcpInfo: TcpInfo = {
    state: event === EVENT_STATE ? newState : bytes[F.state[0]]!,
    caState: bytes[F.ca_state[0]]!,
    retransmits: bytes[F.retransmits[0]]!,
    probes: bytes[F.probes[0]]!,
    backoff: bytes[F.backoff[0]]!,
    options: bytes[F.options[0]]!,
    sndWscale: bytes[F.snd_wscale[0]]!,
    rcvdWscale: bytes[F.rcv_wscale[0]]!,
    deliveryRateAppLimited: bytes[F.rate_app_limited[0]]!,
    fastOpenClientFail: bytes[F.fastopen_client_fail[0]]!,
    rto: toUs(u32(F.rto_jiffies)),
    ato: toUs(u32(F.ato_jiffies)),
    sndMss,
    rcvMss: u32(F.rcv_mss),
    unAcked: u32(F.unacked),
    sAcked: u32(F.sacked),
    lost: u32(F.lost),
    retrans: u32(F.retrans),
    fAckets: 0,
    lastDataSent: toMs(since(u32(F.lsndtime))),
    lastAckSent: 0,
    lastDataRecv: toMs(since(u32(F.lrcvtime))),
    lastAckRecv: toMs(since(u32(F.rcv_tstamp))),
    pMtu: u32(F.pmtu),
    rcvSsThresh: u32(F.rcv_ssthresh),
    rtt: u32(F.srtt_us8) >>> 3,
    rttVar: u32(F.mdev_us4) >>> 2,
    sndSsThresh: u32(F.snd_ssthresh),
    sndCwnd: u32(F.snd_cwnd),
    advMss: u32(F.advmss),
    reordering: u32(F.reordering),
    rcvRtt: u32(F.rcv_rtt_us8) >>> 3,
    rcvSpace: u32(F.rcv_space),
    totalRetrans: u32(F.total_retrans),
    pacingRate: u64(F.pacing_rate),
    maxPacingRate: u64(F.max_pacing_rate),
    bytesAcked: u64(F.bytes_acked),
    bytesRecv: u64(F.bytes_received),
    segsOut: u32(F.segs_out),
    segsIn: u32(F.segs_in),
    notsentBytes: Math.max(0, (u32(F.write_seq) - u32(F.snd_nxt)) | 0),
    minRtt: u32(F.min_rtt),
    dataSegsIn: u32(F.data_segs_in),
    dataSegsOut: u32(F.data_segs_out),
    deliveryRate: rate && interval ? deliveryRate(rate, sndMss, interval) : 0n,
    busyTime: busy + rwnd + sndbuf,
    rwndLimited: rwnd,
    sndBufLimited: sndbuf,
    delivered: u32(F.delivered),
    deliveredCe: u32(F.delivered_ce),
    bytesSent: u64(F.bytes_sent),
    bytesRetrans: u64(F.bytes_retrans),
    dsAckDups: u32(F.dsack_dups),
    reordSeen: u32(F.reord_seen),
    rcvOooPack: u32(F.rcv_ooopack),
    sndWnd: u32(F.snd_wnd),
    rcvWnd: u32(F.rcv_wnd),
  };
  const name = caName(bytes);
  const info: FlowInfo = name ? { tcpInfo, cong: { algorithm: name } } : { tcpInfo };
  return { keyId: keyId(bytes), event, newState, info };
}

/** rate_delivered * mss * 10^6 / rate_interval_us, truncated, as the kernel's do_div. */
function deliveryRate(rate: number, mss: number, interval: number): bigint {
  const product = rate * mss * 1_000_000;
  // Exact in doubles while the product is a safe integer; beyond that, in bigint.
  if (product <= Number.MAX_SAFE_INTEGER) return BigInt((product - (product % interval)) / interval);
  return (BigInt(rate) * BigInt(mss) * 1_000_000n) / BigInt(interval);
}
