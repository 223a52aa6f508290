/**
 * Drains a BPF ring buffer without blocking the event loop: a libc poll on the ring's epoll fd waits on
 * a pool thread, then `consume()` runs on the JS thread, where the record handler is called. The ring is
 * also drained whenever a wait times out, so programs may skip wake-ups for records that can wait (the
 * skops program does: it is read in batches, at most `sliceMs` late).
 */
import type { RingBuffer } from "../../ffi/libbpf.ts";
import { waitReadable } from "../../ffi/libc_socket.ts";
import { errorMessage } from "../core/errors.ts";
import { type Logger, RateLimitedLog } from "../core/log.ts";

/** Records handled per consume() at most: bounds how long one drain holds the event loop (a few ms). */
const BUDGET = 2048;

/** Longest single wait by default: bounds how late an unannounced record is read, and how long stop() waits. */
export const DEFAULT_SLICE_MS = 100;

/** Reads records from a ring buffer until stopped. */
export class RingReader {
  #running = false;
  #loop: Promise<void> = Promise.resolve();
  #consumed = 0;
  readonly #failLog = new RateLimitedLog();

  constructor(
    private readonly ring: RingBuffer,
    private readonly log: Logger,
    private readonly what: string,
    private readonly sliceMs = DEFAULT_SLICE_MS,
  ) {}

  /** Records handed to the handler so far. */
  get consumed(): number {
    return this.#consumed;
  }

  /** Starts the read loop. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  /** Stops the loop and waits for the poll in flight (at most one slice); the ring stays open. */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#loop;
  }

  /**
   * Consumes what is waiting right now, up to `budget` records (also used to drain the ring before it is
   * freed, with no limit). Returns how many records were handled.
   */
  drain(budget = Infinity): number {
    try {
      const n = this.ring.consume(budget);
      this.#consumed += n;
      return n;
    } catch (err) {
      this.#failLog.run((suppressed) =>
        this.log.error(`failed to handle a ${this.what} record`, { err: errorMessage(err), suppressed })
      );
      return 0;
    }
  }

  async #run(): Promise<void> {
    while (this.#running) {
      await waitReadable(this.ring.epollFd, this.sliceMs);
      // Readable or not: records written without a wake-up are collected here. A full budget means more
      // is waiting: let timers and I/O run, then go on.
      while (this.#running && this.drain(BUDGET) === BUDGET) await new Promise((r) => setTimeout(r, 0));
    }
  }
}
