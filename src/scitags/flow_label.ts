/**
 * The SciTags integer encodings of an (experiment, activity) pair: the 20-bit IPv6 flow label, the 24-bit
 * extension-header tag (flowd-go only) and the 16-bit "scitag" that transfer protocols carry.
 *
 * Flow label layout, bit 19 being the most significant (first on the wire):
 *
 * ```
 * 19 18 | 17 ........................ 9 | 8 | 7 ............ 2 | 1 0
 * rand  | experiment, low 9 bits,       |rnd| activity, low    | rand
 *       | bit-reversed (exp bit 0 → 17) |   | 6 bits, in order |
 * ```
 */

/** The 20 bits of an IPv6 flow label. */
export const FLOW_LABEL_MASK = 0xfffff;

/** The bits of a label that carry experiment and activity; collectors decode with this mask. */
export const SEMANTIC_MASK = 0x3fefc;

/** The five entropy bits of a label (19, 18, 8, 1, 0), drawn once per flow. */
export const ENTROPY_MASK = 0xc0103;

/** Largest experiment id a flow label carries without loss (9 bits). */
export const LABEL_MAX_EXPERIMENT = 0x1ff;

/** Largest activity id a flow label carries without loss (6 bits). */
export const LABEL_MAX_ACTIVITY = 0x3f;

/** Largest experiment id an extension-header tag carries without loss (16 bits). */
export const EXTENSION_MAX_EXPERIMENT = 0xffff;

/** Largest activity id an extension-header tag carries without loss (8 bits). */
export const EXTENSION_MAX_ACTIVITY = 0xff;

/** Smallest and largest scitag values (XRootD rejects values outside this range). */
export const SCITAG_MIN = 65;
export const SCITAG_MAX = 0xffff;

/** Largest experiment id a scitag can carry (10 bits). */
export const SCITAG_MAX_EXPERIMENT = 0x3ff;

const MAX_U32 = 0xffff_ffff;

function checkU32(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new RangeError(`${name} ${value} is not an integer in 0..${MAX_U32}`);
  }
}

/** Reverses the order of the low 9 bits of `v` (bit 0 ↔ bit 8). */
function reverse9(v: number): number {
  let out = 0;
  for (let i = 0; i < 9; i++) out |= ((v >>> i) & 1) << (8 - i);
  return out;
}

/**
 * Builds the 20-bit flow label for a flow. Experiment bits above 8 and activity bits above 5 are dropped,
 * as the original does (see `lostIdBits` to warn about it); only the entropy bits of `entropy` are used.
 */
export function encodeFlowLabel(experimentId: number, activityId: number, entropy: number): number {
  checkU32("experiment id", experimentId);
  checkU32("activity id", activityId);
  if (!Number.isInteger(entropy)) throw new RangeError(`entropy ${entropy} is not an integer`);
  const semantic = (reverse9(experimentId & LABEL_MAX_EXPERIMENT) << 9) |
    ((activityId & LABEL_MAX_ACTIVITY) << 2);
  return (semantic | (entropy & ENTROPY_MASK)) >>> 0;
}

/** The parts of a flow label: what a collector recovers after masking with `SEMANTIC_MASK`. */
export interface DecodedFlowLabel {
  /** Low 9 bits of the experiment id. */
  experimentId: number;
  /** Low 6 bits of the activity id. */
  activityId: number;
  /** The entropy bits, in place (a subset of `ENTROPY_MASK`). */
  entropy: number;
}

/** Splits a 20-bit flow label into experiment, activity and entropy. */
export function decodeFlowLabel(label: number): DecodedFlowLabel {
  if (!Number.isInteger(label) || label < 0 || label > FLOW_LABEL_MASK) {
    throw new RangeError(`flow label ${label} is not an integer in 0..${FLOW_LABEL_MASK} (20 bits)`);
  }
  return {
    experimentId: reverse9(label >>> 9),
    activityId: (label >>> 2) & LABEL_MAX_ACTIVITY,
    entropy: label & ENTROPY_MASK,
  };
}

/** Random words drawn 256 at a time: one system call per flow was a visible share of a flow start. */
const entropyPool = new Uint32Array(256);
let entropyNext = entropyPool.length;

/** Draws fresh entropy bits for a new flow (a value within `ENTROPY_MASK`). */
export function randomFlowLabelEntropy(): number {
  if (entropyNext === entropyPool.length) {
    crypto.getRandomValues(entropyPool);
    entropyNext = 0;
  }
  return entropyPool[entropyNext++]! & ENTROPY_MASK;
}

/**
 * The 24-bit tag flowd-go puts in its IPv6 hop-by-hop / destination option: `exp << 8 | act & 0xff`,
 * limited to 24 bits (so the low 16 experiment bits and low 8 activity bits), no entropy, no reversal.
 */
export function extensionHeaderTag(experimentId: number, activityId: number): number {
  checkU32("experiment id", experimentId);
  checkU32("activity id", activityId);
  // Multiplication instead of `<< 8` so that large ids do not overflow into the sign bit first.
  return (experimentId & EXTENSION_MAX_EXPERIMENT) * 0x100 + (activityId & EXTENSION_MAX_ACTIVITY);
}

/** Splits a 24-bit extension-header tag into its experiment (16 bits) and activity (8 bits). */
export function decodeExtensionHeaderTag(tag: number): { experimentId: number; activityId: number } {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xffffff) {
    throw new RangeError(`extension-header tag ${tag} is not an integer in 0..${0xffffff} (24 bits)`);
  }
  return { experimentId: tag >>> 8, activityId: tag & EXTENSION_MAX_ACTIVITY };
}

/**
 * The "scitag" value of transfer protocols (FTS/gfal2 `--scitag`, XRootD `scitag.flow`, HTTP `SciTag`):
 * `exp << 6 | act`. Not the flow label: experiment 3, activity 14 give scitag 206 but label 196664.
 */
export function scitag(experimentId: number, activityId: number): number {
  if (!Number.isInteger(experimentId) || experimentId < 1 || experimentId > SCITAG_MAX_EXPERIMENT) {
    throw new RangeError(
      `experiment id ${experimentId} is not an integer in 1..${SCITAG_MAX_EXPERIMENT} (scitag)`,
    );
  }
  if (!Number.isInteger(activityId) || activityId < 0 || activityId > LABEL_MAX_ACTIVITY) {
    throw new RangeError(`activity id ${activityId} is not an integer in 0..${LABEL_MAX_ACTIVITY} (scitag)`);
  }
  const value = (experimentId << 6) | activityId;
  if (value < SCITAG_MIN) {
    throw new RangeError(`scitag ${value} (exp ${experimentId}, act 0) is below ${SCITAG_MIN}`);
  }
  return value;
}

/** Splits a scitag value (65..65535) into experiment and activity. */
export function decodeScitag(value: number): { experimentId: number; activityId: number } {
  if (!Number.isInteger(value) || value < SCITAG_MIN || value > SCITAG_MAX) {
    throw new RangeError(`scitag ${value} is not an integer in ${SCITAG_MIN}..${SCITAG_MAX}`);
  }
  return { experimentId: value >>> 6, activityId: value & LABEL_MAX_ACTIVITY };
}

/** How a marker carries the ids on the wire. */
export type TagEncoding = "flowLabel" | "extensionHeader";

/** The id bits an encoding drops (0 when nothing is lost). */
export interface LostIdBits {
  experiment: number;
  activity: number;
}

/** The limits of an encoding: experiment and activity bits carried. */
function limits(encoding: TagEncoding): { expBits: number; actBits: number; what: string } {
  return encoding === "flowLabel"
    ? { expBits: 9, actBits: 6, what: "a flow label" }
    : { expBits: 16, actBits: 8, what: "an extension-header tag" };
}

/** Which id bits an encoding drops: exp > 511 / act > 63 for labels, > 0xFFFF / > 0xFF for headers. */
export function lostIdBits(encoding: TagEncoding, experimentId: number, activityId: number): LostIdBits {
  checkU32("experiment id", experimentId);
  checkU32("activity id", activityId);
  const { expBits, actBits } = limits(encoding);
  // Division instead of shifts: ids go up to 2^32 - 1, beyond what `>>` keeps unsigned.
  return {
    experiment: experimentId - (experimentId % 2 ** expBits),
    activity: activityId - (activityId % 2 ** actBits),
  };
}

/** A warning naming what the network will see when an encoding truncates the ids; else undefined. */
export function truncationWarning(
  encoding: TagEncoding,
  experimentId: number,
  activityId: number,
): string | undefined {
  const lost = lostIdBits(encoding, experimentId, activityId);
  const { expBits, actBits, what } = limits(encoding);
  const parts: string[] = [];
  if (lost.experiment !== 0) {
    const carried = experimentId - lost.experiment;
    parts.push(
      `experiment ${experimentId} does not fit the ${expBits} bits of ${what}: carried as ${carried}`,
    );
  }
  if (lost.activity !== 0) {
    const carried = activityId - lost.activity;
    parts.push(`activity ${activityId} does not fit the ${actBits} bits of ${what}: carried as ${carried}`);
  }
  return parts.length ? parts.join("; ") : undefined;
}
