import assert from "node:assert/strict";
import { effectiveCapabilities, kernelVersion, needsOf } from "../../src/doctor/checks.ts";
import { doctorPasses, renderCheck } from "../../src/cli/doctor.ts";
import { loadBuiltinConfig } from "../../src/config/load.ts";

Deno.test("doctor: kernel releases and capability sets are read as the kernel writes them", () => {
  assert.deepEqual(kernelVersion("6.1.0-18-cloud-amd64"), [6, 1]);
  assert.deepEqual(kernelVersion("5.14.0-427.el9.x86_64"), [5, 14]);
  assert.deepEqual(kernelVersion("weird"), [0, 0]);
  const status =
    "Name:\tdeno\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
  assert.equal(effectiveCapabilities(status), 0x1ffffffffffn);
  assert.equal(effectiveCapabilities("CapEff:\t0000000000000000\n"), 0n);
  assert.equal(effectiveCapabilities("no such line"), 0n);
});

Deno.test("doctor: only a failed check the configuration needs fails it; the fix is printed under the line", async () => {
  const pass = { name: "a", verdict: "pass", detail: "fine", needed: true } as const;
  const optionalFail = { name: "b", verdict: "fail", detail: "bad", needed: false, fix: "do x" } as const;
  const neededFail = { ...optionalFail, needed: true };
  assert.equal(doctorPasses([pass, optionalFail]), true);
  assert.equal(doctorPasses([pass, neededFail]), false);
  assert.equal(renderCheck(neededFail), "FAIL  b: bad\n      fix: do x");
  assert.equal(renderCheck(pass), "pass  a: fine");
  const quick = (await loadBuiltinConfig("builtin:quickstart")).config;
  assert.deepEqual(needsOf(quick), { marker: false, sockOps: false, bpf: false });
});
