import assert from "node:assert/strict";
import { type Endpoint, IpAddress, parseEndpoint, parseIpAt, scanEndpoint } from "../../src/net/ip.ts";
import { referenceParseIp } from "../helpers/ip_reference.ts";
import { Prng } from "../helpers/fuzz/prng.ts";

/** Same verdict and same bytes as the reference parser, for one text. */
function agree(text: string): void {
  agreeInPlace(text);
  const ours = IpAddress.tryParse(text);
  const ref = referenceParseIp(text);
  if (ref === undefined) {
    assert.equal(ours, undefined, `${JSON.stringify(text)} must be refused`);
    return;
  }
  assert.ok(ours, `${JSON.stringify(text)} must parse`);
  assert.deepEqual([...ours.bytes()], ref.bytes, JSON.stringify(text));
  assert.equal(ours.zone, ref.zone, JSON.stringify(text));
}

Deno.test("ip fast parser: agrees with the reference parser on hand-picked edge cases", () => {
  const cases = [
    "::",
    ":::",
    "::1",
    "1::",
    "1:::2",
    ":1::",
    "1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7::",
    "::2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8::",
    "::1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:1.2.3.4",
    "1:2:3:4:5:1.2.3.4",
    "::1.2.3.4",
    "::ffff:1.2.3.4",
    "::ffff:1.2.3",
    "1.2::3",
    "::1.2.3.4:5",
    ":1.2.3.4",
    "a:1.2.3.4",
    "1::1.2.3.4",
    "1:2:3:4:5:6::1.2.3.4",
    "1:2:3:4:5::1.2.3.4",
    "::01.2.3.4",
    "::256.1.1.1",
    "12345::",
    "0000:0000::ffff",
    "fe80::1%eth0",
    "fe80::1%",
    "fe80::1%a b",
    "fe80::1%0123456789abcdef",
    "1.2.3.4%e",
    "0.0.0.0",
    "255.255.255.255",
    "256.1.1.1",
    "1.2.3.04",
    "1.2.3.",
    ".1.2.3",
    "1..2.3",
    "1.2.3.4.",
    "1:2",
    "1:",
    ":",
    "",
    "g::",
    "::G",
    "1:2:3:4:5:6:7:8%x",
    "::ffff:0.0.0.0",
    "1::2::3",
    "::%x",
  ];
  for (const text of cases) agree(text);
});

Deno.test("ip fast parser: agrees with the reference parser on 200,000 random and mutated literals", () => {
  const rng = new Prng(0x1b5);
  const alphabet = "0123456789abcdefABCDEFg:.%";
  const seeds = ["2001:db8::1", "::ffff:10.0.0.1", "fe80::1%eth0", "1.2.3.4", "1:2:3:4:5:6:7:8", "::"];
  for (let n = 0; n < 200_000; n++) {
    let text: string;
    if (n % 2 === 0) {
      const len = rng.below(47);
      text = "";
      for (let i = 0; i < len; i++) text += rng.pick([...alphabet]);
    } else {
      const chars = [...rng.pick(seeds)];
      for (let k = 1 + rng.below(3); k > 0; k--) {
        const at = rng.below(chars.length + 1);
        const c = rng.pick([...alphabet])!;
        const op = rng.below(3);
        if (op === 0) chars.splice(at, 0, c);
        else if (op === 1) chars.splice(at, 1);
        else chars[at] = c;
      }
      text = chars.join("");
    }
    agree(text);
  }
});

/**
 * `parseIpAt` reads the literal inside a longer text: it accepts what `IpAddress.tryParse` accepts without a
 * zone, with the same bytes, and nothing else (a zoned literal is left to `tryParse`).
 */
function agreeInPlace(text: string): void {
  const at = text.length % 3, line = "x ".slice(0, at) + text + " 9";
  const ours = parseIpAt(line, at, at + text.length);
  const whole = IpAddress.tryParse(text);
  if (ours === undefined) {
    assert.ok(whole === undefined || whole.zone !== undefined, `${JSON.stringify(text)} must parse in place`);
    return;
  }
  assert.ok(whole && whole.zone === undefined, `${JSON.stringify(text)} must be refused in place`);
  assert.ok(ours.equals(whole), JSON.stringify(text));
  assert.equal(ours.toString(), whole.toString());
  assert.equal(ours.family, whole.family);
  // A repeated literal gives the address already made.
  assert.equal(parseIpAt(line, at, at + text.length), ours);
}

/** `scanEndpoint` returns what `parseEndpoint` returns, or leaves the text to it. */
function agreeEndpoint(text: string): boolean {
  const ours = scanEndpoint(text);
  let general: Endpoint | Error;
  try {
    general = parseEndpoint(text);
  } catch (err) {
    general = err as Error;
  }
  if (ours === undefined) return false;
  assert.ok(!(general instanceof Error), `${JSON.stringify(text)}: parseEndpoint refuses it (${general})`);
  assert.ok(ours.address.equals(general.address), JSON.stringify(text));
  assert.equal(ours.port, general.port, JSON.stringify(text));
  return true;
}

Deno.test("scanEndpoint: the same endpoint as parseEndpoint on edge cases and 100,000 mutated texts", () => {
  const cases = [
    "1.2.3.4:80",
    "[::1]:80",
    "[::ffff:1.2.3.4]:0",
    "1.2.3.4:65535",
    "1.2.3.4:65536",
    "1.2.3.4:00080",
    "1.2.3.4:123456",
    "1.2.3.4:",
    ":80",
    "[1.2.3.4]:80",
    "::1:80",
    "[::1:80",
    "::1]:80",
    "[[::1]]:80",
    "[fe80::1%eth0]:80",
    "1.2.3.4:8a",
    "1.2.3.4:-1",
    "[::1]:+1",
    "[]:1",
  ];
  for (const text of cases) agreeEndpoint(text);
  assert.ok(agreeEndpoint("[2001:db8::1]:2345") && agreeEndpoint("192.0.2.1:1"));
  assert.equal(scanEndpoint("[fe80::1%eth0]:80"), undefined);
  const rng = new Prng(0xe1d);
  const alphabet = "0123456789abcdef:.[]%";
  const seeds = ["[2001:db8::1]:2345", "1.2.3.4:80", "[::ffff:10.0.0.1]:65535", "[::]:0", "10.0.0.1:0"];
  let taken = 0;
  for (let n = 0; n < 100_000; n++) {
    const chars = [...rng.pick(seeds)];
    for (let k = rng.below(3); k > 0; k--) {
      const at = rng.below(chars.length + 1);
      const c = rng.pick([...alphabet])!;
      const op = rng.below(3);
      if (op === 0) chars.splice(at, 0, c);
      else if (op === 1) chars.splice(at, 1);
      else chars[at] = c;
    }
    if (agreeEndpoint(chars.join(""))) taken++;
  }
  assert.ok(taken > 10_000, `scanEndpoint took ${taken} texts`);
});
