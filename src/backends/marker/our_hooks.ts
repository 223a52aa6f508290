/**
 * How the marker's hooks are told apart from everybody else's: a tc filter is ours when it is a bpf
 * filter running a program named `flowd_marker` (we attach it at a fixed handle and priority); a TCX
 * link is ours when it runs such a program on the interface's egress hook in this network namespace.
 */
import { inNetworkNamespace } from "../../../ffi/libc_socket.ts";
import { closeFd } from "../../../ffi/libc_net.ts";
import {
  BPF_LINK_TYPE_TCX,
  BPF_TCX_EGRESS,
  linkFdById,
  linkIds,
  linkInfo,
  progNameById,
  TcAttachPoint,
  tcQuery,
  tcxProgramIds,
} from "../../../ffi/libbpf.ts";
import { CLSACT_EGRESS_PARENT, listTcFilters, type TcFilter } from "../../../ffi/tc_filters.ts";
import { PROGRAM_NAME } from "./layout.ts";

/** tc handle of our egress filter ("5c17a6", for SciTag). */
export const TC_HANDLE = 0x5c17a6;
/**
 * tc priority of our egress filter: low, so that the marker runs before filters added with tc's default
 * (49152); it always lets the next filter run. Not 1, where other tools' classifiers often sit.
 */
export const TC_PRIORITY = 0x5c;

/** Runs synchronous kernel calls in another network namespace (by path), or here when undefined. */
export function inNamespace<T>(netns: string | undefined, fn: () => T): T {
  return netns === undefined ? fn() : inNetworkNamespace(netns, fn);
}

/** Whether the program with this id is a marker program. */
export function isOurProgram(progId: number | undefined): boolean {
  return progId !== undefined && progNameById(progId) === PROGRAM_NAME;
}

/** Whether a listed tc filter is ours. */
export function isOurTcFilter(f: TcFilter): boolean {
  if (f.kind !== "bpf") return false;
  if (f.bpfProgId !== undefined) {
    const name = progNameById(f.bpfProgId);
    if (name !== undefined) return name === PROGRAM_NAME;
  }
  // libbpf names the filter "<program name>:[<id>]".
  return f.bpfName?.startsWith(`${PROGRAM_NAME}:`) ?? false;
}

/** What sits at our tc handle and priority on an interface's egress (call inside the right namespace). */
export function filterAtOurSlot(ifindex: number): { progId: number; ours: boolean } | undefined {
  const found = tcQuery(ifindex, TcAttachPoint.egress, { handle: TC_HANDLE, priority: TC_PRIORITY });
  return found && { progId: found.progId, ours: isOurProgram(found.progId) };
}

/** Our egress tc filters on an interface, wherever they sit. */
export async function ourTcFilters(ifindex: number, netns?: string): Promise<TcFilter[]> {
  return (await listTcFilters(ifindex, CLSACT_EGRESS_PARENT, netns)).filter(isOurTcFilter);
}

/** A TCX link running our program. */
export interface OurTcxLink {
  readonly linkId: number;
  readonly progId: number;
}

/** Our TCX egress links on an interface of the caller's namespace (call inside the right namespace). */
export function ourTcxLinks(ifindex: number): OurTcxLink[] {
  const attached = new Set(tcxProgramIds(ifindex, BPF_TCX_EGRESS).filter((id) => isOurProgram(id)));
  if (attached.size === 0) return [];
  const out: OurTcxLink[] = [];
  for (const id of linkIds()) {
    const fd = linkFdById(id);
    if (fd === undefined) continue;
    try {
      const info = linkInfo(fd);
      if (
        info.type === BPF_LINK_TYPE_TCX && info.tcxAttachType === BPF_TCX_EGRESS &&
        info.tcxIfindex === ifindex &&
        attached.has(info.progId)
      ) {
        out.push({ linkId: info.id, progId: info.progId });
      }
    } finally {
      closeFd(fd);
    }
  }
  return out;
}
