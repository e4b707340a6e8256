/**
 * The cluster CA's own TLS certificate: a fresh key, signed by the CA it
 * serves, with the DNS names and addresses agents dial (Kubernetes: the
 * Service name ambientd-ca.<ns>.svc; sandbox: its address). Agents verify it
 * with the trust bundle they already hold, so nothing else needs
 * distributing. Made at start-up, in memory, never written to disk, and
 * renewed at half its life (ServingCertificateRenewer).
 */
import { generateKeyPair, X509Certificate } from 'node:crypto';
import net from 'node:net';
import { promisify } from 'node:util';
import type { CertificateAuthority } from '../identity/ca.js';

const generateKeyPairAsync = promisify(generateKeyPair);

export const DEFAULT_SERVING_LIFETIME_MS = 365 * 24 * 3_600_000;
/** what `ambientd ca` uses: renewed at half-life, so a leaked serving key is useful for weeks, not a year */
export const DEFAULT_SERVING_RENEWED_LIFETIME_MS = 30 * 24 * 3_600_000;

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

export interface ServingRenewerOptions {
  signer: Pick<CertificateAuthority, 'issueServer'>;
  names: readonly string[];
  /** lifetime of each serving certificate (default 30 days; bounded by the CA's own) */
  lifetimeMs?: number;
  /** renew when this fraction of the lifetime has passed (default 0.5) */
  renewFraction?: number;
  /** after a failed renewal, try again after this (default 60 s; the current certificate stays) */
  retryMs?: number;
  /** called with each new certificate (CaServer.setServingCertificate) */
  onRenewed: (c: ServingCertificate) => void;
  /** called when a renewal fails (logged by the caller) */
  onError?: (e: unknown) => void;
}

/**
 * Keeps the CA's serving certificate fresh: a new key and certificate at half
 * its life, handed to the server (new handshakes get it). A failed renewal is
 * retried and the current certificate kept; `valid` says whether the one in
 * use has not expired (readiness).
 */
export class ServingCertificateRenewer {
  readonly #o: ServingRenewerOptions;
  #current: ServingCertificate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  renewals = 0;

  constructor(o: ServingRenewerOptions) {
    this.#o = o;
  }

  /** Issues the first certificate (throws if it cannot) and schedules its renewal. */
  async start(): Promise<ServingCertificate> {
    const c = await this.#issue();
    this.#current = c;
    this.#schedule(c);
    return c;
  }

  get current(): ServingCertificate | undefined {
    return this.#current;
  }

  /** a certificate is in use and has not expired */
  get valid(): boolean {
    return this.#current !== undefined && this.#current.notAfter.getTime() > Date.now();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  #issue(): Promise<ServingCertificate> {
    return servingCertificate(this.#o.signer, this.#o.names, this.#o.lifetimeMs ?? DEFAULT_SERVING_RENEWED_LIFETIME_MS);
  }

  #schedule(c: ServingCertificate): void {
    const x509 = new X509Certificate(c.certChainPem);
    const nb = new Date(x509.validFrom).getTime();
    const at = nb + (c.notAfter.getTime() - nb) * (this.#o.renewFraction ?? 0.5);
    this.#arm(Math.max(0, at - Date.now()));
  }

  #arm(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#renew(), Math.min(delayMs, 0x7fffffff));
    this.#timer.unref();
  }

  async #renew(): Promise<void> {
    try {
      const c = await this.#issue();
      if (this.#stopped) return;
      this.#current = c;
      this.renewals++;
      this.#o.onRenewed(c);
      this.#schedule(c);
    } catch (e) {
      this.#o.onError?.(e);
      this.#arm(this.#o.retryMs ?? 60_000);
    }
  }
}
