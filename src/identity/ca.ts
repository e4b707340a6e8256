/**
 * Built-in certificate authority.
 *
 * Either loads Istio's plug-in CA layout (`ca-cert.pem`, `ca-key.pem`,
 * `root-cert.pem`, `cert-chain.pem`) from a directory, or creates a
 * self-signed ECDSA P-256 root there. Issues SPIFFE workload certificates
 * (URI SAN only, digitalSignature+keyEncipherment, serverAuth+clientAuth,
 * not a CA, random serial).
 */
import { x509 } from './x509.js';
import { createPrivateKey, createPublicKey, X509Certificate as NodeX509, KeyObject } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { parseSpiffeId, validateTrustDomain } from './spiffe.js';
import { CaError } from './ca-errors.js';
import {
  checkWorkloadKey,
  floorToSecond,
  isSelfSigned,
  randomSerialHex,
  signingAlgFor,
  spkiDer,
  splitPemCertificates,
  toKeyObjectPublic,
  type PublicKeyInput,
} from './ca-keys.js';
import { acquireLock, exists, readIfExists, writeFileAtomic } from './ca-files.js';

export { CaError, type CaErrorCode } from './ca-errors.js';
export { splitPemCertificates, type PublicKeyInput } from './ca-keys.js';

const subtle = globalThis.crypto.subtle;

export const CA_CERT_FILE = 'ca-cert.pem';
export const CA_KEY_FILE = 'ca-key.pem';
export const ROOT_CERT_FILE = 'root-cert.pem';
export const CERT_CHAIN_FILE = 'cert-chain.pem';
const LOCK_FILE = '.ambientd-ca.lock';

export const DEFAULT_WORKLOAD_CERT_LIFETIME_MS = 24 * 3600 * 1000;
export const DEFAULT_ROOT_LIFETIME_DAYS = 3650;

export interface IssueRequest {
  spiffeId: string;
  /** Exactly one of publicKey / csr must be given. */
  publicKey?: PublicKeyInput;
  /** PKCS#10 CSR, PEM or DER. Its signature is verified; a URI SAN in it must equal spiffeId. */
  csr?: string | Uint8Array;
  /** Default 24 h. Clamped to the CA certificate's own notAfter. */
  lifetimeMs?: number;
  /** Overrides (tests / special cases). */
  notBefore?: Date;
  notAfter?: Date;
}

export interface IssuedCertificate {
  certPem: string;
  /** Workload certificate followed by intermediates (never the root). */
  chainPem: string;
  rootPem: string;
  /** Lower-case hex. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * Signing request handed to a pluggable issuer. The manager always fills
 * `publicKeyPem`; it also fills `csrPem` when the issuer sets `requiresCsr`.
 */
export interface CertificateSigningRequest {
  spiffeId: string;
  publicKeyPem: string;
  csrPem?: string;
  lifetimeMs?: number;
}

/** Anything that can sign workload certificates (built-in CA, Istio CA client, …). */
export interface CertificateIssuer {
  /** When true, the caller must supply `csrPem` (e.g. istiod's CreateCertificate). */
  readonly requiresCsr?: boolean;
  issue(req: CertificateSigningRequest): Promise<IssuedCertificate>;
  /**
   * The trust roots as they are now, when they can change after a certificate
   * was issued (a cluster CA's bundle file during a root rotation): the
   * IdentityManager hands this, not the bundle of issuance time, as rootPem, so
   * a peer certificate from a newly added root verifies before the local one
   * is renewed. Undefined: use the issued certificate's rootPem.
   */
  trustBundle?(): string | undefined;
  /** Releases what the issuer holds (a remote CA's channel); IdentityManager.close() calls it. */
  close?(): void;
}

export interface LoadOrCreateOptions {
  trustDomain: string;
  /** Lifetime of a newly created self-signed root. Default 3650 days. */
  rootLifetimeDays?: number;
  /** How long to wait for another process holding the creation lock. Default 30 s. */
  lockTimeoutMs?: number;
}

export type CaSource = 'created' | 'loaded' | 'in-memory';

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------

interface CaMaterial {
  caCertPem: string;
  caKey: KeyObject; // private
  rootPem: string; // one or more roots
  /** Intermediates to append to issued certs (ca-cert first), excluding roots. */
  intermediatesPem: string[];
}

export class CertificateAuthority implements CertificateIssuer {
  readonly requiresCsr = false;
  /** PEM of the signing certificate (ca-cert.pem). */
  readonly caCertPem: string;
  /** PEM of the trust root(s) (root-cert.pem). */
  readonly rootPem: string;
  readonly notAfter: Date;
  readonly notBefore: Date;
  readonly trustDomain: string;
  readonly source: CaSource;
  /** Directory the material came from (undefined for in-memory CAs). */
  readonly dir: string | undefined;

  readonly #intermediates: string[];
  readonly #signingKey: CryptoKey;
  readonly #signAlg: Algorithm | EcdsaParams;
  readonly #caCert: x509.X509Certificate;
  readonly #caSkid: string | undefined;

  private constructor(m: CaMaterial, signingKey: CryptoKey, signAlg: Algorithm | EcdsaParams, trustDomain: string, source: CaSource, dir: string | undefined) {
    this.caCertPem = m.caCertPem;
    this.rootPem = m.rootPem;
    this.#intermediates = m.intermediatesPem;
    this.#signingKey = signingKey;
    this.#signAlg = signAlg;
    this.#caCert = new x509.X509Certificate(m.caCertPem);
    this.notAfter = this.#caCert.notAfter;
    this.notBefore = this.#caCert.notBefore;
    const skid = this.#caCert.getExtension(x509.SubjectKeyIdentifierExtension);
    this.#caSkid = skid?.keyId;
    this.trustDomain = trustDomain;
    this.source = source;
    this.dir = dir;
  }

  /** Intermediate chain appended to issued certificates (may be empty). */
  get intermediatesPem(): string {
    return this.#intermediates.join('');
  }

  /**
   * Loads the plug-in CA layout from `dir` if present, else creates a
   * self-signed root there. Concurrent callers (threads or processes) are
   * serialised with an O_EXCL lock file; losers load the winner's root.
   */
  static async loadOrCreate(dir: string, opts: LoadOrCreateOptions): Promise<CertificateAuthority> {
    validateTrustDomain(opts.trustDomain);
    const absDir = path.resolve(dir);
    await fsp.mkdir(absDir, { recursive: true, mode: 0o700 });

    const existing = await CertificateAuthority.#tryLoad(absDir, opts.trustDomain);
    if (existing) return existing;

    const release = await acquireLock(path.join(absDir, LOCK_FILE), opts.lockTimeoutMs ?? 30_000);
    try {
      const again = await CertificateAuthority.#tryLoad(absDir, opts.trustDomain);
      if (again) return again;
      // Nothing usable: make sure we are not overwriting a partial plug-in layout.
      const present: string[] = [];
      for (const f of [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE]) {
        if (await exists(path.join(absDir, f))) present.push(f);
      }
      if (present.length > 0) {
        throw new CaError(
          'CA_INCOMPLETE_LAYOUT',
          `${absDir} holds ${present.join(', ')} but not both ${CA_CERT_FILE} and ${CA_KEY_FILE}; refusing to overwrite`,
        );
      }
      const { certPem, keyPkcs8Pem } = await createRoot(opts.trustDomain, opts.rootLifetimeDays ?? DEFAULT_ROOT_LIFETIME_DAYS);
      await fsp.chmod(absDir, 0o700).catch(() => undefined);
      // ca-key.pem is written last: its presence (with ca-cert.pem) marks a complete layout.
      await writeFileAtomic(path.join(absDir, ROOT_CERT_FILE), certPem, 0o644);
      await writeFileAtomic(path.join(absDir, CERT_CHAIN_FILE), certPem, 0o644);
      await writeFileAtomic(path.join(absDir, CA_CERT_FILE), certPem, 0o644);
      await writeFileAtomic(path.join(absDir, CA_KEY_FILE), keyPkcs8Pem, 0o600);
      const m = materialFromPems(certPem, keyPkcs8Pem, certPem, certPem);
      return await CertificateAuthority.#fromMaterial(m, opts.trustDomain, 'created', absDir);
    } finally {
      await release();
    }
  }

  /** Creates a self-signed root that lives only in memory (tests, second trust domains). */
  static async createInMemory(opts: { trustDomain: string; rootLifetimeDays?: number }): Promise<CertificateAuthority> {
    validateTrustDomain(opts.trustDomain);
    const { certPem, keyPkcs8Pem } = await createRoot(opts.trustDomain, opts.rootLifetimeDays ?? DEFAULT_ROOT_LIFETIME_DAYS);
    return CertificateAuthority.#fromMaterial(materialFromPems(certPem, keyPkcs8Pem, certPem, certPem), opts.trustDomain, 'in-memory', undefined);
  }

  /** Builds a CA from PEM strings in the plug-in layout (no disk access). */
  static async fromPem(opts: {
    trustDomain: string;
    caCertPem: string;
    caKeyPem: string;
    rootCertPem?: string;
    certChainPem?: string;
  }): Promise<CertificateAuthority> {
    validateTrustDomain(opts.trustDomain);
    const m = materialFromPems(opts.caCertPem, opts.caKeyPem, opts.rootCertPem, opts.certChainPem);
    return CertificateAuthority.#fromMaterial(m, opts.trustDomain, 'in-memory', undefined);
  }

  static async #tryLoad(dir: string, trustDomain: string): Promise<CertificateAuthority | undefined> {
    const certPem = await readIfExists(path.join(dir, CA_CERT_FILE));
    const keyPem = await readIfExists(path.join(dir, CA_KEY_FILE));
    if (certPem === undefined || keyPem === undefined) return undefined;
    const root = await readIfExists(path.join(dir, ROOT_CERT_FILE));
    const chain = await readIfExists(path.join(dir, CERT_CHAIN_FILE));
    const m = materialFromPems(certPem, keyPem, root, chain);
    return CertificateAuthority.#fromMaterial(m, trustDomain, 'loaded', dir);
  }

  static async #fromMaterial(m: CaMaterial, trustDomain: string, source: CaSource, dir: string | undefined): Promise<CertificateAuthority> {
    const alg = signingAlgFor(m.caKey);
    const der = m.caKey.export({ format: 'der', type: 'pkcs8' });
    let key: CryptoKey;
    try {
      key = await subtle.importKey('pkcs8', der, alg.importAlg, false, ['sign']);
    } catch (e) {
      throw new CaError('CA_UNSUPPORTED_KEY', 'cannot import CA private key', { cause: e });
    } finally {
      der.fill(0);
    }
    return new CertificateAuthority(m, key, alg.signAlg, trustDomain, source, dir);
  }

  /** CertificateIssuer implementation (public key or CSR in PEM). */
  issue(req: CertificateSigningRequest): Promise<IssuedCertificate>;
  issue(req: IssueRequest): Promise<IssuedCertificate>;
  async issue(req: IssueRequest | CertificateSigningRequest): Promise<IssuedCertificate> {
    const r = normaliseRequest(req);
    const id = parseSpiffeId(r.spiffeId); // throws SpiffeIdError
    if (id.trustDomain !== this.trustDomain) {
      throw new CaError('CA_BAD_REQUEST', `identity ${r.spiffeId} is outside trust domain ${this.trustDomain}`);
    }
    let spki: Buffer;
    if (r.csr !== undefined) {
      spki = await publicKeyFromCsr(r.csr, r.spiffeId);
    } else if (r.publicKey !== undefined) {
      let k: KeyObject;
      try {
        k = await toKeyObjectPublic(r.publicKey);
      } catch (e) {
        throw new CaError('CA_BAD_REQUEST', 'cannot parse public key', { cause: e });
      }
      checkWorkloadKey(k);
      spki = spkiDer(k);
    } else {
      throw new CaError('CA_BAD_REQUEST', 'either publicKey or csr is required');
    }

    return this.#sign(spki, [{ type: 'url', value: r.spiffeId }], r.lifetimeMs, r.notBefore, r.notAfter);
  }

  /**
   * A TLS server certificate for a service of the mesh's control plane (the
   * cluster CA's own gRPC endpoint): DNS and IP SANs, serverAuth, signed by
   * this CA so that agents verify it with the trust bundle.
   */
  async issueServer(req: { publicKey: PublicKeyInput; dnsNames?: string[]; ipAddresses?: string[]; lifetimeMs?: number }): Promise<IssuedCertificate> {
    const names: x509.JsonGeneralName[] = [
      ...(req.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
      ...(req.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
    ];
    if (names.length === 0) throw new CaError('CA_BAD_REQUEST', 'a server certificate needs at least one DNS name or IP address');
    let k: KeyObject;
    try {
      k = await toKeyObjectPublic(req.publicKey);
    } catch (e) {
      throw new CaError('CA_BAD_REQUEST', 'cannot parse public key', { cause: e });
    }
    checkWorkloadKey(k);
    return this.#sign(spkiDer(k), names, req.lifetimeMs);
  }

  async #sign(spki: Buffer, sans: x509.JsonGeneralName[], lifetimeMs?: number, nb?: Date, na?: Date): Promise<IssuedCertificate> {
    const now = Date.now();
    const lifetime = lifetimeMs ?? DEFAULT_WORKLOAD_CERT_LIFETIME_MS;
    if (!(lifetime > 0) || !Number.isFinite(lifetime)) throw new CaError('CA_BAD_REQUEST', `invalid lifetime ${lifetime}`);
    let notBefore = nb ?? floorToSecond(now - Math.min(60_000, Math.floor(lifetime / 20)));
    let notAfter = na ?? floorToSecond(now + lifetime);
    if (notAfter.getTime() > this.notAfter.getTime()) notAfter = this.notAfter;
    if (notBefore.getTime() < this.notBefore.getTime()) notBefore = this.notBefore;
    if (notAfter.getTime() <= now && na === undefined) {
      throw new CaError('CA_EXPIRED', `CA certificate expired at ${this.notAfter.toISOString()}`);
    }

    const serial = randomSerialHex();
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      // Empty subject => SAN must be critical (RFC 5280 4.2.1.6).
      new x509.SubjectAlternativeNameExtension(sans, true),
    ];
    if (this.#caSkid) extensions.push(new x509.AuthorityKeyIdentifierExtension(this.#caSkid));
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      issuer: this.#caCert.subjectName,
      subject: '',
      notBefore,
      notAfter,
      publicKey: new Uint8Array(spki),
      signingKey: this.#signingKey,
      signingAlgorithm: this.#signAlg,
      extensions,
    });
    const certPem = cert.toString('pem').trim() + '\n';
    return {
      certPem,
      chainPem: certPem + this.#intermediates.join(''),
      rootPem: this.rootPem,
      serial,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    };
  }
}

function normaliseRequest(req: IssueRequest | CertificateSigningRequest): IssueRequest {
  if ('publicKeyPem' in req || 'csrPem' in req) {
    const r = req as CertificateSigningRequest;
    return {
      spiffeId: r.spiffeId,
      ...(r.csrPem !== undefined ? { csr: r.csrPem } : { publicKey: r.publicKeyPem }),
      ...(r.lifetimeMs !== undefined ? { lifetimeMs: r.lifetimeMs } : {}),
    };
  }
  const r = req as IssueRequest;
  if (r.publicKey !== undefined && r.csr !== undefined) {
    throw new CaError('CA_BAD_REQUEST', 'give either publicKey or csr, not both');
  }
  return r;
}

async function publicKeyFromCsr(csr: string | Uint8Array, spiffeId: string): Promise<Buffer> {
  let req: x509.Pkcs10CertificateRequest;
  try {
    req = new x509.Pkcs10CertificateRequest(typeof csr === 'string' ? csr : new Uint8Array(csr));
  } catch (e) {
    throw new CaError('CA_BAD_CSR', 'cannot parse CSR', { cause: e });
  }
  let ok = false;
  try {
    ok = await req.verify();
  } catch (e) {
    throw new CaError('CA_BAD_CSR', 'cannot verify CSR signature', { cause: e });
  }
  if (!ok) throw new CaError('CA_BAD_CSR', 'CSR signature is invalid');
  const san = req.getExtension(x509.SubjectAlternativeNameExtension.NAME) as x509.SubjectAlternativeNameExtension | null;
  const sanExt = san ?? (req.extensions.find((e) => e.type === '2.5.29.17') as x509.SubjectAlternativeNameExtension | undefined);
  if (sanExt) {
    const parsed = new x509.SubjectAlternativeNameExtension(sanExt.rawData);
    for (const n of parsed.names.items) {
      if (n.type === 'url' && n.value !== spiffeId) {
        throw new CaError('CA_CSR_IDENTITY_MISMATCH', `CSR asks for ${n.value}, caller is ${spiffeId}`);
      }
    }
  }
  const k = createPublicKey({ key: Buffer.from(req.publicKey.rawData), format: 'der', type: 'spki' });
  checkWorkloadKey(k);
  return spkiDer(k);
}

function materialFromPems(caCertPem: string, caKeyPem: string, rootPem?: string, chainPem?: string): CaMaterial {
  const caCerts = splitPemCertificates(caCertPem);
  if (caCerts.length === 0) throw new CaError('CA_BAD_PEM', `${CA_CERT_FILE} holds no certificate`);
  const caCert = caCerts[0]!;
  let node: NodeX509;
  try {
    node = new NodeX509(caCert);
  } catch (e) {
    throw new CaError('CA_BAD_PEM', `cannot parse ${CA_CERT_FILE}`, { cause: e });
  }
  if (!node.ca) throw new CaError('CA_NOT_A_CA', `${CA_CERT_FILE} is not a CA certificate (basicConstraints)`);
  if (new Date(node.validTo).getTime() <= Date.now()) {
    throw new CaError('CA_EXPIRED', `${CA_CERT_FILE} expired at ${node.validTo}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(caKeyPem);
  } catch (e) {
    throw new CaError('CA_BAD_PEM', `cannot parse ${CA_KEY_FILE}`, { cause: e });
  }
  if (!spkiDer(createPublicKey(key)).equals(spkiDer(node.publicKey))) {
    throw new CaError('CA_KEY_MISMATCH', `${CA_KEY_FILE} does not match ${CA_CERT_FILE}`);
  }
  const roots = splitPemCertificates(rootPem ?? '');
  if (rootPem !== undefined && roots.length === 0) throw new CaError('CA_BAD_PEM', `${ROOT_CERT_FILE} holds no certificate`);
  const rootList = roots.length > 0 ? roots : [caCert];
  const rootDers = new Set(rootList.map((p) => new NodeX509(p).raw.toString('base64')));
  // Intermediates: ca-cert first, then cert-chain entries, excluding roots/self-signed and duplicates.
  const candidates = [caCert, ...caCerts.slice(1), ...splitPemCertificates(chainPem ?? '')];
  const seen = new Set<string>();
  const intermediates: string[] = [];
  for (const p of candidates) {
    const der = new NodeX509(p).raw.toString('base64');
    if (seen.has(der) || rootDers.has(der) || isSelfSigned(p)) continue;
    seen.add(der);
    intermediates.push(p);
  }
  return { caCertPem: caCert, caKey: key, rootPem: rootList.join(''), intermediatesPem: intermediates };
}

/** A new self-signed ECDSA P-256 root: certificate and PKCS#8 key, PEM (the cluster CA stores them in a Secret). */
export async function createRoot(trustDomain: string, lifetimeDays: number = DEFAULT_ROOT_LIFETIME_DAYS): Promise<{ certPem: string; keyPkcs8Pem: string }> {
  if (!(lifetimeDays > 0)) throw new CaError('CA_BAD_REQUEST', `invalid root lifetime ${lifetimeDays}`);
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = (await subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: [{ O: [trustDomain] }, { CN: ['ambientd root CA'] }],
    notBefore: floorToSecond(now - 3600_000),
    notAfter: floorToSecond(now + lifetimeDays * 86400_000),
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey));
  const keyPkcs8Pem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
  pkcs8.fill(0);
  return { certPem: cert.toString('pem').trim() + '\n', keyPkcs8Pem };
}
