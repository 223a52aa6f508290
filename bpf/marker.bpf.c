// SPDX-License-Identifier: GPL-2.0
/*
 * flowd-go packet marker: a tc/TCX egress classifier that tags the IPv6 packets of registered flows
 * with their SciTags experiment and activity, either in the flow label or in an extension-header option.
 *
 * Built against the kernel uapi headers only (no vmlinux.h): it touches nothing but packet bytes and
 * the uapi __sk_buff, so it needs no BTF on the target. See bpf/README.md.
 *
 * The program never decides a packet's fate: it always returns TC_ACT_UNSPEC (TCX_NEXT), so the
 * next tc filter or TCX program still runs, and a packet it cannot mark leaves exactly as it came.
 * It never writes packet memory directly (only through helpers), so the verifier adds no unclone
 * prologue, whose allocation failure path would drop the packet.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "marker.h"

#ifdef DEBUG
#define trace(fmt, ...) bpf_printk("flowd_marker: " fmt, ##__VA_ARGS__)
#else
#define trace(fmt, ...) \
	do {            \
	} while (0)
#endif

/* Let the next filter or program run; for cls_bpf and TCX alike this is "no opinion". */
#define MARKER_NEXT TC_ACT_UNSPEC

#define IPV6_HLEN ((__u32)sizeof(struct ipv6hdr))
#define NEXTHDR_HOP 0
#define NEXTHDR_DEST 60

/* An 802.1Q tag as it sits between the MAC addresses and the encapsulated EtherType. */
struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* The fixed IPv6 header followed by room for up to two option headers, as written back in one go. */
struct ipv6_with_options {
	struct ipv6hdr ip6;
	__u8 eh[2 * MARKER_EH_LEN];
};

const volatile struct marker_config marker_cfg SEC(".rodata.config") = {};

/* A plain hash, not an LRU one: the kernel never drops a flow behind user space's back (an LRU map evicts
 * silently, even before it is full); user space sizes it (maxFlows) and decides what goes when it is full. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MARKER_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flowLabels SEC(".maps");

/* Per-flow counters by counter slot (user space sizes it like flowLabels; slot 0 counts match-all). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MARKER_MAX_FLOWS);
	__type(key, __u32);
	__type(value, struct flow_counters);
} flowCounters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct match_all_value);
} matchAllTag SEC(".maps");

/*
 * The per-CPU cache in front of flowLabels, and the generation that validates it (see struct flow_cache_slot).
 * Both are array maps, whose lookups the verifier inlines: a packet of a cached flow costs a few loads and
 * compares instead of the hash map's calls (hash, bucket walk, key compare), the larger part of a lookup.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MARKER_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct flow_cache_slot);
} flowCache SEC(".maps");

/* Mappable: user space bumps the generation with one atomic add on the shared page, no syscall. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} flowGeneration SEC(".maps");

char LICENSE[] SEC("license") = "GPL";

/* True when the first len bytes are in the linear area, pulling them there if needed (content unchanged). */
static __always_inline bool linear_upto(struct __sk_buff *skb, __u32 len)
{
	if ((void *)(long)skb->data + len <= (void *)(long)skb->data_end)
		return true;
	if (bpf_skb_pull_data(skb, len) < 0)
		return false;
	return (void *)(long)skb->data + len <= (void *)(long)skb->data_end;
}

/* A per-flow hash, so that match-all label marking still spreads flows over entropy values (RFC 6437). */
static __always_inline __u32 flow_hash(const struct flow_key *key)
{
	const __u32 *w = (const __u32 *)key;
	__u32 h = 0x5c17a65u;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*key) / sizeof(__u32)); i++) {
		h ^= w[i];
		h *= 0x9e3779b1u;
		h ^= h >> 15;
	}
	return h;
}

/* The flowCache slot of a key: a multiplicative hash of the words that differ most between flows. */
static __always_inline __u32 cache_index(const struct flow_key *key)
{
	const __u32 *w = (const __u32 *)key;

	return ((w[3] ^ w[7] ^ w[8]) * 0x9e3779b1u) >> 24; /* MARKER_CACHE_SLOTS = 1 << 8 */
}

static __always_inline bool same_key(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/*
 * The tag and counter slot of a flow, through this CPU's cache slot when it is valid, else from flowLabels
 * (and the slot then remembers the answer, found or not). False when the flow is not registered.
 */
static __always_inline bool flow_lookup(const struct flow_key *key, __u32 *tag, __u32 *counter_slot)
{
	__u32 zero = 0, idx = cache_index(key);
	struct flow_cache_slot *slot = bpf_map_lookup_elem(&flowCache, &idx);
	__u64 *genp = bpf_map_lookup_elem(&flowGeneration, &zero);
	struct flow_value *found;
	__u64 gen;

	if (!slot || !genp)
		return false;
	gen = *genp;
	if (gen != 0 && slot->generation == gen && same_key(&slot->key, key)) {
		*tag = slot->tag;
		*counter_slot = slot->counter_slot;
		return slot->counter_slot != MARKER_NOT_FOUND;
	}
	/*
	 * The generation must be read before flowLabels, so that a slot never holds an answer older than the
	 * generation it is filled under (user space changes flowLabels, then bumps the generation). The exchange
	 * that marks the slot as being written is a full barrier on every JIT (xchg on x86, swpal on arm64); it
	 * is on this CPU's own cache line, so it is cheap, and it runs only when the cache misses. Nothing else
	 * writes the slot meanwhile: tc runs with bottom halves off, so programs never nest on one CPU.
	 */
	__sync_lock_test_and_set(&slot->generation, 0);
	found = bpf_map_lookup_elem(&flowLabels, key);
	slot->misses++;
	__builtin_memcpy(&slot->key, key, sizeof(slot->key));
	slot->tag = found ? found->tag : 0;
	slot->counter_slot = found ? found->counter_slot : MARKER_NOT_FOUND;
	slot->generation = gen;
	if (!found)
		return false;
	*tag = found->tag;
	*counter_slot = found->counter_slot;
	/* A slot value of MARKER_NOT_FOUND would read as "absent" from the cache: user space never writes it. */
	return true;
}

/*
 * Adds a marked packet to its flow's counters on this CPU: a few ns (the per-CPU array lookup and the
 * jiffies read are inlined by the verifier; bpf_ktime_get_coarse_ns() alone cost 15 ns).
 */
static __always_inline void count_marked(struct __sk_buff *skb, __u32 counter_slot)
{
	struct flow_counters *c = bpf_map_lookup_elem(&flowCounters, &counter_slot);
	__u32 segs = skb->gso_segs;
	__u64 now;

	if (!c)
		return;
	now = bpf_jiffies64();
	c->packets += segs > 1 ? segs : 1;
	c->bytes += skb->len;
	if (c->first_jiffies == 0)
		c->first_jiffies = now;
	c->last_jiffies = now;
}

/*
 * Writes the 20-bit label into header bytes 1-3, keeping the traffic class (DSCP and ECN) intact.
 * True when the packet now carries it.
 */
static __always_inline bool write_label(struct __sk_buff *skb, const __u32 l3, __u32 label)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *hdr = data + l3;
	__u8 bytes[3];

	if ((void *)(hdr + 4) > data_end)
		return false;
	bytes[0] = (hdr[1] & 0xF0) | ((label >> 16) & 0x0F);
	bytes[1] = (label >> 8) & 0xFF;
	bytes[2] = label & 0xFF;
	if (bpf_skb_store_bytes(skb, l3 + 1, bytes, sizeof(bytes), BPF_F_RECOMPUTE_CSUM) < 0) {
		trace("label store failed");
		return false;
	}
	trace("labelled 0x%x", label & 0xFFFFF);
	return true;
}

/* One 8-byte option header carrying the 24-bit tag in a type 0x1E option, padded with one Pad1. */
static __always_inline void build_option_header(__u8 *eh, __u8 next, __u32 tag)
{
	eh[0] = next;
	eh[1] = 0;
	eh[2] = MARKER_OPT_TYPE;
	eh[3] = MARKER_OPT_DATA_LEN;
	eh[4] = (tag >> 16) & 0xFF;
	eh[5] = (tag >> 8) & 0xFF;
	eh[6] = tag & 0xFF;
	eh[7] = 0;
}

/*
 * True when the len zero bytes bpf_skb_adjust_room just inserted start at off, where this program
 * expects the fixed IPv6 header to end. The helper places them after the kernel's idea of the link
 * header; should that ever differ from ours, the packet must not be written at the wrong place.
 */
static __always_inline bool room_in_place(struct __sk_buff *skb, const __u32 off, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u64 *room = data + off;

	if ((void *)(room + 1) > data_end || room[0] != 0)
		return false;
	if (len > sizeof(__u64) && ((void *)(room + 2) > data_end || room[1] != 0))
		return false;
	return true;
}

/*
 * Inserts the Hop-by-Hop and/or Destination Options header right after the fixed IPv6 header.
 * Every check that can refuse comes before the first change; a change that fails is undone, so the
 * packet either leaves marked or leaves as it came, and is never dropped. True when it leaves marked.
 */
static __always_inline bool insert_option_headers(struct __sk_buff *skb, const __u32 l3, const bool vlan_inband,
						 __u32 tag)
{
	const __u32 len =
		marker_cfg.strategy == MARKER_HOP_BY_HOP_DESTINATION ? 2 * MARKER_EH_LEN : MARKER_EH_LEN;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + l3;
	struct ipv6_with_options out;
	__be16 vlan_proto = 0;
	__u16 vlan_tci = 0;
	__u32 l3_after = l3;
	__u32 mtu_len;
	__u16 plen;
	__u8 orig_next;

	if ((void *)(ip6 + 1) > data_end)
		return false;
	__builtin_memcpy(&out.ip6, ip6, sizeof(out.ip6));
	plen = bpf_ntohs(out.ip6.payload_len);
	/* A zero length (jumbogram, BIG TCP) leaves no field to account for the new header. */
	if (plen == 0 || plen + len > 0xFFFF)
		return false;

	/* Measured on the L3 length, so the tag and the device's header length do not blur the check. */
	mtu_len = IPV6_HLEN + plen;
	if (bpf_check_mtu(skb, 0, &mtu_len, (__s32)len, 0) != BPF_MTU_CHK_RET_SUCCESS) {
		trace("no room for %u option bytes within mtu %u", len, mtu_len);
		return false;
	}

	orig_next = out.ip6.nexthdr;
	if (marker_cfg.strategy == MARKER_HOP_BY_HOP) {
		out.ip6.nexthdr = NEXTHDR_HOP;
		build_option_header(out.eh, orig_next, tag);
		build_option_header(out.eh + MARKER_EH_LEN, 0, 0);
	} else if (marker_cfg.strategy == MARKER_DESTINATION) {
		out.ip6.nexthdr = NEXTHDR_DEST;
		build_option_header(out.eh, orig_next, tag);
		build_option_header(out.eh + MARKER_EH_LEN, 0, 0);
	} else {
		out.ip6.nexthdr = NEXTHDR_HOP;
		build_option_header(out.eh, NEXTHDR_DEST, tag);
		build_option_header(out.eh + MARKER_EH_LEN, orig_next, tag);
	}
	out.ip6.payload_len = bpf_htons(plen + len);

	if (vlan_inband) {
		/*
		 * bpf_skb_adjust_room only handles skbs whose protocol is IP, so the in-band tag moves into the
		 * skb's VLAN metadata, from where the device or the stack (validate_xmit_vlan) puts it back on
		 * the wire unchanged. The pop only takes an in-band tag when the skb says it carries one, so a
		 * frame whose protocol field disagrees (raw packet sockets), or that already has a tag in the
		 * metadata (QinQ), stays unmarked rather than gain a second tag.
		 */
		struct vlan_tag *vt = data + ETH_HLEN;
		struct ethhdr *eth = data;

		if (skb->vlan_present || skb->protocol != bpf_htons(ETH_P_8021Q) || (void *)(vt + 1) > data_end)
			return false;
		vlan_proto = eth->h_proto;
		vlan_tci = bpf_ntohs(vt->tci);
		if (bpf_skb_vlan_pop(skb) < 0)
			return false;
		/* With no tag in the metadata (checked above) the push only fills it in; it cannot fail. */
		if (bpf_skb_vlan_push(skb, vlan_proto, vlan_tci) < 0) {
			trace("vlan push failed");
			return false;
		}
		l3_after = l3 - sizeof(struct vlan_tag);
	}

	if (bpf_skb_adjust_room(skb, (__s32)len, BPF_ADJ_ROOM_NET, 0) < 0) {
		trace("adjust_room +%u failed", len);
		return false;
	}
	if (!room_in_place(skb, l3_after + IPV6_HLEN, len)) {
		/* Give the room back: it is removed from where the helper put it, nothing was written. */
		bpf_skb_adjust_room(skb, -(__s32)len, BPF_ADJ_ROOM_NET, 0);
		trace("room not after the fixed header, left unmarked");
		return false;
	}
	if (bpf_skb_store_bytes(skb, l3_after, &out, IPV6_HLEN + len, BPF_F_RECOMPUTE_CSUM) < 0) {
		bpf_skb_adjust_room(skb, -(__s32)len, BPF_ADJ_ROOM_NET, 0);
		trace("option store failed");
		return false;
	}
	trace("inserted %u option bytes, tag 0x%x", len, tag & 0xFFFFFF);
	return true;
}

/* Handles an IPv6 packet whose fixed header starts l3 bytes into the frame (a constant per call site). */
static __always_inline int mark_ipv6(struct __sk_buff *skb, const __u32 l3, const bool vlan_inband)
{
	struct flow_key key __attribute__((aligned(8))) = {};
	void *data, *data_end;
	struct ipv6hdr *ip6;
	__u32 tag, counter_slot = MARKER_MATCH_ALL_SLOT;
	bool has_ports, marked;
	__u8 next;

	if (!linear_upto(skb, l3 + IPV6_HLEN))
		return MARKER_NEXT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip6 = data + l3;
	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return MARKER_NEXT;

	next = ip6->nexthdr;
	has_ports = next == IPPROTO_TCP || next == IPPROTO_UDP;
	/* Flows need ports; option headers go only in front of TCP or UDP (never ICMPv6/ND, never twice). */
	if (!has_ports && (!marker_cfg.match_all || marker_cfg.strategy != MARKER_LABEL))
		return MARKER_NEXT;

	if (!marker_cfg.match_all || marker_cfg.strategy == MARKER_LABEL) {
		if (has_ports) {
			__be16 *ports;

			if (!linear_upto(skb, l3 + IPV6_HLEN + 2 * sizeof(__be16)))
				return MARKER_NEXT;
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			ip6 = data + l3;
			ports = (void *)(ip6 + 1);
			if ((void *)(ports + 2) > data_end)
				return MARKER_NEXT;
			key.sport = ports[0];
			key.dport = ports[1];
			key.proto = next;
		}
		__builtin_memcpy(key.saddr, &ip6->saddr, sizeof(key.saddr));
		__builtin_memcpy(key.daddr, &ip6->daddr, sizeof(key.daddr));
	}

	if (marker_cfg.match_all) {
		__u32 zero = 0;
		struct match_all_value *all = bpf_map_lookup_elem(&matchAllTag, &zero);

		if (!all || !all->active)
			return MARKER_NEXT;
		tag = all->tag;
		if (marker_cfg.strategy == MARKER_LABEL)
			tag = (tag & ~MARKER_LABEL_ENTROPY_MASK) | (flow_hash(&key) & MARKER_LABEL_ENTROPY_MASK);
	} else {
		if (!flow_lookup(&key, &tag, &counter_slot)) {
			trace("no entry for ports %u -> %u", bpf_ntohs(key.sport), bpf_ntohs(key.dport));
			return MARKER_NEXT;
		}
	}

	if (marker_cfg.strategy == MARKER_LABEL)
		marked = write_label(skb, l3, tag);
	else
		marked = insert_option_headers(skb, l3, vlan_inband, tag);
	if (marked)
		count_marked(skb, counter_slot);
	return MARKER_NEXT;
}

SEC("tc")
int flowd_marker(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct vlan_tag *vt;
	struct ethhdr *eth;

	if (marker_cfg.l2 == MARKER_L2_NONE) {
		if (skb->protocol != bpf_htons(ETH_P_IPV6))
			return MARKER_NEXT;
		return mark_ipv6(skb, 0, false);
	}

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return MARKER_NEXT;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return mark_ipv6(skb, ETH_HLEN, false);
	if (eth->h_proto != bpf_htons(ETH_P_8021Q))
		return MARKER_NEXT;
	vt = (void *)(eth + 1);
	if ((void *)(vt + 1) > data_end || vt->encapsulated_proto != bpf_htons(ETH_P_IPV6))
		return MARKER_NEXT;
	return mark_ipv6(skb, ETH_HLEN + sizeof(struct vlan_tag), true);
}
