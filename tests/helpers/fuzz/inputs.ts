/**
 * Fuzz inputs for the three entry points (named pipe lines, API bodies, firefly datagrams). Valid inputs
 * are built from a number that makes their flow unique (source address 2001:db8:f:<entry>::<n>), so that
 * the oracle knows exactly which flows must come out once; mutants are built from templates in another
 * range (2001:db8:bad::/48), so a mutant that happens to stay valid can never pass for a valid input.
 */
import { mutateText, NASTY_TOKENS, Prng } from "./prng.ts";

/** The three entry points. */
export type EntryPoint = "pipe" | "api" | "firefly";
const ENTRY_INDEX: Record<EntryPoint, number> = { pipe: 1, api: 2, firefly: 3 };

/** One generated input and whether it must become exactly one event. */
export interface FuzzInput {
  readonly text: string;
  /** The source address of the flow a valid input describes; undefined for mutants. */
  readonly validSource?: string;
}

/** The source address of valid input `n` of an entry point. */
export function validSource(entry: EntryPoint, n: number): string {
  return `2001:db8:f:${ENTRY_INDEX[entry]}::${(n + 1).toString(16)}`;
}

const DST = "2001:db8::2";

function pipeLine(src: string, port: number, r: Prng): string {
  const proto = r.pick(["tcp", "udp", "TCP"]);
  return `start ${proto} ${src} ${port} ${DST} 443 ${1 + r.below(14)} ${r.below(64)}`;
}

function apiBody(src: string, port: number, r: Prng): string {
  return JSON.stringify({
    State: r.pick(["start", 2]),
    Protocol: r.pick(["tcp", "udp", 0, 1]),
    Src: `[${src}]:${port}`,
    Dst: `[${DST}]:443`,
    Experiment: 1 + r.below(14),
    Activity: r.below(64),
  });
}

function firefly(src: string, port: number, r: Prng): string {
  const doc = {
    version: 1,
    "flow-lifecycle": { state: "start", "start-time": "2026-12-02T10:00:00.123456+00:00" },
    "flow-id": {
      afi: "ipv6",
      "src-ip": src,
      "dst-ip": DST,
      protocol: "tcp",
      "src-port": port,
      "dst-port": 443,
    },
    context: { "experiment-id": 1 + r.below(14), "activity-id": r.below(64), application: "fuzz" },
    ...(r.chance(0.3) ? { usage: { received: r.below(1e6), sent: r.below(1e6) } } : {}),
  };
  const json = JSON.stringify(doc);
  return r.chance(0.5)
    ? `<134>1 2026-12-02T10:00:00.123456+00:00 fuzz.example.org xrootd - firefly-json - ${json}`
    : json;
}

const BUILD: Record<EntryPoint, (src: string, port: number, r: Prng) => string> = {
  pipe: pipeLine,
  api: apiBody,
  firefly,
};

/** A structural mutation of a JSON document: keys dropped, duplicated, retyped, nested, nulled. */
function mutateJson(r: Prng, text: string): string {
  let value: unknown;
  try {
    value = JSON.parse(text.slice(text.indexOf("{")));
  } catch {
    return text;
  }
  const objects: Record<string, unknown>[] = [];
  const walk = (v: unknown) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      objects.push(v as Record<string, unknown>);
      for (const x of Object.values(v)) walk(x);
    }
  };
  walk(value);
  const o = r.pick(objects);
  const keys = Object.keys(o);
  const k = keys.length ? r.pick(keys) : "x";
  switch (r.below(6)) {
    case 0:
      delete o[k];
      break;
    case 1:
      o[k] = null;
      break;
    case 2:
      o[k] = r.pick<unknown>([[], {}, "", true, -1, 2 ** 53, 1e308, r.pick(NASTY_TOKENS)]);
      break;
    case 3: {
      let deep: unknown = 1;
      for (let i = 0; i < 200 + r.below(2000); i++) deep = [deep];
      o[k] = deep;
      break;
    }
    case 4:
      o[`${k}${r.below(3)}`] = o[k];
      break;
    default:
      o[k] = "x".repeat(10_000 + r.below(50_000));
  }
  const prefix = text.slice(0, text.indexOf("{"));
  return prefix + JSON.stringify(value);
}

/** `count` inputs for an entry point, about a third of them valid, in a seeded order. */
export function fuzzInputs(entry: EntryPoint, seed: number, count: number): FuzzInput[] {
  const r = new Prng(seed ^ (ENTRY_INDEX[entry] * 0x9e3779b1));
  const templates = Array.from({ length: 16 }, (_, i) => BUILD[entry](`2001:db8:bad::${i + 1}`, 1000 + i, r));
  const out: FuzzInput[] = [];
  let valid = 0;
  for (let i = 0; i < count; i++) {
    if (r.chance(0.35)) {
      const src = validSource(entry, valid);
      out.push({ text: BUILD[entry](src, 1024 + (valid % 60000), r), validSource: src });
      valid++;
      continue;
    }
    const base = r.pick(templates);
    const text = entry !== "pipe" && r.chance(0.4) ? mutateJson(r, base) : mutateText(r, base, templates);
    out.push({ text });
  }
  return out;
}
