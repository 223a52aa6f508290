/**
 * Lines per second through the named pipe into a backend, beside a reader that only reads and counts.
 *
 *   deno run --allow-all bench/named_pipe.ts [--lines 1000000] [--buff 4096,65536] [--rounds 3] [--quick]
 *                                            [--main A/src/main.ts,B/src/main.ts]
 *
 * --main runs several daemons' entry points (two source trees to compare, say main and a branch) as
 * `ours <tree>` in the same interleaved rounds.
 *
 * Each round, interleaved: two ceilings (a Deno child that reads the FIFO with the same buffer size and
 * counts newline bytes, and one that decodes and splits the text into lines and counts them) and `ours` (the real daemon, `src/main.ts run`, with the namedPipe plugin and the
 * prometheus backend) for every buffer size. The writer is `cat file > fifo`, the issue's method. The file
 * holds start/end pairs of distinct IPv6 flows (few are open at a time, so the backend stays small).
 * Done when the daemon's `flowd_bus_events_handled_total` (polled every 100 ms on its metrics port) reaches
 * the number of lines, or when it stops moving; dropped and refused events are read from the same page and
 * must be 0. CPU is the daemon's utime + stime over the run (/proc), peak RSS its VmHWM.
 */
import { median, parseFlags, range, type RoundStats } from "./lib.ts";

const flags = parseFlags({
  lines: "1000000",
  buff: "4096,65536",
  rounds: "3",
  quick: "false",
  mode: "bytes",
  main: "",
});
const QUICK = flags.quick === "true";
const LINES = QUICK ? 200_000 : Number(flags.lines);
const BUFFS = flags.buff.split(",").map(Number);
const ROUNDS = QUICK ? 2 : Number(flags.rounds);
/** The daemons to time: name (the tree's directory) and entry point. */
const MAINS = (flags.main || new URL("../src/main.ts", import.meta.url).pathname).split(",").map((main) => ({
  main,
  name: main.replace(/\/src\/main\.ts$/, "").split("/").pop()!,
}));
const CLK_TCK = 100;
/** How often the daemon's counters are read: a scrape costs it ~3 ms of CPU, so not too often. */
const POLL_MS = 100;

if (Deno.args.includes("--count-child")) {
  const path = Deno.args[Deno.args.indexOf("--count-child") + 1]!;
  await countChild(path, Number(flags.buff), flags.mode === "lines");
  Deno.exit(0);
}

/**
 * The ceilings: open, read with the given buffer size until EOF, and count the lines, either as bytes
 * (newline bytes counted in the buffer) or as text (decoded and split into line strings, what any line
 * reader must do before parsing). Prints the count.
 */
async function countChild(path: string, buffSize: number, asText: boolean): Promise<void> {
  const file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(buffSize);
  const decoder = new TextDecoder();
  let lines = 0, tail = "";
  for (let n = await file.read(buf); n !== null; n = await file.read(buf)) {
    if (asText) {
      const parts = (tail + decoder.decode(buf.subarray(0, n), { stream: true })).split("\n");
      tail = parts.pop()!;
      lines += parts.length;
    } else {
      for (let i = 0; i < n; i++) if (buf[i] === 10) lines++;
    }
  }
  file.close();
  console.log(String(lines));
}

function writeLines(path: string, n: number): void {
  const parts: string[] = [];
  for (let i = 0; i < n / 2; i++) {
    const a = (i & 0xffff).toString(16), b = ((i >> 16) & 0xffff).toString(16);
    const flow = `tcp 2001:db8::${b}:${a} ${1024 + (i % 60000)} 2001:db8:1::${a} 5201 2 3`;
    parts.push(`start ${flow}\nend ${flow}\n`);
  }
  Deno.writeTextFileSync(path, parts.join(""));
}

function cpuTicks(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

function statusKb(pid: number, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) : NaN;
}

function catInto(file: string, fifo: string): Deno.ChildProcess {
  return new Deno.Command("sh", { args: ["-c", `cat '${file}' > '${fifo}'`] }).spawn();
}

async function runCeiling(dir: string, file: string, buffSize: number, mode: string): Promise<RoundStats> {
  const fifo = `${dir}/count.fifo`;
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      import.meta.filename!,
      "--count-child",
      fifo,
      "--buff",
      String(buffSize),
      "--mode",
      mode,
    ],
    stdout: "piped",
  }).spawn();
  await new Promise((r) => setTimeout(r, 300)); // let it reach its open
  const t0 = performance.now();
  const writer = catInto(file, fifo);
  const out = await child.output();
  const seconds = (performance.now() - t0) / 1000;
  await writer.status;
  await Deno.remove(fifo);
  const counted = Number(new TextDecoder().decode(out.stdout).trim());
  if (counted !== LINES) throw new Error(`ceiling reader counted ${counted} of ${LINES} lines`);
  return { perSecond: LINES / seconds, cpuUsPerOp: NaN, peakRssMb: NaN, lost: 0 };
}

async function metric(port: number, re: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(re)) sum += Number(m[1]);
  return sum;
}

async function runOurs(
  dir: string,
  file: string,
  buffSize: number,
  port: number,
  main: string,
): Promise<RoundStats> {
  const fifo = `${dir}/np`;
  const conf = `${dir}/conf.yaml`;
  Deno.writeTextFileSync(
    conf,
    `workDir: ${dir}\nplugins:\n  namedPipe:\n    pipePath: ${fifo}\n    buffSize: ${buffSize}\n` +
      `backends:\n  prometheus:\n    bindAddress: 127.0.0.1\n    netlinkPort: ${port}\n    skopsPort: 0\n`,
  );
  const daemon = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", main, "--conf", conf, "run"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr: string[] = [];
  const collecting = daemon.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (s) => void stderr.push(s) }),
  );
  try {
    for (let i = 0;; i++) {
      try {
        await metric(port, /^flowd_bus_events_handled_total\S* (\d+)/gm);
        break;
      } catch {
        if (i > 200) throw new Error(`the daemon did not start:\n${stderr.join("")}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    const handledRe = /^flowd_bus_events_handled_total\S* (\d+)/gm;
    const lostRe = /^(?:flowd_bus_events_dropped_total|flowd_named_pipe_events_refused_total)\S* (\d+)/gm;
    const cpu0 = cpuTicks(daemon.pid);
    const t0 = performance.now();
    const writer = catInto(file, fifo);
    let handled = 0, last = -1, lastMove = performance.now(), tDone = t0;
    while (handled < LINES) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      handled = await metric(port, handledRe);
      const now = performance.now();
      if (handled !== last) [last, lastMove, tDone] = [handled, now, now];
      else if (now - lastMove > 3000) break;
    }
    const cpu = cpuTicks(daemon.pid) - cpu0;
    await writer.status;
    const lost = await metric(port, lostRe);
    const peak = statusKb(daemon.pid, "VmHWM") / 1024;
    if (handled < LINES && lost === 0) throw new Error(`stalled at ${handled} of ${LINES} events`);
    return {
      perSecond: handled / ((tDone - t0) / 1000),
      cpuUsPerOp: (cpu / CLK_TCK) * 1e6 / LINES,
      peakRssMb: peak,
      lost,
    };
  } finally {
    daemon.kill("SIGTERM");
    await daemon.status;
    await collecting.catch(() => {});
  }
}

const dir = await Deno.makeTempDir({ prefix: "flowd-bench-pipe-" });
try {
  const file = `${dir}/lines.txt`;
  writeLines(file, LINES);
  const results = new Map<string, RoundStats[]>();
  const add = (k: string, r: RoundStats) => results.set(k, [...(results.get(k) ?? []), r]);
  for (let round = 0; round < ROUNDS; round++) {
    for (const buff of BUFFS) {
      add(`bytes buffSize ${buff}`, await runCeiling(dir, file, buff, "bytes"));
      add(`ceiling buffSize ${buff}`, await runCeiling(dir, file, buff, "lines"));
      for (const m of MAINS) {
        add(`ours ${m.name} buffSize ${buff}`, await runOurs(dir, file, buff, 19_300 + round, m.main));
      }
    }
  }
  console.log(`named pipe: ${LINES} lines, ${ROUNDS} rounds, load ${Deno.loadavg()[0]?.toFixed(2)}`);
  console.log("case | lines/s median (range) | ratio to ceiling | CPU µs/line | peak RSS MB | lost");
  const row = (name: string, rs: RoundStats[], ceiling?: number) => {
    const med = median(rs.map((r) => r.perSecond));
    const ratio = ceiling === undefined ? "" : `${(med / ceiling).toFixed(2)}x`;
    const cpu = rs.some((r) => !Number.isNaN(r.cpuUsPerOp))
      ? median(rs.map((r) => r.cpuUsPerOp)).toFixed(1)
      : "";
    const rss = rs.some((r) => !Number.isNaN(r.peakRssMb))
      ? median(rs.map((r) => r.peakRssMb)).toFixed(0)
      : "";
    console.log(
      `${name} | ${Math.round(med)} (${range(rs.map((r) => r.perSecond))}) | ${ratio} | ${cpu} | ${rss} | ${
        rs.map((r) => r.lost).join(",")
      }`,
    );
    return med;
  };
  for (const buff of BUFFS) {
    row(`read + count newline bytes, buffSize ${buff}`, results.get(`bytes buffSize ${buff}`)!);
    const ceiling = row(
      `ceiling: read + split into lines, buffSize ${buff}`,
      results.get(`ceiling buffSize ${buff}`)!,
    );
    for (const m of MAINS) {
      const name = MAINS.length > 1 ? `ours (daemon, ${m.name})` : "ours (daemon)";
      row(`${name}, buffSize ${buff}`, results.get(`ours ${m.name} buffSize ${buff}`)!, ceiling);
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
