// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ambientd datapath. All redirection happens inside the enrolled pod's own
 * network namespace / cgroup, never in the node's (see docs/ARCHITECTURE.md
 * and docs/SECURITY.md):
 *
 *   amb_connect4   cgroup/connect4 on the pod cgroup: a TCP connect() to a
 *                  non-local destination is rewritten to <pod IP>:15001, the
 *                  agent's outbound listener in the pod; the original
 *                  destination is kept by socket cookie. connect() of an
 *                  isolated pod, or of another stream protocol, is refused.
 *   amb_connect6   cgroup/connect6: the same for AF_INET6 sockets. A
 *                  v4-mapped destination (::ffff:a.b.c.d) is IPv4 on the
 *                  wire and is captured exactly like connect4; a native IPv6
 *                  destination is rewritten to [<pod IPv6>]:15001 (refused,
 *                  EPERM, when the pod has no IPv6 address).
 *   amb_getpeername4/6  getpeername() of a captured socket returns the
 *                  original destination.
 *   amb_sockops    sockops on the pod cgroup (and the agent's, for sk_msg):
 *                  when the app side is established, re-keys the original
 *                  destination by the app socket's address (what the agent
 *                  sees as peer) and deletes it again when that socket
 *                  closes; puts both ends of in-pod connections in a sockhash.
 *   amb_sk_msg     sk_msg on that sockhash: app<->agent bytes skip the TCP
 *                  stack (optional, AMB_CFG_SOCKMAP_ACCEL).
 *   amb_sk_lookup  sk_lookup on the pod netns: TCP to a pod IP (either
 *                  family) goes to the agent's HBONE (15008) or plaintext
 *                  (15006) listener of that family; with no listener, to an
 *                  isolated pod or to an address no pod owns the lookup fails
 *                  and the kernel answers RST.
 *
 * Every path that cannot capture refuses: the program only runs for enrolled
 * pods (it is attached to their cgroups and netns), so "nothing matched"
 * means "refuse", never "pass".
 *
 * Only helpers and program types of Linux <= 5.10 are on these paths
 * (tools/kernel-audit/kernel-audit.ts checks the object).
 */
#include "ambient.h"
#include <bpf/bpf_endian.h>

#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif

/* Keeps a value in a register where it was computed: stops clang from sinking
 * ctx loads into branches and merging them into one load from a computed ctx
 * pointer, which the verifier refuses ("dereference of modified ctx ptr"). */
#define AMB_KEEP(var) asm volatile("" : "+r"(var))

/* sock_addr verdicts */
#define ALLOW 1
#define REFUSE 0 /* connect() fails with EPERM */

static __always_inline void ip4_set(struct amb_ip *ip, __u32 addr_be)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->family = AMB_AF_INET;
	__builtin_memcpy(ip->addr, &addr_be, 4);
}

static __always_inline void ip6_set(struct amb_ip *ip, __u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
	__u32 a[4] = {a0, a1, a2, a3};
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->family = AMB_AF_INET6;
	__builtin_memcpy(ip->addr, a, 16);
}

static __always_inline __u32 ip4_get(const struct amb_ip *ip)
{
	__u32 a;
	__builtin_memcpy(&a, ip->addr, 4);
	return a;
}

static __always_inline int is_v4_mapped(__u32 a0, __u32 a1, __u32 a2)
{
	return a0 == 0 && a1 == 0 && a2 == bpf_htonl(0x0000ffff);
}

static __always_inline struct amb_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&amb_config, &zero);
}

static __always_inline void counter(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&amb_counters, &reason);
	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline struct amb_pod_stats *stats(__u64 cgroup_id)
{
	struct amb_pod_stats *s = bpf_map_lookup_elem(&amb_pod_stats, &cgroup_id);
	if (s)
		return s;
	struct amb_pod_stats zero = {};
	bpf_map_update_elem(&amb_pod_stats, &cgroup_id, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&amb_pod_stats, &cgroup_id);
}

#define COUNT(cgid, field)                                    \
	do {                                                  \
		struct amb_pod_stats *__s = stats(cgid);      \
		if (__s)                                      \
			__sync_fetch_and_add(&__s->field, 1); \
	} while (0)

/* The pod a connecting task belongs to: its cgroup or the nearest ancestor
 * registered in amb_pod_by_cgroup (k8s puts containers under the pod cgroup). */
static __always_inline struct amb_cgroup_pod *current_pod(__u64 *cgid)
{
	__u64 id = bpf_get_current_cgroup_id();
	struct amb_cgroup_pod *p = bpf_map_lookup_elem(&amb_pod_by_cgroup, &id);
	if (p) {
		*cgid = id;
		return p;
	}
#pragma unroll
	for (int level = AMB_MAX_CGROUP_LEVEL; level >= 1; level--) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue;
		p = bpf_map_lookup_elem(&amb_pod_by_cgroup, &id);
		if (p) {
			*cgid = id;
			return p;
		}
	}
	return 0;
}

/* Destinations that stay inside the pod: loopback, unspecified, the pod itself. */
static __always_inline int local4(__u32 dst, const struct amb_cgroup_pod *pod)
{
	return (bpf_ntohl(dst) >> 24) == 127 || dst == 0 || (pod->v4.family == AMB_AF_INET && dst == ip4_get(&pod->v4));
}

/*
 * Common part of connect4 and v4-mapped connect6 for a non-local IPv4
 * destination: decides, records the original destination, counts. Returns
 * the pod IP to rewrite the destination to (port: cfg->outbound_port), or 0
 * to refuse the connect().
 */
static __always_inline __u32 capture4(struct bpf_sock_addr *ctx, struct amb_config *cfg, __u64 cgid,
                                      struct amb_cgroup_pod *pod, __u32 dst, __u16 dport_be)
{
	if ((pod->flags & AMB_POD_ISOLATED) || !(pod->flags & AMB_POD_ENROLLED) || pod->v4.family != AMB_AF_INET) {
		counter(AMB_CTR_OUT_ISOLATED);
		COUNT(cgid, denied_out);
		return 0;
	}
	/* SOCK_STREAM of another protocol (SCTP): the agent only speaks TCP. */
	if (ctx->protocol != IPPROTO_TCP) {
		counter(AMB_CTR_OUT_PROTOCOL);
		COUNT(cgid, denied_out);
		return 0;
	}
	__u32 pod_ip = ip4_get(&pod->v4);

	struct amb_orig orig = {};
	ip4_set(&orig.dst.ip, dst);
	orig.dst.port = bpf_ntohs(dport_be);
	orig.cgroup_id = cgid;
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
		COUNT(cgid, captured_out);
	} else {
		COUNT(cgid, refused_out);
	}
	return pod_ip;
}

SEC("cgroup/connect4")
int amb_connect4(struct bpf_sock_addr *ctx)
{
	/* UDP and other datagram sockets are not captured (docs/SECURITY.md). */
	if (ctx->type != SOCK_STREAM)
		return ALLOW;
	struct amb_config *cfg = config();
	if (!cfg || !cfg->outbound_port)
		return REFUSE;
	__u64 cgid = 0;
	struct amb_cgroup_pod *pod = current_pod(&cgid);
	if (!pod) {
		/* only enrolled cgroups run this program: a task of no known pod
		 * (e.g. an fd passed out of the pod) is refused, never passed */
		counter(AMB_CTR_OUT_NO_POD);
		return REFUSE;
	}
	__u32 dst = ctx->user_ip4;
	if (local4(dst, pod))
		return ALLOW;
	__u32 to = capture4(ctx, cfg, cgid, pod, dst, (__u16)ctx->user_port);
	if (!to)
		return REFUSE;
	ctx->user_ip4 = to;
	ctx->user_port = bpf_htons(cfg->outbound_port);
	return ALLOW;
}

SEC("cgroup/connect6")
int amb_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return ALLOW;
	struct amb_config *cfg = config();
	if (!cfg || !cfg->outbound_port)
		return REFUSE;
	__u64 cgid = 0;
	struct amb_cgroup_pod *pod = current_pod(&cgid);
	if (!pod) {
		counter(AMB_CTR_OUT_NO_POD);
		return REFUSE;
	}
	__u32 a0 = ctx->user_ip6[0];
	__u32 a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2];
	__u32 a3 = ctx->user_ip6[3];

	/* A v4-mapped destination on a dual-stack socket is IPv4 on the wire
	 * (tcp_v6_connect hands it to tcp_v4_connect without running connect4):
	 * captured exactly like connect4, to ::ffff:<pod IP>:15001. */
	if (is_v4_mapped(a0, a1, a2)) {
		if (local4(a3, pod))
			return ALLOW;
		__u32 to = capture4(ctx, cfg, cgid, pod, a3, (__u16)ctx->user_port);
		if (!to)
			return REFUSE;
		ctx->user_ip6[3] = to;
		ctx->user_port = bpf_htons(cfg->outbound_port);
		return ALLOW;
	}

	/* Native IPv6: loopback and unspecified stay in the pod. */
	if (a0 == 0 && a1 == 0 && a2 == 0 && (a3 == 0 || a3 == bpf_htonl(1)))
		return ALLOW;
	/* A pod without an IPv6 address has no IPv6 listener to capture to:
	 * refused (fail closed, never passed through). */
	if (pod->v6.family != AMB_AF_INET6) {
		counter(AMB_CTR_OUT_IPV6);
		COUNT(cgid, denied_out);
		return REFUSE;
	}
	__u32 p[4];
	__builtin_memcpy(p, pod->v6.addr, 16);
	/* The pod talking to itself stays in the pod. */
	if (a0 == p[0] && a1 == p[1] && a2 == p[2] && a3 == p[3])
		return ALLOW;
	if ((pod->flags & AMB_POD_ISOLATED) || !(pod->flags & AMB_POD_ENROLLED)) {
		counter(AMB_CTR_OUT_ISOLATED);
		COUNT(cgid, denied_out);
		return REFUSE;
	}
	if (ctx->protocol != IPPROTO_TCP) {
		counter(AMB_CTR_OUT_PROTOCOL);
		COUNT(cgid, denied_out);
		return REFUSE;
	}
	struct amb_orig orig = {};
	ip6_set(&orig.dst.ip, a0, a1, a2, a3);
	orig.dst.port = bpf_ntohs((__u16)ctx->user_port);
	orig.cgroup_id = cgid;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&amb_orig_by_cookie, &cookie, &orig, BPF_ANY);

	/* Rewritten to the agent's IPv6 outbound listener on the pod's own IPv6
	 * address (not ::1: the app socket's local address, the key of
	 * amb_orig_dst, must be unique across pods). With no listener there the
	 * kernel refuses it (fail closed). */
	struct bpf_sock_tuple tuple = {};
	__builtin_memcpy(tuple.ipv6.daddr, p, 16);
	__builtin_memcpy(tuple.ipv6.saddr, p, 16);
	tuple.ipv6.dport = bpf_htons(cfg->outbound_port);
	struct bpf_sock *l = bpf_sk_lookup_tcp(ctx, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	if (l) {
		bpf_sk_release(l);
		COUNT(cgid, captured_out);
	} else {
		COUNT(cgid, refused_out);
	}
	ctx->user_ip6[0] = p[0];
	ctx->user_ip6[1] = p[1];
	ctx->user_ip6[2] = p[2];
	ctx->user_ip6[3] = p[3];
	ctx->user_port = bpf_htons(cfg->outbound_port);
	return ALLOW;
}

/* Original destination of a captured socket by its local address. */
static __always_inline struct amb_orig_dst *orig_of(__u32 src_ip, __u32 src_port)
{
	struct amb_sockaddr key = {};
	ip4_set(&key.ip, src_ip);
	key.port = (__u16)src_port;
	struct amb_orig_dst *o = bpf_map_lookup_elem(&amb_orig_dst, &key);
	if (!o || o->dst.ip.family != AMB_AF_INET)
		return 0;
	return o;
}

static __always_inline struct amb_orig_dst *orig_of6(const __u32 *src, __u32 src_port)
{
	struct amb_sockaddr key = {};
	ip6_set(&key.ip, src[0], src[1], src[2], src[3]);
	key.port = (__u16)src_port;
	struct amb_orig_dst *o = bpf_map_lookup_elem(&amb_orig_dst, &key);
	if (!o || o->dst.ip.family != AMB_AF_INET6)
		return 0;
	return o;
}

/* The app asks who its peer is: answer with the original destination, not
 * the agent's outbound listener (Linux 5.8; attached when the kernel has it). */
/*
 * bind() of a pod's stream sockets: a port the agent listens on in the pod
 * (15001/15006/15008) is the agent's. Its listeners form an SO_REUSEPORT
 * group per port (one socket per worker); a socket the app bound there with
 * SO_REUSEPORT under the same uid would join that group and receive a share
 * of the connections meant for the agent, around the mesh. Refused (EPERM),
 * whatever the address. The agent's own sockets are made by the agent's
 * tasks, outside the pod's cgroup: these programs never see them.
 */
static __always_inline int agent_port(__u16 port_be)
{
	struct amb_config *cfg = config();
	if (!cfg)
		return 1; /* not configured: nothing in the pod may take a port then */
	__u16 port = bpf_ntohs(port_be);
	return port && (port == cfg->outbound_port || port == cfg->inbound_port || port == cfg->hbone_port);
}

SEC("cgroup/bind4")
int amb_bind4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || !agent_port((__u16)ctx->user_port))
		return ALLOW;
	counter(AMB_CTR_BIND_AGENT_PORT);
	return REFUSE;
}

SEC("cgroup/bind6")
int amb_bind6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || !agent_port((__u16)ctx->user_port))
		return ALLOW;
	counter(AMB_CTR_BIND_AGENT_PORT);
	return REFUSE;
}

SEC("cgroup/getpeername4")
int amb_getpeername4(struct bpf_sock_addr *ctx)
{
	struct amb_config *cfg = config();
	if (!cfg || ctx->user_port != bpf_htons(cfg->outbound_port))
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || sk->src_ip4 != ctx->user_ip4)
		return 1;
	struct amb_orig_dst *o = orig_of(sk->src_ip4, sk->src_port);
	if (!o)
		return 1;
	ctx->user_ip4 = ip4_get(&o->dst.ip);
	ctx->user_port = bpf_htons(o->dst.port);
	return 1;
}

/* The same for AF_INET6 sockets: captured through a v4-mapped connect, or
 * native IPv6 (the peer is then [<pod IPv6>]:15001). */
SEC("cgroup/getpeername6")
int amb_getpeername6(struct bpf_sock_addr *ctx)
{
	struct amb_config *cfg = config();
	if (!cfg || ctx->user_port != bpf_htons(cfg->outbound_port))
		return 1;
	__u32 u0 = ctx->user_ip6[0];
	__u32 u1 = ctx->user_ip6[1];
	__u32 u2 = ctx->user_ip6[2];
	__u32 u3 = ctx->user_ip6[3];
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	if (is_v4_mapped(u0, u1, u2)) {
		__u32 src = sk->src_ip4;
		if (src != u3)
			return 1;
		struct amb_orig_dst *o = orig_of(src, sk->src_port);
		if (!o)
			return 1;
		ctx->user_ip6[3] = ip4_get(&o->dst.ip);
		ctx->user_port = bpf_htons(o->dst.port);
		return 1;
	}
	/* native IPv6: captured sockets talk to the agent on their own address */
	__u32 src[4];
	src[0] = sk->src_ip6[0];
	src[1] = sk->src_ip6[1];
	src[2] = sk->src_ip6[2];
	src[3] = sk->src_ip6[3];
	if (src[0] != u0 || src[1] != u1 || src[2] != u2 || src[3] != u3)
		return 1;
	struct amb_orig_dst *o = orig_of6(src, sk->src_port);
	if (!o)
		return 1;
	__u32 d[4];
	__builtin_memcpy(d, o->dst.ip.addr, 16);
	ctx->user_ip6[0] = d[0];
	ctx->user_ip6[1] = d[1];
	ctx->user_ip6[2] = d[2];
	ctx->user_ip6[3] = d[3];
	ctx->user_port = bpf_htons(o->dst.port);
	return 1;
}

/* The local address of a sock_ops socket as the agent sees it: IPv4 for
 * AF_INET and AF_INET6 v4-mapped, IPv6 otherwise. Every field is read
 * unconditionally: clang would otherwise merge the loads of the branches into
 * one load from a computed ctx pointer, which the verifier refuses. */
static __always_inline int sockops_local(struct bpf_sock_ops *skops, struct amb_ip *ip)
{
	__u32 family = skops->family;
	__u32 l4 = skops->local_ip4;
	__u32 a0 = skops->local_ip6[0];
	__u32 a1 = skops->local_ip6[1];
	__u32 a2 = skops->local_ip6[2];
	__u32 a3 = skops->local_ip6[3];
	AMB_KEEP(l4);
	AMB_KEEP(a0);
	AMB_KEEP(a1);
	AMB_KEEP(a2);
	AMB_KEEP(a3);
	if (family == AMB_AF_INET) {
		ip4_set(ip, l4);
		return 1;
	}
	if (family == AMB_AF_INET6 && is_v4_mapped(a0, a1, a2)) {
		ip4_set(ip, a3);
		return 1;
	}
	if (family == AMB_AF_INET6) {
		ip6_set(ip, a0, a1, a2, a3);
		return 1;
	}
	return 0;
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
	__u32 op = skops->op;

	/* A captured socket sends its SYN: follow its state from now on, so its
	 * entries are deleted when it closes (also when it never connects). */
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		__u64 cookie = bpf_get_socket_cookie(skops);
		if (bpf_map_lookup_elem(&amb_orig_by_cookie, &cookie))
			bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	if (op == BPF_SOCK_OPS_STATE_CB) {
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		__u64 cookie = bpf_get_socket_cookie(skops);
		bpf_map_delete_elem(&amb_orig_by_cookie, &cookie);
		struct amb_sockaddr key = {};
		if (!sockops_local(skops, &key.ip))
			return 1;
		key.port = (__u16)skops->local_port;
		struct amb_orig_dst *o = bpf_map_lookup_elem(&amb_orig_dst, &key);
		if (o && o->cookie == cookie)
			bpf_map_delete_elem(&amb_orig_dst, &key);
		return 1;
	}
	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;

	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		__u64 cookie = bpf_get_socket_cookie(skops);
		struct amb_orig *o = bpf_map_lookup_elem(&amb_orig_by_cookie, &cookie);
		struct amb_sockaddr key = {};
		if (o && sockops_local(skops, &key.ip)) {
			key.port = (__u16)skops->local_port;
			struct amb_orig_dst v = {};
			v.dst = o->dst;
			v.cookie = cookie;
			v.cgroup_id = o->cgroup_id;
			v.created_ns = bpf_ktime_get_ns();
			if (bpf_map_update_elem(&amb_orig_dst, &key, &v, BPF_ANY))
				counter(AMB_CTR_ORIG_DST_FULL);
			bpf_map_delete_elem(&amb_orig_by_cookie, &cookie);
			bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		}
	}

	/* Same-pod pairs (app<->agent inside an enrolled pod) go into the sockhash. */
	if (skops->family != AMB_AF_INET)
		return 1;
	struct amb_config *cfg = config();
	if (!cfg || !(cfg->flags & AMB_CFG_SOCKMAP_ACCEL))
		return 1;
	if (skops->local_ip4 != skops->remote_ip4)
		return 1;
	struct amb_tuple t;
	sockops_tuple(skops, &t);
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

/* An isolated or not (yet) enrolled pod takes no inbound connection: counted, refused. */
static __always_inline int inbound_refused(const struct amb_pod *pod)
{
	__u64 cgid = pod->cgroup_id;
	if (!(pod->flags & AMB_POD_ISOLATED) && (pod->flags & AMB_POD_ENROLLED) && cgid)
		return 0;
	counter(AMB_CTR_IN_ISOLATED);
	if (cgid)
		COUNT(cgid, denied_in);
	return 1;
}

/* Steers an inbound SYN to the pod's agent listener of its family
 * (family_key: 0 for IPv4, AMB_AF_INET6), or refuses it. */
static __always_inline int steer(struct bpf_sk_lookup *ctx, struct amb_pod *pod, __u8 family_key)
{
	__u64 cgid = pod->cgroup_id;
	struct amb_config *cfg = config();
	if (!cfg)
		return SK_DROP;
	struct amb_listener_key key = {};
	key.cgroup_id = cgid;
	key.family = family_key;
	int hbone = ctx->local_port == cfg->hbone_port;
	key.port = hbone ? cfg->hbone_port : cfg->inbound_port;
	struct bpf_sock *sk = bpf_map_lookup_elem(&amb_listeners, &key);
	if (!sk) {
		/* Fail closed: no agent listener, the lookup fails, the kernel sends RST. */
		COUNT(cgid, refused_in);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		COUNT(cgid, refused_in);
		return SK_DROP;
	}
	if (hbone)
		COUNT(cgid, hbone_in);
	else
		COUNT(cgid, captured_in);
	return SK_PASS;
}

static __always_inline int sk_lookup6(struct bpf_sk_lookup *ctx)
{
	__u32 l0 = ctx->local_ip6[0], l1 = ctx->local_ip6[1], l2 = ctx->local_ip6[2], l3 = ctx->local_ip6[3];
	__u32 r0 = ctx->remote_ip6[0], r1 = ctx->remote_ip6[1], r2 = ctx->remote_ip6[2], r3 = ctx->remote_ip6[3];
	/* loopback stays in the pod */
	if (l0 == 0 && l1 == 0 && l2 == 0 && l3 == bpf_htonl(1))
		return SK_PASS;
	/* the pod talking to itself, and the agent reaching the app from inside the pod */
	if (l0 == r0 && l1 == r1 && l2 == r2 && l3 == r3)
		return SK_PASS;
	struct amb_ip local;
	ip6_set(&local, l0, l1, l2, l3);
	struct amb_pod *pod = bpf_map_lookup_elem(&amb_pods, &local);
	if (!pod) {
		/* an IPv6 address no pod owns (the link-local one, ...): refused */
		counter(AMB_CTR_IN_IPV6);
		return SK_DROP;
	}
	__u64 cgid = pod->cgroup_id;
	if (inbound_refused(pod))
		return SK_DROP;
	/* Traffic from this node's IPv6 address and IPv6 kubelet probes is not captured. */
	__u32 e[4];
	__builtin_memcpy(e, pod->exempt_src.addr, 16);
	if ((pod->exempt_src.family == AMB_AF_INET6 && r0 == e[0] && r1 == e[1] && r2 == e[2] && r3 == e[3]) ||
	    (r0 == bpf_htonl(AMB_PROBE_SNAT_IP6_0) && r1 == bpf_htonl(AMB_PROBE_SNAT_IP6_1) &&
	     r2 == bpf_htonl(AMB_PROBE_SNAT_IP6_2) && r3 == bpf_htonl(AMB_PROBE_SNAT_IP6_3))) {
		COUNT(cgid, bypass_in);
		return SK_PASS;
	}
	return steer(ctx, pod, AMB_AF_INET6);
}

static __always_inline int sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->family == AMB_AF_INET6)
		return sk_lookup6(ctx);
	if (ctx->family != AMB_AF_INET)
		return SK_PASS;
	__u32 local_ip = ctx->local_ip4;
	if ((bpf_ntohl(local_ip) >> 24) == 127)
		return SK_PASS;
	/* The pod talking to itself, and the agent reaching the app from inside
	 * the pod, are not captured again. */
	if (ctx->remote_ip4 == local_ip)
		return SK_PASS;

	/* This program runs only in enrolled pods' netns: an address no pod
	 * owns here is refused, never passed to the app. */
	struct amb_ip local;
	ip4_set(&local, local_ip);
	struct amb_pod *pod = bpf_map_lookup_elem(&amb_pods, &local);
	if (!pod) {
		counter(AMB_CTR_IN_UNKNOWN_ADDR);
		return SK_DROP;
	}
	__u64 cgid = pod->cgroup_id;
	if (inbound_refused(pod))
		return SK_DROP;
	/* Traffic from this node (kubelet probes) is not captured. */
	if ((pod->exempt_src.family == AMB_AF_INET && ctx->remote_ip4 == ip4_get(&pod->exempt_src)) ||
	    ctx->remote_ip4 == bpf_htonl(AMB_PROBE_SNAT_IP4)) {
		COUNT(cgid, bypass_in);
		return SK_PASS;
	}
	return steer(ctx, pod, 0);
}

SEC("sk_lookup")
int amb_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	return sk_lookup(ctx);
}

/*
 * The same, plus: a SYN that arrives on the pod's loopback device is never
 * steered. With client-address preservation the agent reaches the app from
 * inside the pod with a transparent socket bound to the client's address, so
 * its SYN has a source that is not the pod's; on loopback only a socket of
 * this netns can have sent it (IP_TRANSPARENT or a raw socket: CAP_NET_ADMIN
 * / CAP_NET_RAW in the pod), while anything from outside the pod arrives on
 * its eth0 and is steered as before. Reads bpf_sk_lookup.ingress_ifindex
 * (Linux 5.17): loaded only where the verifier accepts it; the agent falls
 * back to amb_sk_lookup (and to the pod's own address as source) elsewhere.
 */
SEC("sk_lookup")
int amb_sk_lookup_lo(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (ctx->ingress_ifindex == AMB_LOOPBACK_IFINDEX)
		return SK_PASS;
	return sk_lookup(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
