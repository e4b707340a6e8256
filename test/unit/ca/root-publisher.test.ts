/**
 * Root distribution against a fake API server (ConfigMaps: GET, POST with 409
 * AlreadyExists, PUT with the resourceVersion read, 409 Conflict when it is
 * stale; Secrets: GET): the CA's trust bundle reaches the ConfigMap the agents
 * mount, two replicas racing to create or update it end with one bundle, and
 * the ConfigMap follows the Secret through a rotation (old, old+new, new).
 */
import { test } from 'node:test';
import net from 'node:net';
import assert from 'node:assert/strict';
import { createRoot } from '../../../src/identity/ca.js';
import { canonicalBundle, httpConfigMapApi, publishTrustBundle, ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY, syncTrustBundle } from '../../../src/ca/root-publisher.js';
import { httpSecretApi, ROOT_SECRET } from '../../../src/ca/secret-store.js';
import { TD } from './harness.js';
import { FakeConfigApi, NS } from './fake-config-api.js';

async function fake(t: { after(fn: () => Promise<void>): void }): Promise<FakeConfigApi> {
  const f = new FakeConfigApi();
  await f.listen();
  t.after(() => f.close());
  return f;
}

const bundleOf = (f: FakeConfigApi): string | undefined => f.configMap()?.data[ROOT_CONFIGMAP_KEY];

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

test('ambientd ca as a process with the key in Secrets: creates the root Secret, publishes the bundle, is ready, follows a Secret edit without a restart', async (t) => {
  const { spawn } = await import('node:child_process');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { createInterface } = await import('node:readline');
  const { generateSandboxKey, mintSandboxToken } = await import('../../../src/ca/auth-sandbox.js');
  const { RemoteCaIssuer } = await import('../../../src/identity/ca-client.js');
  const { IdentityManager } = await import('../../../src/identity/manager.js');
  const { CLI } = await import('../../helpers/paths.js');
  const f = await fake(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-ca-secrets-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  f.writeKubeconfig(path.join(dir, 'kubeconfig'));
  const keys = generateSandboxKey();
  fs.writeFileSync(path.join(dir, 'sandbox-key.pub'), keys.publicKeyPem);
  fs.writeFileSync(path.join(dir, 'workloads.yaml'), 'pods:\n  - { name: web-1, namespace: demo, serviceAccount: web, node: n1, ip: 10.0.1.2 }\n');
  const metricsPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const args = ['ca', '--ca-secret-namespace', NS, '--auth', 'sandbox', '--sandbox-token-key', path.join(dir, 'sandbox-key.pub')];
  args.push('--workloads', path.join(dir, 'workloads.yaml'), '--listen', '127.0.0.1:0', '--server-name', '127.0.0.1');
  args.push('--metrics-port', String(metricsPort), '--root-sync-interval', '1s');
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, KUBECONFIG: path.join(dir, 'kubeconfig') },
  });
  t.after(() => void child.kill('SIGKILL'));
  const lines: Array<Record<string, unknown>> = [];
  const waitLog = (pred: (l: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const found = lines.find(pred);
      if (found) return resolve(found);
      const timer = setTimeout(() => reject(new Error(`no ${what} in 15 s: ${JSON.stringify(lines)}`)), 15_000);
      const on = (l: Record<string, unknown>): void => {
        if (!pred(l)) return;
        clearTimeout(timer);
        resolve(l);
      };
      waiters.add(on);
    });
  const waiters = new Set<(l: Record<string, unknown>) => void>();
  createInterface({ input: child.stderr! }).on('line', (l) => {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(l) as Record<string, unknown>;
    } catch {
      j = { msg: l }; // a fatal error is printed as text
    }
    lines.push(j);
    for (const w of waiters) w(j);
  });
  const serving = await waitLog((l) => l.msg === 'serving IstioCertificateService', 'serving');
  await waitLog((l) => l.msg === 'pod index synced', 'pod index synced');
  const ready = await fetch(`http://127.0.0.1:${metricsPort}/healthz/ready`);
  assert.deepEqual([ready.status, await ready.text()], [200, 'ready\n']);
  // the root was created in the Secret, and its bundle published to the ConfigMap the agents mount
  const secret = f.secretData(ROOT_SECRET)!;
  assert.ok(secret['ca-key.pem'], 'the key is in the Secret');
  assert.equal(bundleOf(f), secret['root-cert.pem']);
  // an agent with that ConfigMap as its bundle gets a certificate from the process
  const rootFile = path.join(dir, 'root-cert.pem');
  const tokenFile = path.join(dir, 'n1.token');
  fs.writeFileSync(rootFile, bundleOf(f)!);
  fs.writeFileSync(
    tokenFile,
    mintSandboxToken(keys.privateKeyPem, { namespace: 'ambientd-system', serviceAccount: 'ambientd', node: 'n1', audience: 'istio-ca' }),
  );
  const m = new IdentityManager({ issuer: new RemoteCaIssuer({ address: `127.0.0.1:${serving.port as number}`, rootFile, tokenFile }) });
  t.after(() => m.close());
  assert.match((await m.get('spiffe://cluster.local/ns/demo/sa/web')).certPem, /BEGIN CERTIFICATE/);
  // rotation step 2 by `kubectl patch`: the running CA publishes old + new at its next resync
  const next = await createRoot(TD, 30);
  f.putSecret(ROOT_SECRET, { ...secret, 'root-cert.pem': secret['root-cert.pem']! + next.certPem });
  await waitLog((l) => l.msg === 'trust bundle published' && l.result === 'updated', 'the updated bundle');
  assert.equal(bundleOf(f), secret['root-cert.pem']! + next.certPem);
  child.kill('SIGTERM');
  assert.equal(await new Promise((resolve) => child.once('exit', (c) => resolve(c))), 0);
});
