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
import { createPrivateKey, createPublicKey, randomBytes, X509Certificate as NodeX509, KeyObject } from 'node:crypto';
import { promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { parseSpiffeId, validateTrustDomain } from './spiffe.js';
import { AmbientError } from '../util/errors.js';

const subtle = globalThis.crypto.subtle;

export const CA_CERT_FILE = 'ca-cert.pem';
export const CA_KEY_FILE = 'ca-key.pem';
export const ROOT_CERT_FILE = 'root-cert.pem';
export const CERT_CHAIN_FILE = 'cert-chain.pem';
const LOCK_FILE = '.ambientd-ca.lock';

export const DEFAULT_WORKLOAD_CERT_LIFETIME_MS = 24 * 3600 * 1000;
export const DEFAULT_ROOT_LIFETIME_DAYS = 3650;

export type CaErrorCode =
  | 'CA_INCOMPLETE_LAYOUT'
  | 'CA_BAD_PEM'
  | 'CA_KEY_MISMATCH'
  | 'CA_NOT_A_CA'
  | 'CA_EXPIRED'
  | 'CA_UNSUPPORTED_KEY'
  | 'CA_BAD_CSR'
  | 'CA_CSR_IDENTITY_MISMATCH'
  | 'CA_BAD_REQUEST'
  | 'CA_LOCK_TIMEOUT';

const CA_HINTS: Record<CaErrorCode, string> = {
  CA_INCOMPLETE_LAYOUT: 'caDir holds part of an Istio plug-in CA: it needs at least ca-cert.pem and ca-key.pem (root-cert.pem, cert-chain.pem for an intermediate), or nothing (the agent then creates a root)',
  CA_BAD_PEM: 'a CA file is not PEM the agent can read: regenerate it, or empty caDir to have a root created',
  CA_KEY_MISMATCH: 'ca-key.pem is not the key of ca-cert.pem: put the matching pair in caDir',
  CA_NOT_A_CA: 'ca-cert.pem lacks basicConstraints CA:TRUE: use a CA certificate',
  CA_EXPIRED: 'the CA certificate has expired: rotate the CA in caDir (workload certificates cannot outlive it)',
  CA_UNSUPPORTED_KEY: 'a CA key is ECDSA (P-256, P-384, P-521) or RSA; a workload key ECDSA P-256/P-384 or RSA of at least 2048 bits',
  CA_BAD_CSR: 'the certificate request is malformed or its signature does not verify: a bug in the requester',
  CA_CSR_IDENTITY_MISMATCH: 'a CSR may only ask for the identity of the workload that sends it',
  CA_BAD_REQUEST: 'the request to the CA is invalid (identity outside the trust domain, key, lifetime): a bug in the caller',
  CA_LOCK_TIMEOUT: 'another process holds the CA directory lock: is another agent creating the CA in the same caDir?',
};

export class CaError extends AmbientError {
  declare readonly code: CaErrorCode;
  constructor(code: CaErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, CA_HINTS[code], options?.cause !== undefined ? { cause: options.cause } : {});
    this.name = 'CaError';
  }
}

/** Public key forms accepted by `issue()`: PEM (SPKI), DER SPKI, KeyObject or WebCrypto key. */
export type PublicKeyInput = string | Uint8Array | KeyObject | CryptoKey;

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

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Splits a PEM bundle into individual certificate PEM blocks (normalised, each ending with \n). */
export function splitPemCertificates(bundle: string): string[] {
  return (bundle.match(PEM_CERT_RE) ?? []).map((b) => b.trim() + '\n');
}

function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive
  if (b[0] === 0) b[0] = 0x01; // keep 16 significant bytes, never zero
  return b.toString('hex');
}

function floorToSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

interface SigningAlg {
  importAlg: RsaHashedImportParams | EcKeyImportParams | Algorithm;
  signAlg: Algorithm | EcdsaParams;
}

function signingAlgFor(key: KeyObject): SigningAlg {
  const t = key.asymmetricKeyType;
  if (t === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const map: Record<string, [string, string]> = {
      prime256v1: ['P-256', 'SHA-256'],
      'P-256': ['P-256', 'SHA-256'],
      secp384r1: ['P-384', 'SHA-384'],
      'P-384': ['P-384', 'SHA-384'],
      secp521r1: ['P-521', 'SHA-512'],
      'P-521': ['P-521', 'SHA-512'],
    };
    const m = curve ? map[curve] : undefined;
    if (!m) throw new CaError('CA_UNSUPPORTED_KEY', `unsupported EC curve ${curve}`);
    return {
      importAlg: { name: 'ECDSA', namedCurve: m[0] } as EcKeyImportParams,
      signAlg: { name: 'ECDSA', hash: m[1] } as EcdsaParams,
    };
  }
  if (t === 'rsa') {
    return {
      importAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as RsaHashedImportParams,
      signAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as Algorithm,
    };
  }
  throw new CaError('CA_UNSUPPORTED_KEY', `unsupported CA key type ${t}`);
}

function toKeyObjectPublic(input: PublicKeyInput): Promise<KeyObject> | KeyObject {
  if (input instanceof KeyObject) {
    return input.type === 'public' ? input : createPublicKey(input);
  }
  if (typeof input === 'string') return createPublicKey(input);
  if (input instanceof Uint8Array) return createPublicKey({ key: Buffer.from(input), format: 'der', type: 'spki' });
  // WebCrypto key
  return subtle.exportKey('spki', input as CryptoKey).then((der) =>
    createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' }),
  );
}

function checkWorkloadKey(k: KeyObject): void {
  const t = k.asymmetricKeyType;
  if (t === 'ec') {
    const c = k.asymmetricKeyDetails?.namedCurve;
    if (c === 'prime256v1' || c === 'secp384r1') return;
    throw new CaError('CA_UNSUPPORTED_KEY', `unsupported workload EC curve ${c}`);
  }
  if (t === 'rsa') {
    const bits = k.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits >= 2048) return;
    throw new CaError('CA_UNSUPPORTED_KEY', `RSA workload key too small (${bits} bits)`);
  }
  throw new CaError('CA_UNSUPPORTED_KEY', `unsupported workload key type ${t}`);
}

function spkiDer(k: KeyObject): Buffer {
  return k.export({ format: 'der', type: 'spki' });
}

function isSelfSigned(pem: string): boolean {
  try {
    const c = new NodeX509(pem);
    return c.subject === c.issuer && c.verify(c.publicKey);
  } catch {
    return false;
  }
}

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

  private constructor(
    m: CaMaterial,
    signingKey: CryptoKey,
    signAlg: Algorithm | EcdsaParams,
    trustDomain: string,
    source: CaSource,
    dir: string | undefined,
  ) {
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
    return CertificateAuthority.#fromMaterial(
      materialFromPems(certPem, keyPkcs8Pem, certPem, certPem),
      opts.trustDomain,
      'in-memory',
      undefined,
    );
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

  static async #fromMaterial(
    m: CaMaterial,
    trustDomain: string,
    source: CaSource,
    dir: string | undefined,
  ): Promise<CertificateAuthority> {
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

    const now = Date.now();
    const lifetime = r.lifetimeMs ?? DEFAULT_WORKLOAD_CERT_LIFETIME_MS;
    if (!(lifetime > 0) || !Number.isFinite(lifetime)) throw new CaError('CA_BAD_REQUEST', `invalid lifetime ${lifetime}`);
    let notBefore = r.notBefore ?? floorToSecond(now - Math.min(60_000, Math.floor(lifetime / 20)));
    let notAfter = r.notAfter ?? floorToSecond(now + lifetime);
    if (notAfter.getTime() > this.notAfter.getTime()) notAfter = this.notAfter;
    if (notBefore.getTime() < this.notBefore.getTime()) notBefore = this.notBefore;
    if (notAfter.getTime() <= now && r.notAfter === undefined) {
      throw new CaError('CA_EXPIRED', `CA certificate expired at ${this.notAfter.toISOString()}`);
    }

    const serial = randomSerialHex();
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      // Empty subject => SAN must be critical (RFC 5280 4.2.1.6).
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: r.spiffeId }], true),
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

async function createRoot(trustDomain: string, lifetimeDays: number): Promise<{ certPem: string; keyPkcs8Pem: string }> {
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
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey));
  const keyPkcs8Pem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
  pkcs8.fill(0);
  return { certPem: cert.toString('pem').trim() + '\n', keyPkcs8Pem };
}

// ---------------------------------------------------------------------------
// file helpers

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p, fsc.F_OK);
    return true;
  } catch {
    return false;
  }
}

async function readIfExists(p: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(p, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function writeFileAtomic(p: string, data: string, mode: number): Promise<void> {
  const tmp = `${p}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // umask-proof
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fsp.rename(tmp, p);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** O_EXCL lock file with stale-lock detection (dead pid on this host, or older than 2 min). */
async function acquireLock(lockPath: string, timeoutMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  const token = `${process.pid} ${randomBytes(8).toString('hex')}\n`;
  for (;;) {
    try {
      const fh = await fsp.open(lockPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
      try {
        await fh.writeFile(token);
      } finally {
        await fh.close();
      }
      return async () => {
        const cur = await readIfExists(lockPath);
        if (cur === token) await fsp.rm(lockPath, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Held by someone else: stale?
    try {
      const [content, st] = await Promise.all([readIfExists(lockPath), fsp.stat(lockPath)]);
      const pid = Number.parseInt((content ?? '').split(' ')[0] ?? '', 10);
      const old = Date.now() - st.mtimeMs > 120_000;
      const dead = content !== undefined && content.endsWith('\n') && Number.isInteger(pid) && pid > 0 && !pidAlive(pid);
      if (old || dead) {
        // Re-check content before removing to avoid deleting a fresh lock.
        if ((await readIfExists(lockPath)) === content) await fsp.rm(lockPath, { force: true });
        continue;
      }
    } catch {
      // lock vanished between calls: retry
    }
    if (Date.now() > deadline) throw new CaError('CA_LOCK_TIMEOUT', `timed out waiting for ${lockPath}`);
    await new Promise((r) => setTimeout(r, 25 + Math.floor(Math.random() * 50)));
  }
}
