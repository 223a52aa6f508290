import assert from "node:assert/strict";
import {
  buildSyslogHeader,
  parseSyslogHeader,
  sanitizeHeaderField,
  SyslogHeaderError,
} from "../../src/scitags/syslog.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";

const T = parseRfc3339Micros("2021-09-22T11:12:27.808092+00:00")!;
const JSON_BODY = '{"version":1}';

Deno.test("syslog build: timestamp in UTC with six fraction digits, trailing space", () => {
  assert.equal(
    buildSyslogHeader({ timestamp: T, hostname: "h1", appName: "flowd-go-3.0.0" }),
    "<134>1 2021-09-22T11:12:27.808092+00:00 h1 flowd-go-3.0.0 - firefly-json - ",
  );
  const whole = parseRfc3339Micros("2025-03-01T10:00:00+01:00")!;
  assert.equal(
    buildSyslogHeader({ timestamp: whole, hostname: "h1", appName: "a" }),
    "<134>1 2025-03-01T09:00:00.000000+00:00 h1 a - firefly-json - ",
  );
});

Deno.test("syslog build: a missing timestamp is the NILVALUE, never an empty field", () => {
  const h = buildSyslogHeader({ timestamp: undefined, hostname: "h1", appName: "flowd-go-3.0.0" });
  assert.equal(h, "<134>1 - h1 flowd-go-3.0.0 - firefly-json - ");
  assert.ok(!h.includes("  "));
});

Deno.test("syslog build: hostname and app name sanitised and truncated", () => {
  assert.equal(
    buildSyslogHeader({ timestamp: undefined, hostname: "", appName: "" }),
    "<134>1 - - - - firefly-json - ",
  );
  assert.equal(sanitizeHeaderField("my host\tname", 255), "my_host_name");
  assert.equal(sanitizeHeaderField("hôst", 255), "h_st");
  assert.equal(sanitizeHeaderField("a\u0000b\u007f", 255), "a_b_");
  assert.equal(sanitizeHeaderField("x".repeat(300), 255), "x".repeat(255));
  const h = buildSyslogHeader({ timestamp: undefined, hostname: "h".repeat(300), appName: "a".repeat(60) });
  const parsed = parseSyslogHeader(h + JSON_BODY);
  assert.equal(parsed.hostname.length, 255);
  assert.equal(parsed.appName.length, 48);
  assert.equal(parsed.rest, JSON_BODY);
});

Deno.test("syslog parse: round trip of what we build", () => {
  const h = buildSyslogHeader({ timestamp: T, hostname: "dtn1.example.org", appName: "flowd-go-3.0.0" });
  assert.deepEqual(parseSyslogHeader(h + JSON_BODY), {
    pri: 134,
    version: 1,
    timestamp: T,
    hostname: "dtn1.example.org",
    appName: "flowd-go-3.0.0",
    procId: "-",
    msgId: "firefly-json",
    structuredData: "-",
    rest: JSON_BODY,
  });
  const nil = parseSyslogHeader(buildSyslogHeader({ timestamp: undefined, hostname: "h", appName: "a" }));
  assert.equal(nil.timestamp, undefined);
  assert.ok(!("timestamp" in nil));
  assert.equal(nil.rest, "");
});

Deno.test("syslog parse: flowd (Python) header, with and without fraction", () => {
  const a = parseSyslogHeader(
    "<134>1 2024-03-28T08:58:48.899646+00:00 etf-cs9.cern.ch flowd - firefly-json - " + JSON_BODY,
  );
  assert.equal(a.timestamp, parseRfc3339Micros("2024-03-28T08:58:48.899646Z"));
  assert.equal(a.hostname, "etf-cs9.cern.ch");
  assert.equal(a.appName, "flowd");
  assert.equal(a.rest, JSON_BODY);
  const b = parseSyslogHeader("<134>1 2024-03-28T08:58:48+00:00 etf-cs9.cern.ch flowd - firefly-json - {}");
  assert.equal(b.timestamp, parseRfc3339Micros("2024-03-28T08:58:48Z"));
});

Deno.test("syslog parse: flowd-go 2.4.2 empty timestamp (two spaces) and empty app name", () => {
  const a = parseSyslogHeader("<134>1  h1 flowd-go-2.4.2 - firefly-json - " + JSON_BODY);
  assert.equal(a.timestamp, undefined);
  assert.equal(a.hostname, "h1");
  assert.equal(a.appName, "flowd-go-2.4.2");
  assert.equal(a.msgId, "firefly-json");
  assert.equal(a.rest, JSON_BODY);
  const b = parseSyslogHeader("<134>1  h1  - firefly-json - " + JSON_BODY);
  assert.equal(b.appName, "");
  assert.equal(b.procId, "-");
  assert.equal(b.rest, JSON_BODY);
});

Deno.test("syslog parse: XRootD (NILVALUE timestamp) and dCache (Z time, address as host)", () => {
  const x = parseSyslogHeader("<134>1 - xrd1.example.org xrootd - firefly-json - " + JSON_BODY);
  assert.equal(x.timestamp, undefined);
  assert.equal(x.hostname, "xrd1.example.org");
  assert.equal(x.appName, "xrootd");
  const d = parseSyslogHeader(
    "<134>1 2025-03-01T09:00:00.123456789Z 2001:db8::10 dCache - firefly-json - {}",
  );
  assert.equal(d.timestamp, parseRfc3339Micros("2025-03-01T09:00:00.123456Z"));
  assert.equal(d.hostname, "2001:db8::10");
  assert.equal(d.appName, "dCache");
  assert.equal(d.rest, "{}");
});

Deno.test("syslog parse: structured data elements with quoted spaces and escapes", () => {
  const h = parseSyslogHeader('<165>1 - h app 42 id [ex@1 a="x y\\"]" b="c"][other@2] the message');
  assert.equal(h.pri, 165);
  assert.equal(h.procId, "42");
  assert.equal(h.msgId, "id");
  assert.equal(h.structuredData, '[ex@1 a="x y\\"]" b="c"][other@2]');
  assert.equal(h.rest, "the message");
});

Deno.test("syslog parse: a header without a message has an empty rest", () => {
  assert.equal(parseSyslogHeader("<134>1 - h app - firefly-json -").rest, "");
});

Deno.test("syslog parse: malformed headers are rejected with the part that is wrong", () => {
  const cases: Array<[string, RegExp]> = [
    [JSON_BODY, /must start with "<PRI>VERSION "/],
    ["<134> - h a - firefly-json - {}", /must start with "<PRI>VERSION "/],
    ["<134>0 - h a - firefly-json - {}", /must start with "<PRI>VERSION "/],
    ["<192>1 - h a - firefly-json - {}", /PRI 192 is above 191/],
    ["<134>1 yesterday h a - firefly-json - {}", /TIMESTAMP "yesterday" is neither "-" nor an RFC 3339/],
    ["<134>1 2025-02-30T00:00:00Z h a - firefly-json - {}", /TIMESTAMP/],
    ["<134>1 - h app", /ends after its APP-NAME field/],
    ["<134>1 - h ", /ends before its APP-NAME field/],
    ["<134>1 - h app - firefly-json ", /ends before its STRUCTURED-DATA field/],
    ["<134>1 - h app - firefly-json x {}", /structured data must be "-" or \[\.\.\.\]/],
    ['<134>1 - h app - firefly-json [a b="]', /not closed/],
    ["<134>1 - h app - firefly-json -{}", /must be followed by a space/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseSyslogHeader(text), (err: unknown) => {
      assert.ok(err instanceof SyslogHeaderError, `${text}: ${err}`);
      assert.match(err.message, message, text);
      return true;
    });
  }
});
