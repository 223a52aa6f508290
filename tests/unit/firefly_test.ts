import assert from "node:assert/strict";
import {
  buildFirefly,
  encodeFireflyDatagram,
  FireflyBuildError,
  type FireflyDocument,
  FireflyParseError,
  type FireflyParseReason,
  fireflyToFlowEvent,
  parseFirefly,
  parseFireflyTime,
  serializeFirefly,
  validateFireflyDocument,
} from "../../src/scitags/firefly.ts";
import { buildSyslogHeader } from "../../src/scitags/syslog.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { ajvCheckFirefly, assertValidFirefly } from "../helpers/firefly_schema.ts";

const us = (text: string): number => parseRfc3339Micros(text)!;
const ip = (text: string): IpAddress => IpAddress.parse(text);

const T_START = us("2025-03-01T09:00:00.12345Z");
const T_NOW = us("2025-03-01T09:00:01.000123Z");
const T_END = us("2025-03-01T09:05:00.5Z");
const APP = "flowd-go-3.0.0";

const START_V6: FlowEvent = {
  state: "start",
  protocol: "tcp",
  family: "ipv6",
  src: { address: ip("2001:db8::1"), port: 2345 },
  dst: { address: ip("2001:db8::2"), port: 5777 },
  experimentId: 2,
  activityId: 9,
  startTime: T_START,
  application: APP,
};

const END_V4: FlowEvent = {
  state: "end",
  protocol: "udp",
  family: "ipv4",
  src: { address: ip("192.0.2.10"), port: 40000 },
  dst: { address: ip("198.51.100.20"), port: 1094 },
  experimentId: 3,
  activityId: 14,
  startTime: T_START,
  endTime: T_END,
  application: "",
};

const ONGOING_V6: FlowEvent = { ...START_V6, state: "ongoing" };

// Golden documents, written from the format: compact JSON, keys in the original's order, UTC with six digits.
const GOLDEN_START_V6 =
  '{"version":1,"flow-lifecycle":{"state":"start","start-time":"2025-03-01T09:00:00.123450+00:00"},' +
  '"flow-id":{"afi":"ipv6","src-ip":"2001:db8::1","dst-ip":"2001:db8::2","protocol":"tcp","src-port":2345,' +
  '"dst-port":5777},"context":{"experiment-id":2,"activity-id":9,"application":"flowd-go-3.0.0"}}';

const GOLDEN_END_V4 =
  '{"version":1,"flow-lifecycle":{"state":"end","start-time":"2025-03-01T09:00:00.123450+00:00",' +
  '"end-time":"2025-03-01T09:05:00.500000+00:00"},"flow-id":{"afi":"ipv4","src-ip":"192.0.2.10",' +
  '"dst-ip":"198.51.100.20","protocol":"udp","src-port":40000,"dst-port":1094},' +
  '"context":{"experiment-id":3,"activity-id":14,"application":""}}';

const GOLDEN_ONGOING_V6 = '{"version":1,"flow-lifecycle":{"state":"ongoing",' +
  '"current-time":"2025-03-01T09:00:01.000123+00:00","start-time":"2025-03-01T09:00:00.123450+00:00"},' +
  '"flow-id":{"afi":"ipv6","src-ip":"2001:db8::1","dst-ip":"2001:db8::2","protocol":"tcp","src-port":2345,' +
  '"dst-port":5777},"context":{"experiment-id":2,"activity-id":9,"application":"flowd-go-3.0.0"},' +
  '"usage":{"received":1000,"sent":2000},"netlink":{"rtt":250},"skOps":{"sndCwnd":10}}';

/** Both validators must accept a document we produce. */
function assertBothAccept(doc: unknown): void {
  assertValidFirefly(doc);
  const own = validateFireflyDocument(doc);
  assert.ok(own.ok, `hand validator rejects: ${own.ok ? "" : own.errors.join("; ")}`);
}

Deno.test("build: start, IPv6, golden", () => {
  const doc = buildFirefly(START_V6, { currentTime: T_NOW });
  assert.equal(serializeFirefly(doc), GOLDEN_START_V6);
  assertBothAccept(doc);
});

Deno.test("build: end, IPv4, golden (empty application kept)", () => {
  const doc = buildFirefly(END_V4, { currentTime: T_NOW });
  assert.equal(serializeFirefly(doc), GOLDEN_END_V4);
  assertBothAccept(doc);
});

Deno.test("build: ongoing with usage and enrichment, golden (current-time before start-time)", () => {
  const doc = buildFirefly(ONGOING_V6, {
    currentTime: T_NOW,
    usage: { received: 1000, sent: 2000 },
    netlink: { rtt: 250 },
    skOps: { sndCwnd: 10 },
  });
  assert.equal(serializeFirefly(doc), GOLDEN_ONGOING_V6);
  assertBothAccept(doc);
});

Deno.test("build: with syslog header, the datagram is header + compact JSON", () => {
  const doc = buildFirefly(START_V6, { currentTime: T_NOW });
  const header = buildSyslogHeader({ timestamp: undefined, hostname: "h1", appName: APP });
  const bytes = encodeFireflyDatagram(doc, header);
  assert.equal(
    new TextDecoder().decode(bytes),
    "<134>1 - h1 flowd-go-3.0.0 - firefly-json - " + GOLDEN_START_V6,
  );
  const timed = buildSyslogHeader({ timestamp: T_NOW, hostname: "h1", appName: APP });
  assert.equal(
    new TextDecoder().decode(encodeFireflyDatagram(doc, timed)),
    "<134>1 2025-03-01T09:00:01.000123+00:00 h1 flowd-go-3.0.0 - firefly-json - " + GOLDEN_START_V6,
  );
  assert.equal(new TextDecoder().decode(encodeFireflyDatagram(doc)), GOLDEN_START_V6);
});

Deno.test("build: start-time falls back to endTime, then the current time; never empty", () => {
  const { startTime: _s, ...endNoStart } = END_V4;
  const end = buildFirefly(endNoStart, { currentTime: T_NOW })["flow-lifecycle"];
  assert.deepEqual(end, {
    state: "end",
    "start-time": "2025-03-01T09:05:00.500000+00:00",
    "end-time": "2025-03-01T09:05:00.500000+00:00",
  });
  const { startTime: _t, ...startNoTime } = START_V6;
  const start = buildFirefly(startNoTime, { currentTime: T_NOW })["flow-lifecycle"];
  assert.deepEqual(start, { state: "start", "start-time": "2025-03-01T09:00:01.000123+00:00" });
  const ongoing =
    buildFirefly({ ...startNoTime, state: "ongoing" }, { currentTime: T_NOW })["flow-lifecycle"];
  assert.equal(ongoing["start-time"], ongoing["current-time"]);
  const { endTime: _e, startTime: _u, ...bare } = END_V4;
  const endBare = buildFirefly(bare, { currentTime: T_NOW })["flow-lifecycle"];
  assert.equal(endBare["end-time"], "2025-03-01T09:00:01.000123+00:00");
  assert.equal(endBare["start-time"], "2025-03-01T09:00:01.000123+00:00");
  for (const doc of [end, start, ongoing, endBare]) assert.notEqual(doc["start-time"], "");
});

Deno.test("build: without currentTime uses the clock, in UTC with six digits", () => {
  const before = Date.now() * 1000;
  const doc = buildFirefly({ ...ONGOING_V6 });
  const current = parseFireflyTime(doc["flow-lifecycle"]["current-time"]!)!;
  assert.ok(current >= before - 1000 && current <= Date.now() * 1000 + 1000);
  assert.match(doc["flow-lifecycle"]["current-time"]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/);
  assertBothAccept(doc);
});

Deno.test("build: only end events carry end-time; only ongoing ones current-time", () => {
  const startWithEnd = buildFirefly({ ...START_V6, endTime: T_END }, { currentTime: T_NOW });
  assert.deepEqual(Object.keys(startWithEnd["flow-lifecycle"]), ["state", "start-time"]);
  const ongoing = buildFirefly({ ...ONGOING_V6, endTime: T_END }, { currentTime: T_NOW });
  assert.deepEqual(Object.keys(ongoing["flow-lifecycle"]), ["state", "current-time", "start-time"]);
  const end = buildFirefly(END_V4, { currentTime: T_NOW });
  assert.deepEqual(Object.keys(end["flow-lifecycle"]), ["state", "start-time", "end-time"]);
  assert.deepEqual(Object.keys(end), ["version", "flow-lifecycle", "flow-id", "context"]);
});

Deno.test("build: source override, zone dropped, IPv4-mapped stays IPv6", () => {
  const over = buildFirefly(START_V6, { currentTime: T_NOW, sourceOverride: ip("2001:db8:ffff::7") });
  assert.equal(over["flow-id"]["src-ip"], "2001:db8:ffff::7");
  assertBothAccept(over);
  const zoned = buildFirefly(
    {
      ...START_V6,
      src: { address: ip("fe80::1%eth0"), port: 2345 },
      dst: { address: ip("fe80::2"), port: 1 },
    },
    { currentTime: T_NOW },
  );
  assert.equal(zoned["flow-id"]["src-ip"], "fe80::1");
  assertBothAccept(zoned);
  const mapped = buildFirefly(
    { ...START_V6, src: { address: ip("::ffff:192.0.2.1"), port: 2345 } },
    { currentTime: T_NOW },
  );
  assert.equal(mapped["flow-id"].afi, "ipv6");
  assert.equal(mapped["flow-id"]["src-ip"], "::ffff:192.0.2.1");
  assertBothAccept(mapped);
});

Deno.test("build: refuses what the schema forbids, naming the field", () => {
  const cases: Array<[FlowEvent, string]> = [
    [{ ...START_V6, src: { address: ip("2001:db8::1"), port: 0 } }, "flow-id.src-port"],
    [{ ...START_V6, dst: { address: ip("2001:db8::2"), port: 0 } }, "flow-id.dst-port"],
  ];
  for (const [event, field] of cases) {
    assert.throws(() => buildFirefly(event, { currentTime: T_NOW }), (err: unknown) => {
      assert.ok(err instanceof FireflyBuildError);
      assert.equal(err.field, field);
      assert.match(err.message, /outside 1\.\.65535/);
      return true;
    });
  }
  assert.throws(
    () => buildFirefly(START_V6, { sourceOverride: ip("192.0.2.1") }),
    (err: unknown) =>
      err instanceof FireflyBuildError && err.field === "flow-id.src-ip" && /ipv4/.test(err.message),
  );
  assert.throws(
    () => buildFirefly(START_V6, { currentTime: T_NOW, usage: { sent: -1 } }),
    (err: unknown) => err instanceof FireflyBuildError && err.field === "usage.sent",
  );
  assert.throws(
    () => buildFirefly({ ...START_V6, experimentId: -1 }),
    (err: unknown) => err instanceof FireflyBuildError && err.field === "experimentId",
  );
});

Deno.test("build: every state × family × protocol passes ajv and the hand validator", () => {
  const addrs = { ipv4: [ip("192.0.2.1"), ip("203.0.113.9")], ipv6: [ip("2001:db8::a"), ip("::1")] } as const;
  for (const state of ["start", "end", "ongoing"] as const) {
    for (const family of ["ipv4", "ipv6"] as const) {
      for (const protocol of ["tcp", "udp"] as const) {
        const event: FlowEvent = {
          state,
          protocol,
          family,
          src: { address: addrs[family][0], port: 1 },
          dst: { address: addrs[family][1], port: 65535 },
          experimentId: 0xffff_ffff,
          activityId: 0,
          application: "a b c",
        };
        assertBothAccept(buildFirefly(event, { currentTime: T_NOW }));
        assertBothAccept(
          buildFirefly({ ...event, startTime: T_START, endTime: T_END }, { currentTime: T_NOW }),
        );
      }
    }
  }
});

// ---- The hand validator against ajv: single mutations of valid documents. ----

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v));
}

const VALID_BASES: unknown[] = [
  JSON.parse(GOLDEN_START_V6),
  JSON.parse(GOLDEN_END_V4),
  JSON.parse(GOLDEN_ONGOING_V6),
  // XRootD's key order and content.
  {
    version: 1,
    "flow-lifecycle": {
      state: "end",
      "current-time": "2025-03-01T09:05:00.000001+00:00",
      "start-time": "2025-03-01T09:00:00.000001+00:00",
      "end-time": "2025-03-01T09:05:00.000001+00:00",
    },
    usage: { received: 0, sent: 123456789 },
    netlink: { rtt: 0.012 },
    context: { "experiment-id": 2, "activity-id": 1, application: "xrootd" },
    "flow-id": {
      afi: "ipv4",
      "src-ip": "192.0.2.1",
      "dst-ip": "198.51.100.2",
      protocol: "tcp",
      "src-port": 1094,
      "dst-port": 50000,
    },
  },
];

const ODD_VALUES: unknown[] = [
  null,
  true,
  0,
  -1,
  1,
  1.5,
  2,
  65535,
  65536,
  "",
  "x",
  "1",
  "start",
  "end",
  "ongoing",
  "START",
  "ipv4",
  "ipv6",
  "tcp",
  "TCP",
  "192.0.2.1",
  "01.2.3.4",
  "256.1.1.1",
  "2001:db8::1",
  "2001:DB8::1",
  "::",
  "::ffff:192.0.2.1",
  "fe80::1%eth0",
  "1:2:3:4:5:6:7:8:9",
  "2025-03-01T09:00:00Z",
  "2025-03-01t09:00:00z",
  "2025-03-01 09:00:00+01:00",
  "2025-03-01T09:00:00.1234567890123-05:30",
  "2025-03-01T09:00:00",
  "2025-03-01",
  "2025-02-29T00:00:00Z",
  "2024-02-29T00:00:00Z",
  "2025-04-31T00:00:00Z",
  "2025-03-01T24:00:00Z",
  "2025-03-01T09:60:00Z",
  "2025-03-01T23:59:60Z",
  "2025-03-01T12:59:60Z",
  "2025-03-02T00:59:60+01:00",
  "2025-03-01T09:00:00+24:00",
  "2025-03-01T09:00:00.+00:00",
  [],
  [1],
  {},
  { a: 1 },
];

/** Every path to a value inside `v`, as key lists. */
function paths(v: unknown, prefix: string[] = []): string[][] {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return [];
  const out: string[][] = [];
  for (const [k, child] of Object.entries(v)) {
    out.push([...prefix, k]);
    out.push(...paths(child, [...prefix, k]));
  }
  return out;
}

function mutate(base: unknown, path: string[], op: { delete: true } | { set: unknown }): unknown {
  const doc = clone(base) as Record<string, unknown>;
  let obj = doc;
  for (const k of path.slice(0, -1)) obj = obj[k] as Record<string, unknown>;
  const last = path[path.length - 1]!;
  if ("delete" in op) delete obj[last];
  else obj[last] = clone(op.set);
  return doc;
}

function* mutations(): Generator<[string, unknown]> {
  for (const [i, base] of VALID_BASES.entries()) {
    yield [`base ${i}`, base];
    for (const path of paths(base)) {
      yield [`base ${i} delete ${path.join(".")}`, mutate(base, path, { delete: true })];
      for (const v of ODD_VALUES) {
        yield [`base ${i} set ${path.join(".")} = ${JSON.stringify(v)}`, mutate(base, path, { set: v })];
      }
    }
    // An extra key in every object, the top level included (where the schema allows it).
    for (const path of [[], ...paths(base)]) {
      const doc = clone(base) as Record<string, unknown>;
      let obj: unknown = doc;
      for (const k of path) obj = (obj as Record<string, unknown>)[k];
      if (typeof obj === "object" && obj !== null && !Array.isArray(obj)) {
        (obj as Record<string, unknown>)["extra-key"] = 1;
        yield [`base ${i} extra key in ${path.join(".") || "(document)"}`, doc];
      }
    }
  }
  for (const v of [null, [], "x", 1, true]) yield [`document = ${JSON.stringify(v)}`, v];
}

Deno.test("validate: hand validator agrees with ajv on every single mutation of valid documents", () => {
  let valid = 0;
  let invalid = 0;
  const disagreements: string[] = [];
  for (const [name, doc] of mutations()) {
    const ajv = ajvCheckFirefly(doc);
    const own = validateFireflyDocument(doc);
    if (ajv.valid !== own.ok) {
      disagreements.push(
        `${name}: ajv ${ajv.valid} [${ajv.errors}], hand ${own.ok} [${own.ok ? "" : own.errors}]`,
      );
    }
    if (ajv.valid) valid++;
    else invalid++;
  }
  assert.deepEqual(disagreements, []);
  // The mutations must exercise both verdicts in quantity, or the comparison proves little.
  assert.ok(invalid > 1000, `only ${invalid} invalid mutations`);
  assert.ok(valid > 100, `only ${valid} valid mutations`);
});

Deno.test("validate: errors name the field path and the value", () => {
  const doc = JSON.parse(GOLDEN_END_V4);
  doc["flow-id"]["src-port"] = 0;
  doc["flow-id"]["dst-ip"] = "2001:db8::1";
  delete doc["flow-lifecycle"]["end-time"];
  doc["flow-lifecycle"].foo = 1;
  doc.context["experiment-id"] = "3";
  doc.usage = { bytes: 1 };
  const r = validateFireflyDocument(doc);
  assert.ok(!r.ok);
  assert.deepEqual(r.errors, [
    "flow-lifecycle.end-time: is required when state is end",
    'flow-lifecycle: unexpected property "foo"',
    'flow-id.dst-ip: "2001:db8::1" is not an IPv4 address as afi ipv4 requires',
    "flow-id.src-port: 0 is outside 1..65535",
    'context.experiment-id: expected an integer, got string "3"',
    'usage: unexpected property "bytes"',
  ]);
});

Deno.test("validate: deliberately stricter than ajv-formats on time offsets without a colon", () => {
  // RFC 3339 (and the original's parser) require ±hh:mm; ajv-formats also takes +0000 and +00.
  const doc = JSON.parse(GOLDEN_START_V6);
  doc["flow-lifecycle"]["start-time"] = "2025-03-01T09:00:00+0000";
  assert.equal(ajvCheckFirefly(doc).valid, true);
  assert.equal(validateFireflyDocument(doc).ok, false);
});

Deno.test("parseFireflyTime: Z, offsets, any fraction length, truncated to microseconds", () => {
  assert.equal(parseFireflyTime("2025-03-01T09:00:00Z"), us("2025-03-01T09:00:00Z"));
  assert.equal(parseFireflyTime("2025-03-01T10:00:00.12345+01:00"), T_START);
  assert.equal(parseFireflyTime("2025-03-01T09:00:00.1234569999999Z"), us("2025-03-01T09:00:00.123456Z"));
  assert.equal(parseFireflyTime("2016-12-31T23:59:60Z"), us("2016-12-31T23:59:59Z"));
  assert.equal(parseFireflyTime("2025-03-01T09:59:60Z"), undefined);
  assert.equal(parseFireflyTime(""), undefined);
  assert.equal(parseFireflyTime("2025-02-29T00:00:00Z"), undefined);
});

// ---- Parsing datagrams as the known senders write them (goldens written from their formats). ----

const FLOWD_PY = "<134>1 2024-03-28T08:58:48.899646+00:00 etf-cs9.cern.ch flowd - firefly-json - " +
  '{"version": 1, "flow-lifecycle": {"state": "start", "current-time": "2024-03-28T08:58:48.899500+00:00", ' +
  '"start-time": "2024-03-28T08:58:48.898000+00:00"}, "flow-id": {"afi": "ipv6", "src-ip": "2001:1458:d00:5::100:27", ' +
  '"dst-ip": "2001:1458:301:cd::100:1", "protocol": "tcp", "src-port": 46282, "dst-port": 443}, ' +
  '"context": {"experiment-id": 2, "activity-id": 9, "application": "flowd v1.1.7"}}';

const FLOWD_GO_242_START = "<134>1  h1 flowd-go-2.4.2 - firefly-json - " +
  '{"version":1,"flow-lifecycle":{"state":"start","start-time":"2025-03-01T10:00:00.12345+01:00"},' +
  '"flow-id":{"afi":"ipv6","src-ip":"2001:db8::1","dst-ip":"2001:db8::2","protocol":"tcp","src-port":2345,' +
  '"dst-port":5777},"context":{"experiment-id":1,"activity-id":2,"application":"flowd-go-2.4.2"}}';

const FLOWD_GO_242_END = "<134>1  h1 flowd-go-2.4.2 - firefly-json - " +
  '{"version":1,"flow-lifecycle":{"state":"end","start-time":"","end-time":"2025-03-01T09:05:00.5+00:00"},' +
  '"flow-id":{"afi":"ipv6","src-ip":"2001:db8::1","dst-ip":"2001:db8::2","protocol":"tcp","src-port":2345,' +
  '"dst-port":5777},"context":{"experiment-id":1,"activity-id":2,"application":"flowd-go-2.4.2"}}';

const XROOTD_END = "<134>1 - xrd1.example.org xrootd - firefly-json - " +
  '{"version":1,"flow-lifecycle":{"state":"end","current-time":"2025-03-01T09:05:00.000001+00:00",' +
  '"start-time":"2025-03-01T09:00:00.000001+00:00","end-time":"2025-03-01T09:05:00.000001+00:00"},' +
  '"usage":{"received":0,"sent":123456789},"netlink":{"rtt":0.012},' +
  '"context":{"experiment-id":3,"activity-id":14,"application":"xrdcp"},' +
  '"flow-id":{"afi":"ipv4","src-ip":"192.0.2.1","dst-ip":"198.51.100.2","protocol":"tcp","src-port":1094,' +
  '"dst-port":50000}}';

const DCACHE_START = "<134>1 2025-03-01T09:00:00.123456Z 2001:db8::10 dCache - firefly-json - " +
  '{"flow-id":{"dst-port":33000,"afi":"ipv6","src-port":2880,"dst-ip":"2001:db8::20","protocol":"tcp",' +
  '"src-ip":"2001:db8::10"},"usage":{},"context":{"application":"http","activity-id":1,"experiment-id":2},' +
  '"flow-lifecycle":{"current-time":"2025-03-01T09:00:00.123456Z","start-time":"2025-03-01T09:00:00.123Z",' +
  '"state":"start"},"version":1,"storage-stats":{"read-bw":0}}';

const DCACHE_OLD_NO_HEADER = '{"flow-lifecycle":{"start-time":"2023-01-01T00:00:00Z","state":"start"},' +
  '"context":{"experiment-id":16,"activity-id":14,"application":"xrootd"},"version":1,' +
  '"flow-id":{"afi":"ipv4","src-ip":"192.0.2.5","src-port":1094,"dst-ip":"203.0.113.7","dst-port":40001,' +
  '"protocol":"tcp"}}';

Deno.test("parse: flowd (Python) datagram with spaces in the JSON", () => {
  const p = parseFirefly(new TextEncoder().encode(FLOWD_PY));
  assert.equal(p.header?.appName, "flowd");
  assert.equal(p.header?.timestamp, us("2024-03-28T08:58:48.899646Z"));
  assert.equal(p.document.context.application, "flowd v1.1.7");
  const e = fireflyToFlowEvent(p.document);
  assert.equal(e.state, "start");
  assert.equal(e.family, "ipv6");
  assert.equal(String(e.src.address), "2001:1458:d00:5::100:27");
  assert.equal(e.dst.port, 443);
  assert.equal(e.startTime, us("2024-03-28T08:58:48.898Z"));
  assert.deepEqual([e.experimentId, e.activityId], [2, 9]);
});

Deno.test("parse: flowd-go 2.4.2 start (empty header timestamp, local offset, 5-digit fraction)", () => {
  const p = parseFirefly(FLOWD_GO_242_START, { hasSyslogHeader: true });
  assert.equal(p.header?.timestamp, undefined);
  assert.equal(p.header?.appName, "flowd-go-2.4.2");
  const e = fireflyToFlowEvent(p.document);
  assert.equal(e.startTime, T_START);
  assert.equal(e.endTime, undefined);
  assert.equal(e.application, "flowd-go-2.4.2");
});

Deno.test("parse: flowd-go 2.4.2 end with empty start-time: rejected, or repaired on request", () => {
  assertParseFails(
    FLOWD_GO_242_END,
    {},
    "schema",
    /flow-lifecycle\.start-time: "" is not an RFC 3339 date-time/,
  );
  const p = parseFirefly(FLOWD_GO_242_END, { repairStartTime: true });
  assert.deepEqual(p.repairs, ["flow-lifecycle.start-time: empty, set from the end-time"]);
  const e = fireflyToFlowEvent(p.document);
  assert.equal(e.state, "end");
  assert.equal(e.endTime, T_END);
  assert.equal(e.startTime, T_END);
  // A valid document is left alone even when repairs are allowed.
  assert.equal(parseFirefly(FLOWD_GO_242_START, { repairStartTime: true }).repairs, undefined);
});

Deno.test("parse: repairStartTime falls back to current-time, the header timestamp, then the receive time", () => {
  const body = (lc: string) =>
    `{"version":1,"flow-lifecycle":${lc},"flow-id":{"afi":"ipv4","src-ip":"192.0.2.1","dst-ip":"192.0.2.2",` +
    `"protocol":"tcp","src-port":1,"dst-port":2},"context":{"experiment-id":1,"activity-id":1}}`;
  const ongoing = parseFirefly(
    body('{"state":"ongoing","current-time":"2025-03-01T09:00:01.000123+00:00"}'),
    {
      repairStartTime: true,
    },
  );
  assert.deepEqual(ongoing.repairs, ["flow-lifecycle.start-time: missing, set from the current-time"]);
  assert.equal(fireflyToFlowEvent(ongoing.document).startTime, T_NOW);
  const withHeader = parseFirefly(
    "<134>1 2025-03-01T09:00:01.000123+00:00 h flowd - firefly-json - " +
      body('{"state":"start","start-time":""}'),
    { repairStartTime: true },
  );
  assert.deepEqual(withHeader.repairs, ["flow-lifecycle.start-time: empty, set from the syslog timestamp"]);
  assert.equal(fireflyToFlowEvent(withHeader.document).startTime, T_NOW);
  const before = Date.now() * 1000;
  const bare = parseFirefly(body('{"state":"start"}'), { repairStartTime: true });
  assert.deepEqual(bare.repairs, ["flow-lifecycle.start-time: missing, set from the receive time"]);
  assert.ok(fireflyToFlowEvent(bare.document).startTime! >= before - 1000);
});

Deno.test("parse: XRootD datagram (NILVALUE timestamp, usage and netlink, context before flow-id)", () => {
  const p = parseFirefly(XROOTD_END);
  assert.equal(p.header?.hostname, "xrd1.example.org");
  assert.deepEqual(p.document.usage, { received: 0, sent: 123456789 });
  assert.deepEqual(p.document.netlink, { rtt: 0.012 });
  const e = fireflyToFlowEvent(p.document);
  assert.deepEqual(
    [e.state, e.protocol, e.family, String(e.src.address), e.src.port, String(e.dst.address), e.dst.port],
    ["end", "tcp", "ipv4", "192.0.2.1", 1094, "198.51.100.2", 50000],
  );
  assert.equal(e.startTime, us("2025-03-01T09:00:00.000001Z"));
  assert.equal(e.endTime, us("2025-03-01T09:05:00.000001Z"));
  assert.deepEqual([e.experimentId, e.activityId, e.application], [3, 14, "xrdcp"]);
});

Deno.test("parse: dCache datagrams (Z times, any key order, extra top-level key, old header-less form)", () => {
  const p = parseFirefly(DCACHE_START);
  assert.equal(p.header?.appName, "dCache");
  assert.equal(p.header?.hostname, "2001:db8::10");
  const e = fireflyToFlowEvent(p.document);
  assert.equal(e.startTime, us("2025-03-01T09:00:00.123Z"));
  assert.equal(e.application, "http");
  const old = parseFirefly(new TextEncoder().encode(DCACHE_OLD_NO_HEADER));
  assert.equal(old.header, undefined);
  assert.deepEqual([fireflyToFlowEvent(old.document).experimentId, old.document["flow-id"]["dst-port"]], [
    16,
    40001,
  ]);
});

Deno.test("parse: what we build parses back to the same event", () => {
  for (const event of [START_V6, END_V4, ONGOING_V6]) {
    const doc = buildFirefly(event, { currentTime: T_NOW });
    const header = buildSyslogHeader({ timestamp: T_NOW, hostname: "h1", appName: APP });
    for (const datagram of [encodeFireflyDatagram(doc, header), encodeFireflyDatagram(doc)]) {
      const back = fireflyToFlowEvent(parseFirefly(datagram).document);
      assert.equal(back.state, event.state);
      assert.equal(back.protocol, event.protocol);
      assert.equal(back.family, event.family);
      assert.ok(back.src.address.equals(event.src.address) && back.dst.address.equals(event.dst.address));
      assert.deepEqual([back.src.port, back.dst.port], [event.src.port, event.dst.port]);
      assert.deepEqual([back.experimentId, back.activityId], [event.experimentId, event.activityId]);
      assert.equal(back.startTime, event.startTime);
      assert.equal(back.endTime, event.state === "end" ? event.endTime : undefined);
      assert.equal(back.application, event.application);
    }
  }
});

Deno.test("parse: trailing NUL and newline are tolerated, a BOM before the JSON too", () => {
  assert.equal(parseFirefly(FLOWD_GO_242_START + "\n\0").document.version, 1);
  const withBom = FLOWD_GO_242_START.replace("firefly-json - {", "firefly-json - \uFEFF{");
  assert.equal(parseFirefly(withBom).document.version, 1);
});

// Tests poke at arbitrary nested keys of parsed JSON documents.
// deno-lint-ignore no-explicit-any
type LooseDoc = Record<string, any>;

function assertParseFails(
  datagram: Uint8Array | string,
  opts: Parameters<typeof parseFirefly>[1],
  reason: FireflyParseReason,
  message: RegExp,
): void {
  assert.throws(() => parseFirefly(datagram, opts), (err: unknown) => {
    assert.ok(err instanceof FireflyParseError, String(err));
    assert.equal(err.reason, reason, err.message);
    assert.match(err.message, message);
    return true;
  });
}

Deno.test("parse: malformed datagrams are rejected with the right reason", () => {
  const good = JSON.parse(GOLDEN_START_V6);
  const json = (patch: (d: LooseDoc) => void): string => {
    const d = clone(good);
    patch(d);
    return JSON.stringify(d);
  };
  assertParseFails(Uint8Array.of(0x3c, 0xff, 0xfe), {}, "encoding", /not valid UTF-8/);
  assertParseFails("hello", {}, "not-json", /not JSON/);
  assertParseFails("", {}, "not-json", /not JSON/);
  assertParseFails("<134>1 - h app - firefly-json - not json", {}, "not-json", /not JSON/);
  assertParseFails("<134>1 - h app - firefly-json -", {}, "not-json", /not JSON/);
  assertParseFails("<134>1 - h app - audit - " + GOLDEN_START_V6, {}, "not-a-firefly", /MSGID "audit"/);
  assertParseFails(
    "<134>1 yesterday h app - firefly-json - {}",
    {},
    "syslog-header",
    /TIMESTAMP "yesterday"/,
  );
  assertParseFails("<134> " + GOLDEN_START_V6, {}, "syslog-header", /<PRI>VERSION/);
  assertParseFails(GOLDEN_START_V6, { hasSyslogHeader: true }, "syslog-header", /expected a syslog header/);
  assertParseFails(json((d) => (d.version = 2)), {}, "unsupported-version", /version 2 is not supported/);
  assertParseFails("[1,2]", {}, "schema", /\(document\): expected an object, got an array/);
  assertParseFails(
    json((d) => (d["flow-id"]["src-port"] = 0)),
    {},
    "schema",
    /flow-id\.src-port: 0 is outside/,
  );
  assertParseFails(json((d) => (d["flow-lifecycle"].state = "START")), {}, "schema", /"START" is not one of/);
  assertParseFails(
    json((d) => (d["flow-lifecycle"].state = "end")),
    {},
    "schema",
    /end-time: is required when state is end/,
  );
  assertParseFails(json((d) => (d["flow-id"].afi = "ipv4")), {}, "schema", /not an IPv4 address/);
  assertParseFails(json((d) => delete d.context), {}, "schema", /\(document\)\.context: is required/);
  // Several errors: the message shows three and counts the rest; details has them all.
  try {
    parseFirefly(json((d) => (d["flow-id"] = { afi: "ipv6" })));
    assert.fail("expected a schema error");
  } catch (err) {
    assert.ok(err instanceof FireflyParseError);
    assert.equal(err.details.length, 5);
    assert.match(err.message, /\(and 2 more\)$/);
  }
});

Deno.test("toFlowEvent: values the schema allows but an event cannot hold are rejected", () => {
  const doc = (patch: (d: LooseDoc) => void): FireflyDocument => {
    const d = JSON.parse(GOLDEN_START_V6);
    patch(d);
    assert.ok(validateFireflyDocument(d).ok);
    return d;
  };
  for (
    const [patch, message] of [
      [(d: LooseDoc) => (d.context["experiment-id"] = 2 ** 32), /experimentId 4294967296/],
      [(d: LooseDoc) => (d.context["activity-id"] = -1), /activityId -1/],
    ] as const
  ) {
    assert.throws(() => fireflyToFlowEvent(doc(patch)), (err: unknown) => {
      assert.ok(err instanceof FireflyParseError);
      assert.equal(err.reason, "flow-event");
      assert.match(err.message, message);
      return true;
    });
  }
  const noApp = doc((d) => delete d.context.application);
  assert.equal(fireflyToFlowEvent(noApp).application, "");
});
