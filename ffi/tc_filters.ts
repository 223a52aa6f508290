/**
 * Lists the tc filters and qdiscs of an interface over rtnetlink (RTM_GETTFILTER / RTM_GETQDISC dumps),
 * which libbpf cannot do: the marker needs it to find its own leftover filters whatever their handle, and
 * to see whether a clsact qdisc it created still holds anybody else's filters before deleting it.
 */
import { NETLINK_ROUTE, type NetlinkMessage, NetlinkSocket } from "./netlink.ts";
import { attributeMap, attrString, attrU32, NetlinkError } from "./netlink_framing.ts";

const RTM_NEWQDISC = 36;
const RTM_GETQDISC = 38;
const RTM_NEWTFILTER = 44;
const RTM_GETTFILTER = 46;

const TCA_KIND = 1;
const TCA_OPTIONS = 2;
const TCA_BPF_NAME = 7;
const TCA_BPF_FLAGS = 8;
const TCA_BPF_ID = 11;

/** tcm_parent of the clsact qdisc's two sides (TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS/EGRESS)). */
export const CLSACT_INGRESS_PARENT = 0xfffffff2;
export const CLSACT_EGRESS_PARENT = 0xfffffff3;
/** Handle and parent of a clsact qdisc itself. */
const CLSACT_HANDLE = 0xffff0000;
const TC_H_CLSACT = 0xfffffff1;

/** One classifier instance as the kernel reports it. */
export interface TcFilter {
  readonly ifindex: number;
  readonly parent: number;
  /** tc priority (the upper 16 bits of tcm_info). */
  readonly priority: number;
  /** EtherType the filter applies to, host order (0x0003 = ETH_P_ALL). */
  readonly protocol: number;
  readonly handle: number;
  /** Classifier kind: "bpf", "matchall", "u32", ... */
  readonly kind: string;
  /** bpf filters: the name libbpf or tc gave it ("<prog name>:[<id>]" from libbpf). */
  readonly bpfName?: string;
  /** bpf filters: the kernel id of the attached program. */
  readonly bpfProgId?: number;
  /** bpf filters: TCA_BPF_FLAGS (1 = direct action). */
  readonly bpfFlags?: number;
}

/** A tcmsg (struct tcmsg, 20 bytes): family@0, ifindex@4, handle@8, parent@12, info@16. */
function tcmsg(ifindex: number, parent: number): Uint8Array {
  const out = new Uint8Array(20);
  const dv = new DataView(out.buffer);
  dv.setInt32(4, ifindex, true);
  dv.setUint32(12, parent >>> 0, true);
  return out;
}

function parseTcmsg(m: NetlinkMessage) {
  if (m.payload.byteLength < 20) {
    throw new NetlinkError(`tc message of ${m.payload.byteLength} bytes is too short`);
  }
  const dv = new DataView(m.payload.buffer, m.payload.byteOffset, 20);
  return {
    ifindex: dv.getInt32(4, true),
    handle: dv.getUint32(8, true),
    parent: dv.getUint32(12, true),
    info: dv.getUint32(16, true),
    attrs: attributeMap(m.payload.subarray(20)),
  };
}

function withSocket<T>(netns: string | undefined, use: (s: NetlinkSocket) => Promise<T>): Promise<T> {
  const socket = NetlinkSocket.open(NETLINK_ROUTE, { netns, receiveQueueBytes: 256 * 1024 });
  return use(socket).finally(() => socket.close());
}

/**
 * The filters attached under `parent` (for example CLSACT_EGRESS_PARENT) of an interface. Returns an
 * empty list when the interface has no such qdisc. `netns` is a namespace path such as /run/netns/x.
 */
export function listTcFilters(ifindex: number, parent: number, netns?: string): Promise<TcFilter[]> {
  return withSocket(netns, async (socket) => {
    const replies = await socket.dump(RTM_GETTFILTER, tcmsg(ifindex, parent));
    const filters: TcFilter[] = [];
    for (const m of replies) {
      if (m.type !== RTM_NEWTFILTER) continue;
      const t = parseTcmsg(m);
      // The first message of each classifier instance describes the instance itself, with no handle.
      if (t.handle === 0 || t.ifindex !== ifindex) continue;
      const kindAttr = t.attrs.get(TCA_KIND);
      const kind = kindAttr ? attrString(kindAttr) : "";
      const filter: { -readonly [K in keyof TcFilter]: TcFilter[K] } = {
        ifindex,
        parent: t.parent,
        priority: t.info >>> 16,
        protocol: ((t.info & 0xff) << 8) | ((t.info >>> 8) & 0xff),
        handle: t.handle,
        kind,
      };
      const options = t.attrs.get(TCA_OPTIONS);
      if (kind === "bpf" && options) {
        const o = attributeMap(options);
        const name = o.get(TCA_BPF_NAME);
        const id = o.get(TCA_BPF_ID);
        const flags = o.get(TCA_BPF_FLAGS);
        if (name) filter.bpfName = attrString(name);
        if (id) filter.bpfProgId = attrU32(id, "TCA_BPF_ID");
        if (flags) filter.bpfFlags = attrU32(flags, "TCA_BPF_FLAGS");
      }
      filters.push(filter);
    }
    return filters;
  });
}

/** Whether the interface has a clsact qdisc. */
export function hasClsactQdisc(ifindex: number, netns?: string): Promise<boolean> {
  return withSocket(netns, async (socket) => {
    const replies = await socket.dump(RTM_GETQDISC, tcmsg(ifindex, 0));
    return replies.some((m) => {
      if (m.type !== RTM_NEWQDISC) return false;
      const t = parseTcmsg(m);
      const kind = t.attrs.get(TCA_KIND);
      return t.ifindex === ifindex && t.handle === CLSACT_HANDLE && t.parent === TC_H_CLSACT &&
        kind !== undefined && attrString(kind) === "clsact";
    });
  });
}
