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

type U32Field = { [K in keyof typeof RECORD_FIELDS]: typeof RECORD_FIELDS[K][1] extends 4 ? K : never }[
  keyof typeof RECORD_FIELDS
];
type U64Field = { [K in keyof typeof RECORD_FIELDS]: typeof RECORD_FIELDS[K][1] extends 8 ? K : never }[
  keyof typeof RECORD_FIELDS
];
type U8Field = { [K in keyof typeof RECORD_FIELDS]: typeof RECORD_FIELDS[K][1] extends 1 ? K : never }[
  keyof typeof RECORD_FIELDS
];

/** A decoded record. */
export interface SkopsRecord {
  /** The raw flow key (see `keyId`). */
  readonly key: Uint8Array;
  /** `EVENT_RTT` or `EVENT_STATE`. */
  readonly event: number;
  /** The state entered (state changes) or the current state. */
  readonly newState: number;
  readonly info: FlowInfo;
}

const decoder = new TextDecoder();

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
  const u8 = (f: U8Field) => v.getUint8(RECORD_FIELDS[f][0]);
  const u32 = (f: U32Field) => v.getUint32(RECORD_FIELDS[f][0], true);
  const u64 = (f: U64Field) => v.getBigUint64(RECORD_FIELDS[f][0], true);

  const now = Number(u64("jiffies") & 0xffff_ffffn);
  const since = (stamp: number) => (now - stamp) >>> 0; // u32 arithmetic, as the kernel's tcp_jiffies32
  const toUs = (jiffies: number) => Math.floor((jiffies * 1_000_000) / hz);
  const toMs = (jiffies: number) => Math.floor((jiffies * 1000) / hz);

  const event = u32("event");
  const newState = u32("new_state");
  const sndMss = u32("snd_mss");
  const rate = u32("rate_delivered"), interval = u32("rate_interval_us");
  const chronoType = u8("chrono_type");
  const chrono = [0, 1, 2].map((i) => {
    let j = v.getUint32(RECORD_FIELDS.chrono_stat[0] + 4 * i, true);
    if (chronoType === i + 1) j += since(u32("chrono_start"));
    return BigInt(toUs(j));
  }) as [bigint, bigint, bigint];

  const nameBytes = bytes.subarray(RECORD_FIELDS.ca_name[0], RECORD_FIELDS.ca_name[0] + 16);
  const nul = nameBytes.indexOf(0);
  const caName = decoder.decode(nameBytes.subarray(0, nul < 0 ? 16 : nul));

  const tcpInfo: TcpInfo = {
    state: event === EVENT_STATE ? newState : u8("state"),
    caState: u8("ca_state"),
    retransmits: u8("retransmits"),
    probes: u8("probes"),
    backoff: u8("backoff"),
    options: u8("options"),
    sndWscale: u8("snd_wscale"),
    rcvdWscale: u8("rcv_wscale"),
    deliveryRateAppLimited: u8("rate_app_limited"),
    fastOpenClientFail: u8("fastopen_client_fail"),
    rto: toUs(u32("rto_jiffies")),
    ato: toUs(u32("ato_jiffies")),
    sndMss,
    rcvMss: u32("rcv_mss"),
    unAcked: u32("unacked"),
    sAcked: u32("sacked"),
    lost: u32("lost"),
    retrans: u32("retrans"),
    fAckets: 0,
    lastDataSent: toMs(since(u32("lsndtime"))),
    lastAckSent: 0,
    lastDataRecv: toMs(since(u32("lrcvtime"))),
    lastAckRecv: toMs(since(u32("rcv_tstamp"))),
    pMtu: u32("pmtu"),
    rcvSsThresh: u32("rcv_ssthresh"),
    rtt: u32("srtt_us8") >>> 3,
    rttVar: u32("mdev_us4") >>> 2,
    sndSsThresh: u32("snd_ssthresh"),
    sndCwnd: u32("snd_cwnd"),
    advMss: u32("advmss"),
    reordering: u32("reordering"),
    rcvRtt: u32("rcv_rtt_us8") >>> 3,
    rcvSpace: u32("rcv_space"),
    totalRetrans: u32("total_retrans"),
    pacingRate: u64("pacing_rate"),
    maxPacingRate: u64("max_pacing_rate"),
    bytesAcked: u64("bytes_acked"),
    bytesRecv: u64("bytes_received"),
    segsOut: u32("segs_out"),
    segsIn: u32("segs_in"),
    notsentBytes: Math.max(0, (u32("write_seq") - u32("snd_nxt")) | 0),
    minRtt: u32("min_rtt"),
    dataSegsIn: u32("data_segs_in"),
    dataSegsOut: u32("data_segs_out"),
    deliveryRate: rate && interval ? (BigInt(rate) * BigInt(sndMss) * 1_000_000n) / BigInt(interval) : 0n,
    busyTime: chrono[0] + chrono[1] + chrono[2],
    rwndLimited: chrono[1],
    sndBufLimited: chrono[2],
    delivered: u32("delivered"),
    deliveredCe: u32("delivered_ce"),
    bytesSent: u64("bytes_sent"),
    bytesRetrans: u64("bytes_retrans"),
    dsAckDups: u32("dsack_dups"),
    reordSeen: u32("reord_seen"),
    rcvOooPack: u32("rcv_ooopack"),
    sndWnd: u32("snd_wnd"),
    rcvWnd: u32("rcv_wnd"),
  };
  const info: FlowInfo = caName ? { tcpInfo, cong: { algorithm: caName } } : { tcpInfo };
  return { key: bytes.slice(0, KEY_SIZE), event, newState, info };
}
