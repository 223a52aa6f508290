/**
 * A small seeded generator (sfc32) and the mutations the fuzz tests share: the same seed always gives
 * the same inputs, so a failure is reproduced with FLOWD_GO_FUZZ_SEED.
 */

/** Seeded pseudo-random numbers. */
export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(readonly seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.next();
  }

  /** A 32-bit unsigned integer. */
  next(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** An integer in 0..n-1. */
  below(n: number): number {
    return this.next() % n;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }
}

/** The seed of a run: FLOWD_GO_FUZZ_SEED, else a fixed default so CI is reproducible. */
export function fuzzSeed(): number {
  const text = Deno.env.get("FLOWD_GO_FUZZ_SEED");
  return text ? Number(text) >>> 0 : 20261202;
}

/** Inputs per entry point: FLOWD_GO_FUZZ_ITERATIONS, else `fallback`. */
export function fuzzIterations(fallback: number): number {
  const text = Deno.env.get("FLOWD_GO_FUZZ_ITERATIONS");
  return text ? Math.max(1, Number(text)) : fallback;
}

/** Values that break parsers: extremes, wrong types' texts, huge and odd strings. */
export const NASTY_TOKENS: readonly string[] = [
  "0",
  "-1",
  "65536",
  "4294967296",
  "18446744073709551616",
  "1e309",
  "NaN",
  "Infinity",
  "-0",
  "0x1f",
  "+010000-01-01T23:58:00Z",
  "9999-12-31T23:59:59-05:00",
  "0000-01-01T00:00:00+01:00",
  "null",
  "true",
  "[]",
  "{}",
  "\u0000",
  "\r",
  "\u202e",
  "é",
  "😀",
  "::",
  "::ffff:127.0.0.1",
  "fe80::1%eth0",
  "start",
  "end",
  "ongoing",
];

/** A long string, 10-60 KB (repeats of a character from the generator). */
export function hugeString(r: Prng): string {
  return r.pick(["a", "9", "é", " ", ":", "{"]).repeat(10_000 + r.below(50_000));
}

/** One byte- or token-level mutation of a text. */
export function mutateText(r: Prng, text: string, others: readonly string[]): string {
  switch (r.below(9)) {
    case 0: { // flip a character
      const i = r.below(Math.max(text.length, 1));
      return text.slice(0, i) + String.fromCharCode(r.below(128)) + text.slice(i + 1);
    }
    case 1: { // delete a span
      const i = r.below(Math.max(text.length, 1));
      return text.slice(0, i) + text.slice(i + 1 + r.below(8));
    }
    case 2: { // duplicate a span
      const i = r.below(Math.max(text.length, 1)), n = 1 + r.below(12);
      return text.slice(0, i + n) + text.slice(i, i + n) + text.slice(i + n);
    }
    case 3: { // splice with another input
      const o = r.pick(others);
      return text.slice(0, r.below(text.length + 1)) + o.slice(r.below(o.length + 1));
    }
    case 4: { // replace a token by a nasty one
      const tokens = text.split(/(\s+|[",:{}\[\]])/);
      tokens[r.below(tokens.length)] = r.pick(NASTY_TOKENS);
      return tokens.join("");
    }
    case 5: // a huge token
      return text.replace(/[0-9a-z]+/i, hugeString(r));
    case 6: // truncated
      return text.slice(0, r.below(text.length + 1));
    case 7: // control characters and odd whitespace
      return text.replace(/ /g, () => r.pick([" ", "\t", "\r", "\u00a0", "  ", "\v"]));
    default: // two mutations
      return mutateText(r, mutateText(r, text, others), others);
  }
}
