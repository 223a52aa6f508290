/**
 * Reloads under load (hardening issue items 15 and 16): a steady writer keeps the named pipe busy while
 * the daemon gets SIGHUPs (unchanged settings, a new buffer size, a new path the writer follows), and
 * every line arrives exactly once; shell writers (`echo ... > np`, O_CREAT) never turn the path into a
 * regular file, because an unchanged pipe is never closed.
 */
import assert from "node:assert/strict";
import { freePort, startDaemon } from "../helpers/daemon.ts";
import { parseExposition, samplesOf } from "../helpers/prom_text.ts";

function config(dir: string, metricsPort: number, pipe: string, buffSize: number): string {
  return `pidPath: ${dir}/flowd-go.pid
workDir: ${dir}
plugins:
  namedPipe:
    pipePath: ${pipe}
    buffSize: ${buffSize}
backends:
  prometheus:
    bindAddress: 127.0.0.1
    netlinkPort: ${metricsPort}
    skopsPort: 0
`;
}

async function metric(port: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return samplesOf(parseExposition(text), name)
    .filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

async function until(pred: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await pred())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const line = (i: number) => `start udp 127.0.0.1 ${20000 + i} 127.0.0.1 9 2 9\n`;

Deno.test("reload: 30,000 lines through the pipe across five SIGHUPs, each exactly once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-reload-" });
  const port = freePort();
  const conf = `${dir}/conf.yaml`;
  await Deno.writeTextFile(conf, config(dir, port, "np1", 1000));
  try {
    await using daemon = await startDaemon(conf);
    let target = `${dir}/np1`;
    const total = 30_000, batch = 100;
    const reloads: Record<number, () => Promise<void>> = {
      50: async () => {},
      100: async () => {},
      150: () => Deno.writeTextFile(conf, config(dir, port, "np1", 64)),
      200: () => Deno.writeTextFile(conf, config(dir, port, "np2", 64)),
      250: async () => {},
    };
    const reloadedSoFar = () => daemon.lines.filter((l) => /configuration reloaded/.test(l)).length;
    let sighups = 0;
    for (let b = 0; b < total / batch; b++) {
      if (reloads[b]) {
        // Two SIGHUPs that arrive before the daemon reads the first are one signal (as for any process):
        // each waits for the reload before it, while the lines keep coming.
        await until(() => Promise.resolve(reloadedSoFar() >= sighups), `reload ${sighups} logged`);
        await reloads[b]!();
        daemon.process.kill("SIGHUP");
        sighups++;
        if (b === 200) {
          await daemon.waitForLine(/configuration reloaded.*replaced=plugins\.namedPipe/);
          target = `${dir}/np2`; // the writer follows the new path
        }
      }
      // As a storage daemon does: open, write, close; never create the path.
      const f = await Deno.open(target, { write: true });
      const text = Array.from({ length: batch }, (_, i) => line(b * batch + i)).join("");
      await f.write(new TextEncoder().encode(text));
      f.close();
    }
    await until(
      async () => await metric(port, "flowd_flows_started_total", { exp: "2", act: "9" }) >= total,
      "every line counted",
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await metric(port, "flowd_flows_started_total", { exp: "2", act: "9" }), total);
    assert.equal(await metric(port, "flowd_bus_events_dropped_total"), 0);
    assert.equal(await metric(port, "flowd_flows_active", { exp: "2", act: "9" }), total);
    const reloaded = daemon.lines.filter((l) => /configuration reloaded/.test(l));
    assert.equal(reloaded.length, 5, daemon.lines.filter((l) => /reload/i.test(l)).join("\n"));
    assert.match(reloaded[0]!, /kept=plugins\.namedPipe,backends\.prometheus/);
    assert.match(reloaded[2]!, /reconfigured=plugins\.namedPipe/);
    assert.match(reloaded[3]!, /replaced=plugins\.namedPipe/);
    assert.ok((await Deno.lstat(`${dir}/np2`)).isFifo);
    await assert.rejects(() => Deno.lstat(`${dir}/np1`), Deno.errors.NotFound, "the old path is gone");
    assert.doesNotMatch(daemon.lines.join("\n"), /bad line/);
    assert.equal(await daemon.stop("SIGTERM"), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: SIGHUPs while shell writers run `echo line > np`: the path stays a FIFO, nothing is lost", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-reload-echo-" });
  const port = freePort();
  const conf = `${dir}/conf.yaml`;
  await Deno.writeTextFile(conf, config(dir, port, "np", 1000));
  try {
    await using daemon = await startDaemon(conf);
    const n = 300;
    // One shell loop: each `echo` opens the path with O_CREAT, as the campaign's writer did.
    const script =
      `i=0; while [ $i -lt ${n} ]; do echo "start udp 127.0.0.1 $((30000 + i)) 127.0.0.1 9 2 9" > "$1"; i=$((i+1)); done`;
    const writers = new Deno.Command("sh", { args: ["-c", script, "sh", `${dir}/np`] }).spawn();
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 40));
      daemon.process.kill("SIGHUP");
    }
    assert.equal((await writers.status).code, 0);
    await until(async () => await metric(port, "flowd_flows_started_total") >= n, `${n} lines counted`);
    assert.equal(await metric(port, "flowd_flows_started_total"), n);
    assert.ok((await Deno.lstat(`${dir}/np`)).isFifo, "the path is still a FIFO");
    assert.equal(daemon.lines.filter((l) => /configuration reloaded/.test(l)).length, 6);
    assert.equal(await daemon.stop("SIGTERM"), 0, "the daemon kept running and stops cleanly");
    // And it starts again on the same path.
    await using again = await startDaemon(conf);
    assert.equal(await again.stop("SIGTERM"), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
