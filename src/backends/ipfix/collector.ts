/**
 * One collector and its transport session. UDP (RFC 7011 §10.3): datagrams through a nonblocking
 * socket whose outcome is known at once, templates resent every `templateRefresh` seconds and every
 * `templateRefreshPackets` messages. TCP (§10.4): one connection, templates sent once at its start,
 * reconnected with a growing delay after a failure; messages meanwhile are dropped and counted (an
 * unreachable collector must never hold the daemon up). Never throws from `send`.
 */
import { type UdpSender } from "../../../ffi/udp_batch.ts";
import { errorMessage } from "../../core/errors.ts";
import { logger, RateLimitedLog } from "../../core/log.ts";
import type { IpAddress } from "../../net/ip.ts";
import { joinHostPort } from "../../net/ip.ts";
import { ExportSession, type PendingRecord } from "./session.ts";

const log = logger("backends", "ipfix");

/** What a collector counts about itself (status and metrics). */
export interface CollectorStats {
  recordsSent: number;
  recordsFailed: number;
  messagesSent: number;
  messagesFailed: number;
  templatesSent: number;
}

export interface CollectorTiming {
  /** UDP: seconds between template resends. */
  templateRefreshS: number;
  /** UDP: messages between template resends (0: by time only). */
  templateRefreshPackets: number;
}

/** A collector as the backend drives it. */
export interface Collector {
  readonly label: string;
  readonly transport: "udp" | "tcp";
  readonly stats: CollectorStats;
  /** Sends the records (templates first when due); `force` resends templates with nothing else. */
  send(records: readonly PendingRecord[], nowMs: number): void;
  /** UDP: templates alone when the refresh time passed without records. */
  tick(nowMs: number): void;
  /** Whether its transport can carry messages now (TCP connected). */
  readonly connected: boolean;
  /** Writes what is queued and closes. */
  close(): Promise<void>;
}

function newStats(): CollectorStats {
  return { recordsSent: 0, recordsFailed: 0, messagesSent: 0, messagesFailed: 0, templatesSent: 0 };
}

export class UdpCollector implements Collector {
  readonly transport = "udp";
  readonly stats = newStats();
  readonly label: string;
  #lastTemplatesMs = -Infinity;
  #messagesSinceTemplates = 0;
  #failLog = new RateLimitedLog();

  constructor(
    private readonly address: IpAddress,
    private readonly port: number,
    private readonly sender: UdpSender,
    private readonly session: ExportSession,
    private readonly timing: CollectorTiming,
  ) {
    this.label = `udp:${joinHostPort(address.toString(), port)}`;
  }

  get connected(): boolean {
    return true;
  }

  #templatesDue(nowMs: number): boolean {
    const t = this.timing;
    return nowMs - this.#lastTemplatesMs >= t.templateRefreshS * 1000 ||
      (t.templateRefreshPackets > 0 && this.#messagesSinceTemplates >= t.templateRefreshPackets);
  }

  send(records: readonly PendingRecord[], nowMs: number): void {
    const withTemplates = this.#templatesDue(nowMs);
    if (records.length === 0 && !withTemplates) return;
    const messages = this.session.pack(records, withTemplates, Math.floor(nowMs / 1000));
    const results = this.sender.send(
      messages.map((m) => ({ data: m.bytes, address: this.address.toString(), port: this.port })),
    );
    results.forEach((rc, i) => {
      const m = messages[i]!;
      if (rc === m.bytes.length) {
        this.stats.messagesSent++;
        this.stats.recordsSent += m.records;
        if (i === 0 && withTemplates) {
          this.stats.templatesSent++;
          this.#lastTemplatesMs = nowMs;
          this.#messagesSinceTemplates = 0;
        }
        this.#messagesSinceTemplates++;
      } else {
        this.stats.messagesFailed++;
        this.stats.recordsFailed += m.records;
        this.#failLog.run((suppressed) =>
          log.warn("an IPFIX message was not sent", { collector: this.label, rc, suppressed })
        );
      }
    });
  }

  tick(nowMs: number): void {
    if (this.#templatesDue(nowMs)) this.send([], nowMs);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Longest wait between two connection attempts to a TCP collector. */
const MAX_RECONNECT_MS = 30_000;
/** Messages waiting for a slow TCP write before newer ones are dropped. */
const MAX_QUEUED_MESSAGES = 256;

export class TcpCollector implements Collector {
  readonly transport = "tcp";
  readonly stats = newStats();
  readonly label: string;
  #conn: Deno.TcpConn | undefined;
  #connecting = false;
  #closed = false;
  #delayMs = 500;
  #nextAttemptMs = 0;
  #queue: { bytes: Uint8Array; records: number; templates: boolean }[] = [];
  #writing: Promise<void> | undefined;
  #failLog = new RateLimitedLog();

  constructor(
    private readonly address: IpAddress,
    private readonly port: number,
    private readonly session: ExportSession,
  ) {
    this.label = `tcp:${joinHostPort(address.toString(), port)}`;
  }

  get connected(): boolean {
    return this.#conn !== undefined;
  }

  /** Connects now (start-up tries once; a failure is logged and retried later). */
  async connect(): Promise<void> {
    if (this.#conn || this.#connecting || this.#closed) return;
    this.#connecting = true;
    try {
      const conn = await Deno.connect({
        hostname: this.address.toString(),
        port: this.port,
        transport: "tcp",
      });
      if (this.#closed) {
        conn.close();
        return;
      }
      conn.setNoDelay(true);
      this.#conn = conn;
      this.#delayMs = 500;
      // A new transport session: sequence from 0, templates before anything else.
      this.session.reset();
      const [m] = this.session.pack([], true, Math.floor(Date.now() / 1000));
      this.#enqueue({ ...m!, templates: true });
      log.info("connected to the IPFIX collector", { collector: this.label });
    } catch (err) {
      this.#nextAttemptMs = Date.now() + this.#delayMs;
      this.#failLog.run((suppressed) =>
        log.warn("cannot connect to the IPFIX collector; retrying", {
          collector: this.label,
          err: errorMessage(err),
          retryInMs: this.#delayMs,
          suppressed,
        })
      );
      this.#delayMs = Math.min(this.#delayMs * 2, MAX_RECONNECT_MS);
    } finally {
      this.#connecting = false;
    }
  }

  send(records: readonly PendingRecord[], nowMs: number): void {
    if (records.length === 0) return;
    if (!this.#conn) {
      this.stats.messagesFailed++;
      this.stats.recordsFailed += records.length;
      this.tick(nowMs);
      return;
    }
    for (const m of this.session.pack(records, false, Math.floor(nowMs / 1000))) {
      this.#enqueue({ ...m, templates: false });
    }
  }

  tick(nowMs: number): void {
    if (!this.#conn && !this.#connecting && !this.#closed && nowMs >= this.#nextAttemptMs) {
      void this.connect();
    }
  }

  #enqueue(m: { bytes: Uint8Array; records: number; templates: boolean }): void {
    if (this.#queue.length >= MAX_QUEUED_MESSAGES) {
      this.stats.messagesFailed++;
      this.stats.recordsFailed += m.records;
      return;
    }
    this.#queue.push(m);
    this.#writing ??= this.#drain();
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0 && this.#conn) {
        const m = this.#queue.shift()!;
        try {
          let off = 0;
          while (off < m.bytes.length) off += await this.#conn.write(m.bytes.subarray(off));
          this.stats.messagesSent++;
          this.stats.recordsSent += m.records;
          if (m.templates) this.stats.templatesSent++;
        } catch (err) {
          this.stats.messagesFailed++;
          this.stats.recordsFailed += m.records;
          for (const q of this.#queue) {
            this.stats.messagesFailed++;
            this.stats.recordsFailed += q.records;
          }
          this.#queue = [];
          this.#drop(err);
        }
      }
    } finally {
      this.#writing = undefined;
    }
  }

  #drop(err: unknown): void {
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
    this.#conn = undefined;
    this.#nextAttemptMs = Date.now() + this.#delayMs;
    log.warn("lost the connection to the IPFIX collector; reconnecting", {
      collector: this.label,
      err: errorMessage(err),
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#writing;
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
    this.#conn = undefined;
  }
}
