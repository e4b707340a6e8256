// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ambientd datapath. All redirection happens inside the enrolled pod's own
 * network namespace / cgroup, never in the node's (see docs/ARCHITECTURE.md):
 *
 *   amb_connect4   cgroup/connect4 on the pod cgroup: a TCP connect() to a
 *                  non-local destination is rewritten to <pod IP>:15001, the
 *                  agent's outbound listener in the pod; the original
 *                  destination is kept by socket cookie.
 *   amb_getpeername4  cgroup/getpeername4 on the pod cgroup: getpeername()
 *                  of a captured socket returns the original destination.
 *   amb_sockops    sockops on the pod cgroup and the agent's cgroup: when the
 *                  app side is established, re-keys the original destination
 *                  by the app socket's address (what the agent sees as peer),
 *                  and puts both ends of in-pod connections in a sockhash.
 *   amb_sk_msg     sk_msg on that sockhash: app<->agent bytes skip the TCP
 *                  stack (optional, AMB_CFG_SOCKMAP_ACCEL).
 *   amb_sk_lookup  sk_lookup on the pod netns: TCP to the pod IP goes to the
 *                  agent's HBONE (15008) or plaintext (15006) listener; with no
 *                  listener the lookup fails and the kernel answers RST.
 *
 * Only helpers and program types of Linux <= 5.10 are on these paths
 * (scripts/kernel-audit.sh checks).
 */
#include "ambient.h"
#include <bpf/bpf_endian.h>

#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif

static __always_inline void ip4_set(struct amb_ip *ip, __u32 addr_be)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->family = AMB_AF_INET;
	__builtin_memcpy(ip->addr, &addr_be, 4);
}

static __always_inline __u32 ip4_get(const struct amb_ip *ip)
{
	__u32 a;
	__builtin_memcpy(&a, ip->addr, 4);
	return a;
}

static __always_inline struct amb_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&amb_config, &zero);
}

static __always_inline struct amb_pod_stats *stats(const struct amb_ip *pod)
{
	struct amb_pod_stats *s = bpf_map_lookup_elem(&amb_pod_stats, pod);
	if (s)
		return s;
	struct amb_pod_stats zero = {};
	bpf_map_update_elem(&amb_pod_stats, pod, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&amb_pod_stats, pod);
}

#define COUNT(pod, field)                                   \
	do {                                                \
		struct amb_pod_stats *__s = stats(pod);     \
		if (__s)                                    \
			__sync_fetch_and_add(&__s->field, 1); \
	} while (0)

/* The pod a connecting task belongs to: its cgroup or the nearest ancestor
 * registered in amb_pod_by_cgroup (k8s puts containers under the pod cgroup). */
static __always_inline struct amb_pod_addrs *current_pod(void)
{
	struct amb_pod_addrs *p = bpf_map_lookup_elem(&amb_pod_by_cgroup, &(__u64){ bpf_get_current_cgroup_id() });
	if (p)
		return p;
#pragma unroll
	for (int level = AMB_MAX_CGROUP_LEVEL; level >= 1; level--) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue;
		p = bpf_map_lookup_elem(&amb_pod_by_cgroup, &id);
		if (p)
			return p;
	}
	return 0;
}

SEC("cgroup/connect4")
int amb_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct amb_config *cfg = config();
	if (!cfg || !cfg->outbound_port)
		return 1;
	struct amb_pod_addrs *pod = current_pod();
	if (!pod || pod->v4.family != AMB_AF_INET)
		return 1;

	__u32 dst = ctx->user_ip4;
	__u32 pod_ip = ip4_get(&pod->v4);
	__u32 dst_h = bpf_ntohl(dst);
	/* Local destinations stay local: loopback, the pod itself, unspecified. */
	if ((dst_h >> 24) == 127 || dst == pod_ip || dst == 0)
		return 1;

	struct amb_orig orig = {};
	ip4_set(&orig.dst.ip, dst);
	orig.dst.port = bpf_ntohs((__u16)ctx->user_port);
	orig.pod = pod->v4;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&amb_orig_by_cookie, &cookie, &orig, BPF_ANY);

	/* Fail closed: the connection always goes to the pod's own outbound
	 * port. With no agent listening there the kernel refuses it. */
	struct bpf_sock_tuple tuple = {};
	tuple.ipv4.daddr = pod_ip;
	tuple.ipv4.dport = bpf_htons(cfg->outbound_port);
	tuple.ipv4.saddr = pod_ip;
	struct bpf_sock *l = bpf_sk_lookup_tcp(ctx, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (l) {
		bpf_sk_release(l);
		COUNT(&pod->v4, captured_out);
	} else {
		COUNT(&pod->v4, refused_out);
	}

	ctx->user_ip4 = pod_ip;
	ctx->user_port = bpf_htons(cfg->outbound_port);
	return 1;
}

SEC("cgroup/connect6")
int amb_connect6(struct bpf_sock_addr *ctx)
{
	/* IPv6 capture comes later on the same maps; v6 connects are not touched yet. */
	return 1;
}

/* The app asks who its peer is: answer with the original destination, not
 * the agent's outbound listener (Linux 5.8; attached when the kernel has it). */
SEC("cgroup/getpeername4")
int amb_getpeername4(struct bpf_sock_addr *ctx)
{
	struct amb_config *cfg = config();
	if (!cfg || ctx->user_port != bpf_htons(cfg->outbound_port))
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || sk->src_ip4 != ctx->user_ip4)
		return 1;
	struct amb_sockaddr key = {};
	ip4_set(&key.ip, sk->src_ip4);
	key.port = (__u16)sk->src_port;
	struct amb_orig_dst *o = bpf_map_lookup_elem(&amb_orig_dst, &key);
	if (!o || o->dst.ip.family != AMB_AF_INET)
		return 1;
	ctx->user_ip4 = ip4_get(&o->dst.ip);
	ctx->user_port = bpf_htons(o->dst.port);
	return 1;
}

static __always_inline void sockops_tuple(struct bpf_sock_ops *skops, struct amb_tuple *t)
{
	__builtin_memset(t, 0, sizeof(*t));
	ip4_set(&t->local, skops->local_ip4);
	ip4_set(&t->remote, skops->remote_ip4);
	t->local_port = (__u16)skops->local_port;
	t->remote_port = (__u16)bpf_ntohl(skops->remote_port);
}

SEC("sockops")
int amb_sockops(struct bpf_sock_ops *skops)
{
	if (skops->family != AMB_AF_INET)
		return 1;
	__u32 op = skops->op;
	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;

	struct amb_tuple t;
	sockops_tuple(skops, &t);

	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		__u64 cookie = bpf_get_socket_cookie(skops);
		struct amb_orig *o = bpf_map_lookup_elem(&amb_orig_by_cookie, &cookie);
		if (o) {
			struct amb_sockaddr key = {};
			key.ip = t.local;
			key.port = t.local_port;
			struct amb_orig_dst v = {};
			v.dst = o->dst;
			v.cookie = cookie;
			v.created_ns = bpf_ktime_get_ns();
			bpf_map_update_elem(&amb_orig_dst, &key, &v, BPF_ANY);
			bpf_map_delete_elem(&amb_orig_by_cookie, &cookie);
		}
	}

	/* Same-pod pairs (app<->agent inside an enrolled pod) go into the sockhash. */
	struct amb_config *cfg = config();
	if (!cfg || !(cfg->flags & AMB_CFG_SOCKMAP_ACCEL))
		return 1;
	if (skops->local_ip4 != skops->remote_ip4)
		return 1;
	if (!bpf_map_lookup_elem(&amb_pods, &t.local))
		return 1;
	bpf_sock_hash_update(skops, &amb_sock_pairs, &t, BPF_NOEXIST);
	return 1;
}

SEC("sk_msg")
int amb_sk_msg(struct sk_msg_md *msg)
{
	if (msg->family != AMB_AF_INET)
		return SK_PASS;
	struct amb_tuple peer;
	__builtin_memset(&peer, 0, sizeof(peer));
	ip4_set(&peer.local, msg->remote_ip4);
	ip4_set(&peer.remote, msg->local_ip4);
	peer.local_port = (__u16)bpf_ntohl(msg->remote_port);
	peer.remote_port = (__u16)msg->local_port;
	/* No peer in the map (e.g. accel turned off for it): the normal path. */
	bpf_msg_redirect_hash(msg, &amb_sock_pairs, &peer, BPF_F_INGRESS);
	return SK_PASS;
}

SEC("sk_lookup")
int amb_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP || ctx->family != AMB_AF_INET)
		return SK_PASS;
	struct amb_ip local;
	ip4_set(&local, ctx->local_ip4);
	struct amb_pod *pod = bpf_map_lookup_elem(&amb_pods, &local);
	if (!pod || !(pod->flags & AMB_POD_ENROLLED))
		return SK_PASS;
	struct amb_config *cfg = config();
	if (!cfg)
		return SK_PASS;

	/* The pod talking to itself, and the agent reaching the app from inside
	 * the pod, are not captured again. */
	if (ctx->remote_ip4 == ctx->local_ip4)
		return SK_PASS;
	/* Traffic from this node (kubelet probes) is not captured. */
	if ((pod->exempt_src.family == AMB_AF_INET && ctx->remote_ip4 == ip4_get(&pod->exempt_src)) ||
	    ctx->remote_ip4 == bpf_htonl(AMB_PROBE_SNAT_IP4)) {
		COUNT(&local, bypass_in);
		return SK_PASS;
	}

	struct amb_listener_key key = {};
	key.pod = local;
	int hbone = ctx->local_port == cfg->hbone_port;
	key.port = hbone ? cfg->hbone_port : cfg->inbound_port;
	struct bpf_sock *sk = bpf_map_lookup_elem(&amb_listeners, &key);
	if (!sk) {
		/* Fail closed: no agent listener, the lookup fails, the kernel sends RST. */
		COUNT(&local, refused_in);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		COUNT(&local, refused_in);
		return SK_DROP;
	}
	if (hbone)
		COUNT(&local, hbone_in);
	else
		COUNT(&local, captured_in);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
