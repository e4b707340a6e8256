/**
 * The Istio-compatible agent ports (ztunnel layout):
 *   15020  GET /metrics, GET /stats/prometheus  (Prometheus text exposition)
 *   15021  GET /healthz/ready  -> 200 "ready" | 500 "not ready: <pending>"
 *          ?verbose adds one line per local pod; ?format=json (or
 *          Accept: application/json) answers the same as JSON.
 * A pod that failed to enroll never makes the node unready: it is isolated
 * (its TCP refused: it fails closed) and listed per pod (state "isolated",
 * or "failed" when not even that was possible, with its error and what to
 * do) while the node stays ready.
 * Unknown paths get 404, other methods on known paths 405.
 */
import http from 'node:http';
import type { Logger } from '../util/log.js';

export interface PodReadiness {
  pod: string;
  state: string;
  error?: { code: string; message: string; hint?: string } | null;
}

export interface Readiness {
  ready: boolean;
  pending: string[];
  pods: PodReadiness[];
}

function reply(res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8', extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

function guard(server: http.Server): http.Server {
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  return server;
}

/**
 * The shortest time between two renders of /metrics (Prometheus scrapes every
 * 15 s or more; 4 renders/s is far above any real scraper). A render costs ~2 ms of
 * the main thread (bench/RESULTS.md §14); a scraper asking back to back would
 * keep the main thread busy and, on a small node, take CPU from the data-plane
 * workers. A request that comes sooner waits for the next render (shared by
 * every request waiting): every answer is rendered after its request arrived,
 * never an older text.
 */
export const METRICS_MIN_INTERVAL_MS = 250;

/**
 * Renders at most every `minMs`. A caller that comes sooner waits and shares
 * the next render with every other caller waiting; a render already running
 * is never shared with a caller that came after it started.
 */
export function pacedRenderer(render: () => Promise<string>, minMs = METRICS_MIN_INTERVAL_MS, now: () => number = Date.now): () => Promise<string> {
  let last = -Infinity;
  let waiting: Promise<string> | null = null;
  let running: Promise<unknown> | null = null;
  return () => {
    if (waiting) return waiting;
    const p = (async (): Promise<string> => {
      await null; // `waiting` is set below before this goes on
      if (running) await running.catch(() => undefined);
      const wait = last + minMs - now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      waiting = null; // from here on a new caller starts the next render
      const r = render();
      running = r;
      try {
        return await r;
      } finally {
        last = now();
        if (running === r) running = null;
      }
    })();
    waiting = p;
    return p;
  };
}

export function createMetricsServer(
  m: { exposition(): Promise<string>; contentType(): string },
  log: Logger,
  minIntervalMs = METRICS_MIN_INTERVAL_MS,
): http.Server {
  const paths = ['/metrics', '/stats/prometheus'];
  const exposition = pacedRenderer(() => m.exposition(), minIntervalMs);
  return guard(
    http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://metrics');
      if (!paths.includes(url.pathname)) return reply(res, 404, `no such endpoint: ${url.pathname} (endpoints: ${paths.join(', ')})\n`);
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return reply(res, 405, `method ${req.method} not allowed on ${url.pathname}\n`, undefined, { allow: 'GET, HEAD' });
      exposition().then(
        (text) => reply(res, 200, text, m.contentType()),
        (e: Error) => {
          log.error('metrics collection failed', { error: e.message });
          reply(res, 500, `metrics collection failed: ${e.message}\n`);
        },
      );
    }),
  );
}

export function formatReadiness(r: Readiness, verbose: boolean): string {
  const head = r.ready ? 'ready\n' : `not ready: ${r.pending.join(', ')}\n`;
  if (!verbose) return head;
  const lines = r.pods.map(
    (p) => `pod ${p.pod}: ${p.state}${p.error ? ` (${p.error.code}: ${p.error.message}${p.error.hint ? `; hint: ${p.error.hint}` : ''})` : ''}`,
  );
  return head + lines.map((l) => l + '\n').join('');
}

export function createReadinessServer(ready: () => Readiness, log: Logger): http.Server {
  return guard(
    http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://readiness');
      if (url.pathname !== '/healthz/ready') return reply(res, 404, `no such endpoint: ${url.pathname} (endpoints: /healthz/ready)\n`);
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return reply(res, 405, `method ${req.method} not allowed on /healthz/ready\n`, undefined, { allow: 'GET, HEAD' });
      let r: Readiness;
      try {
        r = ready();
      } catch (e) {
        log.error('readiness check failed', { error: (e as Error).message });
        return reply(res, 500, `not ready: readiness check failed: ${(e as Error).message}\n`);
      }
      const status = r.ready ? 200 : 500;
      const json = url.searchParams.get('format') === 'json' || /application\/json/.test(req.headers.accept ?? '');
      if (json) return reply(res, status, JSON.stringify(r, null, 2) + '\n', 'application/json');
      return reply(res, status, formatReadiness(r, url.searchParams.has('verbose')));
    }),
  );
}
