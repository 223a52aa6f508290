/**
 * IP address values: strict parsing of IPv4/IPv6 literals and canonical (RFC 5952) text.
 *
 * Flow events, fireflies and BPF map keys all need the raw bytes and the canonical text of an address,
 * so an address is parsed once into an `IpAddress` and carried as that.
 */
import { quoted } from "../core/clip.ts";

/** Address family as SciTags fireflies name it (`afi`). */
export type Family = "ipv4" | "ipv6";

/** An IPv4 (4 bytes) or IPv6 (16 bytes) address, with an optional IPv6 zone. Immutable. */
export class IpAddress {
  readonly family: Family;
  readonly #bytes: Uint8Array;
  readonly zone: string | undefined;
  #text: string | undefined;

  private constructor(bytes: Uint8Array, zone?: string) {
    this.#bytes = bytes;
    this.family = bytes.length === 4 ? "ipv4" : "ipv6";
    this.zone = zone;
  }

  /** Builds an address from 4 or 16 network-order bytes. */
  static fromBytes(bytes: Uint8Array, zone?: string): IpAddress {
    if (bytes.length !== 4 && bytes.length !== 16) {
      throw new RangeError(`An IP address has 4 or 16 bytes, not ${bytes.length}`);
    }
    if (zone !== undefined && bytes.length === 4) throw new RangeError("An IPv4 address has no zone");
    return new IpAddress(new Uint8Array(bytes), zone);
  }

  /** Parses an IPv4 or IPv6 literal (no brackets, no port); throws `SyntaxError` naming the text. */
  static parse(text: string): IpAddress {
    const parsed = tryParseIp(text);
    if (!parsed) throw new SyntaxError(`${quoted(text)} is not an IPv4 or IPv6 address`);
    return parsed;
  }

  /** Parses like `parse` but returns undefined instead of throwing. */
  static tryParse(text: string): IpAddress | undefined {
    return tryParseIp(text);
  }

  /** A copy of the network-order bytes. */
  bytes(): Uint8Array {
    return new Uint8Array(this.#bytes);
  }

  /** The byte at `index` in network order (undefined beyond the end), without copying them all. */
  byteAt(index: number): number | undefined {
    return this.#bytes[index];
  }

  /** True for ::ffff:a.b.c.d. */
  isIpv4Mapped(): boolean {
    const b = this.#bytes;
    return b.length === 16 && b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  }

  /** True for 0.0.0.0 and ::. */
  isUnspecified(): boolean {
    return this.#bytes.every((x) => x === 0);
  }

  /** True for 127.0.0.0/8 and ::1. */
  isLoopback(): boolean {
    const b = this.#bytes;
    if (b.length === 4) return b[0] === 127;
    return b.subarray(0, 15).every((x) => x === 0) && b[15] === 1;
  }

  equals(other: IpAddress): boolean {
    return this.toString() === other.toString();
  }

  /** Canonical text: dotted quad, or RFC 5952 compressed lower-case IPv6 (with `%zone` if any). */
  toString(): string {
    this.#text ??= formatIp(this.#bytes) + (this.zone !== undefined ? `%${this.zone}` : "");
    return this.#text;
  }

  toJSON(): string {
    return this.toString();
  }
}

function parseIpv4Bytes(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const part of parts) {
    // Decimal only, no leading zeros (they would be octal to some parsers).
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseIpv6Bytes(text: string): number[] | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  let tail: number[] = [];
  let body = text;
  // An embedded IPv4 tail (::ffff:1.2.3.4) stands for the last two groups.
  if (body.includes(".")) {
    const lastColon = body.lastIndexOf(":");
    const v4 = parseIpv4Bytes(body.slice(lastColon + 1));
    if (!v4 || lastColon < 1) return undefined;
    tail = v4;
    body = body.slice(0, lastColon + 1);
    if (!body.endsWith("::")) body = body.slice(0, -1);
  }
  const wantGroups = tail.length ? 6 : 8;
  const halves = body.split("::");
  if (halves.length > 2) return undefined;
  const parseGroups = (s: string): number[] | undefined => {
    if (s === "") return [];
    const groups: number[] = [];
    for (const g of s.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      groups.push(parseInt(g, 16));
    }
    return groups;
  };
  const head = parseGroups(halves[0] ?? "");
  const rest = halves.length === 2 ? parseGroups(halves[1] ?? "") : [];
  if (!head || !rest) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = wantGroups - head.length - rest.length;
    if (missing < 1) return undefined; // "::" stands for at least one zero group
    groups = [...head, ...new Array<number>(missing).fill(0), ...rest];
  } else {
    if (head.length !== wantGroups) return undefined;
    groups = head;
  }
  const out: number[] = [];
  for (const g of groups) out.push(g >> 8, g & 0xff);
  return [...out, ...tail];
}

/**
 * Addresses parsed lately, by their text. A relay parses the same few hosts' addresses over and over (the
 * firefly listener five times per datagram: source gate, schema check, event), and an `IpAddress` is
 * immutable, so one instance can serve every parse of a text. Only successes are kept; full, it starts over.
 */
const parsedAddresses = new Map<string, IpAddress>();
const MAX_PARSED_ADDRESSES = 4096;

function tryParseIp(text: string): IpAddress | undefined {
  if (typeof text !== "string") return undefined;
  const known = parsedAddresses.get(text);
  if (known !== undefined) return known;
  const parsed = parseIp(text);
  if (parsed !== undefined) {
    if (parsedAddresses.size >= MAX_PARSED_ADDRESSES) parsedAddresses.clear();
    parsedAddresses.set(text, parsed);
  }
  return parsed;
}

function parseIp(text: string): IpAddress | undefined {
  const v4 = parseIpv4Bytes(text);
  if (v4) return IpAddress.fromBytes(Uint8Array.from(v4));
  let zone: string | undefined;
  let addr = text;
  const pct = text.indexOf("%");
  if (pct >= 0) {
    zone = text.slice(pct + 1);
    addr = text.slice(0, pct);
    if (!/^[A-Za-z0-9_.\-]{1,15}$/.test(zone)) return undefined;
  }
  const v6 = parseIpv6Bytes(addr);
  return v6 ? IpAddress.fromBytes(Uint8Array.from(v6), zone) : undefined;
}

function formatIp(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join(".");
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] ?? 0) << 8) | (b[i + 1] ?? 0));
  // IPv4-mapped addresses keep the dotted tail, as RFC 5952 section 5 recommends.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  // Longest run of two or more zero groups (first one on ties) becomes "::".
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** An address and a port, as in "[::1]:7777" or "127.0.0.1:7777". */
export interface Endpoint {
  readonly address: IpAddress;
  readonly port: number;
}

/** Formats an endpoint as "ip:port", with brackets for IPv6. */
export function formatEndpoint(ep: Endpoint): string {
  return ep.address.family === "ipv6" ? `[${ep.address}]:${ep.port}` : `${ep.address}:${ep.port}`;
}

/** Parses "ip:port" / "[ipv6]:port"; throws `SyntaxError` naming the text. */
export function parseEndpoint(text: string): Endpoint {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:\[\]]+):(\d{1,5})$/.exec(text);
  if (!m) throw new SyntaxError(`${quoted(text)} is not of the form ip:port or [ipv6]:port`);
  const address = IpAddress.parse(m[1] ?? "");
  if (text.startsWith("[") !== (address.family === "ipv6")) {
    throw new SyntaxError(
      `${quoted(text)}: brackets are for IPv6 addresses only, and IPv6 addresses need them`,
    );
  }
  const port = Number(m[2]);
  if (port > 65535) throw new RangeError(`port ${port} in ${quoted(text)} is above 65535`);
  return { address, port };
}

/** Joins a host (name or IP literal) and a port for display or URLs: IPv6 literals get brackets. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A host (name or IP literal, brackets removed) and a port. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Splits "host:port", "a.b.c.d:port" or "[ipv6]:port"; throws `SyntaxError` naming the text. */
export function splitHostPort(text: string): HostPort {
  const m = /^\[([0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.\-]+)?)\]:(\d{1,5})$/.exec(text) ??
    /^([A-Za-z0-9.\-_]+):(\d{1,5})$/.exec(text);
  if (!m) throw new SyntaxError(`${quoted(text)} is not of the form host:port or [ipv6]:port`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new RangeError(`port ${port} in ${quoted(text)} is not in 1..65535`);
  const host = m[1]!;
  if (text.startsWith("[") && IpAddress.tryParse(host)?.family !== "ipv6") {
    throw new SyntaxError(`${quoted(host)} in ${quoted(text)} is not an IPv6 address`);
  }
  return { host, port };
}
