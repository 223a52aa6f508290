/**
 * Who may send us datagrams, and how fast: an allow-list of address prefixes and a token bucket per
 * source address. A listener that relays what it receives (the firefly plugin) would otherwise reflect
 * any spoofed datagram to the address it names.
 */
import { IpAddress } from "./ip.ts";
import { type Prefix, prefixContains } from "./private_ranges.ts";

/** What the gate decided for one datagram. */
export type GateVerdict = "pass" | "not-allowed" | "rate-limited";

/** Settings of a `SourceGate`. */
export interface SourceGateOptions {
  allowed: readonly Prefix[];
  /** Datagrams per second per source address; 0: no limit. */
  ratePerSecond: number;
  /** Datagrams a source may send at once after being quiet. */
  burst: number;
  /** Sources whose buckets are remembered (least recently seen forgotten first). */
  maxSources?: number;
  /** Clock in ms, replaceable in tests. */
  now?: () => number;
}

/** Buckets remembered by default: plenty for the peers of one host, small in memory (~100 B each). */
export const DEFAULT_MAX_SOURCES = 4096;

interface Bucket {
  tokens: number;
  at: number;
}

/** The IPv4 address inside ::ffff:a.b.c.d (what a dual-stack socket reports for IPv4 senders). */
function unmapped(address: IpAddress): IpAddress {
  return address.isIpv4Mapped() ? IpAddress.fromBytes(address.bytes().subarray(12)) : address;
}

/** Allow-list and per-source rate limit. */
export class SourceGate {
  readonly #buckets = new Map<string, Bucket>();
  readonly #now: () => number;
  readonly #maxSources: number;

  constructor(private readonly opts: SourceGateOptions) {
    this.#now = opts.now ?? (() => performance.now());
    this.#maxSources = opts.maxSources ?? DEFAULT_MAX_SOURCES;
  }

  /** True when every allowed prefix is loopback, so nothing off this host can reach the listener. */
  get loopbackOnly(): boolean {
    return this.opts.allowed.every((p) =>
      p.address.family === "ipv4"
        ? p.length >= 8 && p.address.isLoopback()
        : p.length === 128 && p.address.isLoopback()
    );
  }

  /** Decides for a datagram from `source` (text as the socket reports it). */
  admit(source: string): GateVerdict {
    const parsed = IpAddress.tryParse(source);
    if (parsed === undefined) return "not-allowed";
    const address = unmapped(parsed);
    if (!this.opts.allowed.some((p) => prefixContains(p, address))) return "not-allowed";
    if (this.opts.ratePerSecond <= 0) return "pass";
    const key = address.toString();
    const now = this.#now();
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.#maxSources) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
      bucket = { tokens: this.opts.burst, at: now };
    } else {
      this.#buckets.delete(key); // re-inserted below: the Map's order is the recency order
      bucket.tokens = Math.min(
        this.opts.burst,
        bucket.tokens + ((now - bucket.at) / 1000) * this.opts.ratePerSecond,
      );
      bucket.at = now;
    }
    this.#buckets.set(key, bucket);
    if (bucket.tokens < 1) return "rate-limited";
    bucket.tokens -= 1;
    return "pass";
  }
}
