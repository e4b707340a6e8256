/**
 * Root distribution against a fake API server (ConfigMaps: GET, POST with 409
 * AlreadyExists, PUT with the resourceVersion read, 409 Conflict when it is
 * stale; Secrets: GET): the CA's trust bundle reaches the ConfigMap the agents
 * mount, two replicas racing to create or update it end with one bundle, and
 * the ConfigMap follows the Secret through a rotation (old, old+new, new).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { createRoot } from '../../../src/identity/ca.js';
import { canonicalBundle, httpConfigMapApi, publishTrustBundle, ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY, syncTrustBundle } from '../../../src/ca/root-publisher.js';
import { httpSecretApi, ROOT_SECRET } from '../../../src/ca/secret-store.js';
import { TD } from './harness.js';

const NS = 'ambientd-system';
type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** ConfigMaps and Secrets in memory, with resourceVersions; `holdGets` GETs of the ConfigMap are held until that many arrived (forces a race). */
class FakeApi {
  readonly objects = new Map<string, Obj>();
  readonly log: string[] = [];
  rv = 100;
  holdGets = 0;
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
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'f', server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: 'ca', token: 'ca-token' }],
      contexts: [{ name: 'f', cluster: 'f', user: 'ca' }],
      currentContext: 'f',
    });
    return kc;
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
        if (kind === 'configmaps' && this.holdGets > 0) {
          this.held.push(answer);
          if (this.held.length >= this.holdGets) {
            this.holdGets = 0;
            for (const h of this.held.splice(0)) h();
          }
          return;
        }
        return answer();
      }
      if (req.method === 'POST' && !name && kind === 'configmaps') {
        const n = body!.metadata.name as string;
        if (this.objects.has(key(n))) return status(409, 'AlreadyExists', `configmaps "${n}" already exists`);
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
}

async function fake(t: { after(fn: () => Promise<void>): void }): Promise<FakeApi> {
  const f = new FakeApi();
  await f.listen();
  t.after(() => f.close());
  return f;
}

const bundleOf = (f: FakeApi): string | undefined => f.configMap()?.data[ROOT_CONFIGMAP_KEY];

test('root ConfigMap: created with the bundle, unchanged when equal, updated when the bundle changes (resourceVersion carried)', async (t) => {
  const f = await fake(t);
  const api = httpConfigMapApi(f.kubeConfig());
  const a = await createRoot(TD, 30);
  const b = await createRoot(TD, 30);
  assert.equal(await publishTrustBundle(api, { namespace: NS, bundlePem: a.certPem }), 'created');
  assert.equal(bundleOf(f), a.certPem);
  assert.equal(f.configMap()!.metadata.labels['app.kubernetes.io/managed-by'], 'ambientd-ca');
  // the same roots in another form (duplicate, whitespace) are the same bundle: no write
  assert.equal(await publishTrustBundle(api, { namespace: NS, bundlePem: `\n${a.certPem}${a.certPem}` }), 'unchanged');
  assert.equal(f.log.filter((l) => l.startsWith('PUT')).length, 0);
  assert.equal(await publishTrustBundle(api, { namespace: NS, bundlePem: a.certPem + b.certPem }), 'updated');
  assert.equal(bundleOf(f), a.certPem + b.certPem);
  // an empty or broken bundle is never published (agents would trust nothing, or fail)
  await assert.rejects(publishTrustBundle(api, { namespace: NS, bundlePem: '' }), (e: Error & { code?: string }) => e.code === 'CA_SERVER_CONFIG');
  await assert.rejects(
    publishTrustBundle(api, { namespace: NS, bundlePem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' }),
    (e: Error & { code?: string }) => e.code === 'CA_SERVER_CONFIG',
  );
  assert.equal(bundleOf(f), a.certPem + b.certPem);
});

test('root ConfigMap: two replicas racing to create it end with one ConfigMap and the bundle (the loser gets 409 and compares)', async (t) => {
  const f = await fake(t);
  f.holdGets = 2; // both replicas see no ConfigMap before either creates it
  const api = httpConfigMapApi(f.kubeConfig());
  const a = await createRoot(TD, 30);
  const results = await Promise.all([
    publishTrustBundle(api, { namespace: NS, bundlePem: a.certPem }),
    publishTrustBundle(api, { namespace: NS, bundlePem: a.certPem }),
  ]);
  assert.deepEqual(results.sort(), ['created', 'unchanged']);
  assert.equal(f.log.filter((l) => l === 'POST configmaps').length, 2, 'both tried to create it');
  assert.equal(bundleOf(f), a.certPem);
});

test('root ConfigMap: two replicas updating from the same resourceVersion: one PUT wins, the other gets 409 Conflict, reads again, and finds it done', async (t) => {
  const f = await fake(t);
  const api = httpConfigMapApi(f.kubeConfig());
  const a = await createRoot(TD, 30);
  const b = await createRoot(TD, 30);
  await publishTrustBundle(api, { namespace: NS, bundlePem: a.certPem });
  f.holdGets = 2;
  const results = await Promise.all([
    publishTrustBundle(api, { namespace: NS, bundlePem: a.certPem + b.certPem }),
    publishTrustBundle(api, { namespace: NS, bundlePem: a.certPem + b.certPem }),
  ]);
  assert.deepEqual(results.sort(), ['unchanged', 'updated']);
  assert.equal(f.log.filter((l) => l === `PUT configmaps/${ROOT_CONFIGMAP}`).length, 2, 'both tried to update it');
  assert.equal(bundleOf(f), a.certPem + b.certPem);
  // a writer that never stops racing is an error after the attempts, not a loop
  const stuck = { ...api, replace: async () => 'conflict' as const };
  await assert.rejects(publishTrustBundle(stuck, { namespace: NS, bundlePem: b.certPem, attempts: 3 }), /still racing with other writers after 3 attempts/);
});

test('root ConfigMap follows the Secret through a rotation (old, old+new, new), never creates a root, plug-in Secret first', async (t) => {
  const f = await fake(t);
  const kc = f.kubeConfig();
  const secrets = httpSecretApi(kc);
  const maps = httpConfigMapApi(kc);
  const o = { secretNamespace: NS, configMapNamespace: NS };
  assert.equal(await syncTrustBundle(secrets, maps, o), 'no-secret');
  assert.equal(f.configMap(), undefined);
  assert.ok(!f.log.some((l) => l.startsWith('POST secrets')), 'a resync never creates a root');
  const oldRoot = await createRoot(TD, 30);
  const newRoot = await createRoot(TD, 30);
  const secret = (signer: { certPem: string; keyPkcs8Pem: string }, roots: string) => ({
    'ca-cert.pem': signer.certPem,
    'ca-key.pem': signer.keyPkcs8Pem,
    'root-cert.pem': roots,
    'cert-chain.pem': signer.certPem,
  });
  f.putSecret(ROOT_SECRET, secret(oldRoot, oldRoot.certPem));
  assert.equal(await syncTrustBundle(secrets, maps, o), 'created');
  assert.equal(bundleOf(f), oldRoot.certPem);
  f.putSecret(ROOT_SECRET, secret(oldRoot, oldRoot.certPem + newRoot.certPem)); // step 2: trust both, old signs
  assert.equal(await syncTrustBundle(secrets, maps, o), 'updated');
  assert.equal(bundleOf(f), oldRoot.certPem + newRoot.certPem);
  f.putSecret(ROOT_SECRET, secret(newRoot, newRoot.certPem + oldRoot.certPem)); // step 3: new signs, both trusted
  assert.equal(await syncTrustBundle(secrets, maps, o), 'updated');
  assert.equal(canonicalBundle(bundleOf(f)!), newRoot.certPem + oldRoot.certPem);
  f.putSecret(ROOT_SECRET, secret(newRoot, newRoot.certPem)); // step 4: old removed
  assert.equal(await syncTrustBundle(secrets, maps, o), 'updated');
  assert.equal(bundleOf(f), newRoot.certPem);
  assert.equal(await syncTrustBundle(secrets, maps, o), 'unchanged');
  // a plug-in Secret wins, as for signing
  const plug = await createRoot(TD, 30);
  f.putSecret('cacerts', secret(plug, plug.certPem));
  assert.equal(await syncTrustBundle(secrets, maps, o), 'updated');
  assert.equal(bundleOf(f), plug.certPem);
});
