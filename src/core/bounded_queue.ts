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
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.capacity;
    this.#size--;
    return item;
  }

  /** Refuses further offers; the consumer still gets what is queued, then undefined. */
  close(): void {
    this.#closed = true;
    this.#wake();
  }

  /** Drops everything still queued; returns how many items were dropped. */
  clear(): number {
    const n = this.#size;
    this.#items.fill(undefined);
    this.#head = 0;
    this.#size = 0;
    return n;
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
}
