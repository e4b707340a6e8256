/**
 * Pure decisions of pod capture (no I/O; unit-tested): which addresses two
 * live pods claim at once, when a pod whose enrollment failed is tried
 * again, and which of a pod's TCP sockets predate its enrollment.
 */
import type { TcpSocketInfo } from '../datapath/native-api.js';

/** The addresses of the given pods that more than one of them claims. */
export function conflictingIps(pods: Iterable<{ ips: readonly string[] }>): Set<string> {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const p of pods) {
    for (const ip of new Set(p.ips)) {
      if (seen.has(ip)) twice.add(ip);
      seen.add(ip);
    }
  }
  return twice;
}

/** Back-off before the n-th retry (n >= 1) of a failed enrollment: 1 s, 2 s, 4 s ... at most 30 s. */
export function retryDelayMs(attempt: number, baseMs = 1000, maxMs = 30_000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
}

// include/net/tcp_states.h
export const TCP = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
} as const;

/** States of a connection that can still carry bytes (dumped and reset at enrollment). */
export const LIVE_STATES = [TCP.ESTABLISHED, TCP.SYN_SENT, TCP.SYN_RECV, TCP.FIN_WAIT1, TCP.FIN_WAIT2, TCP.CLOSE_WAIT, TCP.LAST_ACK, TCP.CLOSING].reduce(
  (m, s) => m | (1 << s),
  0,
);

/**
 * Istio's CNI SNATs kubelet probes to these addresses (IPv4, and IPv6 as
 * ztunnel has it); the datapath never captures them (bpf/ambient.h
 * AMB_PROBE_SNAT_IP4/6) and enrollment never resets their connections.
 */
export const PROBE_SNAT_IPS = ['169.254.7.127', 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff'] as const;

function unmapped(ip: string): string {
  return ip.toLowerCase().startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

function loopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1' || ip === '0.0.0.0' || ip === '::';
}

/**
 * The sockets of a pod's netns that were opened outside the mesh, before the
 * pod was captured: live connections whose other end is outside the pod,
 * that are not the agent's (its marks: its own sockets', and those of app
 * sockets its transparent sockets reached, which inherit theirs), and not exempt (from the node: kubelet
 * probes, which the datapath never captures either). Everything inside the
 * pod (loopback, the pod's own addresses: the app's side of captured
 * connections) is kept.
 */
export function socketsToReset(
  socks: readonly TcpSocketInfo[],
  pod: { ips: readonly string[]; marks: readonly number[]; exempt: readonly string[] },
): TcpSocketInfo[] {
  const own = new Set(pod.ips);
  const exempt = new Set(pod.exempt);
  return socks.filter((s) => {
    if (((1 << s.state) & LIVE_STATES) === 0) return false;
    if (pod.marks.includes(s.mark)) return false;
    const remote = unmapped(s.dst);
    return !loopback(remote) && !own.has(remote) && !exempt.has(remote);
  });
}
