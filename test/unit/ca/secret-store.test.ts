/**
 * The CA's key in Secrets against a fake API server (GET a Secret, POST one
 * with 409 AlreadyExists): plug-in Secret first, own root Secret next, and two
 * replicas racing to create the root end with one root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { httpSecretApi, loadOrCreateFromSecrets, ROOT_SECRET } from '../../../src/ca/secret-store.js';
import { CertificateAuthority } from '../../../src/identity/ca.js';
import { makeCsr, TD } from './harness.js';
import { FakeConfigApi, NS } from './fake-config-api.js';

async function fake(t: { after(fn: () => Promise<void>): void }): Promise<FakeConfigApi> {
  const f = new FakeConfigApi();
  await f.listen();
  t.after(() => f.close());
  return f;
}

test('secret store: two replicas racing to create the root end with one root', async (t) => {
  const f = await fake(t);
  f.holdMisses = 2; // both replicas see no root Secret before either creates it
  const api = httpSecretApi(f.kubeConfig());
  const [a, b] = await Promise.all([
    loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD }),
    loadOrCreateFromSecrets(api, { namespace: NS, trustDomain: TD }),
  ]);
  assert.deepEqual([a.source, b.source].sort(), ['created', 'loaded']);
  assert.equal(f.log.filter((l) => l === 'POST secrets').length, 2, 'both tried to create it');
  assert.equal(a.ca.rootPem, b.ca.rootPem);
  assert.equal(f.secretData(ROOT_SECRET)!['root-cert.pem'], a.ca.rootPem);
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
  await assert.rejects(
    loadOrCreateFromSecrets(httpSecretApi(f.kubeConfig('wrong')), { namespace: NS, trustDomain: TD }),
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
