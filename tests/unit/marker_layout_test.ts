/**
 * The TypeScript mirror of bpf/marker.h agrees with the C: struct sizes and member offsets as the compiled
 * object's BTF records them, and the enum and #define values as the header spells them.
 */
import assert from "node:assert/strict";
import {
  addedBytes,
  CONFIG_SIZE,
  decodeCounterSlot,
  decodeMatchAll,
  decodeTag,
  DEFAULT_MAX_FLOWS,
  encodeConfig,
  encodeFlowValueInto,
  encodeMatchAll,
  FLOW_COUNTERS_SIZE,
  FLOW_KEY_SIZE,
  FLOW_VALUE_SIZE,
  LINK_LAYER_CODES,
  MARKING_STRATEGY_CODES,
  MATCH_ALL_COUNTER_SLOT,
  MATCH_ALL_VALUE_SIZE,
  OPTION_HEADER_LEN,
  OPTION_TYPE,
  sumCounters,
} from "../../src/backends/marker/layout.ts";
import { ENTROPY_MASK } from "../../src/scitags/flow_label.ts";
import { hasCommand } from "../helpers/privileged.ts";

const header = await Deno.readTextFile(new URL("../../bpf/marker.h", import.meta.url));

function define(name: string): number {
  const m = new RegExp(`#define ${name}\\s+(\\S+)`).exec(header);
  assert.ok(m, `${name} is defined in marker.h`);
  return Number(m[1]);
}

function enumValue(name: string): number {
  const m = new RegExp(`\\b${name} = (\\d+),`).exec(header);
  assert.ok(m, `${name} is an enum value in marker.h`);
  return Number(m[1]);
}

Deno.test("marker layout: enum codes and constants match bpf/marker.h", () => {
  assert.deepEqual(MARKING_STRATEGY_CODES, {
    label: enumValue("MARKER_LABEL"),
    hopByHop: enumValue("MARKER_HOP_BY_HOP"),
    destination: enumValue("MARKER_DESTINATION"),
    hopByHopDestination: enumValue("MARKER_HOP_BY_HOP_DESTINATION"),
  });
  assert.deepEqual(LINK_LAYER_CODES, {
    ethernet: enumValue("MARKER_L2_ETHERNET"),
    none: enumValue("MARKER_L2_NONE"),
  });
  assert.equal(OPTION_TYPE, define("MARKER_OPT_TYPE"));
  assert.equal(OPTION_HEADER_LEN, define("MARKER_EH_LEN"));
  assert.equal(DEFAULT_MAX_FLOWS, define("MARKER_MAX_FLOWS"));
  assert.equal(MATCH_ALL_COUNTER_SLOT, define("MARKER_MATCH_ALL_SLOT"));
  assert.equal(ENTROPY_MASK, define("MARKER_LABEL_ENTROPY_MASK"));
  assert.deepEqual(
    (["label", "hopByHop", "destination", "hopByHopDestination"] as const).map(addedBytes),
    [0, 8, 8, 16],
  );
});

const object = new URL("../../bpf/build/marker.bpf.o", import.meta.url).pathname;
const canReadBtf = hasCommand("bpftool") && (() => {
  try {
    return Deno.statSync(object).isFile;
  } catch {
    return false;
  }
})();
if (!canReadBtf) console.error("SKIPPED (needs bpftool and bpf/build/marker.bpf.o): marker layout BTF check");

Deno.test({
  name: `marker layout: struct sizes and offsets match the compiled object's BTF${
    canReadBtf ? "" : " [SKIPPED]"
  }`,
  ignore: !canReadBtf,
  fn: async () => {
    const out = await new Deno.Command("bpftool", { args: ["btf", "dump", "file", object, "format", "raw"] })
      .output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const text = new TextDecoder().decode(out.stdout);
    const struct = (name: string) => {
      const m = new RegExp(`STRUCT '${name}' size=(\\d+) vlen=(\\d+)\\n((?:\\t.*\\n)+)`).exec(text);
      assert.ok(m, `struct ${name} in BTF`);
      const members = Object.fromEntries(
        [...m[3]!.matchAll(/'(\w+)' type_id=\d+ bits_offset=(\d+)/g)].map((x) => [x[1], Number(x[2]) / 8]),
      );
      return { size: Number(m[1]), members };
    };
    assert.deepEqual(struct("flow_key"), {
      size: FLOW_KEY_SIZE,
      members: { saddr: 0, daddr: 16, sport: 32, dport: 34, proto: 36, pad: 37 },
    });
    assert.deepEqual(struct("marker_config"), {
      size: CONFIG_SIZE,
      members: { strategy: 0, match_all: 4, l2: 8, reserved: 12 },
    });
    assert.deepEqual(struct("flow_value"), { size: FLOW_VALUE_SIZE, members: { tag: 0, counter_slot: 4 } });
    assert.deepEqual(struct("flow_counters"), {
      size: FLOW_COUNTERS_SIZE,
      members: { packets: 0, bytes: 8, first_jiffies: 16, last_jiffies: 24 },
    });
    assert.deepEqual(struct("match_all_value"), {
      size: MATCH_ALL_VALUE_SIZE,
      members: { tag: 0, active: 4 },
    });
  },
});

Deno.test("marker layout: config, tag and match-all values encode little-endian at their offsets", () => {
  const cfg = new DataView(
    encodeConfig({ strategy: "hopByHopDestination", matchAll: true, linkLayer: "none" }).buffer,
  );
  assert.deepEqual([
    cfg.getUint32(0, true),
    cfg.getUint32(4, true),
    cfg.getUint32(8, true),
    cfg.getUint32(12, true),
  ], [
    3,
    1,
    1,
    0,
  ]);
  const value = new Uint8Array(FLOW_VALUE_SIZE);
  encodeFlowValueInto(new DataView(value.buffer), 0x0abcde, 0x010203);
  assert.deepEqual([...value], [0xde, 0xbc, 0x0a, 0x00, 0x03, 0x02, 0x01, 0x00]);
  assert.equal(decodeTag(value), 0x0abcde);
  assert.equal(decodeCounterSlot(value), 0x010203);
  const tagOnly = new Uint8Array(4);
  encodeFlowValueInto(new DataView(tagOnly.buffer), 0x7fefe, 9);
  assert.equal(decodeTag(tagOnly), 0x7fefe);
  assert.equal(decodeCounterSlot(tagOnly), undefined, "the tag-only layout has no slot");
  assert.deepEqual([...encodeMatchAll(0x012345)], [0x45, 0x23, 0x01, 0, 1, 0, 0, 0]);
  assert.deepEqual([...encodeMatchAll(undefined)], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(decodeMatchAll(encodeMatchAll(0)), 0, "tag 0 can be active");
  assert.equal(decodeMatchAll(encodeMatchAll(undefined)), undefined);
});

Deno.test("marker layout: per-CPU counters sum packets and bytes, and keep the earliest first and latest last time", () => {
  const cpus = 3;
  const bytes = new Uint8Array(cpus * FLOW_COUNTERS_SIZE);
  const dv = new DataView(bytes.buffer);
  const put = (cpu: number, values: bigint[]) =>
    values.forEach((v, i) => dv.setBigUint64(cpu * FLOW_COUNTERS_SIZE + 8 * i, v, true));
  put(0, [2n, 3000n, 50n, 90n]);
  // CPU 1 marked nothing: its zero times must not count as earliest.
  put(2, [5n, 7000n, 40n, 80n]);
  assert.deepEqual(sumCounters(bytes, cpus), {
    packets: 7n,
    bytes: 10000n,
    firstJiffies: 40n,
    lastJiffies: 90n,
  });
  assert.deepEqual(sumCounters(new Uint8Array(cpus * FLOW_COUNTERS_SIZE), cpus), {
    packets: 0n,
    bytes: 0n,
    firstJiffies: undefined,
    lastJiffies: undefined,
  });
});
