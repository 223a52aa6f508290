/**
 * Backend `nats`: every flow event (start, end and, with `enrich`, ongoing samples) as the firefly JSON v1
 * document the firefly backend sends, published to JetStream on `<subjectPrefix>.<hostname>.<state>`.
 *
 * Nothing taken is lost: `handle` builds the document and appends it to the on-disk outbox (core/outbox.ts)
 * and returns; a publisher sends the outbox in order with at most `maxInFlight` waiting for the stream's
 * acknowledgement, and only an acknowledgement removes a message from it. Each message carries a
 * `Nats-Msg-Id` made from the event (host, state, 5-tuple, the document's time), so a message sent again
 * (after a timeout, an outage or a restart) is dropped by the stream's duplicate window. Marking never
 * waits on NATS: an unreachable cluster at start is only a warning (the outbox fills meanwhile); refused
 * credentials or TLS fail the start with a clear error.
 *
 * Publishes are plain core-NATS publishes with a reply subject on one wildcard subscription of ours,
 * the acknowledgement being JetStream's reply (`{stream, seq, duplicate}` or `{error}`): one timer checks
 * every in-flight message's deadline instead of a timer and an inbox per request.
 */
import { headers, type Msg, type NatsConnection, nuid, type Subscription } from "@nats-io/transport-node";
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import type { Backend, ComponentStatus, EnrichmentSample } from "../core/component.ts";
import { errorMessage, StartupError } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import type { HealthMetric } from "../core/health.ts";
import { logger, RateLimitedLog } from "../core/log.ts";
import { Outbox, type OutboxRecord } from "../core/outbox.ts";
import { type Micros, nowMicros } from "../core/time.ts";
import type { NatsBackendConfig } from "../config/schema.ts";
import {
  NatsConnectError,
  type NatsConnectionSettings,
  openNatsConnection,
  RetryPause,
} from "../net/nats_connection.ts";
import { buildFirefly, FireflyBuildError, serializeFirefly } from "../scitags/firefly.ts";
import { encodeEnrichment } from "../scitags/enrichment_json.ts";

/** What the backend is built from. */
export interface NatsBackendOptions {
  config: NatsBackendConfig;
  hostname: string;
  /** The outbox file, resolved against workDir. */
  outboxPath: string;
  /** The connection keys, file paths resolved against workDir. */
  connection: NatsConnectionSettings;
  appName: string;
  now?: () => Micros;
}

/** Counters, for status, metrics and tests. */
export interface NatsBackendStats {
  /** Messages the stream acknowledged as new. */
  acked: number;
  /** Messages the stream acknowledged as duplicates (a resend of one already stored). */
  duplicates: number;
  /** Publishes that failed (error reply, no responders, timeout), each tried again. */
  failed: number;
  /** Events not published because the outbox was full. */
  refused: number;
  /** Events no firefly document describes (for example port-0 match-all events). */
  skipped: number;
  /** Messages recovered from the outbox at start. */
  recovered: number;
}

const log = logger("backends", "nats");
const encoder = new TextEncoder(), decoder = new TextDecoder();
/** Milliseconds between two checks of the in-flight deadlines. */
const DEADLINE_TICK_MS = 100;
/** Back-off after a failed publish before the outbox is sent again from its oldest message. */
const RETRY_MIN_MS = 200, RETRY_MAX_MS = 5000;
/** Duplicate window of a stream this backend creates (the server default). */
const DUPLICATE_WINDOW_NS = 120e9;
/** Latencies kept for the percentiles. */
const LATENCY_SAMPLES = 2048;

/** An outbox payload: subject, message id and body, newline-separated (neither header has a newline). */
function packMessage(subject: string, id: string, body: string): Uint8Array {
  return encoder.encode(`${subject}\n${id}\n${body}`);
}

/** A message ready to publish: its outbox sequence number and its parts. */
interface Outgoing {
  seq: number;
  subject: string;
  id: string;
  body: Uint8Array;
}

/** The parts of an outbox record (after a restart or a failure; new events keep theirs from the start). */
function unpackMessage(record: OutboxRecord): Outgoing {
  const payload = record.payload;
  const a = payload.indexOf(10), b = payload.indexOf(10, a + 1);
  return {
    seq: record.seq,
    subject: decoder.decode(payload.subarray(0, a)),
    id: decoder.decode(payload.subarray(a + 1, b)),
    body: payload.subarray(b + 1),
  };
}

interface InFlight {
  message: Outgoing;
  sentAt: number;
}

/** The nats backend. */
export class NatsBackend implements Backend {
  readonly name = "nats";
  readonly stats: NatsBackendStats = {
    acked: 0,
    duplicates: 0,
    failed: 0,
    refused: 0,
    skipped: 0,
    recovered: 0,
  };
  #outbox: Outbox | undefined;
  #nc: NatsConnection | undefined;
  #sub: Subscription | undefined;
  #replyPrefix = "";
  /** Every unacknowledged message in order; those before #sendHead were sent (or are acknowledged). */
  #queue: Outgoing[] = [];
  #sendHead = 0;
  readonly #inFlight = new Map<number, InFlight>();
  /** Set after a failure: nothing new is sent until the in-flight settle and the back-off passed. */
  #blockedUntil = 0;
  #blocked = false;
  #retryMs = RETRY_MIN_MS;
  #timer: ReturnType<typeof setInterval> | undefined;
  #connectLoop: Promise<void> | undefined;
  #stopping = false;
  /** Ends the wait between two connection tries (stop does not sit out the pause). */
  readonly #retryPause = new RetryPause();
  /** False between a disconnect and the reconnect (publishes then wait in the outbox). */
  #connected = false;
  #lastError: string | undefined;
  readonly #latencies = new Float64Array(LATENCY_SAMPLES);
  #latencyCount = 0;
  readonly #failLog = new RateLimitedLog();
  readonly #refuseLog = new RateLimitedLog();
  readonly #skipLog = new RateLimitedLog();
  readonly #writeLog = new RateLimitedLog();
  readonly #connectLog = new RateLimitedLog();
  readonly #now: () => Micros;
  readonly #subjectBase: string;

  constructor(private readonly opts: NatsBackendOptions) {
    this.#now = opts.now ?? nowMicros;
    // A host name's dots would add subject tokens: `<prefix>.<host>.<state>` keeps exactly three parts.
    this.#subjectBase = `${opts.config.subjectPrefix}.${subjectToken(opts.hostname)}`;
  }

  async start(): Promise<void> {
    let opened;
    try {
      opened = Outbox.open(this.opts.outboxPath, this.opts.config.outboxMaxBytes);
    } catch (err) {
      const why = errorMessage(err);
      throw new StartupError(`backends.nats: cannot open the outbox ${this.opts.outboxPath}: ${why}`, {
        cause: err,
      });
    }
    const { outbox, report } = opened;
    this.#outbox = outbox;
    outbox.onWriteError = (message) =>
      this.#writeLog.run((suppressed) =>
        log.error("cannot write the outbox; events not yet written are held in memory and still published", {
          path: this.opts.outboxPath,
          err: message,
          suppressed,
        })
      );
    this.stats.recovered = report.recovered;
    if (report.cutBytes > 0) {
      log.warn("outbox had a damaged tail; cut it", {
        path: this.opts.outboxPath,
        bytes: report.cutBytes,
        why: report.cutReason ?? "",
      });
    }
    if (report.recovered > 0) {
      log.info("outbox holds events not yet acknowledged; sending them first", {
        events: report.recovered,
        path: this.opts.outboxPath,
      });
    }
    for (const r of outbox.unacked()) this.#queue.push(unpackMessage(r));
    try {
      await this.#connect();
    } catch (err) {
      if (!(err instanceof NatsConnectError) || err.kind !== "unreachable") {
        outbox.close();
        this.#outbox = undefined;
        throw err;
      }
      this.#lastError = err.message;
      log.warn("NATS unreachable at start; events wait in the outbox until it answers", { err: err.message });
      this.#connectLoop = this.#keepConnecting();
    }
    this.#timer = setInterval(() => this.#tick(), DEADLINE_TICK_MS);
  }

  /** Connects, checks (or creates) the stream, and subscribes to our acknowledgements. */
  async #connect(): Promise<void> {
    const nc = await openNatsConnection(
      this.opts.connection,
      `flowd-go ${this.opts.hostname}`,
      log,
      "backends.nats",
      (up) => {
        this.#connected = up;
        if (up) this.#pump();
      },
    );
    try {
      await this.#ensureStream(nc);
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
    this.#replyPrefix = `_INBOX.flowd.${nuid.next()}`;
    this.#sub = nc.subscribe(`${this.#replyPrefix}.*`, { callback: (err, msg) => this.#onReply(err, msg) });
    this.#nc = nc;
    this.#connected = true;
    this.#lastError = undefined;
    this.#pump();
  }

  async #keepConnecting(): Promise<void> {
    while (!this.#stopping && !this.#nc) {
      await this.#retryPause.wait();
      if (this.#stopping) return;
      try {
        await this.#connect();
        log.info("NATS reachable now; sending the outbox", { depth: this.#outbox?.depth ?? 0 });
      } catch (err) {
        this.#lastError = errorMessage(err);
        if (err instanceof NatsConnectError && err.kind === "unreachable") {
          log.debug("NATS still unreachable", { err: this.#lastError });
        } else {
          // Reached, but refused (credentials changed, stream missing): say so, the outbox fills meanwhile.
          this.#connectLog.run((suppressed) =>
            log.error("NATS reached but not usable; events wait in the outbox", {
              err: this.#lastError,
              suppressed,
            })
          );
        }
      }
    }
  }

  async #ensureStream(nc: NatsConnection): Promise<void> {
    const c = this.opts.config;
    const probe = `${this.#subjectBase}.start`;
    let found: string | undefined;
    let jsm: JetStreamManager | undefined;
    try {
      jsm = await jetstreamManager(nc, { timeout: c.connectTimeout * 1000 });
      found = await jsm.streams.find(probe);
    } catch (err) {
      if (!/no stream matches/i.test(errorMessage(err))) {
        // A cluster electing its leaders (after a restart) does not answer yet: wait it out like an
        // unreachable one, events meanwhile in the outbox.
        throw new NatsConnectError(
          `backends.nats: JetStream does not answer (${errorMessage(err)})`,
          "unreachable",
          { cause: err },
        );
      }
    }
    if (found === c.stream) return;
    if (found !== undefined) {
      throw new StartupError(
        `backends.nats: subject ${probe} belongs to stream ${found}, not ${c.stream}: set stream: ${found} ` +
          `or change subjectPrefix`,
      );
    }
    if (!c.createStream) {
      throw new StartupError(
        `backends.nats: no stream ${c.stream} takes subject ${probe}: create it (subjects ${c.subjectPrefix}.>) ` +
          `or set createStream: true`,
      );
    }
    // The lookup's manager; made here only if creating it was what answered "no stream matches".
    jsm ??= await jetstreamManager(nc, { timeout: c.connectTimeout * 1000, checkAPI: false });
    try {
      await jsm.streams.add({
        name: c.stream,
        subjects: [`${c.subjectPrefix}.>`],
        num_replicas: c.replicas,
        duplicate_window: DUPLICATE_WINDOW_NS,
      });
      log.info("created stream", {
        stream: c.stream,
        subjects: `${c.subjectPrefix}.>`,
        replicas: c.replicas,
      });
    } catch (err) {
      throw new StartupError(`backends.nats: cannot create stream ${c.stream}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }

  handle(event: FlowEvent): void {
    const now = this.#now();
    let doc;
    try {
      doc = buildFirefly(event, { currentTime: now });
    } catch (err) {
      if (!(err instanceof FireflyBuildError)) throw err;
      this.stats.skipped++;
      this.#skipLog.run((suppressed) =>
        log.info("no firefly document for this event", {
          flow: describeFlow(event),
          reason: err.message,
          suppressed,
        })
      );
      return;
    }
    const time = event.state === "end" ? event.endTime ?? now : event.startTime ?? now;
    this.#take(event, serializeFirefly(doc), time);
  }

  enrich(sample: EnrichmentSample): void {
    const c = this.opts.config;
    if (!c.enrich || !this.#outbox) return;
    const event: FlowEvent = { ...sample.flow, state: "ongoing" };
    const part = encodeEnrichment(sample.info, c.enrichmentMode);
    let doc;
    try {
      doc = buildFirefly(event, {
        currentTime: sample.time,
        ...(sample.flavour === "Ebpf" ? { skOps: part } : { netlink: part }),
      });
    } catch (err) {
      if (!(err instanceof FireflyBuildError)) throw err;
      this.stats.skipped++;
      return;
    }
    this.#take(event, serializeFirefly(doc), sample.time);
  }

  /** Into the outbox (refused when full: counted and logged, never waited for), then to the publisher. */
  #take(event: FlowEvent, body: string, time: Micros): void {
    const outbox = this.#outbox;
    if (!outbox) return;
    const subject = `${this.#subjectBase}.${event.state}`, id = messageId(this.opts.hostname, event, time);
    const payload = packMessage(subject, id, body);
    const record = outbox.append(payload);
    if (!record) {
      this.stats.refused++;
      this.#refuseLog.run((suppressed) =>
        log.error("outbox full: event not published", {
          flow: describeFlow(event),
          outboxBytes: outbox.pendingBytes,
          outboxMaxBytes: this.opts.config.outboxMaxBytes,
          refusedTotal: this.stats.refused,
          suppressed,
        })
      );
      return;
    }
    const bodyAt = payload.indexOf(10, payload.indexOf(10) + 1) + 1;
    this.#queue.push({ seq: record.seq, subject, id, body: payload.subarray(bodyAt) });
    if (this.#inFlight.size < this.opts.config.maxInFlight) this.#pump();
  }

  /** Sends queued records while there is room in flight and no failure is being waited out. */
  #pump(): void {
    const nc = this.#nc, outbox = this.#outbox;
    if (!nc || !outbox || this.#stopping || this.#blocked || !this.#connected || nc.isClosed()) return;
    const max = this.opts.config.maxInFlight;
    const now = performance.now();
    while (this.#inFlight.size < max && this.#sendHead < this.#queue.length) {
      const m = this.#queue[this.#sendHead++]!;
      if (!outbox.isPending(m.seq) || this.#inFlight.has(m.seq)) continue;
      const h = headers();
      h.set("Nats-Msg-Id", m.id);
      try {
        nc.publish(m.subject, m.body, { reply: `${this.#replyPrefix}.${m.seq}`, headers: h });
      } catch (err) {
        this.#sendHead--;
        this.#fail(`cannot publish: ${errorMessage(err)}`);
        return;
      }
      this.#inFlight.set(m.seq, { message: m, sentAt: now });
    }
    if (this.#sendHead > 65_536 && this.#sendHead * 2 > this.#queue.length) {
      // Drop what is acknowledged; what is in flight stays (a resend after a failure starts from it).
      const kept: Outgoing[] = [];
      for (let i = 0; i < this.#sendHead; i++) {
        const m = this.#queue[i]!;
        if (outbox.isPending(m.seq)) kept.push(m);
      }
      const head = kept.length;
      for (let i = this.#sendHead; i < this.#queue.length; i++) kept.push(this.#queue[i]!);
      this.#queue = kept;
      this.#sendHead = head;
    }
  }

  #onReply(err: Error | null, msg: Msg): void {
    if (err) return;
    const seq = Number(msg.subject.slice(this.#replyPrefix.length + 1));
    const flight = this.#inFlight.get(seq);
    if (!flight) return; // timed out already: a resend is on its way and will be deduplicated
    this.#inFlight.delete(seq);
    let reply: { seq?: number; duplicate?: boolean; error?: { description?: string; code?: number } } = {};
    const status = msg.headers?.code;
    if (status !== undefined && status >= 300) {
      this.#fail(
        status === 503
          ? "no stream answered (no responders)"
          : `status ${status} ${msg.headers?.description}`,
      );
      return;
    }
    const text = decoder.decode(msg.data);
    try {
      // The usual reply, {"stream":..,"seq":N} or with "duplicate":true, read without a JSON parse.
      reply = text.startsWith('{"stream":') && !text.includes('"error"')
        ? { seq: 1, duplicate: text.includes('"duplicate":true') }
        : JSON.parse(text);
    } catch {
      this.#fail(`unreadable acknowledgement: ${text.slice(0, 120)}`);
      return;
    }
    if (reply.error || typeof reply.seq !== "number") {
      this.#fail(`the stream refused the message: ${reply.error?.description ?? "no sequence in the reply"}`);
      return;
    }
    if (reply.duplicate) this.stats.duplicates++;
    else this.stats.acked++;
    this.#latencies[this.#latencyCount++ % LATENCY_SAMPLES] = performance.now() - flight.sentAt;
    this.#outbox?.ack(seq);
    this.#retryMs = RETRY_MIN_MS;
    if (!this.#blocked) this.#pump();
    else if (this.#inFlight.size === 0) this.#tick();
  }

  /**
   * A publish failed: stop sending new ones; once everything in flight has settled and the back-off has
   * passed, everything unacknowledged is sent again from the oldest (order kept, copies deduplicated).
   */
  #fail(reason: string): void {
    this.stats.failed++;
    this.#lastError = reason;
    this.#failLog.run((suppressed) =>
      log.warn("publish failed; the outbox will be sent again", {
        reason,
        outboxDepth: this.#outbox?.depth ?? 0,
        suppressed,
      })
    );
    if (!this.#blocked) {
      this.#blocked = true;
      this.#blockedUntil = performance.now() + this.#retryMs;
      this.#retryMs = Math.min(this.#retryMs * 2, RETRY_MAX_MS);
    }
  }

  /** Deadlines of the in-flight publishes, and the end of a back-off. */
  #tick(): void {
    const now = performance.now();
    const timeoutMs = this.opts.config.ackTimeout * 1000;
    for (const [seq, f] of this.#inFlight) {
      if (now - f.sentAt < timeoutMs) break; // in send order: the rest are younger
      this.#inFlight.delete(seq);
      this.#fail(`no acknowledgement within ${this.opts.config.ackTimeout} s`);
    }
    if (this.#blocked && this.#inFlight.size === 0 && now >= this.#blockedUntil) {
      this.#blocked = false;
      // The queue holds every unacknowledged message in order (see #pump): no decoding of the outbox.
      const outbox = this.#outbox;
      this.#queue = outbox ? this.#queue.filter((m) => outbox.isPending(m.seq)) : [];
      this.#sendHead = 0;
      this.#pump();
    }
  }

  #percentile(p: number): number {
    const n = Math.min(this.#latencyCount, LATENCY_SAMPLES);
    if (n === 0) return 0;
    const sorted = this.#latencies.slice(0, n).sort();
    return sorted[Math.min(n - 1, Math.floor(p * n))]!;
  }

  status(): ComponentStatus {
    const details = {
      connected: this.#nc !== undefined && this.#connected && !this.#nc.isClosed(),
      server: this.#nc?.getServer() ?? "",
      stream: this.opts.config.stream,
      subjects: `${this.#subjectBase}.<state>`,
      outboxDepth: this.#outbox?.depth ?? 0,
      outboxBytes: this.#outbox?.pendingBytes ?? 0,
      inFlight: this.#inFlight.size,
      ...this.stats,
      outboxWriteErrors: this.#outbox?.writeErrors ?? 0,
      publishLatencyMs: { p50: round(this.#percentile(0.5)), p99: round(this.#percentile(0.99)) },
      ...(this.#lastError ? { lastError: this.#lastError } : {}),
    };
    if (!this.#nc) {
      return {
        state: "degraded",
        reason: this.#lastError ?? "not connected to NATS (events wait in the outbox)",
        details,
      };
    }
    return { state: "running", details };
  }

  health(): HealthMetric[] {
    const st = this.stats;
    const m = (
      name: string,
      help: string,
      type: "counter" | "gauge",
      value: number,
      labels?: Record<string, string>,
    ) => ({
      name,
      help,
      type,
      value,
      ...(labels ? { labels } : {}),
    });
    return [
      m("flowd_nats_acked_total", "Flow events the stream acknowledged", "counter", st.acked),
      m(
        "flowd_nats_duplicates_total",
        "Resent flow events the stream dropped as duplicates",
        "counter",
        st.duplicates,
      ),
      m(
        "flowd_nats_publish_failed_total",
        "Publishes that failed and were tried again",
        "counter",
        st.failed,
      ),
      m("flowd_nats_not_published_total", "Flow events not published, by reason", "counter", st.refused, {
        reason: "outbox-full",
      }),
      m("flowd_nats_not_published_total", "Flow events not published, by reason", "counter", st.skipped, {
        reason: "no-firefly",
      }),
      m(
        "flowd_nats_outbox_depth",
        "Flow events in the outbox waiting for their acknowledgement",
        "gauge",
        this.#outbox?.depth ?? 0,
      ),
      m(
        "flowd_nats_outbox_bytes",
        "Bytes of the documents in the outbox",
        "gauge",
        this.#outbox?.pendingBytes ?? 0,
      ),
      m(
        "flowd_nats_outbox_write_failed_total",
        "Outbox writes that failed (disk full, I/O error)",
        "counter",
        this.#outbox?.writeErrors ?? 0,
      ),
      m("flowd_nats_in_flight", "Publishes waiting for their acknowledgement", "gauge", this.#inFlight.size),
      m(
        "flowd_nats_publish_latency_seconds",
        "Publish to acknowledgement, recent publishes",
        "gauge",
        this.#percentile(0.5) / 1000,
        {
          quantile: "0.5",
        },
      ),
      m(
        "flowd_nats_publish_latency_seconds",
        "Publish to acknowledgement, recent publishes",
        "gauge",
        this.#percentile(0.99) / 1000,
        {
          quantile: "0.99",
        },
      ),
    ];
  }

  async stop(): Promise<void> {
    // What is in flight gets a moment for its acknowledgement; the rest stays in the outbox for next time.
    const deadline = performance.now() + 2000;
    while (this.#inFlight.size > 0 && this.#nc && !this.#nc.isClosed() && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    this.#stopping = true;
    this.#retryPause.wake();
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#connectLoop;
    this.#sub?.unsubscribe();
    await this.#nc?.close().catch(() => {});
    this.#nc = undefined;
    this.#outbox?.close();
    this.#outbox = undefined;
  }
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;

/** A host name as one subject token: characters a token may not hold become "_". */
export function subjectToken(hostname: string): string {
  return hostname.replace(/[^A-Za-z0-9_\-]/g, "_") || "_";
}

/**
 * The message id: host, state, protocol, both endpoints and the event's time in microseconds. The same
 * event sent twice has the same id; two events of one flow differ in state or time.
 */
export function messageId(hostname: string, event: FlowEvent, time: Micros): string {
  return hostname + "|" + event.state + "|" + event.protocol + "|" + event.src.address.toString() + "|" +
    event.src.port + "|" + event.dst.address.toString() + "|" + event.dst.port + "|" + time;
}
