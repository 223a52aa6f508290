/**
 * Start-up: time to the first HTTP answer and idle RSS of the daemon with the quick-start configuration,
 * beside a bare Deno.serve started the same way; `version` and `help` beside an empty Deno script.
 *
 *   deno run --allow-all bench/startup.ts [--rounds 5] [--quick] [--built DIR[,DIR...]]
 *
 * --built DIR also times the built program (`scripts/build.sh --out DIR`, the bundle form operators get from
 * the RPM), once with the launcher's code cache (a private HOME, warmed by the first round) and once without
 * (FLOWD_GO_CODE_CACHE=off: what a user without a usable cache directory sees). Several directories (two
 * builds to compare, say main and a branch) are timed in the same interleaved rounds.
 *
 * Interleaved rounds, medians and ranges. "Ready" is from spawn to the first answer on the port (polled
 * every 5 ms), with the CPU time (user + system) the process had used by then; idle RSS is VmRSS 2 s later.
 * Commands are timed from spawn to exit.
 */
import { median, parseFlags, range } from "./lib.ts";

const flags = parseFlags({ rounds: "5", quick: "false", built: "" });
const ROUNDS = flags.quick === "true" ? 3 : Number(flags.rounds);
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "flowd-bench-startup-" });
const BARE = `${dir}/bare.ts`;
Deno.writeTextFileSync(
  BARE,
  `Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.args[0]), onListen: () => {} }, () => new Response("ok"));`,
);
const EMPTY = `${dir}/empty.ts`;
Deno.writeTextFileSync(EMPTY, `console.log("x");`);

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface Run {
  exe?: string;
  env?: Record<string, string>;
}

/** User + system CPU time of a process so far, in ms (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function ready(
  args: string[],
  url: string,
  run: Run = {},
): Promise<{ ms: number; cpu: number; rss: number }> {
  const t0 = performance.now();
  const child = new Deno.Command(run.exe ?? Deno.execPath(), {
    args,
    env: run.env,
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (;;) {
      try {
        await (await fetch(url)).body?.cancel();
        break;
      } catch {
        if (performance.now() - t0 > 20_000) throw new Error(`no answer on ${url}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const ms = performance.now() - t0;
    const cpu = cpuMs(child.pid);
    await new Promise((r) => setTimeout(r, 2000));
    return { ms, cpu, rss: rssMb(child.pid) };
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

async function command(args: string[], run: Run = {}): Promise<number> {
  const t0 = performance.now();
  await new Deno.Command(run.exe ?? Deno.execPath(), { args, env: run.env, stdout: "null", stderr: "null" })
    .output();
  return performance.now() - t0;
}

/** Each built program under a short name (its directory's), cached and uncached. */
const BUILT: { name: string; run: Run }[] = [];
for (const [i, d] of flags.built.split(",").filter(Boolean).entries()) {
  const exe = `${d}/bin/flowd-go`;
  const name = d.replace(/\/+$/, "").split("/").pop() || `#${i}`;
  const home = `${dir}/home${i}`;
  Deno.mkdirSync(home, { mode: 0o700 });
  BUILT.push({ name: `${name} cached`, run: { exe, env: { HOME: home, FLOWD_GO_CODE_CACHE: "on" } } });
  BUILT.push({ name: `${name} uncached`, run: { exe, env: { FLOWD_GO_CODE_CACHE: "off" } } });
}
const QUICK = ["--conf", "builtin:quickstart"];
// Fills each code cache before the first timed round.
for (const b of BUILT) if (b.name.endsWith(" cached")) await command(["version"], b.run);

const rows: Record<string, number[]> = {};
const add = (k: string, v: number) => (rows[k] ??= []).push(v);
try {
  for (let round = 0; round < ROUNDS; round++) {
    const b = await ready(["run", "--allow-all", "--quiet", BARE, "17901"], "http://127.0.0.1:17901/");
    add("bare ready", b.ms);
    add("bare rss", b.rss);
    const o = await ready(
      ["run", "--allow-all", "--quiet", MAIN, "--conf", "builtin:quickstart", "run"],
      "http://127.0.0.1:7777/",
    );
    add("ours ready", o.ms);
    add("ours cpu", o.cpu);
    add("ours rss", o.rss);
    add("empty", await command(["run", "--allow-all", "--quiet", EMPTY]));
    add("version", await command(["run", "--allow-all", "--quiet", MAIN, "version"]));
    add("help", await command(["run", "--allow-all", "--quiet", MAIN, "help"]));
    for (const { name, run } of BUILT) {
      const r = await ready([...QUICK, "run"], "http://127.0.0.1:7777/", run);
      add(`built ${name} ready`, r.ms);
      add(`built ${name} cpu`, r.cpu);
      add(`built ${name} rss`, r.rss);
      add(`built ${name} version`, await command(["version"], run));
      add(`built ${name} conf`, await command([...QUICK, "conf"], run));
    }
  }
  const cell = (k: string, digits = 0) => `${median(rows[k]!).toFixed(digits)} (${range(rows[k]!)})`;
  console.log(`start-up: ${ROUNDS} rounds, load ${Deno.loadavg()[0]?.toFixed(2)}`);
  console.log("case | ours | ceiling | ratio");
  console.log(
    `ready, ms (quick start vs bare Deno.serve) | ${cell("ours ready")} | ${cell("bare ready")} | ${
      (median(rows["ours ready"]!) / median(rows["bare ready"]!)).toFixed(2)
    }x`,
  );
  console.log(`CPU at ready, ms | ${cell("ours cpu")} | |`);
  console.log(`idle RSS, MB | ${cell("ours rss")} | ${cell("bare rss")} |`);
  console.log(`version, ms (vs an empty script) | ${cell("version")} | ${cell("empty")} |`);
  console.log(`help, ms | ${cell("help")} | ${cell("empty")} |`);
  for (const { name } of BUILT) {
    const r = `built ${name}`;
    console.log(
      `built (${name}) ready, ms | ${cell(`${r} ready`)} | ${cell("bare ready")} | ${
        (median(rows[`${r} ready`]!) / median(rows["bare ready"]!)).toFixed(2)
      }x`,
    );
    console.log(`built (${name}) CPU at ready, ms | ${cell(`${r} cpu`)} | |`);
    console.log(`built (${name}) idle RSS, MB | ${cell(`${r} rss`)} | ${cell("bare rss")} |`);
    console.log(`built (${name}) version, ms | ${cell(`${r} version`)} | ${cell("empty")} |`);
    console.log(`built (${name}) conf, ms | ${cell(`${r} conf`)} | ${cell("empty")} |`);
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
