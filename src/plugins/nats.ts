/**
 * Plugin `nats`: flow events announced centrally, read from a durable JetStream consumer on `subject`
 * (default `scitags.control.<hostname>`). A message is a `POST /flow` body of the REST API or a firefly
 * JSON v1 document (told apart by its `flow-lifecycle` key), parsed by the same code as those inputs.
 *
 * A message is acknowledged only once the bus took its event; while the bus has no room the plugin
 * waits, and an event the bus refuses is handed back for a later delivery. A message that is no flow
 * event is terminated (never delivered again) with its reason logged. A repeated start of an open flow
 * is passed on like any start, which the backends take as a refresh.
 */
import type { JsMsg } from "@nats-io/jetstream";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ComponentStatus, EventSink, Plugin } from "../core/component.ts";
import { errorMessage, StartupError } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import type { HealthMetric } from "../core/health.ts";
import { logger, RateLimitedLog } from "../core/log.ts";
import { nowMicros } from "../core/time.ts";
import type { NatsPluginConfig } from "../config/schema.ts";
import {
  NatsConnectError,
  type NatsConnectionSettings,
  openNatsConnection,
  RetryPause,
} from "../net/nats_connection.ts";
import { fireflyToFlowEvent, parseFirefly } from "../scitags/firefly.ts";
import { type ApiIdResolver, parseApiFlowBody } from "./api_json.ts";
import { subjectToken } from "../backends/nats.ts";

/** What the plugin is built from. */
export interface NatsPluginOptions {
  config: NatsPluginConfig;
  hostname: string;
  connection: NatsConnectionSettings;
  application: string;
  resolveId?: ApiIdResolver;
}

/** Counters, for status, metrics and tests. */
export interface NatsPluginStats {
  /** Messages whose event the bus took (and which were acknowledged). */
  accepted: number;
  /** Messages terminated because they are no flow event. */
  terminated: number;
  /** Events the bus refused; their messages were handed back for a later delivery. */
  refused: number;
}

const log = logger("plugins", "nats");
/** Delay before the server delivers a refused message again. */
const REFUSED_REDELIVERY_MS = 1000;

/** The nats plugin. */
export class NatsPlugin implements Plugin {
  readonly name = "nats";
  readonly stats: NatsPluginStats = { accepted: 0, terminated: 0, refused: 0 };
  readonly subject: string;
  readonly durable: string;
  #nc: NatsConnection | undefined;
  #sink: EventSink | undefined;
  #stopping = false;
  /** Ends the wait between two connection tries (stop does not sit out the pause). */
  readonly #retryPause = new RetryPause();
  #loop: Promise<void> | undefined;
  #stopConsuming: (() => void) | undefined;
  #lastError: string | undefined;
  /** False between a disconnect and the reconnect. */
  #connected = false;
  readonly #termLog = new RateLimitedLog();
  readonly #refuseLog = new RateLimitedLog();

  constructor(private readonly opts: NatsPluginOptions) {
    const token = subjectToken(opts.hostname);
    this.subject = opts.config.subject ?? `scitags.control.${token}`;
    this.durable = opts.config.durable ?? `flowd-${token}`;
  }

  async start(sink: EventSink): Promise<void> {
    this.#sink = sink;
    try {
      await this.#connect();
    } catch (err) {
      if (!(err instanceof NatsConnectError) || err.kind !== "unreachable") throw err;
      this.#lastError = err.message;
      log.warn("NATS unreachable at start; trying on", { err: err.message });
      this.#loop = this.#keepConnecting();
    }
  }

  async #keepConnecting(): Promise<void> {
    while (!this.#stopping && !this.#nc) {
      await this.#retryPause.wait();
      if (this.#stopping) return;
      try {
        await this.#connect();
      } catch (err) {
        this.#lastError = errorMessage(err);
      }
    }
    await this.#consuming;
  }

  #consuming: Promise<void> | undefined;

  async #connect(): Promise<void> {
    const c = this.opts.config;
    const nc = await openNatsConnection(
      this.opts.connection,
      `flowd-go ${this.opts.hostname}`,
      log,
      "plugins.nats",
      (up) => this.#connected = up,
    );
    try {
      await this.#ensureConsumer(nc);
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
    this.#nc = nc;
    this.#connected = true;
    this.#lastError = undefined;
    const consumer = await jetstream(nc).consumers.get(c.stream, this.durable);
    const messages = await consumer.consume({ max_messages: 256 });
    this.#stopConsuming = () => messages.stop();
    log.info("reading flow events", { subject: this.subject, stream: c.stream, durable: this.durable });
    this.#consuming = (async () => {
      for await (const m of messages) {
        // Stopping: what was delivered but not handled goes back at once, not after ackWait.
        if (this.#stopping) m.nak();
        else await this.#handle(m);
      }
    })().catch((err) => {
      this.#lastError = errorMessage(err);
      log.error("reading flow events stopped", { err: this.#lastError });
    });
  }

  async #ensureConsumer(nc: NatsConnection): Promise<void> {
    const c = this.opts.config;
    const jsm = await jetstreamManager(nc, { timeout: c.connectTimeout * 1000 });
    let found: string | undefined;
    try {
      found = await jsm.streams.find(this.subject);
    } catch (err) {
      if (!/no stream matches/i.test(errorMessage(err))) {
        throw new StartupError(`plugins.nats: cannot look up streams: ${errorMessage(err)}`, { cause: err });
      }
    }
    if (found !== undefined && found !== c.stream) {
      throw new StartupError(
        `plugins.nats: subject ${this.subject} belongs to stream ${found}, not ${c.stream}`,
      );
    }
    if (found === undefined) {
      if (!c.createStream) {
        throw new StartupError(
          `plugins.nats: no stream ${c.stream} takes subject ${this.subject}: create it or set createStream: true`,
        );
      }
      try {
        // On the subject's parent (scitags.control.> for the default): one stream serves the whole fleet,
        // and the next daemon's identical request is a no-op rather than a conflict.
        const cut = this.subject.lastIndexOf(".");
        const subjects = [cut > 0 ? `${this.subject.slice(0, cut)}.>` : this.subject];
        await jsm.streams.add({ name: c.stream, subjects, num_replicas: c.replicas });
      } catch (err) {
        throw new StartupError(`plugins.nats: cannot create stream ${c.stream}: ${errorMessage(err)}`, {
          cause: err,
        });
      }
    }
    try {
      await jsm.consumers.add(c.stream, {
        durable_name: this.durable,
        filter_subject: this.subject,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: c.ackWait * 1e9,
      });
    } catch (err) {
      // It exists with other settings (ackWait changed, say): read on with what it has rather than fail.
      const existing = await jsm.consumers.info(c.stream, this.durable).catch(() => undefined);
      if (!existing) {
        throw new StartupError(`plugins.nats: cannot make consumer ${this.durable}: ${errorMessage(err)}`, {
          cause: err,
        });
      }
      log.warn("the durable consumer exists with other settings; using it as it is", {
        durable: this.durable,
        filterSubject: existing.config.filter_subject ?? "",
        err: errorMessage(err),
      });
    }
  }

  /** One message: parse, wait for room, emit, and ack (or terminate, or hand back). */
  async #handle(m: JsMsg): Promise<void> {
    let event: FlowEvent;
    try {
      event = this.#parse(m.data);
    } catch (err) {
      // Whatever the parsers refuse (ApiFlowError, FireflyParseError, SyntaxError, ...) is the message's fault.
      // No reason on the wire: nats-server 2.9 ignores a "+TERM <reason>" and would deliver it again.
      m.term();
      this.stats.terminated++;
      this.#termLog.run((suppressed) =>
        log.warn("message is no flow event; terminated", {
          subject: m.subject,
          seq: m.seq,
          reason: errorMessage(err),
          suppressed,
        })
      );
      return;
    }
    const sink = this.#sink!;
    const room = sink.whenRoom?.();
    if (room) await room;
    const result = sink.emit(event);
    if (result.accepted) {
      m.ack();
      this.stats.accepted++;
      log.debug("flow event from NATS", () => ({ flow: describeFlow(event), seq: m.seq }));
      return;
    }
    m.nak(REFUSED_REDELIVERY_MS);
    this.stats.refused++;
    this.#refuseLog.run((suppressed) =>
      log.warn("flow event from NATS refused; it will be delivered again", {
        flow: describeFlow(event),
        reason: result.reason,
        suppressed,
      })
    );
  }

  /** A firefly document (it has `flow-lifecycle`) or a POST /flow body. */
  #parse(data: Uint8Array): FlowEvent {
    const text = new TextDecoder("utf-8", { fatal: false }).decode(data);
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === "object" && "flow-lifecycle" in value) {
      return fireflyToFlowEvent(parseFirefly(text, { hasSyslogHeader: false }).document);
    }
    return parseApiFlowBody(value, nowMicros(), this.opts.application, this.opts.resolveId);
  }

  status(): ComponentStatus {
    const details = {
      subject: this.subject,
      stream: this.opts.config.stream,
      durable: this.durable,
      connected: this.#nc !== undefined && this.#connected && !this.#nc.isClosed(),
      ...this.stats,
      ...(this.#lastError ? { lastError: this.#lastError } : {}),
    };
    return details.connected ? { state: "running", details } : {
      state: "degraded",
      reason: this.#lastError ?? "not connected to NATS",
      details,
    };
  }

  health(): HealthMetric[] {
    const m = (outcome: string, value: number): HealthMetric => ({
      name: "flowd_nats_control_messages_total",
      help: "Control messages read from NATS, by outcome",
      type: "counter",
      labels: { outcome },
      value,
    });
    return [
      m("accepted", this.stats.accepted),
      m("terminated", this.stats.terminated),
      m("refused", this.stats.refused),
    ];
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#retryPause.wake();
    this.#stopConsuming?.();
    await this.#loop;
    await this.#consuming;
    await this.#nc?.close().catch(() => {});
    this.#nc = undefined;
  }
}
