/**
 * The CA's serving certificate is renewed before it expires (a new key and
 * certificate, served to new handshakes without a restart, the old one kept
 * when a renewal fails), and readiness is 503 until the key is loaded, the
 * pod index synced and a serving certificate valid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { ServingCertificateRenewer, type ServingCertificate } from '../../../src/ca/serving.js';
import { healthHandler, waitingFor, type CaHealth } from '../../../src/ca/health.js';
import { id, makeCsr, startCa } from './harness.js';

const WEB = id('ambient-demo', 'web');

/** The certificate the CA presents to a new TLS handshake (verified with its root). */
function presented(port: number, rootPem: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: rootPem, servername: 'ambientd-ca.ambientd-system.svc', ALPNProtocols: ['h2'] }, () => {
      const c = s.getPeerX509Certificate();
      s.destroy();
      if (c) resolve(c);
      else reject(new Error('no peer certificate'));
    });
    s.once('error', reject);
  });
}

test('serving certificate: renewed at half-life, new handshakes get the new one, gRPC keeps working', async (t) => {
  const h = await startCa(t);
  const names = ['ambientd-ca.ambientd-system.svc', '127.0.0.1'];
  let renewed: (c: ServingCertificate) => void = () => undefined;
  const next = (): Promise<ServingCertificate> => new Promise((r) => (renewed = r));
  const renewer = new ServingCertificateRenewer({
    signer: h.ca,
    names,
    lifetimeMs: 4000,
    onRenewed: (c) => {
      h.server.setServingCertificate(c);
      renewed(c);
    },
  });
  t.after(() => renewer.stop());
  const first = await renewer.start();
  h.server.setServingCertificate(first);
  const firstSeen = await presented(h.port, h.ca.rootPem);
  assert.equal(firstSeen.serialNumber, new X509Certificate(first.certChainPem).serialNumber);
  assert.ok(renewer.valid);

  const second = await next();
  const secondSeen = await presented(h.port, h.ca.rootPem);
  assert.notEqual(secondSeen.serialNumber, firstSeen.serialNumber, 'a new certificate is served');
  assert.equal(secondSeen.serialNumber, new X509Certificate(second.certChainPem).serialNumber);
  assert.ok(second.notAfter.getTime() > first.notAfter.getTime());
  assert.notEqual(
    secondSeen.publicKey.export({ format: 'der', type: 'spki' }).toString('hex'),
    firstSeen.publicKey.export({ format: 'der', type: 'spki' }).toString('hex'),
    'a new key',
  );
  assert.equal(renewer.renewals, 1);
  // and requests are still served over the renewed certificate
  const { csr } = await makeCsr({ uris: [WEB] });
  const res = await h.call({ csr, impersonate: WEB }, h.token('node-a'));
  assert.equal(res.cert_chain.length, 2);
});

test('serving certificate: a failed renewal keeps the current certificate and retries', async (t) => {
  const h = await startCa(t);
  let fail = false;
  const errors: unknown[] = [];
  let onError: () => void = () => undefined;
  let renewed: () => void = () => undefined;
  const renewer = new ServingCertificateRenewer({
    signer: { issueServer: (req) => (fail ? Promise.reject(new Error('signer down')) : h.ca.issueServer(req)) },
    names: ['127.0.0.1'],
    lifetimeMs: 3000,
    retryMs: 100,
    onRenewed: (c) => {
      h.server.setServingCertificate(c);
      renewed();
    },
    onError: (e) => {
      errors.push(e);
      onError();
    },
  });
  t.after(() => renewer.stop());
  const first = await renewer.start();
  fail = true; // every renewal fails from now on
  await new Promise<void>((r) => (onError = r));
  assert.equal((errors[0] as Error).message, 'signer down');
  assert.equal(renewer.current, first, 'the current certificate stays after a failure');
  assert.ok(renewer.valid);
  assert.equal(renewer.renewals, 0);
  fail = false; // the next retry succeeds
  await new Promise<void>((r) => (renewed = r));
  assert.notEqual(renewer.current, first);
  assert.equal(renewer.renewals, 1);
});

test('readiness: 503 naming what is missing until the key is loaded, the pod index synced and a serving certificate valid', async (t) => {
  const state: CaHealth = { keyLoaded: false, podsSynced: false, servingValid: false };
  let registry: Registry | null = null;
  const srv = http.createServer(
    healthHandler(
      () => state,
      () => registry,
    ),
  );
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => srv.close(() => r())));
  const port = (srv.address() as AddressInfo).port;
  const get = async (p: string): Promise<[number, string]> => {
    const res = await fetch(`http://127.0.0.1:${port}${p}`);
    return [res.status, await res.text()];
  };
  assert.deepEqual(await get('/healthz/ready'), [503, 'CA key not loaded; pod index not synced; no valid serving certificate\n']);
  assert.deepEqual(await get('/metrics'), [503, 'not started\n']);
  state.keyLoaded = true;
  assert.deepEqual(await get('/healthz/ready'), [503, 'pod index not synced; no valid serving certificate\n']);
  state.servingValid = true;
  assert.deepEqual(await get('/healthz/ready'), [503, 'pod index not synced\n']);
  state.podsSynced = true;
  assert.deepEqual(await get('/healthz/ready'), [200, 'ready\n']);
  assert.deepEqual(waitingFor(state), []);
  // an expired serving certificate (renewal failing for its whole second half) is not ready again
  state.servingValid = false;
  assert.equal((await get('/healthz/ready'))[0], 503);
  registry = new Registry();
  assert.equal((await get('/metrics'))[0], 200);
  assert.equal((await get('/other'))[0], 404);
});
