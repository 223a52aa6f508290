import assert from "node:assert/strict";
import {
  allApiFields,
  API_KEYS,
  apiFlowEchoText,
  ApiFlowError,
  exactApiFields,
  fastApiFlowBody,
  FIELDS,
  generalApiFlowBody,
  goJson,
  parseApiFlowBody,
} from "../../src/plugins/api_json.ts";
import { ApiPlugin } from "../../src/plugins/api.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";
import { RawHttpClient } from "../helpers/raw_http.ts";

const NOW = parseRfc3339Micros("2025-03-01T09:00:00.5Z")!;
const APP = "flowd-go-test";
const encoder = new TextEncoder();

/** A seeded generator (high bits of an LCG), so a failure can be replayed. */
function rng(seed: number) {
  return (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return Math.floor(seed / 65536) % n;
  };
}

/** Bodies of the common shape, and ones a little or very far from it, valid or not. */
function bodies(count: number, seed: number): string[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[r(xs.length)]!;
  const values: Record<string, readonly unknown[]> = {
    State: [2, 3, 4, 0, "start", "end", "START", null, 2.5, -2, "2"],
    Protocol: [0, 1, 2, "tcp", "udp", null],
    Family: [2, 10, 11, "ipv4", null],
    Src: [
      "127.0.0.1:2345",
      "[2001:db8::1]:2345",
      "[fe80::1%eth0]:80",
      "10.0.0.1",
      "[::1]:70000",
      "1.2.3.4:-1",
      { IP: "::1", Port: 5 },
      "",
      7,
    ],
    Dst: ["192.0.2.7:5777", "[2001:db8::2]:5777", "[::ffff:1.2.3.4]:1", "x:1", "192.0.2.7:05"],
    Experiment: [0, 1, 65535, 4294967295, 4294967296, 123456789012345, 1e3, -1, "atlas", null],
    Activity: [0, 17, 65535, 1.5, "17", null],
    StartTs: [
      "2025-03-01T10:00:00.123456+01:00",
      "2025-03-01T10:00:00Z",
      "0001-01-01T00:00:00Z",
      "1969-12-31T23:59:59Z",
      "2025-02-30T10:00:00Z",
      "yesterday",
      null,
      5,
    ],
    EndTs: ["2025-03-01T10:00:01Z", "2025-03-01T08:00:00Z", "0001-01-01T00:00:00Z", null],
    Application: ["bench", "", "a<b>&c", "naïve", null, 3],
    CurrentTs: ["0001-01-01T00:00:00Z"],
    Info: [{ tcpInfo: null }],
    FlowInfoChans: [null],
  };
  const out: string[] = [];
  for (let n = 0; n < count; n++) {
    const obj: Record<string, unknown> = {};
    // Mostly the common keys, in varied order; sometimes a missing one or an extra ignored one.
    const common: readonly string[] = FIELDS; // the keys the API reads
    const keys = [...API_KEYS].filter((k) => r(20) < (common.includes(k) ? 19 : 2));
    for (let i = keys.length - 1; i > 0; i--) {
      const j = r(i + 1);
      [keys[i], keys[j]] = [keys[j]!, keys[i]!];
    }
    // Addresses and Family of one family, mostly; any listed value now and then.
    const v6 = r(2);
    for (const k of keys) {
      const usual = ["Src", "Dst"].includes(k)
        ? values[k]![v6]
        : k === "Family"
        ? [2, 10][v6]
        : values[k]![r(2)];
      obj[k] = r(5) === 0 ? pick(values[k]!) : usual;
    }
    let text = r(3) === 0 ? JSON.stringify(obj, null, r(2) ? 4 : "\t") : JSON.stringify(obj);
    if (r(2) === 0) text = text.padEnd(text.length + r(40), pick([" ", "\n", "\r\n", "\t"]));
    switch (r(14)) {
      case 0: // another spelling of a key
        text = text.replace(`"${pick(keys) ?? "State"}"`, (k) => k.toLowerCase());
        break;
      case 1: // a repeated key
        text = text.replace("{", `{"${pick(API_KEYS)}": ${r(2) ? 2 : "null"}, `);
        break;
      case 2: // an escape or a non-ASCII character in a string
        text = text.replace(/"([0-9.:\[\]a-f]+)"/, pick(['"\\u0031$1"', '"$1\\n"', '"é$1"', '"$1\u2028"']));
        break;
      case 3: // an unknown key
        text = text.replace("{", `{"${pick(["Foo", "state2", "__proto__", "", "Src.IP"])}": 1,`);
        break;
      case 4: // a number written another way
        text = text.replace(/: (\d+)/, pick([": $1.0", ": $1e0", ": 0$1", ": -$1", ": $1 1", ": $1x"]));
        break;
      case 5: // broken JSON
        text = text.slice(0, r(text.length));
        break;
      case 6: // one byte changed
        if (text.length > 0) {
          const at = r(text.length);
          text = text.slice(0, at) + String.fromCharCode(r(128)) + text.slice(at + 1);
        }
        break;
      case 7: // something that is not an object
        text = pick(["[]", "[1]", "null", "2", '"x"', "", "  ", "{}", "{ }", "{,}", '{"State"}', "{}{}"]);
        break;
      case 8: // literals and trailing bytes
        text = pick([
          text.replace(/: null/, ": nul"),
          text + "x",
          text + "\u0000",
          text.replace(/null/, "true"),
        ]);
        break;
    }
    out.push(text);
  }
  return out;
}

type Outcome = { event: FlowEvent } | { field: string; message: string } | { other: string };

function outcome(run: () => FlowEvent): Outcome {
  try {
    return { event: run() };
  } catch (err) {
    if (err instanceof ApiFlowError) return { field: err.field, message: err.message };
    return { other: String(err) };
  }
}

/** Outcomes with addresses as text: deepEqual cannot see IpAddress's private bytes. */
function plain(o: Outcome): unknown {
  if (!("event" in o)) return o;
  const e = o.event;
  return { ...e, src: `${e.src.address}/${e.src.port}`, dst: `${e.dst.address}/${e.dst.port}` };
}

Deno.test("exactApiFields gathers exactly what the full key gathering does, or leaves the body to it", () => {
  let claimed = 0, objects = 0, fullThrew = 0;
  for (const text of bodies(6000, 2026)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      continue;
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) continue;
    objects++;
    const body = parsed as Record<string, unknown>;
    const exact = exactApiFields(body);
    let full: unknown;
    try {
      full = [...allApiFields(body)];
    } catch (err) {
      assert.ok(err instanceof ApiFlowError);
      full = err;
      fullThrew++;
    }
    if (exact === undefined) continue;
    claimed++;
    // Same keys, values and order; never a body that the full gathering rejects.
    assert.deepEqual([...exact], full, text);
  }
  // The common shape must be taken most of the time, and the generator must reach the other paths.
  assert.ok(claimed > objects / 2 && claimed < objects, `claimed ${claimed} of ${objects}`);
  assert.ok(fullThrew > 100, `full gathering rejected ${fullThrew}`);
});

Deno.test("fastApiFlowBody builds exactly the general path's event, or leaves the body to it", () => {
  let claimed = 0, objects = 0, events = 0;
  for (const text of bodies(6000, 2027)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      continue;
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) continue;
    objects++;
    const body = parsed as Record<string, unknown>;
    // A clock that moves, so that an event timed by a different read would show.
    let tick = NOW;
    const general = outcome(() => generalApiFlowBody(body, () => tick++, APP));
    if ("event" in general) events++;
    tick = NOW;
    const fast = fastApiFlowBody(body, () => tick++, APP);
    if (fast === undefined) continue;
    claimed++;
    // Never a body the general path refuses; the same event, key for key and in the same key order.
    assert.deepEqual(plain({ event: fast }), plain(general), text);
    assert.deepEqual(Object.keys(fast), Object.keys((general as { event: FlowEvent }).event), text);
  }
  // The common shape must be taken most of the time, and the generator must reach the other paths.
  assert.ok(claimed > events / 2 && claimed < events && events < objects, `claimed ${claimed} of ${events}`);
});

Deno.test("fastApiFlowBody leaves names, objects, other spellings and edge times to the general path", () => {
  const base = {
    State: 3,
    Src: "192.0.2.1:1",
    Dst: "192.0.2.2:2",
    Experiment: 1,
    Activity: 2,
    StartTs: "2025-03-01T10:00:00Z",
    EndTs: "2025-03-01T10:00:01Z",
  };
  assert.ok(fastApiFlowBody(base, NOW, APP));
  for (
    const change of [
      { State: "end" },
      { Experiment: "atlas" },
      { Src: { IP: "192.0.2.1", Port: 1 } },
      { Src: "[fe80::1%eth0]:1", Dst: "[fe80::2]:2" },
      { StartTs: "0001-01-01T00:00:00Z" },
      { StartTs: "1970-01-01T00:00:00+01:00" },
      { EndTs: "2025-03-01T09:00:00Z" },
      { Family: 10 },
      { state: 3 },
    ]
  ) {
    assert.equal(fastApiFlowBody({ ...base, ...change }, NOW, APP), undefined, JSON.stringify(change));
  }
  // Keys for-in would find beyond the body's own: another prototype, or an enumerable key on Object's.
  assert.equal(fastApiFlowBody(Object.assign(Object.create({ State: 2 }), base), NOW, APP), undefined);
  const proto = Object.prototype as Record<string, unknown>;
  proto.Protocol = 1;
  try {
    assert.equal(fastApiFlowBody({ ...base }, NOW, APP), undefined);
  } finally {
    delete proto.Protocol;
  }
  assert.ok(fastApiFlowBody({ ...base }, NOW, APP));
});

Deno.test("exactApiFields leaves other spellings, unknown and inherited keys to the full gathering", () => {
  assert.equal(exactApiFields({ state: 2 }), undefined);
  assert.equal(exactApiFields({ State: 2, Foo: 1 }), undefined);
  assert.equal(exactApiFields(JSON.parse('{"__proto__": 1}')), undefined);
  assert.equal(exactApiFields(Object.create({ State: 2 })), undefined);
  assert.deepEqual([...exactApiFields({ Src: "1.2.3.4:5", State: 2, EndTs: null })!], [
    ["Src", "1.2.3.4:5"],
    ["State", 2],
  ]);
});

Deno.test("POST /flow over seeded bodies: the events and 400 texts of parseApiFlowBody, through HTTP", async () => {
  const events: FlowEvent[] = [];
  const plugin = new ApiPlugin({ bindAddress: "127.0.0.1", bindPort: 0, application: APP });
  await plugin.start({
    emit: (e) => {
      events.push(e);
      return { accepted: true };
    },
  });
  const client = await RawHttpClient.connect(plugin.port);
  try {
    const all = bodies(2000, 99);
    let ok = 0, bad = 0;
    for (const text of all) {
      const bytes = encoder.encode(text);
      let parsed: unknown;
      try {
        parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
      } catch {
        continue; // not JSON: the general path's JSON error, covered by api_test.ts
      }
      // Times given, so "now" does not enter the answer (the general path is run at another moment).
      const o = parsed as Record<string, unknown> | null;
      if (
        typeof o === "object" && o !== null &&
        ![o.StartTs, o.EndTs].every((t) => typeof t === "string" && t.startsWith("20"))
      ) continue;
      const before = events.length;
      const head = encoder.encode(
        `POST /flow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${bytes.length}\r\n\r\n`,
      );
      const request = new Uint8Array(head.length + bytes.length);
      request.set(head);
      request.set(bytes, head.length);
      await client.send(request);
      const raw = await client.response();
      // The client reads Latin-1; the answer is UTF-8.
      const res = {
        status: raw.status,
        text: new TextDecoder().decode(Uint8Array.from(raw.body, (c) => c.charCodeAt(0))),
      };
      const general = outcome(() => parseApiFlowBody(parsed, NOW, APP));
      if ("event" in general) {
        assert.equal(res.status, 200, `${text} -> ${res.text}`);
        assert.equal(events.length, before + 1);
        const got = events[events.length - 1]!;
        assert.deepEqual(plain({ event: got }), plain(general), text);
        assert.equal(res.text, apiFlowEchoText(general.event));
        ok++;
      } else {
        assert.equal(res.status, 400, `${text} -> ${res.text}`);
        assert.equal(events.length, before, "a rejected body emits nothing");
        assert.ok("field" in general, `unexpected failure ${JSON.stringify(general)}`);
        assert.equal(res.text, goJson({ message: general.message, field: general.field }, true), text);
        bad++;
      }
    }
    assert.ok(ok > 100 && bad > 100, `ok ${ok}, bad ${bad}`);
  } finally {
    client.close();
    await plugin.stop();
  }
});
