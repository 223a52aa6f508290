/**
 * The connections plugin's sock_diag sweep: every established TCP connection of this network namespace
 * (IPv4 and IPv6), with its socket cookie (the same the watcher program reports), who opened it, its
 * age and the cgroup of its socket.
 *
 * The kernel keeps no start time a dump could return, so the age is a lower bound from tcp_info: the
 * longest of the times since data was last sent, received and an ACK last received (each starts at the
 * establishment and only moves later) and the time the connection spent sending (busy, receive-window
 * and send-buffer limited). It is exact (to the millisecond) for a connection idle since its handshake or
 * sending ever since, and short for one that idled first and was active lately.
 *
 * Direction: a connection whose local port has a listening socket is inbound (this host accepted it),
 * any other outbound. A client that bound its source port to a port something else listens on is
 * misread; the watcher's own events (which see the handshake) are never.
 */
import {
  extensionBit,
  INET_DIAG_INFO,
  parseSockDiagMessage,
  SockDiag,
  TCP_ESTABLISHED,
  TCP_LISTEN,
  type TcpInfo,
} from "../net/sock_diag.ts";
import type { Endpoint, Family } from "../net/ip.ts";
import { IpAddress } from "../net/ip.ts";
import type { Connection } from "./connection_rules.ts";

/** One connection found by a sweep that the caller did not know yet. */
export interface SweptConnection extends Connection {
  readonly cookie: bigint;
  /** Milliseconds since the connection was established, at least (see the module comment); when asked for. */
  readonly ageMs?: number;
  /** The cgroup v2 id of the socket (the inode of its cgroup directory), when the kernel says. */
  readonly cgroupId?: bigint;
}

/** What a sweep found: every established connection's cookie, and the unknown ones in full. */
export interface SweepResult {
  readonly present: Set<bigint>;
  readonly unknown: SweptConnection[];
}

const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];

function unmapped(a: IpAddress): IpAddress {
  return a.isIpv4Mapped() ? IpAddress.fromBytes(a.bytes().subarray(12)) : a;
}

/** The lower bound of a connection's age from its tcp_info (see the module comment). */
export function ageFromTcpInfo(t: TcpInfo): number {
  const activeMs = Number((t.busyTime + t.rwndLimited + t.sndBufLimited) / 1000n);
  return Math.max(t.lastDataSent, t.lastDataRecv, t.lastAckRecv, activeMs);
}

/** The age of one connection, by an exact lookup (undefined if it is gone). */
export async function connectionAge(
  diag: SockDiag,
  local: Endpoint,
  remote: Endpoint,
): Promise<number | undefined> {
  const r = await diag.lookup(local, remote, { extensions: extensionBit(INET_DIAG_INFO) });
  return r?.tcpInfo === undefined ? undefined : ageFromTcpInfo(r.tcpInfo);
}

/** The socket cookie of an inet_diag reply, read without decoding the rest. */
function replyCookie(payload: Uint8Array): bigint {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return BigInt(v.getUint32(44, true)) | (BigInt(v.getUint32(48, true)) << 32n);
}

const yieldToEvents = () => new Promise((r) => setTimeout(r, 0));

/**
 * Every ESTABLISHED TCP connection of the namespace `diag` is bound to. Replies of connections `known`
 * accepts are only counted present (not decoded: a repair sweep of 10,000 known connections stays cheap);
 * `withAge` asks the kernel for tcp_info (the start-up sweep; a repair sweep looks up the age of the few
 * new ones instead). Between dumps it lets other work run (the watcher's records).
 */
export async function sweepConnections(
  diag: SockDiag,
  known: (cookie: bigint) => boolean,
  withAge: boolean,
): Promise<SweepResult> {
  const listening = new Set<number>();
  for (const family of FAMILIES) {
    for (const r of await diag.dump({ family, states: 1 << TCP_LISTEN, extensions: 0 })) {
      listening.add(r.socket.id.srcPort);
    }
  }
  const present = new Set<bigint>();
  const unknown: SweptConnection[] = [];
  for (const family of FAMILIES) {
    await yieldToEvents();
    const replies = await diag.dumpReplies({
      family,
      states: 1 << TCP_ESTABLISHED,
      extensions: withAge ? extensionBit(INET_DIAG_INFO) : 0,
    });
    for (const payload of replies) {
      const cookie = replyCookie(payload);
      present.add(cookie);
      if (known(cookie)) continue;
      const r = parseSockDiagMessage({ payload });
      const id = r.socket.id;
      unknown.push({
        cookie,
        local: { address: unmapped(id.src), port: id.srcPort },
        remote: { address: unmapped(id.dst), port: id.dstPort },
        direction: listening.has(id.srcPort) ? "inbound" : "outbound",
        ageMs: r.tcpInfo === undefined ? undefined : ageFromTcpInfo(r.tcpInfo),
        cgroupId: r.cgroupId,
      });
    }
  }
  return { present, unknown };
}

/**
 * The cgroup ids (directory inodes) of a cgroup and everything below it, for keeping a sweep to the
 * sockets of the cgroup the watcher is attached to; undefined for a cgroup2 root (everything is below).
 */
export async function cgroupSubtreeIds(path: string, isRoot: boolean): Promise<Set<bigint> | undefined> {
  if (isRoot) return undefined;
  const ids = new Set<bigint>();
  const walk = async (dir: string): Promise<void> => {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(dir);
    } catch {
      return; // removed while we walked
    }
    if (info.ino !== null) ids.add(BigInt(info.ino));
    try {
      for await (const e of Deno.readDir(dir)) if (e.isDirectory) await walk(`${dir}/${e.name}`);
    } catch { /* removed while we walked */ }
  };
  await walk(path);
  return ids;
}
