/**
 * The agent's client of the cluster CA (RemoteCaIssuer) under the
 * IdentityManager, against the CA server on loopback: certificates from the
 * CA, renewal at half-life, back-off and keeping a valid certificate while
 * the CA is down, a new identity failing closed, refusals surfaced with the
 * CA's code, token and root files re-read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { RemoteCaIssuer, issuedFrom } from '../../../src/identity/ca-client.js';
import { IdentityManager, type IssuedEvent, type IssueFailedEvent, type RenewalFailedEvent } from '../../../src/identity/manager.js';
import { CertificateAuthority } from '../../../src/identity/ca.js';
import { RemoteCaError } from '../../../src/ca/errors.js';
import { id, makeCsr, startCa, TD, type CaHarness } from '../ca/harness.js';

const WEB = id('ambient-demo', 'web');
const DB = id('ambient-demo', 'db');

interface Client {
  h: CaHarness;
  dir: string;
  tokenFile: string;
  rootFile: string;
  issuer: RemoteCaIssuer;
  manager(o?: Partial<ConstructorParameters<typeof IdentityManager>[0]>): IdentityManager;
}

async function client(t: { after(fn: () => Promise<void> | void): void }, node = 'node-a', h?: CaHarness): Promise<Client> {
  h ??= await startCa(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-client-'));
  const tokenFile = path.join(dir, 'token');
  const rootFile = path.join(dir, 'root-cert.pem');
  fs.writeFileSync(tokenFile, h.token(node) + '\n');
  fs.writeFileSync(rootFile, h.ca.rootPem);
  const issuer = new RemoteCaIssuer({ address: h.address, rootFile, tokenFile, timeoutMs: 2000 });
  const managers: IdentityManager[] = [];
  t.after(() => {
    for (const m of managers) m.close();
    issuer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const manager = (o: Partial<ConstructorParameters<typeof IdentityManager>[0]> = {}): IdentityManager => {
    const m = new IdentityManager({ issuer, ...o });
    managers.push(m);
    return m;
  };
  return { h, dir, tokenFile, rootFile, issuer, manager };
}

function nextEvent<T>(m: IdentityManager, ev: 'issued' | 'renewalFailed', pred: (v: T) => boolean = () => true, ms = 8000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${ev} in ${ms} ms`)), ms);
    const on = (v: T): void => {
      if (!pred(v)) return;
      clearTimeout(timer);
      m.off(ev, on as never);
      resolve(v);
    };
    m.on(ev, on as never);
  });
}

test('client: the manager gets its certificates from the cluster CA (chain without the root, root from the bundle)', async (t) => {
  const c = await client(t);
  const m = c.manager();
  const cert = await m.get(WEB);
  const leaf = new X509Certificate(cert.certPem);
  assert.ok(leaf.subjectAltName?.includes(WEB));
  assert.ok(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(cert.keyPem)));
  assert.equal(cert.chainPem, cert.certPem, 'a self-signed root is not part of the presented chain');
  assert.equal(cert.rootPem, c.h.ca.rootPem);
  assert.equal(cert.serial, leaf.serialNumber.toLowerCase());
  assert.ok(Math.abs(cert.notAfter.getTime() - Date.now() - 24 * 3_600_000) < 120_000);
  assert.equal(await c.h.metric('issued', 'OK'), 1);
  const line = c.h.logs.find((l) => l.msg === 'certificate issued');
  assert.equal(line?.node, 'node-a');
  assert.equal(line?.caller, 'ambientd-system/ambientd');
});

test('client: renewal at half-life, from the CA', async (t) => {
  const c = await client(t);
  const m = c.manager({ lifetimeMs: 2000 });
  const first = await m.get(WEB);
  const ev = await nextEvent<IssuedEvent>(m, 'issued', (e) => e.renewal);
  assert.notEqual(ev.serial, first.serial);
  // renewed at half of the lifetime the CA granted (notBefore/notAfter are whole seconds)
  const halfLife = first.notBefore.getTime() + (first.notAfter.getTime() - first.notBefore.getTime()) / 2;
  const late = Date.now() - halfLife;
  assert.ok(late >= -50 && late < 1000, `renewed ${late} ms after half-life`);
  assert.equal(await c.h.metric('issued', 'OK'), 2);
});

test('client: CA down: the valid certificate is kept and renewal retried with back-off; a new identity fails closed; back up: renewed', async (t) => {
  const h = await startCa(t);
  const c = await client(t, 'node-a', h);
  const m = c.manager({ lifetimeMs: 3000, backoffInitialMs: 100, backoffMaxMs: 400 });
  const held = await m.get(WEB);
  await h.server.close(100);
  const failures: RenewalFailedEvent[] = [];
  m.on('renewalFailed', (e) => failures.push(e));
  await nextEvent<RenewalFailedEvent>(m, 'renewalFailed', (e) => e.attempt >= 3);
  assert.deepEqual(
    failures.slice(0, 3).map((f) => f.retryInMs),
    [100, 200, 400],
  );
  assert.ok(failures.every((f) => f.currentSerial === held.serial));
  assert.match(String((failures[0]!.error as Error & { cause?: Error }).cause?.message), /CA_REMOTE_UNAVAILABLE|UNAVAILABLE/);
  // still served while valid
  assert.equal((await m.get(WEB)).serial, held.serial);
  // a new identity while the CA is down: no certificate, the caller fails closed
  await assert.rejects(m.get(id('plain', 'client')), (e: Error & { code?: string }) => e.code === 'CA_ISSUE_FAILED');
  assert.equal(m.peek(id('plain', 'client')), undefined);
  // the CA is back (same root, new process, same port)
  const { CaServer } = await import('../../../src/ca/server.js');
  const { servingCertificate } = await import('../../../src/ca/serving.js');
  const { SandboxAuthenticator } = await import('../../../src/ca/auth-sandbox.js');
  const again = new CaServer({
    signer: h.ca,
    authenticator: new SandboxAuthenticator({ publicKey: h.keys.publicKeyPem, audience: 'istio-ca' }),
    pods: h.pods,
    trustedNodeAccounts: ['ambientd-system/ambientd'],
    tls: await servingCertificate(h.ca, ['127.0.0.1']),
  });
  await again.listen(h.address);
  t.after(() => again.close(100));
  const renewed = await nextEvent<IssuedEvent>(m, 'issued', (e) => e.renewal && e.id === WEB);
  assert.notEqual(renewed.serial, held.serial);
  assert.equal(m.list().find((i) => i.id === WEB)?.failedAttempts, 0);
});

test('client: a refusal reaches the caller with the CA code (a pod of another node), and nothing is cached', async (t) => {
  const c = await client(t);
  const m = c.manager();
  const err = await m.get(DB).then(
    () => assert.fail('issued'),
    (e: Error & { code?: string; cause?: unknown }) => e,
  );
  assert.equal(err.code, 'CA_ISSUE_FAILED');
  const cause = err.cause as RemoteCaError;
  assert.ok(cause instanceof RemoteCaError);
  assert.equal(cause.code, 'CA_REMOTE_DENIED');
  assert.equal(cause.serverCode, 'CA_NODE_DENIED');
  assert.match(cause.message, /PERMISSION_DENIED: CA_NODE_DENIED: no pod on node node-a/);
  assert.equal(m.peek(DB), undefined);
});

test('client: the token file is re-read on every request (an expired token is refused, a fresh one works)', async (t) => {
  const c = await client(t);
  fs.writeFileSync(c.tokenFile, c.h.token('node-a', { now: Date.now() - 48 * 3_600_000 }));
  const m = c.manager({ backoffInitialMs: 200 });
  const failed: IssueFailedEvent[] = [];
  m.on('issueFailed', (e) => failed.push(e));
  const err = (await m.get(WEB).catch((e: unknown) => e)) as Error & { cause?: RemoteCaError };
  assert.equal(err.cause?.serverCode, 'CA_AUTH_EXPIRED');
  assert.deepEqual(
    failed.map((f) => [f.id, f.attempt, f.retryInMs]),
    [[WEB, 1, 200]],
  );
  // within the back-off the CA is not asked again: get() fails at once
  await assert.rejects(m.get(WEB), /retrying in the background/);
  fs.writeFileSync(c.tokenFile, c.h.token('node-a'));
  // the background retry reads the fresh token: the certificate comes without a new get()
  await nextEvent<IssuedEvent>(m, 'issued', (e) => e.id === WEB && !e.renewal);
  assert.ok((await m.get(WEB)).certPem);
});

test('client: a CA whose TLS certificate the bundle does not trust is not used; missing files are config errors', async (t) => {
  const c = await client(t);
  const other = await CertificateAuthority.createInMemory({ trustDomain: TD });
  fs.writeFileSync(c.rootFile, other.rootPem);
  const { csr } = await makeCsr({ uris: [WEB] });
  await assert.rejects(c.issuer.issue({ spiffeId: WEB, publicKeyPem: '', csrPem: csr }), (e: RemoteCaError) => e.code === 'CA_REMOTE_UNAVAILABLE');
  // back to the right bundle: the channel is rebuilt
  fs.writeFileSync(c.rootFile, c.h.ca.rootPem);
  const ok = await c.issuer.issue({ spiffeId: WEB, publicKeyPem: '', csrPem: csr });
  assert.ok(ok.certPem.includes('BEGIN CERTIFICATE'));
  fs.rmSync(c.tokenFile);
  await assert.rejects(
    c.issuer.issue({ spiffeId: WEB, publicKeyPem: '', csrPem: csr }),
    (e: RemoteCaError) => e.code === 'CA_CLIENT_CONFIG' && /caTokenFile/.test(e.message),
  );
  assert.throws(() => new RemoteCaIssuer({ address: 'no-port', rootFile: c.rootFile, tokenFile: c.tokenFile }), /caAddress must be host:port/);
});

test('issuedFrom: a chain that does not end in the trust bundle, or does not link up, is refused', async () => {
  const a = await CertificateAuthority.createInMemory({ trustDomain: TD });
  const b = await CertificateAuthority.createInMemory({ trustDomain: TD });
  const { csr } = await makeCsr({ uris: [WEB] });
  const issued = await a.issue({ spiffeId: WEB, csr });
  const ok = issuedFrom({ cert_chain: [issued.certPem, a.rootPem] }, a.rootPem + b.rootPem);
  assert.equal(ok.chainPem, issued.certPem);
  assert.equal(ok.serial, issued.serial);
  // the root the CA names is not one the agent trusts
  assert.throws(() => issuedFrom({ cert_chain: [issued.certPem, a.rootPem] }, b.rootPem), /does not end in a root of the trust bundle/);
  // a chain that does not link up
  assert.throws(() => issuedFrom({ cert_chain: [issued.certPem, b.rootPem] }, a.rootPem + b.rootPem), /cert_chain\[0\] is not signed by cert_chain\[1\]/);
  // leaf only, anchored directly in the bundle
  assert.equal(issuedFrom({ cert_chain: [issued.certPem] }, a.rootPem).chainPem, issued.certPem);
  assert.throws(() => issuedFrom({ cert_chain: [] }, a.rootPem), /empty cert_chain/);
});

test('agent wiring: with caAddress the identities come from the cluster CA and no caDir is touched; without it, the built-in CA', async (t) => {
  const { openIdentities } = await import('../../../src/agent/identities.js');
  const { Logger } = await import('../../../src/util/log.js');
  const c = await client(t);
  const caDir = path.join(c.dir, 'ca-dir-never-created');
  const log = new Logger('test', 'off');
  const remote = await openIdentities(
    { caAddress: c.h.address, caRootCert: c.rootFile, caTokenFile: c.tokenFile, clusterId: null, caDir, trustDomain: TD, certLifetimeMs: 3_600_000 },
    log,
  );
  t.after(() => remote.close());
  const cert = await remote.get(WEB);
  assert.equal(cert.rootPem, c.h.ca.rootPem);
  assert.equal(fs.existsSync(caDir), false, 'no CA directory (no key) on the node');
  const builtIn = await openIdentities(
    { caAddress: null, caRootCert: c.rootFile, caTokenFile: c.tokenFile, clusterId: null, caDir, trustDomain: TD, certLifetimeMs: 3_600_000 },
    log,
  );
  t.after(() => builtIn.close());
  assert.notEqual((await builtIn.get(WEB)).rootPem, c.h.ca.rootPem);
  assert.ok(fs.existsSync(path.join(caDir, 'ca-key.pem')));
});

test('agent readiness with a cluster CA: ready only once a certificate can be had (its own identity, from the token subject)', async (t) => {
  const { waitForCertificates, ownIdentityFromToken } = await import('../../../src/agent/identities.js');
  const { Logger } = await import('../../../src/util/log.js');
  const c = await client(t);
  const cfg = { caTokenFile: c.tokenFile, trustDomain: TD };
  assert.equal(ownIdentityFromToken(c.tokenFile, TD), `spiffe://${TD}/ns/ambientd-system/sa/ambientd`);
  assert.equal(ownIdentityFromToken(path.join(c.dir, 'missing'), TD), null);
  const m = c.manager({ backoffInitialMs: 50 });
  // an expired token: not ready, and it keeps trying
  fs.writeFileSync(c.tokenFile, c.h.token('node-a', { now: Date.now() - 48 * 3_600_000 }));
  let ready: boolean | undefined;
  const waiting = waitForCertificates(m, cfg, new Logger('test', 'off'), () => true, 20).then((r) => (ready = r));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(ready, undefined, 'not ready with a refused token');
  // a good token: ready, and the probe identity is not kept
  fs.writeFileSync(c.tokenFile, c.h.token('node-a'));
  assert.equal(await waiting, true);
  assert.equal(m.peek(`spiffe://${TD}/ns/ambientd-system/sa/ambientd`), undefined);
  // a stopping agent stops waiting
  assert.equal(await waitForCertificates(m, cfg, new Logger('test', 'off'), () => false), false);
});

test('clusterId: sent as the ClusterID header (what istiod reads in multi-cluster meshes); none without it', async (t) => {
  const grpc = await import('@grpc/grpc-js');
  const { loadCaService } = await import('../../../src/ca/proto.js');
  const { servingCertificate } = await import('../../../src/ca/serving.js');
  const ca = await CertificateAuthority.createInMemory({ trustDomain: TD });
  const seen: Array<string | undefined> = [];
  const server = new grpc.Server();
  server.addService(loadCaService().definition, {
    CreateCertificate: (call: { metadata: { get(k: string): unknown[] } }, cb: (e: { code: number; details: string }) => void) => {
      seen.push(call.metadata.get('clusterid')[0] as string | undefined);
      cb({ code: grpc.status.PERMISSION_DENIED, details: 'recorded' });
    },
  });
  const tls = await servingCertificate(ca, ['127.0.0.1']);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(tls.keyPem), cert_chain: Buffer.from(tls.certChainPem) }]),
      (e, p) => (e ? reject(e) : resolve(p)),
    ),
  );
  t.after(() => server.forceShutdown());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-client-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'root'), ca.rootPem);
  fs.writeFileSync(path.join(dir, 'token'), 'tok');
  const { csr } = await makeCsr({ uris: [WEB] });
  for (const clusterId of ['cluster-east', undefined]) {
    const issuer = new RemoteCaIssuer({
      address: `127.0.0.1:${port}`,
      rootFile: path.join(dir, 'root'),
      tokenFile: path.join(dir, 'token'),
      ...(clusterId ? { clusterId } : {}),
    });
    await assert.rejects(issuer.issue({ spiffeId: WEB, publicKeyPem: '', csrPem: csr }), /recorded/);
    issuer.close();
  }
  assert.deepEqual(seen, ['cluster-east', undefined]);
});
