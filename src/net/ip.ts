/**
 * IP address values: strict parsing of IPv4/IPv6 literals and canonical (RFC 5952) text.
 *
 * Flow events, fireflies and BPF map keys all need the raw bytes and the canonical text of an address,
 * so an address is parsed once into an `IpAddress` and carried as that.
 */
import { quoted } from "../core/clip.ts";

/** Address family as SciTags fireflies name it (`afi`). */
export type Family = "ipv4" | "ipv6";

/**
 * An IPv4 (4 bytes) or IPv6 (16 bytes) address, with an optional IPv6 zone. Immutable.
 *
 * The bytes are held as a string of one char per byte: an open flow keeps two addresses for its whole life,
 * and a short one-byte string costs a fraction of a typed array and its buffer. It is also the map key.
 */
export class IpAddress {
  readonly family: Family;
  /** One char per network-order byte. */
  readonly #raw: string;
  readonly zone: string | undefined;
  #text: string | undefined;
  /** The last endpoint made with this address (`endpointOf`), shared by the flows on that port. */
  #endpoint: Endpoint | undefined;

  private constructor(raw: string, zone?: string) {
    this.#raw = raw;
    this.family = raw.length === 4 ? "ipv4" : "ipv6";
    this.zone = zone;
  }

  /** Builds an address from 4 or 16 network-order bytes. */
  static fromBytes(bytes: Uint8Array, zone?: string): IpAddress {
    if (bytes.length !== 4 && bytes.length !== 16) {
      throw new RangeError(`An IP address has 4 or 16 bytes, not ${bytes.length}`);
    }
    if (zone !== undefined && bytes.length === 4) throw new RangeError("An IPv4 address has no zone");
    return new IpAddress(String.fromCharCode(...bytes), zone);
  }

  /** From one char per byte (4 or 16, checked by the caller): the parsers' path, no copy. */
  static fromRaw(raw: string, zone?: string): IpAddress {
    return new IpAddress(raw, zone);
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

  /** A compact identity for map keys (one char per byte, then the zone if any); never shown to anyone. */
  get key(): string {
    return this.zone === undefined ? this.#raw : `${this.#raw}%${this.zone}`;
  }

  /** The byte at `i` (0-3 or 0-15), without copying. */
  byteAt(i: number): number {
    return this.#raw.charCodeAt(i) | 0;
  }

  /** A copy of the network-order bytes. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.#raw.length);
    for (let i = 0; i < out.length; i++) out[i] = this.#raw.charCodeAt(i);
    return out;
  }

  /** True for ::ffff:a.b.c.d. */
  isIpv4Mapped(): boolean {
    return this.#raw.length === 16 && this.#raw.startsWith(V4_MAPPED_PREFIX);
  }

  /** True for 0.0.0.0 and ::. */
  isUnspecified(): boolean {
    for (let i = 0; i < this.#raw.length; i++) if (this.#raw.charCodeAt(i) !== 0) return false;
    return true;
  }

  /** True for 127.0.0.0/8 and ::1. */
  isLoopback(): boolean {
    const r = this.#raw;
    if (r.length === 4) return r.charCodeAt(0) === 127;
    return r === V6_LOOPBACK;
  }

  equals(other: IpAddress): boolean {
    return this.#raw === other.#raw && this.zone === other.zone;
  }

  /** Canonical text: dotted quad, or RFC 5952 compressed lower-case IPv6 (with `%zone` if any). */
  toString(): string {
    this.#text ??= formatIp(this.bytes()) + (this.zone !== undefined ? `%${this.zone}` : "");
    return this.#text;
  }

  toJSON(): string {
    return this.toString();
  }

  /**
   * An endpoint of this address and `port`: the one made last time when the port is the same. Endpoints are
   * immutable, so open flows to one service port of a peer (or from one local service) share one object.
   */
  endpoint(port: number): Endpoint {
    const last = this.#endpoint;
    if (last !== undefined && last.port === port) return last;
    return this.#endpoint = { address: this, port };
  }
}

const V4_MAPPED_PREFIX = "\0".repeat(10) + "\xff\xff";
const V6_LOOPBACK = "\0".repeat(15) + "\x01";

/** Scratch space of the parsers: an address is read into it, then copied out as a string. */
const scratch = new Uint8Array(16);
const scratchGroups = new Uint16Array(8);

function rawOf(bytes: Uint8Array, n: number): string {
  return n === 4 ? String.fromCharCode(bytes[0]!, bytes[1]!, bytes[2]!, bytes[3]!) : String.fromCharCode(
    bytes[0]!,
    bytes[1]!,
    bytes[2]!,
    bytes[3]!,
    bytes[4]!,
    bytes[5]!,
    bytes[6]!,
    bytes[7]!,
    bytes[8]!,
    bytes[9]!,
    bytes[10]!,
    bytes[11]!,
    bytes[12]!,
    bytes[13]!,
    bytes[14]!,
    bytes[15]!,
  );
}

/** Value of a hex digit's char code, or -1. */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 97 && c <= 102) return c - 87; // a-f
  if (c >= 65 && c <= 70) return c - 55; // A-F
  return -1;
}

/**
 * Parses a dotted quad in text[start, end) into out[at..at+3]; false if it is not one. Decimal only, no
 * leading zeros (they would be octal to some parsers). Scans char codes: no regex, no arrays.
 */
function parseIpv4Into(text: string, start: number, end: number, out: Uint8Array, at: number): boolean {
  let part = 0, value = 0, digits = 0, leadingZero = false;
  for (let i = start; i <= end; i++) {
    const c = i < end ? text.charCodeAt(i) : 46; // a virtual "." closes the last part
    if (c === 46) {
      if (digits === 0 || part > 3) return false;
      out[at + part++] = value;
      value = 0;
      digits = 0;
      leadingZero = false;
      continue;
    }
    if (c < 48 || c > 57 || leadingZero || digits === 3) return false;
    if (digits === 0 && c === 48) leadingZero = true;
    value = value * 10 + c - 48;
    if (value > 255) return false;
    digits++;
  }
  return part === 4;
}

/**
 * Parses an IPv6 literal (no zone) in text[start, end) into 16 bytes: hex groups of 1-4 digits, one "::" standing
 * for at least one zero group, an optional dotted-quad tail standing for the last two groups.
 */
function parseIpv6(text: string, start: number, end: number): boolean {
  if (end - start < 2 || end - start > 45) return false;
  const groups = scratchGroups;
  let count = 0, gap = -1, tail = false, i = start;
  if (text.charCodeAt(start) === 58) {
    if (text.charCodeAt(start + 1) !== 58) return false;
    gap = 0;
    i = start + 2;
  }
  while (i < end) {
    let j = i, value = 0, c = 0;
    for (; j < end; j++) {
      c = text.charCodeAt(j);
      const d = hexDigit(c);
      if (d < 0) break;
      value = value * 16 + d;
    }
    if (j < end && c === 46) {
      // The dotted tail: it ends the literal and takes two groups.
      if (count > 6 || !parseIpv4Into(text, i, end, scratch, 12)) return false;
      tail = true;
      break;
    }
    if (j === i || j - i > 4 || count === 8) return false;
    groups[count++] = value;
    if (j === end) break;
    if (c !== 58) return false;
    j++;
    if (j < end && text.charCodeAt(j) === 58) {
      if (gap >= 0) return false;
      gap = count;
      j++;
    } else if (j === end) {
      return false; // a single trailing colon
    }
    i = j;
  }
  const total = count + (tail ? 2 : 0);
  if (gap >= 0 ? total > 7 : total !== 8) return false;
  // Every byte before the tail written (no fill): groups before the gap, its zeros, the groups after it.
  const out = scratch, slots = tail ? 6 : 8;
  const before = gap >= 0 ? gap : count, zeros = slots - count;
  for (let k = 0; k < slots; k++) {
    const g = k < before ? groups[k]! : k < before + zeros ? 0 : groups[k - zeros]!;
    out[2 * k] = g >> 8;
    out[2 * k + 1] = g & 0xff;
  }
  return true;
}

/** A zone (`%eth0`): 1-15 of [A-Za-z0-9_.-]. */
function isZone(text: string, start: number): boolean {
  const n = text.length - start;
  if (n < 1 || n > 15) return false;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const ok = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 ||
      c === 46 ||
      c === 45;
    if (!ok) return false;
  }
  return true;
}

/**
 * Addresses parsed recently, by their text: a host's flows share a few local addresses and a set of peers,
 * so open flows share the address objects and a repeated literal costs one lookup. Bounded: emptied when
 * it reaches its size.
 */
const recent = new Map<string, IpAddress>();
const RECENT_MAX = 4096;

function tryParseIp(text: string): IpAddress | undefined {
  if (typeof text !== "string") return undefined;
  const known = recent.get(text);
  if (known !== undefined) return known;
  const parsed = parseIpText(text);
  if (parsed !== undefined) {
    if (recent.size >= RECENT_MAX) recent.clear();
    recent.set(text, parsed);
  }
  return parsed;
}

function parseIpText(text: string): IpAddress | undefined {
  const n = text.length;
  if (n >= 7 && n <= 15 && text.indexOf(":") < 0) {
    return parseIpv4Into(text, 0, n, scratch, 0) ? IpAddress.fromRaw(rawOf(scratch, 4)) : undefined;
  }
  const pct = text.indexOf("%");
  if (pct >= 0 && !isZone(text, pct + 1)) return undefined;
  if (!parseIpv6(text, 0, pct >= 0 ? pct : n)) return undefined;
  return IpAddress.fromRaw(rawOf(scratch, 16), pct >= 0 ? text.slice(pct + 1) : undefined);
}

/**
 * Addresses by their bytes, two ways per set (a set holds the last two addresses that hashed to it, the
 * latest first): the named pipe's parser finds a repeated address without making a string of its text or of
 * its bytes first.
 */
const BY_BYTES_SLOTS = 1 << 14;
const byBytes: (IpAddress | undefined)[] = new Array(BY_BYTES_SLOTS).fill(undefined);
/** The full hash of each slot's address: most misses are told apart without comparing bytes. */
const byBytesHash = new Int32Array(BY_BYTES_SLOTS);

/** The scratch bytes' address (n = 4 or 16): the one in its set when equal, else a new one put there. */
function sharedFromScratch(n: number): IpAddress {
  const b = scratch;
  let h = n;
  for (let i = 0; i < n; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  h ^= h >>> 15;
  const slot = h & (BY_BYTES_SLOTS - 2);
  const first = byBytes[slot];
  if (byBytesHash[slot] === h && first !== undefined && sameBytes(first, n)) return first;
  const second = byBytes[slot + 1];
  const firstHash = byBytesHash[slot]!;
  if (byBytesHash[slot + 1] === h && second !== undefined && sameBytes(second, n)) {
    byBytes[slot + 1] = first;
    byBytesHash[slot + 1] = firstHash;
    byBytes[slot] = second;
    byBytesHash[slot] = h;
    return second;
  }
  const made = IpAddress.fromRaw(rawOf(b, n));
  byBytes[slot + 1] = first;
  byBytesHash[slot + 1] = firstHash;
  byBytes[slot] = made;
  byBytesHash[slot] = h;
  return made;
}

/** True when the address (never one with a zone here) has the n scratch bytes. */
function sameBytes(address: IpAddress, n: number): boolean {
  const raw = address.key;
  if (raw.length !== n) return false;
  for (let i = 0; i < n; i++) if (raw.charCodeAt(i) !== scratch[i]) return false;
  return true;
}

/**
 * Parses the IPv4 or IPv6 literal text[start, end) without a zone; undefined when it is not one (a zone
 * included: the caller then takes the general `IpAddress.tryParse`, which accepts exactly the same literals
 * and those with a zone). No substring, no string per address when the address was seen lately.
 */
export function parseIpAt(text: string, start: number, end: number): IpAddress | undefined {
  const n = end - start;
  if (n >= 7 && n <= 15) {
    let colon = false;
    for (let i = start; i < end && !colon; i++) colon = text.charCodeAt(i) === 58;
    if (!colon) return parseIpv4Into(text, start, end, scratch, 0) ? sharedFromScratch(4) : undefined;
  }
  return parseIpv6(text, start, end) ? sharedFromScratch(16) : undefined;
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

/**
 * `parseEndpoint` for its common forms, without regular expressions or substrings: "a.b.c.d:port" and
 * "[ipv6]:port" with no zone. Undefined for anything else (parseEndpoint then decides and names the fault);
 * what it returns, parseEndpoint would return too. The endpoint object is shared (`IpAddress.endpoint`).
 */
export function scanEndpoint(text: string): Endpoint | undefined {
  const n = text.length;
  const colon = text.lastIndexOf(":");
  if (colon < 1 || n - colon < 2 || n - colon > 6) return undefined;
  let port = 0;
  for (let i = colon + 1; i < n; i++) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return undefined;
    port = port * 10 + d;
  }
  if (port > 65535) return undefined;
  let address: IpAddress | undefined;
  if (text.charCodeAt(0) === 91) { // "[" ... "]:port"
    if (text.charCodeAt(colon - 1) !== 93) return undefined;
    address = recentAddressAt(text, 1, colon - 1);
    if (address?.family !== "ipv6") return undefined;
  } else {
    address = recentAddressAt(text, 0, colon);
    if (address?.family !== "ipv4") return undefined;
  }
  return address.endpoint(port);
}

/** The texts and addresses of the last two literals `recentAddressAt` parsed (a flow's two ends). */
const lastTexts = ["", ""];
const lastAddresses: (IpAddress | undefined)[] = [undefined, undefined];

/**
 * `parseIpAt`, remembering the last two literals: a client's flows repeat their addresses (only the ports
 * change), and comparing the text in place costs less than parsing it and hashing its bytes.
 */
function recentAddressAt(text: string, start: number, end: number): IpAddress | undefined {
  const n = end - start;
  if (lastTexts[0]!.length === n && text.startsWith(lastTexts[0]!, start)) return lastAddresses[0];
  if (lastTexts[1]!.length === n && text.startsWith(lastTexts[1]!, start)) return lastAddresses[1];
  const address = parseIpAt(text, start, end);
  if (address !== undefined) {
    lastTexts[1] = lastTexts[0]!;
    lastAddresses[1] = lastAddresses[0];
    lastTexts[0] = text.slice(start, end);
    lastAddresses[0] = address;
  }
  return address;
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
