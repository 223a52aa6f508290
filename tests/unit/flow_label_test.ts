import assert from "node:assert/strict";
import {
  decodeExtensionHeaderTag,
  decodeFlowLabel,
  decodeScitag,
  encodeFlowLabel,
  ENTROPY_MASK,
  extensionHeaderTag,
  FLOW_LABEL_MASK,
  lostIdBits,
  randomFlowLabelEntropy,
  scitag,
  SEMANTIC_MASK,
  truncationWarning,
} from "../../src/scitags/flow_label.ts";

// Pairs from flowd's iperf plugin and the CMSSW mix-up, with the label values the collectors decode.
const VECTORS: Array<[number, number, number]> = [
  [2, 9, 65572],
  [2, 19, 65612],
  [3, 3, 196620],
  [3, 4, 196624],
  [4, 3, 32780],
  [4, 4, 32784],
  [5, 10, 163880],
  [5, 14, 163896],
  [3, 14, 196664],
];

Deno.test("flow label: published test vectors (no entropy)", () => {
  for (const [exp, act, label] of VECTORS) {
    assert.deepEqual(encodeFlowLabel(exp, act, 0), label, `exp ${exp} act ${act}`);
    assert.deepEqual(decodeFlowLabel(label), { experimentId: exp, activityId: act, entropy: 0 });
  }
});

Deno.test("flow label: masks partition the 20 bits", () => {
  assert.deepEqual(SEMANTIC_MASK, 0x3fefc);
  assert.deepEqual(ENTROPY_MASK, (1 << 19) | (1 << 18) | (1 << 8) | (1 << 1) | 1);
  assert.deepEqual(SEMANTIC_MASK & ENTROPY_MASK, 0);
  assert.deepEqual(SEMANTIC_MASK | ENTROPY_MASK, FLOW_LABEL_MASK);
});

Deno.test("flow label: worked example 0x7FEFE from the capture", () => {
  // Entropy bits 19..18 = 01, bit 8 = 0, bits 1..0 = 10.
  const entropy = (0b01 << 18) | (0 << 8) | 0b10;
  assert.deepEqual(encodeFlowLabel(0xffff, 0xffff, entropy), 0x7fefe);
  // Entropy given as a full random word: bits outside the entropy positions are ignored.
  assert.deepEqual(encodeFlowLabel(0xffff, 0xffff, entropy | SEMANTIC_MASK | 0xfff00000), 0x7fefe);
});

Deno.test("flow label: experiment 1, activity 2 sets bit 17 and bit 3", () => {
  assert.deepEqual(encodeFlowLabel(1, 2, 0), 0x20008);
  assert.deepEqual(encodeFlowLabel(1 << 8, 0, 0), 1 << 9); // experiment bit 8 lands on label bit 9
});

Deno.test("flow label: round trip over every 9-bit experiment and 6-bit activity", () => {
  const entropies = [0, ENTROPY_MASK, 0x40002, 0x80101];
  for (let exp = 0; exp <= 511; exp++) {
    for (let act = 0; act <= 63; act++) {
      for (const r of entropies) {
        const label = encodeFlowLabel(exp, act, r);
        assert.ok(label >= 0 && label <= FLOW_LABEL_MASK);
        const d = decodeFlowLabel(label);
        if (d.experimentId !== exp || d.activityId !== act || d.entropy !== r) {
          throw new Error(`round trip failed for exp ${exp} act ${act} entropy ${r}: ${JSON.stringify(d)}`);
        }
      }
    }
  }
});

Deno.test("flow label: semantics never touch entropy bits and entropy never touches semantics", () => {
  for (let i = 0; i < 2000; i++) {
    const exp = Math.floor(Math.random() * 0x1_0000_0000);
    const act = Math.floor(Math.random() * 0x1_0000_0000);
    const r = Math.floor(Math.random() * 0x1_0000_0000);
    const label = encodeFlowLabel(exp, act, r);
    assert.deepEqual(label & SEMANTIC_MASK, encodeFlowLabel(exp, act, 0));
    assert.deepEqual(label & ENTROPY_MASK, r & ENTROPY_MASK);
    assert.deepEqual(encodeFlowLabel(exp, act, 0) & ENTROPY_MASK, 0);
    assert.deepEqual(encodeFlowLabel(0, 0, r) & SEMANTIC_MASK, 0);
  }
});

Deno.test("flow label: ids beyond 9/6 bits keep only their low bits", () => {
  assert.deepEqual(encodeFlowLabel(512 + 3, 64 + 14, 0), encodeFlowLabel(3, 14, 0));
  assert.deepEqual(encodeFlowLabel(0xffff_ffff, 0xffff_ffff, 0), SEMANTIC_MASK);
});

Deno.test("flow label: rejects bad inputs", () => {
  assert.throws(() => encodeFlowLabel(-1, 1, 0), { name: "RangeError", message: /experiment id -1/ });
  assert.throws(() => encodeFlowLabel(1, 1.5, 0), { name: "RangeError", message: /activity id 1\.5/ });
  assert.throws(() => encodeFlowLabel(1, 1, Number.NaN), { name: "RangeError", message: /entropy/ });
  assert.throws(() => decodeFlowLabel(0x100000), { name: "RangeError", message: /20 bits/ });
  assert.throws(() => decodeFlowLabel(-1), RangeError);
});

Deno.test("flow label: random entropy stays within the entropy bits and uses all of them", () => {
  let seenSet = 0;
  let seenClear = 0;
  for (let i = 0; i < 500; i++) {
    const r = randomFlowLabelEntropy();
    assert.deepEqual(r & ~ENTROPY_MASK, 0, `entropy ${r.toString(16)} outside the mask`);
    seenSet |= r;
    seenClear |= ~r & ENTROPY_MASK;
  }
  assert.deepEqual(seenSet, ENTROPY_MASK);
  assert.deepEqual(seenClear, ENTROPY_MASK);
});

Deno.test("extension-header tag: exp << 8 | act, 24 bits", () => {
  assert.deepEqual(extensionHeaderTag(0x0123, 0x45), 0x012345);
  assert.deepEqual(extensionHeaderTag(3, 14), 0x030e);
  assert.deepEqual(extensionHeaderTag(0xffff, 0xffff), 0xffffff);
  assert.deepEqual(extensionHeaderTag(0x1_0001, 0x1ff), 0x0001ff);
  assert.deepEqual(extensionHeaderTag(0xffff_ffff, 0), 0xffff00);
  assert.deepEqual(decodeExtensionHeaderTag(0x012345), { experimentId: 0x0123, activityId: 0x45 });
  assert.throws(() => decodeExtensionHeaderTag(0x1000000), { name: "RangeError", message: /24 bits/ });
});

Deno.test("scitag: exp << 6 | act, 65..65535", () => {
  assert.deepEqual(scitag(3, 14), 206);
  assert.deepEqual(scitag(3, 23), 215);
  assert.deepEqual(scitag(3, 24), 216);
  assert.deepEqual(scitag(1, 1), 65);
  assert.deepEqual(scitag(1023, 63), 65535);
  assert.deepEqual(scitag(2, 0), 128);
  assert.deepEqual(decodeScitag(206), { experimentId: 3, activityId: 14 });
  assert.throws(() => scitag(0, 5), { name: "RangeError", message: /experiment id 0/ });
  assert.throws(() => scitag(1024, 1), { name: "RangeError", message: /experiment id 1024/ });
  assert.throws(() => scitag(3, 64), { name: "RangeError", message: /activity id 64/ });
  assert.throws(() => scitag(1, 0), { name: "RangeError", message: /below 65/ });
  assert.throws(() => decodeScitag(64), { name: "RangeError", message: /65\.\.65535/ });
  assert.throws(() => decodeScitag(65536), RangeError);
});

Deno.test("lost id bits: per encoding", () => {
  assert.deepEqual(lostIdBits("flowLabel", 511, 63), { experiment: 0, activity: 0 });
  assert.deepEqual(lostIdBits("flowLabel", 512, 64), { experiment: 512, activity: 64 });
  assert.deepEqual(lostIdBits("flowLabel", 600, 70), { experiment: 512, activity: 64 });
  assert.deepEqual(lostIdBits("flowLabel", 0xffff_ffff, 0), { experiment: 0xffff_fe00, activity: 0 });
  assert.deepEqual(lostIdBits("extensionHeader", 600, 70), { experiment: 0, activity: 0 });
  assert.deepEqual(lostIdBits("extensionHeader", 0x1_0000, 0x100), { experiment: 0x1_0000, activity: 0x100 });
  assert.deepEqual(lostIdBits("extensionHeader", 0xffff, 0xff), { experiment: 0, activity: 0 });
});

Deno.test("truncation warning names the id and what is carried instead", () => {
  assert.deepEqual(truncationWarning("flowLabel", 3, 14), undefined);
  assert.deepEqual(
    truncationWarning("flowLabel", 600, 14),
    "experiment 600 does not fit the 9 bits of a flow label: carried as 88",
  );
  const both = truncationWarning("extensionHeader", 0x1_0002, 0x101) ?? "";
  assert.ok(both.includes("experiment 65538") && both.includes("carried as 2"), both);
  assert.ok(both.includes("activity 257") && both.includes("carried as 1"), both);
});
