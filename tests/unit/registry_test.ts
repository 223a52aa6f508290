import assert from "node:assert/strict";
import { normalizeName, Registry, RegistryError } from "../../src/scitags/registry.ts";

const reg = Registry.embedded();

function assertRegistryError(fn: () => unknown, message: RegExp): RegistryError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof RegistryError, `expected a RegistryError, got ${caught}`);
  assert.match(caught.message, message);
  return caught;
}

Deno.test("registry: the embedded copy is the 2025-09-04 registry with 14 experiments", () => {
  assert.equal(reg.modified, "2025-09-04T12:01:55.844133+00:00");
  assert.deepEqual(
    reg.experiments.map((e) => `${e.id}:${e.name}`),
    [
      "1:default",
      "2:atlas",
      "3:cms",
      "4:lhcb",
      "5:alice",
      "6:belleii",
      "7:ska",
      "8:dune",
      "9:lsst",
      "10:ilc",
      "11:auger",
      "12:juno",
      "13:nova",
      "14:xenon",
    ],
  );
  assert.equal(Registry.embedded(), reg);
});

Deno.test("registry: names as real clients spell them", () => {
  for (
    const name of ["Data Challenge", "datachallenge", "data-challenge", "DATA_CHALLENGE", "DataChallenge"]
  ) {
    assert.equal(reg.activityId("cms", name), 4, name);
    assert.equal(reg.activityId("atlas", name), 26, name);
  }
  assert.equal(reg.experimentId("ATLAS"), 2);
  assert.equal(reg.experimentId("Belle II"), 6);
  assert.equal(reg.experimentId("belle-ii"), 6);
  assert.equal(reg.activityId("CMS", "analysis input"), 14);
  assert.equal(reg.activityId("atlas", "upload/download (job)"), 22);
  assert.equal(reg.activityId("atlas", "UploadDownloadJob"), 22);
  assert.equal(reg.activityId("alice", "cli-download"), 14);
  assert.equal(reg.activityId("cms", "perfsonar"), 2);
  // Activity ids are per experiment.
  assert.equal(reg.activityId("atlas", "Staging"), 19);
  assert.equal(reg.activityId("cms", "Staging"), 16);
  assert.equal(reg.activityId(3, "Staging"), 16);
  assert.equal(reg.activityId("3", "Staging"), 16);
});

Deno.test("registry: ids as numbers or numeric strings pass through", () => {
  assert.equal(reg.experimentId(2), 2);
  assert.equal(reg.experimentId("2"), 2);
  assert.equal(reg.experimentId(" 14 "), 14);
  assert.equal(reg.activityId("atlas", "26"), 26);
  assert.equal(reg.activityId("atlas", 26), 26);
  // Newer than the embedded copy: a numeric id is not second-guessed.
  assert.equal(reg.experimentId(300), 300);
  assert.equal(reg.activityId(300, 7), 7);
  assert.equal(reg.experimentId(0xffff_ffff), 0xffff_ffff);
  assertRegistryError(() => reg.experimentId(-1), /experiment id -1 is not an integer/);
  assertRegistryError(() => reg.activityId(2, 1.5), /activity id 1\.5 is not an integer/);
  assertRegistryError(() => reg.experimentId(2 ** 32), /experiment id 4294967296/);
  assertRegistryError(() => reg.experimentId("4294967296"), /experiment id "4294967296"/);
  // Not decimal: read as a name, and no experiment is called that.
  assertRegistryError(() => reg.experimentId("0x2"), /unknown experiment "0x2"/);
});

Deno.test("registry: an unknown name lists the close matches", () => {
  const e1 = assertRegistryError(
    () => reg.activityId("atlas", "Data Chalenge"),
    /did you mean "Data Challenge" \(26\)\?/,
  );
  assert.deepEqual(e1.suggestions, ["Data Challenge"]);
  assert.match(e1.message, /unknown activity "Data Chalenge" of experiment atlas \(2\)/);
  const e2 = assertRegistryError(
    () => reg.experimentId("atlsa"),
    /unknown experiment "atlsa"; did you mean "atlas"/,
  );
  assert.deepEqual(e2.suggestions, ["atlas"]);
  const e3 = assertRegistryError(() => reg.activityId("atlas", "Functional"), /did you mean/);
  assert.deepEqual(e3.suggestions, ["Functional Test", "Functional Test WebDAV", "Functional Test XrootD"]);
  // Nothing close: the message lists what exists instead.
  const e4 = assertRegistryError(
    () => reg.experimentId("cern"),
    /unknown experiment "cern"; known: "default" \(1\)/,
  );
  assert.deepEqual(e4.suggestions, []);
  assert.match(e4.message, /"xenon" \(14\)/);
  assertRegistryError(() => reg.activityId("lhcb", "---"), /has no letters or digits/);
});

Deno.test("registry: activity names need an experiment the registry knows", () => {
  assertRegistryError(() => reg.activityId(300, "Staging"), /experiment 300 is not in the registry/);
  assertRegistryError(() => reg.activityId("cern", "Staging"), /unknown experiment "cern"/);
});

Deno.test("registry: every entry resolves both ways, by name and by a respelt name", () => {
  const respell = (name: string) => name.toUpperCase().replace(/[\s/()]+/g, "_");
  let activities = 0;
  for (const exp of reg.experiments) {
    assert.equal(reg.experimentId(exp.name), exp.id);
    assert.equal(reg.experimentId(respell(exp.name)), exp.id);
    assert.equal(reg.experimentName(exp.id), exp.name);
    for (const act of exp.activities) {
      activities++;
      assert.equal(reg.activityId(exp.name, act.name), act.id, `${exp.name}/${act.name}`);
      assert.equal(reg.activityId(exp.id, respell(act.name)), act.id, `${exp.name}/${respell(act.name)}`);
      assert.equal(reg.activityName(exp.id, act.id), act.name);
    }
  }
  assert.equal(activities, 114);
  assert.equal(reg.experimentName(300), undefined);
  assert.equal(reg.activityName(2, 5), undefined);
  assert.equal(reg.activityName(300, 1), undefined);
});

Deno.test("registry: normalised names ignore case, spaces and punctuation", () => {
  assert.equal(normalizeName("Upload/Download (Job)"), "uploaddownloadjob");
  assert.equal(normalizeName(" DATA_CHALLENGE "), "datachallenge");
  assert.equal(normalizeName("T0 Tape"), "t0tape");
});

const SMALL = {
  experiments: [
    {
      expName: "demo",
      expId: 20,
      activities: [
        { activityName: "Data Challenge", activityId: 4 },
        { activityName: "data-challenge", activityId: 5 },
        { activityName: "Bulk", activityId: 6 },
      ],
    },
  ],
  version: 1,
  modified: "2026-01-01T00:00:00+00:00",
};

Deno.test("registry: fromJson reads a refreshed registry; spelling clashes are reported as ambiguous", () => {
  const r = Registry.fromJson(JSON.stringify(SMALL));
  assert.equal(r.modified, "2026-01-01T00:00:00+00:00");
  assert.equal(r.experimentId("Demo"), 20);
  assert.equal(r.activityId("demo", "Data Challenge"), 4);
  assert.equal(r.activityId("demo", "data-challenge"), 5);
  // Case-insensitive equality still picks one; only the looser spelling match sees both.
  assert.equal(r.activityId("demo", "DATA CHALLENGE"), 4);
  assertRegistryError(
    () => r.activityId("demo", "DataChallenge"),
    /ambiguous: "Data Challenge" \(4\), "data-challenge" \(5\)/,
  );
  assertRegistryError(() => r.experimentId("atlas"), /unknown experiment "atlas"; known: "demo" \(20\)/);
  const { modified: _m, ...noModified } = SMALL;
  assert.equal(Registry.fromObject(noModified).modified, undefined);
});

Deno.test("registry: fromJson names what is wrong with a malformed registry", () => {
  const bad = (patch: (d: Record<string, unknown>) => void): string => {
    const d = JSON.parse(JSON.stringify(SMALL));
    patch(d);
    return JSON.stringify(d);
  };
  const exp0 = (d: Record<string, unknown>) => (d.experiments as Array<Record<string, unknown>>)[0]!;
  const act = (d: Record<string, unknown>, j: number) =>
    (exp0(d).activities as Array<Record<string, unknown>>)[j]!;
  const cases: Array<[string, RegExp]> = [
    ["{", /SciTags registry is not JSON/],
    ["[]", /\(registry\): expected an object/],
    [bad((d) => (d.version = 2)), /version: expected 1, got 2/],
    [bad((d) => delete d.version), /version: expected 1, got undefined/],
    [bad((d) => (d.modified = "yesterday")), /modified: "yesterday" is not an RFC 3339 date-time/],
    [bad((d) => (d.experiments = [])), /experiments: expected a non-empty array/],
    [bad((d) => (exp0(d).expId = "20")), /experiments\[0\]\.expId: "20" is not an integer/],
    [bad((d) => (exp0(d).expName = "")), /experiments\[0\]\.expName: "" is not a name/],
    [bad((d) => (exp0(d).activities = [])), /experiments\[0\]\.activities: expected a non-empty array/],
    [bad((d) => delete act(d, 1).activityName), /experiments\[0\]\.activities\[1\]\.activityName: undefined/],
    [
      bad((d) => (act(d, 2).activityId = -3)),
      /experiments\[0\]\.activities\[2\]\.activityId: -3 is not an integer/,
    ],
    [bad((d) => (act(d, 2).activityId = 4)), /activities\[2\]\.activityId: 4 is used by an earlier activity/],
    [
      bad((d) => (d.experiments as unknown[]).push(JSON.parse(JSON.stringify(exp0(d))))),
      /experiments\[1\]\.expId: 20 is used by an earlier experiment/,
    ],
  ];
  for (const [text, message] of cases) {
    assertRegistryError(() => Registry.fromJson(text, "SciTags registry"), message);
  }
  assertRegistryError(
    () => Registry.fromJson("{}", "https://scitags.org/api.json"),
    /^https:\/\/scitags\.org\/api\.json is not a valid registry: version: expected 1/,
  );
});

Deno.test("registry: the embedded data passes the same check fromJson applies", () => {
  const text = JSON.stringify({
    experiments: reg.experiments.map((e) => ({
      expName: e.name,
      expId: e.id,
      activities: e.activities.map((a) => ({ activityName: a.name, activityId: a.id })),
    })),
    version: 1,
    modified: reg.modified,
  });
  const again = Registry.fromJson(text);
  assert.deepEqual(again.experiments, reg.experiments);
});
