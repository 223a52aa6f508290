/**
 * Plugin `connections`: a start and an end event for every TCP connection (IPv4 and IPv6) a rule of the
 * configuration matches, with the rule's experiment and activity; what the Python flowd's netstat and
 * netlink plugins did by polling, here seen as it happens.
 *
 * Source: the watcher sock_ops program of the iperf3 plugin (bpf/watcher.bpf.c), attached once to a
 * cgroup v2 directory for all rules; the kernel only pre-filters by the hull of the rules' ports and the
 * rules are matched here, per connection (simplest, and a handful of comparisons). A sock_diag sweep at
 * start reports the connections already open (each a start with its age, see connection_sweep.ts), and
 * a periodic sweep repairs what the watcher could not report: starts it lost (a full ring) and the ends
 * of connections opened before the program was attached (the program never saw their handshake, so the
 * kernel never calls it on their close). A sweep ends only connections an earlier sweep listed (see
 * `#swept`), so a close the watcher lost before any sweep saw the connection leaves it open here. An end
 * carries the tags of its start.
 */
import type { EventSink, Plugin } from "../core/component.ts";
import type { ComponentStatus } from "../core/component.ts";
import { errorMessage } from "../core/errors.ts";
import type { FlowEvent } from "../core/flow_event.ts";
import type { HealthMetric } from "../core/health.ts";
import { logger } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import type { ConnectionsConfig } from "../config/schema.ts";
import { cgroup2MountPoints, parseMountInfo, resolveCgroupPath } from "../bpf/cgroup.ts";
import { sockOpsObject } from "../bpf/object_bytes.ts";
import { SockOpsProgram } from "../bpf/sock_ops_program.ts";
import { SockDiag } from "../net/sock_diag.ts";
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
import { type Connection, ConnectionRules, type Direction } from "./connection_rules.ts";
import { cgroupSubtreeIds, connectionAge, sweepConnections } from "./connection_sweep.ts";

/** TCP states before ESTABLISHED (include/net/tcp_states.h): who opened the connection. */
const TCP_SYN_SENT = 2;

/** What the plugin is built from. */
export interface ConnectionsPluginOptions {
  config: ConnectionsConfig;
  application: string;
  /** The sock_diag socket for sweeps (tests give one inside their namespace); default this namespace. */
  sockDiag?: () => SockDiag;
  /** Called with the watcher's timestamp of every start it emits (a bench measures delays with it). */
  onWatcherStart?: (ktimeNs: bigint, event: FlowEvent) => void;
}

/** Counters, for tests, `status` and the metrics. */
export interface ConnectionsStats {
  /** Records read from the watcher's ring. */
  records: number;
  starts: number;
  ends: number;
  /** Starts found by a sweep: open at start-up, or missed by the watcher. */
  sweptStarts: number;
  /** Ends found by a sweep: connections gone without a close from the watcher. */
  sweptEnds: number;
  sweeps: number;
  sweepFailures: number;
  refused: number;
}

const log = logger("plugins", "connections");

/** The connections plugin. */
export class ConnectionsPlugin implements Plugin {
  readonly name = "connections";
  readonly stats: ConnectionsStats = {
    records: 0,
    starts: 0,
    ends: 0,
    sweptStarts: 0,
    sweptEnds: 0,
    sweeps: 0,
    sweepFailures: 0,
    refused: 0,
  };
  readonly #rules: ConnectionRules;
  #program: SockOpsProgram | undefined;
  #diag: SockDiag | undefined;
  #sink: EventSink | undefined;
  #cgroupPath = "";
  #cgroupIsRoot = true;
  #timer: ReturnType<typeof setInterval> | undefined;
  #sweeping: Promise<void> | undefined;
  /** Cookies of connections that closed while a sweep was under way: the sweep's dump may still list them. */
  #closedDuringSweep: Set<bigint> | undefined;
  /** Matched connections now open, by socket cookie, with their start event. */
  readonly #open = new Map<bigint, FlowEvent>();
  /**
   * Open connections a sweep has listed. Only these can be ended by a later sweep that misses them: the
   * watcher also reports connections of other network namespaces (containers in the cgroup), which a
   * sweep of this namespace never lists.
   */
  readonly #swept = new Set<bigint>();
  readonly #events = new WatcherEvents(log);

  constructor(private readonly opts: ConnectionsPluginOptions) {
    this.#rules = new ConnectionRules(opts.config);
  }

  /** Kernel id of the attached watcher program, once started. */
  get programId(): number | undefined {
    return this.#program?.programId;
  }

  /** Matched connections started and not yet ended. */
  get openConnections(): number {
    return this.#open.size;
  }

  /** Events the watcher could not write because its ring was full. */
  lost(): bigint {
    return this.#program?.lost() ?? 0n;
  }

  async start(sink: EventSink): Promise<void> {
    this.#sink = sink;
    const c = this.opts.config;
    const cgroup = await resolveCgroupPath(c.cgroupPath);
    this.#cgroupPath = cgroup.path;
    const mounts = parseMountInfo(await Deno.readTextFile("/proc/self/mountinfo"));
    this.#cgroupIsRoot = cgroup2MountPoints(mounts).includes(cgroup.path);
    const object = await sockOpsObject("watcher", c);
    const bounds = this.#rules.kernelPortBounds();
    this.#diag = (this.opts.sockDiag ?? (() => SockDiag.open()))();
    try {
      this.#program = SockOpsProgram.open({
        bytes: object.bytes,
        name: "watcher",
        programName: WATCHER_PROGRAM_NAME,
        ringMapName: EVENTS_MAP,
        lostMapName: LOST_MAP,
        config: { section: CONFIG_SECTION, bytes: encodeWatcherConfig(bounds) },
        cgroupPath: cgroup.path,
        onRecord: (r) => this.#onRecord(r),
        log,
      });
      // After the attachment: a connection established from now on is reported by the program, one
      // established before is in this dump (or both, which the cookie sorts out).
      await this.#sweep("start-up");
    } catch (err) {
      await this.stop();
      throw err;
    }
    if (c.sweepInterval > 0) {
      this.#timer = setInterval(() => void this.#sweep("repair"), c.sweepInterval * 1000);
    }
    log.info("watching TCP connections", {
      cgroup: cgroup.path,
      how: cgroup.how,
      rules: c.rules.length,
      kernelPorts: `local ${portRange(bounds.minSourcePort, bounds.maxSourcePort)}, remote ${
        portRange(bounds.minDestinationPort, bounds.maxDestinationPort)
      }`,
      openAtStart: this.#open.size,
      sweepInterval: c.sweepInterval,
      object: object.source,
      programId: this.#program.programId,
    });
  }

  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#sweeping?.catch(() => {}); // a failed sweep has said so already
    const program = this.#program;
    this.#program = undefined;
    await this.#events.close(program);
    this.#diag?.close();
    this.#diag = undefined;
    this.#open.clear();
    this.#swept.clear();
  }

  status(): ComponentStatus {
    return {
      state: "running",
      details: {
        cgroup: this.#cgroupPath,
        programId: this.programId,
        open: this.#open.size,
        ...this.stats,
        lost: Number(this.lost()),
      },
    };
  }

  health(): HealthMetric[] {
    const counter = (name: string, help: string, value: number): HealthMetric => ({
      name: `flowd_connections_${name}_total`,
      help,
      type: "counter",
      value,
    });
    return [
      counter("starts", "Start events of matched TCP connections", this.stats.starts),
      counter("ends", "End events of matched TCP connections", this.stats.ends),
      counter("swept_starts", "Starts found by a sock_diag sweep", this.stats.sweptStarts),
      counter("swept_ends", "Ends found by a sock_diag sweep", this.stats.sweptEnds),
      counter("lost", "Watcher events lost to a full ring buffer", Number(this.lost())),
      {
        name: "flowd_connections_open",
        help: "Matched TCP connections now open",
        type: "gauge",
        value: this.#open.size,
      },
    ];
  }

  #onRecord(bytes: Uint8Array): void {
    this.stats.records++;
    const e = this.#events.decode(bytes);
    if (e === undefined) return;
    if (e.newState === TCP_ESTABLISHED) {
      if (this.#open.has(e.cookie)) return; // a sweep was first
      const direction: Direction = e.oldState === TCP_SYN_SENT ? "outbound" : "inbound";
      const start = this.#startOf({ local: e.local, remote: e.remote, direction });
      if (start === undefined) return;
      this.#open.set(e.cookie, start);
      this.stats.starts++;
      this.opts.onWatcherStart?.(e.ktimeNs, start);
      this.#emit(start);
    } else if (e.newState === TCP_CLOSE) {
      this.#closedDuringSweep?.add(e.cookie);
      this.#end(e.cookie);
    }
  }

  /** The start event of a connection the rules match, or undefined. */
  #startOf(c: Connection, startTime?: number): FlowEvent | undefined {
    const m = this.#rules.match(c);
    if (m === undefined) return undefined;
    return {
      state: "start",
      protocol: "tcp",
      family: c.local.address.family,
      src: c.local,
      dst: c.remote,
      experimentId: m.experimentId,
      activityId: m.activityId,
      application: this.opts.application,
      ...(startTime === undefined ? {} : { startTime }),
    };
  }

  #end(cookie: bigint): boolean {
    const start = this.#open.get(cookie);
    if (start === undefined) return false;
    this.#open.delete(cookie);
    this.#swept.delete(cookie);
    this.stats.ends++;
    this.#emit({ ...start, state: "end" });
    return true;
  }

  /** Runs a repair sweep now (or waits for the one under way); for tests and benches. */
  sweepNow(): Promise<void> {
    return this.#sweep("repair");
  }

  /** One sweep at a time; a tick that comes while one runs is skipped. */
  #sweep(kind: "start-up" | "repair"): Promise<void> {
    if (this.#sweeping) return this.#sweeping;
    this.#sweeping = this.#sweepOnce(kind).finally(() => this.#sweeping = undefined);
    return this.#sweeping;
  }

  async #sweepOnce(kind: "start-up" | "repair"): Promise<void> {
    const program = this.#program, diag = this.#diag;
    if (!program || !diag) return;
    program.drain();
    // Only connections known before the dump can be missing from it for having ended.
    const before = [...this.#open.keys()];
    this.#closedDuringSweep = new Set();
    try {
      const startUp = kind === "start-up";
      const [found, subtree] = await Promise.all([
        sweepConnections(diag, (cookie) => this.#open.has(cookie), startUp),
        cgroupSubtreeIds(this.#cgroupPath, this.#cgroupIsRoot),
      ]);
      if (this.#program !== program) return; // stopped meanwhile
      program.drain();
      this.stats.sweeps++;
      const { present } = found;
      for (const cookie of present) if (this.#open.has(cookie)) this.#swept.add(cookie);
      let starts = 0, ends = 0;
      for (const s of found.unknown) {
        // The watcher sees the cgroup's sockets only; so does the sweep.
        if (subtree !== undefined && (s.cgroupId === undefined || !subtree.has(s.cgroupId))) continue;
        if (this.#rules.match(s) === undefined) continue;
        // A repair sweep dumps without tcp_info; the few connections it finds are looked up one by one.
        const ageMs = s.ageMs ?? await connectionAge(diag, s.local, s.remote);
        if (ageMs === undefined || this.#program !== program) continue;
        if (this.#open.has(s.cookie) || this.#closedDuringSweep.has(s.cookie)) continue;
        const start = this.#startOf(s, nowMicros() - ageMs * 1000)!;
        this.#open.set(s.cookie, start);
        this.#swept.add(s.cookie);
        this.stats.starts++;
        this.stats.sweptStarts++;
        starts++;
        this.#emit(start);
      }
      for (const cookie of before) {
        if (present.has(cookie) || !this.#swept.has(cookie) || !this.#end(cookie)) continue;
        this.stats.sweptEnds++;
        ends++;
      }
      if (kind === "repair" && (starts > 0 || ends > 0)) {
        log.info("sweep found connections the watcher did not report", { starts, ends });
      }
    } catch (err) {
      this.stats.sweepFailures++;
      if (kind === "start-up") throw err;
      log.warn("connection sweep failed; the next one retries", { err: errorMessage(err) });
    } finally {
      this.#closedDuringSweep = undefined;
    }
  }

  #emit(event: FlowEvent): void {
    if (!this.#events.emit(this.#sink, event)) this.stats.refused++;
  }
}
