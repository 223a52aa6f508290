/**
 * How long sock_diag queries take with many open TCP sockets: a full dump (what a naive enricher does every
 * period), a dump without attributes, a port-filtered dump, and the exact 5-tuple lookup the netlink
 * enricher uses per flow. `ss -tin` over the same sockets is timed as a reference.
 *
 *   deno run --allow-all bench/sock_diag.ts [--sockets 1000,10000] [--rounds 15]
 *
 * Needs root: every size runs in a fresh network namespace (loopback only), in a child process started
 * with `ip netns exec` and a raised open-file limit (`prlimit`). The child opens sockets/2 connections to
 * a listener on [::1], so the namespace holds `sockets` established sockets plus the listener.
 */
import { SockDiag } from "../src/net/sock_diag.ts";
import { type Endpoint, IpAddress } from "../src/net/ip.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] ?? fallback : fallback;
}

interface Stats {
  median: number;
  p90: number;
  min: number;
}

function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { median: at(0.5), p90: at(0.9), min: s[0]! };
}

async function time(rounds: number, job: () => Promise<unknown>): Promise<Stats> {
  await job(); // warm-up: JIT and kernel caches
  const samples: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    await job();
    samples.push(performance.now() - t0);
  }
  return stats(samples);
}

/** Child, inside the namespace: open the sockets, measure, print one JSON line. */
async function child(sockets: number, rounds: number): Promise<void> {
  const listener = Deno.listen({ hostname: "::1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns: Deno.Conn[] = [];
  const t0 = performance.now();
  // Accept as we connect so the backlog never fills.
  for (let i = 0; i < sockets / 2; i += 100) {
    const batch = Math.min(100, sockets / 2 - i);
    const accepted = (async () => {
      const out: Deno.Conn[] = [];
      for (let k = 0; k < batch; k++) out.push(await listener.accept()); // one accept at a time
      return out;
    })();
    const connected = await Promise.all(
      Array.from({ length: batch }, () => Deno.connect({ hostname: "::1", port })),
    );
    conns.push(...connected, ...(await accepted));
  }
  const openMs = performance.now() - t0;
  const probe = conns[Math.floor(conns.length / 4)]!;
  const addr = (a: Deno.Addr): Endpoint => ({
    address: IpAddress.parse((a as Deno.NetAddr).hostname),
    port: (a as Deno.NetAddr).port,
  });
  const local = addr(probe.localAddr), remote = addr(probe.remoteAddr);

  using diag = SockDiag.open();
  let count = 0;
  const full = await time(rounds, async () => {
    count = (await diag.dump({ family: "ipv6" })).length;
  });
  const bare = await time(rounds, () => diag.dump({ family: "ipv6", extensions: 0 }));
  const ported = await time(
    rounds,
    () => diag.dump({ family: "ipv6" }, { srcPort: local.port, dstPort: remote.port }),
  );
  const lookup = await time(rounds * 20, async () => {
    if ((await diag.lookup(local, remote)) === undefined) throw new Error("probe socket not found");
  });
  const ss = await time(
    Math.min(rounds, 5),
    () => new Deno.Command("ss", { args: ["-tinH"], stdout: "null" }).output(),
  );

  console.log(JSON.stringify({ sockets, dumped: count, openMs, full, bare, ported, lookup, ss }));
  for (const c of conns) c.close();
  listener.close();
}

async function sh(args: string[]): Promise<void> {
  const out = await new Deno.Command(args[0]!, { args: args.slice(1), stderr: "piped" }).output();
  if (!out.success) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
}

/** Parent: one namespace and child per size, then a table. */
async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("run as root: the benchmark creates network namespaces");
  const sizes = flag("sockets", "1000,10000").split(",").map(Number);
  const rounds = Number(flag("rounds", "15"));
  const rows: Record<string, unknown>[] = [];
  for (const sockets of sizes) {
    const ns = `fgbench${Deno.pid}x${sockets}`;
    await sh(["ip", "netns", "add", ns]);
    try {
      await sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
      const out = await new Deno.Command("ip", {
        args: [
          ...[
            "netns",
            "exec",
            ns,
            "prlimit",
            `--nofile=${sockets + 1024}`,
            Deno.execPath(),
            "run",
            "--allow-all",
          ],
          ...[new URL(import.meta.url).pathname, "--child", String(sockets), "--rounds", String(rounds)],
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      if (!out.success) throw new Error(`child for ${sockets} sockets failed`);
      rows.push(JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!));
    } finally {
      await sh(["ip", "netns", "del", ns]);
    }
  }
  const ms = (s: Stats) => `${s.median.toFixed(2)} (p90 ${s.p90.toFixed(2)})`;
  console.log(
    `sock_diag on ${Deno.osRelease()}, Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPUs`,
  );
  console.log(`median ms over ${rounds} rounds (lookup: ${rounds * 20}), after one warm-up round`);
  for (
    const r of rows as unknown as Array<
      Record<string, Stats> & { sockets: number; dumped: number; openMs: number }
    >
  ) {
    console.log(
      `${r.sockets} sockets (dump returned ${r.dumped}; opened in ${r.openMs.toFixed(0)} ms)\n` +
        `  full dump, all extensions : ${ms(r.full!)}\n` +
        `  dump, no extensions       : ${ms(r.bare!)}\n` +
        `  dump filtered by ports    : ${ms(r.ported!)}\n` +
        `  exact 5-tuple lookup      : ${ms(r.lookup!)}\n` +
        `  ss -tinH (process, ref.)  : ${ms(r.ss!)}`,
    );
  }
}

if (Deno.args.includes("--child")) await child(Number(flag("child", "1000")), Number(flag("rounds", "15")));
else await main();
