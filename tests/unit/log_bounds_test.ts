/** Log lines stay short whatever input they quote (hardening issue item 18). */
import assert from "node:assert/strict";
import { logger } from "../../src/core/log.ts";
import { captureLogs } from "../helpers/log_capture.ts";
import { clip, MAX_LINE_CHARS } from "../../src/core/clip.ts";
import { parsePipeLine } from "../../src/plugins/pipe_line.ts";

Deno.test("log bounds: a 60 KB value is quoted by its first 200 characters and the count of the rest", () => {
  using logs = captureLogs("info");
  const name = "é".repeat(60_000);
  logger("test").warn("ignoring a bad line", { reason: `unknown experiment ${name}`, line: name });
  const [line] = logs.lines;
  assert.ok(line!.length < 700, `a line of ${line!.length} characters`);
  assert.match(line!, /line="é{200}…\(\+59800 chars\)"/);
  assert.match(line!, /reason="unknown experiment é{181}…\(\+59819 chars\)"/);
});

Deno.test("log bounds: many fields and a long message still make one bounded line", () => {
  using logs = captureLogs("info");
  const fields = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`f${i}`, "v".repeat(500)]));
  logger("test").error("m".repeat(100_000), fields);
  const [line] = logs.lines;
  assert.ok(line!.length <= MAX_LINE_CHARS + 20, `a line of ${line!.length} characters`);
  assert.match(line!, /…\(line cut\)$/);
});

Deno.test("log bounds: a pipe line's parse error quotes the bad field clipped", () => {
  const big = "9".repeat(50_000);
  assert.throws(
    () => parsePipeLine(`start tcp 2001:db8::1 ${big} 2001:db8::2 443 2 3`, { now: 0, application: "t" }),
    (err: Error) => {
      assert.ok(err.message.length < 400, err.message.slice(0, 300));
      assert.match(err.message, /"9{200}…\(\+49800 chars\)" is not a port number/);
      return true;
    },
  );
});

Deno.test("log bounds: clip never cuts a surrogate pair", () => {
  const s = "a".repeat(199) + "😀" + "b";
  assert.equal(clip(s), "a".repeat(199) + "…(+3 chars)");
});
