/**
 * Interop: the cluster CA driven by a client that shares no code with ours.
 * The client is generated from the vendored Istio proto by @grpc/proto-loader
 * alone (other loader options than src/ca/proto.ts: camelCase fields, int64
 * as numbers, Struct as a plain message), the key and CSR come from the
 * OpenSSL command line, and OpenSSL verifies the answer. Only the server,
 * its TLS root and the node token come from the harness.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ROOT } from '../../helpers/paths.js';
import { id, startCa } from './harness.js';

const run = promisify(execFile);
const PROTO = path.join(ROOT, 'src', 'ca', 'proto', 'ca.proto');
const WEB = id('ambient-demo', 'web');
const DB = id('ambient-demo', 'db');

interface GeneratedClient extends grpc.Client {
  createCertificate(
    req: Record<string, unknown>,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (e: grpc.ServiceError | null, r?: { certChain: string[] }) => void,
  ): grpc.ClientUnaryCall;
}

function generatedClient(address: string, rootPem: string): GeneratedClient {
  // camelCase (keepCase false), int64 as Number, no oneof virtual fields: not how src/ca/proto.ts loads it
  const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, defaults: false });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { istio: { v1: { auth: { IstioCertificateService: grpc.ServiceClientConstructor } } } };
  const Ctor = pkg.istio.v1.auth.IstioCertificateService;
  assert.deepEqual(Object.keys(Ctor.service), ['CreateCertificate']);
  assert.equal(Ctor.service.CreateCertificate!.path, '/istio.v1.auth.IstioCertificateService/CreateCertificate');
  const c = new Ctor(address, grpc.credentials.createSsl(Buffer.from(rootPem)), {
    'grpc.ssl_target_name_override': 'ambientd-ca.ambientd-system.svc',
    'grpc.default_authority': 'ambientd-ca.ambientd-system.svc',
  }) as unknown as GeneratedClient & Record<string, unknown>;
  // proto-loader names the method as in the .proto (CreateCertificate) and, lower-cased, createCertificate
  assert.equal(typeof c.createCertificate, 'function');
  return c;
}

async function opensslCsr(dir: string, uri: string): Promise<{ csr: string; keyFile: string }> {
  const keyFile = path.join(dir, 'key.pem');
  await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile]);
  const { stdout } = await run('openssl', ['req', '-new', '-key', keyFile, '-subj', '/O=cluster.local', '-addext', `subjectAltName=critical,URI:${uri}`]);
  return { csr: stdout, keyFile };
}

test('interop: a proto-loader client on the vendored Istio proto and an OpenSSL CSR get a certificate OpenSSL verifies', async (t) => {
  const h = await startCa(t, { servingNames: ['ambientd-ca.ambientd-system.svc'] });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-interop-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const client = generatedClient(h.address, h.ca.rootPem);
  t.after(() => client.close());
  const { csr, keyFile } = await opensslCsr(dir, WEB);
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${h.token('node-a')}`);
  const call = (req: Record<string, unknown>): Promise<{ certChain: string[] }> =>
    new Promise((resolve, reject) => client.createCertificate(req, md, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r!))));

  const res = await call({ csr, validityDuration: 7200, metadata: { fields: { ImpersonatedIdentity: { stringValue: WEB } } } });
  assert.equal(res.certChain.length, 2);
  fs.writeFileSync(path.join(dir, 'leaf.pem'), res.certChain[0]!);
  fs.writeFileSync(path.join(dir, 'root.pem'), res.certChain[res.certChain.length - 1]!);
  // OpenSSL: the leaf chains to the root (root last), is for the OpenSSL key, carries the URI SAN and no more
  const verify = await run('openssl', ['verify', '-CAfile', path.join(dir, 'root.pem'), path.join(dir, 'leaf.pem')]);
  assert.match(verify.stdout, /leaf.pem: OK/);
  const text = (await run('openssl', ['x509', '-in', path.join(dir, 'leaf.pem'), '-noout', '-text'])).stdout;
  assert.match(text, new RegExp(`URI:${WEB.replace(/[/.]/g, '\\$&')}\\s*\\n`));
  assert.doesNotMatch(text, /DNS:|IP Address:/);
  assert.match(text, /CA:FALSE/);
  const pubLeaf = (await run('openssl', ['x509', '-in', path.join(dir, 'leaf.pem'), '-noout', '-pubkey'])).stdout;
  const pubKey = (await run('openssl', ['ec', '-in', keyFile, '-pubout'])).stdout;
  assert.equal(pubLeaf.trim(), pubKey.trim());
  const dates = (await run('openssl', ['x509', '-in', path.join(dir, 'leaf.pem'), '-noout', '-enddate'])).stdout;
  const hours = (Date.parse(dates.replace(/^notAfter=/, '').trim()) - Date.now()) / 3_600_000;
  assert.ok(hours > 1.9 && hours <= 2, `lifetime ${hours} h`);

  // and a refusal reads the same from this client: PERMISSION_DENIED with the reason
  const other = await opensslCsr(dir, DB);
  await assert.rejects(
    call({ csr: other.csr, metadata: { fields: { ImpersonatedIdentity: { stringValue: DB } } } }),
    (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED && /^CA_NODE_DENIED: no pod on node node-a/.test(e.details),
  );
});
