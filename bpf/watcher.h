/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layouts shared by watcher.bpf.c and its loader (src/plugins/iperf3_layout.ts mirrors them once;
 * tests/unit/sock_ops_layout_test.ts compares both with the BTF of the built object).
 */
#ifndef FLOWD_WATCHER_H
#define FLOWD_WATCHER_H

#include <linux/types.h>

/*
 * Read-only configuration in ".rodata.config", set by the loader before load: inclusive port ranges,
 * host byte order, a bound of 0 disables that bound. "src" is the socket's local end, "dst" its peer.
 */
struct watcher_config {
	__u16 min_src_port;
	__u16 max_src_port;
	__u16 min_dst_port;
	__u16 max_dst_port;
};

/*
 * One ring-buffer record: a TCP connection in the port ranges became ESTABLISHED or CLOSE. Addresses
 * are 16 bytes in network order (IPv4 as ::ffff:a.b.c.d); everything else is in host order. 56 bytes.
 */
struct watcher_event {
	__u8 local[16]; /* 0 */
	__u8 remote[16]; /* 16 */
	__u64 cookie; /* 32: the socket cookie, unique per socket while the system runs */
	__u64 ktime_ns; /* 40: bpf_ktime_get_ns() */
	__u16 local_port; /* 48 */
	__u16 remote_port; /* 50 */
	__u8 family; /* 52: AF_INET (2) or AF_INET6 (10), as the socket is */
	__u8 old_state; /* 53 */
	__u8 new_state; /* 54: FLOWD_TCP_ESTABLISHED or FLOWD_TCP_CLOSE */
	__u8 reserved; /* 55 */
};

#define WATCHER_RING_BYTES (256 * 1024)

#endif /* FLOWD_WATCHER_H */
