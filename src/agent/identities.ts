/**
 * Where the agent's workload certificates come from:
 *   - caAddress set: the cluster CA (`ambientd ca`, or istiod), through
 *     RemoteCaIssuer: the node holds no CA key;
 *   - else the built-in CA in caDir (the zero-configuration default for one
 *     node and the sandbox's quick mode): loaded or created, then warmed up.
 * Either way one IdentityManager renews at half-life, backs off, and keeps a
 * still-valid certificate when renewal fails.
 */
import { generateKeyPair } from 'node:crypto';
import fs from 'node:fs';
import { promisify } from 'node:util';
import type { AgentConfig } from '../config/config.js';
import { CertificateAuthority } from '../identity/ca.js';
import { IdentityManager } from '../identity/manager.js';
import { AmbientError } from '../util/errors.js';
import type { Logger } from '../util/log.js';

/** An ECDSA P-256 key pair in PEM (for the X.509 warm-up at start). */
const generateEcKey = (): Promise<{ publicKey: string }> =>
  promisify(generateKeyPair)('ec', {
    namedCurve: 'P-256',
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  }) as Promise<{ publicKey: string; privateKey: string }>;

export async function openIdentities(
  cfg: Pick<AgentConfig, 'caAddress' | 'caRootCert' | 'caTokenFile' | 'clusterId' | 'caDir' | 'trustDomain' | 'certLifetimeMs'>,
  log: Logger,
): Promise<IdentityManager> {
  if (cfg.caAddress !== null) {
    // loaded only with a cluster CA: the built-in path needs no gRPC
    const { RemoteCaIssuer } = await import('../identity/ca-client.js');
    const issuer = new RemoteCaIssuer({
      address: cfg.caAddress,
      rootFile: cfg.caRootCert,
      tokenFile: cfg.caTokenFile,
      ...(cfg.clusterId !== null ? { clusterId: cfg.clusterId } : {}),
    });
    log.info('certificates from the cluster CA', {
      caAddress: cfg.caAddress,
      caRootCert: cfg.caRootCert,
      caTokenFile: cfg.caTokenFile,
      clusterId: cfg.clusterId,
    });
    return new IdentityManager({ issuer, lifetimeMs: cfg.certLifetimeMs });
  }
  const ca = await CertificateAuthority.loadOrCreate(cfg.caDir, { trustDomain: cfg.trustDomain }).catch((e: Error) => {
    throw new AmbientError(
      'CA_UNAVAILABLE',
      `built-in CA at ${cfg.caDir}: ${e.message}`,
      'the CA directory must be writable by the agent (or hold an Istio plug-in CA: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)',
      { cause: e },
    );
  });
  const identities = new IdentityManager({ issuer: ca, lifetimeMs: cfg.certLifetimeMs });
  // Warm the key generation and X.509 code once before serving: the first
  // issuance compiles a lot of JavaScript, and would otherwise delay the first
  // enrollment by a few hundred ms.
  await ca
    .issue({
      spiffeId: `spiffe://${cfg.trustDomain}/ns/ambientd-system/sa/ambientd-warmup`,
      publicKey: (await generateEcKey()).publicKey,
      lifetimeMs: 60_000,
    })
    .catch(() => undefined);
  return identities;
}

/**
 * The agent's own SPIFFE id, from the subject of its CA token (a projected
 * ServiceAccount token or the sandbox's node token: both JWTs with
 * sub "system:serviceaccount:<ns>:<sa>"); null if the file is not such a
 * token. The payload is only read, not verified: the CA verifies it.
 */
export function ownIdentityFromToken(tokenFile: string, trustDomain: string): string | null {
  try {
    const payload = fs.readFileSync(tokenFile, 'utf8').trim().split('.')[1] ?? '';
    const sub = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { sub?: unknown }).sub;
    const m = typeof sub === 'string' ? /^system:serviceaccount:([a-z0-9][-a-z0-9]*):([a-z0-9][-a-z0-9.]*)$/.exec(sub) : null;
    return m ? `spiffe://${trustDomain}/ns/${m[1]}/sa/${m[2]}` : null;
  } catch {
    return null;
  }
}

/**
 * With a cluster CA: resolves once the agent can get a certificate (its own
 * identity, which any authenticated ServiceAccount may have), so readiness
 * means "certificates can be had": token, trust bundle, address and the CA
 * all work. Retries every retryMs (failures back off in the IdentityManager)
 * until it succeeds or active() turns false; logs the reason once.
 */
export async function waitForCertificates(
  identities: IdentityManager,
  cfg: Pick<AgentConfig, 'caTokenFile' | 'trustDomain'>,
  log: Logger,
  active: () => boolean,
  retryMs = 250,
): Promise<boolean> {
  let reported = false;
  while (active()) {
    const own = ownIdentityFromToken(cfg.caTokenFile, cfg.trustDomain);
    try {
      if (own === null)
        throw new AmbientError(
          'CA_CLIENT_CONFIG',
          `${cfg.caTokenFile} is not a ServiceAccount token (JWT with sub system:serviceaccount:NS:SA)`,
          'give the agent its projected CA token (caTokenFile)',
        );
      await identities.get(own);
      identities.forget(own);
      if (reported) log.info('the cluster CA issues certificates again');
      return true;
    } catch (e) {
      if (!reported) log.warn('not ready: no certificate from the cluster CA yet (retrying)', { error: e });
      reported = true;
    }
    await new Promise((r) => setTimeout(r, retryMs));
  }
  return false;
}
