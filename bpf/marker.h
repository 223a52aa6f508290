/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layouts shared by marker.bpf.c and its loader (src/backends/marker/). The TypeScript side mirrors
 * each struct once (flow_key.ts, program.ts) and a unit test checks the sizes stay in step.
 */
#ifndef FLOWD_MARKER_H
#define FLOWD_MARKER_H

#include <linux/types.h>

/* How a matching packet is marked; the loader writes it into marker_config.strategy. */
enum marker_strategy {
	MARKER_LABEL = 0,
	MARKER_HOP_BY_HOP = 1,
	MARKER_DESTINATION = 2,
	MARKER_HOP_BY_HOP_DESTINATION = 3,
};

/* What precedes the IPv6 header at skb->data on the device the instance is attached to. */
enum marker_l2 {
	/* An Ethernet header, optionally followed by one in-band 802.1Q tag (lo, veth, NICs). */
	MARKER_L2_ETHERNET = 0,
	/* Nothing: the packet starts with the IPv6 header (tun, wireguard, ip6tnl, sit, ppp). */
	MARKER_L2_NONE = 1,
};

/*
 * Read-only configuration, in its own section ".rodata.config" so that it is exactly this struct.
 * The loader sets it before load; the verifier then prunes the branches that cannot run.
 */
struct marker_config {
	__u32 strategy; /* enum marker_strategy */
	__u32 match_all; /* 0: look flows up in flowLabels; 1: use the single matchAllTag entry */
	__u32 l2; /* enum marker_l2 */
	__u32 reserved; /* zero */
};

/*
 * Key of flowLabels: the full identity of an egress flow as it appears in the packet, so every field
 * is in network byte order. src is the local end (the packet's source). 40 bytes, no implicit padding.
 */
struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto; /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u8 pad[3]; /* zero */
};

/*
 * Value of flowLabels. The tag is in host byte order: label strategy, the complete 20-bit flow label,
 * entropy included; extension-header strategies, the 24-bit option data, (experiment << 8) | activity.
 * The counter slot is the flow's index in flowCounters, chosen by user space (which reuses a slot only
 * after zeroing it).
 */
struct flow_value {
	__u32 tag;
	__u32 counter_slot;
};

/*
 * One CPU's share of a flow's counters in flowCounters (a per-CPU array, so the hot path adds without
 * atomics; user space sums the CPUs). Matched packets the program could not mark are not counted.
 * Times are jiffies (bpf_jiffies64(), which the verifier inlines: a clock helper would cost more than all the
 * rest of the counting), 0 when this CPU marked nothing yet.
 */
struct flow_counters {
	__u64 packets; /* wire packets: a GSO packet counts its segments */
	__u64 bytes; /* skb->len as the packet left the marker (a GSO packet counts its headers once) */
	__u64 first_jiffies;
	__u64 last_jiffies;
};

/* The counter slot of match-all marking: all of it is one (experiment, activity). */
#define MARKER_MATCH_ALL_SLOT 0

/* Value of the single entry of matchAllTag. */
struct match_all_value {
	__u32 tag; /* as in flowLabels; in label mode the entropy bits are replaced per flow */
	__u32 active; /* 0: mark nothing */
};

#define MARKER_MAX_FLOWS 100000

/*
 * One slot of flowCache, a per-CPU array in front of flowLabels: the last lookup result (found or not) of a
 * flow whose key falls into this slot, valid while flowGeneration still holds the value it was filled under.
 * User space bumps flowGeneration after every change of flowLabels, which invalidates every slot at once.
 * 64 bytes: one cache line.
 */
struct flow_cache_slot {
	struct flow_key key;
	__u64 generation; /* flowGeneration when filled; 0: empty or being written */
	__u64 misses; /* lookups that went to flowLabels */
	__u32 tag; /* as in flowLabels, when found */
	__u32 counter_slot; /* as in flowLabels; MARKER_NOT_FOUND: the flow is not registered (left alone) */
};

#define MARKER_NOT_FOUND 0xFFFFFFFFu

/* Slots of flowCache per CPU (a power of two). */
#define MARKER_CACHE_SLOTS 256

/* The SciTags option inside a Hop-by-Hop or Destination Options header (RFC 4727 experimental type). */
#define MARKER_OPT_TYPE 0x1E
#define MARKER_OPT_DATA_LEN 3
/* One option header: next header, length (0 = 8 octets), option type, option length, 3 data bytes, Pad1. */
#define MARKER_EH_LEN 8

/* Flow label bits that carry entropy rather than experiment or activity (19, 18, 8, 1, 0). */
#define MARKER_LABEL_ENTROPY_MASK 0xC0103

#endif /* FLOWD_MARKER_H */
