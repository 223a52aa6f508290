import assert from "node:assert/strict";
import {
  buildFirefly,
  FireflyBuildError,
  fireflyText,
  serializeFirefly,
  validateFireflyDocument,
} from "../../src/scitags/firefly.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { parseRfc3339Micros } from "../../src/core/time.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { Prng } from "../helpers/fuzz/prng.ts";
import { assertValidFirefly } from "../helpers/firefly_schema.ts";

const us = (text: string): number => parseRfc3339Micros(text)!;
const NOW = us("2025-03-01T09:00:01.000123Z");

/** The general path's text for an event, or the error it throws. */
function general(event: FlowEvent, now: number): string | Error {
  try {
    const doc = buildFirefly(event, { currentTime: now });
    const checked = validateFireflyDocument(doc);
    return checked.ok ? serializeFirefly(doc) : new Error(checked.errors.join("; "));
  } catch (err) {
    if (err instanceof FireflyBuildError) return err;
    throw err;
  }
}

Deno.test("fireflyText: byte for byte the built, validated and serialised firefly, or left to that path", () => {
  const rng = new Prng(0xf1f);
  const v4 = ["192.0.2.1", "10.0.0.7", "255.255.255.255", "0.0.0.0"].map((t) => IpAddress.parse(t));
  const v6 = ["2001:db8::1", "::1", "fe80::1%eth0", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8"].map((t) =>
    IpAddress.parse(t)
  );
  const times = [undefined, us("2025-03-01T09:00:00Z"), us("2025-03-01T09:00:00.5Z"), 0, 1e20, -1, 1.5, NaN];
  const ports = [1, 2345, 65535, 0, 65536, -1, 80.5];
  const ids = [0, 1, 65535, 0xffff_ffff, 2 ** 32, -1, 1.5];
  const apps = ["flowd-go", "", 'quote " and \\ and \n', "naïve ✓", "<b>&"];
  let taken = 0, total = 0;
  for (let n = 0; n < 20_000; n++) {
    const family = rng.below(10) === 0 ? "ipv5" : rng.pick(["ipv4", "ipv6"] as const);
    const pool = family === "ipv4" ? v4 : v6;
    const address = () => rng.below(15) === 0 ? rng.pick([...v4, ...v6]) : rng.pick(pool);
    const port = () => rng.below(4) === 0 ? rng.pick(ports) : 1 + rng.below(65535);
    const id = () => rng.below(4) === 0 ? rng.pick(ids) : rng.below(70000);
    const time = () => rng.below(3) === 0 ? rng.pick(times) : NOW - rng.below(1e9);
    const event = {
      state: rng.pick(["start", "end", "end", "start", "ongoing", "bogus"]),
      protocol: rng.pick(["tcp", "udp", "tcp", "sctp"]),
      family,
      src: { address: address(), port: port() },
      dst: { address: address(), port: port() },
      experimentId: id(),
      activityId: id(),
      application: rng.below(20) === 0 ? undefined : rng.pick(apps),
      ...(rng.below(2) ? { startTime: time() } : {}),
      ...(rng.below(2) ? { endTime: time() } : {}),
      ...(rng.below(20) === 0 ? { relayed: { usage: { received: 5 } } } : {}),
    } as unknown as FlowEvent;
    const now = rng.below(30) === 0 ? rng.pick(times)! : NOW + rng.below(1e6);
    const fast = fireflyText(event, now);
    total++;
    if (fast === undefined) continue;
    taken++;
    const want = general(event, now);
    assert.ok(typeof want === "string", `${JSON.stringify(event)}: the general path refuses it (${want})`);
    assert.equal(fast, want);
    if (taken % 500 === 0) assertValidFirefly(JSON.parse(fast));
  }
  assert.ok(taken > total / 10 && taken < total, `fireflyText took ${taken} of ${total}`);
});
