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
/** The per-CPU counters of marked packets, by counter slot. */
export const COUNTERS_MAP_NAME = "flowCounters";
/** The single-entry map of the match-all tag. */
export const MATCH_ALL_MAP_NAME = "matchAllTag";
/** The global-data section holding `struct marker_config`. */
export const CONFIG_MAP_NAME = ".rodata.config";

/** sizeof(struct marker_config). */
export const CONFIG_SIZE = 16;
/** sizeof(struct flow_key). */
export const FLOW_KEY_SIZE = 40;
/** sizeof(struct flow_value): the tag and the flow's counter slot. */
export const FLOW_VALUE_SIZE = 8;
/** A flowLabels value of a user-supplied object that predates the counters: the tag alone. */
export const TAG_ONLY_VALUE_SIZE = 4;
/** sizeof(struct flow_counters): one CPU's packets, bytes, first and last jiffies. */
export const FLOW_COUNTERS_SIZE = 32;
/** The counter slot of match-all marking (MARKER_MATCH_ALL_SLOT). */
export const MATCH_ALL_COUNTER_SLOT = 0;
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

/** Writes a flowLabels value (host order, as the program reads it) into `out`, tag first. */
export function encodeFlowValueInto(out: DataView, tag: number, counterSlot: number): void {
  out.setUint32(0, tag >>> 0, true);
  if (out.byteLength >= FLOW_VALUE_SIZE) out.setUint32(4, counterSlot >>> 0, true);
}

/** Reads the tag of a flowLabels value (either layout: the tag comes first). */
export function decodeTag(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
}

/** Reads the counter slot of a flowLabels value; undefined for the tag-only layout. */
export function decodeCounterSlot(bytes: Uint8Array): number | undefined {
  if (bytes.byteLength < FLOW_VALUE_SIZE) return undefined;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
}

/** A flow's counters summed over the CPUs (bpf/marker.h struct flow_counters). */
export interface FlowCounters {
  /** Packets marked (a GSO packet counts its segments). */
  readonly packets: bigint;
  /** Bytes of the marked packets as they left the marker. */
  readonly bytes: bigint;
  /** Jiffies of the first and last marked packet (src/bpf/jiffies.ts turns them into ages); undefined: none. */
  readonly firstJiffies: bigint | undefined;
  readonly lastJiffies: bigint | undefined;
}

/** Sums a per-CPU lookup of flowCounters (`cpus` values of FLOW_COUNTERS_SIZE bytes each). */
export function sumCounters(bytes: Uint8Array, cpus: number): FlowCounters {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let packets = 0n, sum = 0n;
  let first: bigint | undefined, last: bigint | undefined;
  for (let cpu = 0; cpu < cpus; cpu++) {
    const at = cpu * FLOW_COUNTERS_SIZE;
    packets += dv.getBigUint64(at, true);
    sum += dv.getBigUint64(at + 8, true);
    const f = dv.getBigUint64(at + 16, true), l = dv.getBigUint64(at + 24, true);
    if (f !== 0n && (first === undefined || f < first)) first = f;
    if (l !== 0n && (last === undefined || l > last)) last = l;
  }
  return { packets, bytes: sum, firstJiffies: first, lastJiffies: last };
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
