/**
 * Admin endpoint (loopback only): /config_dump, /logging, /healthz/ready,
 * /quitquitquit, POST /debug/heap (a full GC, then the live heap, of the
 * main thread and of each data-plane worker: what leak hunts and the soak
 * benchmark read), GET /workers and POST /workers/kill?index=N (a worker
 * ended as a crash would: it is replaced). Bad requests get a 4xx and change
 * nothing.
 */
import http from 'node:http';
import { liveHeap } from '../util/heap.js';
import { isLevel, LEVELS, type Level, type Logger } from '../util/log.js';

export interface AdminHandlers {
  configDump(): unknown;
  ready(): { ready: boolean; pending: string[] };
  quit(): void;
  /** each data-plane worker's live heap after a full GC in it (POST /debug/heap) */
  workerHeaps?(): Promise<unknown[]>;
  /** the data-plane workers (GET /workers) */
  workers?(): unknown[];
  /** ends a worker thread as a crash would; it is replaced (POST /workers/kill?index=N) */
  killWorker?(index: number): boolean;
  /** the log level changed (the workers log at it too) */
  logLevel?(level: Level): void;
}

const MAX_BODY = 64 * 1024;

function send(res: http.ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function createAdminServer(h: AdminHandlers, log: Logger): http.Server {
  const server = http.createServer((req, res) => {
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY && !tooBig) {
        tooBig = true;
        // answer, and let Node read and drop the rest of the body (up to
        // 16 MiB, then the socket is destroyed). Destroying at once would RST
        // a socket with unread bytes, which can discard the 413 before the
        // client reads it.
        send(res, 413, { error: `body larger than ${MAX_BODY} bytes` });
      }
      if (tooBig && size > 16 * 1024 * 1024) req.socket.destroy();
    });
    req.on('end', () => void answer());
    const answer = async (): Promise<void> => {
      if (tooBig) return;
      const url = new URL(req.url ?? '/', 'http://admin');
      const route = `${req.method} ${url.pathname}`;
      try {
        switch (route) {
          case 'GET /config_dump':
            return send(res, 200, await h.configDump());
          case 'GET /workers':
            return send(res, 200, { workers: h.workers?.() ?? [] });
          case 'POST /workers/kill': {
            const i = Number(url.searchParams.get('index'));
            const n = h.workers?.().length ?? 0;
            if (!Number.isInteger(i) || i < 0 || i >= n)
              return send(res, 400, { error: `index must be a worker index, 0..${n - 1}` + (n === 0 ? ' (this agent runs no workers)' : '') });
            return send(res, 200, { killed: h.killWorker?.(i) ?? false });
          }
          case 'GET /healthz/ready': {
            const r = h.ready();
            return r.ready ? send(res, 200, 'ready\n', 'text/plain') : send(res, 500, `not ready: ${r.pending.join(', ')}\n`, 'text/plain');
          }
          case 'GET /logging':
            return send(res, 200, { level: log.getLevel(), levels: LEVELS });
          case 'POST /logging': {
            const level = url.searchParams.get('level');
            if (!level || !isLevel(level)) return send(res, 400, { error: `level must be one of ${LEVELS.join(', ')}` });
            log.setLevel(level);
            h.logLevel?.(level);
            log.info('log level changed', { level });
            return send(res, 200, { level });
          }
          case 'POST /debug/heap':
            return send(res, 200, { ...liveHeap(), workers: (await h.workerHeaps?.()) ?? [] });
          case 'POST /quitquitquit':
            send(res, 200, 'OK\n', 'text/plain');
            setImmediate(() => h.quit());
            return;
          default:
            if (['/config_dump', '/healthz/ready', '/logging', '/quitquitquit', '/debug/heap', '/workers', '/workers/kill'].includes(url.pathname))
              return send(res, 405, { error: `method ${req.method} not allowed on ${url.pathname}` });
            return send(res, 404, {
              error: `no such endpoint: ${url.pathname}`,
              endpoints: ['/config_dump', '/healthz/ready', '/logging', '/quitquitquit', '/debug/heap', '/workers', '/workers/kill'],
            });
        }
      } catch (e) {
        log.error('admin request failed', { route, error: e });
        return send(res, 500, { error: (e as Error).message });
      }
    };
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  return server;
}
