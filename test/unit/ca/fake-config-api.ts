/**
 * Just enough of the API server for the CA's Secrets and its root ConfigMap,
 * in memory with resourceVersions: GET, POST (409 AlreadyExists), PUT of a
 * ConfigMap conditional on resourceVersion (409 Conflict when stale). A
 * helper, not a test file.
 */
import http from 'node:http';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { KubeConfig } from '@kubernetes/client-node';
import { kubeConfigAt } from '../discovery/fake-k8s-api.js';
import { ROOT_CONFIGMAP } from '../../../src/ca/root-publisher.js';
import { ROOT_SECRET } from '../../../src/ca/secret-store.js';

export const NS = 'ambientd-system';
export type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * ConfigMaps and Secrets in memory, with resourceVersions. Two ways to force a race: `holdGets` GETs of the
 * ConfigMap, or `holdMisses` GETs of the missing root Secret, are held until that many arrived.
 */
export class FakeConfigApi {
  readonly objects = new Map<string, Obj>();
  readonly log: string[] = [];
  rv = 100;
  holdGets = 0;
  holdMisses = 0;
  private held: Array<() => void> = [];
  readonly server = http.createServer((req, res) => this.handle(req, res));
  port = 0;

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }
  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
  kubeConfig(token = 'ca-token'): KubeConfig {
    return kubeConfigAt(`http://127.0.0.1:${this.port}`, token);
  }
  /** what a kubectl edit of the Secret does */
  putSecret(name: string, data: Record<string, string>): void {
    const encoded = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
    this.objects.set(`secrets/${NS}/${name}`, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name, namespace: NS, resourceVersion: String(++this.rv) },
      data: encoded,
    });
  }
  configMap(): Obj | undefined {
    return this.objects.get(`configmaps/${NS}/${ROOT_CONFIGMAP}`);
  }
  private handle(req: http.IncomingMessage, out: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const reply = (code: number, body: unknown): void => {
        out.writeHead(code, { 'content-type': 'application/json' });
        out.end(JSON.stringify(body));
      };
      const status = (code: number, reason: string, message: string) =>
        reply(code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, message, code });
      if (req.headers.authorization !== 'Bearer ca-token') return status(401, 'Unauthorized', 'Unauthorized');
      const m = /^\/api\/v1\/namespaces\/([^/]+)\/(configmaps|secrets)(?:\/([^/]+))?$/.exec(req.url ?? '');
      if (!m) return status(404, 'NotFound', 'not found');
      const [, ns, kind, name] = m;
      const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Obj) : undefined;
      this.log.push(`${req.method} ${kind}${name ? `/${name}` : ''}`);
      const key = (n: string): string => `${kind}/${ns}/${n}`;
      if (req.method === 'GET' && name) {
        const answer = (): void => {
          const o = this.objects.get(key(name));
          if (o) reply(200, o);
          else status(404, 'NotFound', `${kind} "${name}" not found`);
        };
        const missingRoot = kind === 'secrets' && name === ROOT_SECRET && !this.objects.has(key(name));
        const hold = kind === 'configmaps' ? this.holdGets : missingRoot ? this.holdMisses : 0;
        if (hold > 0) {
          this.held.push(answer);
          if (this.held.length >= hold) {
            if (kind === 'configmaps') this.holdGets = 0;
            else this.holdMisses = 0;
            for (const h of this.held.splice(0)) h();
          }
          return;
        }
        return answer();
      }
      if (req.method === 'POST' && !name) {
        const n = body!.metadata.name as string;
        if (this.objects.has(key(n))) return status(409, 'AlreadyExists', `${kind} "${n}" already exists`);
        const o = { ...body, metadata: { ...body!.metadata, resourceVersion: String(++this.rv) } };
        this.objects.set(key(n), o);
        return reply(201, o);
      }
      if (req.method === 'PUT' && name && kind === 'configmaps') {
        const cur = this.objects.get(key(name));
        if (!cur) return status(404, 'NotFound', `configmaps "${name}" not found`);
        if (body!.metadata.resourceVersion !== cur.metadata.resourceVersion)
          return status(
            409,
            'Conflict',
            `Operation cannot be fulfilled on configmaps "${name}": the object has been modified; please apply your changes to the latest version and try again`,
          );
        const o = { ...body, metadata: { ...body!.metadata, resourceVersion: String(++this.rv) } };
        this.objects.set(key(name), o);
        return reply(200, o);
      }
      status(405, 'MethodNotAllowed', 'not allowed');
    });
  }

  /** a kubeconfig file for a process ($KUBECONFIG) */
  writeKubeconfig(file: string): void {
    fs.writeFileSync(
      file,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{ name: f, cluster: { server: "http://127.0.0.1:${this.port}", insecure-skip-tls-verify: true } }]`,
        'users: [{ name: ca, user: { token: ca-token } }]',
        'contexts: [{ name: f, context: { cluster: f, user: ca } }]',
        'current-context: f',
        '',
      ].join('\n'),
    );
  }
  secretData(name: string): Record<string, string> | undefined {
    const o = this.objects.get(`secrets/${NS}/${name}`);
    return o && Object.fromEntries(Object.entries(o.data as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
  }
}
