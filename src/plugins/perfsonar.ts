/**
 * Plugin `perfsonar`: marks all egress IPv6 traffic of a perfSONAR host with one experiment and activity.
 * It emits a single start event for the wildcard flow ([::]:0 to [::]:0), which the marker (forced to
 * matchAll by the configuration) turns into the tag of every packet; at stop it emits the matching end,
 * so the tag is withdrawn instead of being left to a process exit.
 */
import type { EventSink, Plugin } from "../core/component.ts";
import type { FlowEvent } from "../core/flow_event.ts";
import { logger } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import { IpAddress } from "../net/ip.ts";

/** What the plugin needs from its configuration section. */
export interface PerfsonarOptions {
  experimentId: number;
  activityId: number;
  application: string;
}

const log = logger("plugins", "perfsonar");

/** The wildcard flow the marker's match-all mode keys on. */
export function wildcardFlow(state: "start" | "end", opts: PerfsonarOptions, time: number): FlowEvent {
  const any = IpAddress.parse("::");
  return {
    state,
    protocol: "tcp",
    family: "ipv6",
    src: { address: any, port: 0 },
    dst: { address: any, port: 0 },
    experimentId: opts.experimentId,
    activityId: opts.activityId,
    ...(state === "start" ? { startTime: time } : { endTime: time }),
    application: opts.application,
  };
}

export class PerfsonarPlugin implements Plugin {
  readonly name = "perfsonar";
  #sink: EventSink | undefined;

  constructor(private readonly opts: PerfsonarOptions) {}

  start(sink: EventSink): Promise<void> {
    const result = sink.emit(wildcardFlow("start", this.opts, nowMicros()));
    if (!result.accepted) {
      // Only possible if every backend queue is full at startup; say so rather than mark nothing silently.
      log.error("the match-all marking event was refused", { reason: result.reason });
    } else {
      this.#sink = sink;
      log.info("marking all IPv6 egress traffic", {
        experiment: this.opts.experimentId,
        activity: this.opts.activityId,
      });
    }
    return Promise.resolve();
  }

  stop(): Promise<void> {
    const sink = this.#sink;
    this.#sink = undefined;
    sink?.emit(wildcardFlow("end", this.opts, nowMicros()));
    return Promise.resolve();
  }
}
