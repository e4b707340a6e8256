/**
 * The CA's key in Secrets against a fake API server (GET a Secret, POST one
 * with 409 AlreadyExists): plug-in Secret first, own root Secret next, and two
 * replicas racing to create the root end with one root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { httpSecretApi, loadOrCreateFromSecrets, ROOT_SECRET } from '../../../src/ca/secret-store.js';
import { CertificateAuthority } from '../../../src/identity/ca.js';
import { makeCsr, TD } from './harness.js';

const NS = 'ambientd-system';

/** Secrets in memory; GETs of a missing Secret can be held until `holdMisses` of them arrived (forces the race). */
class FakeSecrets {
  readonly secrets = new Map<string, Record<string, unknown>>();
  readonly log: string[] = [];
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
      const get = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(req.url ?? '');
      const post = /^\/api\/v1\/namespaces\/([^/]+)\/secrets$/.exec(req.url ?? '');
      if (req.method === 'GET' && get) {
        this.log.push(`GET ${get[2]}`);
        const key = `${get[1]}/${get[2]}`;
        const answer = (): void => {
          const s = this.secrets.get(key);
          if (s) reply(200, s);
          else status(404, 'NotFound', `secrets "${get[2]}" not found`);
        };
        if (!this.secrets.has(key) && get[2] === ROOT_SECRET && this.holdMisses > 0) {
          this.held.push(answer);
          if (this.held.length >= this.holdMisses) {
            this.holdMisses = 0;
            for (const h of this.held.splice(0)) h();
          }
          return;
        }
        return answer();
      }
      if (req.method === 'POST' && post) {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { metadata: { name: string } };
        this.log.push(`POST ${body.metadata.name}`);
        const key = `${post[1]}/${body.metadata.name}`;
        if (this.secrets.has(key)) return status(409, 'AlreadyExists', `secrets "${body.metadata.name}" already exists`);
        this.secrets.set(key, body);
        return reply(201, body);
      }
      status(404, 'NotFound', 'not found');
    });
  }
}

async function fake(t: { after(fn: () => Promise<void>): void }): Promise<FakeSecrets> {
  const f = new FakeSecrets();
  await f.listen();
  t.after(() => f.close());
  return f;
}

const decoded = (s: Record<string, unknown>, k: string): string => Buffer.from((s.data as Record<string, string>)[k]!, 'base64').toString('utf8');

test('secret store: two replicas racing to create the root end with one root', async (t) => {
  const f = await fake(t);
  f.holdMisses = 2; // both replicas see no root Secret before either creates it
  const api = httpSecretApi(f.kubeConfig());
  const [a, b] = await Promise.all([
    loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD }),
    loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD }),
  ]);
  assert.deepEqual([a.source, b.source].sort(), ['created', 'loaded']);
  assert.equal(f.log.filter((l) => l === `POST ${ROOT_SECRET}`).length, 2, 'both tried to create it');
  assert.equal(a.ca.rootPem, b.ca.rootPem);
  assert.equal(decoded(f.secrets.get(`${NS}/${ROOT_SECRET}`)!, 'root-cert.pem'), a.ca.rootPem);
  // and both sign certificates that chain to that one root
  const { csr } = await makeCsr({ uris: ['spiffe://cluster.local/ns/x/sa/y'] });
  for (const r of [a, b]) {
    const issued = await r.ca.issue({ spiffeId: 'spiffe://cluster.local/ns/x/sa/y', csr });
    assert.ok(
      new (await import('node:crypto')).X509Certificate(issued.certPem).verify(new (await import('node:crypto')).X509Certificate(a.ca.rootPem).publicKey),
    );
  }
  // a third start loads it
  const c = await loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD });
  assert.equal(c.source, 'loaded');
  assert.equal(c.ca.rootPem, a.ca.rootPem);
});

test('secret store: the plug-in Secret (cacerts) wins over the own root Secret', async (t) => {
  const f = await fake(t);
  const api = httpSecretApi(f.kubeConfig());
  const own = await loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD });
  assert.equal(own.source, 'created');
  const { createRoot } = await import('../../../src/identity/ca.js');
  const plug = await createRoot(TD, 30);
  assert.equal(await api.create(NS, 'cacerts', { 'ca-cert.pem': plug.certPem, 'ca-key.pem': plug.keyPkcs8Pem, 'root-cert.pem': plug.certPem }), 'created');
  const r = await loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD });
  assert.equal(r.source, 'plugin');
  assert.equal(r.ca.rootPem, plug.certPem);
  assert.notEqual(r.ca.rootPem, own.ca.rootPem);
  assert.equal(await api.create(NS, 'cacerts', {}), 'exists');
  // an incomplete Secret is a config error, not a new root
  await api.create(NS, 'broken', { 'ca-cert.pem': plug.certPem });
  await assert.rejects(loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD, pluginSecret: 'broken' }), /lacks ca-cert.pem or ca-key.pem/);
  assert.ok(r.ca instanceof CertificateAuthority);
});

test('secret store: API errors are typed K8S_API (wrong credentials)', async (t) => {
  const f = await fake(t);
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'f', server: `http://127.0.0.1:${f.port}`, skipTLSVerify: true }],
    users: [{ name: 'ca', token: 'wrong' }],
    contexts: [{ name: 'f', cluster: 'f', user: 'ca' }],
    currentContext: 'f',
  });
  await assert.rejects(
    loadOrCreateFromSecrets(httpSecretApi(kc), { namespace: NS, trustDomain: TD }),
    (e: Error & { code?: string }) => e.code === 'K8S_API' && /GET Secret ambientd-system\/cacerts: HTTP 401: Unauthorized/.test(e.message),
  );
});

test('secret store: a Secret whose signer does not chain to a root of root-cert.pem is refused (a rotation done in the wrong order)', async (t) => {
  const f = await fake(t);
  const api = httpSecretApi(f.kubeConfig());
  const { createRoot } = await import('../../../src/identity/ca.js');
  const [oldRoot, newRoot] = [await createRoot(TD, 30), await createRoot(TD, 30)];
  // the new root signs, but only the old one is published: agents would refuse everything
  await api.create(NS, 'cacerts', { 'ca-cert.pem': newRoot.certPem, 'ca-key.pem': newRoot.keyPkcs8Pem, 'root-cert.pem': oldRoot.certPem });
  await assert.rejects(
    loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD }),
    (e: Error & { code?: string }) => e.code === 'CA_SERVER_CONFIG' && /ca-cert.pem does not chain to a root of root-cert.pem/.test(e.message),
  );
  // new signing, both trusted (step 3 of a rotation): accepted
  await api.create(NS, 'step3', { 'ca-cert.pem': newRoot.certPem, 'ca-key.pem': newRoot.keyPkcs8Pem, 'root-cert.pem': newRoot.certPem + oldRoot.certPem });
  const r = await loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD, pluginSecret: 'step3' });
  assert.equal(r.ca.rootPem, newRoot.certPem + oldRoot.certPem);
});
