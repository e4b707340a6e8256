import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { inspect } from 'node:util';

import { parseSpiffeId, formatSpiffeId, SpiffeIdError, tryParseSpiffeId, uriSansFromSubjectAltName } from '../../../src/identity/spiffe.js';
import {
  CertificateAuthority,
  CaError,
  splitPemCertificates,
  type CertificateIssuer,
  type CertificateSigningRequest,
  type IssuedCertificate,
} from '../../../src/identity/ca.js';
import {
  IdentityManager,
  IdentityManagerClosedError,
  CertificateIssueError,
  type IssuedEvent,
  type RenewalFailedEvent,
} from '../../../src/identity/manager.js';
import { AmbientError } from '../../../src/util/errors.js';
import { x509 } from '../../../src/identity/x509.js';

const TD = 'cluster.local';
const ID_A = 'spiffe://cluster.local/ns/default/sa/alpha';
const ID_B = 'spiffe://cluster.local/ns/default/sa/beta';

function once<T>(emitter: NodeJS.EventEmitter, event: string, pred: (v: T) => boolean, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`timed out waiting for ${event}`));
    }, timeoutMs);
    const on = (v: T): void => {
      if (!pred(v)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(v);
    };
    emitter.on(event, on);
  });
}

describe('spiffe ids', () => {
  it('parses and formats', () => {
    const id = parseSpiffeId('spiffe://cluster.local/ns/default/sa/my-sa.v1');
    assert.deepEqual(id, { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'my-sa.v1' });
    assert.equal(formatSpiffeId(id), 'spiffe://cluster.local/ns/default/sa/my-sa.v1');
  });

  it('rejects malformed ids with typed errors', () => {
    const cases: Array<[string, string]> = [
      ['', 'SPIFFE_EMPTY'],
      ['http://cluster.local/ns/a/sa/b', 'SPIFFE_BAD_SCHEME'],
      ['SPIFFE://cluster.local/ns/a/sa/b', 'SPIFFE_BAD_SCHEME'],
      ['spiffe://Cluster.Local/ns/a/sa/b', 'SPIFFE_BAD_TRUST_DOMAIN'],
      ['spiffe://user@td/ns/a/sa/b', 'SPIFFE_BAD_TRUST_DOMAIN'],
      ['spiffe://td:8080/ns/a/sa/b', 'SPIFFE_BAD_TRUST_DOMAIN'],
      ['spiffe:///ns/a/sa/b', 'SPIFFE_BAD_TRUST_DOMAIN'],
      ['spiffe://td', 'SPIFFE_NOT_K8S'],
      ['spiffe://td/ns/a/sa/b/extra', 'SPIFFE_NOT_K8S'],
      ['spiffe://td/namespace/a/sa/b', 'SPIFFE_NOT_K8S'],
      ['spiffe://td/ns//sa/b', 'SPIFFE_BAD_PATH'],
      ['spiffe://td/ns/../sa/b', 'SPIFFE_BAD_PATH'],
      ['spiffe://td/ns/a/sa/b?x=1', 'SPIFFE_BAD_PATH'],
      ['spiffe://td/ns/a/sa/b#frag', 'SPIFFE_BAD_PATH'],
      ['spiffe://td/ns/a/sa/b/', 'SPIFFE_BAD_PATH'],
      ['spiffe://td/' + 'x'.repeat(2100), 'SPIFFE_TOO_LONG'],
    ];
    for (const [input, code] of cases) {
      assert.throws(
        () => parseSpiffeId(input),
        (e: unknown) => e instanceof SpiffeIdError && e.code === code,
        `expected ${code} for ${JSON.stringify(input.slice(0, 60))}`,
      );
    }
    assert.equal(tryParseSpiffeId('nope'), undefined);
    assert.throws(() => formatSpiffeId({ trustDomain: TD, namespace: 'a/b', serviceAccount: 'c' }), SpiffeIdError);
  });

  it('extracts URI SANs from Node subjectaltname strings', () => {
    assert.deepEqual(uriSansFromSubjectAltName('URI:spiffe://a/ns/b/sa/c, DNS:x.example'), ['spiffe://a/ns/b/sa/c']);
    assert.deepEqual(uriSansFromSubjectAltName('DNS:x, URI:"spiffe://a/ns/b/sa/c, DNS:evil"'), ['spiffe://a/ns/b/sa/c, DNS:evil']);
    assert.deepEqual(uriSansFromSubjectAltName(undefined), []);
  });
});

describe('certificate authority', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'ambientd-ca-test-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('creates a root on first use, persists it with safe modes and reloads the same root', async () => {
    const dir = path.join(tmp, 'self-signed');
    const ca1 = await CertificateAuthority.loadOrCreate(dir, { trustDomain: TD, rootLifetimeDays: 30 });
    assert.equal(ca1.source, 'created');
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem']) {
      await stat(path.join(dir, f));
    }
    assert.equal((await stat(path.join(dir, 'ca-key.pem'))).mode & 0o777, 0o600);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    const root = new X509Certificate(await readFile(path.join(dir, 'root-cert.pem'), 'utf8'));
    assert.equal(root.ca, true);
    assert.ok(root.verify(root.publicKey), 'root is self-signed');
    const key = await readFile(path.join(dir, 'ca-key.pem'), 'utf8');
    assert.match(key, /BEGIN PRIVATE KEY/);
    const days = (Date.parse(root.validTo) - Date.now()) / 86400_000;
    assert.ok(days > 29 && days < 31, `root lifetime ${days} days`);

    const ca2 = await CertificateAuthority.loadOrCreate(dir, { trustDomain: TD });
    assert.equal(ca2.source, 'loaded');
    assert.equal(ca2.rootPem, ca1.rootPem);
    // A certificate issued by the reloaded CA verifies against the original root.
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const issued = await ca2.issue({ spiffeId: ID_A, publicKey });
    assert.ok(new X509Certificate(issued.certPem).verify(new X509Certificate(ca1.rootPem).publicKey));
  });

  it('is safe against concurrent creation (in-process and across processes)', async () => {
    const dir = path.join(tmp, 'race');
    const cas = await Promise.all(Array.from({ length: 5 }, () => CertificateAuthority.loadOrCreate(dir, { trustDomain: TD })));
    assert.equal(cas.filter((c) => c.source === 'created').length, 1);
    for (const c of cas) assert.equal(c.rootPem, cas[0]!.rootPem);

    const dir2 = path.join(tmp, 'race-procs');
    const caModule = new URL('../../../src/identity/ca.js', import.meta.url).href;
    const script = `
      const { CertificateAuthority } = await import(${JSON.stringify(caModule)});
      const ca = await CertificateAuthority.loadOrCreate(${JSON.stringify(dir2)}, { trustDomain: 'cluster.local' });
      process.stdout.write(JSON.stringify({ source: ca.source, root: ca.rootPem }));
    `;
    const run = (): Promise<{ source: string; root: string }> =>
      new Promise((resolve, reject) => {
        execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 }, (err, stdout, stderr) => {
          if (err) reject(new Error(`${err.message}\n${stderr}`));
          else resolve(JSON.parse(stdout) as { source: string; root: string });
        });
      });
    const outs = await Promise.all([run(), run(), run()]);
    assert.equal(outs.filter((o) => o.source === 'created').length, 1, JSON.stringify(outs.map((o) => o.source)));
    for (const o of outs) assert.equal(o.root, outs[0]!.root);
    const onDisk = await readFile(path.join(dir2, 'root-cert.pem'), 'utf8');
    assert.equal(onDisk, outs[0]!.root);
  });

  it('issues SPIFFE workload certificates with exactly one URI SAN', async () => {
    const ca = await CertificateAuthority.createInMemory({ trustDomain: TD });
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const a = await ca.issue({ spiffeId: ID_A, publicKey, lifetimeMs: 3600_000 });
    const b = await ca.issue({ spiffeId: ID_A, publicKey: publicKey.export({ format: 'pem', type: 'spki' }) as string });
    const cert = new X509Certificate(a.certPem);
    const root = new X509Certificate(a.rootPem);
    assert.equal(cert.subjectAltName, `URI:${ID_A}`);
    assert.ok(!cert.subject, 'empty subject');
    assert.equal(cert.ca, false);
    assert.ok(cert.verify(root.publicKey), 'signed by the root');
    assert.ok(cert.checkIssued(root));
    assert.deepEqual([...(cert.keyUsage ?? [])].sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    const pc = new x509.X509Certificate(a.certPem);
    const ku = pc.getExtension(x509.KeyUsagesExtension);
    assert.equal(ku?.usages, x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
    const san = pc.getExtension(x509.SubjectAlternativeNameExtension);
    assert.equal(san?.names.items.length, 1);
    assert.equal(san?.names.items[0]?.type, 'url');
    assert.notEqual(a.serial, b.serial, 'random serials');
    assert.match(a.serial, /^[0-9a-f]{32}$/);
    assert.equal(cert.serialNumber.toLowerCase(), a.serial);
    const life = a.notAfter.getTime() - Date.now();
    assert.ok(life > 3590_000 && life <= 3600_000, `lifetime ${life}`);
    assert.equal(a.chainPem, a.certPem, 'self-signed root: no intermediates');
    const d = b.notAfter.getTime() - b.notBefore.getTime();
    assert.ok(d > 23.9 * 3600_000 && d < 24.1 * 3600_000, 'default lifetime 24h');
  });

  it('issues from a CSR and rejects mismatching or bad requests', async () => {
    const ca = await CertificateAuthority.createInMemory({ trustDomain: TD });
    const alg = { name: 'ECDSA', namedCurve: 'P-256' };
    const keys = (await crypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
    const mkCsr = (uri: string) =>
      x509.Pkcs10CertificateRequestGenerator.create({
        keys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }])],
      });
    const ok = await ca.issue({ spiffeId: ID_A, csr: (await mkCsr(ID_A)).toString('pem') });
    assert.equal(new X509Certificate(ok.certPem).subjectAltName, `URI:${ID_A}`);
    await assert.rejects(
      ca.issue({ spiffeId: ID_A, csr: (await mkCsr(ID_B)).toString('pem') }),
      (e: unknown) => e instanceof CaError && e.code === 'CA_CSR_IDENTITY_MISMATCH',
    );
    await assert.rejects(ca.issue({ spiffeId: ID_A, csr: 'garbage' }), (e: unknown) => e instanceof CaError && e.code === 'CA_BAD_CSR');
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await assert.rejects(
      ca.issue({ spiffeId: 'spiffe://other.domain/ns/a/sa/b', publicKey }),
      (e: unknown) => e instanceof CaError && e.code === 'CA_BAD_REQUEST',
    );
    await assert.rejects(ca.issue({ spiffeId: 'not-a-spiffe-id', publicKey }), SpiffeIdError);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    await assert.rejects(ca.issue({ spiffeId: ID_A, publicKey: small.publicKey }), (e: unknown) => e instanceof CaError && e.code === 'CA_UNSUPPORTED_KEY');
  });

  it("loads Istio's plug-in layout (intermediate CA) and chains to the root", async () => {
    // Build root -> intermediate with the same library, as an operator would with openssl.
    const alg = { name: 'ECDSA', namedCurve: 'P-256' };
    const sign = { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams;
    const rootKeys = (await crypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
    const interKeys = (await crypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const rootCert = await x509.X509CertificateGenerator.createSelfSigned({
      name: 'CN=Plugin Root, O=example',
      keys: rootKeys,
      signingAlgorithm: sign,
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(now + 10 * 86400_000),
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
      ],
    });
    const interCert = await x509.X509CertificateGenerator.create({
      subject: 'CN=Plugin Intermediate, O=example',
      issuer: rootCert.subject,
      publicKey: interKeys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: sign,
      notBefore: new Date(now - 3600_000),
      notAfter: new Date(now + 5 * 86400_000),
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(interKeys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
      ],
    });
    const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', interKeys.privateKey));
    const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64')}\n-----END PRIVATE KEY-----\n`;
    const dir = path.join(tmp, 'plugin');
    await mkdir(dir, { mode: 0o700 });
    await writeFile(path.join(dir, 'ca-cert.pem'), interCert.toString('pem'));
    await writeFile(path.join(dir, 'ca-key.pem'), keyPem, { mode: 0o600 });
    await writeFile(path.join(dir, 'root-cert.pem'), rootCert.toString('pem'));
    await writeFile(path.join(dir, 'cert-chain.pem'), interCert.toString('pem') + '\n' + rootCert.toString('pem'));

    const ca = await CertificateAuthority.loadOrCreate(dir, { trustDomain: TD });
    assert.equal(ca.source, 'loaded');
    assert.equal(ca.rootPem.trim(), rootCert.toString('pem').trim());
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const issued = await ca.issue({ spiffeId: ID_A, publicKey });
    const chain = splitPemCertificates(issued.chainPem).map((p) => new X509Certificate(p));
    assert.equal(chain.length, 2, 'leaf + intermediate (root excluded)');
    const root = new X509Certificate(issued.rootPem);
    assert.ok(chain[0]!.checkIssued(chain[1]!) && chain[0]!.verify(chain[1]!.publicKey), 'leaf signed by intermediate');
    assert.ok(chain[1]!.checkIssued(root) && chain[1]!.verify(root.publicKey), 'intermediate signed by root');
    assert.ok(issued.notAfter.getTime() <= interCert.notAfter.getTime());

    // A mismatching key is refused, and a partial layout is never overwritten.
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const bad = path.join(tmp, 'plugin-bad');
    await mkdir(bad);
    await writeFile(path.join(bad, 'ca-cert.pem'), interCert.toString('pem'));
    await writeFile(path.join(bad, 'ca-key.pem'), other);
    await assert.rejects(CertificateAuthority.loadOrCreate(bad, { trustDomain: TD }), (e: unknown) => e instanceof CaError && e.code === 'CA_KEY_MISMATCH');
    const partial = path.join(tmp, 'plugin-partial');
    await mkdir(partial);
    await writeFile(path.join(partial, 'root-cert.pem'), rootCert.toString('pem'));
    await assert.rejects(
      CertificateAuthority.loadOrCreate(partial, { trustDomain: TD }),
      (e: unknown) => e instanceof CaError && e.code === 'CA_INCOMPLETE_LAYOUT',
    );
  });
});

/** Issuer wrapper that counts calls and can be told to fail. */
class FlakyIssuer implements CertificateIssuer {
  calls = 0;
  failing = false;
  requiresCsr: boolean;
  lastReq: CertificateSigningRequest | undefined;
  constructor(
    private readonly ca: CertificateAuthority,
    opts: { requiresCsr?: boolean; delayMs?: number } = {},
  ) {
    this.requiresCsr = opts.requiresCsr ?? false;
    this.delayMs = opts.delayMs ?? 0;
  }
  private readonly delayMs: number;
  async issue(req: CertificateSigningRequest): Promise<IssuedCertificate> {
    this.calls++;
    this.lastReq = req;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failing) throw new Error('CA unavailable (test)');
    if (this.requiresCsr) {
      assert.ok(req.csrPem, 'CSR supplied');
      return this.ca.issue({ spiffeId: req.spiffeId, csr: req.csrPem!, ...(req.lifetimeMs ? { lifetimeMs: req.lifetimeMs } : {}) });
    }
    return this.ca.issue(req);
  }
}

describe('identity manager', () => {
  let ca: CertificateAuthority;
  const managers: IdentityManager[] = [];
  before(async () => {
    ca = await CertificateAuthority.createInMemory({ trustDomain: TD });
  });
  after(() => {
    for (const m of managers) m.close();
  });
  const mk = (issuer: CertificateIssuer, opts: Partial<ConstructorParameters<typeof IdentityManager>[0]> = {}) => {
    const m = new IdentityManager({ issuer, ...opts });
    managers.push(m);
    return m;
  };

  it('caches per id, shares concurrent issuance and never exposes keys', async () => {
    const issuer = new FlakyIssuer(ca, { delayMs: 50 });
    const m = mk(issuer);
    const [a1, a2, a3] = await Promise.all([m.get(ID_A), m.get(ID_A), m.get(ID_A)]);
    assert.equal(issuer.calls, 1, 'one issuance for concurrent gets');
    assert.equal(a1.serial, a2.serial);
    assert.equal(a1.serial, a3.serial);
    const a4 = await m.get(ID_A);
    assert.equal(a4.serial, a1.serial);
    assert.equal(issuer.calls, 1);
    const b = await m.get(ID_B);
    assert.notEqual(b.serial, a1.serial);
    assert.equal(issuer.calls, 2);

    assert.equal(a1.state, 'valid');
    assert.match(a1.keyPem, /BEGIN PRIVATE KEY/);
    const cert = new X509Certificate(a1.certPem);
    assert.equal(cert.subjectAltName, `URI:${ID_A}`);
    assert.ok(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(a1.keyPem)));
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');

    // keys are not serialisable / inspectable / listed
    assert.ok(!JSON.stringify(a1).includes('PRIVATE KEY'));
    assert.ok(!inspect(a1, { depth: 5 }).includes('PRIVATE KEY'));
    const listed = m.list();
    assert.equal(listed.length, 2);
    assert.ok(!JSON.stringify(listed).includes('PRIVATE KEY'));
    const la = listed.find((l) => l.id === ID_A)!;
    assert.equal(la.serial, a1.serial);
    assert.equal(la.state, 'valid');
    assert.ok(la.nextRenewal);

    await assert.rejects(m.get('spiffe://bad'), SpiffeIdError);
  });

  it('supports issuers that require a CSR', async () => {
    const issuer = new FlakyIssuer(ca, { requiresCsr: true });
    const m = mk(issuer);
    const c = await m.get(ID_A);
    assert.match(issuer.lastReq?.csrPem ?? '', /BEGIN CERTIFICATE REQUEST/);
    assert.equal(new X509Certificate(c.certPem).subjectAltName, `URI:${ID_A}`);
  });

  it('renews at half-life in the background', async () => {
    const issuer = new FlakyIssuer(ca);
    const m = mk(issuer, { lifetimeMs: 2000 });
    const first = await m.get(ID_A);
    const renewed = once<IssuedEvent>(m, 'issued', (e) => e.renewal && e.id === ID_A, 4000);
    const ev = await renewed;
    assert.notEqual(ev.serial, first.serial);
    const now = await m.get(ID_A);
    assert.equal(now.serial, ev.serial);
    assert.ok(now.notAfter.getTime() >= first.notAfter.getTime());
    assert.ok(issuer.calls >= 2);
  });

  it('keeps the old certificate while renewal fails, backs off, then recovers', async () => {
    const issuer = new FlakyIssuer(ca);
    const m = mk(issuer, { lifetimeMs: 3000, backoffInitialMs: 100, backoffMaxMs: 400 });
    const first = await m.get(ID_A);
    issuer.failing = true;
    const failures: RenewalFailedEvent[] = [];
    m.on('renewalFailed', (e) => failures.push(e));
    await once<RenewalFailedEvent>(m, 'renewalFailed', (e) => e.attempt >= 3, 4000);
    assert.ok(failures.length >= 3);
    assert.equal(failures[0]!.currentSerial, first.serial);
    assert.equal(failures[0]!.retryInMs, 100);
    assert.equal(failures[1]!.retryInMs, 200);
    assert.equal(failures[2]!.retryInMs, 400);
    assert.match(failures[0]!.error.message, /CA unavailable/);
    const during = await m.get(ID_A);
    assert.equal(during.serial, first.serial, 'old certificate still served');
    assert.equal(during.state, 'renewing');
    const info = m.list().find((l) => l.id === ID_A)!;
    assert.ok(info.failedAttempts >= 3);
    assert.match(info.lastError ?? '', /CA unavailable/);

    issuer.failing = false;
    const ev = await once<IssuedEvent>(m, 'issued', (e) => e.renewal, 3000);
    assert.notEqual(ev.serial, first.serial);
    const after = await m.get(ID_A);
    assert.equal(after.serial, ev.serial);
    assert.equal(after.state, 'valid');
    assert.equal(m.list().find((l) => l.id === ID_A)!.failedAttempts, 0);
  });

  it('fails get() for an expired certificate when the issuer is down, and close() stops everything', async () => {
    const issuer = new FlakyIssuer(ca);
    const m = mk(issuer, { lifetimeMs: 1500, backoffInitialMs: 5000 });
    const first = await m.get(ID_B);
    issuer.failing = true;
    await once(m, 'expired', () => true, 4000);
    const listed = m.list().find((l) => l.id === ID_B)!;
    assert.equal(listed.state, 'expired');
    assert.equal(listed.serial, first.serial);
    await assert.rejects(m.get(ID_B), /CA unavailable/);
    m.close();
    await assert.rejects(m.get(ID_B), /closed/);
    assert.deepEqual(m.list(), []);
  });
});

describe('identity errors', () => {
  it('are AmbientErrors with their codes and a hint', () => {
    const spiffe = (() => {
      try {
        parseSpiffeId('http://x');
      } catch (e) {
        return e;
      }
      return null;
    })();
    assert.ok(spiffe instanceof SpiffeIdError && spiffe instanceof AmbientError);
    assert.equal(spiffe.code, 'SPIFFE_BAD_SCHEME');
    assert.equal(spiffe.input, 'http://x');
    assert.equal(spiffe.name, 'SpiffeIdError');
    assert.ok(spiffe.hint.length > 0);
    const ca = new CaError('CA_KEY_MISMATCH', 'no');
    assert.ok(ca instanceof AmbientError);
    assert.deepEqual([ca.code, ca.name], ['CA_KEY_MISMATCH', 'CaError']);
    assert.match(ca.hint, /ca-key\.pem/);
    const closed = new IdentityManagerClosedError();
    assert.ok(closed instanceof AmbientError);
    assert.equal(closed.code, 'CA_CLOSED');
    const issue = new CertificateIssueError('CA_ISSUE_TIMEOUT', 'slow');
    assert.ok(issue instanceof AmbientError);
    assert.deepEqual(issue.toJSON(), { code: 'CA_ISSUE_TIMEOUT', message: 'slow', hint: issue.hint });
  });
});
