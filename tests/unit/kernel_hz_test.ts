import assert from "node:assert/strict";
import { CONFIG_HZ_CHOICES, snapHz } from "../../src/bpf/kernel_hz.ts";

Deno.test("kernel HZ: jiffies over a wait snap to the configured frequency, or to none", () => {
  for (const hz of CONFIG_HZ_CHOICES) {
    assert.equal(snapHz(hz * 0.12, 120), hz, `${hz}: exact`);
    assert.equal(snapHz(Math.round(hz * 0.12) + 1, 120), hz, `${hz}: one tick more`);
    assert.equal(snapHz(Math.round(hz * 0.12) - 1, 121), hz, `${hz}: one tick fewer, a late timer`);
  }
  assert.equal(snapHz(31, 126), 250, "250 Hz, the wait ran late");
  assert.equal(snapHz(36, 120), 300);
  assert.equal(snapHz(66, 120), undefined, "550 Hz is no frequency a kernel is built with");
  assert.equal(snapHz(0, 120), undefined);
  assert.equal(snapHz(10, 0), undefined);
});
