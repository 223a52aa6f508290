/**
 * rtnetlink queries: links, addresses and routes of this host (or of a given network namespace).
 *
 * The marker's interface discovery and the public-address mapping need these facts from the kernel
 * directly, without shelling out to `ip`.
 */
import {
  NETLINK_ROUTE,
  type NetlinkMessage,
  NetlinkSocket,
  type NetlinkSocketOptions,
} from "../../ffi/netlink.ts";
import {
  attributeMap,
  attrString,
  attrU32,
  attrU8,
  encodeAttribute,
  NetlinkError,
} from "../../ffi/netlink_framing.ts";
import { type Family, IpAddress } from "./ip.ts";

/** rtnetlink message types used here. */
export const RTM_NEWLINK = 16;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_GETROUTE = 26;

/** Address families on the wire. */
export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** Interface flags (net_device_flags). */
export const IFF_UP = 0x1;
export const IFF_LOOPBACK = 0x8;
export const IFF_RUNNING = 0x40;
export const IFF_LOWER_UP = 0x10000;

/** Address flags (IFA_F_*), as carried by IFA_FLAGS. */
export const IFA_F_NODAD = 0x02;
export const IFA_F_DADFAILED = 0x08;
export const IFA_F_DEPRECATED = 0x20;
export const IFA_F_TENTATIVE = 0x40;
export const IFA_F_PERMANENT = 0x80;

/** Route table and type values. */
export const RT_TABLE_MAIN = 254;
export const RTN_UNICAST = 1;
const RTNH_F_DEAD = 0x1;

/** Hardware types (ARPHRD_*) worth naming. */
export const ARPHRD_ETHER = 1;
export const ARPHRD_LOOPBACK = 772;
export const ARPHRD_NONE = 0xfffe;

const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_OPERSTATE = 16;
const IFLA_LINKINFO = 18;
const IFLA_INFO_KIND = 1;

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_LABEL = 3;
const IFA_FLAGS = 8;

const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_PREFSRC = 7;
const RTA_MULTIPATH = 9;
const RTA_TABLE = 15;
const RTA_VIA = 18;

const IFINFOMSG_SIZE = 16;
const IFADDRMSG_SIZE = 8;
const RTMSG_SIZE = 12;
const RTNEXTHOP_SIZE = 8;

/** A network interface. */
export interface Link {
  readonly index: number;
  readonly name: string;
  /** Raw IFF_* flags. */
  readonly flags: number;
  /** Administratively up (IFF_UP). */
  readonly up: boolean;
  /** Up and operational (IFF_RUNNING). */
  readonly running: boolean;
  readonly loopback: boolean;
  /** Hardware type (ARPHRD_*): 1 Ethernet, 772 loopback, 65534 none (tun, wireguard). */
  readonly type: number;
  readonly mtu: number;
  /** RFC 2863 operational state (IF_OPER_*), when reported: 6 up, 2 down, 0 unknown. */
  readonly operState: number | undefined;
  /** Driver kind from IFLA_LINKINFO ("veth", "bridge", ...), when reported. */
  readonly kind: string | undefined;
  /** Link-layer address, when the interface has one. */
  readonly hardwareAddress: Uint8Array | undefined;
}

/** An address assigned to an interface. */
export interface InterfaceAddress {
  readonly ifindex: number;
  readonly family: Family;
  /** The local address. */
  readonly address: IpAddress;
  /** The other end of a point-to-point link, when configured. */
  readonly peer: IpAddress | undefined;
  readonly prefixLength: number;
  /** RT_SCOPE_*: 0 global, 200 site, 253 link, 254 host. */
  readonly scope: number;
  /** IFA_F_* flags, the 32-bit IFA_FLAGS value when present. */
  readonly flags: number;
  readonly label: string | undefined;
}

/** One next hop of a route. */
export interface Nexthop {
  readonly ifindex: number;
  readonly gateway: IpAddress | undefined;
  /** Multipath weight (1 for single-path routes). */
  readonly weight: number;
  /** RTNH_F_* flags. */
  readonly flags: number;
}

/** A route from the kernel's routing tables. */
export interface Route {
  readonly family: Family;
  readonly table: number;
  /** RTPROT_*: 2 kernel, 3 boot, 4 static, 9 ra, 16 dhcp. */
  readonly protocol: number;
  readonly scope: number;
  /** RTN_*: 1 unicast, 2 local, 6 blackhole, 7 unreachable. */
  readonly type: number;
  readonly flags: number;
  /** Destination prefix; undefined with length 0 for a default route. */
  readonly destination: IpAddress | undefined;
  readonly destinationLength: number;
  /** Metric; lower wins. */
  readonly priority: number;
  readonly preferredSource: IpAddress | undefined;
  /** The route's next hops: one for an ordinary route, several for a multipath route. */
  readonly nexthops: readonly Nexthop[];
}

function familyOf(af: number): Family | undefined {
  return af === AF_INET ? "ipv4" : af === AF_INET6 ? "ipv6" : undefined;
}

function afOf(family: Family | undefined): number {
  return family === "ipv4" ? AF_INET : family === "ipv6" ? AF_INET6 : AF_UNSPEC;
}

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** An address attribute of the given family, or undefined if its length does not fit the family. */
function addressOf(value: Uint8Array | undefined, family: Family): IpAddress | undefined {
  if (value === undefined) return undefined;
  const want = family === "ipv4" ? 4 : 16;
  return value.byteLength === want ? IpAddress.fromBytes(value) : undefined;
}

/** Decodes an RTM_NEWLINK message. */
export function parseLink(message: NetlinkMessage): Link {
  const p = message.payload;
  if (p.byteLength < IFINFOMSG_SIZE) {
    throw new NetlinkError(
      `RTM_NEWLINK payload has ${p.byteLength} bytes, expected at least ${IFINFOMSG_SIZE}`,
    );
  }
  const v = dataView(p);
  const index = v.getInt32(4, true);
  const flags = v.getUint32(8, true);
  const attrs = attributeMap(p.subarray(IFINFOMSG_SIZE));
  const name = attrs.get(IFLA_IFNAME);
  const mtu = attrs.get(IFLA_MTU);
  const oper = attrs.get(IFLA_OPERSTATE);
  const info = attrs.get(IFLA_LINKINFO);
  const kind = info === undefined ? undefined : attributeMap(info).get(IFLA_INFO_KIND);
  const hw = attrs.get(IFLA_ADDRESS);
  return {
    index,
    name: name === undefined ? `if${index}` : attrString(name),
    flags,
    up: (flags & IFF_UP) !== 0,
    running: (flags & IFF_RUNNING) !== 0,
    loopback: (flags & IFF_LOOPBACK) !== 0,
    type: v.getUint16(2, true),
    mtu: mtu === undefined ? 0 : attrU32(mtu, "IFLA_MTU"),
    operState: oper === undefined ? undefined : attrU8(oper, "IFLA_OPERSTATE"),
    kind: kind === undefined ? undefined : attrString(kind),
    hardwareAddress: hw === undefined || hw.byteLength === 0 ? undefined : Uint8Array.from(hw),
  };
}

/** Decodes an RTM_NEWADDR message; undefined for families other than IPv4/IPv6 or an unusable address. */
export function parseAddress(message: NetlinkMessage): InterfaceAddress | undefined {
  const p = message.payload;
  if (p.byteLength < IFADDRMSG_SIZE) {
    throw new NetlinkError(
      `RTM_NEWADDR payload has ${p.byteLength} bytes, expected at least ${IFADDRMSG_SIZE}`,
    );
  }
  const v = dataView(p);
  const family = familyOf(p[0]!);
  if (family === undefined) return undefined;
  const attrs = attributeMap(p.subarray(IFADDRMSG_SIZE));
  const local = addressOf(attrs.get(IFA_LOCAL), family);
  const addr = addressOf(attrs.get(IFA_ADDRESS), family);
  // With IFA_LOCAL present, IFA_ADDRESS is the peer of a point-to-point link (or the same address).
  const address = local ?? addr;
  if (address === undefined) return undefined;
  const extFlags = attrs.get(IFA_FLAGS);
  const label = attrs.get(IFA_LABEL);
  return {
    ifindex: v.getUint32(4, true),
    family,
    address,
    peer: local !== undefined && addr !== undefined && !addr.equals(local) ? addr : undefined,
    prefixLength: p[1]!,
    scope: p[3]!,
    // The 8-bit header field cannot hold the newer flags; IFA_FLAGS supersedes it when present.
    flags: extFlags === undefined ? p[2]! : attrU32(extFlags, "IFA_FLAGS"),
    label: label === undefined ? undefined : attrString(label),
  };
}

function parseMultipath(bytes: Uint8Array, family: Family): Nexthop[] {
  const hops: Nexthop[] = [];
  const v = dataView(bytes);
  let offset = 0;
  while (offset + RTNEXTHOP_SIZE <= bytes.byteLength) {
    const length = v.getUint16(offset, true);
    if (length < RTNEXTHOP_SIZE || offset + length > bytes.byteLength) {
      throw new NetlinkError(`RTA_MULTIPATH next hop at offset ${offset} claims ${length} bytes`);
    }
    const attrs = attributeMap(bytes.subarray(offset + RTNEXTHOP_SIZE, offset + length));
    hops.push({
      flags: v.getUint8(offset + 2),
      weight: v.getUint8(offset + 3) + 1,
      ifindex: v.getInt32(offset + 4, true),
      gateway: addressOf(attrs.get(RTA_GATEWAY), family) ?? viaOf(attrs.get(RTA_VIA)),
    });
    offset += (length + 3) & ~3;
  }
  return hops;
}

/** RTA_VIA: a gateway of another family (an IPv4 route via an IPv6 neighbour). */
function viaOf(value: Uint8Array | undefined): IpAddress | undefined {
  if (value === undefined || value.byteLength < 2) return undefined;
  const family = familyOf(dataView(value).getUint16(0, true));
  return family === undefined ? undefined : addressOf(value.subarray(2), family);
}

/** Decodes an RTM_NEWROUTE message; undefined for families other than IPv4/IPv6. */
export function parseRoute(message: NetlinkMessage): Route | undefined {
  const p = message.payload;
  if (p.byteLength < RTMSG_SIZE) {
    throw new NetlinkError(`RTM_NEWROUTE payload has ${p.byteLength} bytes, expected at least ${RTMSG_SIZE}`);
  }
  const family = familyOf(p[0]!);
  if (family === undefined) return undefined;
  const attrs = attributeMap(p.subarray(RTMSG_SIZE));
  const table = attrs.get(RTA_TABLE);
  const oif = attrs.get(RTA_OIF);
  const priority = attrs.get(RTA_PRIORITY);
  const multipath = attrs.get(RTA_MULTIPATH);
  const flags = dataView(p).getUint32(8, true);
  const nexthops = multipath !== undefined ? parseMultipath(multipath, family) : oif === undefined ? [] : [{
    ifindex: attrU32(oif, "RTA_OIF"),
    gateway: addressOf(attrs.get(RTA_GATEWAY), family) ?? viaOf(attrs.get(RTA_VIA)),
    weight: 1,
    flags: flags & 0xff,
  }];
  return {
    family,
    destinationLength: p[1]!,
    // The 8-bit rtm_table cannot name tables above 255; RTA_TABLE always can.
    table: table === undefined ? p[4]! : attrU32(table, "RTA_TABLE"),
    protocol: p[5]!,
    scope: p[6]!,
    type: p[7]!,
    flags,
    destination: addressOf(attrs.get(RTA_DST), family),
    priority: priority === undefined ? 0 : attrU32(priority, "RTA_PRIORITY"),
    preferredSource: addressOf(attrs.get(RTA_PREFSRC), family),
    nexthops,
  };
}

/** An rtnetlink connection; open one per component and close it when done. */
export class Rtnetlink implements Disposable {
  readonly #socket: NetlinkSocket;

  private constructor(socket: NetlinkSocket) {
    this.#socket = socket;
  }

  /** Opens a NETLINK_ROUTE socket (optionally inside another network namespace). */
  static open(options: NetlinkSocketOptions = {}): Rtnetlink {
    return new Rtnetlink(NetlinkSocket.open(NETLINK_ROUTE, options));
  }

  /** All interfaces, up or down. */
  async links(): Promise<Link[]> {
    const replies = await this.#socket.dump(RTM_GETLINK, new Uint8Array(IFINFOMSG_SIZE));
    return replies.filter((m) => m.type === RTM_NEWLINK).map(parseLink);
  }

  /** One interface by index; undefined when there is no such interface. */
  async link(index: number): Promise<Link | undefined> {
    const request = new Uint8Array(IFINFOMSG_SIZE);
    dataView(request).setInt32(4, index, true);
    try {
      const replies = await this.#socket.request(RTM_GETLINK, request);
      const reply = replies.find((m) => m.type === RTM_NEWLINK);
      return reply === undefined ? undefined : parseLink(reply);
    } catch (err) {
      if (err instanceof NetlinkError && err.errno === 19 /* ENODEV */) return undefined;
      throw err;
    }
  }

  /** Addresses of one family, or of both when `family` is omitted. */
  async addresses(family?: Family): Promise<InterfaceAddress[]> {
    const request = new Uint8Array(IFADDRMSG_SIZE);
    request[0] = afOf(family);
    const replies = await this.#socket.dump(RTM_GETADDR, request);
    const out: InterfaceAddress[] = [];
    for (const m of replies) {
      if (m.type !== RTM_NEWADDR) continue;
      const a = parseAddress(m);
      if (a !== undefined) out.push(a);
    }
    return out;
  }

  /** Every route of a family, in every table. */
  async routes(family: Family): Promise<Route[]> {
    const request = new Uint8Array(RTMSG_SIZE);
    request[0] = afOf(family);
    const replies = await this.#socket.dump(RTM_GETROUTE, request);
    const out: Route[] = [];
    for (const m of replies) {
      if (m.type !== RTM_NEWROUTE) continue;
      const r = parseRoute(m);
      if (r !== undefined) out.push(r);
    }
    return out;
  }

  /** Usable default routes of the main table for a family, lowest metric first. */
  async defaultRoutes(family: Family): Promise<Route[]> {
    const routes = await this.routes(family);
    return routes
      .filter((r) =>
        r.table === RT_TABLE_MAIN && r.type === RTN_UNICAST && r.destinationLength === 0 &&
        r.nexthops.some((h) => (h.flags & RTNH_F_DEAD) === 0)
      )
      .sort((a, b) => a.priority - b.priority);
  }

  /**
   * The route the kernel would pick for `destination` (like `ip route get`), honouring policy rules.
   * Only asks the kernel; nothing is sent on the network.
   */
  async routeTo(destination: IpAddress): Promise<Route | undefined> {
    const header = new Uint8Array(RTMSG_SIZE);
    header[0] = afOf(destination.family);
    header[1] = destination.family === "ipv4" ? 32 : 128;
    const attr = encodeAttribute(RTA_DST, destination.bytes());
    const full = new Uint8Array(RTMSG_SIZE + attr.byteLength);
    full.set(header);
    full.set(attr, RTMSG_SIZE);
    try {
      const replies = await this.#socket.request(RTM_GETROUTE, full);
      const reply = replies.find((m) => m.type === RTM_NEWROUTE);
      return reply === undefined ? undefined : parseRoute(reply);
    } catch (err) {
      // No route at all (an IPv6-only host asked about IPv4, for instance) is an answer, not a failure.
      if (err instanceof NetlinkError && (err.errno === 101 /* ENETUNREACH */ || err.errno === 113)) {
        return undefined;
      }
      throw err;
    }
  }

  /** Closes the socket. */
  close(): void {
    this.#socket.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
