/**
 * Attaching the marker to interfaces' egress and taking it off again.
 *
 * Two kinds of hook: a TCX link (kernel 6.6+; owned by this process, gone when it exits, no qdisc, no
 * clash with other tc users) or a direct-action bpf filter on a clsact qdisc (older kernels such as
 * EL9's 5.14; survives the process). With clsact the marker only ever touches its own filter, at a fixed
 * handle and priority, replaces its own leftover from a crashed run, and deletes a qdisc only when it
 * created it and nobody else's filters remain on it.
 */
import {
  BPF_F_BEFORE,
  BPF_TCX_EGRESS,
  Errno,
  LibbpfError,
  linkCreate,
  linkDetach,
  progNameById,
  tcAttach,
  TcAttachPoint,
  tcDetach,
  tcHookCreate,
  tcHookDestroy,
} from "../../../ffi/libbpf.ts";
import { closeFd } from "../../../ffi/libc_net.ts";
import { CLSACT_EGRESS_PARENT, CLSACT_INGRESS_PARENT, listTcFilters } from "../../../ffi/tc_filters.ts";
import { errorMessage } from "../../core/errors.ts";
import { logger } from "../../core/log.ts";
import { type Link, Rtnetlink } from "../../net/rtnetlink.ts";
import type { LinkLayer } from "./layout.ts";
import { linkLayerOf, unsupportedLinkLayer } from "./link_layer.ts";
import { filterAtOurSlot, inNamespace, TC_HANDLE, TC_PRIORITY } from "./our_hooks.ts";
import type { MarkerProgram } from "./program.ts";
import { QdiscLedger, type QdiscRecord } from "./qdisc_ledger.ts";

const log = logger("backends", "marker");

/** How to hook in: TCX where the kernel has it (auto), or one kind by force. */
export type AttachMode = "auto" | "tcx" | "tc";

/** Options of `MarkerHooks`. */
export interface MarkerHooksOptions {
  mode: AttachMode;
  /** With clsact: delete the qdisc at detach when the marker created it (and no other filter uses it). */
  removeQdisc: boolean;
  /** Record of created qdiscs; by default the file at DEFAULT_LEDGER_PATH. */
  ledger?: QdiscLedger;
  /** Work on the interfaces of this network namespace (a path such as /run/netns/x) instead of our own. */
  netns?: string;
}

/** The marker on one interface. */
export interface Attachment {
  readonly ifname: string;
  readonly ifindex: number;
  readonly kind: "tcx" | "tc";
  readonly linkLayer: LinkLayer;
  /** Kernel id of the program attached. */
  readonly progId: number;
  /** tc: the clsact qdisc was created by the marker (now or by an earlier run). */
  readonly ownsQdisc: boolean;
  /** tc: a filter left by an earlier run of the marker was replaced. */
  readonly replacedLeftover: boolean;
}

interface LiveAttachment extends Attachment {
  /** tcx: the link; closing it detaches the program. */
  linkFd: number;
  /** The interface went away while attached. */
  gone: boolean;
}

/** An attachment without the internal fields. */
function publicView({ linkFd: _fd, gone: _gone, ...a }: LiveAttachment): Attachment {
  return a;
}

// Whether this kernel has TCX, learnt by the first attempt (auto mode).
let tcxAvailable: boolean | undefined;

/** The marker's hooks on a set of interfaces. */
export class MarkerHooks {
  readonly #live = new Map<string, LiveAttachment>();
  readonly #ledger: QdiscLedger;
  #watch: ReturnType<typeof setInterval> | undefined;
  #checking: Promise<void> | undefined;

  constructor(private readonly program: MarkerProgram, private readonly opts: MarkerHooksOptions) {
    this.#ledger = opts.ledger ?? new QdiscLedger();
  }

  /** Current attachments (interfaces that disappeared are not listed). */
  attachments(): Attachment[] {
    return [...this.#live.values()].filter((a) => !a.gone).map(publicView);
  }

  /** Interfaces the marker was attached to that have disappeared (it re-attaches when they come back). */
  vanished(): string[] {
    return [...this.#live.values()].filter((a) => a.gone).map((a) => a.ifname);
  }

  /** Attaches the marker to an interface's egress; throws naming the interface and the cause. */
  async attach(ifname: string): Promise<Attachment> {
    const existing = this.#live.get(ifname);
    if (existing && !existing.gone) return publicView(existing);
    const link = (await this.#links()).find((l) => l.name === ifname);
    if (!link) throw new Error(`cannot attach the marker to ${ifname}: there is no such interface`);
    const linkLayer = linkLayerOf(link.type);
    if (!linkLayer) {
      throw new Error(`cannot attach the marker to ${ifname}: ${unsupportedLinkLayer(ifname, link.type)}`);
    }
    const progFd = this.program.programFd(linkLayer);
    const progId = this.program.programId(linkLayer);
    const attachment = this.opts.mode !== "tc" ? this.#attachTcx(link, linkLayer, progFd, progId) : undefined;
    const live = attachment ?? this.#attachTc(link, linkLayer, progFd, progId);
    this.#live.set(ifname, live);
    // The TCX link replaced a crashed run's tc filter: its qdisc, if ours, may now serve nobody.
    if (
      live.kind === "tcx" && live.replacedLeftover && this.opts.removeQdisc &&
      this.#ledger.owns(this.#record(live))
    ) {
      await this.#removeQdiscIfUnused(live);
    }
    log.info("marker attached", {
      interface: ifname,
      hook: live.kind,
      progId,
      linkLayer,
      ...(live.kind === "tc" ? { qdisc: live.ownsQdisc ? "ours" : "pre-existing" } : {}),
      ...(live.replacedLeftover ? { replacedLeftover: true } : {}),
    });
    return publicView(live);
  }

  /** Detaches from one interface (no-op when not attached); problems are logged, not thrown. */
  async detach(ifname: string): Promise<void> {
    const a = this.#live.get(ifname);
    if (!a) return;
    this.#live.delete(ifname);
    if (a.kind === "tcx") {
      try {
        if (!a.gone) linkDetach(a.linkFd);
      } catch (err) {
        log.debug("TCX link already detached", { interface: ifname, err: errorMessage(err) });
      } finally {
        closeFd(a.linkFd);
      }
      log.info("marker detached", { interface: ifname, hook: "tcx" });
      return;
    }
    const record = this.#record(a);
    if (a.gone) {
      this.#ledger.forget(record);
      return;
    }
    try {
      inNamespace(
        this.opts.netns,
        () => tcDetach(a.ifindex, TcAttachPoint.egress, { handle: TC_HANDLE, priority: TC_PRIORITY }),
      );
      log.info("marker detached", { interface: ifname, hook: "tc" });
    } catch (err) {
      if (err instanceof LibbpfError && [Errno.ENOENT, Errno.ENODEV, Errno.EINVAL].includes(err.errno as 2)) {
        log.debug("the marker's tc filter was already gone", { interface: ifname, err: err.message });
      } else {
        log.warn("cannot remove the marker's tc filter", { interface: ifname, err: errorMessage(err) });
      }
    }
    if (a.ownsQdisc && this.opts.removeQdisc) await this.#removeQdiscIfUnused(a);
  }

  /** Detaches from every interface. */
  async detachAll(): Promise<void> {
    this.stopWatching();
    await this.#checking;
    for (const name of [...this.#live.keys()]) await this.detach(name);
  }

  /**
   * Notices interfaces that disappeared (logged once; the hook went with them) and attaches again to
   * those that came back under the same name.
   */
  async check(): Promise<void> {
    if (this.#live.size === 0) return;
    const links = await this.#links();
    for (const a of [...this.#live.values()]) {
      if (!a.gone && !links.some((l) => l.index === a.ifindex)) {
        a.gone = true;
        log.warn("interface disappeared; packets there are no longer marked", {
          interface: a.ifname,
          ifindex: a.ifindex,
        });
        if (a.kind === "tcx") {
          // The link went defunct with the device; close it once, and never again at detach.
          closeFd(a.linkFd);
          a.linkFd = -1;
        }
        if (a.ownsQdisc) this.#ledger.forget(this.#record(a));
      }
      if (a.gone && links.some((l) => l.name === a.ifname)) {
        this.#live.delete(a.ifname);
        try {
          await this.attach(a.ifname);
          log.info("interface is back; marker attached again", { interface: a.ifname });
        } catch (err) {
          this.#live.set(a.ifname, a);
          log.warn("interface is back but the marker cannot attach to it", {
            interface: a.ifname,
            err: errorMessage(err),
          });
        }
      }
    }
  }

  /** Runs `check()` every `intervalMs` until `stopWatching()` or `detachAll()`. */
  startWatching(intervalMs: number): void {
    this.stopWatching();
    this.#watch = setInterval(() => {
      if (this.#checking) return;
      this.#checking = this.check()
        .catch((err) => log.warn("cannot check the marked interfaces", { err: errorMessage(err) }))
        .finally(() => this.#checking = undefined);
    }, intervalMs);
  }

  stopWatching(): void {
    if (this.#watch !== undefined) clearInterval(this.#watch);
    this.#watch = undefined;
  }

  async #links(): Promise<Link[]> {
    using rt = Rtnetlink.open({ netns: this.opts.netns });
    return await rt.links();
  }

  #record(a: { ifname: string; ifindex: number }): QdiscRecord {
    return { ifname: a.ifname, ifindex: a.ifindex, ...(this.opts.netns ? { netns: this.opts.netns } : {}) };
  }

  /** A TCX link, or undefined when auto mode finds no TCX in this kernel. */
  #attachTcx(link: Link, linkLayer: LinkLayer, progFd: number, progId: number): LiveAttachment | undefined {
    const required = this.opts.mode === "tcx";
    if (!required && tcxAvailable === false) return undefined;
    let linkFd: number;
    try {
      // First in the chain, so that programs that end it (TC_ACT_OK) still see marked packets.
      linkFd = inNamespace(
        this.opts.netns,
        () => linkCreate(progFd, link.index, BPF_TCX_EGRESS, BPF_F_BEFORE),
      );
      tcxAvailable = true;
    } catch (err) {
      const noTcx = err instanceof LibbpfError &&
        (err.errno === Errno.EINVAL || err.errno === Errno.EOPNOTSUPP);
      if (noTcx && !required && tcxAvailable === undefined) {
        tcxAvailable = false;
        log.info("this kernel has no TCX links; using tc clsact filters", { kernel: Deno.osRelease() });
        return undefined;
      }
      const hint = noTcx
        ? ` (kernel ${Deno.osRelease()} may lack TCX, which needs 6.6; try attachMode tc)`
        : "";
      throw new Error(
        `attaching the marker to ${link.name} (TCX egress) failed${hint}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    // A filter of ours left by a crashed tc-mode run would mark a second time from a stale map.
    const leftover = inNamespace(this.opts.netns, () => filterAtOurSlot(link.index));
    if (leftover?.ours) {
      try {
        inNamespace(
          this.opts.netns,
          () => tcDetach(link.index, TcAttachPoint.egress, { handle: TC_HANDLE, priority: TC_PRIORITY }),
        );
        log.info("removed the marker's tc filter left by an earlier run", { interface: link.name });
      } catch (err) {
        log.warn("cannot remove the marker's tc filter left by an earlier run", {
          interface: link.name,
          err: errorMessage(err),
        });
      }
    }
    return {
      ifname: link.name,
      ifindex: link.index,
      kind: "tcx",
      linkLayer,
      progId,
      ownsQdisc: false,
      replacedLeftover: leftover?.ours ?? false,
      linkFd,
      gone: false,
    };
  }

  #attachTc(link: Link, linkLayer: LinkLayer, progFd: number, progId: number): LiveAttachment {
    const netns = this.opts.netns;
    const where = `${link.name} (tc egress, handle 0x${TC_HANDLE.toString(16)}, priority ${TC_PRIORITY})`;
    const leftover = inNamespace(netns, () => filterAtOurSlot(link.index));
    if (leftover && !leftover.ours) {
      const name = progNameById(leftover.progId) ?? "unknown";
      throw new Error(
        `cannot attach the marker to ${where}: that slot holds another program's filter (${name}, id ${leftover.progId}); ` +
          `it is left alone`,
      );
    }
    const record = this.#record({ ifname: link.name, ifindex: link.index });
    let created: boolean;
    try {
      created = inNamespace(netns, () => tcHookCreate(link.index, TcAttachPoint.egress)) === "created";
    } catch (err) {
      throw new Error(`cannot create the clsact qdisc on ${link.name}: ${errorMessage(err)}`, { cause: err });
    }
    if (created) this.#ledger.record(record);
    const ownsQdisc = created || this.#ledger.owns(record);
    try {
      inNamespace(netns, () =>
        tcAttach(link.index, TcAttachPoint.egress, {
          progFd,
          handle: TC_HANDLE,
          priority: TC_PRIORITY,
          replace: leftover?.ours ?? false,
        }));
    } catch (err) {
      if (created) {
        try {
          inNamespace(netns, () => tcHookDestroy(link.index, TcAttachPoint.ingress | TcAttachPoint.egress));
          this.#ledger.forget(record);
        } catch (cleanupErr) {
          log.warn("cannot remove the clsact qdisc after a failed attach", {
            interface: link.name,
            err: errorMessage(cleanupErr),
          });
        }
      }
      throw new Error(`attaching the marker to ${where} failed: ${errorMessage(err)}`, { cause: err });
    }
    if (leftover?.ours) {
      log.info("replaced the marker's tc filter left by an earlier run", { interface: link.name });
    }
    return {
      ifname: link.name,
      ifindex: link.index,
      kind: "tc",
      linkLayer,
      progId,
      ownsQdisc,
      replacedLeftover: leftover?.ours ?? false,
      linkFd: -1,
      gone: false,
    };
  }

  /** Deletes a clsact qdisc the marker created, unless somebody else's filters now live on it. */
  async #removeQdiscIfUnused(a: { ifname: string; ifindex: number }): Promise<void> {
    const netns = this.opts.netns;
    try {
      const others = [
        ...await listTcFilters(a.ifindex, CLSACT_INGRESS_PARENT, netns),
        ...await listTcFilters(a.ifindex, CLSACT_EGRESS_PARENT, netns),
      ];
      if (others.length > 0) {
        log.info("kept the clsact qdisc the marker created: other filters use it", {
          interface: a.ifname,
          filters: others.length,
        });
        return;
      }
      inNamespace(netns, () => tcHookDestroy(a.ifindex, TcAttachPoint.ingress | TcAttachPoint.egress));
      this.#ledger.forget(this.#record(a));
      log.info("removed the clsact qdisc the marker created", { interface: a.ifname });
    } catch (err) {
      log.warn("cannot remove the clsact qdisc the marker created", {
        interface: a.ifname,
        err: errorMessage(err),
      });
    }
  }
}
