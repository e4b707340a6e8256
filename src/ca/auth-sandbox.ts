/**
 * The sandbox's stand-in for Kubernetes' projected ServiceAccount tokens
 * (there is no API server in the sandbox): a JWT signed with Ed25519 by a
 * sandbox key, one per node agent, with the claims of a bound Kubernetes
 * token (sub "system:serviceaccount:<ns>:<sa>", aud, exp, and
 * "kubernetes.io": { namespace, serviceaccount, node, pod }).
 *
 * The CA holds only the public key: it can check tokens, not mint them. The
 * private key stays with whoever sets the sandbox up, which gives each agent
 * only its own node's token. A node that leaks its token leaks its own
 * node's identities, nothing more (the same as a stolen Kubernetes token).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { CaServiceError } from './errors.js';
import { parseServiceAccountUser, type Authenticator, type Caller } from './auth.js';

export const SANDBOX_TOKEN_ISSUER = 'ambientd-sandbox';

export interface SandboxTokenClaims {
  iss: string;
  sub: string;
  aud: string[];
  iat: number;
  nbf: number;
  exp: number;
  'kubernetes.io': {
    namespace: string;
    serviceaccount: { name: string };
    node: { name: string };
    pod?: { name: string; uid?: string };
  };
}

export interface MintOptions {
  namespace: string;
  serviceAccount: string;
  node: string;
  pod?: { name: string; uid?: string };
  audience: string | string[];
  /** default 24 h */
  lifetimeMs?: number;
  /** default Date.now() (tests make expired tokens with it) */
  now?: number;
  issuer?: string;
}

const b64u = (b: Buffer | string): string => Buffer.from(b).toString('base64url');
const HEADER = b64u(JSON.stringify({ alg: 'EdDSA', typ: 'JWT' }));

/** A new sandbox key pair (PEM): the private key mints node tokens, the public key goes to the CA. */
export function generateSandboxKey(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }) as string,
  };
}

/** Mints a node token (what the sandbox gives one node's agent). */
export function mintSandboxToken(privateKey: KeyObject | string, o: MintOptions): string {
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  const now = Math.floor((o.now ?? Date.now()) / 1000);
  const claims: SandboxTokenClaims = {
    iss: o.issuer ?? SANDBOX_TOKEN_ISSUER,
    sub: `system:serviceaccount:${o.namespace}:${o.serviceAccount}`,
    aud: Array.isArray(o.audience) ? o.audience : [o.audience],
    iat: now,
    nbf: now,
    exp: now + Math.floor((o.lifetimeMs ?? 24 * 3_600_000) / 1000),
    'kubernetes.io': {
      namespace: o.namespace,
      serviceaccount: { name: o.serviceAccount },
      node: { name: o.node },
      ...(o.pod ? { pod: o.pod } : {}),
    },
  };
  const signed = `${HEADER}.${b64u(JSON.stringify(claims))}`;
  return `${signed}.${b64u(sign(null, Buffer.from(signed), key))}`;
}

export interface SandboxAuthenticatorOptions {
  /** the sandbox public key (PEM or KeyObject), Ed25519 */
  publicKey: KeyObject | string;
  /** the audience the token must carry */
  audience: string;
  issuer?: string;
  /** tolerated clock difference for exp/nbf (default 60 s) */
  clockSkewMs?: number;
  now?: () => number;
}

export class SandboxAuthenticator implements Authenticator {
  readonly kind = 'sandbox' as const;
  readonly #key: KeyObject;
  readonly #audience: string;
  readonly #issuer: string;
  readonly #skewMs: number;
  readonly #now: () => number;

  constructor(o: SandboxAuthenticatorOptions) {
    const key = typeof o.publicKey === 'string' ? createPublicKey(o.publicKey) : o.publicKey;
    if (key.asymmetricKeyType !== 'ed25519')
      throw new CaServiceError('CA_SERVER_CONFIG', `the sandbox token key must be Ed25519, got ${key.asymmetricKeyType}`);
    this.#key = key;
    this.#audience = o.audience;
    this.#issuer = o.issuer ?? SANDBOX_TOKEN_ISSUER;
    this.#skewMs = o.clockSkewMs ?? 60_000;
    this.#now = o.now ?? Date.now;
  }

  async authenticate(token: string | undefined): Promise<Caller> {
    if (!token) throw new CaServiceError('CA_AUTH_MISSING', 'no bearer token');
    const parts = token.split('.');
    if (parts.length !== 3) throw new CaServiceError('CA_AUTH_INVALID', 'the token is not a JWT (three dot-separated parts)');
    const [h, p, s] = parts as [string, string, string];
    let header: { alg?: unknown };
    let claims: Partial<SandboxTokenClaims>;
    try {
      header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as { alg?: unknown };
      claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Partial<SandboxTokenClaims>;
    } catch {
      throw new CaServiceError('CA_AUTH_INVALID', 'the token header or claims are not base64url JSON');
    }
    if (header.alg !== 'EdDSA') throw new CaServiceError('CA_AUTH_INVALID', `the token is signed with ${String(header.alg)}, not EdDSA`);
    if (!verify(null, Buffer.from(`${h}.${p}`), this.#key, Buffer.from(s, 'base64url')))
      throw new CaServiceError('CA_AUTH_INVALID', 'the token signature does not verify with the sandbox key');
    if (claims.iss !== this.#issuer) throw new CaServiceError('CA_AUTH_INVALID', `the token issuer is ${JSON.stringify(claims.iss)}, not ${this.#issuer}`);
    const now = this.#now();
    if (typeof claims.exp !== 'number' || claims.exp * 1000 + this.#skewMs <= now)
      throw new CaServiceError(
        'CA_AUTH_EXPIRED',
        `the token expired at ${typeof claims.exp === 'number' ? new Date(claims.exp * 1000).toISOString() : '(no exp)'}`,
      );
    if (typeof claims.nbf === 'number' && claims.nbf * 1000 - this.#skewMs > now)
      throw new CaServiceError('CA_AUTH_INVALID', `the token is not valid before ${new Date(claims.nbf * 1000).toISOString()}`);
    const aud = Array.isArray(claims.aud) ? claims.aud : typeof claims.aud === 'string' ? [claims.aud] : [];
    if (!aud.includes(this.#audience))
      throw new CaServiceError('CA_AUTH_AUDIENCE', `the token is for audience ${JSON.stringify(aud)}, the CA expects ${JSON.stringify(this.#audience)}`);
    const sa = parseServiceAccountUser(claims.sub);
    const k8s = claims['kubernetes.io'];
    if (!sa || k8s?.namespace !== sa.namespace || k8s?.serviceaccount?.name !== sa.serviceAccount)
      throw new CaServiceError('CA_AUTH_INVALID', `the token subject ${JSON.stringify(claims.sub)} is not a ServiceAccount matching its kubernetes.io claims`);
    const node = k8s.node?.name;
    if (typeof node !== 'string' || node === '') throw new CaServiceError('CA_AUTH_NO_NODE', 'the token has no node claim');
    const pod = k8s.pod && typeof k8s.pod.name === 'string' ? { name: k8s.pod.name, ...(k8s.pod.uid ? { uid: k8s.pod.uid } : {}) } : undefined;
    return { ...sa, node, ...(pod ? { pod } : {}), via: 'sandbox' };
  }
}
