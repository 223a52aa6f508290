/**
 * The named pipe under the hostile campaign's cases (hardening issue items 13, 14, 16, 15's in-place
 * change): writers back to back, a stop under a writer, stale regular files, settings changed in place.
 */
import assert from "node:assert/strict";
import { NamedPipePlugin } from "../../src/plugins/named_pipe.ts";
import { StartupError } from "../../src/core/errors.ts";
import { closeFd, O_CLOEXEC, O_WRONLY, openFd, writeFd } from "../../ffi/libc.ts";
import { RecordingSink } from "../helpers/recording_sink.ts";
import { captureLogs } from "../helpers/log_capture.ts";

const enc = new TextEncoder();
const line = (i: number, nl = true) =>
  `start tcp 2001:db8::1 ${10000 + i} 2001:db8::2 443 2 9${nl ? "\n" : ""}`;

async function pipe(extra: Partial<ConstructorParameters<typeof NamedPipePlugin>[0]> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "flowd-np-hard-" });
  const path = `${dir}/np`;
  const plugin = new NamedPipePlugin({
    pipePath: path,
    buffSize: 1000,
    pipeMode: "0660",
    application: "t",
    ...extra,
  });
  const sink = new RecordingSink();
  return {
    dir,
    path,
    plugin,
    sink,
    async [Symbol.asyncDispose]() {
      await plugin.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Opens the FIFO for writing (blocks until the reader has it, which it always has once started). */
function writer(path: string): number {
  return openFd(path, O_WRONLY | O_CLOEXEC);
}

Deno.test("namedPipe: a line without newline from a writer that closed stands alone, though the next writer opened first", async () => {
  await using p = await pipe();
  await p.plugin.start(p.sink);
  const rounds = 50;
  for (let i = 0; i < rounds; i++) {
    // B opens before A closes: the reader sees no EOF between them, so A's line runs into B's.
    const a = writer(p.path);
    const b = writer(p.path);
    writeFd(a, enc.encode(line(2 * i, false)));
    closeFd(a);
    writeFd(b, enc.encode(line(2 * i + 1)));
    closeFd(b);
  }
  await p.sink.waitFor(2 * rounds);
  assert.deepEqual(
    p.sink.events.map((e) => e.src.port),
    Array.from({ length: 2 * rounds }, (_, i) => 10000 + i),
  );
  assert.ok(p.plugin.stats.linesUnglued >= 2, "the race happened and was repaired");
  assert.equal(p.plugin.stats.linesRejected, 0);
});

Deno.test("namedPipe: a stop reads every line written before it, even with a writer still holding the FIFO", async () => {
  // Small reads, so that most of what was written is still in the kernel's pipe buffer when the stop begins.
  await using p = await pipe({ buffSize: 100 });
  await p.plugin.start(p.sink);
  const fd = writer(p.path);
  const n = 1000; // about 50 KB: fits the 64 KiB pipe buffer, so the writes never block
  writeFd(fd, enc.encode(Array.from({ length: n }, (_, i) => line(i)).join("")));
  await p.plugin.stop();
  closeFd(fd);
  assert.equal(p.sink.events.length, n, "every line written before the stop was read");
});

Deno.test("namedPipe: at start, an empty regular file at the path is replaced, one of pipe lines moved aside, junk refused", async () => {
  using logs = captureLogs("info");
  {
    await using p = await pipe();
    await Deno.writeTextFile(p.path, "");
    await p.plugin.start(p.sink);
    assert.ok((await Deno.lstat(p.path)).isFifo);
  }
  {
    await using p = await pipe();
    await Deno.writeTextFile(p.path, line(1) + line(2));
    await p.plugin.start(p.sink);
    assert.ok((await Deno.lstat(p.path)).isFifo);
    const aside = [...Deno.readDirSync(p.dir)].filter((e) => e.name.startsWith("np.stale-"));
    assert.equal(aside.length, 1);
    assert.equal(await Deno.readTextFile(`${p.dir}/${aside[0]!.name}`), line(1) + line(2));
    assert.equal(logs.matching(/moved a stale regular file .*lines=2/).length, 1);
  }
  {
    await using p = await pipe();
    await Deno.symlink("/etc/passwd", p.path);
    await assert.rejects(
      () => p.plugin.start(p.sink),
      (e: Error) =>
        e instanceof StartupError && /is a symbolic link, not a named pipe: remove it/.test(e.message),
    );
    await Deno.remove(p.path);
  }
});

Deno.test("namedPipe: a reload with the same path changes mode and buffer size on the open FIFO", async () => {
  await using p = await pipe();
  await p.plugin.start(p.sink);
  const inode = (await Deno.stat(p.path)).ino;
  const fd = writer(p.path); // a writer that stays: the FIFO must not be reopened under it
  writeFd(fd, enc.encode(line(1)));
  await p.sink.waitFor(1);
  const applied = await p.plugin.reconfigure({
    pipePath: p.path,
    buffSize: 64,
    pipeMode: "0620",
    application: "t",
  });
  assert.equal(applied, true);
  assert.equal((await Deno.stat(p.path)).ino, inode);
  assert.equal((await Deno.stat(p.path)).mode! & 0o777, 0o620);
  writeFd(fd, enc.encode(line(2) + line(3)));
  await p.sink.waitFor(3);
  closeFd(fd);
  assert.equal(
    await p.plugin.reconfigure({ pipePath: `${p.path}2`, buffSize: 64, pipeMode: "0620", application: "t" }),
    false,
  );
});

Deno.test("namedPipe: events the bus refuses are counted and logged once per interval, not once each", async () => {
  using logs = captureLogs("info");
  await using p = await pipe();
  p.sink.refuseWith = "every backend queue is full";
  await p.plugin.start(p.sink);
  const fd = writer(p.path);
  writeFd(fd, enc.encode(Array.from({ length: 500 }, (_, i) => line(i)).join("")));
  closeFd(fd);
  const until = performance.now() + 3000;
  while (p.plugin.stats.eventsRefused < 500 && performance.now() < until) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(p.plugin.stats.eventsRefused, 500);
  assert.equal(logs.matching(/flow event from the named pipe was refused/).length, 1);
  const refused = p.plugin.health().find((m) => m.name === "flowd_named_pipe_events_refused_total");
  assert.equal(refused?.value, 500);
});

Deno.test("namedPipe: each event is logged at debug level, and not built at all above it", async () => {
  for (const level of ["debug", "info"] as const) {
    using logs = captureLogs(level);
    await using p = await pipe();
    await p.plugin.start(p.sink);
    const fd = writer(p.path);
    writeFd(fd, enc.encode(line(1) + line(2)));
    closeFd(fd);
    await p.sink.waitFor(2);
    const debugLines = logs.matching(/flow event from the named pipe.*10002/);
    assert.equal(debugLines.length, level === "debug" ? 1 : 0, `${level}: ${logs.lines.join("\n")}`);
  }
});
