/**
 * Public-address mapping for fireflies sent from behind NAT: which public address stands for each private
 * source address. Built once (at start and on reload) from `manualMapping` and from discovery for the
 * addresses of the default-route interfaces: HTTP services first, then STUN servers, each from the address
 * being resolved (flowd-go-behaviour §7).
 *
 * Fixed on purpose (§11.7 item 47): IPv6 default routes count too (an IPv6-only host works); every request
 * has a timeout; manual mappings apply to any source address; failing discovery or a netlink error leaves
 * addresses unchanged instead of stopping the daemon.
 */
import type { StunConfig } from "../config/schema.ts";
import { errorMessage } from "../core/errors.ts";
import { type DefaultRouteInterface, defaultRouteInterfaces } from "./interface_discovery.ts";
import { httpPublicAddress } from "./http_discovery.ts";
import { type Family, IpAddress } from "./ip.ts";
import { isLinkLocal, isPrivateAddress } from "./private_ranges.ts";
import { IFA_F_DADFAILED, IFA_F_TENTATIVE, Rtnetlink } from "./rtnetlink.ts";

/** How a private address got its public counterpart. */
export type MappingMethod = "manual" | "http" | "stun";

/** One HTTP or STUN query made while resolving an address. */
export interface MappingAttempt {
  readonly method: "http" | "stun";
  /** The URL or the STUN server. */
  readonly server: string;
  /** The address found, or undefined when the query failed. */
  readonly found: IpAddress | undefined;
  /** Why the query failed, or "" when it succeeded. */
  readonly error: string;
}

/** What became of one address: the map's entries and the addresses left alone, for logs and `stun sample`. */
export interface AddressReport {
  /** The interface the address is on; undefined for a manual mapping of an address not on one. */
  readonly interface: string | undefined;
  readonly local: IpAddress;
  /** mapped: in the map; public/link-local: needs no mapping; unmapped: private, but nothing found. */
  readonly outcome: "mapped" | "public" | "link-local" | "unmapped";
  readonly public: IpAddress | undefined;
  readonly method: MappingMethod | undefined;
  /** The URL or STUN server that answered, or "manualMapping". */
  readonly source: string | undefined;
  readonly attempts: readonly MappingAttempt[];
}

/** An address on a default-route interface. */
export interface LocalAddress {
  readonly interface: string;
  readonly address: IpAddress;
}

/** The default-route interfaces and their addresses. */
export interface LocalAddresses {
  readonly interfaces: readonly DefaultRouteInterface[];
  readonly addresses: readonly LocalAddress[];
}

/** The `backends.firefly.stun` settings, with times in milliseconds. */
export interface PublicMappingSettings {
  readonly manualMapping: Readonly<Record<string, string>>;
  readonly httpServers: readonly string[];
  readonly stunServers: readonly string[];
  readonly httpTimeoutMs: number;
  readonly stunTimeoutMs: number;
}

/** The settings of a `backends.firefly.stun` configuration section. */
export function mappingSettings(config: StunConfig): PublicMappingSettings {
  return {
    manualMapping: config.manualMapping,
    httpServers: config.httpServers,
    stunServers: config.stunServers,
    httpTimeoutMs: Math.round(config.httpTimeout * 1000),
    stunTimeoutMs: Math.round(config.stunTimeout * 1000),
  };
}

/** One line per failed query of an address, for logs: "10.0.0.5: http URL: why; stun host:port: why". */
export function describeFailures(report: AddressReport): string {
  const failed = report.attempts.filter((a) => a.found === undefined);
  if (failed.length === 0) return `${report.local}: no HTTP service or STUN server configured`;
  return `${report.local}: ` + failed.map((a) => `${a.method} ${a.server}: ${a.error}`).join("; ");
}

/** What `discoverPublicMapping` needs besides the settings. */
export interface DiscoverOptions {
  /** Where the local addresses come from; default: the default-route interfaces through rtnetlink. */
  localAddresses?: () => Promise<LocalAddresses>;
  signal?: AbortSignal;
}

/** The private → public map the firefly backend applies to source addresses. Immutable. */
export class PublicAddressMap {
  readonly #entries: ReadonlyMap<string, IpAddress>;

  constructor(entries: Iterable<readonly [IpAddress, IpAddress]>) {
    this.#entries = new Map([...entries].map(([from, to]) => [from.toString(), to]));
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The public address for a source address, or undefined to leave it as it is. */
  lookup(address: IpAddress): IpAddress | undefined {
    const direct = this.#entries.get(IpAddress.fromBytes(address.bytes()).toString());
    if (direct !== undefined) return direct;
    // An IPv4 flow seen on an IPv6 socket (::ffff:10.0.0.5) maps like its IPv4 address, staying IPv6.
    if (address.isIpv4Mapped()) {
      const v4 = this.#entries.get(IpAddress.fromBytes(address.bytes().subarray(12)).toString());
      if (v4?.family === "ipv4") return IpAddress.parse(`::ffff:${v4}`);
    }
    return undefined;
  }
}

/** The outcome of discovery. */
export interface PublicMappingResult {
  readonly map: PublicAddressMap;
  /** One report per address considered: default-route addresses first, then other manual mappings. */
  readonly reports: readonly AddressReport[];
  readonly interfaces: readonly DefaultRouteInterface[];
  /** Why the local addresses could not be listed, when they could not. */
  readonly localError: string | undefined;
}

/**
 * The addresses of the preferred default-route interfaces of each family (lowest metric; several for
 * multipath routes), skipping addresses the kernel cannot use yet (tentative) or at all (DAD failed).
 */
export async function defaultRouteAddresses(rtnetlink?: Rtnetlink): Promise<LocalAddresses> {
  const own = rtnetlink === undefined ? Rtnetlink.open() : undefined;
  const r = rtnetlink ?? own!;
  try {
    const routes = await defaultRouteInterfaces({ rtnetlink: r });
    const interfaces: DefaultRouteInterface[] = [];
    const addresses: LocalAddress[] = [];
    for (const family of ["ipv4", "ipv6"] as const satisfies readonly Family[]) {
      const candidates = routes[family];
      const best = candidates[0]?.priority;
      const chosen = candidates.filter((c) => c.priority === best);
      interfaces.push(...chosen);
      if (chosen.length === 0) continue;
      const byIndex = new Map(chosen.map((c) => [c.index, c.name]));
      for (const a of await r.addresses(family)) {
        const name = byIndex.get(a.ifindex);
        if (name === undefined || (a.flags & (IFA_F_DADFAILED | IFA_F_TENTATIVE)) !== 0) continue;
        addresses.push({ interface: name, address: a.address });
      }
    }
    return { interfaces, addresses };
  } finally {
    own?.close();
  }
}

function checkFound(found: IpAddress, local: IpAddress, server: string): void {
  if (found.family !== local.family) {
    throw new Error(`${server} saw ${found}, not an ${local.family} address`);
  }
  if (isPrivateAddress(found)) {
    throw new Error(`${server} saw ${found}, which is not a public address (is it behind the same NAT?)`);
  }
}

/** HTTP services in order, then STUN servers in order; the first answer wins. */
async function resolve(
  local: IpAddress,
  settings: PublicMappingSettings,
  signal: AbortSignal | undefined,
): Promise<{ found?: IpAddress; method?: MappingMethod; source?: string; attempts: MappingAttempt[] }> {
  const attempts: MappingAttempt[] = [];
  for (const url of settings.httpServers) {
    if (signal?.aborted) break;
    try {
      const found = await httpPublicAddress({
        url,
        localAddress: local,
        timeoutMs: settings.httpTimeoutMs,
        signal,
      });
      attempts.push({ method: "http", server: url, found, error: "" });
      return { found, method: "http", source: url, attempts };
    } catch (err) {
      attempts.push({ method: "http", server: url, found: undefined, error: errorMessage(err) });
    }
  }
  for (const server of settings.stunServers) {
    if (signal?.aborted) break;
    try {
      // The STUN client (node:dgram, node:dns) is loaded only when a mapping asks a STUN server.
      const { stunBinding } = await import("./stun_client.ts");
      const { mapped } = await stunBinding({
        server,
        localAddress: local,
        timeoutMs: settings.stunTimeoutMs,
        signal,
      });
      checkFound(mapped.address, local, `STUN server ${server}`);
      attempts.push({ method: "stun", server, found: mapped.address, error: "" });
      return { found: mapped.address, method: "stun", source: server, attempts };
    } catch (err) {
      attempts.push({ method: "stun", server, found: undefined, error: errorMessage(err) });
    }
  }
  return { attempts };
}

/**
 * Builds the map: manual entries as given; for each private, non-link-local address of the default-route
 * interfaces without a manual entry, HTTP then STUN discovery (addresses resolved in parallel). Never throws
 * for network or netlink trouble: what could not be found is reported as unmapped.
 */
export async function discoverPublicMapping(
  settings: PublicMappingSettings,
  opts: DiscoverOptions = {},
): Promise<PublicMappingResult> {
  const manual = new Map<string, [IpAddress, IpAddress]>();
  for (const [from, to] of Object.entries(settings.manualMapping)) {
    const f = IpAddress.parse(from), t = IpAddress.parse(to);
    manual.set(f.toString(), [f, t]);
  }
  let local: LocalAddresses = { interfaces: [], addresses: [] };
  let localError: string | undefined;
  try {
    local = await (opts.localAddresses ?? (() => defaultRouteAddresses()))();
  } catch (err) {
    localError = `cannot list the default-route interfaces and their addresses: ${errorMessage(err)}`;
  }

  const seen = new Set<string>();
  const pending: Promise<AddressReport>[] = [];
  for (const { interface: ifname, address } of local.addresses) {
    const key = address.toString();
    if (seen.has(key)) continue;
    seen.add(key);
    const base = { interface: ifname, local: address, attempts: [] as MappingAttempt[] };
    const hit = manual.get(IpAddress.fromBytes(address.bytes()).toString());
    if (hit !== undefined) {
      pending.push(Promise.resolve({
        ...base,
        outcome: "mapped",
        public: hit[1],
        method: "manual",
        source: "manualMapping",
      }));
    } else if (isLinkLocal(address)) {
      pending.push(
        Promise.resolve({
          ...base,
          outcome: "link-local",
          public: undefined,
          method: undefined,
          source: undefined,
        }),
      );
    } else if (!isPrivateAddress(address)) {
      pending.push(
        Promise.resolve({
          ...base,
          outcome: "public",
          public: undefined,
          method: undefined,
          source: undefined,
        }),
      );
    } else {
      pending.push(
        resolve(address, settings, opts.signal).then((r) => ({
          ...base,
          outcome: r.found ? "mapped" : "unmapped",
          public: r.found,
          method: r.method,
          source: r.source,
          attempts: r.attempts,
        })),
      );
    }
  }
  const reports = await Promise.all(pending);
  for (const [key, [from, to]] of manual) {
    if (seen.has(key)) continue;
    reports.push({
      interface: undefined,
      local: from,
      outcome: "mapped",
      public: to,
      method: "manual",
      source: "manualMapping",
      attempts: [],
    });
  }
  const entries = reports.filter((r) => r.outcome === "mapped" && r.public).map((r) =>
    [r.local, r.public!] as const
  );
  return { map: new PublicAddressMap(entries), reports, interfaces: local.interfaces, localError };
}
