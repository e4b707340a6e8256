/**
 * The cluster CA over a real gRPC connection with TLS on loopback: what it
 * signs (chain leaf first, root last), whom it refuses and why (node
 * authorization, authentication, CSR checks), and that every refusal is
 * counted, logged and carries its code.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { uriSansFromSubjectAltName } from '../../../src/identity/spiffe.js';
import { ERROR_CODE_METADATA } from '../../../src/ca/errors.js';
import { loadCaService } from '../../../src/ca/proto.js';
import { CertificateAuthority } from '../../../src/identity/ca.js';
import { AGENT, id, makeCsr, refusal, startCa, TD } from './harness.js';

const WEB = id('ambient-demo', 'web');
const DB = id('ambient-demo', 'db');

function codeOf(e: grpc.ServiceError): string | undefined {
  const v = e.metadata?.get(ERROR_CODE_METADATA)[0];
  return v === undefined ? undefined : String(v);
}

test('a node agent gets the identity of a pod on its node: chain leaf first, root last, leaf for the CSR key', async (t) => {
  const h = await startCa(t);
  const { csr } = await makeCsr({ uris: [WEB] });
  const res = await h.call({ csr, impersonate: WEB }, h.token('node-a'));
  assert.equal(res.cert_chain.length, 2);
  const leaf = new X509Certificate(res.cert_chain[0]!);
  const root = new X509Certificate(res.cert_chain[1]!);
  assert.deepEqual(uriSansFromSubjectAltName(leaf.subjectAltName), [WEB]);
  assert.equal(leaf.ca, false);
  assert.ok(leaf.verify(root.publicKey));
  assert.equal(root.raw.toString('base64'), new X509Certificate(h.ca.rootPem).raw.toString('base64'));
  assert.equal(await h.metric('issued', 'OK'), 1);
  const line = h.logs.find((l) => l.msg === 'certificate issued');
  assert.equal(line?.identity, WEB);
  assert.equal(line?.node, 'node-a');
});

test('node n1 asking for the identity of a pod that runs only on n2 is refused, counted, logged, and gets no certificate', async (t) => {
  const h = await startCa(t);
  const { csr } = await makeCsr({ uris: [DB] });
  const e = await refusal(h.call({ csr, impersonate: DB }, h.token('node-a')));
  assert.equal(e.code, grpc.status.PERMISSION_DENIED);
  assert.match(e.details, /^CA_NODE_DENIED: no pod on node node-a has identity spiffe:\/\/cluster.local\/ns\/ambient-demo\/sa\/db/);
  assert.equal(codeOf(e), 'CA_NODE_DENIED');
  assert.equal(await h.metric('refused', 'CA_NODE_DENIED'), 1);
  assert.equal(await h.metric('issued', 'OK'), 0);
  const line = h.logs.find((l) => l.msg === 'certificate request refused');
  assert.equal(line?.level, 'warn');
  assert.equal(line?.code, 'CA_NODE_DENIED');
  assert.deepEqual(line?.runsOn, ['node-b']);
  // the same refusal again: counted again, logged at debug only
  await refusal(h.call({ csr, impersonate: DB }, h.token('node-a')));
  assert.equal(await h.metric('refused', 'CA_NODE_DENIED'), 2);
  assert.equal(h.logs.filter((l) => l.msg === 'certificate request refused' && l.level === 'warn').length, 1);
  // node-b may
  const ok = await h.call({ csr, impersonate: DB }, h.token('node-b'));
  assert.equal(ok.cert_chain.length, 2);
});

test('a pod that left the node: its identity is refused once the index says so', async (t) => {
  const h = await startCa(t);
  const { csr } = await makeCsr({ uris: [WEB] });
  await h.call({ csr, impersonate: WEB }, h.token('node-a'));
  const { snapshotOf, PODS } = await import('./harness.js');
  h.pods.update(snapshotOf(PODS.filter((p) => p.name !== 'web-a')));
  const e = await refusal(h.call({ csr, impersonate: WEB }, h.token('node-a')));
  assert.equal(codeOf(e), 'CA_NODE_DENIED');
});

test('a missing, expired, wrong-audience or foreign-signed token is refused UNAUTHENTICATED', async (t) => {
  const h = await startCa(t);
  const { csr } = await makeCsr({ uris: [WEB] });
  const cases: Array<[string | undefined, string]> = [
    [undefined, 'CA_AUTH_MISSING'],
    [h.token('node-a', { now: Date.now() - 48 * 3_600_000 }), 'CA_AUTH_EXPIRED'],
    [h.token('node-a', { audience: 'https://kubernetes.default.svc' }), 'CA_AUTH_AUDIENCE'],
    [h.token('node-a', { issuer: 'someone-else' }), 'CA_AUTH_INVALID'],
    ['not-a-jwt', 'CA_AUTH_INVALID'],
  ];
  // a token signed by another sandbox key
  const { generateSandboxKey, mintSandboxToken } = await import('../../../src/ca/auth-sandbox.js');
  cases.push([mintSandboxToken(generateSandboxKey().privateKeyPem, { ...AGENT, node: 'node-a', audience: 'istio-ca' }), 'CA_AUTH_INVALID']);
  // a token whose claims were edited (node-b -> node-a) after signing
  const [hd, , sig] = h.token('node-b').split('.');
  const forged = JSON.parse(Buffer.from(h.token('node-a').split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
  cases.push([`${hd}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${sig}`, 'CA_AUTH_INVALID']);
  for (const [tok, code] of cases) {
    const e = await refusal(h.call({ csr, impersonate: WEB }, tok));
    assert.equal(e.code, grpc.status.UNAUTHENTICATED, code);
    assert.equal(codeOf(e), code);
    assert.ok(e.details.startsWith(`${code}: `), e.details);
  }
  assert.equal(await h.metric('refused', 'CA_AUTH_INVALID'), 4);
  assert.equal(await h.metric('issued', 'OK'), 0);
});

test('only the node agent account may ask for other identities; any ServiceAccount gets its own', async (t) => {
  const h = await startCa(t);
  const { csr } = await makeCsr();
  const webToken = h.token('node-a', { namespace: 'ambient-demo', serviceAccount: 'web' });
  const e = await refusal(h.call({ csr, impersonate: DB }, webToken));
  assert.equal(e.code, grpc.status.PERMISSION_DENIED);
  assert.equal(codeOf(e), 'CA_IMPERSONATION_DENIED');
  assert.match(e.details, /ambient-demo\/web is not a trusted node account/);
  // its own identity: no ImpersonatedIdentity, or its own
  for (const impersonate of [undefined, WEB]) {
    const res = await h.call({ csr, ...(impersonate ? { impersonate } : {}) }, webToken);
    assert.deepEqual(uriSansFromSubjectAltName(new X509Certificate(res.cert_chain[0]!).subjectAltName), [WEB]);
  }
  // the agent without ImpersonatedIdentity gets its own identity
  const own = await h.call({ csr }, h.token('node-a'));
  assert.deepEqual(uriSansFromSubjectAltName(new X509Certificate(own.cert_chain[0]!).subjectAltName), [id(AGENT.namespace, AGENT.serviceAccount)]);
});

test('CSR checks: extra SANs, a CA flag, another trust domain are refused (not sanitised)', async (t) => {
  const h = await startCa(t);
  const tok = h.token('node-a');
  const cases: Array<[Parameters<typeof makeCsr>[0], string | undefined, number, string, RegExp]> = [
    [{ uris: [WEB], dns: ['web.ambient-demo.svc'] }, WEB, grpc.status.INVALID_ARGUMENT, 'CA_CSR_REJECTED', /extra SAN \(dns: web.ambient-demo.svc\)/],
    [{ uris: [WEB], ips: ['10.0.0.1'] }, WEB, grpc.status.INVALID_ARGUMENT, 'CA_CSR_REJECTED', /extra SAN \(ip: 10.0.0.1\)/],
    [{ uris: [WEB, DB] }, WEB, grpc.status.INVALID_ARGUMENT, 'CA_CSR_REJECTED', /asks for URI SAN spiffe:\/\/cluster.local\/ns\/ambient-demo\/sa\/db/],
    [{ uris: [WEB], ca: true }, WEB, grpc.status.INVALID_ARGUMENT, 'CA_CSR_REJECTED', /CA certificate/],
    [{ uris: [id('ambient-demo', 'web', 'other.td')] }, WEB, grpc.status.INVALID_ARGUMENT, 'CA_CSR_REJECTED', /trust domain other.td/],
    [
      { uris: [id('ambient-demo', 'web', 'other.td')] },
      id('ambient-demo', 'web', 'other.td'),
      grpc.status.PERMISSION_DENIED,
      'CA_FOREIGN_TRUST_DOMAIN',
      /other.td/,
    ],
    [{}, 'spiffe://cluster.local/not/k8s', grpc.status.INVALID_ARGUMENT, 'SPIFFE_NOT_K8S', /SPIFFE id path/],
  ];
  for (const [csrOpts, impersonate, status, code, re] of cases) {
    const { csr } = await makeCsr(csrOpts);
    const e = await refusal(h.call({ csr, ...(impersonate ? { impersonate } : {}) }, tok));
    assert.equal(e.code, status, code);
    assert.equal(codeOf(e), code);
    assert.match(e.details, re);
  }
  // not a CSR; a CSR whose signature does not verify
  let e = await refusal(h.call({ csr: 'hello', impersonate: WEB }, tok));
  assert.equal(codeOf(e), 'CA_BAD_CSR');
  const { csr } = await makeCsr({ uris: [WEB] });
  const b64 = csr.replace(/-----[A-Z ]+-----/g, '').replace(/\s/g, '');
  const der = Buffer.from(b64, 'base64');
  der[der.length - 5] ^= 0xff; // inside the signature
  const bad = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  e = await refusal(h.call({ csr: bad, impersonate: WEB }, tok));
  assert.equal(e.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(codeOf(e), 'CA_BAD_CSR');
  // a CSR with no SAN at all is fine: the identity comes from authorization
  const plain = await makeCsr();
  const res = await h.call({ csr: plain.csr, impersonate: WEB }, tok);
  assert.deepEqual(uriSansFromSubjectAltName(new X509Certificate(res.cert_chain[0]!).subjectAltName), [WEB]);
  assert.equal(await h.metric('refused', 'CA_CSR_REJECTED'), 5);
});

test('validity_duration: honoured, 0 is the default, clamped to the maximum', async (t) => {
  const h = await startCa(t, { server: { maxCertLifetimeMs: 48 * 3_600_000, defaultCertLifetimeMs: 12 * 3_600_000 } });
  const { csr } = await makeCsr({ uris: [WEB] });
  const life = async (validity: number): Promise<number> => {
    const leaf = new X509Certificate((await h.call({ csr, impersonate: WEB, validity }, h.token('node-a'))).cert_chain[0]!);
    return (Date.parse(leaf.validTo) - Date.now()) / 3_600_000;
  };
  assert.ok(Math.abs((await life(3600)) - 1) < 0.01);
  assert.ok(Math.abs((await life(0)) - 12) < 0.01);
  assert.ok(Math.abs((await life(365 * 86400)) - 48) < 0.01);
});

test('before the pod index is synced every request is answered UNAVAILABLE', async (t) => {
  const h = await startCa(t, { pods: null });
  const { csr } = await makeCsr({ uris: [WEB] });
  const e = await refusal(h.call({ csr, impersonate: WEB }, h.token('node-a')));
  assert.equal(e.code, grpc.status.UNAVAILABLE);
  assert.equal(codeOf(e), 'CA_NOT_READY');
  assert.equal(await h.metric('failed', 'CA_NOT_READY'), 1);
});

test('TLS: a client that does not trust the CA root cannot talk to it', async (t) => {
  const h = await startCa(t);
  const other = await CertificateAuthority.createInMemory({ trustDomain: TD });
  const { Client } = loadCaService();
  const client = new Client(h.address, grpc.credentials.createSsl(Buffer.from(other.rootPem)));
  t.after(() => client.close());
  const { csr } = await makeCsr({ uris: [WEB] });
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${h.token('node-a')}`);
  const e = await refusal(
    new Promise((resolve, reject) =>
      (client as unknown as Record<string, (...a: unknown[]) => void>).CreateCertificate!(
        { csr },
        md,
        { deadline: Date.now() + 5000 },
        (err: unknown, r: unknown) => (err ? reject(err) : resolve(r)),
      ),
    ),
  );
  assert.equal(e.code, grpc.status.UNAVAILABLE);
  assert.equal(await h.metric('issued', 'OK'), 0);
});

test('two replicas on the same CA material: stateless, either one serves, both chains end in the same root', async (t) => {
  const a = await startCa(t);
  const { CaServer } = await import('../../../src/ca/server.js');
  const { servingCertificate } = await import('../../../src/ca/serving.js');
  const { SandboxAuthenticator } = await import('../../../src/ca/auth-sandbox.js');
  const replica = new CaServer({
    signer: a.ca,
    authenticator: new SandboxAuthenticator({ publicKey: a.keys.publicKeyPem, audience: 'istio-ca' }),
    pods: a.pods,
    trustedNodeAccounts: [`${AGENT.namespace}/${AGENT.serviceAccount}`],
    tls: await servingCertificate(a.ca, ['127.0.0.1']),
  });
  const port = await replica.listen('127.0.0.1:0');
  t.after(() => replica.close(100));
  const { Client } = loadCaService();
  const b = new Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(a.ca.rootPem)));
  t.after(() => b.close());
  const { csr } = await makeCsr({ uris: [WEB] });
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${a.token('node-a')}`);
  const fromB = await new Promise<{ cert_chain: string[] }>((resolve, reject) =>
    (b as unknown as Record<string, (...x: unknown[]) => void>).CreateCertificate!(
      { csr, metadata: { fields: { ImpersonatedIdentity: { stringValue: WEB } } } },
      md,
      { deadline: Date.now() + 5000 },
      (e: Error | null, r: { cert_chain: string[] }) => (e ? reject(e) : resolve(r)),
    ),
  );
  const fromA = await a.call({ csr, impersonate: WEB }, a.token('node-a'));
  assert.equal(fromA.cert_chain.at(-1), fromB.cert_chain.at(-1));
  assert.notEqual(new X509Certificate(fromA.cert_chain[0]!).serialNumber, new X509Certificate(fromB.cert_chain[0]!).serialNumber);
  assert.equal((await replica.registry.getSingleMetric('ambientd_ca_requests_total')!.get()).values.find((v) => v.labels.result === 'issued')?.value, 1);
});

test('a request over 64 KiB is refused before any parsing (RESOURCE_EXHAUSTED)', async (t) => {
  const h = await startCa(t);
  const e = await refusal(h.call({ csr: 'x'.repeat(100 * 1024), impersonate: WEB }, h.token('node-a')));
  assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.equal(await h.metric('issued', 'OK'), 0);
});
