/**
 * Backend `firefly`: a UDP firefly (syslog header + firefly JSON v1) for every flow start and end,
 * sent to the flow's peer at `destinationPort` and, when `sendToCollector`, to a collector. With
 * `enrich: true`, every enrichment sample also becomes an "ongoing" firefly carrying the TCP statistics
 * (under `netlink` or `skOps`, encoded as `enrichmentMode` says).
 *
 * Two long-lived sockets (IPv4 and IPv6) serve every send; the original dialled a socket per firefly.
 * Sends go straight to the kernel (ffi/udp_batch: nonblocking sockets, one sendmmsg for a firefly's peer
 * and collector copies), so `handle` never waits on a send: a datagram the kernel refuses, a full socket
 * buffer included, is logged (rate-limited) and counted at once. Ongoing fireflies are built and sent in the
 * background, with a bound on how many may wait (more are dropped, counted).
 */
import { errnoText, type OutgoingDatagram, UdpSender } from "../../ffi/udp_batch.ts";
import type { Backend, EnrichmentSample } from "../core/component.ts";
import { errorMessage } from "../core/errors.ts";
import { describeFlow, type FlowEvent } from "../core/flow_event.ts";
import { debugLogging, logger, RateLimitedLog } from "../core/log.ts";
import { type Micros, nowMicros } from "../core/time.ts";
import { IpAddress, joinHostPort } from "../net/ip.ts";
import {
  buildFirefly,
  FireflyBuildError,
  type FireflyDocument,
  fireflyText,
  serializeFirefly,
  validateFireflyDocument,
} from "../scitags/firefly.ts";
import { BackgroundResolver } from "../net/background_resolver.ts";
import type { HealthMetric } from "../core/health.ts";
import { encodeEnrichment } from "../scitags/enrichment_json.ts";
import { syslogHeaderFor } from "../scitags/syslog.ts";
import type { FireflyBackendConfig } from "../config/schema.ts";
import {
  describeFailures,
  discoverPublicMapping,
  type LocalAddresses,
  mappingSettings,
  type PublicAddressMap,
  type PublicMappingResult,
} from "../net/public_address.ts";

/** What the backend needs: its configuration section and the names that go into the header. */
export interface FireflyBackendOptions {
  config: FireflyBackendConfig;
  hostname: string;
  appName: string;
  /** Clock, replaceable in tests. */
  now?: () => Micros;
  /** Where public-address mapping finds the local addresses; default: the default-route interfaces. */
  localAddresses?: () => Promise<LocalAddresses>;
}

/** Counters, for tests and diagnostics. */
export interface FireflyBackendStats {
  sent: number;
  failed: number;
  skipped: number;
  /** Ongoing fireflies built from enrichment samples. */
  ongoing: number;
  /** Ongoing fireflies dropped because too many sends were in flight. */
  ongoingDropped: number;
  /** Fireflies larger than one 1500-byte IPv6 packet can carry (they are sent fragmented). */
  oversize: number;
  /** Fireflies whose source address was replaced by its public address. */
  rewritten: number;
  /** Fireflies our own validator refused (never sent: a bug or an input that slipped through). */
  invalid: number;
  /** Fireflies not sent to the collector because its host name has no address yet. */
  collectorUnresolved: number;
}

const log = logger("backends", "firefly");
const encoder = new TextEncoder();

/** How long start-up gives the collector's first lookup before going on without it. */
const COLLECTOR_FIRST_LOOKUP_MS = 500;
/** Ongoing fireflies being sent at once, at most. */
const MAX_ONGOING_IN_FLIGHT = 1024;
/**
 * Fireflies are sent in batches, one sendmmsg per socket per event-loop turn: a burst of events costs a
 * system call per batch instead of one each. At most this many wait; a full batch is sent at once.
 */
const MAX_SEND_BATCH = 64;
/**
 * Fireflies waiting for their batch are encoded into one buffer, off V8's heap (TextEncoder.encode's new
 * buffer per firefly cost 1.15 µs for 292 characters, encodeInto here 0.12). Larger ones get their own.
 */
const ARENA_BYTES = 128 * 1024;
/** UDP payload that fits a 1500-byte IPv6 packet (40-byte IPv6 and 8-byte UDP headers). */
export const UNFRAGMENTED_PAYLOAD = 1452;

/** The firefly backend: start, end and (with enrich) ongoing fireflies over UDP. */
export class FireflyBackend implements Backend {
  readonly name = "firefly";
  readonly stats: FireflyBackendStats = {
    sent: 0,
    failed: 0,
    skipped: 0,
    ongoing: 0,
    ongoingDropped: 0,
    oversize: 0,
    rewritten: 0,
    invalid: 0,
    collectorUnresolved: 0,
  };
  /** The public-address map in use, when `stun` is configured (after start). */
  publicAddresses: PublicAddressMap | undefined;
  #socket4: UdpSender | undefined;
  #socket6: UdpSender | undefined;
  /** The collector: a literal address, or a host name kept resolved in the background. */
  #collector: IpAddress | BackgroundResolver | undefined;
  #invalidLog = new RateLimitedLog();
  #unresolvedLog = new RateLimitedLog();
  #sendFailLog = new RateLimitedLog();
  #dnsFailLog = new RateLimitedLog();
  #skipLog = new RateLimitedLog();
  #ongoingLog = new RateLimitedLog();
  #oversizeLog = new RateLimitedLog();
  /** Ongoing fireflies waiting to be sent, one per event-loop turn (as node:dgram's sends went). */
  readonly #ongoingQueue: { family: "ipv4" | "ipv6"; send: () => void }[] = [];
  #ongoingLoop: Promise<void> | undefined;
  /** Fireflies waiting for the next batch, per family, and the timer that sends them. */
  readonly #pending = { ipv4: [] as PendingSend[], ipv6: [] as PendingSend[] };
  #pendingCount = 0;
  readonly #arena = new Uint8Array(ARENA_BYTES);
  #syslogHeader: ((timestamp: Micros) => string) | undefined;
  #arenaUsed = 0;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #now: () => Micros;

  constructor(private readonly opts: FireflyBackendOptions) {
    this.#now = opts.now ?? nowMicros;
  }

  async start(): Promise<void> {
    this.#socket4 = UdpSender.open("ipv4");
    try {
      this.#socket6 = UdpSender.open("ipv6");
    } catch (err) {
      log.warn("no IPv6 socket for fireflies; IPv6 peers will be skipped", { err: errorMessage(err) });
    }
    const c = this.opts.config;
    if (c.stun) {
      // Before any plugin starts, so no firefly leaves with an address that should have been mapped.
      const result = await discoverPublicMapping(mappingSettings(c.stun), {
        localAddresses: this.opts.localAddresses,
      });
      this.publicAddresses = result.map;
      reportMapping(result);
    }
    if (c.sendToCollector) {
      const literal = IpAddress.tryParse(c.collectorAddress);
      if (literal) {
        this.#collector = literal;
      } else {
        // Never waits on DNS beyond a moment: peers' fireflies must not depend on the collector's name.
        const resolver = new BackgroundResolver(
          c.collectorAddress,
          undefined,
          undefined,
          (err, have) =>
            this.#dnsFailLog.run((suppressed) =>
              log.warn("cannot resolve the collector address", {
                host: c.collectorAddress,
                err,
                using: have ? "the last address it had" : "none: fireflies to the collector are dropped",
                suppressed,
              })
            ),
        );
        this.#collector = resolver;
        await resolver.start(COLLECTOR_FIRST_LOOKUP_MS);
      }
      log.info("sending fireflies to the collector", {
        collector: joinHostPort(c.collectorAddress, c.collectorPort),
      });
    }
  }

  handle(event: FlowEvent): void {
    this.#handle(event);
  }

  #handle(event: FlowEvent): void {
    const now = this.#now();
    let doc;
    const publicSource = this.publicAddresses?.lookup(event.src.address);
    if (publicSource === undefined) {
      // The common firefly, written straight from the event (valid by construction).
      const json = fireflyText(event, now);
      if (json !== undefined) return this.#sendJson(event, json, now);
    }
    try {
      doc = buildFirefly(
        event,
        publicSource ? { currentTime: now, sourceOverride: publicSource } : { currentTime: now },
      );
    } catch (err) {
      if (!(err instanceof FireflyBuildError)) throw err;
      // For example the port-0 events of perfSONAR's match-all marking: no valid firefly describes them.
      this.stats.skipped++;
      this.#skipLog.run((suppressed) =>
        log.info("no firefly for this event", { flow: describeFlow(event), reason: err.message, suppressed })
      );
      return;
    }
    if (publicSource) {
      this.stats.rewritten++;
      log.debug("source address rewritten", {
        private: event.src.address.toString(),
        public: publicSource.toString(),
      });
    }
    this.#sendDocument(event, doc, now);
  }

  /**
   * With `enrich: true`, sends an ongoing firefly for the sample: the flow's start event with state
   * `ongoing`, its start time, the sample's time as `current-time`, and the statistics under `netlink`
   * or `skOps`. Returns at once; the send completes in the background.
   */
  enrich(sample: EnrichmentSample): void {
    const c = this.opts.config;
    if (!c.enrich || this.#socket4 === undefined) return;
    if (this.#ongoingQueue.length >= MAX_ONGOING_IN_FLIGHT) {
      this.stats.ongoingDropped++;
      this.#ongoingLog.run((suppressed) =>
        log.warn("too many fireflies in flight, ongoing firefly dropped", {
          flow: describeFlow(sample.flow),
          inFlight: this.#ongoingQueue.length,
          suppressed,
        })
      );
      return;
    }
    const part = encodeEnrichment(sample.info, c.enrichmentMode);
    const event: FlowEvent = { ...sample.flow, state: "ongoing" };
    const publicSource = this.publicAddresses?.lookup(event.src.address);
    let doc;
    try {
      doc = buildFirefly(event, {
        currentTime: sample.time,
        ...(publicSource ? { sourceOverride: publicSource } : {}),
        ...(sample.flavour === "Ebpf" ? { skOps: part } : { netlink: part }),
      });
    } catch (err) {
      if (!(err instanceof FireflyBuildError)) throw err;
      this.stats.skipped++;
      return;
    }
    this.stats.ongoing++;
    this.#ongoingQueue.push({
      family: event.dst.address.family,
      send: () => this.#sendDocument(event, doc, sample.time),
    });
    this.#ongoingLoop ??= this.#sendOngoing();
  }

  /**
   * Sends the queued ongoing fireflies, one per event-loop turn, and waits (a while) for a full socket
   * buffer to drain: a burst of samples neither holds the loop nor overruns the socket.
   */
  async #sendOngoing(): Promise<void> {
    try {
      while (this.#ongoingQueue.length > 0) {
        const next = this.#ongoingQueue[0]!;
        await (next.family === "ipv6" ? this.#socket6 ?? this.#socket4 : this.#socket4)?.writable(100);
        this.#ongoingQueue.shift();
        try {
          next.send();
          this.flush(); // at once: the wait above is for this one's room in the socket buffer
        } catch (err) {
          this.stats.failed++;
          log.error("cannot send an ongoing firefly", { err: errorMessage(err) });
        }
      }
    } finally {
      this.#ongoingLoop = undefined;
    }
  }

  #sendDocument(event: FlowEvent, doc: FireflyDocument, now: Micros): void {
    // The last word before the wire: a document our own validator refuses is never sent.
    const checked = validateFireflyDocument(doc);
    if (!checked.ok) {
      this.stats.invalid++;
      this.#invalidLog.run((suppressed) =>
        log.error("refusing to send a firefly that fails the schema", {
          flow: describeFlow(event),
          errors: checked.errors.slice(0, 3).join("; "),
          invalidTotal: this.stats.invalid,
          suppressed,
        })
      );
      return;
    }
    this.#sendJson(event, serializeFirefly(doc), now);
  }

  /** Sends a firefly's JSON (the event's, checked) to its destinations, with the syslog header if configured. */
  #sendJson(event: FlowEvent, json: string, now: Micros): void {
    const c = this.opts.config;
    const payload = c.prependSyslog
      ? (this.#syslogHeader ??= syslogHeaderFor(this.opts.hostname, this.opts.appName))(now) + json
      : json;
    const bytes = this.#encode(payload);
    if (bytes.length > UNFRAGMENTED_PAYLOAD) {
      this.stats.oversize++;
      this.#oversizeLog.run((suppressed) =>
        log.info("firefly larger than a 1500-byte packet carries; it will be fragmented", {
          bytes: bytes.length,
          state: event.state,
          hint: event.state === "ongoing" ? "enrichmentMode lean keeps them small" : undefined,
          suppressed,
        })
      );
    }
    const sends: Send[] = [];
    if (c.sendToDestination) {
      if (event.dst.address.isUnspecified() || c.destinationPort === 0) {
        this.stats.skipped++;
        log.debug("no peer to send the firefly to", () => ({ flow: describeFlow(event) }));
      } else {
        sends.push({ to: event.dst.address, port: c.destinationPort, what: "peer" });
      }
    }
    if (c.sendToCollector) {
      const collector = this.#collector instanceof BackgroundResolver
        ? this.#collector.current()
        : this.#collector;
      if (collector) {
        sends.push({ to: collector, port: c.collectorPort, what: "collector" });
      } else {
        this.stats.collectorUnresolved++;
        this.#unresolvedLog.run((suppressed) =>
          log.warn("no address for the collector yet; firefly not sent to it", {
            host: c.collectorAddress,
            droppedTotal: this.stats.collectorUnresolved,
            suppressed,
          })
        );
      }
    }
    this.#send(bytes, sends);
    if (debugLogging()) log.debug("firefly sent", { flow: describeFlow(event), bytes: bytes.length });
  }

  /** Fireflies sent, failed, skipped, refused by the validator, and not sent for want of a collector address. */
  health(): HealthMetric[] {
    const st = this.stats;
    const counter = (name: string, help: string, value: number, labels?: Record<string, string>) => ({
      name,
      help,
      type: "counter" as const,
      value,
      ...(labels ? { labels } : {}),
    });
    return [
      counter("flowd_firefly_sent_total", "Firefly datagrams sent (to peers and the collector)", st.sent),
      counter("flowd_firefly_send_failed_total", "Firefly datagrams the socket refused", st.failed),
      counter("flowd_firefly_not_sent_total", "Fireflies not sent, by reason", st.skipped, {
        reason: "no-firefly",
      }),
      counter("flowd_firefly_not_sent_total", "Fireflies not sent, by reason", st.invalid, {
        reason: "invalid",
      }),
      counter("flowd_firefly_not_sent_total", "Fireflies not sent, by reason", st.ongoingDropped, {
        reason: "too-many-in-flight",
      }),
      counter("flowd_firefly_not_sent_total", "Fireflies not sent, by reason", st.collectorUnresolved, {
        reason: "collector-unresolved",
      }),
    ];
  }

  async stop(): Promise<void> {
    if (this.#collector instanceof BackgroundResolver) this.#collector.stop();
    // Ongoing fireflies already queued go out first (each send completes or fails at once).
    await this.#ongoingLoop;
    this.flush();
    this.#socket4?.close();
    this.#socket6?.close();
    this.#socket4 = this.#socket6 = undefined;
  }

  /** Queues one firefly for its destinations; the batch goes out at the next turn or when it is full. */
  #send(bytes: Uint8Array, sends: readonly Send[]): void {
    for (const s of sends) {
      this.#pending[s.to.family].push({ data: bytes, address: s.to.toString(), port: s.port, what: s.what });
      this.#pendingCount++;
    }
    if (this.#pendingCount >= MAX_SEND_BATCH) this.flush();
    else if (this.#pendingCount > 0) this.#flushTimer ??= setTimeout(() => this.flush(), 0);
  }

  /** A payload's UTF-8 bytes, in the batch buffer when they surely fit (3 bytes per UTF-16 unit at most). */
  #encode(text: string): Uint8Array {
    const worst = text.length * 3;
    if (worst > ARENA_BYTES) return encoder.encode(text);
    if (worst > ARENA_BYTES - this.#arenaUsed) this.flush(); // the batch so far goes, the buffer is free
    const start = this.#arenaUsed;
    const { written } = encoder.encodeInto(text, this.#arena.subarray(start));
    this.#arenaUsed = start + written;
    return this.#arena.subarray(start, start + written);
  }

  /** Sends what waits: one sendmmsg per socket, each datagram's outcome counted. */
  flush(): void {
    if (this.#flushTimer !== undefined) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#pendingCount = 0;
    // sendmmsg copies every datagram before it returns: the buffer is free again below.
    this.#arenaUsed = 0;
    for (const family of ["ipv4", "ipv6"] as const) {
      const group = this.#pending[family];
      if (group.length === 0) continue;
      this.#pending[family] = [];
      const socket = family === "ipv4" ? this.#socket4 : this.#socket6;
      if (!socket) {
        this.stats.failed += group.length;
        continue;
      }
      const results = socket.send(group);
      for (let i = 0; i < results.length; i++) {
        const rc = results[i]!;
        if (rc >= 0) {
          this.stats.sent++;
          continue;
        }
        this.stats.failed++;
        const s = group[i]!;
        this.#sendFailLog.run((suppressed) =>
          log.error("cannot send a firefly", {
            to: joinHostPort(s.address, s.port),
            target: s.what,
            err: errnoText(-rc),
            suppressed,
          })
        );
      }
    }
  }
}

/** A datagram waiting for the next batch, and what it was for (in the error when it fails). */
interface PendingSend extends OutgoingDatagram {
  what: Send["what"];
}

/** One destination of a firefly. */
interface Send {
  to: IpAddress;
  port: number;
  what: "peer" | "collector";
}

/** Logs what mapping found: a line per mapped address, and one warning for everything it could not map. */
function reportMapping(result: PublicMappingResult): void {
  for (const r of result.reports) {
    if (r.outcome === "mapped") {
      log.info("fireflies will carry a public source address", {
        private: r.local.toString(),
        public: r.public!.toString(),
        method: r.method!,
        via: r.source!,
        ...(r.interface ? { interface: r.interface } : {}),
      });
    }
    for (const a of r.attempts) {
      if (a.found === undefined) {
        log.debug("public address query failed", { local: r.local.toString(), err: a.error });
      }
    }
  }
  const unmapped = result.reports.filter((r) => r.outcome === "unmapped");
  const problems: string[] = [];
  if (result.localError) problems.push(result.localError);
  else if (result.interfaces.length === 0) problems.push("no default route, so no local address to map");
  if (unmapped.length) problems.push(...unmapped.map(describeFailures));
  if (problems.length) {
    const text = problems.join(" | ");
    log.warn("public-address mapping incomplete: fireflies keep these source addresses as they are", {
      unmapped: unmapped.map((r) => r.local.toString()).join(",") || "-",
      mapped: result.map.size,
      why: text.length > 600 ? text.slice(0, 600) + "..." : text,
      hint: "flowd-go stun sample shows every query",
    });
  }
}
