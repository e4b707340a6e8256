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
