// SPDX-License-Identifier: GPL-2.0
/*
 * A test object only, never loaded by the daemon: shaped like the marker (its map and section names) but
 * reading packet data without a bounds check, so every kernel's verifier refuses it. The tests load it as a
 * user-supplied programPath to check that the verifier's reason reaches the operator's error message.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16);
	__type(key, __u8[40]);
	__type(value, __u32);
} flowLabels SEC(".maps");

SEC("tc")
int flowd_marker(struct __sk_buff *skb)
{
	__u8 *p = (void *)(long)skb->data;

	return p[100];
}

char LICENSE[] SEC("license") = "GPL";
