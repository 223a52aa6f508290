/**
 * The three kinds of components and their lifecycle.
 *
 * Lifecycle for all: constructed from their configuration section (no side effects), then `start()`
 * (acquire sockets, FIFOs, BPF programs; throw `StartupError` on failure, leaving nothing behind),
 * then `stop()` (release everything; must be safe to call after a failed or partial start).
 */
import type { FlowEvent } from "./flow_event.ts";
import type { HealthMetric } from "./health.ts";
import type { FlowInfo } from "./flow_info.ts";
import type { Micros } from "./time.ts";

/**
 * How a running component is doing, for `flowd-go status` and `/readyz`: running as configured, degraded
 * (running, but something it should do it cannot, e.g. an interface to mark vanished), or failed.
 */
export interface ComponentStatus {
  readonly state: "running" | "degraded" | "failed";
  /** Why, when not running. */
  readonly reason?: string;
  /** What the component wants an operator to see (hooks, sockets, counts), as plain JSON. */
  readonly details?: Readonly<Record<string, unknown>>;
}

/** What a plugin hands its events to. Never blocks; tells the caller whether the event was taken. */
export interface EventSink {
  emit(event: FlowEvent): EmitResult;
  /**
   * The name this sink records the plugin's events under (`FlowEvent.source`); a plugin that sets it on its
   * events itself saves the bus a copy of each start.
   */
  readonly source?: string;
  /**
   * Back-pressure: undefined while an event emitted now would reach every backend, else a promise that
   * resolves once there is room again (or the sink is closing). A plugin whose source can wait (a FIFO
   * reader stops reading, so writers block) awaits it before emitting; one that cannot (UDP) emits anyway
   * and the drop is counted; the API answers 503.
   */
  whenRoom?(): Promise<void> | undefined;
}

/** Outcome of `EventSink.emit`. */
export type EmitResult =
  | { readonly accepted: true }
  | { readonly accepted: false; readonly reason: string };

/** A source of flow events (named pipe, REST API, firefly listener, ...). */
export interface Plugin {
  /** Name used in logs, e.g. "namedPipe". */
  readonly name: string;
  start(sink: EventSink): Promise<void>;
  stop(): Promise<void>;
  /** Counters about itself (inputs rejected by reason, ...), read at scrape time. */
  health?(): HealthMetric[];
  /** How it is doing; a component without it is "running" while started. */
  status?(): ComponentStatus;
  /**
   * On a reload whose settings for this plugin changed: applies `options` (what its constructor took)
   * in place and returns true, or returns false to be replaced by a new instance. Lets the named pipe
   * keep its FIFO open across a change of mode or buffer size.
   */
  reconfigure?(options: object): Promise<boolean>;
}

/** A sink of flow events (marker, firefly, prometheus). */
export interface Backend {
  readonly name: string;
  /**
   * True for a backend that keeps per-flow state (the marker's map, the metrics' open flows): when a
   * reload brings a new instance in, it is first handed the start of every flow open at that moment.
   */
  readonly replayOpenFlows?: boolean;
  start(): Promise<void>;
  /**
   * Acts on one event. Called by the core one event at a time, in order, from this backend's own queue.
   * Must not throw for per-event failures (log them); a throw is logged and counted by the core. A backend
   * done at once returns nothing: the core then goes on to the next event without a promise per event.
   */
  handle(event: FlowEvent): Promise<void> | void;
  /**
   * Called synchronously with every enrichment sample of a flow that is still open; must return quickly
   * and never throw for per-sample failures (hand slow work, such as sends, off without awaiting it).
   * Backends without this method never see samples, so they cannot hold anything up.
   */
  enrich?(sample: EnrichmentSample): void;
  stop(): Promise<void>;
  /** Counters about itself (sends failed, map entries evicted, ...), read at scrape time. */
  health?(): HealthMetric[];
  /** How it is doing; a component without it is "running" while started. */
  status?(): ComponentStatus;
}

/** Where an enricher delivers samples; never blocks. */
export interface EnrichmentSink {
  publish(sample: EnrichmentSample): void;
}

/** Which enricher produced a sample; the original's Prometheus `flavour` label values. */
export type Flavour = "Ebpf" | "Netlink";

/** One periodic measurement of one flow, immutable once published (shared by every backend). */
export interface EnrichmentSample {
  readonly flavour: Flavour;
  /** The start event of the flow measured, as the core completed it (with its start time). */
  readonly flow: FlowEvent;
  /** When the kernel was asked. */
  readonly time: Micros;
  /** Kernel data: tcp_info and friends. */
  readonly info: FlowInfo;
}

/** A source of per-flow TCP statistics (netlink sock_diag, sock_ops eBPF). */
export interface Enricher {
  readonly name: string;
  readonly flavour: Flavour;
  start(sink: EnrichmentSink): Promise<void>;
  /** Begin measuring a started flow; must not block (the call comes from the bus's emit). */
  watch(flow: FlowEvent): void;
  /** Stop measuring a flow (its end event arrived); a flow not watched is ignored. */
  forget(flow: FlowEvent): void;
  stop(): Promise<void>;
  /** Counters about itself, read at scrape time. */
  health?(): HealthMetric[];
  /** How it is doing; a component without it is "running" while started. */
  status?(): ComponentStatus;
}

/** How to make one component from the configuration, and the settings that identify it (see wiring.ts). */
export type ComponentSpec =
  | { kind: "plugin"; slot: string; options: object; create(): Promise<Plugin> }
  | { kind: "backend"; slot: string; options: object; create(): Promise<Backend> }
  | { kind: "enricher"; slot: string; options: object; create(): Promise<Enricher> };
