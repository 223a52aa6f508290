/**
 * Finding the interfaces to act on: those with a public IPv6 address (where the marker attaches), and
 * those the default routes leave through (whose addresses public-address mapping translates).
 */
import type { Family, IpAddress } from "./ip.ts";
import { isPrivateAddress } from "./private_ranges.ts";
import { IFA_F_DADFAILED, type InterfaceAddress, type Link, type Route, Rtnetlink } from "./rtnetlink.ts";

/** An interface that carries at least one public IPv6 address. */
export interface PublicInterface {
  readonly index: number;
  readonly name: string;
  /** Its public IPv6 addresses, in kernel order. */
  readonly publicAddresses: readonly IpAddress[];
}

/** An interface a default route leaves through. */
export interface DefaultRouteInterface {
  readonly family: Family;
  readonly index: number;
  readonly name: string;
  readonly gateway: IpAddress | undefined;
  /** The route's metric; the list is ordered by it, lowest (preferred) first. */
  readonly priority: number;
}

/** Where discovery asks: an open rtnetlink connection, or a namespace to open one in (default: this one). */
export interface DiscoveryOptions {
  readonly rtnetlink?: Rtnetlink;
  readonly netns?: string;
}

/**
 * Picks the interfaces that are up, not loopback, and have an IPv6 address outside the private list.
 * Addresses whose duplicate-address detection failed are unusable and do not count.
 */
export function selectPublicIpv6Interfaces(
  links: readonly Link[],
  addresses: readonly InterfaceAddress[],
): PublicInterface[] {
  const out: PublicInterface[] = [];
  for (const link of links) {
    if (!link.up || link.loopback) continue;
    const publicAddresses = addresses
      .filter((a) =>
        a.ifindex === link.index && a.family === "ipv6" && (a.flags & IFA_F_DADFAILED) === 0 &&
        !isPrivateAddress(a.address)
      )
      .map((a) => a.address);
    if (publicAddresses.length > 0) out.push({ index: link.index, name: link.name, publicAddresses });
  }
  return out;
}

/** The interfaces of the usable default routes (already filtered and sorted by `Rtnetlink.defaultRoutes`). */
export function selectDefaultRouteInterfaces(
  routes: readonly Route[],
  links: readonly Link[],
): DefaultRouteInterface[] {
  const byIndex = new Map(links.map((l) => [l.index, l]));
  const seen = new Set<number>();
  const out: DefaultRouteInterface[] = [];
  for (const route of routes) {
    for (const hop of route.nexthops) {
      const link = byIndex.get(hop.ifindex);
      // A route through a link that is down carries no traffic; one interface is listed once.
      if (link === undefined || !link.up || seen.has(link.index)) continue;
      seen.add(link.index);
      out.push({
        family: route.family,
        index: link.index,
        name: link.name,
        gateway: hop.gateway,
        priority: route.priority,
      });
    }
  }
  return out;
}

async function withRtnetlink<T>(options: DiscoveryOptions, job: (r: Rtnetlink) => Promise<T>): Promise<T> {
  if (options.rtnetlink !== undefined) return await job(options.rtnetlink);
  using rtnetlink = Rtnetlink.open(options.netns === undefined ? {} : { netns: options.netns });
  return await job(rtnetlink);
}

/** Interfaces with a public IPv6 address: the marker's targets when none are configured. */
export function discoverPublicIpv6Interfaces(options: DiscoveryOptions = {}): Promise<PublicInterface[]> {
  return withRtnetlink(options, async (r) => {
    const links = await r.links();
    const addresses = await r.addresses("ipv6");
    return selectPublicIpv6Interfaces(links, addresses);
  });
}

/**
 * The interfaces of the main table's default routes, per family, preferred first. Each family is looked
 * up on its own, so an IPv6-only (or IPv4-only) host gets an empty list for the other family, not an error.
 */
export function defaultRouteInterfaces(
  options: DiscoveryOptions = {},
): Promise<{ ipv4: DefaultRouteInterface[]; ipv6: DefaultRouteInterface[] }> {
  return withRtnetlink(options, async (r) => {
    const links = await r.links();
    return {
      ipv4: selectDefaultRouteInterfaces(await r.defaultRoutes("ipv4"), links),
      ipv6: selectDefaultRouteInterfaces(await r.defaultRoutes("ipv6"), links),
    };
  });
}
