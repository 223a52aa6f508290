/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel-internal TCP socket fields skops.bpf.c reads, declared for CO-RE: only names and
 * types matter here, libbpf finds each field's real offset in the running kernel's BTF
 * (/sys/kernel/btf/vmlinux) at load time. Members that are bitfields in some kernel version are read
 * with BPF_CORE_READ_BITFIELD_PROBED, which copes with either form. No vmlinux.h is needed to build.
 */
#ifndef FLOWD_KERNEL_TCP_H
#define FLOWD_KERNEL_TCP_H

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct sock {
	unsigned long sk_pacing_rate;
	unsigned long sk_max_pacing_rate;
};

struct inet_sock {
	struct sock sk;
};

struct tcp_congestion_ops {
	char name[16];
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
	__u32 icsk_rto;
	__u32 icsk_pmtu_cookie;
	const struct tcp_congestion_ops *icsk_ca_ops;
	__u8 icsk_ca_state : 5;
	__u8 icsk_retransmits;
	__u8 icsk_backoff;
	__u8 icsk_probes_out;
	struct {
		__u32 ato : 8;
		__u32 lrcvtime;
		__u16 rcv_mss;
	} icsk_ack;
};

struct tcp_options_received {
	__u16 tstamp_ok : 1;
	__u16 wscale_ok : 1;
	__u16 sack_ok : 3;
	__u16 snd_wscale : 4;
	__u16 rcv_wscale : 4;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u32 rcv_ssthresh;
	__u32 reordering;
	__u32 snd_wnd;
	__u32 rcv_wnd;
	__u32 mdev_us;
	__u16 advmss;
	__u32 write_seq;
	__u32 lsndtime;
	__u32 rcv_tstamp;
	__u32 delivered;
	__u32 delivered_ce;
	__u64 bytes_sent;
	__u64 bytes_retrans;
	__u32 dsack_dups;
	__u32 reord_seen;
	__u32 rcv_ooopack;
	__u8 chrono_type : 2;
	__u32 chrono_start;
	__u32 chrono_stat[3];
	__u8 rate_app_limited : 1;
	__u8 fastopen_client_fail : 2;
	__u8 syn_data_acked : 1;
	struct tcp_options_received rx_opt;
	struct {
		__u32 rtt_us;
	} rcv_rtt_est;
	struct {
		int space;
	} rcvq_space;
};

#pragma clang attribute pop

#endif /* FLOWD_KERNEL_TCP_H */
