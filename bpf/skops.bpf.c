// SPDX-License-Identifier: GPL-2.0
/*
 * flowd-go skops enricher: a cgroup sock_ops program that reports the TCP state of the connections
 * user space asked about (keys in watchedFlows) into a ring buffer.
 *
 * Every TCP socket in the cgroup gets state callbacks (and, for the poll strategy, RTT callbacks)
 * once it connects or is accepted; only watched flows produce records. The poll strategy reports on
 * RTT samples at most once per interval and on every state change; the transition strategy only on
 * state changes. One object serves both: the strategy is read-only configuration, so the verifier
 * drops the branch that cannot run.
 *
 * Fields the sock_ops context offers are read from it; the rest come from struct tcp_sock through
 * CO-RE (kernel_tcp.h), so the object needs the kernel's BTF but no headers of the target kernel.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "kernel_tcp.h"
#include "skops.h"
#include "sock_ops_common.h"

#ifdef DEBUG
#define trace(fmt, ...) bpf_printk("flowd_skops: " fmt, ##__VA_ARGS__)
#else
#define trace(fmt, ...) \
	do {            \
	} while (0)
#endif

/* tcpi_options bits (uapi linux/tcp.h) and tp->ecn_flags bits (include/net/tcp.h). */
#define TCPI_OPT_TIMESTAMPS 1
#define TCPI_OPT_SACK 2
#define TCPI_OPT_WSCALE 4
#define TCPI_OPT_ECN 8
#define TCPI_OPT_ECN_SEEN 16
#define TCPI_OPT_SYN_DATA 32
#define TCP_ECN_OK 1
#define TCP_ECN_SEEN 8

const volatile struct skops_config skops_cfg SEC(".rodata.config") = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKOPS_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct skops_flow_key);
	__type(value, struct skops_flow_state);
} watchedFlows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SKOPS_RING_BYTES);
} tcpStats SEC(".maps");

/* Records lost because the ring buffer was full (user space fell behind), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lostRecords SEC(".maps");

/*
 * Copies what tcp_get_info() would report into a reserved record. Not inlined: as a function of its own
 * its prototype puts struct skops_record into the object's BTF, where the layout test reads it.
 */
static __noinline void fill_record(struct bpf_sock_ops *ctx, struct tcp_sock *tp, struct skops_record *r)
{
	r->ktime_ns = bpf_ktime_get_ns();
	r->jiffies = bpf_jiffies64();

	/* From the sock_ops context (full sockets only, which the caller checked). */
	r->state = (__u8)ctx->state;
	r->snd_cwnd = ctx->snd_cwnd;
	r->srtt_us8 = ctx->srtt_us;
	r->min_rtt = ctx->rtt_min;
	r->snd_ssthresh = ctx->snd_ssthresh;
	r->snd_nxt = ctx->snd_nxt;
	r->snd_mss = ctx->mss_cache;
	r->rate_delivered = ctx->rate_delivered;
	r->rate_interval_us = ctx->rate_interval_us;
	r->unacked = ctx->packets_out;
	r->retrans = ctx->retrans_out;
	r->total_retrans = ctx->total_retrans;
	r->segs_in = ctx->segs_in;
	r->data_segs_in = ctx->data_segs_in;
	r->segs_out = ctx->segs_out;
	r->data_segs_out = ctx->data_segs_out;
	r->lost = ctx->lost_out;
	r->sacked = ctx->sacked_out;
	r->bytes_received = ctx->bytes_received;
	r->bytes_acked = ctx->bytes_acked;
	__u32 ecn_flags = ctx->ecn_flags;

	/*
	 * From struct tcp_sock, relocated by libbpf against the running kernel. Bitfields are always read
	 * from tp with the whole member path: the relocated offset is relative to the start of the access
	 * chain, so passing &tp->member as the base would add the member's offset twice.
	 */
	r->pacing_rate = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_pacing_rate);
	r->max_pacing_rate = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_max_pacing_rate);
	r->bytes_sent = BPF_CORE_READ(tp, bytes_sent);
	r->bytes_retrans = BPF_CORE_READ(tp, bytes_retrans);
	r->rto_jiffies = BPF_CORE_READ(tp, inet_conn.icsk_rto);
	r->ato_jiffies = (__u32)BPF_CORE_READ_BITFIELD_PROBED(tp, inet_conn.icsk_ack.ato);
	r->rcv_mss = BPF_CORE_READ(tp, inet_conn.icsk_ack.rcv_mss);
	r->lrcvtime = BPF_CORE_READ(tp, inet_conn.icsk_ack.lrcvtime);
	r->pmtu = BPF_CORE_READ(tp, inet_conn.icsk_pmtu_cookie);
	r->ca_state = (__u8)BPF_CORE_READ_BITFIELD_PROBED(tp, inet_conn.icsk_ca_state);
	r->retransmits = BPF_CORE_READ(tp, inet_conn.icsk_retransmits);
	r->probes = BPF_CORE_READ(tp, inet_conn.icsk_probes_out);
	r->backoff = BPF_CORE_READ(tp, inet_conn.icsk_backoff);
	r->lsndtime = BPF_CORE_READ(tp, lsndtime);
	r->rcv_tstamp = BPF_CORE_READ(tp, rcv_tstamp);
	r->rcv_ssthresh = BPF_CORE_READ(tp, rcv_ssthresh);
	r->mdev_us4 = BPF_CORE_READ(tp, mdev_us);
	r->advmss = BPF_CORE_READ(tp, advmss);
	r->reordering = BPF_CORE_READ(tp, reordering);
	r->rcv_rtt_us8 = BPF_CORE_READ(tp, rcv_rtt_est.rtt_us);
	r->rcv_space = (__u32)BPF_CORE_READ(tp, rcvq_space.space);
	r->write_seq = BPF_CORE_READ(tp, write_seq);
	r->chrono_start = BPF_CORE_READ(tp, chrono_start);
	r->chrono_type = (__u8)BPF_CORE_READ_BITFIELD_PROBED(tp, chrono_type);
	bpf_core_read(&r->chrono_stat, sizeof(r->chrono_stat), &tp->chrono_stat);
	r->delivered = BPF_CORE_READ(tp, delivered);
	r->delivered_ce = BPF_CORE_READ(tp, delivered_ce);
	r->dsack_dups = BPF_CORE_READ(tp, dsack_dups);
	r->reord_seen = BPF_CORE_READ(tp, reord_seen);
	r->rcv_ooopack = BPF_CORE_READ(tp, rcv_ooopack);
	r->snd_wnd = BPF_CORE_READ(tp, snd_wnd);
	r->rcv_wnd = BPF_CORE_READ(tp, rcv_wnd);
	r->rate_app_limited = (__u8)BPF_CORE_READ_BITFIELD_PROBED(tp, rate_app_limited);
	r->fastopen_client_fail = (__u8)BPF_CORE_READ_BITFIELD_PROBED(tp, fastopen_client_fail);

	__u8 options = 0;
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.tstamp_ok))
		options |= TCPI_OPT_TIMESTAMPS;
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.sack_ok))
		options |= TCPI_OPT_SACK;
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.wscale_ok)) {
		options |= TCPI_OPT_WSCALE;
		r->snd_wscale = (__u8)BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.snd_wscale);
		r->rcv_wscale = (__u8)BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.rcv_wscale);
	}
	if (ecn_flags & TCP_ECN_OK)
		options |= TCPI_OPT_ECN;
	if (ecn_flags & TCP_ECN_SEEN)
		options |= TCPI_OPT_ECN_SEEN;
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, syn_data_acked))
		options |= TCPI_OPT_SYN_DATA;
	r->options = options;

	const struct tcp_congestion_ops *ca = BPF_CORE_READ(tp, inet_conn.icsk_ca_ops);
	if (ca)
		bpf_core_read_str(r->ca_name, sizeof(r->ca_name), &ca->name);
}

/* Writes a record for the flow if it is watched (and, for RTT callbacks, not throttled). */
static __always_inline void report(struct bpf_sock_ops *ctx, __u32 event, __u32 new_state)
{
	struct skops_flow_key key = {};
	if (flowd_sock_ends(ctx, key.local, key.remote, &key.local_port, &key.remote_port) < 0)
		return;
	struct skops_flow_state *watched = bpf_map_lookup_elem(&watchedFlows, &key);
	if (!watched)
		return;

	__u64 now = bpf_ktime_get_ns();
	if (event == SKOPS_EVENT_RTT && now < watched->next_report_ns)
		return;
	/* A state change reports at once and restarts the interval. */
	watched->next_report_ns = now + skops_cfg.interval_ns;

	if (!ctx->is_fullsock)
		return;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;

	struct skops_record *r = bpf_ringbuf_reserve(&tcpStats, sizeof(*r), 0);
	if (!r) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&lostRecords, &zero);
		if (lost)
			(*lost)++;
		trace("ring buffer full, record for port %u lost", key.local_port);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->key = key;
	r->event = event;
	r->new_state = new_state;
	fill_record(ctx, tp, r);
	/*
	 * Records are samples, not alarms: user space collects them in batches on its own schedule (every
	 * few tens of ms), so a record only wakes it when the ring is a quarter full. Waking user space for
	 * every record would cost it a thread hand-off per record.
	 */
	__u64 pending = bpf_ringbuf_query(&tcpStats, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(r, pending >= SKOPS_RING_BYTES / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	trace("record: ports %u->%u event %u", key.local_port, key.remote_port, event);

	/* The socket is gone: nothing more will come for this key. */
	if (event == SKOPS_EVENT_STATE && new_state == FLOWD_TCP_CLOSE)
		bpf_map_delete_elem(&watchedFlows, &key);
}

SEC("sockops")
int flowd_skops(struct bpf_sock_ops *ctx)
{
	switch (ctx->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* Any connection may become a watched flow later, so every one gets the callbacks. */
		if (skops_cfg.strategy == SKOPS_POLL)
			flowd_enable_callbacks(ctx, BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG);
		else
			flowd_enable_callbacks(ctx, BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		if (skops_cfg.strategy == SKOPS_POLL)
			report(ctx, SKOPS_EVENT_RTT, ctx->state);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* args[0] is the old state, args[1] the new one. */
		report(ctx, SKOPS_EVENT_STATE, ctx->args[1]);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
