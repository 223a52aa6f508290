import assert from "node:assert/strict";
import { FIRST_WRITABLE_MICROS, formatMicrosUtc, LAST_WRITABLE_MICROS } from "../../src/core/time.ts";

/** The text straight from Date, without the cache of recent seconds. */
function reference(us: number): string {
  const iso = new Date(Math.floor(us / 1000)).toISOString();
  const frac = String(((us % 1_000_000) + 1_000_000) % 1_000_000).padStart(6, "0");
  return `${iso.slice(0, 19)}.${frac}+00:00`;
}

Deno.test("formatMicrosUtc keeps recent seconds' text and writes what Date would, whatever the order", () => {
  let seed = 4242;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return Math.floor(seed / 65536) % n;
  };
  const base = [1_740_819_600_000_000, 1_796_300_000_000_000, -1_000_000, 0, FIRST_WRITABLE_MICROS];
  for (let i = 0; i < 20_000; i++) {
    // Mostly two or three seconds taking turns (a flow's time and now), sometimes anything writable.
    const us = rand(10) === 0
      ? FIRST_WRITABLE_MICROS + rand(2 ** 30) * rand(2 ** 22)
      : base[rand(3) + (rand(4) === 0 ? 2 : 0)]! + rand(3) * 1_000_000 + rand(1_000_000);
    if (us > LAST_WRITABLE_MICROS) continue;
    assert.equal(formatMicrosUtc(us), reference(us), String(us));
  }
  assert.equal(formatMicrosUtc(253_402_300_799_000_000), "9999-12-31T23:59:59.000000+00:00");
  assert.equal(formatMicrosUtc(FIRST_WRITABLE_MICROS), "0000-01-01T00:00:00.000000+00:00");
  assert.equal(formatMicrosUtc(-1), "1969-12-31T23:59:59.999999+00:00");
  assert.throws(() => formatMicrosUtc(LAST_WRITABLE_MICROS * 2), RangeError);
});
