/**
 * Plugin `iperf3`: start and end events for the TCP connections of a cgroup whose ports fall in the
 * configured ranges, seen by a sock_ops BPF program (bpf/watcher.bpf.c), both the connecting and the
 * accepting end. Each connection gets the next experiment/activity pair of the lists (or a random one)
 * when it is established, and its end event carries that same pair: the original took the end's ids
 * from whatever pair was current, so the two could differ. A close without a start (a connection that
 * never got established, or one open before the daemon started) produces nothing.
 */
import type { EventSink, Plugin } from "../core/component.ts";
import type { FlowEvent } from "../core/flow_event.ts";
import { logger } from "../core/log.ts";
import type { Iperf3Config } from "../config/schema.ts";
import { resolveCgroupPath } from "../bpf/cgroup.ts";
import { sockOpsObject } from "../bpf/object_bytes.ts";
import { SockOpsProgram } from "../bpf/sock_ops_program.ts";
import { portRange, WatcherEvents } from "./watcher_events.ts";
import {
  CONFIG_SECTION,
  encodeWatcherConfig,
  EVENTS_MAP,
  LOST_MAP,
  TCP_CLOSE,
  TCP_ESTABLISHED,
  WATCHER_PROGRAM_NAME,
} from "./iperf3_layout.ts";

/** What the plugin is built from. */
export interface Iperf3PluginOptions {
  config: Iperf3Config;
  application: string;
  /** A number in [0, 1) for `randomIDs`; replaceable in tests. */
  random?: () => number;
}

/** Counters, for tests and diagnostics. */
export interface Iperf3Stats {
  events: number;
  starts: number;
  ends: number;
  /** Closes of connections never seen established. */
  unmatchedEnds: number;
  refused: number;
}

const log = logger("plugins", "iperf3");

/** The iperf3 plugin: start and end events for in-range TCP connections of a cgroup. */
export class Iperf3Plugin implements Plugin {
  readonly name = "iperf3";
  readonly stats: Iperf3Stats = { events: 0, starts: 0, ends: 0, unmatchedEnds: 0, refused: 0 };
  #program: SockOpsProgram | undefined;
  #sink: EventSink | undefined;
  /** Established connections by socket cookie, with the start event they were given. */
  readonly #open = new Map<bigint, FlowEvent>();
  #index = -1;
  readonly #random: () => number;
  readonly #events = new WatcherEvents(log);

  constructor(private readonly opts: Iperf3PluginOptions) {
    this.#random = opts.random ?? Math.random;
  }

  /** Kernel id of the attached program, once started. */
  get programId(): number | undefined {
    return this.#program?.programId;
  }

  /** Connections started and not yet ended. */
  get openConnections(): number {
    return this.#open.size;
  }

  async start(sink: EventSink): Promise<void> {
    this.#sink = sink;
    const c = this.opts.config;
    const cgroup = await resolveCgroupPath(c.cgroupPath);
    const object = await sockOpsObject("watcher", c);
    this.#program = SockOpsProgram.open({
      bytes: object.bytes,
      name: "watcher",
      programName: WATCHER_PROGRAM_NAME,
      ringMapName: EVENTS_MAP,
      lostMapName: LOST_MAP,
      config: { section: CONFIG_SECTION, bytes: encodeWatcherConfig(c) },
      cgroupPath: cgroup.path,
      onRecord: (r) => this.#onEvent(r),
      log,
    });
    log.info("watching TCP connections", {
      cgroup: cgroup.path,
      how: cgroup.how,
      sourcePorts: portRange(c.minSourcePort, c.maxSourcePort),
      destinationPorts: portRange(c.minDestinationPort, c.maxDestinationPort),
      ids: c.randomIDs ? "random" : "in turn",
      object: object.source,
      programId: this.#program.programId,
    });
  }

  async stop(): Promise<void> {
    const program = this.#program;
    this.#program = undefined;
    await this.#events.close(program);
    this.#open.clear();
  }

  /** The index of the next experiment/activity pair. */
  #nextIndex(): number {
    const n = this.opts.config.experimentIDs.length;
    if (this.opts.config.randomIDs) return Math.min(n - 1, Math.floor(this.#random() * n));
    this.#index = (this.#index + 1) % n;
    return this.#index;
  }

  #onEvent(bytes: Uint8Array): void {
    this.stats.events++;
    const e = this.#events.decode(bytes);
    if (e === undefined) return;
    if (e.newState === TCP_ESTABLISHED) {
      const i = this.#nextIndex();
      const c = this.opts.config;
      const start: FlowEvent = {
        state: "start",
        protocol: "tcp",
        family: e.local.address.family,
        src: e.local,
        dst: e.remote,
        experimentId: c.experimentIDs[i]!,
        activityId: c.activityIDs[i]!,
        application: this.opts.application,
      };
      this.#open.set(e.cookie, start);
      this.stats.starts++;
      this.#emit(start);
    } else if (e.newState === TCP_CLOSE) {
      const start = this.#open.get(e.cookie);
      if (start === undefined) {
        this.stats.unmatchedEnds++;
        log.debug("close of a connection not seen established", {
          local: e.local.port,
          remote: e.remote.port,
        });
        return;
      }
      this.#open.delete(e.cookie);
      this.stats.ends++;
      this.#emit({ ...start, state: "end" });
    }
  }

  #emit(event: FlowEvent): void {
    if (!this.#events.emit(this.#sink, event)) this.stats.refused++;
  }
}
