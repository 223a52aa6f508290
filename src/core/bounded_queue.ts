/**
 * A FIFO with a fixed capacity and one async consumer: `offer` never blocks (it refuses when full),
 * `take` waits for the next item or returns undefined once the queue is closed and empty.
 */
export class BoundedQueue<T> {
  #items: (T | undefined)[];
  #head = 0;
  #size = 0;
  #closed = false;
  #waiter: (() => void) | undefined;
  /** Producers waiting for the queue to shrink to `#roomAt` items or fewer. */
  #roomWaiters: (() => void)[] = [];
  #roomAt = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Queue capacity ${capacity} must be >= 1`);
    }
    this.#items = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.#size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** True when an offer would be refused for lack of space (closed queues report no lack of space). */
  get full(): boolean {
    return !this.#closed && this.#size === this.capacity;
  }

  /**
   * Resolves once the queue holds `level` items or fewer, or is closed: a producer that can pause (a FIFO
   * reader) waits on this instead of losing what it would offer.
   */
  whenAtMost(level: number): Promise<void> {
    if (this.#closed || this.#size <= level) return Promise.resolve();
    return new Promise((resolve) => {
      this.#roomAt = this.#roomWaiters.length === 0 ? level : Math.max(this.#roomAt, level);
      this.#roomWaiters.push(resolve);
    });
  }

  /** Appends an item; false when the queue is full or closed. */
  offer(item: T): boolean {
    if (this.#closed || this.#size === this.capacity) return false;
    this.#items[(this.#head + this.#size) % this.capacity] = item;
    this.#size++;
    this.#wake();
    return true;
  }

  /** The next item, waiting for one if needed; undefined when closed and drained. */
  async take(): Promise<T | undefined> {
    while (this.#size === 0) {
      if (this.#closed) return undefined;
      await new Promise<void>((resolve) => this.#waiter = resolve);
    }
    return this.poll();
  }

  /** The next item if one is waiting, else undefined at once: a consumer drains a burst without a promise each. */
  poll(): T | undefined {
    if (this.#size === 0) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.capacity;
    this.#size--;
    if (this.#roomWaiters.length > 0 && this.#size <= this.#roomAt) this.#wakeProducers();
    return item;
  }

  /** Refuses further offers; the consumer still gets what is queued, then undefined. */
  close(): void {
    this.#closed = true;
    this.#wake();
    this.#wakeProducers();
  }

  /** Drops everything still queued; returns how many items were dropped. */
  clear(): number {
    const n = this.#size;
    this.#items.fill(undefined);
    this.#head = 0;
    this.#size = 0;
    this.#wakeProducers();
    return n;
  }

  #wakeProducers(): void {
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const w of waiters) w();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
}
