/**
 * Which program instance an interface needs: at tc egress, Ethernet-like devices hand the program a
 * frame that starts with the MAC header, while tunnels and other L3 devices hand it the bare IP packet.
 */
import type { LinkLayer } from "./layout.ts";

/** ARPHRD_* hardware types whose egress packets start with an Ethernet header. */
const ETHERNET_TYPES: ReadonlyMap<number, string> = new Map([
  [1, "ether"],
  [772, "loopback"],
]);

/** ARPHRD_* hardware types without a link-layer header at tc egress. */
const HEADERLESS_TYPES: ReadonlyMap<number, string> = new Map([
  [512, "ppp"],
  [519, "rawip"],
  [768, "ipip"],
  [769, "ip6tnl"],
  [776, "sit"],
  [0xfffe, "none (tun, wireguard)"],
]);

/** The link layer of an ARPHRD_* hardware type, or undefined when the marker does not handle it. */
export function linkLayerOf(hardwareType: number): LinkLayer | undefined {
  if (ETHERNET_TYPES.has(hardwareType)) return "ethernet";
  if (HEADERLESS_TYPES.has(hardwareType)) return "none";
  return undefined;
}

/** Text for an error about an interface whose hardware type the marker cannot handle. */
export function unsupportedLinkLayer(ifname: string, hardwareType: number): string {
  return `interface ${ifname} has hardware type ${hardwareType}, which the marker does not handle ` +
    `(Ethernet, loopback, tun/wireguard, ipip/ip6tnl/sit, ppp and raw-IP devices are supported)`;
}
