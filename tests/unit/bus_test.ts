import assert from "node:assert/strict";
import { EventBus } from "../../src/core/bus.ts";
import type { Backend, Enricher, EnrichmentSample } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";

function flow(state: FlowEvent["state"], sport = 1000, extra: Partial<FlowEvent> = {}): FlowEvent {
  return {
    state,
    protocol: "tcp",
    family: "ipv6",
    src: { address: IpAddress.parse("2001:db8::1"), port: sport },
    dst: { address: IpAddress.parse("2001:db8::2"), port: 443 },
    experimentId: 2,
    activityId: 3,
    application: "t",
    ...extra,
  };
}

class Recorder implements Backend {
  readonly events: FlowEvent[] = [];
  readonly samples: EnrichmentSample[] = [];
  gate: Promise<void> | undefined;
  constructor(readonly name: string, readonly withEnrich = false) {
    if (withEnrich) this.enrich = (s) => void this.samples.push(s);
  }
  enrich?: (s: EnrichmentSample) => void;
  start() {
    return Promise.resolve();
  }
  async handle(e: FlowEvent) {
    if (this.gate) await this.gate;
    this.events.push(e);
  }
  stop() {
    return Promise.resolve();
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("bus: every backend gets every event, in order", async () => {
  const bus = new EventBus({ queueCapacity: 100, flowTableCapacity: 100, now: () => 5 });
  const a = new Recorder("a"), b = new Recorder("b");
  bus.attachBackend(a);
  bus.attachBackend(b);
  for (let i = 0; i < 10; i++) assert.deepEqual(bus.emit(flow("start", 1000 + i)), { accepted: true });
  assert.equal(await bus.close(1000), 0);
  assert.deepEqual(a.events.map((e) => e.src.port), b.events.map((e) => e.src.port));
  assert.equal(a.events.length, 10);
  assert.deepEqual(a.events.map((e) => e.src.port), [...Array(10).keys()].map((i) => 1000 + i));
});

Deno.test("bus: a stuck backend neither blocks emit nor the other backends; its overflow is counted", async () => {
  const bus = new EventBus({ queueCapacity: 5, flowTableCapacity: 100 });
  const stuck = new Recorder("stuck"), fast = new Recorder("fast");
  let release!: () => void;
  stuck.gate = new Promise((r) => release = r);
  bus.attachBackend(stuck);
  bus.attachBackend(fast);
  for (let i = 0; i < 50; i++) {
    const r = bus.emit(flow("start", i));
    assert.equal(r.accepted, true); // the fast backend still takes it
    await tick();
  }
  assert.equal(fast.events.length, 50);
  const stats = bus.stats();
  assert.equal(stats.stuck!.dropped, 50 - 5 - 1); // 1 in the backend's hands, 5 queued
  release();
  assert.equal(await bus.close(1000), 0);
  assert.equal(stuck.events.length, 6);
});

Deno.test("bus: when every queue is full, emit says so", () => {
  const bus = new EventBus({ queueCapacity: 1, flowTableCapacity: 10 });
  const a = new Recorder("a");
  a.gate = new Promise(() => {}); // never finishes
  bus.attachBackend(a);
  assert.equal(bus.emit(flow("start", 1)).accepted, true); // taken by the consumer
  // the consumer only takes it on the next tick, so the queue now holds it
  const r = bus.emit(flow("start", 2));
  assert.deepEqual(r, { accepted: false, reason: "every backend queue is full" });
  void bus.close(1);
});

Deno.test("bus: end events get the start time of their start and an end time", async () => {
  let t = 100;
  const bus = new EventBus({ queueCapacity: 10, flowTableCapacity: 10, now: () => t });
  const a = new Recorder("a");
  bus.attachBackend(a);
  bus.emit(flow("start"));
  t = 250;
  bus.emit(flow("end", 1000, { experimentId: 2 }));
  bus.emit(flow("end", 9999)); // never started
  await bus.close(1000);
  assert.equal(a.events[0]!.startTime, 100);
  assert.equal(a.events[1]!.startTime, 100);
  assert.equal(a.events[1]!.endTime, 250);
  assert.equal(a.events[2]!.startTime, undefined);
  assert.equal(a.events[2]!.endTime, 250);
  assert.equal(bus.flows.size, 0);
});

Deno.test("bus: times given by the plugin are kept", async () => {
  const bus = new EventBus({ queueCapacity: 10, flowTableCapacity: 10, now: () => 999 });
  const a = new Recorder("a");
  bus.attachBackend(a);
  bus.emit(flow("start", 1, { startTime: 10 }));
  bus.emit(flow("end", 1, { endTime: 20 }));
  await bus.close(1000);
  assert.deepEqual(a.events.map((e) => [e.startTime, e.endTime]), [[10, undefined], [10, 20]]);
});

Deno.test("bus: the flow table is bounded, oldest flows forgotten first", () => {
  const bus = new EventBus({ queueCapacity: 10, flowTableCapacity: 3 });
  for (let i = 0; i < 5; i++) bus.emit(flow("start", i));
  assert.equal(bus.flows.size, 3);
  assert.equal(bus.flows.evicted, 2);
  assert.equal(bus.flows.get(flow("end", 0)), undefined);
  assert.ok(bus.flows.get(flow("end", 4)));
  void bus.close(1);
});

Deno.test("bus: enrichers are told of starts and ends; samples reach only backends that take them", async () => {
  const bus = new EventBus({ queueCapacity: 10, flowTableCapacity: 10 });
  const calls: string[] = [];
  const enricher: Enricher = {
    name: "e",
    flavour: "Netlink",
    start: () => Promise.resolve(),
    watch: (f) => void calls.push(`watch ${f.src.port}`),
    forget: (f) => void calls.push(`forget ${f.src.port}`),
    stop: () => Promise.resolve(),
  };
  const taker = new Recorder("taker", true), plain = new Recorder("plain");
  bus.attachBackend(taker);
  bus.attachBackend(plain);
  bus.attachEnricher(enricher);
  bus.emit(flow("start", 7));
  const started = bus.flows.get(flow("start", 7))!;
  bus.publish({ flavour: "Netlink", flow: started, time: 1, info: {} });
  bus.emit(flow("end", 7));
  await bus.close(1000);
  assert.deepEqual(calls, ["watch 7", "forget 7"]);
  assert.equal(taker.samples.length, 1);
  assert.equal(taker.samples[0]!.flow.src.port, 7);
  assert.equal(plain.samples.length, 0);
});

Deno.test("bus: samples of flows that ended or started again are dropped, so no backend sees them", async () => {
  let t = 10;
  const bus = new EventBus({ queueCapacity: 10, flowTableCapacity: 10, now: () => t });
  const taker = new Recorder("taker", true);
  bus.attachBackend(taker);
  bus.emit(flow("start", 7));
  const first = bus.flows.get(flow("start", 7))!;
  bus.publish({ flavour: "Ebpf", flow: first, time: 11, info: {} });
  t = 20;
  bus.emit(flow("start", 7)); // the same 5-tuple again: a new flow
  bus.publish({ flavour: "Ebpf", flow: first, time: 21, info: {} }); // a late sample of the old one
  const second = bus.flows.get(flow("start", 7))!;
  bus.publish({ flavour: "Ebpf", flow: second, time: 22, info: {} });
  bus.emit(flow("end", 7));
  bus.publish({ flavour: "Ebpf", flow: second, time: 23, info: {} }); // after the end
  bus.publish({ flavour: "Ebpf", flow: flow("start", 99), time: 24, info: {} }); // never started
  await bus.close(1000);
  assert.deepEqual(taker.samples.map((s) => s.time), [11, 22]);
  assert.deepEqual(bus.sampleStats, { delivered: 2, stale: 3 });
});

Deno.test("bus: a backend whose enrich throws does not keep the sample from the others", async () => {
  const bus = new EventBus({ queueCapacity: 10, flowTableCapacity: 10 });
  const thrower = new Recorder("thrower");
  thrower.enrich = () => {
    throw new Error("boom");
  };
  const taker = new Recorder("taker", true);
  bus.attachBackend(thrower);
  bus.attachBackend(taker);
  bus.emit(flow("start", 5));
  bus.publish({ flavour: "Netlink", flow: bus.flows.get(flow("start", 5))!, time: 1, info: {} });
  await bus.close(1000);
  assert.equal(taker.samples.length, 1);
});

Deno.test("bus: a backend that throws is counted and does not stop its lane", async () => {
  const bus = new EventBus({ queueCapacity: 10, flowTableCapacity: 10 });
  let n = 0;
  const flaky: Backend = {
    name: "flaky",
    start: () => Promise.resolve(),
    handle: () => ++n === 1 ? Promise.reject(new Error("boom")) : Promise.resolve(),
    stop: () => Promise.resolve(),
  };
  bus.attachBackend(flaky);
  bus.emit(flow("start", 1));
  bus.emit(flow("start", 2));
  await bus.close(1000);
  assert.deepEqual(bus.stats().flaky, { handled: 1, dropped: 0, failed: 1, queued: 0 });
});

Deno.test("bus: close refuses new events and gives up on a hung backend after the timeout", async () => {
  const bus = new EventBus({ queueCapacity: 10, flowTableCapacity: 10 });
  const hung = new Recorder("hung");
  hung.gate = new Promise(() => {});
  bus.attachBackend(hung);
  bus.emit(flow("start", 1));
  bus.emit(flow("start", 2));
  bus.emit(flow("start", 3));
  await tick();
  const t0 = performance.now();
  const abandoned = await bus.close(100);
  assert.ok(performance.now() - t0 < 1000);
  assert.equal(abandoned, 2);
  assert.deepEqual(bus.emit(flow("start", 4)), { accepted: false, reason: "the daemon is shutting down" });
});
