/**
 * The 16-byte address form of the sock_ops programs (bpf/sock_ops_common.h): IPv6 as is, IPv4 as
 * ::ffff:a.b.c.d, so an IPv4 flow matches both an IPv4 socket and a dual-stack IPv6 socket carrying it.
 */
import { IpAddress } from "../net/ip.ts";

/** The 16 network-order bytes of an address in the programs' form. */
export function sockAddressBytes(address: IpAddress): Uint8Array {
  const raw = address.bytes();
  if (raw.length === 16) return raw;
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(raw, 12);
  return out;
}

/** The address behind 16 bytes of the programs' form: IPv4 for ::ffff:a.b.c.d, else IPv6. */
export function sockAddressFrom(bytes: Uint8Array): IpAddress {
  const a = IpAddress.fromBytes(bytes.subarray(0, 16));
  return a.isIpv4Mapped() ? IpAddress.fromBytes(bytes.subarray(12, 16)) : a;
}
