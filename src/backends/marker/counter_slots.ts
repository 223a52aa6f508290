/**
 * Which slots of the marker's per-CPU counter array are free. Every marked flow owns one slot for its
 * life; the program adds each marked packet to it.
 *
 * Slots never used come first (they are still zero in the kernel). After that, freed slots are handed out
 * in the order they were freed, so a slot is reused as late as possible: a packet that found the old flow
 * just before its entry was deleted may still add to the slot for a moment, and by reuse time it has long
 * finished. A reused slot must be zeroed before its new flow is written (`take` says so).
 *
 * No allocation per flow: the free slots wait in one ring of 32-bit integers.
 */

/** A slot handed out, and whether it held an earlier flow's counts. */
export interface TakenSlot {
  readonly slot: number;
  /** True when the slot was used before: zero it in the kernel before the flow that takes it is written. */
  readonly reused: boolean;
}

export class CounterSlots {
  /** Slots [#handedOut, capacity) have never been handed out. */
  #handedOut = 0;
  readonly #freed: Uint32Array;
  #head = 0;
  #count = 0;

  /** @param capacity slots 0 .. capacity-1 (the counter array's size) */
  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) {
      throw new RangeError(`capacity ${capacity} is not a count`);
    }
    this.#freed = new Uint32Array(capacity);
  }

  /**
   * On a fresh instance: marks these slots as owned (flows adopted from an earlier run); the others below the
   * highest become free, to be zeroed when taken (they may hold that run's counts).
   */
  claim(slots: Iterable<number>): void {
    if (this.#handedOut !== 0) throw new Error("slots can only be claimed before any is taken");
    const owned = new Set<number>();
    let highest = -1;
    for (const slot of slots) {
      if (!Number.isInteger(slot) || slot < 0 || slot >= this.capacity) {
        throw new RangeError(`counter slot ${slot} is not below ${this.capacity}`);
      }
      owned.add(slot);
      if (slot > highest) highest = slot;
    }
    this.#handedOut = highest + 1;
    for (let slot = 0; slot < this.#handedOut; slot++) {
      if (!owned.has(slot)) this.#freed[(this.#head + this.#count++) % this.capacity] = slot;
    }
  }

  /** Slots currently owned by flows. */
  get inUse(): number {
    return this.#handedOut - this.#count;
  }

  /** A free slot, or undefined when every slot is owned. */
  take(): TakenSlot | undefined {
    if (this.#handedOut < this.capacity) return { slot: this.#handedOut++, reused: false };
    if (this.#count === 0) return undefined;
    const slot = this.#freed[this.#head]!;
    this.#head = (this.#head + 1) % this.capacity;
    this.#count--;
    return { slot, reused: true };
  }

  /** Gives a slot back (its flow's entry is gone from the kernel map). */
  release(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.#handedOut) {
      throw new RangeError(`counter slot ${slot} was never handed out`);
    }
    if (this.#count === this.capacity) throw new RangeError(`counter slot ${slot} released twice`);
    this.#freed[(this.#head + this.#count) % this.capacity] = slot;
    this.#count++;
  }
}
