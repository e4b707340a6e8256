/**
 * A stand-in for src/workers/worker.ts in the WorkerPool's unit tests (no
 * addon, no sockets): it speaks the protocol and behaves as workerData.mode says.
 *   events  reports one connection that ended and one still open, and a counter
 *   stuck   never answers a call (a busy or deadlocked worker)
 *   nolisten  cannot serve the sockets it is given
 * Run by node --test as a file of its own, it does nothing.
 */
import { parentPort, workerData } from 'node:worker_threads';

const port = parentPort;
if (port) {
  const mode = (workerData as { mode?: string } | null)?.mode ?? 'events';
  const rec = (id: number) => ({
    id,
    pod: 'shop/web',
    direction: 'outbound',
    via: 'hbone',
    src: { ip: '10.0.0.5', port: 40000 + id },
    claimedSrc: null,
    dst: { ip: '10.0.1.7', port: 8080 },
    service: null,
    endpoint: null,
    peerIdentity: 'spiffe://cluster.local/ns/shop/sa/db',
    peerCertSerial: null,
    startMs: Date.now(),
    endMs: null,
    bytesSent: 0,
    bytesReceived: 0,
    outcome: null,
  });
  port.postMessage({ t: 'ready' });
  if (mode === 'events')
    port.postMessage({
      t: 'batch',
      events: [
        { k: 'open', rec: rec(1) },
        { k: 'open', rec: rec(2) },
        { k: 'end', id: 1, outcome: { kind: 'closed' }, sent: 10, received: 20 },
        { k: 'count', reason: 'policy_denied', n: 2 },
      ],
      sockets: { source: 2, destination: 0 },
    });
  const stats = {
    server: { connections: { open: 0 }, streams: { active: 0, perSessionPeak: 0 }, rejections: {} },
    pools: { 'shop/web': { sessions: 1, activeStreams: 1 } },
    sockets: { source: 2, destination: 0 },
    windows: { window: 65536, openStreams: 1, changes: 0, settingsTimeouts: 0 },
    dials: { inUse: 0, hits: 0 },
  };
  port.on('message', (m: { t: string; req?: number; id?: number }) => {
    if (m.t === 'listen') port.postMessage({ t: 'listening', id: m.id, ...(mode === 'nolisten' ? { error: 'EBADF' } : {}) });
    if (m.t !== 'call' || mode === 'stuck') return;
    port.postMessage({ t: 'reply', req: m.req, value: stats });
  });
}
