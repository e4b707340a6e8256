/**
 * How long a silent peer keeps connections open: one setting, `peerTimeout`
 * (default 30 s), from which every liveness check is derived so that a dead
 * node or a network partition (no FIN, no RST ever arrives) ends every
 * connection it carried within about peerTimeout:
 *
 *   HTTP/2 PING on every HBONE session, both sides: every T/4, and a PING
 *   unanswered for T/2 ends the session (and so its streams and their sockets).
 *   TCP keepalive on every socket the agent owns: idle T/2, then 3 probes T/6
 *   apart (whole seconds, at least 1), set when the socket is made (a
 *   listener's options are inherited by every socket it accepts).
 *   TCP_USER_TIMEOUT = T on HBONE connections: data unacknowledged for T ends
 *   the connection even while it is busy (retransmissions alone would take
 *   ~15 min). Not on sockets to apps or plaintext destinations, where a
 *   receiver that stops reading (zero window) must not be cut.
 *
 * Why 30 s: long enough to ride out a GC pause or a short link flap of the
 * peer, short enough that a dead node's connections are gone long before
 * Kubernetes notices the node (40 s) and evicts its pods (5 min). ztunnel
 * pings every 10 s with a 20 s timeout, but its TCP keepalive (180 s idle,
 * 180 s interval, 9 probes) leaves plain connections to a dead peer open for
 * half an hour.
 */
import type { TcpLiveness } from '../datapath/native-api.js';
import { AmbientError } from '../util/errors.js';

export interface LivenessParams {
  pingIntervalMs: number;
  pingTimeoutMs: number;
  tcp: TcpLiveness;
}

export const DEFAULT_PEER_TIMEOUT_MS = 30_000;

export function livenessParams(peerTimeoutMs: number = DEFAULT_PEER_TIMEOUT_MS): LivenessParams {
  const t = Math.max(1000, peerTimeoutMs);
  return {
    pingIntervalMs: Math.max(250, Math.floor(t / 4)),
    pingTimeoutMs: Math.max(500, Math.floor(t / 2)),
    tcp: { keepIdleMs: Math.max(1000, Math.floor(t / 2)), keepIntervalMs: Math.max(1000, Math.floor(t / 6)), keepCount: 3, userTimeoutMs: t },
  };
}

/**
 * Sends an HTTP/2 PING every interval and destroys the session when one
 * stays unanswered longer than the timeout. Returns a stop function (also
 * called when the session closes).
 */
export function keepPinging(
  session: { ping(cb: (err: Error | null) => void): boolean; destroy(err?: Error): void; destroyed: boolean; once(ev: 'close', l: () => void): unknown },
  p: Pick<LivenessParams, 'pingIntervalMs' | 'pingTimeoutMs'>,
  onTimeout?: () => void,
): () => void {
  let outstandingSince = 0;
  const timer = setInterval(() => {
    if (session.destroyed) return;
    if (outstandingSince > 0) {
      if (Date.now() - outstandingSince > p.pingTimeoutMs) {
        onTimeout?.();
        session.destroy(
          new AmbientError(
            'HBONE_TIMEOUT',
            'HBONE peer did not answer PING in time',
            'the peer or the network between is gone (peerTimeout): its session and streams are ended',
          ),
        );
      }
      return;
    }
    outstandingSince = Date.now();
    let sent = false;
    try {
      sent = session.ping((err) => {
        if (!err) outstandingSince = 0;
      });
    } catch {
      /* closing */
    }
    if (!sent) outstandingSince = 0;
  }, p.pingIntervalMs);
  timer.unref();
  const stop = (): void => clearInterval(timer);
  session.once('close', stop);
  return stop;
}
