import assert from "node:assert/strict";
import { LineSplitter, parsePipeLine, PipeLineError } from "../../src/plugins/pipe_line.ts";

const ctx = { now: 1_700_000_000_000_000, application: "flowd-go-test" };

Deno.test("pipe line: the original's example parses, case-insensitively, with any whitespace", () => {
  const e = parsePipeLine("  START\t TCP 192.168.0.1   2345 127.0.0.1 5777 1 2  ", ctx)!;
  assert.equal(e.state, "start");
  assert.equal(e.protocol, "tcp");
  assert.equal(e.family, "ipv4");
  assert.equal(`${e.src.address}:${e.src.port}`, "192.168.0.1:2345");
  assert.equal(`${e.dst.address}:${e.dst.port}`, "127.0.0.1:5777");
  assert.equal(e.experimentId, 1);
  assert.equal(e.activityId, 2);
  assert.equal(e.startTime, ctx.now);
  assert.equal(e.endTime, undefined);
  assert.equal(e.application, "flowd-go-test");
});

Deno.test("pipe line: end events carry the end time; IPv6 with zone and IPv4-mapped addresses", () => {
  const e = parsePipeLine("end udp fe80::1%eth0 0 ::ffff:10.0.0.1 65535 4294967295 0", ctx)!;
  assert.equal(e.state, "end");
  assert.equal(e.endTime, ctx.now);
  assert.equal(e.startTime, undefined);
  assert.equal(e.family, "ipv6");
  assert.equal(e.src.address.toString(), "fe80::1%eth0");
  assert.equal(e.dst.address.toString(), "::ffff:10.0.0.1");
  assert.equal(e.experimentId, 4294967295);
});

Deno.test("pipe line: blank lines are ignored", () => {
  assert.equal(parsePipeLine("", ctx), undefined);
  assert.equal(parsePipeLine(" \t ", ctx), undefined);
});

Deno.test("pipe line: each bad field is named in the error", () => {
  const cases: [string, RegExp][] = [
    ["start tcp ::1 1 ::1 2 3", /expected 8 fields .* got 7/],
    ["start tcp ::1 1 ::1 2 3 4 5", /got 9/],
    ["begin tcp ::1 1 ::1 2 3 4", /state "begin"/],
    ["ongoing tcp ::1 1 ::1 2 3 4", /"ongoing" is not accepted/],
    ["start icmp ::1 1 ::1 2 3 4", /protocol "icmp"/],
    ["start tcp ::g 1 ::1 2 3 4", /srcIP "::g"/],
    ["start tcp ::1 1 1.2.3 2 3 4", /dstIP "1.2.3"/],
    ["start tcp ::1 65536 ::1 2 3 4", /srcPort "65536"/],
    ["start tcp ::1 1 ::1 0x10 3 4", /dstPort "0x10"/],
    ["start tcp ::1 1 ::1 -1 3 4", /dstPort "-1"/],
    ["start tcp ::1 1 ::1 2 4294967296 4", /experiment "4294967296"/],
    ["start tcp ::1 1 ::1 2 3 +4", /activity "\+4"/],
    ["start tcp ::1 1 ::1 2 atlas 4", /experiment "atlas"/],
    ["start tcp 10.0.0.1 1 ::1 2 3 4", /different address families/],
  ];
  for (const [line, re] of cases) {
    assert.throws(
      () => parsePipeLine(line, ctx),
      (e: unknown) => e instanceof PipeLineError && re.test(e.message),
      line,
    );
  }
});

Deno.test("pipe line: fuzzed garbage only ever yields PipeLineError or a valid event", () => {
  const alphabet = "starendtcpudp0123456789abcdef:.%[] \t\u00e9\u0000x-+";
  let seed = 42;
  const rand = () => { // mulberry32: deterministic, so a failure can be reproduced
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  // Per field: mostly valid values and a few near misses.
  const fields = [
    ["start", "end", "START", "ongoing", "x"],
    ["tcp", "udp", "UDP", "sctp"],
    ["::1", "10.0.0.1", "2001:db8::1", "1.2.3", ":::"],
    ["80", "0", "65535", "65536", "-1"],
    ["::2", "10.0.0.2", "fe80::1%lo", "256.0.0.1"],
    ["443", "1", "99999"],
    ["2", "4294967295", "4294967296", "1e3"],
    ["9", "0", "x"],
  ];
  let valid = 0;
  for (let i = 0; i < 20_000; i++) {
    let line: string;
    if (i % 2 === 0) {
      const length = Math.floor(rand() * 60);
      line = Array.from({ length }, () => alphabet[Math.floor(rand() * alphabet.length)]).join("");
    } else {
      const n = rand() < 0.9 ? 8 : 7;
      line = fields.slice(0, n).map((opts) => opts[Math.floor(rand() * opts.length)]).join(" ");
    }
    try {
      const e = parsePipeLine(line, ctx);
      if (e) {
        valid++;
        assert.equal(e.src.address.family, e.dst.address.family);
        assert.ok(e.src.port >= 0 && e.src.port <= 65535);
      }
    } catch (err) {
      assert.ok(err instanceof PipeLineError, `unexpected ${err} for ${JSON.stringify(line)}`);
    }
  }
  assert.ok(valid > 0, "the token fuzzer should produce some valid lines");
});

Deno.test("line splitter: chunks split anywhere, multi-byte characters across chunks, flush of the tail", () => {
  const s = new LineSplitter();
  const bytes = new TextEncoder().encode("ab\u00e9c\nsecond line\nthird");
  const lines: string[] = [];
  for (let i = 0; i < bytes.length; i += 3) lines.push(...s.push(bytes.subarray(i, i + 3)).lines);
  assert.deepEqual(lines, ["ab\u00e9c", "second line"]);
  assert.equal(s.flush(), "third");
  assert.equal(s.flush(), undefined);
});

Deno.test("line splitter: an overlong line is dropped once and counted", () => {
  const s = new LineSplitter(10);
  const r1 = s.push(new TextEncoder().encode("0123456789ABCDEF"));
  assert.deepEqual(r1, { lines: [], discarded: 1 });
  const r2 = s.push(new TextEncoder().encode("more\nok\n"));
  assert.deepEqual(r2, { lines: ["ok"], discarded: 0 });
});
