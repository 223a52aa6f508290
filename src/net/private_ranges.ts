/**
 * Which addresses are not publicly routable: the original's special-purpose prefix list (IANA registries).
 *
 * Interface discovery (an interface with a public IPv6 address gets marked) and public-address mapping
 * (a private source gets rewritten) both decide on this list.
 */
import { IpAddress } from "./ip.ts";

/** An address prefix such as 2001:db8::/32. */
export interface Prefix {
  readonly address: IpAddress;
  readonly length: number;
}

/** Parses "address/length"; throws `SyntaxError` naming the text. */
export function parsePrefix(text: string): Prefix {
  const slash = text.indexOf("/");
  const address = IpAddress.tryParse(slash < 0 ? text : text.slice(0, slash));
  const lengthText = slash < 0 ? undefined : text.slice(slash + 1);
  if (address === undefined || address.zone !== undefined) {
    throw new SyntaxError(`"${text}" is not an address prefix (address/length)`);
  }
  const max = address.family === "ipv4" ? 32 : 128;
  if (lengthText !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(lengthText)) {
    throw new SyntaxError(`"${text}" has a prefix length that is not a decimal number`);
  }
  const length = lengthText === undefined ? max : Number(lengthText);
  if (length > max) throw new SyntaxError(`"${text}" has a prefix length above ${max}`);
  return { address, length };
}

/** True when `address` lies inside `prefix`. Family-strict: IPv4 prefixes never contain IPv6 addresses. */
export function prefixContains(prefix: Prefix, address: IpAddress): boolean {
  if (prefix.address.family !== address.family) return false;
  // Byte by byte, without copies: the firefly listener's source gate asks this for every datagram.
  const p = prefix.address, a = address;
  const whole = prefix.length >> 3;
  for (let i = 0; i < whole; i++) if (p.byteAt(i) !== a.byteAt(i)) return false;
  const bits = prefix.length & 7;
  if (bits === 0) return true;
  const mask = (0xff << (8 - bits)) & 0xff;
  return ((p.byteAt(whole)! ^ a.byteAt(whole)!) & mask) === 0;
}

/** The original's list of non-public prefixes (its IPv4-mapped entry stays out, as there). */
export const PRIVATE_PREFIXES: readonly Prefix[] = [
  "0.0.0.0/8",
  "0.0.0.0/32",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.0.0/29",
  "192.0.0.8/32",
  "192.0.0.9/32",
  "192.0.0.10/32",
  "192.0.0.170/32",
  "192.0.0.171/32",
  "192.0.2.0/24",
  "192.31.196.0/24",
  "192.52.193.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "192.175.48.0/24",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "240.0.0.0/4",
  "255.255.255.255/32",
  "224.0.0.0/4",
  "::/128",
  "::1/128",
  "64:ff9b::/96",
  "64:ff9b:1::/48",
  "100::/64",
  "2001::/23",
  "2001::/32",
  "2001:1::1/128",
  "2001:1::2/128",
  "2001:1::3/128",
  "2001:2::/48",
  "2001:3::/32",
  "2001:4:112::/48",
  "2001:10::/28",
  "2001:20::/28",
  "2001:30::/28",
  "2001:db8::/32",
  "2002::/16",
  "2620:4f:8000::/48",
  "3fff::/20",
  "5f00::/16",
  "fc00::/7",
  "fe80::/10",
  "ff00::/8",
].map(parsePrefix);

const LINK_LOCAL_V6 = parsePrefix("fe80::/10");

/** True when the address is in the non-public list (private, special-purpose, documentation, multicast). */
export function isPrivateAddress(address: IpAddress): boolean {
  return PRIVATE_PREFIXES.some((p) => prefixContains(p, address));
}

/** True for IPv6 link-local (fe80::/10), the one range public-address mapping skips outright. */
export function isLinkLocal(address: IpAddress): boolean {
  return prefixContains(LINK_LOCAL_V6, address);
}
