/**
 * The CA's /healthz/ready and /metrics. Ready (200) only when it can answer
 * requests: the CA key is loaded, the pod index has synced (node
 * authorization can decide), and its serving certificate is valid. Until
 * then 503 with what it waits for, so the Service sends agents only to a
 * replica that can sign.
 */
import type http from 'node:http';
import type { Registry } from 'prom-client';

export interface CaHealth {
  keyLoaded: boolean;
  podsSynced: boolean;
  servingValid: boolean;
}

/** What the CA still waits for (empty: ready). */
export function waitingFor(h: CaHealth): string[] {
  const out: string[] = [];
  if (!h.keyLoaded) out.push('CA key not loaded');
  if (!h.podsSynced) out.push('pod index not synced');
  if (!h.servingValid) out.push('no valid serving certificate');
  return out;
}

/** The handler of the metrics port: /healthz/ready from `health()`, /metrics from `registry()` (null until the server exists). */
export function healthHandler(health: () => CaHealth, registry: () => Registry | null): http.RequestListener {
  return (req, res) => {
    if (req.url === '/metrics') {
      const r = registry();
      if (!r) {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end('not started\n');
        return;
      }
      void r.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': r.contentType });
          res.end(text);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
    } else if (req.url?.startsWith('/healthz/ready')) {
      const waiting = waitingFor(health());
      res.writeHead(waiting.length === 0 ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(waiting.length === 0 ? 'ready\n' : `${waiting.join('; ')}\n`);
    } else {
      res.writeHead(404);
      res.end();
    }
  };
}
