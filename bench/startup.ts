/**
 * Start-up: time to the first HTTP answer and idle RSS of the daemon with the quick-start configuration,
 * beside a bare Deno.serve started the same way; `version` and `help` beside an empty Deno script.
 *
 *   deno run --allow-all bench/startup.ts [--rounds 5] [--quick]
 *
 * Interleaved rounds, medians and ranges. "Ready" is from spawn to the first answer on the port (polled
 * every 5 ms); idle RSS is VmRSS 2 s later. Commands are timed from spawn to exit.
 */
import { median, parseFlags, range } from "./lib.ts";

const flags = parseFlags({ rounds: "5", quick: "false" });
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

async function ready(args: string[], url: string): Promise<{ ms: number; rss: number }> {
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "null", stderr: "null" }).spawn();
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
    await new Promise((r) => setTimeout(r, 2000));
    return { ms, rss: rssMb(child.pid) };
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

async function command(args: string[]): Promise<number> {
  const t0 = performance.now();
  await new Deno.Command(Deno.execPath(), { args, stdout: "null", stderr: "null" }).output();
  return performance.now() - t0;
}

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
    add("ours rss", o.rss);
    add("empty", await command(["run", "--allow-all", "--quiet", EMPTY]));
    add("version", await command(["run", "--allow-all", "--quiet", MAIN, "version"]));
    add("help", await command(["run", "--allow-all", "--quiet", MAIN, "help"]));
  }
  const cell = (k: string, digits = 0) => `${median(rows[k]!).toFixed(digits)} (${range(rows[k]!)})`;
  console.log(`start-up: ${ROUNDS} rounds, load ${Deno.loadavg()[0]?.toFixed(2)}`);
  console.log("case | ours | ceiling | ratio");
  console.log(
    `ready, ms (quick start vs bare Deno.serve) | ${cell("ours ready")} | ${cell("bare ready")} | ${
      (median(rows["ours ready"]!) / median(rows["bare ready"]!)).toFixed(2)
    }x`,
  );
  console.log(`idle RSS, MB | ${cell("ours rss")} | ${cell("bare rss")} |`);
  console.log(`version, ms (vs an empty script) | ${cell("version")} | ${cell("empty")} |`);
  console.log(`help, ms | ${cell("help")} | ${cell("empty")} |`);
} finally {
  await Deno.remove(dir, { recursive: true });
}
