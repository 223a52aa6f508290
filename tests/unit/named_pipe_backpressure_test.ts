import assert from "node:assert/strict";
import { NamedPipePlugin } from "../../src/plugins/named_pipe.ts";
import { EventBus } from "../../src/core/bus.ts";
import type { Backend } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";

/** A backend that takes its time: every event waits for a timer tick, so its queue fills up. */
class SlowBackend implements Backend {
  readonly name = "slow";
  readonly seen: FlowEvent[] = [];
  start(): Promise<void> {
    return Promise.resolve();
  }
  async handle(event: FlowEvent): Promise<void> {
    if (this.seen.length % 50 === 0) await new Promise((r) => setTimeout(r, 1));
    this.seen.push(event);
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

for (const buffSize of [1000, 4096, 65536]) {
  Deno.test(`namedPipe back-pressure (buffSize ${buffSize}): a full backend queue pauses reading, nothing is dropped`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "flowd-np-bp-" });
    const path = `${dir}/np`;
    const bus = new EventBus({ queueCapacity: 64, flowTableCapacity: 100_000 });
    const backend = new SlowBackend();
    bus.attachBackend(backend);
    const plugin = new NamedPipePlugin({ pipePath: path, buffSize, pipeMode: "0600", application: "t" });
    const lines = 20_000;
    try {
      await plugin.start(bus);
      const text: string[] = [];
      for (let i = 0; i < lines; i++) {
        text.push(`start tcp 2001:db8::${(i % 65535).toString(16)} ${i % 60000 + 1} 2001:db8::2 5201 2 3\n`);
      }
      const writer = new Deno.Command("sh", { args: ["-c", 'cat > "$1"', "sh", path], stdin: "piped" })
        .spawn();
      const w = writer.stdin.getWriter();
      await w.write(new TextEncoder().encode(text.join("")));
      await w.close();
      assert.equal((await writer.status).code, 0);
      const deadline = Date.now() + 30_000;
      while (backend.seen.length < lines && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(backend.seen.length, lines, "every line reached the backend");
      assert.equal(bus.stats().slow!.dropped, 0, "nothing was dropped");
      assert.equal(plugin.stats.eventsRefused, 0);
      assert.ok(plugin.stats.pauses > 0, "the reader paused at least once");
      // In order: the pipe is one stream.
      for (let i = 0; i < lines; i += 997) assert.equal(backend.seen[i]!.src.port, i % 60000 + 1);
      const metrics = plugin.health().map((m) => m.name);
      assert.ok(metrics.includes("flowd_named_pipe_pauses_total"));
    } finally {
      await plugin.stop();
      await bus.close(1000);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("bus: whenRoom is undefined with room, waits while a queue is full, resolves at three quarters", async () => {
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => release = r);
  const handled: FlowEvent[] = [];
  const backend: Backend = {
    name: "gated",
    start: () => Promise.resolve(),
    handle: async (e) => {
      await gate;
      handled.push(e);
    },
    stop: () => Promise.resolve(),
  };
  const bus = new EventBus({ queueCapacity: 8, flowTableCapacity: 100 });
  bus.attachBackend(backend);
  const ev = (port: number): FlowEvent => ({
    state: "start",
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse("2001:db8::1"), port },
    dst: { address: IpAddress.parse("2001:db8::2"), port: 80 },
    experimentId: 2,
    activityId: 3,
    application: "t",
  });
  assert.equal(bus.whenRoom(), undefined);
  let i = 0;
  while (bus.whenRoom() === undefined && i < 100) assert.ok(bus.emit(ev(++i)).accepted);
  // Emitting is synchronous: the consumer has not run yet, so 8 events fill the queue of 8.
  assert.equal(i, 8);
  assert.deepEqual(bus.fullBackends(), ["gated"]);
  let resumed = false;
  const wait = bus.whenRoom()!.then(() => resumed = true);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(resumed, false, "still full: no resume");
  release();
  await wait;
  assert.equal(resumed, true);
  assert.equal(bus.whenRoom(), undefined);
  await bus.close(1000);
  assert.equal(handled.length, 8);
});
