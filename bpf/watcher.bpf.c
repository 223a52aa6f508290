// SPDX-License-Identifier: GPL-2.0
/*
 * flowd-go connection watcher (the iperf3 plugin): a cgroup sock_ops program that reports TCP
 * connections whose ports fall in the configured ranges when they become established and when they
 * close, through a ring buffer.
 *
 * State callbacks are turned on for in-range sockets when they connect or are accepted; both happen
 * before the socket enters ESTABLISHED, so client and server ends are both reported. Built against
 * the uapi headers only: it reads nothing but the sock_ops context.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

#include "sock_ops_common.h"
#include "watcher.h"

#ifdef DEBUG
#define trace(fmt, ...) bpf_printk("flowd_watcher: " fmt, ##__VA_ARGS__)
#else
#define trace(fmt, ...) \
	do {            \
	} while (0)
#endif

const volatile struct watcher_config watcher_cfg SEC(".rodata.config") = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, WATCHER_RING_BYTES);
} flowEvents SEC(".maps");

/* Events lost because the ring buffer was full (user space fell behind), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lostEvents SEC(".maps");

static __always_inline bool in_range(__u16 port, __u16 min, __u16 max)
{
	return (min == 0 || port >= min) && (max == 0 || port <= max);
}

static __always_inline bool wanted(__u16 local_port, __u16 remote_port)
{
	return in_range(local_port, watcher_cfg.min_src_port, watcher_cfg.max_src_port) &&
	       in_range(remote_port, watcher_cfg.min_dst_port, watcher_cfg.max_dst_port);
}

/*
 * Fills the rest of an event. Not inlined: as a function of its own its prototype puts struct
 * watcher_event into the object's BTF, where the layout test reads it.
 */
static __noinline void fill_event(struct bpf_sock_ops *ctx, struct watcher_event *e, __u16 local_port,
				  __u16 remote_port)
{
	e->cookie = bpf_get_socket_cookie(ctx);
	e->ktime_ns = bpf_ktime_get_ns();
	e->local_port = local_port;
	e->remote_port = remote_port;
	e->family = (__u8)ctx->family;
	e->old_state = (__u8)ctx->args[0];
	e->new_state = (__u8)ctx->args[1];
	e->reserved = 0;
}

SEC("sockops")
int flowd_watcher(struct bpf_sock_ops *ctx)
{
	__u8 local[16], remote[16];
	__u16 local_port, remote_port;
	if (flowd_sock_ends(ctx, local, remote, &local_port, &remote_port) < 0)
		return 1;
	if (!wanted(local_port, remote_port))
		return 1;

	switch (ctx->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		flowd_enable_callbacks(ctx, BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
		break;
	default:
		return 1;
	}

	/* args[0] is the old state, args[1] the new one. */
	__u32 new_state = ctx->args[1];
	if (new_state != FLOWD_TCP_ESTABLISHED && new_state != FLOWD_TCP_CLOSE)
		return 1;
	struct watcher_event *e = bpf_ringbuf_reserve(&flowEvents, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&lostEvents, &zero);
		if (lost)
			(*lost)++;
		trace("ring buffer full, event for port %u lost", local_port);
		return 1;
	}
	__builtin_memcpy(e->local, local, sizeof(e->local));
	__builtin_memcpy(e->remote, remote, sizeof(e->remote));
	fill_event(ctx, e, local_port, remote_port);
	bpf_ringbuf_submit(e, 0);
	trace("%u -> %u, state %u", local_port, remote_port, new_state);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
