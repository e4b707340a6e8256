/**
 * Byte relay between a captured client socket and its upstream, with TCP
 * semantics preserved end to end: a FIN becomes a FIN (half-close), a reset
 * becomes a reset, and the record is closed exactly once when both are gone.
 */
import type net from 'node:net';
import type { ConnectionTracker, TrackedConnection } from './connections.js';
import { CLOSED, type Outcome } from './outcome.js';
import { resetSocket as reset } from './hbone/tunnel.js';

export function relay(client: net.Socket, upstream: net.Socket, rec: TrackedConnection, tracker: ConnectionTracker): void {
  let failed: Outcome | null = null;
  let closed = 0;
  const done = (): void => {
    if (++closed < 2) return;
    tracker.finish(rec, failed ?? CLOSED, { sent: client.bytesRead, received: client.bytesWritten });
  };
  const onError =
    (other: net.Socket, side: 'client' | 'upstream') =>
    (e: NodeJS.ErrnoException): void => {
      const code = e.code ?? 'ERROR';
      if (!failed) failed = code === 'ECONNRESET' ? { kind: 'reset', by: side } : { kind: 'socket_error', side, errno: code };
      reset(other);
    };
  client.on('error', onError(upstream, 'client'));
  upstream.on('error', onError(client, 'upstream'));
  client.once('close', done);
  upstream.once('close', done);
  client.pipe(upstream);
  upstream.pipe(client);
}
