/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layouts shared by skops.bpf.c and its loader (src/enrichers/skops_layout.ts mirrors them once;
 * tests/unit/skops_layout_test.ts compares both with the BTF of the built object).
 */
#ifndef FLOWD_SKOPS_H
#define FLOWD_SKOPS_H

#include <linux/types.h>

/* When records are produced; the loader writes it into skops_config.strategy. */
enum skops_strategy {
	/* On RTT samples (at most once per interval_ns per flow) and on every state change. */
	SKOPS_POLL = 0,
	/* On state changes only. */
	SKOPS_TRANSITION = 1,
};

/* Read-only configuration in ".rodata.config", set by the loader before load. */
struct skops_config {
	__u64 interval_ns; /* poll: least time between two RTT-driven records of one flow */
	__u32 strategy; /* enum skops_strategy */
	__u32 reserved; /* zero */
};

/*
 * Key of watchedFlows: one TCP connection seen from this host. Addresses are 16 bytes in network
 * order, IPv4 written as ::ffff:a.b.c.d (so a dual-stack socket matches its IPv4 flow); ports are in
 * host order. 40 bytes, no implicit padding.
 */
struct skops_flow_key {
	__u8 local[16];
	__u8 remote[16];
	__u16 local_port;
	__u16 remote_port;
	__u32 reserved; /* zero */
};

/* Value of watchedFlows: per-flow throttle of the poll strategy. */
struct skops_flow_state {
	__u64 next_report_ns; /* bpf_ktime_get_ns() before which an RTT callback reports nothing */
};

/* Why a record was produced. */
enum skops_event {
	SKOPS_EVENT_RTT = 1,
	SKOPS_EVENT_STATE = 2,
};

/*
 * One ring-buffer record: the flow and its TCP state, mostly as raw kernel values, host byte order.
 * User space does the arithmetic tcp_get_info() does (jiffies to time, shifts of srtt and mdev,
 * delivery rate, busy time), so that it can use the kernel's HZ. 312 bytes.
 */
struct skops_record {
	struct skops_flow_key key; /* 0 */
	__u64 ktime_ns; /* 40: bpf_ktime_get_ns() */
	__u64 jiffies; /* 48: bpf_jiffies64(), the "now" of the *_stamp fields */
	__u64 pacing_rate; /* 56 */
	__u64 max_pacing_rate; /* 64 */
	__u64 bytes_acked; /* 72 */
	__u64 bytes_received; /* 80 */
	__u64 bytes_sent; /* 88 */
	__u64 bytes_retrans; /* 96 */
	__u32 event; /* 104: enum skops_event */
	__u32 new_state; /* 108: the state entered (state changes) or the current one */
	__u32 rto_jiffies; /* 112 */
	__u32 ato_jiffies; /* 116 */
	__u32 snd_mss; /* 120: mss_cache */
	__u32 rcv_mss; /* 124 */
	__u32 unacked; /* 128: packets_out */
	__u32 sacked; /* 132 */
	__u32 lost; /* 136 */
	__u32 retrans; /* 140: retrans_out */
	__u32 lsndtime; /* 144: jiffies of the last data sent */
	__u32 lrcvtime; /* 148: jiffies of the last data received */
	__u32 rcv_tstamp; /* 152: jiffies of the last ACK received */
	__u32 pmtu; /* 156 */
	__u32 rcv_ssthresh; /* 160 */
	__u32 srtt_us8; /* 164: srtt_us, 8 times the smoothed RTT in us */
	__u32 mdev_us4; /* 168: mdev_us, 4 times the RTT variation in us */
	__u32 snd_ssthresh; /* 172 */
	__u32 snd_cwnd; /* 176 */
	__u32 advmss; /* 180 */
	__u32 reordering; /* 184 */
	__u32 rcv_rtt_us8; /* 188: rcv_rtt_est.rtt_us, 8 times the receiver's RTT estimate */
	__u32 rcv_space; /* 192 */
	__u32 total_retrans; /* 196 */
	__u32 segs_out; /* 200 */
	__u32 segs_in; /* 204 */
	__u32 write_seq; /* 208 */
	__u32 snd_nxt; /* 212 */
	__u32 min_rtt; /* 216: us */
	__u32 data_segs_in; /* 220 */
	__u32 data_segs_out; /* 224 */
	__u32 rate_delivered; /* 228 */
	__u32 rate_interval_us; /* 232 */
	__u32 chrono_start; /* 236: jiffies */
	__u32 chrono_stat[3]; /* 240: busy, rwnd-limited, sndbuf-limited jiffies */
	__u32 delivered; /* 252 */
	__u32 delivered_ce; /* 256 */
	__u32 dsack_dups; /* 260 */
	__u32 reord_seen; /* 264 */
	__u32 rcv_ooopack; /* 268 */
	__u32 snd_wnd; /* 272 */
	__u32 rcv_wnd; /* 276 */
	__u8 state; /* 280: current state */
	__u8 ca_state; /* 281 */
	__u8 retransmits; /* 282 */
	__u8 probes; /* 283 */
	__u8 backoff; /* 284 */
	__u8 options; /* 285: TCPI_OPT_* bits as tcp_get_info() computes them */
	__u8 snd_wscale; /* 286 */
	__u8 rcv_wscale; /* 287 */
	__u8 rate_app_limited; /* 288 */
	__u8 fastopen_client_fail; /* 289 */
	__u8 chrono_type; /* 290: which chrono_stat runs since chrono_start (1-3), 0 for none */
	__u8 reserved; /* 291 */
	char ca_name[16]; /* 292: congestion control name, NUL-terminated */
	__u32 reserved2; /* 308 */
};

#define SKOPS_MAX_FLOWS 100000
#define SKOPS_RING_BYTES (1 << 20)

#endif /* FLOWD_SKOPS_H */
