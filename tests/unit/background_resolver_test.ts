import assert from "node:assert/strict";
import { BackgroundResolver } from "../../src/net/background_resolver.ts";

const timing = { refreshMs: 40, timeoutMs: 30, retryMs: 20 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("background resolver: a lookup that never ends is waited on once, not started again and again", async () => {
  let calls = 0;
  const failures: string[] = [];
  const r = new BackgroundResolver("hang.example.org", timing, () => {
    calls++;
    return new Promise<string>(() => {});
  }, (err) => failures.push(err));
  const t0 = performance.now();
  await r.start(50);
  assert.ok(performance.now() - t0 < 200, "start waits at most its bound");
  await sleep(200);
  r.stop();
  assert.equal(r.current(), undefined);
  assert.equal(calls, 1, "one pending system lookup at a time");
  assert.ok(failures.length >= 3, `failures reported: ${failures.length}`);
  assert.match(failures[0]!, /no answer within 30 ms/);
});

Deno.test("background resolver: the last good address survives failures, and is refreshed", async () => {
  let answer: string | Error = "192.0.2.1";
  const r = new BackgroundResolver(
    "c.example.org",
    timing,
    () => answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer),
  );
  await r.start(100);
  assert.equal(r.current()?.toString(), "192.0.2.1");
  answer = new Error("SERVFAIL");
  await sleep(120);
  assert.equal(r.current()?.toString(), "192.0.2.1", "kept through failures");
  answer = "2001:db8::7";
  await sleep(120);
  assert.equal(r.current()?.toString(), "2001:db8::7");
  r.stop();
  assert.ok(r.counts.failures >= 1 && r.counts.lookups >= 3, JSON.stringify(r.counts));
});
