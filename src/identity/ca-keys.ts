/**
 * Keys and PEM for the CA: which signature algorithm a CA key takes, which
 * workload keys it accepts, public keys in their accepted forms, PEM bundles,
 * serial numbers.
 */
import { createPublicKey, randomBytes, X509Certificate as NodeX509, KeyObject } from 'node:crypto';
import { CaError } from './ca-errors.js';

const subtle = globalThis.crypto.subtle;

/** Public key forms accepted by `issue()`: PEM (SPKI), DER SPKI, KeyObject or WebCrypto key. */
export type PublicKeyInput = string | Uint8Array | KeyObject | CryptoKey;

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Splits a PEM bundle into individual certificate PEM blocks (normalised, each ending with \n). */
export function splitPemCertificates(bundle: string): string[] {
  return (bundle.match(PEM_CERT_RE) ?? []).map((b) => b.trim() + '\n');
}

export function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive
  if (b[0] === 0) b[0] = 0x01; // keep 16 significant bytes, never zero
  return b.toString('hex');
}

export function floorToSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

export interface SigningAlg {
  importAlg: RsaHashedImportParams | EcKeyImportParams | Algorithm;
  signAlg: Algorithm | EcdsaParams;
}

export function signingAlgFor(key: KeyObject): SigningAlg {
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

export function toKeyObjectPublic(input: PublicKeyInput): Promise<KeyObject> | KeyObject {
  if (input instanceof KeyObject) {
    return input.type === 'public' ? input : createPublicKey(input);
  }
  if (typeof input === 'string') return createPublicKey(input);
  if (input instanceof Uint8Array) return createPublicKey({ key: Buffer.from(input), format: 'der', type: 'spki' });
  // WebCrypto key
  return subtle.exportKey('spki', input as CryptoKey).then((der) => createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' }));
}

export function checkWorkloadKey(k: KeyObject): void {
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

export function spkiDer(k: KeyObject): Buffer {
  return k.export({ format: 'der', type: 'spki' });
}

export function isSelfSigned(pem: string): boolean {
  try {
    const c = new NodeX509(pem);
    return c.subject === c.issuer && c.verify(c.publicKey);
  } catch {
    return false;
  }
}
