/**
 * The information elements our records carry: one table (RFC 7012 ids, abstract types and lengths, plus
 * the SciTags elements under a configurable Private Enterprise Number), and the two templates built from
 * it. The encoder writes fields from this table only, so a template and its records cannot disagree.
 */

/** Abstract data types (RFC 7012 §3.1) we use, each with its one encoded length. */
export type ElementType =
  | "unsigned8"
  | "unsigned16"
  | "unsigned32"
  | "unsigned64"
  | "ipv4Address"
  | "ipv6Address"
  | "dateTimeMilliseconds";

/** One information element: IANA id (or enterprise-specific id), type and encoded length. */
export interface ElementSpec {
  readonly id: number;
  readonly type: ElementType;
  readonly length: number;
  /** Enterprise-specific (carries the exporter's PEN in the template). */
  readonly enterprise?: true;
}

/** Every element we export, by name (the IANA registry's names; ours for the SciTags ones). */
export const ELEMENTS = {
  octetDeltaCount: { id: 1, type: "unsigned64", length: 8 },
  packetDeltaCount: { id: 2, type: "unsigned64", length: 8 },
  protocolIdentifier: { id: 4, type: "unsigned8", length: 1 },
  sourceTransportPort: { id: 7, type: "unsigned16", length: 2 },
  sourceIPv4Address: { id: 8, type: "ipv4Address", length: 4 },
  destinationTransportPort: { id: 11, type: "unsigned16", length: 2 },
  destinationIPv4Address: { id: 12, type: "ipv4Address", length: 4 },
  egressInterface: { id: 14, type: "unsigned32", length: 4 },
  sourceIPv6Address: { id: 27, type: "ipv6Address", length: 16 },
  destinationIPv6Address: { id: 28, type: "ipv6Address", length: 16 },
  flowLabelIPv6: { id: 31, type: "unsigned32", length: 4 },
  flowEndReason: { id: 136, type: "unsigned8", length: 1 },
  flowStartMilliseconds: { id: 152, type: "dateTimeMilliseconds", length: 8 },
  flowEndMilliseconds: { id: 153, type: "dateTimeMilliseconds", length: 8 },
  /** SciTags experiment id, enterprise-specific element 1. */
  scitagsExperimentId: { id: 1, type: "unsigned32", length: 4, enterprise: true },
  /** SciTags activity id, enterprise-specific element 2. */
  scitagsActivityId: { id: 2, type: "unsigned32", length: 4, enterprise: true },
} as const satisfies Record<string, ElementSpec>;

export type ElementName = keyof typeof ELEMENTS;

/** The table as plain specs (the optional `enterprise` flag readable on every entry). */
export const ELEMENT_SPECS: Readonly<Record<ElementName, ElementSpec>> = ELEMENTS;

/** flowEndReason values (RFC 7012 / IANA). */
export const FLOW_END_REASON = {
  activeTimeout: 2,
  endOfFlowDetected: 3,
  forcedEnd: 4,
  lackOfResources: 5,
} as const;

/** A template: its id (≥ 256) and its fields in order. */
export interface Template {
  readonly id: number;
  readonly fields: readonly ElementName[];
}

const COMMON_TAIL: readonly ElementName[] = [
  "sourceTransportPort",
  "destinationTransportPort",
  "protocolIdentifier",
];
const COUNTS_AND_TIMES: readonly ElementName[] = [
  "octetDeltaCount",
  "packetDeltaCount",
  "flowStartMilliseconds",
  "flowEndMilliseconds",
  "flowEndReason",
  "egressInterface",
  "scitagsExperimentId",
  "scitagsActivityId",
];

/** IPv6 flows: addresses, ports, protocol, the flow label as written, counts, times, reason, SciTags ids. */
export const IPV6_TEMPLATE: Template = {
  id: 256,
  fields: [
    "sourceIPv6Address",
    "destinationIPv6Address",
    ...COMMON_TAIL,
    "flowLabelIPv6",
    ...COUNTS_AND_TIMES,
  ],
};

/** IPv4 flows: as IPv6 without the flow label. */
export const IPV4_TEMPLATE: Template = {
  id: 257,
  fields: ["sourceIPv4Address", "destinationIPv4Address", ...COMMON_TAIL, ...COUNTS_AND_TIMES],
};

/** Bytes one data record of the template takes. */
export function recordLength(t: Template): number {
  let n = 0;
  for (const f of t.fields) n += ELEMENT_SPECS[f].length;
  return n;
}
