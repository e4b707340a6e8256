/**
 * Byte relay between a captured client socket and its upstream, with TCP
 * semantics preserved end to end: a FIN becomes a FIN (half-close), a reset
 * becomes a reset, and the record is closed exactly once when both are gone.
 */
import type net from 'node:net';
import type { ConnectionRecord, ConnectionTracker } from './connections.js';
import { resetSocket as reset } from './hbone/tunnel.js';

export function relay(client: net.Socket, upstream: net.Socket, rec: ConnectionRecord, tracker: ConnectionTracker): void {
  let failed: string | null = null;
  let closed = 0;
  const done = (): void => {
    if (++closed < 2) return;
    tracker.finish(rec, failed ? 'failed' : 'closed', failed ?? 'eof', { sent: client.bytesRead, received: client.bytesWritten });
  };
  const onError = (other: net.Socket, side: string) => (e: NodeJS.ErrnoException): void => {
    const code = e.code ?? 'ERROR';
    if (!failed) failed = code === 'ECONNRESET' ? `reset by ${side}` : `${side}: ${code}`;
    reset(other);
  };
  client.on('error', onError(upstream, 'client'));
  upstream.on('error', onError(client, 'upstream'));
  client.once('close', done);
  upstream.once('close', done);
  client.pipe(upstream);
  upstream.pipe(client);
}
