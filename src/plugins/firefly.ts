/**
 * Plugin `firefly`: a UDP listener that turns the fireflies other hosts send (flowd, flowd-go, XRootD,
 * dCache) into flow events, so that flowd-go can relay them (to a collector, to the marker, ...).
 *
 * Fixed on purpose (flowd-go-behaviour §11.3 item 22): a datagram that is not a valid firefly produces a log
 * line and a counter and no event (the original forwarded a zeroed event); a datagram larger than
 * `bufferSize` is rejected, not truncated; `Z` times parse; `hasSyslogHeader: true` requires the header.
 */
import { UdpBatchReceiver } from "../../ffi/udp_batch.ts";
import type { EventSink, Plugin } from "../core/component.ts";
import { ConfigError, errorMessage, StartupError } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import { logger, RateLimitedLog } from "../core/log.ts";
import { IpAddress, joinHostPort } from "../net/ip.ts";
import { parsePrefix } from "../net/private_ranges.ts";
import { SourceGate } from "../net/source_gate.ts";
import type { HealthMetric } from "../core/health.ts";
import {
  FireflyParseError,
  type FireflyParseReason,
  fireflyToFlowEvent,
  parseFirefly,
} from "../scitags/firefly.ts";

/** The original refused smaller buffers: a firefly with enrichment does not fit in less. */
export const MIN_BUFFER_SIZE = 2048;

/** The defaults of the configuration keys: this host only, 1,000 datagrams per second per source. */
export const DEFAULT_ALLOWED_SOURCES = ["127.0.0.0/8", "::1/128"];
const DEFAULT_RATE_LIMIT = 1000;
const DEFAULT_RATE_BURST = 2000;

/** Bytes kept of a datagram: every UDP payload fits in 64 KiB, so a larger bufferSize needs no more. */
const MAX_SLOT_SIZE = 65536;

/**
 * SO_RCVBUF asked for (the kernel caps it at net.core.rmem_max and doubles it): the default (~208 KiB,
 * about 170 loopback datagrams) overflows whenever the event loop pauses for a few milliseconds (GC, a
 * busy core), although the listener keeps up on average; 4 MiB rides out pauses of ~100 ms at 50,000/s.
 */
export const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

/** Longest delay a timer takes; longer deadlines are checked in steps of this. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Settings of the firefly plugin (its configuration section). */
export interface FireflyPluginOptions {
  /** IPv4 or IPv6 literal; `::` listens on both families. */
  bindAddress: string;
  /** UDP port; 0 picks a free one (tests). */
  bindPort: number;
  /** Largest datagram accepted, in bytes (at least 2048). */
  bufferSize: number;
  /** Seconds without a datagram after which a debug line says so; 0: never. */
  deadline: number;
  /** True: every datagram must start with a syslog header. False: the header is optional. */
  hasSyslogHeader: boolean;
  /** Address prefixes datagrams are taken from (default: loopback only). */
  allowedSources?: readonly string[];
  /** Datagrams per second per source address (0: no limit), and the burst a quiet source may send. */
  rateLimit?: number;
  rateBurst?: number;
}

/** Why a datagram gave no event: a parse reason, larger than `bufferSize`, or refused by the source gate. */
export type FireflyRejectReason = FireflyParseReason | "oversize" | "source-not-allowed" | "rate-limited";

/** Counters, for tests and diagnostics. */
export interface FireflyPluginStats {
  /** Datagrams received. */
  received: number;
  /** Events the core took. */
  accepted: number;
  /** Events the core refused (queue full, stopping). */
  refused: number;
  /** Valid fireflies whose missing or empty start-time was treated as unknown (flowd-go 2.4.2 ends). */
  repaired: number;
  /** Datagrams rejected, by reason. */
  rejected: Record<FireflyRejectReason, number>;
}

const log = logger("plugins", "firefly");

function emptyRejected(): Record<FireflyRejectReason, number> {
  return {
    "source-not-allowed": 0,
    "rate-limited": 0,
    "oversize": 0,
    "encoding": 0,
    "syslog-header": 0,
    "not-a-firefly": 0,
    "not-json": 0,
    "unsupported-version": 0,
    "schema": 0,
    "flow-event": 0,
  };
}

export class FireflyPlugin implements Plugin {
  readonly name = "firefly";
  readonly stats: FireflyPluginStats = {
    received: 0,
    accepted: 0,
    refused: 0,
    repaired: 0,
    rejected: emptyRejected(),
  };
  readonly #address: IpAddress;
  readonly #gate: SourceGate;
  readonly #rejectLogs = new Map<FireflyRejectReason, RateLimitedLog>();
  readonly #refuseLog = new RateLimitedLog();
  #socket: UdpBatchReceiver | undefined;
  #receiveErrorLog = new RateLimitedLog();
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #lastReceive = 0;

  constructor(private readonly opts: FireflyPluginOptions) {
    const address = IpAddress.tryParse(opts.bindAddress);
    if (address === undefined) {
      throw new ConfigError(`plugins.firefly.bindAddress "${opts.bindAddress}" is not an IP address`);
    }
    if (!Number.isInteger(opts.bufferSize) || opts.bufferSize < MIN_BUFFER_SIZE) {
      throw new ConfigError(
        `plugins.firefly.bufferSize ${opts.bufferSize} is too small: make it at least ${MIN_BUFFER_SIZE} bytes`,
      );
    }
    this.#address = address;
    const allowed = (opts.allowedSources ?? DEFAULT_ALLOWED_SOURCES).map((p) => {
      try {
        return parsePrefix(p);
      } catch (err) {
        throw new ConfigError(`plugins.firefly.allowedSources: ${errorMessage(err)}`);
      }
    });
    this.#gate = new SourceGate({
      allowed,
      ratePerSecond: opts.rateLimit ?? DEFAULT_RATE_LIMIT,
      burst: opts.rateBurst ?? DEFAULT_RATE_BURST,
    });
  }

  /** The port actually bound (useful with bindPort 0); only valid after start(). */
  get port(): number {
    if (this.#socket === undefined) throw new Error("the firefly plugin has not been started");
    return this.#socket.port;
  }

  start(sink: EventSink): Promise<void> {
    try {
      this.#listen(sink);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #listen(sink: EventSink): void {
    if (this.#socket !== undefined) throw new Error("the firefly plugin was already started");
    const where = joinHostPort(this.#address.toString(), this.opts.bindPort);
    const v6 = this.#address.family === "ipv6";
    // `::` also takes IPv4 (as IPv4-mapped senders), like the original's Go listener. Datagrams are read in
    // batches with recvmmsg (ffi/udp_batch.ts): node:dgram's event-loop turn and buffer per datagram cost
    // more than the whole firefly parse. A datagram longer than bufferSize arrives cut, with its real length,
    // and is rejected.
    let socket: UdpBatchReceiver;
    try {
      socket = UdpBatchReceiver.open({
        address: this.#address.toString(),
        port: this.opts.bindPort,
        v6Only: v6 && !this.#address.isUnspecified(),
        slotSize: Math.min(this.opts.bufferSize, MAX_SLOT_SIZE),
        receiveBufferBytes: RECEIVE_BUFFER_BYTES,
        onError: (message, err) =>
          this.#receiveErrorLog.run((suppressed) =>
            log.error(`error on the firefly socket: ${message}`, { err: errorMessage(err), suppressed })
          ),
      });
    } catch (err) {
      throw new StartupError(`firefly: cannot listen on ${where}/udp: ${errorMessage(err)}`, { cause: err });
    }
    socket.start((data, length, address, port) => this.#receive(data, length, address, port, sink));
    this.#socket = socket;
    log.info("listening for fireflies", {
      address: joinHostPort(this.#address.toString(), socket.port),
      bufferSize: this.opts.bufferSize,
      allowedSources: (this.opts.allowedSources ?? DEFAULT_ALLOWED_SOURCES).join(","),
    });
    if (!this.#gate.loopbackOnly) {
      log.warn("the firefly listener takes datagrams from other hosts: it relays what they claim", {
        allowedSources: (this.opts.allowedSources ?? DEFAULT_ALLOWED_SOURCES).join(","),
        hint: "allow only the hosts that send fireflies (their addresses or prefixes)",
      });
    }
    if (this.opts.deadline > 0) {
      this.#lastReceive = performance.now();
      this.#armIdleTimer();
    }
  }

  stop(): Promise<void> {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket === undefined) return Promise.resolve();
    return socket.close();
  }

  /** One datagram: `data` holds its first bufferSize bytes at most, `length` is its real size. */
  #receive(data: Uint8Array, length: number, address: string, port: number, sink: EventSink): void {
    this.stats.received++;
    if (this.opts.deadline > 0) this.#lastReceive = performance.now();
    const verdict = this.#gate.admit(address);
    if (verdict !== "pass") {
      const why = verdict === "not-allowed"
        ? "source address is not in allowedSources"
        : `source sends more than rateLimit (${this.opts.rateLimit ?? DEFAULT_RATE_LIMIT}/s)`;
      this.#reject(
        verdict === "not-allowed" ? "source-not-allowed" : "rate-limited",
        why,
        address,
        port,
        length,
      );
      return;
    }
    if (length > this.opts.bufferSize) {
      this.#reject(
        "oversize",
        `datagram of ${length} bytes is larger than bufferSize (${this.opts.bufferSize})`,
        address,
        port,
        length,
      );
      return;
    }
    let event: FlowEvent;
    try {
      // flowd-go 2.4.2 sends end fireflies with "start-time": "" and flowd omits it on ongoing ones:
      // accept them, and treat that start as unknown so the core can supply the one it saw.
      const parsed = parseFirefly(data, {
        hasSyslogHeader: this.opts.hasSyslogHeader,
        repairStartTime: true,
      });
      event = fireflyToFlowEvent(parsed.document);
      if (parsed.repairs) {
        this.stats.repaired++;
        const { startTime: _unknown, ...rest } = event;
        event = rest;
      }
    } catch (err) {
      if (!(err instanceof FireflyParseError)) throw err;
      this.#reject(err.reason, err.message, address, port, length);
      return;
    }
    const result = sink.emit(event);
    if (result.accepted) {
      this.stats.accepted++;
      log.debug("firefly received", () => ({ from: joinHostPort(address, port), flow: describeFlow(event) }));
    } else {
      this.stats.refused++;
      this.#refuseLog.run((suppressed) =>
        log.warn("flow event from a firefly was refused", {
          from: joinHostPort(address, port),
          reason: result.reason,
          flow: describeFlow(event),
          suppressed,
        })
      );
    }
  }

  /** Datagrams received, events taken and refused, and datagrams rejected by reason. */
  health(): HealthMetric[] {
    const out: HealthMetric[] = [
      {
        name: "flowd_firefly_listener_datagrams_total",
        help: "Datagrams the firefly listener received",
        type: "counter",
        value: this.stats.received,
      },
      {
        name: "flowd_firefly_listener_events_total",
        help: "Flow events the firefly listener produced, by outcome at the bus",
        type: "counter",
        labels: { outcome: "accepted" },
        value: this.stats.accepted,
      },
      {
        name: "flowd_firefly_listener_events_total",
        help: "Flow events the firefly listener produced, by outcome at the bus",
        type: "counter",
        labels: { outcome: "refused" },
        value: this.stats.refused,
      },
    ];
    for (const [reason, value] of Object.entries(this.stats.rejected)) {
      out.push({
        name: "flowd_firefly_listener_rejected_total",
        help: "Datagrams the firefly listener rejected, by reason",
        type: "counter",
        labels: { reason },
        value,
      });
    }
    return out;
  }

  #reject(reason: FireflyRejectReason, message: string, address: string, port: number, bytes: number): void {
    this.stats.rejected[reason]++;
    let limiter = this.#rejectLogs.get(reason);
    if (limiter === undefined) this.#rejectLogs.set(reason, limiter = new RateLimitedLog());
    limiter.run((suppressed) =>
      log.warn("ignoring a datagram that is not a valid firefly", {
        from: joinHostPort(address, port),
        reason,
        err: message,
        bytes,
        rejectedTotal: this.stats.rejected[reason],
        suppressed,
      })
    );
  }

  /** The original's read deadline only made an idle socket log at debug level; so does this. */
  #armIdleTimer(): void {
    const deadlineMs = this.opts.deadline * 1000;
    const due = this.#lastReceive + deadlineMs - performance.now();
    this.#idleTimer = setTimeout(() => {
      if (this.#socket === undefined) return;
      if (performance.now() - this.#lastReceive >= deadlineMs) {
        log.debug("no firefly received within the deadline", { deadlineSeconds: this.opts.deadline });
        this.#lastReceive = performance.now();
      }
      this.#armIdleTimer();
    }, Math.min(Math.max(due, 1), MAX_TIMER_MS));
  }
}
