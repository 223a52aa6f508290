/**
 * The event bus: takes flow events from plugins, completes them (start/end times from the flow table),
 * and fans each one out to every backend through a bounded queue per backend.
 *
 * Nothing here can block a producer: `emit` is synchronous, and a backend whose queue is full loses
 * that event (counted and logged) instead of stalling the others; the original's lock-step unbuffered
 * channels could deadlock the whole daemon (flowd-go-behaviour §3.6-§3.8, §11.1).
 */
import type {
  Backend,
  EmitResult,
  Enricher,
  EnrichmentSample,
  EnrichmentSink,
  EventSink,
} from "./component.ts";
import { describeFlow, type FlowEvent } from "./flow_event.ts";
import { BoundedQueue } from "./bounded_queue.ts";
import { FlowTable, type StartedFlow } from "./flow_table.ts";
import { type Micros, nowMicros } from "./time.ts";
import { errorMessage } from "./errors.ts";
import { debugLogging, logger, RateLimitedLog } from "./log.ts";
import type { HealthMetric } from "./health.ts";

/** Tuning of the bus. */
export interface BusOptions {
  /** Events each backend may have waiting before new ones are dropped for it. */
  queueCapacity: number;
  /** Started flows remembered at most (oldest forgotten first). */
  flowTableCapacity: number;
  /** Clock, replaceable in tests. */
  now?: () => Micros;
}

/** Counters of one backend's queue. */
export interface BackendStats {
  handled: number;
  dropped: number;
  failed: number;
  queued: number;
}

class BackendLane {
  readonly queue: BoundedQueue<FlowEvent>;
  readonly stats = { handled: 0, dropped: 0, failed: 0 };
  readonly dropLog = new RateLimitedLog();
  readonly failLog = new RateLimitedLog();
  done: Promise<void> = Promise.resolve();

  constructor(readonly backend: Backend, capacity: number) {
    this.queue = new BoundedQueue(capacity);
  }
}

const log = logger("core", "bus");

/** Events kept for a backend being replaced (see `EventBus.hold`). */
export interface EventHold {
  readonly events: FlowEvent[];
  dropped: number;
}

/** Fan-out of flow events to backends and of enrichment samples to the backends that take them. */
export class EventBus implements EventSink, EnrichmentSink {
  readonly #lanes: BackendLane[] = [];
  /** Holds of a reload in progress (usually none). */
  readonly #holds: EventHold[] = [];
  readonly #enrichers: Enricher[] = [];
  readonly #flows: FlowTable;
  readonly #now: () => Micros;
  readonly #capacity: number;
  #closed = false;
  #received = 0;
  #samples = 0;
  #staleSamples = 0;

  constructor(opts: BusOptions) {
    this.#capacity = opts.queueCapacity;
    this.#flows = new FlowTable(opts.flowTableCapacity);
    this.#now = opts.now ?? nowMicros;
  }

  /** Adds a backend and starts its consumer; events emitted from now on reach it. */
  attachBackend(backend: Backend): void {
    const lane = new BackendLane(backend, this.#capacity);
    lane.done = this.#consume(lane, []);
    this.#lanes.push(lane);
  }

  /** The flows open now (started and not ended), oldest first; for listings. */
  openFlows(): IterableIterator<StartedFlow> {
    return this.#flows.values();
  }

  /**
   * Adds a backend during a reload. One that keeps per-flow state (`replayOpenFlows`) first gets the
   * start of every flow open now, so a replaced marker goes on marking them; then `held` (see `hold`),
   * then the events from now on.
   */
  attachBackendToOpenFlows(backend: Backend, held: readonly FlowEvent[] = []): void {
    const lane = new BackendLane(backend, this.#capacity);
    const open = backend.replayOpenFlows ? [...this.#flows.values()] : [];
    // Then, in order, what was emitted while it was being replaced; a flow started in that time comes with
    // the held events, not the replay (its start is the same object in both), so it is told once.
    let replay: readonly FlowEvent[] = open;
    if (held.length) {
      const heldSet = new Set<FlowEvent>(held);
      replay = [...open.filter((e) => !heldSet.has(e)), ...held];
    }
    lane.done = this.#consume(lane, replay);
    this.#lanes.push(lane);
  }

  /**
   * Removes a backend (a reload replaced or dropped it): it gets no new events and has `timeoutMs` to
   * finish its queue. Returns how many queued events it abandoned.
   */
  async detachBackend(backend: Backend, timeoutMs: number): Promise<number> {
    const i = this.#lanes.findIndex((l) => l.backend === backend);
    if (i < 0) return 0;
    const [lane] = this.#lanes.splice(i, 1);
    lane!.queue.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      lane!.done.then(() => "drained" as const),
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (outcome === "drained") return 0;
    const abandoned = lane!.queue.clear();
    log.warn("a removed backend did not finish its queue in time", { backend: backend.name, abandoned });
    return abandoned;
  }

  /** Removes an enricher: it is told about no further flows. */
  detachEnricher(enricher: Enricher): void {
    const i = this.#enrichers.indexOf(enricher);
    if (i >= 0) this.#enrichers.splice(i, 1);
  }

  /** Adds an enricher: it is told about flows that start and end from now on. */
  attachEnricher(enricher: Enricher): void {
    this.#enrichers.push(enricher);
  }

  /** Adds an enricher during a reload: it is also told about every flow open now. */
  attachEnricherToOpenFlows(enricher: Enricher): void {
    this.#enrichers.push(enricher);
    for (const open of this.#flows.values()) this.#tell(enricher, "watch", open);
  }

  /** Flows started and not yet ended. */
  get flows(): FlowTable {
    return this.#flows;
  }

  /** Events accepted so far. */
  get received(): number {
    return this.#received;
  }

  /**
   * Undefined while every backend queue has room; else a promise resolving once each full queue is down to
   * three quarters of its capacity (so a paused producer resumes with room for a burst), or the bus closes.
   */
  whenRoom(): Promise<void> | undefined {
    if (this.#closed) return undefined;
    let waits: Promise<void>[] | undefined;
    for (const lane of this.#lanes) {
      if (lane.queue.full) (waits ??= []).push(lane.queue.whenAtMost(Math.floor(this.#capacity * 0.75)));
    }
    if (!waits) return undefined;
    return waits.length === 1 ? waits[0] : Promise.all(waits).then(() => {});
  }

  /** Names of the backends whose queue is full now (for a producer that says why it waits). */
  fullBackends(): string[] {
    return this.#lanes.filter((l) => l.queue.full).map((l) => l.backend.name);
  }

  /** The sink a plugin is handed: its starts are recorded as announced by it (`flowd-go flows`). */
  sinkFor(source: string): EventSink {
    return {
      emit: (event) => this.emit(event, source),
      whenRoom: () => this.whenRoom(),
      source,
    };
  }

  /**
   * Keeps every event emitted from now on (up to the queue capacity; more are counted as dropped) for a
   * backend a reload is replacing: taken right before the old one is detached and handed to its successor
   * by `release` in the same turn as it is attached, so no event falls between the two.
   */
  hold(): EventHold {
    const h: EventHold = { events: [], dropped: 0 };
    this.#holds.push(h);
    return h;
  }

  /** Stops filling a hold and returns what it kept. */
  release(h: EventHold): FlowEvent[] {
    const i = this.#holds.indexOf(h);
    if (i >= 0) this.#holds.splice(i, 1);
    if (h.dropped > 0) {
      log.warn("a reload held more events than a queue holds; the rest were dropped for the new backend", {
        held: h.events.length,
        dropped: h.dropped,
      });
    }
    return h.events;
  }

  emit(event: FlowEvent, source?: string): EmitResult {
    if (this.#closed) return { accepted: false, reason: "the daemon is shutting down" };
    const completed = this.#complete(event, source);
    this.#received++;
    if (debugLogging()) log.debug("dispatching flow event", () => ({ flow: describeFlow(completed) }));
    for (const h of this.#holds) {
      if (h.events.length < this.#capacity) h.events.push(completed);
      else h.dropped++;
    }
    let taken = 0;
    for (const lane of this.#lanes) {
      if (lane.queue.offer(completed)) {
        taken++;
        continue;
      }
      lane.stats.dropped++;
      lane.dropLog.run((suppressed) =>
        log.warn("backend queue full, event dropped for this backend", {
          backend: lane.backend.name,
          capacity: this.#capacity,
          droppedTotal: lane.stats.dropped,
          suppressed,
        })
      );
    }
    if (this.#lanes.length > 0 && taken === 0) {
      return { accepted: false, reason: "every backend queue is full" };
    }
    return { accepted: true };
  }

  /**
   * Hands a sample to every backend that takes samples, synchronously. Samples of flows that are no longer
   * open (ended, or started again since) are dropped: a backend that has seen a flow end never hears of it
   * again, so nothing it deleted comes back.
   */
  publish(sample: EnrichmentSample): void {
    if (this.#closed) return;
    const open = this.#flows.get(sample.flow);
    if (open === undefined || open.startTime !== sample.flow.startTime) {
      this.#staleSamples++;
      return;
    }
    this.#samples++;
    for (const lane of this.#lanes) {
      if (!lane.backend.enrich) continue;
      try {
        lane.backend.enrich(sample);
      } catch (err) {
        lane.failLog.run((suppressed) =>
          log.error("backend failed to take an enrichment sample", {
            backend: lane.backend.name,
            err: errorMessage(err),
            suppressed,
          })
        );
      }
    }
  }

  /** Enrichment samples delivered, and those dropped because their flow was no longer open. */
  get sampleStats(): { delivered: number; stale: number } {
    return { delivered: this.#samples, stale: this.#staleSamples };
  }

  /** Per-backend counters. */
  stats(): Record<string, BackendStats> {
    const out: Record<string, BackendStats> = {};
    for (const l of this.#lanes) out[l.backend.name] = { ...l.stats, queued: l.queue.size };
    return out;
  }

  /** Per-backend handled/dropped/failed counters and queue depth, as health metrics. */
  health(): HealthMetric[] {
    const out: HealthMetric[] = [];
    for (const l of this.#lanes) {
      const labels = { backend: l.backend.name };
      out.push(
        {
          name: "flowd_bus_events_handled_total",
          help: "Flow events a backend handled",
          type: "counter",
          labels,
          value: l.stats.handled,
        },
        {
          name: "flowd_bus_events_dropped_total",
          help: "Flow events dropped for a backend because its queue was full",
          type: "counter",
          labels,
          value: l.stats.dropped,
        },
        {
          name: "flowd_bus_events_failed_total",
          help: "Flow events a backend failed to handle",
          type: "counter",
          labels,
          value: l.stats.failed,
        },
        {
          name: "flowd_bus_queue_events",
          help: "Flow events waiting in a backend's queue",
          type: "gauge",
          labels,
          value: l.queue.size,
        },
      );
    }
    out.push({
      name: "flowd_bus_events_received_total",
      help: "Flow events the bus accepted from plugins",
      type: "counter",
      value: this.#received,
    });
    return out;
  }

  /**
   * Stops accepting events and lets each backend finish its queue, for at most `timeoutMs`.
   * Returns how many queued events were abandoned when the time ran out.
   */
  async close(timeoutMs: number): Promise<number> {
    this.#closed = true;
    for (const lane of this.#lanes) lane.queue.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), timeoutMs));
    const drained = Promise.all(this.#lanes.map((l) => l.done)).then(() => "drained" as const);
    const outcome = await Promise.race([drained, timedOut]);
    clearTimeout(timer);
    if (outcome === "drained") return 0;
    let abandoned = 0;
    for (const lane of this.#lanes) abandoned += lane.queue.clear();
    log.warn("backends did not finish their queues in time", { timeoutMs, abandoned });
    return abandoned;
  }

  /** Fills in what the core knows: start time of starts, start/end times of ends; tells enrichers. */
  #complete(event: FlowEvent, source: string | undefined): FlowEvent {
    switch (event.state) {
      case "start": {
        // One copy at most, and none when the plugin set the time and no source is to be added.
        const startTime = event.startTime ?? this.#now();
        const named = source !== undefined && event.source === undefined;
        const completed = event.startTime === undefined || named
          ? { ...event, startTime, ...(named ? { source } : {}) }
          : event;
        const previous = this.#flows.started(completed as StartedFlow);
        if (previous) log.debug("flow started again before it ended", () => ({ flow: describeFlow(event) }));
        for (const e of this.#enrichers) this.#tell(e, "watch", completed);
        return completed;
      }
      case "end": {
        const known = this.#flows.ended(event);
        if (!known) {
          log.debug("end of a flow that was not seen starting", () => ({ flow: describeFlow(event) }));
        }
        const completed = event.endTime !== undefined && (event.startTime !== undefined || !known) ? event : {
          ...event,
          startTime: event.startTime ?? known?.startTime,
          endTime: event.endTime ?? this.#now(),
        };
        for (const e of this.#enrichers) this.#tell(e, "forget", completed);
        return completed;
      }
      case "ongoing": {
        const known = this.#flows.get(event);
        return { ...event, startTime: event.startTime ?? known?.startTime };
      }
    }
  }

  #tell(enricher: Enricher, what: "watch" | "forget", flow: FlowEvent): void {
    try {
      enricher[what](flow);
    } catch (err) {
      log.error("enricher failed", { enricher: enricher.name, action: what, err: errorMessage(err) });
    }
  }

  /** Hands the lane's events to its backend in order; what is queued already goes without waiting. */
  async #consume(lane: BackendLane, replay: readonly FlowEvent[]): Promise<void> {
    for (const ev of replay) await this.#deliver(lane, ev);
    const queue = lane.queue;
    for (;;) {
      let ev = queue.poll();
      if (ev === undefined) {
        ev = await queue.take();
        if (ev === undefined) return;
      }
      const pending = this.#deliver(lane, ev);
      if (pending !== undefined) await pending;
    }
  }

  /** One event to one backend: undefined when it is done at once, else a promise settled when it is. */
  #deliver(lane: BackendLane, ev: FlowEvent): Promise<void> | undefined {
    let result: Promise<void> | void;
    try {
      result = lane.backend.handle(ev);
    } catch (err) {
      this.#failed(lane, ev, err);
      return undefined;
    }
    if (result === undefined) {
      lane.stats.handled++;
      return undefined;
    }
    return result.then(() => void lane.stats.handled++, (err) => this.#failed(lane, ev, err));
  }

  #failed(lane: BackendLane, ev: FlowEvent, err: unknown): void {
    lane.stats.failed++;
    lane.failLog.run((suppressed) =>
      log.error("backend failed to handle an event", {
        backend: lane.backend.name,
        flow: describeFlow(ev),
        err: errorMessage(err),
        suppressed,
      })
    );
  }
}
