/**
 * Just enough of the API server's TokenReview endpoint for the CA's tests:
 * POST /apis/authentication.k8s.io/v1/tokenreviews answered from the
 * recorded-shape objects in test/fixtures/k8s/tokenreviews.json, matched on
 * spec.token. The CA must present its own credentials (Bearer ca-token).
 * A helper, not a test file.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { KubeConfig } from '@kubernetes/client-node';
import { fixture, kubeConfigAt, type Obj } from '../discovery/fake-k8s-api.js';

export class FakeTokenReviewApi {
  readonly server = http.createServer((req, res) => this.handle(req, res));
  readonly reviews = new Map<string, Obj>();
  /** what the CA sent: token and audiences of each review */
  readonly requests: Array<{ token: string; audiences: string[]; auth: string | undefined }> = [];
  /** answer every review with this HTTP status (API server trouble) */
  failWith: number | null = null;
  port = 0;

  constructor() {
    for (const r of fixture('tokenreviews')) this.reviews.set(r.spec.token as string, r);
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  kubeConfig(token = 'ca-token'): KubeConfig {
    return kubeConfigAt(`http://127.0.0.1:${this.port}`, token);
  }

  private handle(req: http.IncomingMessage, out: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const status = (code: number, reason: string, message: string): void => {
        out.writeHead(code, { 'content-type': 'application/json' });
        out.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
      };
      if (req.method !== 'POST' || req.url !== '/apis/authentication.k8s.io/v1/tokenreviews')
        return status(404, 'NotFound', 'the server could not find the requested resource');
      if (req.headers.authorization !== 'Bearer ca-token') return status(401, 'Unauthorized', 'Unauthorized');
      if (this.failWith !== null) return status(this.failWith, 'InternalError', 'etcdserver: request timed out');
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Obj;
      const token = String(body.spec?.token ?? '');
      this.requests.push({ token, audiences: body.spec?.audiences ?? [], auth: req.headers.authorization });
      // an unknown token: what the API server says of a random string
      const recorded = this.reviews.get(token) ?? {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        metadata: { creationTimestamp: null },
        spec: body.spec,
        status: { user: {}, error: '[invalid bearer token, square/go-jose: compact JWS format must have three parts]' },
      };
      out.writeHead(201, { 'content-type': 'application/json' });
      out.end(JSON.stringify(recorded));
    });
  }
}
