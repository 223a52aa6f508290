/**
 * The interface of the marker BPF object (bpf/marker.h mirrored once): names, enum codes and the byte
 * layouts of its configuration and map values. tests/unit/marker_layout_test.ts keeps the two in step.
 */

/** How a matching packet is marked (the configuration's `markingStrategy`). */
export type MarkingStrategy = "label" | "hopByHop" | "destination" | "hopByHopDestination";

/** The strategies in order of their code in `enum marker_strategy`. */
export const MARKING_STRATEGY_CODES: Readonly<Record<MarkingStrategy, number>> = {
  label: 0,
  hopByHop: 1,
  destination: 2,
  hopByHopDestination: 3,
};

/** What precedes the IPv6 header on an interface (`enum marker_l2`). */
export type LinkLayer = "ethernet" | "none";

export const LINK_LAYER_CODES: Readonly<Record<LinkLayer, number>> = { ethernet: 0, none: 1 };

/** Name of the tc program in the object; also how our hooks are recognised in the kernel. */
export const PROGRAM_NAME = "flowd_marker";
/** The per-flow map. */
export const FLOW_MAP_NAME = "flowLabels";
/** The single-entry map of the match-all tag. */
export const MATCH_ALL_MAP_NAME = "matchAllTag";
/** The global-data section holding `struct marker_config`. */
export const CONFIG_MAP_NAME = ".rodata.config";

/** sizeof(struct marker_config). */
export const CONFIG_SIZE = 16;
/** sizeof(struct flow_key). */
export const FLOW_KEY_SIZE = 40;
/** sizeof(marker_tag_t). */
export const TAG_SIZE = 4;
/** sizeof(struct match_all_value). */
export const MATCH_ALL_VALUE_SIZE = 8;
/** max_entries of flowLabels as compiled. */
export const DEFAULT_MAX_FLOWS = 100_000;

/** IPv6 option type of the SciTags option (RFC 4727 experimental value 30, skip if unknown, immutable). */
export const OPTION_TYPE = 0x1e;
/** Length of one inserted option header in bytes. */
export const OPTION_HEADER_LEN = 8;

/** Bytes the strategy adds to a packet (0 for the flow label). */
export function addedBytes(strategy: MarkingStrategy): number {
  return strategy === "label"
    ? 0
    : strategy === "hopByHopDestination"
    ? 2 * OPTION_HEADER_LEN
    : OPTION_HEADER_LEN;
}

/** The bytes of `struct marker_config` for one program instance. */
export function encodeConfig(
  o: { strategy: MarkingStrategy; matchAll: boolean; linkLayer: LinkLayer },
): Uint8Array<
  ArrayBuffer
> {
  const out = new Uint8Array(CONFIG_SIZE);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MARKING_STRATEGY_CODES[o.strategy], true);
  dv.setUint32(4, o.matchAll ? 1 : 0, true);
  dv.setUint32(8, LINK_LAYER_CODES[o.linkLayer], true);
  return out;
}

/** The bytes of a flowLabels value (host order, as the program reads it). */
export function encodeTag(tag: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(TAG_SIZE);
  new DataView(out.buffer).setUint32(0, tag >>> 0, true);
  return out;
}

/** Reads a flowLabels value. */
export function decodeTag(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
}

/** The bytes of `struct match_all_value`; undefined tag means "mark nothing". */
export function encodeMatchAll(tag: number | undefined): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(MATCH_ALL_VALUE_SIZE);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, (tag ?? 0) >>> 0, true);
  dv.setUint32(4, tag === undefined ? 0 : 1, true);
  return out;
}

/** Reads a match_all_value: the tag, or undefined when inactive. */
export function decodeMatchAll(bytes: Uint8Array): number | undefined {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return dv.getUint32(4, true) === 0 ? undefined : dv.getUint32(0, true);
}
