/**
 * Drains a BPF ring buffer without blocking the event loop: a libc poll on the ring's epoll fd waits on
 * a pool thread, then `consume()` runs on the JS thread, where the record handler is called.
 */
import type { RingBuffer } from "../../ffi/libbpf.ts";
import { waitReadable } from "../../ffi/libc_socket.ts";
import { errorMessage } from "../core/errors.ts";
import { type Logger, RateLimitedLog } from "../core/log.ts";

/** Longest single wait: bounds how long `stop()` waits for the poll in flight. */
const POLL_SLICE_MS = 100;

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

  /** Consumes what is waiting right now (also used to drain the ring before it is freed). */
  drain(): number {
    try {
      const n = this.ring.consume();
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
      const readable = await waitReadable(this.ring.epollFd, POLL_SLICE_MS);
      if (!this.#running) break;
      if (readable) this.drain();
    }
  }
}
