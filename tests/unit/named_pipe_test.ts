import assert from "node:assert/strict";
import { type NamedPipeOptions, NamedPipePlugin } from "../../src/plugins/named_pipe.ts";
import { StartupError } from "../../src/core/errors.ts";
import { RecordingSink } from "../helpers/recording_sink.ts";
import { privilegedTest } from "../helpers/privileged.ts";

async function withPipe(
  fn: (ctx: { plugin: NamedPipePlugin; sink: RecordingSink; path: string; dir: string }) => Promise<void>,
  extra: Partial<NamedPipeOptions> = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flowd-np-" });
  const path = `${dir}/run/np`;
  const plugin = new NamedPipePlugin({
    pipePath: path,
    buffSize: 1000,
    pipeMode: "0660",
    application: "test",
    ...extra,
  });
  const sink = new RecordingSink();
  try {
    await plugin.start(sink);
    await fn({ plugin, sink, path, dir });
  } finally {
    await plugin.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes through a separate process, as a storage daemon would (open, write, close). */
async function writeWithShell(path: string, text: string): Promise<void> {
  const out = await new Deno.Command("sh", { args: ["-c", 'printf "%s" "$1" > "$2"', "sh", text, path] })
    .output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

Deno.test("namedPipe: lines from separate writers become flow events with the right fields", async () => {
  await withPipe(async ({ sink, path }) => {
    await writeWithShell(path, "start tcp 2001:db8::1 2345 2001:db8::2 5777 2 9\n");
    await writeWithShell(path, "END\tUDP   192.0.2.1 1 198.51.100.7 65535 4294967295 0\n");
    await sink.waitFor(2);
    const [a, b] = sink.events;
    assert.equal(a!.state, "start");
    assert.equal(a!.protocol, "tcp");
    assert.equal(a!.family, "ipv6");
    assert.equal(a!.src.address.toString(), "2001:db8::1");
    assert.equal(a!.src.port, 2345);
    assert.equal(a!.dst.address.toString(), "2001:db8::2");
    assert.equal(a!.dst.port, 5777);
    assert.equal(a!.experimentId, 2);
    assert.equal(a!.activityId, 9);
    assert.equal(a!.application, "test");
    assert.ok(a!.startTime !== undefined && Math.abs(a!.startTime - Date.now() * 1000) < 10_000_000);
    assert.equal(b!.state, "end");
    assert.equal(b!.protocol, "udp");
    assert.equal(b!.family, "ipv4");
    assert.equal(b!.dst.port, 65535);
    assert.equal(b!.experimentId, 4294967295);
    assert.ok(b!.endTime !== undefined);
  });
});

Deno.test("namedPipe: a last line without newline is not lost", async () => {
  await withPipe(async ({ sink, path }) => {
    await writeWithShell(path, "start tcp ::1 1 ::1 2 3 4\nend tcp ::1 1 ::1 2 3 4");
    await sink.waitFor(2);
    assert.deepEqual(sink.events.map((e) => e.state), ["start", "end"]);
  });
});

Deno.test("namedPipe: a line split across two writes of one writer arrives whole", async () => {
  await withPipe(async ({ sink, path }) => {
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        'exec 3>"$1"; printf "start tcp ::1 1 " >&3; sleep 0.2; printf "::1 2 3 4\\n" >&3; exec 3>&-',
        "sh",
        path,
      ],
    }).output();
    assert.equal(out.code, 0);
    await sink.waitFor(1);
    assert.equal(sink.events[0]!.dst.port, 2);
  });
});

Deno.test("namedPipe: writers that open and close repeatedly keep working", async () => {
  await withPipe(async ({ sink, path }) => {
    const n = 300;
    const out = await new Deno.Command("sh", {
      args: ["-c", `for i in $(seq 1 ${n}); do echo "start tcp ::1 $i ::1 80 1 1" > "$1"; done`, "sh", path],
    }).output();
    assert.equal(out.code, 0);
    await sink.waitFor(n);
    assert.deepEqual(sink.events.map((e) => e.src.port), Array.from({ length: n }, (_, i) => i + 1));
  });
});

Deno.test("namedPipe: many concurrent short-lived writers lose no line", async () => {
  await withPipe(async ({ sink, path }) => {
    const n = 200;
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        `for i in $(seq 1 ${n}); do (echo "start tcp ::1 $i ::1 80 1 1" > "$1") & done; wait`,
        "sh",
        path,
      ],
      stderr: "piped",
    }).output();
    assert.equal(new TextDecoder().decode(out.stderr), "", "no writer may fail (EPIPE)");
    await sink.waitFor(n, 15_000);
    assert.deepEqual(
      sink.events.map((e) => e.src.port).sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i + 1),
    );
  });
});

Deno.test("namedPipe: bad lines are counted and skipped, good lines around them still arrive", async () => {
  await withPipe(async ({ plugin, sink, path }) => {
    const garbage = [
      "start tcp ::1 1 ::1 2 3", // 7 fields
      "ongoing tcp ::1 1 ::1 2 3 4",
      "start sctp ::1 1 ::1 2 3 4",
      "start tcp ::1 65536 ::1 2 3 4",
      "start tcp 1.2.3.4 1 ::1 2 3 4",
      "start tcp ::1 1 ::1 2 -3 4",
      "\u0000\u00ff\u00fe binary",
    ].join("\n");
    const file = await Deno.open(path, { write: true });
    await file.write(
      new TextEncoder().encode(`start tcp ::1 1 ::1 2 3 4\n${garbage}\nend tcp ::1 1 ::1 2 3 4\n`),
    );
    file.close();
    await sink.waitFor(2);
    assert.equal(plugin.stats.linesRejected, 7);
    assert.equal(plugin.stats.linesAccepted, 2);
    const byReason = Object.fromEntries(
      plugin.health().filter((m) => m.name === "flowd_named_pipe_lines_rejected_total").map((m) => [
        m.labels!.reason,
        m.value,
      ]),
    );
    assert.deepEqual(byReason, { fields: 2, state: 1, protocol: 1, port: 1, family: 1, id: 1 });
  });
});

Deno.test("namedPipe: random garbage never stops the reader", async () => {
  await withPipe(async ({ plugin, sink, path }) => {
    const file = await Deno.open(path, { write: true });
    const rnd = new Uint8Array(200_000);
    for (let off = 0; off < rnd.length; off += 65536) crypto.getRandomValues(rnd.subarray(off, off + 65536));
    await file.write(rnd);
    await file.write(new TextEncoder().encode("\nstart udp 10.0.0.1 5 10.0.0.2 6 7 8\n"));
    file.close();
    await sink.waitFor(1, 10_000);
    const last = sink.events.at(-1)!;
    assert.equal(last.src.port, 5);
    assert.ok(plugin.stats.linesRejected > 0);
  });
});

Deno.test("namedPipe: an overlong line is discarded without taking the next line with it", async () => {
  await withPipe(async ({ plugin, sink, path }) => {
    await writeWithShell(path, "x".repeat(70_000) + "\nstart tcp ::1 1 ::1 2 3 4\n");
    await sink.waitFor(1);
    assert.equal(plugin.stats.linesRejected, 1);
    assert.equal(sink.events.length, 1);
    assert.deepEqual(plugin.stats.rejectedByReason, { "too-long": 1 });
  });
});

Deno.test("namedPipe: FIFO has the configured mode and is removed on stop", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/np`;
  const plugin = new NamedPipePlugin({ pipePath: path, buffSize: 64, pipeMode: "0620", application: "t" });
  try {
    await plugin.start(new RecordingSink());
    const st = await Deno.lstat(path);
    assert.ok(st.isFifo);
    assert.equal(st.mode! & 0o777, 0o620);
  } finally {
    await plugin.stop();
  }
  await assert.rejects(() => Deno.lstat(path), Deno.errors.NotFound);
  await plugin.stop(); // idempotent
  await Deno.remove(dir, { recursive: true });
});

Deno.test("namedPipe: stop returns promptly while a writer keeps the FIFO open", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/np`;
  const plugin = new NamedPipePlugin({ pipePath: path, buffSize: 1000, pipeMode: "0600", application: "t" });
  await plugin.start(new RecordingSink());
  const holder = new Deno.Command("sh", { args: ["-c", 'exec 3>"$1"; sleep 5', "sh", path] }).spawn();
  await new Promise((r) => setTimeout(r, 200));
  const t0 = performance.now();
  await plugin.stop();
  assert.ok(performance.now() - t0 < 1500, "stop took too long");
  holder.kill("SIGKILL");
  await holder.status;
  await Deno.remove(dir, { recursive: true });
});

Deno.test("namedPipe: an existing non-FIFO path is refused", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/np`;
  await Deno.writeTextFile(path, "not a fifo");
  const plugin = new NamedPipePlugin({ pipePath: path, buffSize: 64, pipeMode: "0600", application: "t" });
  await assert.rejects(() => plugin.start(new RecordingSink()), (e: unknown) => {
    assert.ok(e instanceof StartupError);
    assert.match(
      e.message,
      /is a regular file \(10 bytes\) holding more than pipe lines, not a named pipe: move it away/,
    );
    return true;
  });
  assert.equal(await Deno.readTextFile(path), "not a fifo");
  await plugin.stop();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("namedPipe: an unknown pipeGroup name is refused", async () => {
  const dir = await Deno.makeTempDir();
  const plugin = new NamedPipePlugin({
    pipePath: `${dir}/np`,
    buffSize: 64,
    pipeMode: "0600",
    pipeGroup: "no-such-group-flowd",
    application: "t",
  });
  await assert.rejects(() => plugin.start(new RecordingSink()), /no group named "no-such-group-flowd"/);
  await plugin.stop();
  await Deno.remove(dir, { recursive: true });
});

privilegedTest("namedPipe: pipeGroup lets a non-root member of that group write", async () => {
  {
    await withPipe(async ({ sink, path, dir }) => {
      await Deno.chmod(dir, 0o755); // let the unprivileged writer reach the FIFO
      const st = await Deno.lstat(path);
      assert.equal(st.gid, 65534);
      // nobody (uid 65534) with group nogroup (65534) writes through the group permission bit.
      const out = await new Deno.Command("setpriv", {
        args: [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          "sh",
          "-c",
          'echo "start tcp ::1 7 ::1 8 1 2" > "$1"',
          "sh",
          path,
        ],
      }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      await sink.waitFor(1);
      assert.equal(sink.events[0]!.src.port, 7);
    }, { pipeGroup: 65534, pipeMode: "0620" });
  }
});

Deno.test("namedPipe: refused events are counted", async () => {
  await withPipe(async ({ plugin, sink, path }) => {
    sink.refuseWith = "shutting down";
    await writeWithShell(path, "start tcp ::1 1 ::1 2 3 4\n");
    const deadline = Date.now() + 3000;
    while (plugin.stats.eventsRefused === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(plugin.stats.eventsRefused, 1);
  });
});
