/**
 * parseFireflyTime and parseRfc3339Micros (character scanners) against a reference built from a regular
 * expression and Date, on hand-picked edges and many generated and mutated texts: the same instant, or
 * both undefined.
 */
import assert from "node:assert/strict";
import { parseFireflyTime } from "../../src/scitags/firefly.ts";
import { isWritableTime, parseRfc3339Micros } from "../../src/core/time.ts";

const SHAPE =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/**
 * RFC 3339 with Z or an offset, a fraction truncated to µs; `firefly`: any fraction length, :60 only as
 * the last UTC minute; else at most 9 fraction digits and :60 read as :59 anywhere.
 */
function reference(text: string, firefly = true): number | undefined {
  const m = SHAPE.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac = "", z, sign, oh = "0", om = "0"] = m;
  if (!firefly && frac.length > 9) return undefined;
  const [year, month, day, hour, minute, second] = [y, mo, d, h, mi, s].map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 60) return undefined;
  if (!z && (Number(oh) > 23 || Number(om) > 59)) return undefined;
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  if (date.getUTCMonth() !== month - 1) return undefined; // the day does not exist in that month
  date.setUTCHours(hour, minute, Math.min(second, 59));
  const offsetMs = z ? 0 : (sign === "-" ? -1 : 1) * (Number(oh) * 60 + Number(om)) * 60_000;
  const us = (date.getTime() - offsetMs) * 1000 + Number((frac + "000000").slice(0, 6));
  if (!isWritableTime(us)) return undefined;
  if (firefly && second === 60) {
    const utc = new Date(Math.floor(us / 1000));
    if (utc.getUTCHours() !== 23 || utc.getUTCMinutes() !== 59) return undefined;
  }
  return us;
}

const EDGES = [
  "2025-03-01T09:00:00Z",
  "2025-03-01t09:00:00z",
  "2025-03-01 09:00:00.1+01:00",
  "2025-03-01T09:00:00.123456789012-11:30",
  "2024-02-29T00:00:00Z",
  "2025-02-29T00:00:00Z",
  "2100-02-29T00:00:00Z",
  "2000-02-29T00:00:00Z",
  "2016-12-31T23:59:60Z",
  "2016-12-31T23:59:60.5+00:00",
  "2016-12-31T22:59:60Z",
  "2017-01-01T00:59:60+01:00",
  "9999-12-31T23:59:59.999999Z",
  "9999-12-31T23:00:00-05:00",
  "0000-01-01T00:00:00Z",
  "0000-01-01T00:00:00+00:01",
  "0099-06-15T12:00:00Z",
  "2025-03-01T09:00:00.Z",
  "2025-03-01T09:00:00",
  "2025-03-01T09:00:00+0100",
  "2025-03-01T09:00:00+01:00 ",
  "2025-03-01T24:00:00Z",
  "2025-03-01T09:60:00Z",
  "2025-03-01T09:00:61Z",
  "2025-13-01T09:00:00Z",
  "2025-00-01T09:00:00Z",
  "2025-04-31T09:00:00Z",
  "2025-03-00T09:00:00Z",
  "2025-03-01T09:00:00+24:00",
  "2025-03-01T09:00:00+23:60",
  "2025-03-01T09:00:00Zz",
  "",
  "2025-03-01",
  "２025-03-01T09:00:00Z",
];

Deno.test("parseFireflyTime, parseRfc3339Micros: hand-picked edges agree with the reference", () => {
  for (const text of EDGES) {
    assert.equal(parseFireflyTime(text), reference(text), JSON.stringify(text));
    assert.equal(parseRfc3339Micros(text), reference(text, false), JSON.stringify(text));
  }
  // Not vacuous: the edges hold both accepted and refused times.
  assert.equal(parseFireflyTime("2016-12-31T23:59:60Z"), reference("2016-12-31T23:59:59Z"));
  assert.equal(parseFireflyTime("2025-02-29T00:00:00Z"), undefined);
  assert.equal(parseRfc3339Micros("2016-12-31T22:59:60Z"), reference("2016-12-31T22:59:59Z"));
  assert.equal(parseRfc3339Micros("2025-03-01T09:00:00.1234567890Z"), undefined);
  assert.notEqual(parseFireflyTime("2025-03-01T09:00:00.1234567890Z"), undefined);
});

/** A small deterministic generator (xorshift), so a failure can be replayed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

Deno.test("parseFireflyTime, parseRfc3339Micros: generated and mutated times agree with the reference", () => {
  const rnd = random(20261203);
  const int = (n: number) => Math.floor(rnd() * n);
  const pad = (v: number, w: number) => String(v).padStart(w, "0");
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const ALPHABET = "0123456789-:.TtZz+ xé\u0660";
  let accepted = 0, refused = 0;
  for (let i = 0; i < 200_000; i++) {
    const frac = pick(["", "", "." + String(int(10 ** 9)).slice(0, 1 + int(12)), "."]);
    const zone = pick(["Z", "z", "+00:00", `${pick(["+", "-"])}${pad(int(26), 2)}:${pad(int(62), 2)}`, ""]);
    let text = `${pad(pick([0, 1970, 2000, 2024, 2025, 2100, 9999, int(10000)]), 4)}-${pad(int(14), 2)}-` +
      `${pad(int(33), 2)}${pick(["T", "t", " "])}${pad(int(25), 2)}:${pad(int(61), 2)}:${pad(int(62), 2)}` +
      `${frac}${zone}`;
    const mutations = int(3);
    for (let k = 0; k < mutations; k++) {
      const at = int(text.length + 1);
      const op = int(3);
      if (op === 0) text = text.slice(0, at) + pick([...ALPHABET]) + text.slice(at + 1);
      else if (op === 1) text = text.slice(0, at) + text.slice(at + 1);
      else text = text.slice(0, at) + pick([...ALPHABET]) + text.slice(at);
    }
    const want = reference(text);
    assert.equal(parseFireflyTime(text), want, JSON.stringify(text));
    assert.equal(parseRfc3339Micros(text), reference(text, false), JSON.stringify(text));
    if (want === undefined) refused++;
    else accepted++;
  }
  // Both outcomes are well exercised.
  assert.ok(accepted > 20_000 && refused > 20_000, `accepted ${accepted}, refused ${refused}`);
});
