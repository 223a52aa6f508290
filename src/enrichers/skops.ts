/**
 * Enricher `skops`: TCP statistics from a sock_ops BPF program on a cgroup v2 directory
 * (bpf/skops.bpf.c). Watching a flow puts its full 5-tuple into the program's map; the program then
 * writes records for it into a ring buffer (poll: on RTT samples at most once per `period`, and on state
 * changes; transition: on state changes only), which are read without blocking the event loop and
 * published as samples of that flow.
 *
 * Only connections opened or accepted after the program is attached report (sock_ops callbacks are
 * enabled per socket when it connects); IPv4 and IPv6 both work. The original keyed flows by ports only
 * and could not load its transition strategy.
 */
import { BPF_ANY, mapDelete, mapUpdate } from "../../ffi/libbpf.ts";
import type { Enricher, EnrichmentSink } from "../core/component.ts";
import { errorMessage } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import { logger, RateLimitedLog } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import type { SkopsEnricherConfig } from "../config/schema.ts";
import { resolveCgroupPath } from "../bpf/cgroup.ts";
import { kernelHz } from "../bpf/kernel_hz.ts";
import { sockOpsObject } from "../bpf/object_bytes.ts";
import { SockOpsProgram } from "../bpf/sock_ops_program.ts";
import {
  CONFIG_SECTION,
  decodeRecord,
  encodeConfig,
  encodeFlowKey,
  FLOW_STATE_SIZE,
  keyId,
  LOST_MAP,
  RECORDS_MAP,
  SKOPS_PROGRAM_NAME,
  WATCHED_FLOWS_MAP,
} from "./skops_layout.ts";

/** What the enricher is built from. */
export interface SkopsEnricherOptions {
  config: SkopsEnricherConfig;
  /** `enrichers.period`, milliseconds: least time between two poll records of a flow. */
  periodMs: number;
}

/** Counters, for tests and diagnostics. */
export interface SkopsStats {
  records: number;
  published: number;
  /** Records of flows no longer watched (the kernel wrote them before the flow was forgotten). */
  unwatched: number;
  malformed: number;
}

const log = logger("enrichers", "skops");

/** The skops enricher: watched flows in a kernel map, their records read from the ring into samples. */
export class SkopsEnricher implements Enricher {
  readonly name = "skops";
  readonly flavour = "Ebpf" as const;
  readonly stats: SkopsStats = { records: 0, published: 0, unwatched: 0, malformed: 0 };
  #program: SockOpsProgram | undefined;
  #sink: EnrichmentSink | undefined;
  #hz = 1000;
  #mapFd = -1;
  readonly #flows = new Map<string, FlowEvent>();
  readonly #malformedLog = new RateLimitedLog();
  readonly #watchFailLog = new RateLimitedLog();

  constructor(private readonly opts: SkopsEnricherOptions) {}

  /** Kernel id of the attached program, once started. */
  get programId(): number | undefined {
    return this.#program?.programId;
  }

  /** Flows being watched. */
  get watching(): number {
    return this.#flows.size;
  }

  async start(sink: EnrichmentSink): Promise<void> {
    this.#sink = sink;
    const c = this.opts.config;
    const cgroup = await resolveCgroupPath(c.cgroupPath);
    const hz = await kernelHz();
    this.#hz = hz.hz;
    if (hz.source.startsWith("fallback")) {
      log.warn("kernel HZ unknown, assuming 1000: rto, ato and last-* times may be scaled wrongly", {
        hz: hz.hz,
      });
    }
    const object = await sockOpsObject("skops", c);
    this.#program = SockOpsProgram.open({
      bytes: object.bytes,
      name: "skops",
      programName: SKOPS_PROGRAM_NAME,
      ringMapName: RECORDS_MAP,
      lostMapName: LOST_MAP,
      config: {
        section: CONFIG_SECTION,
        bytes: encodeConfig({ intervalMs: this.opts.periodMs, strategy: c.strategy }),
      },
      cgroupPath: cgroup.path,
      onRecord: (r) => this.#onRecord(r),
      log,
    });
    this.#mapFd = this.#program.map(WATCHED_FLOWS_MAP).fd;
    log.info("sock_ops program attached", {
      cgroup: cgroup.path,
      how: cgroup.how,
      strategy: c.strategy,
      periodMs: this.opts.periodMs,
      hz: hz.hz,
      hzFrom: hz.source,
      object: object.source,
      programId: this.#program.programId,
    });
  }

  watch(flow: FlowEvent): void {
    if (this.#program === undefined || flow.protocol !== "tcp") return;
    if (flow.src.port === 0 || flow.dst.port === 0) {
      log.debug("not watching a flow without ports", { flow: describeFlow(flow) });
      return;
    }
    const key = encodeFlowKey(flow.src, flow.dst);
    try {
      mapUpdate(this.#mapFd, key, new Uint8Array(FLOW_STATE_SIZE), BPF_ANY);
    } catch (err) {
      this.#watchFailLog.run((suppressed) =>
        log.error("cannot watch a flow", { flow: describeFlow(flow), err: errorMessage(err), suppressed })
      );
      return;
    }
    this.#flows.set(keyId(key), flow);
  }

  forget(flow: FlowEvent): void {
    if (this.#program === undefined || flow.protocol !== "tcp") return;
    const key = encodeFlowKey(flow.src, flow.dst);
    if (!this.#flows.delete(keyId(key))) return;
    // The program removes the key itself when the socket closes, so it may be gone already.
    try {
      mapDelete(this.#mapFd, key);
    } catch (err) {
      log.warn("cannot remove a flow from the kernel map", {
        flow: describeFlow(flow),
        err: errorMessage(err),
      });
    }
  }

  /** Records the kernel could not hand over because the ring buffer was full. */
  lostRecords(): bigint {
    return this.#program?.lost() ?? 0n;
  }

  async stop(): Promise<void> {
    const program = this.#program;
    this.#program = undefined;
    this.#flows.clear();
    const lost = program?.lost() ?? 0n;
    if (lost > 0n) log.warn("records were lost: the ring buffer was full at times", { lost });
    await program?.close();
  }

  #onRecord(bytes: Uint8Array): void {
    this.stats.records++;
    let record;
    try {
      record = decodeRecord(bytes, this.#hz);
    } catch (err) {
      this.stats.malformed++;
      this.#malformedLog.run((suppressed) =>
        log.warn("malformed skops record (is programPath an object of this version?)", {
          err: errorMessage(err),
          suppressed,
        })
      );
      return;
    }
    const flow = this.#flows.get(record.keyId);
    if (flow === undefined) {
      this.stats.unwatched++;
      return;
    }
    this.stats.published++;
    this.#sink?.publish({ flavour: this.flavour, flow, time: nowMicros(), info: record.info });
  }
}
