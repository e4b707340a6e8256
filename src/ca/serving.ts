/**
 * The cluster CA's own TLS certificate: a fresh key, signed by the CA it
 * serves, with the DNS names and addresses agents dial (Kubernetes: the
 * Service name ambientd-ca.<ns>.svc; sandbox: its address). Agents verify it
 * with the trust bundle they already hold, so nothing else needs
 * distributing. Made at start-up, in memory, never written to disk.
 */
import { generateKeyPair } from 'node:crypto';
import net from 'node:net';
import { promisify } from 'node:util';
import type { CertificateAuthority } from '../identity/ca.js';

const generateKeyPairAsync = promisify(generateKeyPair);

export const DEFAULT_SERVING_LIFETIME_MS = 365 * 24 * 3_600_000;

export interface ServingCertificate {
  certChainPem: string;
  keyPem: string;
  notAfter: Date;
}

/** `names`: DNS names and IP addresses (told apart by net.isIP). */
export async function servingCertificate(
  signer: Pick<CertificateAuthority, 'issueServer'>,
  names: readonly string[],
  lifetimeMs = DEFAULT_SERVING_LIFETIME_MS,
): Promise<ServingCertificate> {
  const { publicKey, privateKey } = await generateKeyPairAsync('ec', { namedCurve: 'prime256v1' });
  const issued = await signer.issueServer({
    publicKey,
    dnsNames: names.filter((n) => net.isIP(n) === 0),
    ipAddresses: names.filter((n) => net.isIP(n) !== 0),
    lifetimeMs,
  });
  return { certChainPem: issued.chainPem, keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, notAfter: issued.notAfter };
}
