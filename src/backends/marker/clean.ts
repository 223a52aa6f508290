/**
 * `flowd-go marker clean`: removes the marker's hooks (TCX links, tc filters) and the clsact qdiscs it
 * created from every interface, or from the ones named, and says what it removed. Other programs' hooks
 * and qdiscs are never touched; running it again finds nothing more to do.
 */
import { closeFd } from "../../../ffi/libc_net.ts";
import { linkDetach, linkFdById, TcAttachPoint, tcDetach, tcHookDestroy } from "../../../ffi/libbpf.ts";
import {
  CLSACT_EGRESS_PARENT,
  CLSACT_INGRESS_PARENT,
  hasClsactQdisc,
  listTcFilters,
} from "../../../ffi/tc_filters.ts";
import { errorMessage } from "../../core/errors.ts";
import { logger } from "../../core/log.ts";
import { type Link, Rtnetlink } from "../../net/rtnetlink.ts";
import { inNamespace, ourTcFilters, ourTcxLinks } from "./our_hooks.ts";
import { QdiscLedger, type QdiscRecord } from "./qdisc_ledger.ts";

const log = logger("backends", "marker");

/** What to clean. */
export interface CleanOptions {
  /** Only these interfaces (all when absent or empty); a name that does not exist is a failure. */
  interfaces?: readonly string[];
  /** Work in this network namespace (a path such as /run/netns/x) instead of our own. */
  netns?: string;
  /** Record of the qdiscs the marker created; by default the file at DEFAULT_LEDGER_PATH. */
  ledger?: QdiscLedger;
  /** Also delete the clsact qdiscs the marker created (default true). */
  removeQdiscs?: boolean;
}

/** One thing removed. */
export interface CleanAction {
  readonly interface: string;
  readonly removed: "tcxLink" | "tcFilter" | "qdisc";
  readonly detail: string;
}

/** One interface that could not be cleaned. */
export interface CleanFailure {
  readonly interface: string;
  readonly error: string;
}

/** The outcome: nothing removed and no failures means there was nothing to do. */
export interface CleanReport {
  readonly removed: CleanAction[];
  readonly failures: CleanFailure[];
}

/** Removes the marker's hooks and created qdiscs; never throws for a single interface's failure. */
export async function cleanMarkerHooks(opts: CleanOptions = {}): Promise<CleanReport> {
  const ledger = opts.ledger ?? new QdiscLedger();
  const removed: CleanAction[] = [];
  const failures: CleanFailure[] = [];
  let links: Link[];
  {
    using rt = Rtnetlink.open({ netns: opts.netns });
    links = await rt.links();
  }
  const wanted = opts.interfaces?.length ? opts.interfaces : undefined;
  const selected: Link[] = [];
  if (wanted) {
    for (const name of wanted) {
      const link = links.find((l) => l.name === name);
      if (link) selected.push(link);
      else failures.push({ interface: name, error: "there is no such interface" });
    }
  } else {
    selected.push(...links);
  }

  for (const link of selected) {
    try {
      removed.push(...await cleanInterface(link, opts.netns, ledger, opts.removeQdiscs ?? true));
    } catch (err) {
      failures.push({ interface: link.name, error: errorMessage(err) });
    }
  }

  // Records of interfaces that are gone describe qdiscs that went with them.
  if (!wanted) {
    for (const r of ledger.records(opts.netns ?? "")) {
      if (!links.some((l) => l.index === r.ifindex && l.name === r.ifname)) ledger.forget(r);
    }
  }

  for (const a of removed) log.info("removed", { interface: a.interface, what: a.removed, detail: a.detail });
  for (const f of failures) log.error("cannot clean", { interface: f.interface, err: f.error });
  if (removed.length === 0 && failures.length === 0) log.info("nothing to clean");
  return { removed, failures };
}

async function cleanInterface(
  link: Link,
  netns: string | undefined,
  ledger: QdiscLedger,
  removeQdiscs: boolean,
): Promise<CleanAction[]> {
  const done: CleanAction[] = [];
  const ifname = link.name;

  for (const l of inNamespace(netns, () => ourTcxLinks(link.index))) {
    const fd = linkFdById(l.linkId);
    if (fd === undefined) continue;
    try {
      linkDetach(fd);
    } finally {
      closeFd(fd);
    }
    done.push({
      interface: ifname,
      removed: "tcxLink",
      detail: `TCX egress link ${l.linkId} (program ${l.progId}), held by a running process`,
    });
  }

  for (const f of await ourTcFilters(link.index, netns)) {
    inNamespace(
      netns,
      () => tcDetach(link.index, TcAttachPoint.egress, { handle: f.handle, priority: f.priority }),
    );
    done.push({
      interface: ifname,
      removed: "tcFilter",
      detail: `egress bpf filter handle 0x${f.handle.toString(16)} priority ${f.priority}` +
        (f.bpfProgId !== undefined ? ` (program ${f.bpfProgId})` : ""),
    });
  }

  const record: QdiscRecord = { ifname, ifindex: link.index, ...(netns ? { netns } : {}) };
  if (removeQdiscs && ledger.owns(record)) {
    if (!await hasClsactQdisc(link.index, netns)) {
      ledger.forget(record);
    } else {
      const others = [
        ...await listTcFilters(link.index, CLSACT_INGRESS_PARENT, netns),
        ...await listTcFilters(link.index, CLSACT_EGRESS_PARENT, netns),
      ];
      if (others.length === 0) {
        inNamespace(netns, () => tcHookDestroy(link.index, TcAttachPoint.ingress | TcAttachPoint.egress));
        ledger.forget(record);
        done.push({ interface: ifname, removed: "qdisc", detail: "clsact qdisc created by the marker" });
      } else {
        log.info("kept the clsact qdisc the marker created: other filters use it", {
          interface: ifname,
          filters: others.length,
        });
      }
    }
  }
  return done;
}
