/**
 * Experiment and activity names where flows come in: named-pipe lines and API bodies (parsed, and over
 * real HTTP), resolved with the registry in use; unknown names are errors that suggest close matches.
 */
import assert from "node:assert/strict";
import { ApiPlugin } from "../../src/plugins/api.ts";
import { ApiFlowError, parseApiFlowBody } from "../../src/plugins/api_json.ts";
import { parsePipeLine, PipeLineError, registryIdResolver } from "../../src/plugins/pipe_line.ts";
import { Registry } from "../../src/scitags/registry.ts";
import { RecordingSink } from "../helpers/recording_sink.ts";

const resolveId = registryIdResolver(() => Registry.embedded());
const ctx = { now: 1_700_000_000_000_000, application: "test", resolveId };
const NOW = 1_700_000_000_000_000;

function ids(line: string): [number, number] {
  const e = parsePipeLine(line, ctx)!;
  return [e.experimentId, e.activityId];
}

Deno.test("pipe line: experiment and activity by name, in the spellings clients write", () => {
  assert.deepEqual(ids("start tcp ::1 1 ::1 2 atlas Staging"), [2, 19]);
  assert.deepEqual(ids("start tcp ::1 1 ::1 2 CMS staging"), [3, 16]);
  assert.deepEqual(ids("start tcp ::1 1 ::1 2 atlas DataChallenge"), [2, 26]);
  assert.deepEqual(ids("start tcp ::1 1 ::1 2 atlas data-challenge"), [2, 26]);
  assert.deepEqual(ids("start tcp ::1 1 ::1 2 default data_challenge"), [1, 4]);
  // Numbers still work, mixed with names, and ids outside the registry pass through.
  assert.deepEqual(ids("start tcp ::1 1 ::1 2 2 Staging"), [2, 19]);
  assert.deepEqual(ids("start tcp ::1 1 ::1 2 lhcb 3"), [4, 3]);
  assert.deepEqual(ids("start tcp ::1 1 ::1 2 4000 77"), [4000, 77]);
});

Deno.test("pipe line: unknown names are PipeLineErrors listing close matches", () => {
  const cases: [string, RegExp][] = [
    ["start tcp ::1 1 ::1 2 atlsa 1", /unknown experiment "atlsa"; did you mean "atlas" \(2\)\?/],
    [
      "start tcp ::1 1 ::1 2 cms Stagin",
      /unknown activity "Stagin" of experiment cms \(3\); did you mean "Staging" \(16\)\?/,
    ],
    [
      "start tcp ::1 1 ::1 2 4000 Staging",
      /experiment 4000 is not in the registry, so activity "Staging" cannot be resolved/,
    ],
    [
      "start tcp ::1 1 ::1 2 atlas 99999999999",
      /activity id "99999999999" is not an integer in 0\.\.4294967295/,
    ],
  ];
  for (const [line, re] of cases) {
    assert.throws(
      () => parsePipeLine(line, ctx),
      (e) => e instanceof PipeLineError && re.test(e.message),
      line,
    );
  }
  // Without the registry resolver names are refused as before.
  assert.throws(
    () => parsePipeLine("start tcp ::1 1 ::1 2 atlas 1", { now: NOW, application: "t" }),
    /not an id/,
  );
});

const body = (experiment: unknown, activity: unknown) => ({
  State: "start",
  Src: "[::1]:1",
  Dst: "[::1]:2",
  Experiment: experiment,
  Activity: activity,
});

Deno.test("api body: Experiment and Activity as names or numbers", () => {
  const e = parseApiFlowBody(body("ATLAS", "Data Challenge"), NOW, "t", resolveId);
  assert.deepEqual([e.experimentId, e.activityId], [2, 26]);
  const mixed = parseApiFlowBody(body(3, "staging"), NOW, "t", resolveId);
  assert.deepEqual([mixed.experimentId, mixed.activityId], [3, 16]);
  const numeric = parseApiFlowBody(body("5", "1"), NOW, "t", resolveId);
  assert.deepEqual([numeric.experimentId, numeric.activityId], [5, 1]);
  assert.throws(
    () => parseApiFlowBody(body("atlass", 1), NOW, "t", resolveId),
    (e) =>
      e instanceof ApiFlowError && e.field === "Experiment" && /did you mean "atlas" \(2\)/.test(e.message),
  );
  assert.throws(
    () => parseApiFlowBody(body("cms", "Stagng"), NOW, "t", resolveId),
    (e) =>
      e instanceof ApiFlowError && e.field === "Activity" && /did you mean "Staging" \(16\)/.test(e.message),
  );
  assert.throws(
    () => parseApiFlowBody(body("atlas", 1), NOW, "t"),
    (e) =>
      e instanceof ApiFlowError &&
      /Experiment must be an integer in 0\.\.4294967295, not "atlas"/.test(e.message),
  );
});

Deno.test("api over HTTP: names in a POST /flow body; an unknown one is a 400 with suggestions", async () => {
  const sink = new RecordingSink();
  const plugin = new ApiPlugin({ bindAddress: "127.0.0.1", bindPort: 0, application: "t", resolveId });
  await plugin.start(sink);
  try {
    const post = async (b: unknown) => {
      const res = await fetch(`http://127.0.0.1:${plugin.port}/flow`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(b),
      });
      return { status: res.status, json: await res.json() };
    };
    const ok = await post(body("lhcb", "Data Challenge"));
    assert.equal(ok.status, 200);
    assert.deepEqual([ok.json.Experiment, ok.json.Activity], [4, 4]);
    assert.deepEqual([sink.events[0]!.experimentId, sink.events[0]!.activityId], [4, 4]);
    const bad = await post(body("dune", "prodution"));
    assert.equal(bad.status, 400);
    assert.match(JSON.stringify(bad.json), /unknown activity \\"prodution\\" of experiment dune \(8\)/);
    assert.equal(sink.events.length, 1);
  } finally {
    await plugin.stop();
  }
});
