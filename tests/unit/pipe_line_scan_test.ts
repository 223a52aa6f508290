/**
 * The named pipe's fast line scan against the checked parser it falls back on: over seeded random lines,
 * valid and not, `parsePipeLine` (scan, then the checked path) and `parsePipeLineChecked` alone must give the
 * same event (same fields, same address bytes and text, same flow key) or the same error (class, reason,
 * message), under every kind of id resolver. FLOWD_GO_FUZZ_SEED reruns another seed.
 */
import assert from "node:assert/strict";
import {
  type IdResolver,
  numericId,
  parsePipeLine,
  parsePipeLineChecked,
  type PipeLineContext,
  PipeLineError,
  registryIdResolver,
} from "../../src/plugins/pipe_line.ts";
import { flowKey } from "../../src/core/flow_event.ts";
import { Registry } from "../../src/scitags/registry.ts";
import { fuzzSeed, mutateText, Prng } from "../helpers/fuzz/prng.ts";

type Outcome =
  | { kind: "event"; fields: Record<string, unknown>; key: string }
  | { kind: "blank" }
  | { kind: "error"; name: string; reason: string; message: string };

function outcome(parse: () => ReturnType<typeof parsePipeLine>): Outcome {
  try {
    const e = parse();
    if (e === undefined) return { kind: "blank" };
    const fields: Record<string, unknown> = { ...e };
    for (const side of ["src", "dst"] as const) {
      const ep = e[side];
      fields[side] = {
        text: String(ep.address),
        bytes: [...ep.address.bytes()],
        zone: ep.address.zone,
        port: ep.port,
      };
    }
    fields.keys = Object.keys(e);
    return { kind: "event", fields, key: flowKey(e) };
  } catch (err) {
    const e = err as Error;
    return {
      kind: "error",
      name: e.name,
      reason: err instanceof PipeLineError ? err.reason : "not a PipeLineError",
      message: e.message,
    };
  }
}

/** A resolver that is not a known one: its answers (and errors) must reach the event unchanged. */
const customResolver: IdResolver = (kind, text, experimentId) => {
  if (text === "boom") throw new PipeLineError(`${kind} boom`, "name");
  return kind === "experiment" ? text.length : (experimentId ?? 0) * 100 + text.length;
};

const contexts: [string, PipeLineContext][] = [
  ["no resolver", { now: 1_700_000_000_000_000, application: "t" }],
  ["numericId, with source", {
    now: 1_700_000_000_000_001,
    application: "t",
    resolveId: numericId,
    source: "np",
  }],
  ["registry", {
    now: 1_700_000_000_000_002,
    application: "t",
    resolveId: registryIdResolver(() => Registry.embedded()),
    source: "namedPipe",
  }],
  ["custom", { now: 1_700_000_000_000_003, application: "t", resolveId: customResolver }],
];

const ADDRESSES = [
  "2001:db8::1",
  "2001:DB8:0:0:0:0:0:1",
  "::1",
  "::",
  "::ffff:10.0.0.1",
  "1:2:3:4:5:6:1.2.3.4",
  "fe80::1%eth0",
  "10.0.0.1",
  "255.255.255.255",
  "0.0.0.0",
  "01.2.3.4",
  "1.2.3",
  "2001:db8::g",
  "1::2::3",
  "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
];
const PORTS = ["0", "1", "2345", "65535", "65536", "007", "123456", "-1", "", "x"];
const IDS = ["0", "2", "3", "4294967295", "4294967296", "00000000001", "0000000001", "atlas", "boom", "1e3"];
const SPACES = [" ", "  ", "\t", "\v", "\f", "\r", " \t ", "\u00a0", "\u2003", "\u3000", "\n"];

function randomLine(r: Prng): string {
  // Most lines valid (each field from the valid choices), the rest with any choice in any field.
  const ok = r.chance(0.6);
  const pick = (valid: readonly string[], any: readonly string[]) =>
    r.pick(ok || r.chance(0.7) ? valid : any);
  const state = pick(["start", "end", "START", "End", "sTaRt"], ["ongoing", "begin", "ſtart", "star"]);
  const proto = pick(["tcp", "udp", "TCP", "Udp"], ["icmp", "tcp6", ""]);
  const v4 = r.chance(0.3);
  const addr = () =>
    v4
      ? pick(["10.0.0.1", "255.255.255.255", "0.0.0.0"], ADDRESSES)
      : pick(ADDRESSES.slice(0, 7).concat(ADDRESSES.slice(14)), ADDRESSES);
  const port = () => pick(PORTS.slice(0, 6), PORTS);
  const id = () => pick(IDS.slice(0, 7), IDS);
  const fields = [state, proto, addr(), port(), addr(), port(), id(), id()];
  if (r.chance(0.05)) fields.splice(r.below(fields.length), 1);
  if (r.chance(0.05)) fields.push(r.pick(IDS));
  const sp = () => r.chance(0.85) ? " " : r.pick(SPACES);
  return (r.chance(0.1) ? sp() : "") + fields.join(sp()) + (r.chance(0.1) ? sp() : "");
}

Deno.test("pipe line scan: same events and same errors as the checked parser, 40,000 seeded lines", () => {
  const seed = fuzzSeed();
  const r = new Prng(seed);
  const seen = { event: 0, error: 0, blank: 0 };
  const samples = [
    "start tcp 2001:db8::1 2345 2001:db8::2 5777 2 3",
    "end udp 10.0.0.1 1 10.0.0.2 2 0 4294967295",
  ];
  for (let i = 0; i < 40_000; i++) {
    let line = i % 3 === 2 ? mutateText(r, r.pick(samples), samples) : randomLine(r);
    if (i % 997 === 0) line = " \t\r ";
    const [name, ctx] = contexts[i % contexts.length]!;
    const ours = outcome(() => parsePipeLine(line, ctx));
    const checked = outcome(() => parsePipeLineChecked(line, ctx));
    assert.deepStrictEqual(ours, checked, `seed ${seed}, line ${i} (${name}): ${JSON.stringify(line)}`);
    seen[ours.kind]++;
  }
  // Both kinds are exercised in numbers, or the comparison says little.
  assert.ok(seen.event > 5_000 && seen.error > 5_000 && seen.blank > 0, JSON.stringify(seen));
});

Deno.test("pipe line scan: events carry the sink's source and the constant state and protocol", () => {
  const ctx: PipeLineContext = { now: 5, application: "t", source: "namedPipe" };
  const e = parsePipeLine("START TCP 2001:db8::1 1 2001:db8::2 2 3 4", ctx)!;
  assert.equal(e.source, "namedPipe");
  assert.equal(e.state, "start");
  assert.equal(e.protocol, "tcp");
  assert.equal(e.startTime, 5);
  assert.equal(
    parsePipeLine("end tcp 2001:db8::1 1 2001:db8::2 2 3 4", { now: 5, application: "t" })!.source,
    undefined,
  );
});

Deno.test("pipe line scan: open flows share address and endpoint objects where they are the same", () => {
  const ctx: PipeLineContext = { now: 5, application: "t" };
  const a = parsePipeLine("start tcp 2001:db8::1 40001 2001:db8::9 1094 3 4", ctx)!;
  const b = parsePipeLine("start tcp 2001:db8::1 40002 2001:db8::9 1094 3 4", ctx)!;
  assert.equal(a.dst, b.dst, "the peer's service endpoint is one object");
  assert.equal(a.src.address, b.src.address);
  assert.notEqual(a.src, b.src);
  assert.deepStrictEqual([a.src.port, b.src.port, b.dst.port], [40001, 40002, 1094]);
  // Endpoints are values: another port never reuses one.
  assert.equal(a.src.address.endpoint(40001).port, 40001);
  assert.equal(a.src.address.endpoint(7).port, 7);
});
