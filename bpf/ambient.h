/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ambientd — the one header that declares every BPF map and its key/value
 * structs. Maps are declared with __type(...) so the object's BTF carries the
 * struct layouts and `bpftool map dump pinned <path>` prints field names.
 *
 * Byte-order conventions (they matter to the TypeScript codecs in
 * src/datapath/codec.ts, which a unit test checks against this file's BTF):
 *   - addresses (struct amb_ip.addr) are in network byte order, IPv4 in
 *     addr[0..3] with addr[4..15] zero;
 *   - ports are in HOST byte order everywhere in our structs.
 *
 * Identity: a pod's datapath state is keyed by its cgroup v2 id (unique to
 * one pod object, never reused while the cgroup exists), not by its IP. The
 * IP only finds the pod that owns it (amb_pods), so a pod whose IP is reused
 * by another pod never loses, or takes, the other pod's state.
 */
#ifndef AMBIENT_H
#define AMBIENT_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define AMB_AF_INET 2
#define AMB_AF_INET6 10

/* Mark the agent puts on every socket it opens inside a pod (ztunnel's 0x539). */
#define AMB_DEFAULT_MARK 0x539

/* the loopback device is ifindex 1 in every network namespace (LOOPBACK_IFINDEX) */
#define AMB_LOOPBACK_IFINDEX 1

/* Kubelet probes are SNATed to this address by Istio's CNI; never captured. */
#define AMB_PROBE_SNAT_IP4 0xA9FE077F /* 169.254.7.127, host order */
/* ... and to this one over IPv6 (ztunnel's fd16:9254:7127:1337:ffff:ffff:ffff:ffff),
 * as four 32-bit words in host order */
#define AMB_PROBE_SNAT_IP6_0 0xFD169254
#define AMB_PROBE_SNAT_IP6_1 0x71271337
#define AMB_PROBE_SNAT_IP6_2 0xFFFFFFFF
#define AMB_PROBE_SNAT_IP6_3 0xFFFFFFFF

/* How deep in the cgroup v2 tree we look for a pod's cgroup (k8s: ~3-5). */
#define AMB_MAX_CGROUP_LEVEL 10

/* An IP address of either family. */
struct amb_ip {
	__u8 family; /* AMB_AF_INET or AMB_AF_INET6; 0 = unset */
	__u8 pad[3];
	__u8 addr[16]; /* network order; IPv4 uses addr[0..3] */
};

struct amb_sockaddr {
	struct amb_ip ip;
	__u16 port; /* host order */
	__u16 pad;
};

/* amb_config[0]: agent-wide settings written at start-up. */
struct amb_config {
	__u16 outbound_port; /* 15001 */
	__u16 inbound_port;  /* 15006 */
	__u16 hbone_port;    /* 15008 */
	__u16 pad;
	__u32 mark;  /* SO_MARK of the agent's own sockets */
	__u32 flags; /* AMB_CFG_* */
};
#define AMB_CFG_SOCKMAP_ACCEL (1u << 0)

/* Pod state flags (amb_pods.flags and amb_cgroup_pod.flags). */
#define AMB_POD_ENROLLED (1u << 0) /* captured: the agent's listeners are registered */
#define AMB_POD_ISOLATED (1u << 1) /* every TCP connection refused, both ways (enrollment failed, IP conflict) */

/* amb_pods: pod IP -> the pod that owns it (inbound: sk_lookup). */
struct amb_pod {
	__u64 cgroup_id; /* the owning pod's cgroup id (0: no single owner, e.g. an IP conflict) */
	__u32 flags;     /* AMB_POD_* */
	__u32 pad;
	struct amb_ip exempt_src; /* the node's own address: kubelet probes */
};

/* amb_pod_by_cgroup: pod cgroup v2 id -> the pod (outbound: connect4/6). */
struct amb_cgroup_pod {
	struct amb_ip v4;
	struct amb_ip v6;
	__u32 flags; /* AMB_POD_* */
	__u32 pad;
};

/* amb_pod_stats: pod cgroup id -> redirect counters (written by BPF only). */
struct amb_pod_stats {
	__u64 captured_out; /* connect() rewritten to the outbound listener */
	__u64 refused_out;  /* ... while no outbound listener existed (fail closed: ECONNREFUSED) */
	__u64 denied_out;   /* connect() refused (EPERM): isolated pod, a family it has no address of, other protocol */
	__u64 captured_in;  /* inbound SYN steered to the plaintext listener */
	__u64 hbone_in;     /* inbound SYN steered to the HBONE listener */
	__u64 refused_in;   /* inbound SYN refused: no listener (fail closed) */
	__u64 denied_in;    /* inbound SYN refused: the pod is isolated */
	__u64 bypass_in;    /* inbound from the node itself (probes): not captured */
};

/* amb_counters[AMB_CTR_*]: refusals by reason, also those no pod can be
 * charged with (an address no pod owns, a task in no pod's cgroup). */
#define AMB_CTR_OUT_NO_POD 0      /* connect() from an enrolled cgroup by a task of no known pod */
#define AMB_CTR_OUT_IPV6 1        /* connect() to a native IPv6 destination from a pod without an IPv6 address */
#define AMB_CTR_OUT_PROTOCOL 2    /* a stream socket of another protocol than TCP */
#define AMB_CTR_OUT_ISOLATED 3    /* connect() from an isolated pod */
#define AMB_CTR_IN_IPV6 4         /* inbound IPv6 SYN to an IPv6 address no pod owns (link-local, ...) */
#define AMB_CTR_IN_UNKNOWN_ADDR 5 /* inbound SYN to an address no pod owns, in an enrolled netns */
#define AMB_CTR_IN_ISOLATED 6     /* inbound SYN to an isolated pod */
#define AMB_CTR_ORIG_DST_FULL 7   /* amb_orig_dst full: the connection cannot be forwarded (the agent resets it) */
#define AMB_CTR_BIND_AGENT_PORT 8 /* bind() of a stream socket in a pod to a port the agent listens on */
#define AMB_CTR_MAX 9

/* amb_orig_by_cookie: app socket cookie -> original destination (connect() until established). */
struct amb_orig {
	struct amb_sockaddr dst;
	__u64 cgroup_id; /* the pod that connected */
};

/* amb_orig_dst: app socket's local address (pod IP:sport) -> original
 * destination, for as long as that socket lives: the entry is made when it is
 * established and deleted when it closes (sockops state callback, matched by
 * cookie). Its 4-tuple (pod IP:sport -> pod IP:15001) is unique while it
 * lives, so the agent's accepted socket with that peer is its other end. */
struct amb_orig_dst {
	struct amb_sockaddr dst;
	__u64 cookie;     /* the app socket's cookie */
	__u64 cgroup_id;  /* the pod the socket belongs to (checked by the agent) */
	__u64 created_ns; /* bpf_ktime_get_ns() when established */
};

/* amb_listeners: (pod, role port, family) -> the agent's listening socket in that pod. */
struct amb_listener_key {
	__u64 cgroup_id; /* the pod */
	__u16 port;      /* inbound_port or hbone_port (or outbound_port), host order */
	__u8 family;     /* 0: the IPv4 listener (also v4-mapped); AMB_AF_INET6: the IPv6 one.
	                  * 0, not AMB_AF_INET, so IPv4 keys are those of earlier agents (hand-over) */
	__u8 pad;
	__u32 pad2;
};

/* amb_sock_pairs: both ends of an in-pod app<->agent connection, for sk_msg. */
struct amb_tuple {
	struct amb_ip local;
	struct amb_ip remote;
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
};

#ifdef __BPF__
#define AMB_MAX_PODS 4096

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct amb_config);
} amb_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AMB_MAX_PODS);
	__type(key, struct amb_ip);
	__type(value, struct amb_pod);
} amb_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AMB_MAX_PODS);
	__type(key, __u64);
	__type(value, struct amb_cgroup_pod);
} amb_pod_by_cgroup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AMB_MAX_PODS);
	__type(key, __u64);
	__type(value, struct amb_pod_stats);
} amb_pod_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AMB_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} amb_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct amb_orig);
} amb_orig_by_cookie SEC(".maps");

/* Not LRU: an entry lives exactly as long as its socket; when the map is
 * full a new connection is reset, never a live one's entry evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct amb_sockaddr);
	__type(value, struct amb_orig_dst);
} amb_orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, AMB_MAX_PODS * 4);
	__type(key, struct amb_listener_key);
	__type(value, __u64);
} amb_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct amb_tuple);
	__type(value, __u64);
} amb_sock_pairs SEC(".maps");
#endif /* __BPF__ */

#endif /* AMBIENT_H */
