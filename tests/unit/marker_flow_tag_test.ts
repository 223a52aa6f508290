import assert from "node:assert/strict";
import { flowTag, formatTag, tagEncoding, tagTruncation } from "../../src/backends/marker/flow_tag.ts";
import { ENTROPY_MASK, SEMANTIC_MASK } from "../../src/scitags/flow_label.ts";

Deno.test("marker flow tag, label strategy: SciTags layout (exp bit-reversed, activity << 2) plus entropy", () => {
  // exp/act pairs with the label values collectors decode (flowd's iperf plugin comments).
  for (const [exp, act, label] of [[2, 9, 65572], [3, 4, 196624], [5, 14, 163896], [3, 14, 196664]]) {
    assert.equal(flowTag("label", exp!, act!, 0), label, `exp ${exp} act ${act}`);
  }
  // The worked example of the original's capture: exp/act 0xFFFF with entropy bits 19..18=01, 8=0, 1..0=10.
  assert.equal(flowTag("label", 0xffff, 0xffff, 0x40002), 0x7fefe);
  const tag = flowTag("label", 3, 14, 0xfffff);
  assert.equal(tag & SEMANTIC_MASK, 196664, "entropy never touches experiment or activity bits");
  assert.equal(tag & ENTROPY_MASK, ENTROPY_MASK, "entropy lands in bits 19, 18, 8, 1, 0");
  const drawn = new Set(Array.from({ length: 64 }, () => flowTag("label", 3, 14) & ENTROPY_MASK));
  assert.ok(drawn.size > 1, "fresh entropy is drawn per start when none is given");
});

Deno.test("marker flow tag, option strategies: (experiment << 8) | activity, 24 bits, no entropy", () => {
  for (const s of ["hopByHop", "destination", "hopByHopDestination"] as const) {
    assert.equal(flowTag(s, 0x0123, 0x45, 0xfffff), 0x012345);
    assert.equal(flowTag(s, 0x12345, 0x1ff, 0), 0x2345ff, "low 16 experiment bits, low 8 activity bits");
    assert.equal(tagEncoding(s), "extensionHeader");
  }
  assert.equal(tagEncoding("label"), "flowLabel");
});

Deno.test("marker flow tag: truncation is reported, formatting pads to the wire width", () => {
  assert.equal(tagTruncation("label", 511, 63), undefined);
  assert.match(tagTruncation("label", 512, 2)!, /experiment 512 does not fit the 9 bits/);
  assert.match(tagTruncation("hopByHop", 3, 256)!, /activity 256 does not fit the 8 bits/);
  assert.equal(formatTag("label", 0x123), "0x00123");
  assert.equal(formatTag("destination", 0x123), "0x000123");
});
