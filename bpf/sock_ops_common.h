/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the two sock_ops programs (skops.bpf.c, watcher.bpf.c): turning a socket's
 * addresses into the 16-byte form both use, and turning on callbacks without clobbering the flags
 * another sock_ops program on the same cgroup may have set.
 */
#ifndef FLOWD_SOCK_OPS_COMMON_H
#define FLOWD_SOCK_OPS_COMMON_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define FLOWD_AF_INET 2
#define FLOWD_AF_INET6 10

/* include/net/tcp_states.h */
#define FLOWD_TCP_ESTABLISHED 1
#define FLOWD_TCP_CLOSE 7

/*
 * Writes an IPv4 address (a network-order word as the context holds it) as ::ffff:a.b.c.d, so IPv4
 * sockets and dual-stack IPv6 sockets carrying IPv4 give the same bytes.
 */
static __always_inline void flowd_v4_mapped(__u8 out[16], __u32 addr_be)
{
	__u32 *w = (__u32 *)out;
	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = addr_be;
}

/* Copies four network-order words of an IPv6 address as they are (byte order is kept). */
static __always_inline void flowd_v6(__u8 out[16], const __u32 in[4])
{
	__u32 *w = (__u32 *)out;
	w[0] = in[0];
	w[1] = in[1];
	w[2] = in[2];
	w[3] = in[3];
}

/* A context field read as exactly one 32-bit load. */
static __always_inline __u32 flowd_ctx_u32(const __u32 *field)
{
	return *(const volatile __u32 *)field;
}

/*
 * Fills the local and remote addresses (16 bytes each, network order) and ports (host order) of the
 * socket behind a sock_ops context. Returns 0, or -1 for a family that is neither IPv4 nor IPv6.
 */
static __always_inline int flowd_sock_ends(struct bpf_sock_ops *ctx, __u8 local[16], __u8 remote[16],
					   __u16 *local_port, __u16 *remote_port)
{
	if (ctx->family == FLOWD_AF_INET) {
		flowd_v4_mapped(local, ctx->local_ip4);
		flowd_v4_mapped(remote, ctx->remote_ip4);
	} else if (ctx->family == FLOWD_AF_INET6) {
		/* One 4-byte load per word: the verifier rejects the 8-byte loads clang would merge them into. */
		__u32 l[4] = { flowd_ctx_u32(&ctx->local_ip6[0]), flowd_ctx_u32(&ctx->local_ip6[1]),
			       flowd_ctx_u32(&ctx->local_ip6[2]), flowd_ctx_u32(&ctx->local_ip6[3]) };
		__u32 r[4] = { flowd_ctx_u32(&ctx->remote_ip6[0]), flowd_ctx_u32(&ctx->remote_ip6[1]),
			       flowd_ctx_u32(&ctx->remote_ip6[2]), flowd_ctx_u32(&ctx->remote_ip6[3]) };
		flowd_v6(local, l);
		flowd_v6(remote, r);
	} else {
		return -1;
	}
	/* local_port is in host order; remote_port holds the network-order port in its low 16 bits. */
	*local_port = (__u16)ctx->local_port;
	*remote_port = (__u16)bpf_ntohl(ctx->remote_port);
	return 0;
}

/* Adds callback flags to those already set (by this or another program), instead of replacing them. */
static __always_inline void flowd_enable_callbacks(struct bpf_sock_ops *ctx, __u32 flags)
{
	__u32 current = ctx->bpf_sock_ops_cb_flags;
	if ((current & flags) != flags)
		bpf_sock_ops_cb_flags_set(ctx, current | flags);
}

#endif /* FLOWD_SOCK_OPS_COMMON_H */
