/**
 * What the two plugins fed by the watcher sock_ops program (iperf3, connections) do alike with its
 * records: decode them (a malformed one is logged, rate-limited, and skipped), hand the resulting events
 * to the bus (a refusal is logged, rate-limited), and say at stop whether the ring buffer lost any.
 */
import type { EventSink } from "../core/component.ts";
import { errorMessage } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import { type Logger, RateLimitedLog } from "../core/log.ts";
import type { SockOpsProgram } from "../bpf/sock_ops_program.ts";
import { decodeWatcherEvent, type WatcherEvent } from "./iperf3_layout.ts";

/** One plugin's handling of watcher records; `log` is the plugin's own logger. */
export class WatcherEvents {
  readonly #malformedLog = new RateLimitedLog();
  readonly #refusedLog = new RateLimitedLog();

  constructor(private readonly log: Logger) {}

  /** The record decoded, or undefined (and logged) when it is not a watcher event of this version. */
  decode(bytes: Uint8Array): WatcherEvent | undefined {
    try {
      return decodeWatcherEvent(bytes);
    } catch (err) {
      this.#malformedLog.run((suppressed) =>
        this.log.warn("malformed watcher event (is programPath an object of this version?)", {
          err: errorMessage(err),
          suppressed,
        })
      );
      return undefined;
    }
  }

  /** Hands `event` to the bus; false when it was refused (the refusal is logged). */
  emit(sink: EventSink | undefined, event: FlowEvent): boolean {
    const r = sink?.emit(event);
    if (!r || r.accepted) return true;
    this.#refusedLog.run((suppressed) =>
      this.log.warn("event refused", { flow: describeFlow(event), reason: r.reason, suppressed })
    );
    return false;
  }

  /** Detaches and closes the program, saying first whether its ring buffer ever overflowed. */
  async close(program: SockOpsProgram | undefined): Promise<void> {
    const lost = program?.lost() ?? 0n;
    if (lost > 0n) {
      this.log.warn("connection events were lost: the ring buffer was full at times", { lost });
    }
    await program?.close();
  }
}

/** A port range for the log: 0 means no bound. */
export function portRange(min: number, max: number): string {
  return `${min || "any"}..${max || "any"}`;
}
