// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark only (bench/ring_buffer.ts): a tc program that writes one record of the skops record's size
 * into a ring buffer each time it runs, so that BPF_PROG_TEST_RUN with a repeat count can produce records
 * faster than any consumer reads them. Never attached anywhere.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* Read-only configuration in ".rodata.config". */
struct bench_ring_config {
	__u32 no_wakeup; /* 1: wake the consumer only when the ring is a quarter full, as skops does */
	__u32 reserved;
};

/* As big as struct skops_record, so the copy into TypeScript costs the same. */
struct bench_ring_record {
	__u64 seq;
	__u8 payload[304];
};

const volatile struct bench_ring_config bench_cfg SEC(".rodata.config") = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} benchRing SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} benchLost SEC(".maps");

SEC("tc")
int flowd_bench_ring(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct bench_ring_record *r = bpf_ringbuf_reserve(&benchRing, sizeof(*r), 0);
	if (!r) {
		__u64 *lost = bpf_map_lookup_elem(&benchLost, &zero);
		if (lost)
			(*lost)++;
		return TC_ACT_OK;
	}
	r->seq = bpf_ktime_get_ns();
	__u64 flags = 0;
	if (bench_cfg.no_wakeup)
		flags = bpf_ringbuf_query(&benchRing, BPF_RB_AVAIL_DATA) >= (1 << 18) ? BPF_RB_FORCE_WAKEUP
										  : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(r, flags);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
