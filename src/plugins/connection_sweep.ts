/**
 * The connections plugin's sock_diag sweep: every established TCP connection of this network namespace
 * (IPv4 and IPv6), with its socket cookie (the same the watcher program reports), who opened it, its
 * age and the cgroup of its socket.
 *
 * The kernel keeps no start time a dump could return, so the age is a lower bound from tcp_info: the
 * longest of the times since data was last sent, received and an ACK last received (each starts at the
 * establishment and only moves later) and the time the connection spent sending (busy, receive-window
 * and send-buffer limited). It is exact for a connection idle since its handshake and short for a busy
 * one by at most the time since its last activity.
 *
 * Direction: a connection whose local port has a listening socket is inbound (this host accepted it),
 * any other outbound. A client that bound its source port to a port something else listens on is
 * misread; the watcher's own events (which see the handshake) are never.
 */
import { SockDiag, TCP_ESTABLISHED, TCP_LISTEN } from "../net/sock_diag.ts";
import { extensionBit, INET_DIAG_INFO } from "../net/sock_diag.ts";
import type { Family } from "../net/ip.ts";
import { IpAddress } from "../net/ip.ts";
import type { Connection } from "./connection_rules.ts";

/** One connection found by a sweep. */
export interface SweptConnection extends Connection {
  readonly cookie: bigint;
  /** Milliseconds since the connection was established, at least (see the module comment). */
  readonly ageMs: number;
  /** The cgroup v2 id of the socket (the inode of its cgroup directory), when the kernel says. */
  readonly cgroupId?: bigint;
}

const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];

function unmapped(a: IpAddress): IpAddress {
  return a.isIpv4Mapped() ? IpAddress.fromBytes(a.bytes().subarray(12)) : a;
}

/** Every ESTABLISHED TCP connection of the namespace `diag` is bound to. */
export async function sweepConnections(diag: SockDiag): Promise<SweptConnection[]> {
  const listening = new Set<number>();
  for (const family of FAMILIES) {
    for (const r of await diag.dump({ family, states: 1 << TCP_LISTEN, extensions: 0 })) {
      listening.add(r.socket.id.srcPort);
    }
  }
  const out: SweptConnection[] = [];
  for (const family of FAMILIES) {
    const replies = await diag.dump({
      family,
      states: 1 << TCP_ESTABLISHED,
      extensions: extensionBit(INET_DIAG_INFO),
    });
    for (const r of replies) {
      const id = r.socket.id;
      const t = r.tcpInfo;
      const activeMs = t === undefined ? 0 : Number((t.busyTime + t.rwndLimited + t.sndBufLimited) / 1000n);
      const ageMs = t === undefined ? 0 : Math.max(t.lastDataSent, t.lastDataRecv, t.lastAckRecv, activeMs);
      out.push({
        cookie: BigInt(id.cookie[0]) | (BigInt(id.cookie[1]) << 32n),
        local: { address: unmapped(id.src), port: id.srcPort },
        remote: { address: unmapped(id.dst), port: id.dstPort },
        direction: listening.has(id.srcPort) ? "inbound" : "outbound",
        ageMs,
        cgroupId: r.cgroupId,
      });
    }
  }
  return out;
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
