/**
 * The JSON form of enrichment data in "ongoing" fireflies (`netlink` and `skOps` objects), in the three
 * modes of flowd-go's `enrichmentMode`:
 *
 * - `lean`: the congestion-control name and eleven tcp_info fields; small enough for one datagram.
 * - `full`: every tcp_info field and every attribute the kernel sent, under flowd-go's names.
 * - `compatible`: a flat object with flowd's / ss's snake_case names and units.
 *
 * 64-bit counters are written as exact JSON integers (never rounded through a double). Deliberate fixes:
 * lean mode's `retransmits` is spelled like its siblings (the original wrote `Retransmits`); compatible mode
 * keeps the congestion-control name (as `cong`) and copes with a missing tcp_info (the original crashed).
 */
import type { FlowInfo, TcpInfo } from "../core/flow_info.ts";
import type { InetDiagSocket } from "../net/sock_diag.ts";

/** The value of `backends.firefly.enrichmentMode` ("" is normalised to "full" by the schema). */
export type EnrichmentMode = "lean" | "compatible" | "full";

type Json = Record<string, unknown>;

const rawJson = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;

/** A bigint as an exact JSON number (JSON.stringify cannot write bigints otherwise). */
function exact(v: number | bigint): unknown {
  return typeof v === "bigint" ? rawJson(v.toString()) : v;
}

/** tcp_info fields of lean mode, in the original's (sorted) key order. */
const LEAN_FIELDS = [
  "advMss",
  "bytesSent",
  "deliveryRate",
  "minRtt",
  "pMtu",
  "retransmits",
  "rtt",
  "rttVar",
  "sndCwnd",
  "sndMss",
  "sndSsThresh",
] as const satisfies readonly (keyof TcpInfo)[];

/** The 56 tcp_info fields of full mode, in the original's order. */
const FULL_FIELDS = [
  "state",
  "caState",
  "retransmits",
  "probes",
  "backoff",
  "options",
  "sndWscale",
  "rcvdWscale",
  "deliveryRateAppLimited",
  "fastOpenClientFail",
  "rto",
  "ato",
  "sndMss",
  "rcvMss",
  "unAcked",
  "sAcked",
  "lost",
  "retrans",
  "fAckets",
  "lastDataSent",
  "lastAckSent",
  "lastDataRecv",
  "lastAckRecv",
  "pMtu",
  "rcvSsThresh",
  "rtt",
  "rttVar",
  "sndSsThresh",
  "sndCwnd",
  "advMss",
  "reordering",
  "rcvRtt",
  "rcvSpace",
  "totalRetrans",
  "pacingRate",
  "maxPacingRate",
  "bytesAcked",
  "bytesRecv",
  "segsOut",
  "segsIn",
  "notsentBytes",
  "minRtt",
  "dataSegsIn",
  "dataSegsOut",
  "deliveryRate",
  "busyTime",
  "rwndLimited",
  "sndBufLimited",
  "delivered",
  "deliveredCe",
  "bytesSent",
  "bytesRetrans",
  "dsAckDups",
  "reordSeen",
  "rcvOooPack",
  "sndWnd",
] as const satisfies readonly (keyof TcpInfo)[];

/** Fields newer kernels add after the 56, written in full mode when present. */
const FULL_EXTRA_FIELDS = [
  "rcvWnd",
  "rehash",
  "totalRto",
  "totalRtoRecoveries",
  "totalRtoTime",
  "receivedCe",
  "deliveredE1Bytes",
  "deliveredE0Bytes",
  "deliveredCeBytes",
  "receivedE1Bytes",
  "receivedE0Bytes",
  "receivedCeBytes",
  "accecnFailMode",
  "accecnOptSeen",
] as const satisfies readonly (keyof TcpInfo)[];

function pick(info: TcpInfo, fields: readonly (keyof TcpInfo)[]): Json {
  const out: Json = {};
  for (const f of fields) {
    const v = info[f];
    if (v !== undefined) out[f] = exact(v);
  }
  return out;
}

function lean(info: FlowInfo): Json {
  const out: Json = {};
  if (info.cong?.algorithm) out.cong = { algorithm: info.cong.algorithm };
  out.tcpInfo = info.tcpInfo ? pick(info.tcpInfo, LEAN_FIELDS) : null;
  return out;
}

function skBuff(s: InetDiagSocket): Json {
  return {
    family: s.family,
    state: s.state,
    timer: s.timer,
    retrans: s.retrans,
    id: {
      srcPort: s.id.srcPort,
      dstPort: s.id.dstPort,
      srcIP: [...s.id.srcIP],
      dstIP: [...s.id.dstIP],
      ifId: s.id.ifId,
      cookie: [...s.id.cookie],
    },
    expires: s.expires,
    rQueue: s.rQueue,
    wQueue: s.wQueue,
    uid: s.uid,
    iNode: s.iNode,
  };
}

function full(info: FlowInfo): Json {
  const out: Json = {
    tcpInfo: info.tcpInfo ? pick(info.tcpInfo, [...FULL_FIELDS, ...FULL_EXTRA_FIELDS]) : null,
  };
  if (info.cong) out.cong = { algorithm: info.cong.algorithm };
  if (info.socket) out.skBuff = skBuff(info.socket);
  if (info.bbr) {
    out.bbr = {
      bbrBW: exact(info.bbr.bbrBW),
      bbrMinRTT: info.bbr.bbrMinRTT,
      bbrPacingGain: info.bbr.bbrPacingGain,
      bbrCwndGain: info.bbr.bbrCwndGain,
    };
  }
  if (info.tos) out.tos = { tos: info.tos.tos };
  if (info.memInfo) out.memInfo = { ...info.memInfo };
  if (info.skMemInfo) out.skMemInfo = { ...info.skMemInfo };
  if (info.vegasInfo) out.vegasInfo = { ...info.vegasInfo };
  if (info.dctcpInfo) out.dctcpInfo = { ...info.dctcpInfo };
  return out;
}

/** ss's names of the TCP states (flowd's "compatible" spelling); "unconnected" is TCP_CLOSE. */
const STATE_NAMES = [
  "INVALID",
  "established",
  "syn-sent",
  "syn-recv",
  "fin-wait-1",
  "fin-wait-2",
  "time-wait",
  "unconnected",
  "close-wait",
  "last-ack",
  "listening",
  "closing",
];

const ms = (us: number) => Math.trunc(us / 1000);

function compatible(info: FlowInfo): Json {
  const t = info.tcpInfo;
  const out: Json = {};
  if (t) {
    const opts: string[] = [];
    if (t.options & 1) opts.push("ts");
    if (t.options & 2) opts.push("sack");
    if (t.options & 8) opts.push("ecn");
    Object.assign(out, {
      state: STATE_NAMES[t.state] ?? "invalid",
      pmtu: t.pMtu,
      retrans: t.retrans,
      ato: ms(t.ato),
      // The kernel's initial 3 s RTO before any RTT sample reads as 0, as ss-based flowd showed it.
      rto: t.rto === 3_000_000 ? 0 : ms(t.rto),
      snd_wscale: t.sndWscale,
      rcv_wscale: t.rcvdWscale,
      snd_mss: t.sndMss,
      snd_cwnd: t.sndCwnd,
      snd_ssthresh: t.sndSsThresh >= 0xffff ? 0 : t.sndSsThresh,
      rtt: ms(t.rtt),
      rttvar: ms(t.rttVar),
      rcv_rtt: ms(t.rcvRtt),
      rcv_space: t.rcvSpace,
      opts,
      last_data_sent: t.lastDataSent,
      rcv_ssthresh: t.rcvSsThresh,
      segs_in: t.segsIn,
      segs_out: t.segsOut,
      data_segs_in: t.dataSegsIn,
      data_segs_out: t.dataSegsOut,
      lost: t.lost,
      notsent_bytes: t.notsentBytes,
      rcv_mss: t.rcvMss,
      pacing_rate: exact(t.pacingRate),
      retransmits: t.retransmits,
      min_rtt: t.minRtt,
      rwnd_limited: exact(t.rwndLimited),
      max_pacing_rate: exact(t.maxPacingRate),
      probes: t.probes,
      reordering: t.reordering,
      last_data_recv: t.lastDataRecv,
      bytes_received: exact(t.bytesRecv),
      fackets: t.fAckets,
      last_ack_recv: t.lastAckRecv,
      last_ack_sent: t.lastAckSent,
      unacked: t.unAcked,
      sacked: t.sAcked,
      bytes_acked: exact(t.bytesAcked),
      delivery_rate_app_limited: t.deliveryRateAppLimited,
      delivery_rate: exact(t.deliveryRate),
      sndbuf_limited: exact(t.sndBufLimited),
      ca_state: t.caState,
      busy_time: exact(t.busyTime),
      total_retrans: t.totalRetrans,
      advmss: t.advMss,
      backoff: t.backoff,
    });
  }
  if (info.cong?.algorithm) out.cong = info.cong.algorithm;
  return out;
}

/** The enrichment object of an ongoing firefly, in the given mode; serialise it with JSON.stringify. */
export function encodeEnrichment(info: FlowInfo, mode: EnrichmentMode): Json {
  switch (mode) {
    case "lean":
      return lean(info);
    case "compatible":
      return compatible(info);
    case "full":
      return full(info);
  }
}
