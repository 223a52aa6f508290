/**
 * Seeded fuzzing of the pure parsers in process (hardening issue, Tests): named-pipe lines, API bodies,
 * firefly datagrams and configuration files. Each must reject bad input with its own error type, never
 * throw anything else, accept every valid input, and stay fast per input. FLOWD_GO_FUZZ_SEED reruns a seed;
 * FLOWD_GO_FUZZ_ITERATIONS makes a longer run.
 */
import assert from "node:assert/strict";
import { parsePipeLine, PipeLineError } from "../../src/plugins/pipe_line.ts";
import { ApiFlowError, parseApiFlowBody } from "../../src/plugins/api_json.ts";
import {
  buildFirefly,
  FireflyBuildError,
  FireflyParseError,
  fireflyToFlowEvent,
  parseFirefly,
} from "../../src/scitags/firefly.ts";
import { parseConfig } from "../../src/config/load.ts";
import { ConfigError } from "../../src/core/errors.ts";
import { fuzzInputs } from "../helpers/fuzz/inputs.ts";
import { fuzzIterations, fuzzSeed, mutateText, Prng } from "../helpers/fuzz/prng.ts";
import { ajvCheckFirefly } from "../helpers/firefly_schema.ts";

const SEED = fuzzSeed();
/** No single input may take this long: what catastrophic backtracking would look like. */
const SLOW_MS = 250;

/** Runs `check` on every input; on an unexpected outcome, fails naming the seed, the index and the input. */
function fuzz(
  name: string,
  inputs: readonly { text: string; validSource?: string }[],
  check: (text: string, valid: boolean) => void,
) {
  let slowest = 0, slowestAt = 0;
  inputs.forEach((input, i) => {
    const t0 = performance.now();
    try {
      check(input.text, input.validSource !== undefined);
    } catch (err) {
      throw new Error(
        `${name}: seed ${SEED}, input ${i} (${input.validSource ? "valid" : "mutant"}): ${
          err instanceof Error ? err.message : err
        }\n` +
          `input: ${JSON.stringify(input.text.slice(0, 300))}${
            input.text.length > 300 ? ` (+${input.text.length - 300} chars)` : ""
          }`,
      );
    }
    // The first inputs also pay for compiling the parsers.
    let took = performance.now() - t0;
    // A slow input is timed again: a parser that backtracks is slow every time, a descheduled process or
    // a GC pause on a loaded machine is not.
    for (let again = 0; again < 2 && took >= SLOW_MS; again++) {
      const t1 = performance.now();
      check(input.text, input.validSource !== undefined);
      took = Math.min(took, performance.now() - t1);
    }
    if (i >= 10 && took > slowest) [slowest, slowestAt] = [took, i];
  });
  console.error(
    `${name}: ${inputs.length} inputs, seed ${SEED}, slowest ${slowest.toFixed(1)} ms (input ${slowestAt})`,
  );
  assert.ok(slowest < SLOW_MS, `${name}: input ${slowestAt} took ${slowest} ms (each of three tries)`);
}

Deno.test("fuzz parsers: named-pipe lines", () => {
  fuzz("pipe lines", fuzzInputs("pipe", SEED, fuzzIterations(30_000)), (text, valid) => {
    try {
      const e = parsePipeLine(text, { now: 1_700_000_000_000_000, application: "fuzz" });
      if (valid) assert.ok(e, "a valid line gave no event");
    } catch (err) {
      if (!(err instanceof PipeLineError)) throw err;
      assert.ok(!valid, `a valid line was refused: ${err.message}`);
      assert.ok(err.message.length < 1000, `an error message of ${err.message.length} characters`);
    }
  });
});

Deno.test("fuzz parsers: API bodies", () => {
  fuzz("api bodies", fuzzInputs("api", SEED, fuzzIterations(30_000)), (text, valid) => {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      assert.ok(!valid, "a valid body is not JSON");
      return;
    }
    try {
      parseApiFlowBody(value, 1_700_000_000_000_000, "fuzz");
    } catch (err) {
      if (!(err instanceof ApiFlowError)) throw err;
      assert.ok(!valid, `a valid body was refused: ${err.message}`);
      assert.ok(err.message.length < 1000, `an error message of ${err.message.length} characters`);
    }
  });
});

Deno.test("fuzz parsers: firefly datagrams; every firefly built from an accepted one passes the schema", () => {
  fuzz("fireflies", fuzzInputs("firefly", SEED, fuzzIterations(30_000)), (text, valid) => {
    let event;
    try {
      event = fireflyToFlowEvent(parseFirefly(text, { repairStartTime: true }).document);
    } catch (err) {
      if (!(err instanceof FireflyParseError)) throw err;
      assert.ok(!valid, `a valid firefly was refused: ${err.message}`);
      assert.ok(err.message.length < 2000, `an error message of ${err.message.length} characters`);
      return;
    }
    let doc;
    try {
      doc = buildFirefly(event);
    } catch (err) {
      if (!(err instanceof FireflyBuildError)) throw err;
      return; // an event no firefly describes is not sent
    }
    const check = ajvCheckFirefly(doc);
    assert.ok(check.valid, `a firefly we would send fails the schema: ${check.errors.join("; ")}`);
  });
});

Deno.test("fuzz parsers: configuration files never throw anything but ConfigError, quickly", () => {
  const seeds = [
    "pidPath: /run/x.pid\nworkDir: /tmp/w\nplugins:\n  namedPipe:\n    pipePath: np\n    buffSize: 1000\n  api:\n    bindPort: 7777\n",
    "backends:\n  firefly:\n    sendToCollector: true\n    collectorAddress: 127.0.0.1\n  marker:\n    targetInterfaces: [lo]\n",
    "plugins:\n  perfsonar: {experimentId: atlas, activityId: 2}\nbackends:\n  marker: {}\nenrichers:\n  period: 1000\n  netlink: {}\n",
  ];
  const r = new Prng(SEED);
  const inputs = Array.from(
    { length: fuzzIterations(3_000) },
    () => ({ text: mutateText(r, r.pick(seeds), seeds) }),
  );
  fuzz("configuration", inputs, (text) => {
    try {
      parseConfig(text, "fuzz.yaml");
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      assert.ok(err.message.length < 3000, `a message of ${err.message.length} characters`);
    }
  });
});
