/**
 * The rules of the connections plugin, compiled once from the configuration: which experiment and
 * activity a TCP connection gets, or none. First match wins; a connection whose remote end lies in an
 * internal network is never tagged, whatever the rules say. Matching runs in TypeScript for every
 * connection the watcher reports (a few comparisons per rule); the kernel only pre-filters by the
 * ports every rule asks for (`kernelPortBounds`).
 */
import type { ConnectionsConfig } from "../config/schema.ts";
import type { Endpoint } from "../net/ip.ts";
import { parsePrefix, type Prefix, prefixContains } from "../net/private_ranges.ts";

/** Who opened the connection: `inbound` = this host accepted it, `outbound` = this host connected. */
export type Direction = "inbound" | "outbound";

/** A connection as seen from this host (addresses IPv4 for IPv4-mapped ones). */
export interface Connection {
  readonly local: Endpoint;
  readonly remote: Endpoint;
  readonly direction: Direction;
}

/** The tags a matched connection gets, and which rule gave them (its index, for logs). */
export interface RuleMatch {
  readonly experimentId: number;
  readonly activityId: number;
  readonly rule: number;
}

type PortRange = readonly [number, number];

interface CompiledRule {
  readonly localPorts: readonly PortRange[];
  readonly remotePorts: readonly PortRange[];
  readonly localPrefixes: readonly Prefix[];
  readonly remotePrefixes: readonly Prefix[];
  readonly direction: "any" | Direction;
  readonly match: RuleMatch;
}

function inPorts(port: number, ranges: readonly PortRange[]): boolean {
  if (ranges.length === 0) return true;
  for (const [lo, hi] of ranges) if (port >= lo && port <= hi) return true;
  return false;
}

function inPrefixes(ep: Endpoint, prefixes: readonly Prefix[]): boolean {
  if (prefixes.length === 0) return true;
  for (const p of prefixes) if (prefixContains(p, ep.address)) return true;
  return false;
}

/** The smallest range holding every range of every rule, or [0, 0] (no bound) if a rule takes any port. */
function hull(lists: readonly (readonly PortRange[])[]): [number, number] {
  let lo = 65535, hi = 0;
  for (const list of lists) {
    if (list.length === 0) return [0, 0];
    for (const [a, b] of list) {
      lo = Math.min(lo, a);
      hi = Math.max(hi, b);
    }
  }
  // Port 0 never occurs on a connection; a range starting there is bounded above only.
  return [lo, hi];
}

/** The compiled rule list. */
export class ConnectionRules {
  readonly #rules: readonly CompiledRule[];
  readonly #internal: readonly Prefix[];

  constructor(config: Pick<ConnectionsConfig, "rules" | "internalNetworks">) {
    this.#rules = config.rules.map((r, i) => ({
      localPorts: r.localPorts,
      remotePorts: r.remotePorts,
      localPrefixes: r.localPrefixes.map(parsePrefix),
      remotePrefixes: r.remotePrefixes.map(parsePrefix),
      direction: r.direction,
      match: { experimentId: r.experiment, activityId: r.activity, rule: i },
    }));
    this.#internal = config.internalNetworks.map(parsePrefix);
  }

  /** True when the remote address is in `internalNetworks`. */
  isInternal(remote: Endpoint): boolean {
    for (const p of this.#internal) if (prefixContains(p, remote.address)) return true;
    return false;
  }

  /** The tags of the first rule the connection matches, or undefined (no rule, or internal). */
  match(c: Connection): RuleMatch | undefined {
    if (this.isInternal(c.remote)) return undefined;
    for (const r of this.#rules) {
      if (r.direction !== "any" && r.direction !== c.direction) continue;
      if (!inPorts(c.local.port, r.localPorts) || !inPorts(c.remote.port, r.remotePorts)) continue;
      if (!inPrefixes(c.local, r.localPrefixes) || !inPrefixes(c.remote, r.remotePrefixes)) continue;
      return r.match;
    }
    return undefined;
  }

  /**
   * Port bounds for the watcher program's own filter (inclusive, 0 = unbounded): the hull of the rules'
   * local and remote ports. Only connections inside both are reported to user space at all.
   */
  kernelPortBounds(): {
    minSourcePort: number;
    maxSourcePort: number;
    minDestinationPort: number;
    maxDestinationPort: number;
  } {
    const [minSourcePort, maxSourcePort] = hull(this.#rules.map((r) => r.localPorts));
    const [minDestinationPort, maxDestinationPort] = hull(this.#rules.map((r) => r.remotePorts));
    return { minSourcePort, maxSourcePort, minDestinationPort, maxDestinationPort };
  }
}
