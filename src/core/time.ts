/**
 * Timestamps as integer microseconds since the Unix epoch.
 *
 * Fireflies carry six fractional digits, so milliseconds (Date) are not precise enough.
 */

/** Microseconds since 1970-01-01T00:00:00Z. */
export type Micros = number;

/** The current time in microseconds. */
export function nowMicros(): Micros {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** Converts a Date to microseconds. */
export function microsFromDate(d: Date): Micros {
  return d.getTime() * 1000;
}

/** First and last microsecond a firefly can carry: RFC 3339 has four-digit years, 0000 to 9999 (UTC). */
export const FIRST_WRITABLE_MICROS: Micros = new Date(0).setUTCFullYear(0, 0, 1) * 1000;
export const LAST_WRITABLE_MICROS: Micros = new Date(0).setUTCFullYear(10000, 0, 1) * 1000 - 1;

/** Whether a time can be written as an RFC 3339 date-time (a firefly's, an API answer's). */
export function isWritableTime(us: Micros): boolean {
  return Number.isFinite(us) && us >= FIRST_WRITABLE_MICROS && us <= LAST_WRITABLE_MICROS;
}

/** RFC 3339 in UTC with exactly six fractional digits and a numeric offset: 2021-09-22T11:12:27.808092+00:00. */
export function formatMicrosUtc(us: Micros): string {
  // Callers check with isWritableTime first; beyond it Date would write "+010000-..." and break the format.
  if (!isWritableTime(us)) throw new RangeError(`time ${us} µs is outside the years 0000-9999`);
  const second = Math.floor(us / 1_000_000);
  const frac = String(us - second * 1_000_000).padStart(6, "0");
  return `${secondText(second)}.${frac}+00:00`;
}

// The last two seconds written, as "YYYY-MM-DDThh:mm:ss": a firefly carries a flow's time and now, and
// successive ones mostly fall in the same two seconds (toISOString costs more than the rest together).
const cachedSecond = [NaN, NaN];
const cachedText = ["", ""];
let cachedNext = 0;

function secondText(second: number): string {
  if (second === cachedSecond[0]) return cachedText[0]!;
  if (second === cachedSecond[1]) return cachedText[1]!;
  const text = new Date(second * 1000).toISOString().slice(0, 19); // 2021-09-22T11:12:27.000Z
  cachedSecond[cachedNext] = second;
  cachedText[cachedNext] = text;
  cachedNext ^= 1;
  return text;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** Days from 1970-01-01 to a date (proleptic Gregorian, year 0 on), the well-known days-from-civil formula. */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

/**
 * Parses an RFC 3339 date-time with any number of fractional digits (truncated to microseconds) and either
 * `Z` or a numeric offset. Returns undefined when the text is not such a date-time.
 */
export function parseRfc3339Micros(text: string): Micros | undefined {
  return scanRfc3339Micros(text, 9);
}

/** The value of the two ASCII digits at `i`, or -1 when they are not both digits. */
function twoDigits(text: string, i: number): number {
  const a = text.charCodeAt(i) - 48, b = text.charCodeAt(i + 1) - 48;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : -1;
}

/**
 * `YYYY-MM-DD[Tt ]hh:mm:ss[.f{1,maxFraction}](Z|z|±hh:mm)`, second 60 read as 59. Read character by
 * character: the firefly listener parses three per datagram, and a regular expression with its captured
 * strings cost more than the rest of the firefly's schema check.
 */
export function scanRfc3339Micros(text: string, maxFraction: number): Micros | undefined {
  const n = text.length;
  if (n < 20) return undefined;
  const y1 = twoDigits(text, 0), y2 = twoDigits(text, 2);
  const month = twoDigits(text, 5), day = twoDigits(text, 8);
  const hour = twoDigits(text, 11), minute = twoDigits(text, 14), second = twoDigits(text, 17);
  const t = text.charCodeAt(10);
  if (
    y1 < 0 || y2 < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0 ||
    text.charCodeAt(4) !== 45 || text.charCodeAt(7) !== 45 || (t !== 84 && t !== 116 && t !== 32) ||
    text.charCodeAt(13) !== 58 || text.charCodeAt(16) !== 58
  ) return undefined;
  let i = 19;
  let micros = 0;
  if (text.charCodeAt(i) === 46) { // "." and at least one digit; digits past the sixth are dropped
    const first = ++i;
    for (let c = text.charCodeAt(i) - 48; c >= 0 && c <= 9; c = text.charCodeAt(++i) - 48) {
      if (i - first < 6) micros = micros * 10 + c;
    }
    if (i === first || i - first > maxFraction) return undefined;
    for (let k = i - first; k < 6; k++) micros *= 10;
  }
  let sign = 0, offsetHours = 0, offsetMinutes = 0;
  const z = text.charCodeAt(i);
  if (z === 90 || z === 122) {
    if (i + 1 !== n) return undefined;
  } else if (z === 43 || z === 45) {
    sign = z === 45 ? -1 : 1;
    offsetHours = twoDigits(text, i + 1);
    offsetMinutes = twoDigits(text, i + 4);
    if (offsetHours < 0 || offsetMinutes < 0 || text.charCodeAt(i + 3) !== 58 || i + 6 !== n) {
      return undefined;
    }
  } else return undefined;
  return microsFromFields(
    y1 * 100 + y2,
    month,
    day,
    hour,
    minute,
    second,
    micros,
    sign,
    offsetHours,
    offsetMinutes,
  );
}

/**
 * The instant of date-time fields already read from text (second 60 counts as 59; `sign` 0 for `Z`, else
 * ±1 with the offset's hours and minutes); undefined when a field is out of range or the instant is not
 * writable. Shared by the RFC 3339 parsers so that they agree on every value.
 */
function microsFromFields(
  year: number,
  month: number,
  day: number,
  hour: number,
  minute: number,
  second: number,
  micros: number,
  sign: number,
  offsetHours: number,
  offsetMinutes: number,
): Micros | undefined {
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return undefined;
  }
  if (day > daysInMonth(year, month)) return undefined; // 2025-02-30 and the like
  // Arithmetic instead of a Date: the same proleptic Gregorian calendar, at a fraction of the cost (the
  // firefly listener parses three times per datagram).
  let ms = daysFromCivil(year, month, day) * 86_400_000 + hour * 3_600_000 + minute * 60_000 +
    Math.min(second, 59) * 1000;
  if (sign !== 0) {
    if (offsetHours > 23 || offsetMinutes > 59) return undefined;
    ms -= sign * (offsetHours * 60 + offsetMinutes) * 60_000;
  }
  const us = ms * 1000 + micros;
  // 9999-12-31T23:00:00-05:00 is in year 10000 in UTC, which no RFC 3339 date-time we write can hold.
  return isWritableTime(us) ? us : undefined;
}
