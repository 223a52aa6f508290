/**
 * The tag a flow's map entry holds, computed in userspace at flow start: for the label strategy the
 * complete 20-bit flow label with entropy drawn once per start (so it stays constant for the flow);
 * for the extension-header strategies the 24-bit option data `(experiment << 8) | activity`.
 */
import {
  encodeFlowLabel,
  extensionHeaderTag,
  randomFlowLabelEntropy,
  type TagEncoding,
  truncationWarning,
} from "../../scitags/flow_label.ts";
import type { MarkingStrategy } from "./layout.ts";

/** The wire encoding a strategy uses. */
export function tagEncoding(strategy: MarkingStrategy): TagEncoding {
  return strategy === "label" ? "flowLabel" : "extensionHeader";
}

/**
 * The map value for a flow. `entropy` supplies the label's five entropy bits (19, 18, 8, 1, 0); it is
 * ignored by the extension-header strategies, which carry no entropy.
 */
export function flowTag(
  strategy: MarkingStrategy,
  experimentId: number,
  activityId: number,
  entropy: number = randomFlowLabelEntropy(),
): number {
  return strategy === "label"
    ? encodeFlowLabel(experimentId, activityId, entropy)
    : extensionHeaderTag(experimentId, activityId);
}

/** A warning when the strategy cannot carry the ids without loss (see flow_label.ts); else undefined. */
export function tagTruncation(strategy: MarkingStrategy, experimentId: number, activityId: number) {
  return truncationWarning(tagEncoding(strategy), experimentId, activityId);
}

/** The tag as logs show it: 5 hex digits for labels, 6 for option data. */
export function formatTag(strategy: MarkingStrategy, tag: number): string {
  return `0x${tag.toString(16).padStart(strategy === "label" ? 5 : 6, "0")}`;
}
