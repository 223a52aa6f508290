import assert from "node:assert/strict";
import {
  apiFlowEchoText,
  ApiFlowError,
  flowEventToApiJson,
  formatApiTime,
  goJson,
  parseApiFlowBody,
  ZERO_TIME,
} from "../../src/plugins/api_json.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";
import { IpAddress } from "../../src/net/ip.ts";

const NOW = parseRfc3339Micros("2025-03-01T09:00:00.5Z")!;
const APP = "flowd-go-test";

function ep(ip: string, port: number) {
  return { address: IpAddress.parse(ip), port };
}

/** The event with addresses as text: assert.deepEqual cannot see IpAddress's private bytes. */
function plain(e: FlowEvent): Record<string, unknown> {
  return { ...e, src: `${e.src.address}/${e.src.port}`, dst: `${e.dst.address}/${e.dst.port}` };
}

const V4_START = {
  State: 2,
  Protocol: 0,
  Family: 2,
  Src: "127.0.0.1:2345",
  Dst: "192.0.2.7:5777",
  Experiment: 65535,
  Activity: 17,
};

function rejects(body: unknown, field: string, mentions: RegExp): void {
  assert.throws(() => parseApiFlowBody(body, NOW, APP), (err: unknown) => {
    assert.ok(err instanceof ApiFlowError, `expected ApiFlowError, got ${err}`);
    assert.equal(err.field, field);
    assert.match(err.message, mentions);
    return true;
  });
}

Deno.test("formatApiTime writes Go's UTC time.Time JSON with trimmed fraction", () => {
  assert.equal(formatApiTime(undefined), "0001-01-01T00:00:00Z");
  assert.equal(formatApiTime(parseRfc3339Micros("2025-03-01T09:00:00Z")), "2025-03-01T09:00:00Z");
  assert.equal(formatApiTime(parseRfc3339Micros("2025-03-01T09:00:00.5Z")), "2025-03-01T09:00:00.5Z");
  assert.equal(
    formatApiTime(parseRfc3339Micros("2025-03-01T10:00:00.000123+01:00")),
    "2025-03-01T09:00:00.000123Z",
  );
  // Every fraction digit count, with zeros inside, leading and trailing, against a string-built reference.
  const base = parseRfc3339Micros("2025-03-01T09:00:00Z")!;
  for (const us of [1, 10, 100, 1000, 10000, 100000, 999999, 120000, 100001, 10203, 7, 450, 50050]) {
    const want = "2025-03-01T09:00:00." + String(us).padStart(6, "0").replace(/0+$/, "") + "Z";
    assert.equal(formatApiTime(base + us), want, String(us));
  }
});

Deno.test("flowEventToApiJson uses the original's keys, order and numeric enums", () => {
  const event: FlowEvent = {
    state: "end",
    protocol: "udp",
    family: "ipv6",
    src: ep("2001:db8::1", 2345),
    dst: ep("2001:db8::2", 5777),
    experimentId: 1,
    activityId: 2,
    endTime: NOW,
    application: APP,
  };
  const json = flowEventToApiJson(event);
  assert.equal(
    JSON.stringify(json),
    '{"State":3,"Protocol":1,"Family":10,"Src":"[2001:db8::1]:2345","Dst":"[2001:db8::2]:5777",' +
      '"Experiment":1,"Activity":2,"StartTs":"0001-01-01T00:00:00Z","EndTs":"2025-03-01T09:00:00.5Z",' +
      '"CurrentTs":"0001-01-01T00:00:00Z","Info":{"tcpInfo":null},"Application":"flowd-go-test","FlowInfoChans":null}',
  );
  assert.equal(flowEventToApiJson({ ...event, state: "start", family: "ipv4" }).State, 2);
  assert.equal(flowEventToApiJson({ ...event, state: "ongoing", family: "ipv4" }).Family, 2);
  assert.equal(flowEventToApiJson({ ...event, state: "ongoing" }).State, 4);
});

Deno.test("parseApiFlowBody builds the event and fills a start's StartTs with now", () => {
  const event = parseApiFlowBody(V4_START, NOW, APP);
  assert.deepEqual(
    plain(event),
    plain({
      state: "start",
      protocol: "tcp",
      family: "ipv4",
      src: ep("127.0.0.1", 2345),
      dst: ep("192.0.2.7", 5777),
      experimentId: 65535,
      activityId: 17,
      startTime: NOW,
      application: APP,
    }),
  );
});

Deno.test("parseApiFlowBody round-trips its own JSON (the original's echo can be posted back)", () => {
  const start = parseApiFlowBody({ ...V4_START, StartTs: "2025-01-01T10:00:00.123456+01:00" }, NOW, APP);
  const again = parseApiFlowBody(JSON.parse(JSON.stringify(flowEventToApiJson(start))), NOW + 99, "other");
  assert.deepEqual(plain(again), plain(start));
  const end = parseApiFlowBody(
    {
      ...V4_START,
      State: 3,
      Protocol: 1,
      Src: "[::1]:1",
      Dst: "[fe80::1%eth0]:2",
      Family: 10,
      StartTs: ZERO_TIME,
    },
    NOW,
    APP,
  );
  assert.equal(end.endTime, NOW);
  assert.equal(end.startTime, undefined);
  assert.deepEqual(
    plain(parseApiFlowBody(JSON.parse(JSON.stringify(flowEventToApiJson(end))), NOW + 99, APP)),
    plain(end),
  );
  assert.equal(String(end.dst.address), "fe80::1%eth0");
});

Deno.test("parseApiFlowBody accepts the friendlier forms: strings for enums, {IP, Port}, any key case", () => {
  const event = parseApiFlowBody(
    {
      state: "END",
      protocol: "Udp",
      family: "ipv6",
      src: { IP: "::1", Port: 2345 },
      Dst: { ip: "::ffff:10.0.0.1", port: 80 },
      experiment: 7,
      ACTIVITY: 8,
      StartTs: "2025-03-01T08:00:00Z",
      EndTs: "2025-03-01T08:30:00.25-01:00",
      CurrentTs: "2025-03-01T08:00:00Z",
      Info: { anything: true },
      FlowInfoChans: null,
      Application: "my-app",
    },
    NOW,
    APP,
  );
  assert.equal(event.state, "end");
  assert.equal(event.protocol, "udp");
  assert.equal(event.family, "ipv6");
  assert.equal(String(event.dst.address), "::ffff:10.0.0.1");
  assert.equal(event.src.port, 2345);
  assert.equal(event.experimentId, 7);
  assert.equal(event.activityId, 8);
  assert.equal(formatApiTime(event.startTime), "2025-03-01T08:00:00Z");
  assert.equal(formatApiTime(event.endTime), "2025-03-01T09:30:00.25Z");
  assert.equal(event.application, "my-app");
});

Deno.test("parseApiFlowBody takes the original's sample body (object addresses, EndTs on a start)", () => {
  const event = parseApiFlowBody(
    {
      State: 2,
      Protocol: 0,
      Family: 2,
      Src: { IP: "127.0.0.1", Port: 2345 },
      Dst: { IP: "127.0.0.1", Port: 5777 },
      Experiment: 65535,
      Activity: 65535,
      StartTs: "0001-01-01T00:00:00Z",
      EndTs: "2025-02-06T13:21:30.893064962+01:00",
      CurrentTs: "0001-01-01T00:00:00Z",
    },
    NOW,
    APP,
  );
  assert.equal(event.startTime, NOW);
  assert.equal(event.endTime, undefined);
});

Deno.test("parseApiFlowBody derives Family and defaults Protocol to TCP like the original's zero value", () => {
  const { Family: _f, Protocol: _p, ...rest } = V4_START;
  const event = parseApiFlowBody({ ...rest, Src: "[2001:db8::1]:1", Dst: "[2001:db8::2]:2" }, NOW, APP);
  assert.equal(event.family, "ipv6");
  assert.equal(event.protocol, "tcp");
  assert.equal(parseApiFlowBody({ ...V4_START, Application: "" }, NOW, APP).application, APP);
});

Deno.test("parseApiFlowBody names the field in every rejection", () => {
  rejects(undefined, "body", /JSON object/);
  rejects([V4_START], "body", /JSON object/);
  rejects("x", "body", /JSON object/);
  rejects(null, "body", /JSON object/);
  const { State: _s, ...noState } = V4_START;
  rejects(noState, "State", /State is required/);
  rejects({ ...V4_START, State: null }, "State", /State is required/);
  rejects({ ...V4_START, State: 4 }, "State", /not 4 .*ongoing/);
  rejects({ ...V4_START, State: 0 }, "State", /not 0/);
  rejects({ ...V4_START, State: "ongoing" }, "State", /"ongoing"/);
  rejects({ ...V4_START, Protocol: 6 }, "Protocol", /Protocol must be/);
  rejects({ ...V4_START, Family: 3 }, "Family", /Family must be/);
  rejects({ ...V4_START, Family: 10 }, "Family", /does not match the addresses, which are ipv4/);
  rejects({ ...V4_START, Src: "127.0.0.1" }, "Src", /Src "127.0.0.1" is not a valid/);
  rejects({ ...V4_START, Src: "1.2.3.4:70000" }, "Src", /above 65535/);
  rejects({ ...V4_START, Src: 5 }, "Src", /Src must be/);
  rejects({ ...V4_START, Src: { IP: "::1" } }, "Src.Port", /Src.Port must be an integer/);
  rejects({ ...V4_START, Src: { IP: "::1", Port: 1, Zone: "x" } }, "Src.Zone", /unknown key "Zone" in Src/);
  rejects({ ...V4_START, Dst: { IP: "nope", Port: 1 } }, "Dst.IP", /Dst.IP "nope" is not an IPv4 or IPv6/);
  rejects({ ...V4_START, Dst: undefined }, "Dst", /Dst is required/);
  rejects({ ...V4_START, Dst: "[::1]:80" }, "Dst", /Dst \[::1\]:80 is ipv6 but Src 127.0.0.1:2345 is ipv4/);
  for (const bad of [-1, 2 ** 32, 1.5, "x", "5", true]) {
    rejects({ ...V4_START, Experiment: bad }, "Experiment", /Experiment must be an integer in 0..4294967295/);
    rejects({ ...V4_START, Activity: bad }, "Activity", /Activity must be an integer in 0..4294967295/);
  }
  const { Experiment: _e, ...noExperiment } = V4_START;
  rejects(noExperiment, "Experiment", /Experiment is required/);
  rejects({ ...V4_START, StartTs: "yesterday" }, "StartTs", /StartTs "yesterday" is not an RFC 3339/);
  rejects({ ...V4_START, StartTs: 1700000000 }, "StartTs", /must be an RFC 3339 date-time string/);
  rejects({ ...V4_START, StartTs: "0099-01-01T00:00:00Z" }, "StartTs", /before 1970/);
  rejects({ ...V4_START, EndTs: "2025-02-30T00:00:00Z" }, "EndTs", /not an RFC 3339/);
  rejects(
    { ...V4_START, State: 3, StartTs: "2025-03-01T09:00:00Z", EndTs: "2025-03-01T08:00:00Z" },
    "EndTs",
    /EndTs "2025-03-01T08:00:00Z" is before StartTs/,
  );
  rejects({ ...V4_START, Bogus: 1 }, "Bogus", /unknown key "Bogus"/);
  rejects({ ...V4_START, state: 3 }, "State", /State is given twice, as "State" and as "state"/);
  rejects({ ...V4_START, Application: 5 }, "Application", /Application must be a string/);
});

Deno.test("api json: on shuffled, duplicated and unknown keys the first fault found follows Object.entries order", () => {
  // Key visiting order decides which fault is named; predict it from Object.entries (the general walk).
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  const extras = ["src", "STATE", "dst", "1", "0", "__proto__", "Bogus", "family"];
  const known = new Set(Object.keys(V4_START).map((k) => k.toLowerCase()).concat(["application"]));
  for (let round = 0; round < 300; round++) {
    const pairs: [string, unknown][] = Object.entries(V4_START);
    for (let i = rand(3); i > 0; i--) {
      pairs.splice(rand(pairs.length + 1), 0, [extras[rand(extras.length)]!, 1]);
    }
    const text = `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`;
    const body = JSON.parse(text);
    let expected: string | undefined;
    const seen = new Map<string, string>();
    for (const [key] of Object.entries(body)) {
      const lower = key.toLowerCase();
      if (!known.has(lower)) {
        expected = `unknown key ${JSON.stringify(key)}`;
        break;
      }
      if (seen.has(lower)) {
        expected = `given twice, as ${JSON.stringify(seen.get(lower))} and as ${JSON.stringify(key)}`;
        break;
      }
      seen.set(lower, key);
    }
    let got: string | undefined;
    try {
      parseApiFlowBody(body, NOW, APP);
    } catch (err) {
      assert.ok(err instanceof ApiFlowError, text);
      got = err.message;
    }
    if (expected === undefined) assert.equal(got, undefined, text);
    else assert.ok(got?.includes(expected), `${text}: ${got} lacks ${expected}`);
  }
});

Deno.test("apiFlowEchoText is byte-identical to goJson of the echo object, over many events", () => {
  // A seeded generator, so a failure can be replayed.
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return Math.floor(seed / 65536) % n; // the high bits: the low ones of an LCG repeat quickly
  };
  const apps = [
    "",
    "bench",
    "a<b>&c",
    "\u2028x\u2029",
    'q"uo\\te',
    "ünï€😀",
    "tab\tnl\n\u0001",
    "x".repeat(300),
  ];
  const v4 = ["127.0.0.1", "192.0.2.7", "0.0.0.0", "255.255.255.255"];
  const v6 = ["::1", "2001:db8::2", "fe80::1%eth0", "::ffff:192.0.2.1", "2001:db8:1:2:3:4:5:6"];
  const times = [
    undefined,
    0,
    1,
    999_999,
    1_000_000,
    NOW,
    NOW + 123_456,
    NOW + 100_000,
    253402300799_999_999,
  ];
  const states = ["start", "end", "ongoing"] as const;
  let n = 0;
  for (let i = 0; i < 3000; i++) {
    const family = rnd(2) === 0 ? "ipv4" : "ipv6";
    const ips = family === "ipv4" ? v4 : v6;
    const start = times[rnd(times.length)];
    const event: FlowEvent = {
      state: states[rnd(3)]!,
      protocol: rnd(2) === 0 ? "tcp" : "udp",
      family,
      src: ep(ips[rnd(ips.length)]!, rnd(65536)),
      dst: ep(ips[rnd(ips.length)]!, rnd(65536)),
      experimentId: rnd(4) === 0 ? 65535 : rnd(512),
      activityId: rnd(64),
      application: apps[rnd(apps.length)]!,
      // Runs of nearby times, so the cached second of formatApiTime is both hit and replaced.
      startTime: start === undefined ? undefined : start + rnd(3) * 1_000_000,
      endTime: times[rnd(times.length)],
    };
    assert.equal(
      apiFlowEchoText(event),
      goJson(flowEventToApiJson(event), true),
      JSON.stringify(plain(event)),
    );
    n++;
  }
  assert.equal(n, 3000);
});

Deno.test("goJson escapes like Go's encoder and ends with a newline", () => {
  assert.equal(goJson({ a: "<&>\u2028\u2029" }, false), '{"a":"\\u003c\\u0026\\u003e\\u2028\\u2029"}\n');
  assert.equal(goJson({ a: 1 }, true), '{\n    "a": 1\n}\n');
});
