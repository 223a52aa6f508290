/**
 * Network namespaces joined by a veth pair, for tests that send real traffic. All traffic stays inside
 * the namespaces. Every namespace and link created is removed by `dispose()`, also when the test fails.
 */

/** Result of a command. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and collects its output; throws when `check` and it fails. */
export async function sh(
  cmd: string[],
  opts: { check?: boolean; env?: Record<string, string> } = {},
): Promise<
  CommandResult
> {
  const [bin, ...args] = cmd;
  const out = await new Deno.Command(bin!, { args, stdout: "piped", stderr: "piped", env: opts.env })
    .output();
  const res = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  if ((opts.check ?? true) && res.code !== 0) {
    throw new Error(`${cmd.join(" ")} exited ${res.code}: ${res.stderr.trim() || res.stdout.trim()}`);
  }
  return res;
}

/** Two namespaces `a` and `b`, linked by veth `vethA` (in a) and `vethB` (in b), with IPv6 and IPv4 addresses. */
export interface VethPair extends AsyncDisposable {
  readonly nsA: string;
  readonly nsB: string;
  readonly ifA: string;
  readonly ifB: string;
  readonly ip6A: string;
  readonly ip6B: string;
  readonly ip4A: string;
  readonly ip4B: string;
  /** Runs a command inside a namespace. */
  exec(ns: string, cmd: string[], opts?: { check?: boolean }): Promise<CommandResult>;
  /** The argv prefix to run something inside a namespace. */
  prefix(ns: string): string[];
}

let counter = 0;

/**
 * Creates the pair. Names carry the PID and a counter so parallel test files never collide.
 * Use as `await using net = await createVethPair();`.
 */
export async function createVethPair(opts: { mtu?: number } = {}): Promise<VethPair> {
  const tag = `${Deno.pid % 100000}x${counter++}`;
  const nsA = `fgA${tag}`, nsB = `fgB${tag}`;
  const ifA = "vethA", ifB = "vethB";
  const ip6A = "fd00:5ec:7a6::1", ip6B = "fd00:5ec:7a6::2";
  const ip4A = "10.213.0.1", ip4B = "10.213.0.2";
  const dispose = async () => {
    // Deleting a namespace deletes the veth inside it (and its peer).
    await sh(["ip", "netns", "del", nsA], { check: false });
    await sh(["ip", "netns", "del", nsB], { check: false });
  };
  try {
    await sh(["ip", "netns", "add", nsA]);
    await sh(["ip", "netns", "add", nsB]);
    await sh(["ip", "link", "add", ifA, "netns", nsA, "type", "veth", "peer", "name", ifB, "netns", nsB]);
    for (const [ns, ifc, ip6, ip4] of [[nsA, ifA, ip6A, ip4A], [nsB, ifB, ip6B, ip4B]] as const) {
      if (opts.mtu) await sh(["ip", "-n", ns, "link", "set", ifc, "mtu", String(opts.mtu)]);
      await sh(["ip", "-n", ns, "addr", "add", `${ip6}/64`, "dev", ifc, "nodad"]);
      await sh(["ip", "-n", ns, "addr", "add", `${ip4}/24`, "dev", ifc]);
      await sh(["ip", "-n", ns, "link", "set", ifc, "up"]);
      await sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
  } catch (err) {
    await dispose();
    throw err;
  }
  const prefix = (ns: string) => ["ip", "netns", "exec", ns];
  return {
    nsA,
    nsB,
    ifA,
    ifB,
    ip6A,
    ip6B,
    ip4A,
    ip4B,
    prefix,
    exec: (ns, cmd, o) => sh([...prefix(ns), ...cmd], o),
    [Symbol.asyncDispose]: dispose,
  };
}
