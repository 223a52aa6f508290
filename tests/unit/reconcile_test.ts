/** A reload against one long-lived bus: kept, reconfigured, replaced, added and removed components, and rollback. */
import assert from "node:assert/strict";
import { EventBus } from "../../src/core/bus.ts";
import type { Backend, ComponentSpec, EventSink, Plugin } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { StartupError } from "../../src/core/errors.ts";
import { Supervisor } from "../../src/core/supervisor.ts";
import { IpAddress } from "../../src/net/ip.ts";

const budget = { drainMs: 500, componentMs: 500 };
const log: string[] = [];

class FakePlugin implements Plugin {
  sink: EventSink | undefined;
  constructor(
    readonly name: string,
    readonly options: { v: number; failStart?: boolean; inPlace?: boolean },
  ) {}
  start(sink: EventSink) {
    if (this.options.failStart) return Promise.reject(new Error(`${this.name} cannot start`));
    this.sink = sink;
    log.push(`start ${this.name}@${this.options.v}`);
    return Promise.resolve();
  }
  stop() {
    log.push(`stop ${this.name}@${this.options.v}`);
    return Promise.resolve();
  }
  reconfigure(options: object) {
    const o = options as FakePlugin["options"];
    if (!o.inPlace) return Promise.resolve(false);
    log.push(`reconfigure ${this.name}@${this.options.v}->${o.v}`);
    this.options.v = o.v;
    return Promise.resolve(true);
  }
}

class FakeBackend implements Backend {
  readonly events: FlowEvent[] = [];
  readonly replayOpenFlows = true;
  constructor(readonly name: string, readonly v: number) {}
  start() {
    log.push(`start ${this.name}@${this.v}`);
    return Promise.resolve();
  }
  handle(e: FlowEvent) {
    this.events.push(e);
    return Promise.resolve();
  }
  stop() {
    log.push(`stop ${this.name}@${this.v}`);
    return Promise.resolve();
  }
}

const made = new Map<string, unknown>();
function plugin(slot: string, options: FakePlugin["options"]): ComponentSpec {
  return {
    kind: "plugin",
    slot,
    options,
    create: () => {
      const p = new FakePlugin(slot, { ...options });
      made.set(`${slot}@${options.v}`, p);
      return Promise.resolve(p);
    },
  };
}
function backend(slot: string, v: number): ComponentSpec {
  return {
    kind: "backend",
    slot,
    options: { v },
    create: () => {
      const b = new FakeBackend(slot, v);
      made.set(`${slot}@${v}`, b);
      return Promise.resolve(b);
    },
  };
}

const start: FlowEvent = {
  state: "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: IpAddress.parse("2001:db8::1"), port: 1 },
  dst: { address: IpAddress.parse("2001:db8::2"), port: 2 },
  experimentId: 2,
  activityId: 3,
  application: "t",
};

Deno.test("reconcile: unchanged components keep running, changed ones are replaced, others added and removed", async () => {
  log.length = 0;
  const bus = new EventBus({ queueCapacity: 100, flowTableCapacity: 100 });
  const s = await Supervisor.fromSpecs(
    [backend("b", 1), plugin("keep", { v: 1 }), plugin("gone", { v: 1 })],
    bus,
  );
  await s.start();
  const kept = s.components.plugins[0];
  bus.emit(start); // an open flow the replaced backend must learn about
  log.length = 0;
  const report = await s.reconcile(
    [backend("b", 2), plugin("keep", { v: 1 }), plugin("new", { v: 1 })],
    budget,
  );
  assert.deepEqual(report, {
    kept: ["keep"],
    reconfigured: [],
    replaced: ["b"],
    added: ["new"],
    removed: ["gone"],
  });
  assert.equal(s.components.plugins[0], kept, "the same instance, never stopped");
  assert.deepEqual(log, ["stop gone@1", "stop b@1", "start b@2", "start new@1"]);
  const replaced = made.get("b@2") as FakeBackend;
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(replaced.events.map((e) => e.src.port), [1], "the open flow replayed to the new backend");
  assert.ok(!log.includes("stop keep@1"));
  await s.stop(budget);
});

Deno.test("reconcile: a plugin that can apply new settings in place keeps its instance", async () => {
  log.length = 0;
  const bus = new EventBus({ queueCapacity: 100, flowTableCapacity: 100 });
  const s = await Supervisor.fromSpecs([plugin("p", { v: 1 })], bus);
  await s.start();
  const before = s.components.plugins[0];
  const report = await s.reconcile([plugin("p", { v: 2, inPlace: true })], budget);
  assert.deepEqual(report.reconfigured, ["p"]);
  assert.equal(s.components.plugins[0], before);
  assert.ok(log.includes("reconfigure p@1->2"));
  await s.stop(budget);
});

Deno.test("reconcile: a component that fails to start is rolled back to the previous set, and the failure reported", async () => {
  log.length = 0;
  const bus = new EventBus({ queueCapacity: 100, flowTableCapacity: 100 });
  const s = await Supervisor.fromSpecs(
    [
      backend("b", 1),
      plugin("inplace", { v: 1, inPlace: true }),
      plugin("x", { v: 1 }),
      plugin("y", { v: 1 }),
    ],
    bus,
  );
  await s.start();
  const y = s.components.plugins[2];
  log.length = 0;
  await assert.rejects(
    () =>
      s.reconcile(
        [
          backend("b", 2),
          plugin("inplace", { v: 2, inPlace: true }),
          plugin("x", { v: 2, failStart: true }),
          plugin("y", { v: 1 }),
        ],
        budget,
      ),
    (err: Error) => err instanceof StartupError && /x cannot start/.test(err.message),
  );
  // b and x were replaced, the new x failed: the new b is stopped, b@1 and x@1 run again, y was never touched.
  assert.deepEqual(log, [
    "reconfigure inplace@1->2",
    "stop x@1",
    "stop b@1",
    "start b@2",
    "stop x@2", // the half-started one gets its stop
    "stop b@2",
    "reconfigure inplace@2->1",
    "start b@1",
    "start x@1",
  ]);
  const names = s.components.plugins.map((p) => `${p.name}@${(p as FakePlugin).options.v}`);
  assert.deepEqual(names, ["inplace@1", "x@1", "y@1"], "the previous plugins, in their order");
  assert.equal(s.components.plugins[2], y);
  assert.equal((s.components.backends[0] as FakeBackend).v, 1);
  bus.emit(start);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(
    (s.components.backends[0] as FakeBackend).events.length,
    1,
    "the restored backend gets events",
  );
  await s.stop(budget);
});

Deno.test("reconcile: events emitted while a backend is being replaced reach its successor, once", async () => {
  log.length = 0;
  const bus = new EventBus({ queueCapacity: 100, flowTableCapacity: 100 });
  let release: () => void = () => {};
  const slowStart = new Promise<void>((r) => release = r);
  const slow: ComponentSpec = {
    kind: "backend",
    slot: "b",
    options: { v: 2 },
    create: () => {
      const b = new FakeBackend("b", 2);
      b.start = () => slowStart; // the new instance takes a while to start (a broker connection, say)
      made.set("b@2", b);
      return Promise.resolve(b);
    },
  };
  const s = await Supervisor.fromSpecs([backend("b", 1)], bus);
  await s.start();
  bus.emit({ ...start, src: { ...start.src, port: 10 } });
  const reload = s.reconcile([slow], budget);
  await new Promise((r) => setTimeout(r, 20)); // the old one is detached and stopped by now
  for (const port of [11, 12]) bus.emit({ ...start, src: { ...start.src, port } });
  release();
  await reload;
  await new Promise((r) => setTimeout(r, 10));
  const old = made.get("b@1") as FakeBackend, successor = made.get("b@2") as FakeBackend;
  assert.deepEqual(old.events.map((e) => e.src.port), [10]);
  // The open flow 10 replayed (replayOpenFlows), then the two emitted during the replacement.
  assert.deepEqual(successor.events.map((e) => e.src.port), [10, 11, 12]);
  bus.emit({ ...start, src: { ...start.src, port: 13 } });
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(successor.events.map((e) => e.src.port), [10, 11, 12, 13], "no hold left filling");
  await s.stop(budget);
});
