/**
 * The clsact qdiscs the marker created, written to a small file so that the knowledge survives a crash:
 * the next start (or `flowd-go marker clean`) may then delete a qdisc it made, and never one it did not.
 */
import { logger } from "../../core/log.ts";

const log = logger("backends", "marker");

/** Where the record lives unless configured otherwise. */
export const DEFAULT_LEDGER_PATH = "/run/flowd-go/marker-qdiscs.json";

/** One qdisc the marker created. */
export interface QdiscRecord {
  readonly ifname: string;
  readonly ifindex: number;
  /** Network namespace path the interface lives in; absent for the daemon's own namespace. */
  readonly netns?: string;
}

function same(a: QdiscRecord, b: QdiscRecord): boolean {
  return a.ifindex === b.ifindex && a.ifname === b.ifname && (a.netns ?? "") === (b.netns ?? "");
}

/** The set of qdiscs created by the marker, kept in a JSON file (or only in memory when path is undefined). */
export class QdiscLedger {
  #records: QdiscRecord[];

  constructor(readonly path: string | undefined = DEFAULT_LEDGER_PATH) {
    this.#records = path === undefined ? [] : QdiscLedger.#read(path);
  }

  /** Whether the marker created the clsact qdisc of this interface. */
  owns(r: QdiscRecord): boolean {
    return this.#records.some((x) => same(x, r));
  }

  /** Every recorded qdisc (in the given namespace when `netns` is passed, "" meaning the own one). */
  records(netns?: string): QdiscRecord[] {
    return this.#records.filter((r) => netns === undefined || (r.netns ?? "") === netns);
  }

  /** Notes that the marker created this qdisc. */
  record(r: QdiscRecord): void {
    if (this.owns(r)) return;
    // An older entry for the same index or name describes an interface that no longer exists.
    this.#records = this.#records.filter((x) =>
      (x.netns ?? "") !== (r.netns ?? "") || (x.ifindex !== r.ifindex && x.ifname !== r.ifname)
    );
    this.#records.push({ ifname: r.ifname, ifindex: r.ifindex, ...(r.netns ? { netns: r.netns } : {}) });
    this.#write();
  }

  /** Notes that the qdisc is gone (deleted, or its interface vanished). */
  forget(r: QdiscRecord): void {
    const before = this.#records.length;
    this.#records = this.#records.filter((x) => !same(x, r));
    if (this.#records.length !== before) this.#write();
  }

  static #read(path: string): QdiscRecord[] {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      log.warn("cannot read the record of created qdiscs; assuming none", { path, err });
      return [];
    }
    try {
      const parsed = JSON.parse(text) as { qdiscs?: unknown };
      if (!Array.isArray(parsed.qdiscs)) throw new Error("no qdiscs array");
      return parsed.qdiscs.filter((r): r is QdiscRecord =>
        typeof r === "object" && r !== null && typeof r.ifname === "string" && Number.isInteger(r.ifindex) &&
        (r.netns === undefined || typeof r.netns === "string")
      );
    } catch (err) {
      log.warn("the record of created qdiscs is unreadable; assuming none", { path, err });
      return [];
    }
  }

  #write(): void {
    if (this.path === undefined) return;
    const text = JSON.stringify({ version: 1, qdiscs: this.#records }, null, 2) + "\n";
    try {
      const dir = this.path.slice(0, this.path.lastIndexOf("/"));
      if (dir) Deno.mkdirSync(dir, { recursive: true });
      const tmp = `${this.path}.tmp`;
      Deno.writeTextFileSync(tmp, text);
      Deno.renameSync(tmp, this.path);
    } catch (err) {
      // Losing the record only means a created qdisc may be kept later; marking itself is unaffected.
      log.warn("cannot write the record of created qdiscs", { path: this.path, err });
    }
  }
}
