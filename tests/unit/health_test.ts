import assert from "node:assert/strict";
import { EventBus } from "../../src/core/bus.ts";
import type { Backend } from "../../src/core/component.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { renderHealthMetrics } from "../../src/core/health.ts";
import { Supervisor } from "../../src/core/supervisor.ts";
import { IpAddress } from "../../src/net/ip.ts";

const start: FlowEvent = {
  state: "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: IpAddress.parse("2001:db8::1"), port: 1000 },
  dst: { address: IpAddress.parse("2001:db8::2"), port: 443 },
  experimentId: 2,
  activityId: 3,
  application: "t",
};

/** A backend that never finishes its first event, so its queue fills. */
class Stuck implements Backend {
  readonly name = "stuck";
  start = () => Promise.resolve();
  handle = () => new Promise<void>(() => {});
  stop = () => Promise.resolve();
  health = () => [{ name: "flowd_stuck_things", help: "Things", type: "gauge" as const, value: 7 }];
}

Deno.test("health: the bus counts every event dropped for a full backend queue, and components report", async () => {
  const bus = new EventBus({ queueCapacity: 2, flowTableCapacity: 100 });
  const supervisor = new Supervisor({ backends: [new Stuck()], enrichers: [], plugins: [] }, bus);
  await supervisor.start();
  for (let i = 0; i < 10; i++) bus.emit({ ...start, src: { ...start.src, port: 1000 + i } });
  const text = renderHealthMetrics(supervisor.health());
  // The emits run before the consumer gets a turn: two queued, eight dropped.
  assert.match(text, /^flowd_bus_events_dropped_total\{backend="stuck"\} 8$/m);
  assert.match(text, /^flowd_bus_queue_events\{backend="stuck"\} 2$/m);
  assert.match(text, /^flowd_bus_events_received_total 10$/m);
  assert.match(text, /^flowd_stuck_things 7$/m);
  assert.equal(text.match(/^# TYPE flowd_bus_events_dropped_total counter$/gm)?.length, 1);
  await bus.close(10);
});

Deno.test("health: label values are escaped", () => {
  const text = renderHealthMetrics([
    { name: "m", help: "h", type: "counter", labels: { reason: 'a "b"\\\n' }, value: 1 },
  ]);
  assert.equal(text, '# HELP m h\n# TYPE m counter\nm{reason="a \\"b\\"\\\\\\n"} 1\n');
});
