// inet_diag request building and reply parsing on crafted bytes laid out as the kernel lays them out.
import assert from "node:assert/strict";
import {
  concatBytes,
  encodeAttribute,
  encodeMessage,
  NetlinkError,
  parseMessages,
} from "../../ffi/netlink_framing.ts";
import {
  encodePortFilter,
  encodeRequest,
  INET_DIAG_BBRINFO,
  INET_DIAG_CONG,
  INET_DIAG_DCTCPINFO,
  INET_DIAG_INFO,
  INET_DIAG_MEMINFO,
  INET_DIAG_SKMEMINFO,
  INET_DIAG_TOS,
  INET_DIAG_VEGASINFO,
  matchesFilter,
  parseSockDiagMessage,
  parseTcpInfo,
  replyKey,
  SOCK_DIAG_BY_FAMILY,
  socketKey,
  type TcpInfo,
} from "../../src/net/sock_diag.ts";
import { IpAddress } from "../../src/net/ip.ts";

/** The 56 tcp_info fields flowd-go's full mode emits. */
const FLOWD_FIELDS = [
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
] as const;

/** A tcp_info of `length` bytes with recognisable values at the kernel's offsets. */
function tcpInfoBytes(length: number): Uint8Array {
  const b = new Uint8Array(length);
  const v = new DataView(b.buffer);
  b.set([1, 4, 2, 3, 5, 7], 0); // state..options
  b[6] = 0x2a; // low nibble snd_wscale 10, high nibble rcv_wscale 2
  b[7] = 0x07; // app_limited 1, fastopen_client_fail 3
  v.setUint32(8, 204000, true); // rto
  v.setUint32(16, 1448, true); // snd_mss
  v.setUint32(68, 1234, true); // rtt
  v.setUint32(72, 617, true); // rttvar
  v.setUint32(80, 10, true); // snd_cwnd
  v.setUint32(100, 3, true); // total_retrans
  if (length < 232) return b;
  v.setBigUint64(112, 0xffffffffffffffffn, true); // max_pacing_rate
  v.setBigUint64(120, 123456789012n, true); // bytes_acked
  v.setUint32(148, 900, true); // min_rtt
  v.setUint32(228, 65535, true); // snd_wnd
  if (length >= 280) {
    v.setUint32(232, 131072, true); // rcv_wnd
    v.setUint16(240, 4, true); // total_rto
    v.setUint16(278, 9, true); // accecn_opt_seen
  }
  return b;
}

function inetDiagMsg(family: 2 | 10, src: string, sport: number, dst: string, dport: number): Uint8Array {
  const b = new Uint8Array(72);
  const v = new DataView(b.buffer);
  b.set([family, 1, 2, 0], 0);
  v.setUint16(4, sport, false);
  v.setUint16(6, dport, false);
  b.set(IpAddress.parse(src).bytes(), 8);
  b.set(IpAddress.parse(dst).bytes(), 24);
  v.setUint32(40, 3, true); // if
  v.setUint32(44, 0x11, true); // cookie
  v.setUint32(48, 0x22, true);
  v.setUint32(56, 100, true); // rqueue
  v.setUint32(60, 200, true); // wqueue
  v.setUint32(64, 1000, true); // uid
  v.setUint32(68, 424242, true); // inode
  return b;
}

function u32s(...ns: number[]): Uint8Array {
  return new Uint8Array(new Uint32Array(ns).buffer);
}

function reply(payload: Uint8Array) {
  return parseMessages(encodeMessage({ type: SOCK_DIAG_BY_FAMILY, flags: 2, seq: 1 }, payload))[0]!;
}

Deno.test("tcp_info: snd_wscale is the low nibble and rcv_wscale the high nibble", () => {
  const info = parseTcpInfo(tcpInfoBytes(280));
  assert.equal(info.sndWscale, 10);
  assert.equal(info.rcvdWscale, 2);
});

Deno.test("tcp_info: both fastopen_client_fail bits and the app-limited bit", () => {
  const b = tcpInfoBytes(232);
  let info = parseTcpInfo(b);
  assert.equal(info.deliveryRateAppLimited, 1);
  assert.equal(info.fastOpenClientFail, 3);
  b[7] = 0x04; // only the upper fastopen bit
  info = parseTcpInfo(b);
  assert.equal(info.deliveryRateAppLimited, 0);
  assert.equal(info.fastOpenClientFail, 2);
});

Deno.test("tcp_info: fields at the kernel's offsets, u64 counters exact as bigint", () => {
  const info = parseTcpInfo(tcpInfoBytes(280));
  assert.deepEqual(
    [info.state, info.caState, info.retransmits, info.probes, info.backoff, info.options],
    [1, 4, 2, 3, 5, 7],
  );
  assert.equal(info.rto, 204000);
  assert.equal(info.sndMss, 1448);
  assert.equal(info.rtt, 1234);
  assert.equal(info.rttVar, 617);
  assert.equal(info.sndCwnd, 10);
  assert.equal(info.totalRetrans, 3);
  assert.equal(info.maxPacingRate, 0xffffffffffffffffn);
  assert.equal(info.bytesAcked, 123456789012n);
  assert.equal(info.minRtt, 900);
  assert.equal(info.sndWnd, 65535);
});

Deno.test("tcp_info of 280 bytes (kernel 6.18) carries the newer fields; 232 bytes does not", () => {
  const long = parseTcpInfo(tcpInfoBytes(280));
  assert.equal(long.rcvWnd, 131072);
  assert.equal(long.totalRto, 4);
  assert.equal(long.accecnOptSeen, 9);
  const short = parseTcpInfo(tcpInfoBytes(232));
  assert.equal(short.sndWnd, 65535);
  assert.equal("rcvWnd" in short, false);
  assert.equal("accecnOptSeen" in short, false);
});

Deno.test("tcp_info shorter than flowd-go's 56 fields reads the missing ones as zero", () => {
  const info = parseTcpInfo(tcpInfoBytes(104)); // up to total_retrans, as very old kernels send
  assert.equal(info.totalRetrans, 3);
  assert.equal(info.bytesAcked, 0n);
  assert.equal(info.minRtt, 0);
  assert.equal(info.sndWnd, 0);
  const keys = Object.keys(info).sort();
  assert.deepEqual(keys, [...FLOWD_FIELDS].sort(), "exactly flowd-go's 56 fields");
});

Deno.test("tcp_info of 280 bytes has all 56 flowd-go fields plus the 14 newer ones", () => {
  const info: TcpInfo = parseTcpInfo(tcpInfoBytes(280));
  for (const f of FLOWD_FIELDS) assert.ok(f in info, `missing ${f}`);
  assert.equal(FLOWD_FIELDS.length, 56);
  assert.equal(Object.keys(info).length, 70);
});

Deno.test("memory attributes: words above 2^31 stay unsigned, words past a short attribute read as 0", () => {
  const payload = concatBytes([
    inetDiagMsg(2, "10.0.0.1", 5201, "10.0.0.2", 41000),
    encodeAttribute(INET_DIAG_MEMINFO, u32s(0xfffffff0, 0x80000000, 7)),
    encodeAttribute(INET_DIAG_SKMEMINFO, concatBytes([u32s(0xdeadbeef, 20, 30), Uint8Array.of(1, 2)])),
  ]);
  const r = parseSockDiagMessage(reply(payload));
  assert.deepEqual(r.memInfo, { rMem: 0xfffffff0, wMem: 0x80000000, fMem: 7, tMem: 0 });
  assert.deepEqual(r.skMemInfo, {
    rMemAlloc: 0xdeadbeef,
    rcvBuff: 20,
    WMemAlloc: 30,
    sndBuff: 0,
    fwdAlloc: 0,
    wMemQueued: 0,
    optMem: 0,
    backlog: 0,
    drops: 0,
  });
});

Deno.test("a reply is parsed with every known attribute, and unknown attributes are skipped", () => {
  const payload = concatBytes([
    inetDiagMsg(10, "2a00:1450::1", 5201, "2a00:1450::2", 41000),
    encodeAttribute(INET_DIAG_MEMINFO, u32s(1, 2, 3, 4)),
    encodeAttribute(INET_DIAG_INFO, tcpInfoBytes(280)),
    encodeAttribute(19, /* ULP_INFO, unknown here */ new Uint8Array(12).fill(0xee)),
    encodeAttribute(INET_DIAG_CONG, new TextEncoder().encode("cubic\0")),
    encodeAttribute(INET_DIAG_TOS, Uint8Array.of(0x28)),
    encodeAttribute(INET_DIAG_SKMEMINFO, u32s(10, 20, 30, 40, 50, 60, 70, 80, 90)),
    encodeAttribute(99, /* not yet invented */ Uint8Array.of(1, 2, 3)),
    encodeAttribute(INET_DIAG_VEGASINFO, u32s(1, 5, 1000, 900)),
    encodeAttribute(INET_DIAG_DCTCPINFO, concatBytes([Uint8Array.of(1, 0, 1, 0), u32s(512, 7, 70)])),
    encodeAttribute(INET_DIAG_BBRINFO, u32s(0x89abcdef, 0x1, 1500, 739, 512)),
  ]);
  const r = parseSockDiagMessage(reply(payload));
  assert.equal(r.socket.family, 10);
  assert.equal(r.socket.state, 1);
  assert.equal(r.socket.timer, 2);
  assert.equal(r.socket.id.srcPort, 5201);
  assert.equal(r.socket.id.dstPort, 41000);
  assert.equal(r.socket.id.src.toString(), "2a00:1450::1");
  assert.equal(r.socket.id.dst.toString(), "2a00:1450::2");
  assert.deepEqual(r.socket.id.srcIP, [0x5014002a, 0, 0, 0x01000000]);
  assert.equal(r.socket.id.ifId, 3);
  assert.deepEqual(r.socket.id.cookie, [0x11, 0x22]);
  assert.deepEqual([r.socket.rQueue, r.socket.wQueue, r.socket.uid, r.socket.iNode], [
    100,
    200,
    1000,
    424242,
  ]);
  assert.deepEqual(r.memInfo, { rMem: 1, wMem: 2, fMem: 3, tMem: 4 });
  assert.equal(r.tcpInfo?.sndWscale, 10);
  assert.deepEqual(r.cong, { algorithm: "cubic" });
  assert.deepEqual(r.tos, { tos: 0x28 });
  assert.deepEqual(r.skMemInfo, {
    rMemAlloc: 10,
    rcvBuff: 20,
    WMemAlloc: 30,
    sndBuff: 40,
    fwdAlloc: 50,
    wMemQueued: 60,
    optMem: 70,
    backlog: 80,
    drops: 90,
  });
  assert.deepEqual(r.vegasInfo, { enabled: 1, rttCount: 5, rtt: 1000, minRtt: 900 });
  assert.deepEqual(r.dctcpInfo, { enabled: 1, ceState: 1, alpha: 512, abeCn: 7, abTot: 70 });
  assert.deepEqual(r.bbr, { bbrBW: 0x189abcdefn, bbrMinRTT: 1500, bbrPacingGain: 739, bbrCwndGain: 512 });
});

Deno.test("an IPv4 reply takes its addresses from the first four bytes", () => {
  const r = parseSockDiagMessage(reply(inetDiagMsg(2, "::", 80, "::", 81)));
  assert.equal(r.socket.id.src.family, "ipv4");
  const b = inetDiagMsg(2, "::", 80, "::", 81);
  b.set([192, 0, 2, 1], 8);
  b.set([198, 51, 100, 7], 24);
  const r2 = parseSockDiagMessage(reply(b));
  assert.equal(r2.socket.id.src.toString(), "192.0.2.1");
  assert.equal(r2.socket.id.dst.toString(), "198.51.100.7");
  assert.equal(r2.tcpInfo, undefined);
});

Deno.test("INET_DIAG_INFO of a non-TCP request is not read as tcp_info", () => {
  const payload = concatBytes([
    inetDiagMsg(10, "::1", 1, "::1", 2),
    encodeAttribute(INET_DIAG_INFO, new Uint8Array(40)),
  ]);
  assert.equal(parseSockDiagMessage(reply(payload), 17).tcpInfo, undefined);
  assert.notEqual(parseSockDiagMessage(reply(payload), 6).tcpInfo, undefined);
});

Deno.test("a reply shorter than inet_diag_msg is refused", () => {
  assert.throws(() => parseSockDiagMessage(reply(new Uint8Array(40))), /inet_diag_msg has 40 bytes/);
});

Deno.test("dump request: family, protocol, extensions, states, ports in network order, no addresses", () => {
  const b = encodeRequest({ family: "ipv6", extensions: 0xff, states: 0xbff }, {
    srcPort: 5201,
    dstPort: 443,
  });
  const v = new DataView(b.buffer);
  assert.equal(b.byteLength, 56);
  assert.deepEqual([b[0], b[1], b[2], b[3]], [10, 6, 0xff, 0]);
  assert.equal(v.getUint32(4, true), 0xbff);
  assert.deepEqual([b[8], b[9], b[10], b[11]], [0x14, 0x51, 0x01, 0xbb]);
  assert.ok(b.subarray(12).every((x) => x === 0), "addresses, interface and cookie stay zero");
});

Deno.test("exact request: addresses in place and the no-cookie marker", () => {
  const b = encodeRequest(
    { family: "ipv4" },
    {
      srcPort: 1,
      dstPort: 2,
      src: IpAddress.parse("::ffff:192.0.2.1"),
      dst: IpAddress.parse("198.51.100.7"),
    },
    true,
  );
  const v = new DataView(b.buffer);
  assert.deepEqual([...b.subarray(12, 16)], [192, 0, 2, 1]);
  assert.deepEqual([...b.subarray(28, 32)], [198, 51, 100, 7]);
  assert.equal(v.getUint32(4, true), 0xffffffff, "every state by default");
  assert.equal(v.getUint32(48, true), 0xffffffff);
  assert.equal(v.getUint32(52, true), 0xffffffff);
  assert.throws(
    () => encodeRequest({ family: "ipv4" }, { src: IpAddress.parse("2001:db8::1") }),
    /does not belong to a ipv4 request/,
  );
});

Deno.test("the socket filter compares full addresses and ports, IPv4-mapped equal to IPv4", () => {
  const b = inetDiagMsg(10, "::ffff:192.0.2.1", 5201, "::ffff:198.51.100.7", 40000);
  const id = parseSockDiagMessage(reply(b)).socket.id;
  const v4 = (s: string) => IpAddress.parse(s);
  assert.ok(
    matchesFilter(id, { srcPort: 5201, dstPort: 40000, src: v4("192.0.2.1"), dst: v4("198.51.100.7") }),
  );
  assert.ok(matchesFilter(id, {}));
  assert.ok(!matchesFilter(id, { srcPort: 5201, dstPort: 40001 }));
  assert.ok(!matchesFilter(id, { dst: v4("198.51.100.8") }));
  assert.ok(!matchesFilter(id, { src: v4("2001:db8::1") }));
});

Deno.test("port filter bytecode: each test then a jump to the end, the last test's failure past the end", () => {
  const one = encodePortFilter({ end: "remote", ports: [5777] });
  assert.deepEqual([...one], [12, 0, 1, 0, 12, 8, 12, 0, 0, 0, 0x91, 0x16]);
  const two = encodePortFilter({ end: "local", ports: [1, 2] });
  // attr header, S_EQ yes 8 no 12, port 1, JMP yes 4 no 12 (to the end), S_EQ yes 8 no 12, port 2
  assert.deepEqual([...two], [24, 0, 1, 0, 11, 8, 12, 0, 0, 0, 1, 0, 1, 4, 12, 0, 11, 8, 12, 0, 0, 0, 2, 0]);
  assert.throws(() => encodePortFilter({ end: "local", ports: [] }), RangeError);
  assert.throws(() => encodePortFilter({ end: "local", ports: new Array(65).fill(1) }), RangeError);
});

Deno.test("socket keys: a reply's key equals its 5-tuple's, IPv4-mapped equal to IPv4, ports and ends told apart", () => {
  const reply = (family: number, src: number[], dst: number[], sport: number, dport: number) => {
    const p = new Uint8Array(72);
    p[0] = family;
    p.set([sport >> 8, sport & 0xff, dport >> 8, dport & 0xff], 4);
    p.set(src, 8);
    p.set(dst, 24);
    return p;
  };
  const ep = (a: string, port: number) => ({ address: IpAddress.parse(a), port });
  const v4 = replyKey(reply(2, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 1094));
  assert.equal(v4, socketKey(ep("10.0.0.1", 40000), ep("10.0.0.2", 1094)));
  const mapped = replyKey(
    reply(
      10,
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 0, 0, 1],
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 0, 0, 2],
      40000,
      1094,
    ),
  );
  assert.equal(mapped, v4);
  assert.equal(mapped, socketKey(ep("::ffff:10.0.0.1", 40000), ep("10.0.0.2", 1094)));
  const six = replyKey(
    reply(
      10,
      [0x20, 1, 0xd, 0xb8, ...new Array(11).fill(0), 1],
      [0x20, 1, 0xd, 0xb8, ...new Array(11).fill(0), 2],
      40000,
      1094,
    ),
  );
  assert.equal(six, socketKey(ep("2001:db8::1", 40000), ep("2001:db8::2", 1094)));
  assert.notEqual(six, socketKey(ep("2001:db8::2", 1094), ep("2001:db8::1", 40000)), "ends are not swapped");
  assert.notEqual(v4, socketKey(ep("10.0.0.1", 40001), ep("10.0.0.2", 1094)));
  assert.throws(() => replyKey(new Uint8Array(40)), NetlinkError);
});
