/**
 * The api plugin's user-space work for one `POST /flow`, piece by piece, in this process (no sockets): the
 * body's UTF-8 decoding, JSON.parse, the key and value checks (`parseApiFlowBody`), the echo
 * (`apiFlowEchoText`), its encoding into a reused buffer, and all of them in a row; beside the ceiling, a
 * JSON.parse + JSON.stringify of the same body (what the bare Deno.serve reference does with it).
 *
 *   deno run --allow-all bench/api_work.ts [--rounds 7] [--iterations 200000]
 *
 * Rounds are interleaved (each round times every piece once); the figures are medians and ranges of ns per
 * operation. A checksum of every result is printed so that no piece can be optimised away.
 */
import { apiFlowEchoText, parseApiFlowBody } from "../src/plugins/api_json.ts";
import type { FlowEvent } from "../src/core/flow_event.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] ?? fallback : fallback;
}

/**
 * The body bench/api_post.ts sends, in 256 variants (source port and start time differ, as between a
 * client's flows): no piece can keep its last answer for the next request.
 */
const VARIANTS = 256;
const TEXTS = Array.from({ length: VARIANTS }, (_, i) =>
  JSON.stringify({
    State: 2,
    Protocol: 0,
    Family: 10,
    Src: `[2001:db8::1]:${2345 + i}`,
    Dst: "[2001:db8::2]:5777",
    Experiment: 65535,
    Activity: 65535,
    StartTs: `2025-03-01T10:00:07.${123456 + i}+01:00`,
    Application: "bench",
  }).padEnd(200, " "));
const BYTES = TEXTS.map((t) => new TextEncoder().encode(t));
const VALUES = TEXTS.map((t) => JSON.parse(t));
const NOW = 1_750_000_000_000_000;
const EVENTS: FlowEvent[] = VALUES.map((v) => parseApiFlowBody(v, NOW, "bench"));
const utf8 = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();
const out = new Uint8Array(4096);
let k = 0;
const next = () => (k = (k + 1) & (VARIANTS - 1));

let sink = 0;
const pieces: Record<string, () => void> = {
  "ceiling: JSON.parse + JSON.stringify": () => {
    sink += JSON.stringify(JSON.parse(TEXTS[next()]!)).length;
  },
  "decode (UTF-8, fatal)": () => {
    sink += utf8.decode(BYTES[next()]).length;
  },
  "JSON.parse": () => {
    sink += JSON.parse(TEXTS[next()]!).State;
  },
  "checks (parseApiFlowBody)": () => {
    sink += parseApiFlowBody(VALUES[next()], NOW, "bench").src.port;
  },
  "echo (apiFlowEchoText)": () => {
    sink += apiFlowEchoText(EVENTS[next()]!).length;
  },
  "encode the echo (encodeInto)": () => {
    sink += encoder.encodeInto(apiFlowEchoText(EVENTS[next()]!), out).written;
  },
  "all: decode, parse, checks, echo, encode": () => {
    const event = parseApiFlowBody(JSON.parse(utf8.decode(BYTES[next()])), NOW, "bench");
    sink += encoder.encodeInto(apiFlowEchoText(event), out).written;
  },
};

const rounds = Number(flag("rounds", "7"));
const iterations = Number(flag("iterations", "200000"));
const times = new Map<string, number[]>(Object.keys(pieces).map((k) => [k, []]));
for (const fn of Object.values(pieces)) for (let i = 0; i < 20_000; i++) fn(); // warm-up: JIT tiers
for (let r = 0; r < rounds; r++) {
  for (const [name, fn] of Object.entries(pieces)) {
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) fn();
    times.get(name)!.push((performance.now() - t0) * 1e6 / iterations);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  `api POST /flow work, ${BYTES[0]!.length}-byte body, ${rounds} rounds of ${iterations}, ns per op`,
);
for (const [name, xs] of times) {
  console.log(
    `  ${name.padEnd(42)} ${median(xs).toFixed(0).padStart(6)} (${Math.min(...xs).toFixed(0)}-${
      Math.max(...xs).toFixed(0)
    })`,
  );
}
const all = median(times.get("all: decode, parse, checks, echo, encode")!);
const ceiling = median(times.get("ceiling: JSON.parse + JSON.stringify")!);
console.log(`  all / ceiling: ${(all / ceiling).toFixed(2)}x   (checksum ${sink})`);
