/**
 * Workload certificate cache: one key + certificate per SPIFFE id, renewed
 * in the background at a fraction of the lifetime (default half-life).
 *
 * Private keys live only in memory, are never logged, never emitted in events
 * and never returned by list(). On WorkloadCert objects `keyPem` is a
 * non-enumerable property so JSON.stringify / util.inspect do not show it.
 */
import { EventEmitter } from 'node:events';
import { generateKeyPair, X509Certificate as NodeX509, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { x509 } from './x509.js';
import { parseSpiffeId, uriSansFromSubjectAltName } from './spiffe.js';
import type { CertificateIssuer, IssuedCertificate } from './ca.js';
import { DEFAULT_WORKLOAD_CERT_LIFETIME_MS } from './ca.js';
import { AmbientError } from '../util/errors.js';

const generateKeyPairAsync = promisify(generateKeyPair);
const subtle = globalThis.crypto.subtle;

export type CertState = 'valid' | 'renewing' | 'expired';

export interface WorkloadCert {
  readonly id: string;
  /** PKCS#8 PEM. Non-enumerable: not serialised, not inspected. */
  readonly keyPem: string;
  readonly certPem: string;
  /** Workload cert + intermediates. Use as TLS `cert`. */
  readonly chainPem: string;
  /** Trust root(s). Use as TLS `ca`. */
  readonly rootPem: string;
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly state: CertState;
}

/** What list() returns (config_dump); never contains key material. */
export interface CertificateInfo {
  id: string;
  serial: string | null;
  notBefore: string | null;
  notAfter: string | null;
  state: CertState | 'pending';
  /** When the next renewal (or retry) is scheduled, ISO time. */
  nextRenewal: string | null;
  failedAttempts: number;
  lastError: string | null;
  chainPem: string | null;
  rootPem: string | null;
}

export interface IdentityManagerOptions {
  issuer: CertificateIssuer;
  /** Requested certificate lifetime. Default 24 h. */
  lifetimeMs?: number;
  /** Renew when this fraction of the lifetime has elapsed. Default 0.5. */
  renewFraction?: number;
  /** Retry back-off after a failed renewal: initial (default 1 s) doubling up to max (default 5 min). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Abort an issuer call after this long. Default 30 s. */
  issueTimeoutMs?: number;
  /**
   * A first issuance that failed (no certificate yet: the CA is down, or
   * refuses) is retried in the background with the same doubling back-off,
   * capped at this (default 30 s), so a pod gets its certificate soon after
   * the CA is back without waiting for a connection. Meanwhile get() fails
   * at once with the last error instead of asking the CA again.
   */
  pendingBackoffMaxMs?: number;
}

export interface IssuedEvent {
  id: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  renewal: boolean;
}
export interface RenewalFailedEvent {
  id: string;
  error: Error;
  attempt: number;
  retryInMs: number;
  /** Serial of the certificate still in use. */
  currentSerial: string;
  currentNotAfter: Date;
}
/** A first issuance failed: the identity has no certificate (its connections fail closed); retried in retryInMs. */
export interface IssueFailedEvent {
  id: string;
  error: Error;
  attempt: number;
  retryInMs: number;
}
export interface ExpiredEvent {
  id: string;
  serial: string;
  notAfter: Date;
}

export interface IdentityManagerEvents {
  issued: [IssuedEvent];
  renewalFailed: [RenewalFailedEvent];
  issueFailed: [IssueFailedEvent];
  expired: [ExpiredEvent];
}

export class IdentityManagerClosedError extends AmbientError {
  declare readonly code: 'CA_CLOSED';
  constructor() {
    super('CA_CLOSED', 'IdentityManager is closed', 'the agent is stopping: no certificate is issued any more');
    this.name = 'IdentityManagerClosedError';
  }
}

export type CertificateIssueCode = 'CA_ISSUE_TIMEOUT' | 'CA_ISSUE_BAD_RESPONSE' | 'CA_ISSUE_FAILED';

const ISSUE_HINTS: Record<CertificateIssueCode, string> = {
  CA_ISSUE_TIMEOUT: 'the CA did not answer in time: an overloaded node, or a stuck CA lock in caDir',
  CA_ISSUE_BAD_RESPONSE: 'the CA returned a certificate that does not fit the request: check the CA in caDir',
  CA_ISSUE_FAILED: 'the CA refused to issue (see the cause): check the CA in caDir and the identity asked for',
};

export class CertificateIssueError extends AmbientError {
  declare readonly code: CertificateIssueCode;
  constructor(code: CertificateIssueCode, message: string, options?: { cause?: unknown }) {
    super(code, message, ISSUE_HINTS[code], options?.cause !== undefined ? { cause: options.cause } : {});
    this.name = 'CertificateIssueError';
  }
}

interface Held {
  keyPem: string;
  issued: IssuedCertificate;
  renewAt: number;
}

interface Entry {
  id: string;
  current: Held | undefined;
  inflight: Promise<Held> | undefined;
  renewTimer: NodeJS.Timeout | undefined;
  expiryTimer: NodeJS.Timeout | undefined;
  failures: number;
  lastError: string | undefined;
  nextRenewalAt: number | undefined;
}

const MAX_TIMER_MS = 0x7fffffff;

/** setTimeout that handles delays beyond 24.8 days and is always unref'd. */
function longTimer(at: number, fn: () => void, set: (t: NodeJS.Timeout) => void): NodeJS.Timeout {
  const delay = Math.max(0, at - Date.now());
  const t = setTimeout(
    () => {
      if (Date.now() + 5 < at) longTimer(at, fn, set);
      else fn();
    },
    Math.min(delay, MAX_TIMER_MS),
  );
  t.unref();
  set(t);
  return t;
}

export class IdentityManager extends EventEmitter<IdentityManagerEvents> {
  readonly #issuer: CertificateIssuer;
  readonly #lifetimeMs: number;
  readonly #renewFraction: number;
  readonly #backoffInitialMs: number;
  readonly #backoffMaxMs: number;
  readonly #issueTimeoutMs: number;
  readonly #pendingBackoffMaxMs: number;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(opts: IdentityManagerOptions) {
    super();
    this.#issuer = opts.issuer;
    this.#lifetimeMs = opts.lifetimeMs ?? DEFAULT_WORKLOAD_CERT_LIFETIME_MS;
    this.#renewFraction = opts.renewFraction ?? 0.5;
    if (!(this.#renewFraction > 0 && this.#renewFraction < 1))
      throw new AmbientError(
        'CA_BAD_REQUEST',
        `renewFraction must be in (0,1), got ${this.#renewFraction}`,
        'renew at a fraction of the lifetime strictly between 0 and 1 (default 0.5)',
      );
    this.#backoffInitialMs = opts.backoffInitialMs ?? 1000;
    this.#backoffMaxMs = opts.backoffMaxMs ?? 300_000;
    this.#issueTimeoutMs = opts.issueTimeoutMs ?? 30_000;
    this.#pendingBackoffMaxMs = Math.min(this.#backoffMaxMs, opts.pendingBackoffMaxMs ?? 30_000);
  }

  /**
   * Returns the cached certificate for `id`, issuing one if needed. Concurrent
   * calls share one issuance. A cached certificate is returned while renewal
   * is pending or failing; once it has expired, get() waits for a fresh
   * issuance and rejects if that fails.
   */
  async get(id: string): Promise<WorkloadCert> {
    if (this.#closed) throw new IdentityManagerClosedError();
    parseSpiffeId(id); // throws SpiffeIdError
    let e = this.#entries.get(id);
    if (!e) {
      e = {
        id,
        current: undefined,
        inflight: undefined,
        renewTimer: undefined,
        expiryTimer: undefined,
        failures: 0,
        lastError: undefined,
        nextRenewalAt: undefined,
      };
      this.#entries.set(id, e);
    }
    const cur = e.current;
    if (cur && Date.now() < cur.issued.notAfter.getTime()) return this.#snapshot(e, cur);
    // no certificate yet and the last try failed: fail at once until the background retry (back-off)
    if (!cur && !e.inflight && e.failures > 0 && e.nextRenewalAt !== undefined && Date.now() < e.nextRenewalAt)
      throw new CertificateIssueError(
        'CA_ISSUE_FAILED',
        `no certificate for ${id} yet (attempt ${e.failures} failed: ${e.lastError}); retrying in the background`,
      );
    const held = await this.#issue(e);
    return this.#snapshot(e, held);
  }

  /** Synchronous cache lookup (no issuance). */
  peek(id: string): WorkloadCert | undefined {
    const e = this.#entries.get(id);
    return e?.current ? this.#snapshot(e, e.current) : undefined;
  }

  /** Stops renewing `id` and drops its key (e.g. the last pod using it is gone). */
  forget(id: string): boolean {
    const e = this.#entries.get(id);
    if (!e) return false;
    this.#clearTimers(e);
    this.#entries.delete(id);
    return true;
  }

  /** For config_dump. Never includes private keys. */
  list(): CertificateInfo[] {
    const out: CertificateInfo[] = [];
    for (const e of this.#entries.values()) {
      const c = e.current?.issued;
      out.push({
        id: e.id,
        serial: c?.serial ?? null,
        notBefore: c ? c.notBefore.toISOString() : null,
        notAfter: c ? c.notAfter.toISOString() : null,
        state: e.current ? this.#state(e, e.current) : 'pending',
        nextRenewal: e.nextRenewalAt !== undefined ? new Date(e.nextRenewalAt).toISOString() : null,
        failedAttempts: e.failures,
        lastError: e.lastError ?? null,
        chainPem: c?.chainPem ?? null,
        rootPem: c ? (this.#issuer.trustBundle?.() ?? c.rootPem) : null,
      });
    }
    return out;
  }

  /** Stops all timers and closes the issuer; pending get() calls still settle; later get() calls reject. */
  close(): void {
    this.#closed = true;
    for (const e of this.#entries.values()) this.#clearTimers(e);
    this.#entries.clear();
    this.#issuer.close?.();
  }

  get closed(): boolean {
    return this.#closed;
  }

  // -------------------------------------------------------------------------

  #state(e: Entry, h: Held): CertState {
    const now = Date.now();
    if (now >= h.issued.notAfter.getTime()) return 'expired';
    if (now >= h.renewAt || e.inflight !== undefined || e.failures > 0) return 'renewing';
    return 'valid';
  }

  #snapshot(e: Entry, h: Held): WorkloadCert {
    const c = h.issued;
    const snap = {
      id: e.id,
      certPem: c.certPem,
      chainPem: c.chainPem,
      // the roots as they are now (a rotation adds or removes one), else those of issuance
      rootPem: this.#issuer.trustBundle?.() ?? c.rootPem,
      serial: c.serial,
      notBefore: c.notBefore,
      notAfter: c.notAfter,
      state: this.#state(e, h),
    } as WorkloadCert;
    Object.defineProperty(snap, 'keyPem', { value: h.keyPem, enumerable: false, writable: false });
    return Object.freeze(snap);
  }

  #clearTimers(e: Entry): void {
    if (e.renewTimer) clearTimeout(e.renewTimer);
    if (e.expiryTimer) clearTimeout(e.expiryTimer);
    e.renewTimer = undefined;
    e.expiryTimer = undefined;
    e.nextRenewalAt = undefined;
  }

  #live(e: Entry): boolean {
    return !this.#closed && this.#entries.get(e.id) === e;
  }

  #issue(e: Entry): Promise<Held> {
    if (e.inflight) return e.inflight;
    const renewal = e.current !== undefined;
    const p = this.#doIssue(e.id).then(
      (held) => {
        e.inflight = undefined;
        if (!this.#live(e)) return held;
        e.current = held;
        e.failures = 0;
        e.lastError = undefined;
        this.#clearTimers(e);
        e.nextRenewalAt = held.renewAt;
        longTimer(
          held.renewAt,
          () => this.#renewNow(e),
          (t) => (e.renewTimer = t),
        );
        longTimer(
          held.issued.notAfter.getTime(),
          () => this.#onExpiry(e, held),
          (t) => (e.expiryTimer = t),
        );
        this.emit('issued', {
          id: e.id,
          serial: held.issued.serial,
          notBefore: held.issued.notBefore,
          notAfter: held.issued.notAfter,
          renewal,
        });
        return held;
      },
      (err: unknown) => {
        e.inflight = undefined;
        const error = err instanceof Error ? err : new Error(String(err));
        if (!this.#live(e)) throw error;
        e.failures++;
        e.lastError = error.message;
        // exponential back-off; without a certificate at all it retries sooner than a renewal (capped lower)
        const retryInMs = Math.min(e.current ? this.#backoffMaxMs : this.#pendingBackoffMaxMs, this.#backoffInitialMs * 2 ** Math.min(e.failures - 1, 30));
        if (e.renewTimer) clearTimeout(e.renewTimer);
        e.nextRenewalAt = Date.now() + retryInMs;
        longTimer(
          e.nextRenewalAt,
          () => this.#renewNow(e),
          (t) => (e.renewTimer = t),
        );
        if (e.current) {
          // keep the old certificate
          this.emit('renewalFailed', {
            id: e.id,
            error,
            attempt: e.failures,
            retryInMs,
            currentSerial: e.current.issued.serial,
            currentNotAfter: e.current.issued.notAfter,
          });
        } else {
          this.emit('issueFailed', { id: e.id, error, attempt: e.failures, retryInMs });
        }
        throw error;
      },
    );
    e.inflight = p;
    return p;
  }

  #renewNow(e: Entry): void {
    if (!this.#live(e)) return;
    e.renewTimer = undefined;
    this.#issue(e).catch(() => {
      /* reported via 'renewalFailed' and retried */
    });
  }

  #onExpiry(e: Entry, held: Held): void {
    e.expiryTimer = undefined;
    if (!this.#live(e) || e.current !== held) return;
    this.emit('expired', { id: e.id, serial: held.issued.serial, notAfter: held.issued.notAfter });
  }

  async #doIssue(id: string): Promise<Held> {
    const { publicKey, privateKey } = await generateKeyPairAsync('ec', { namedCurve: 'prime256v1' });
    const keyPem = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const publicKeyPem = publicKey.export({ format: 'pem', type: 'spki' }) as string;
    const csrPem = this.#issuer.requiresCsr ? await buildCsr(id, privateKey, publicKey) : undefined;

    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new CertificateIssueError('CA_ISSUE_TIMEOUT', `issuer did not answer within ${this.#issueTimeoutMs} ms`)),
        this.#issueTimeoutMs,
      );
      timer.unref();
    });
    let issued: IssuedCertificate;
    try {
      issued = await Promise.race([
        this.#issuer.issue({
          spiffeId: id,
          publicKeyPem,
          ...(csrPem !== undefined ? { csrPem } : {}),
          lifetimeMs: this.#lifetimeMs,
        }),
        timeout,
      ]);
    } catch (err) {
      if (err instanceof CertificateIssueError) throw err;
      throw new CertificateIssueError('CA_ISSUE_FAILED', `issuing certificate for ${id} failed: ${(err as Error)?.message ?? err}`, {
        cause: err,
      });
    } finally {
      clearTimeout(timer);
    }
    validateIssued(id, issued, privateKey);
    const nb = issued.notBefore.getTime();
    const na = issued.notAfter.getTime();
    const renewAt = nb + Math.floor((na - nb) * this.#renewFraction);
    return { keyPem, issued, renewAt };
  }
}

function validateIssued(id: string, issued: IssuedCertificate, privateKey: KeyObject): void {
  let cert: NodeX509;
  try {
    cert = new NodeX509(issued.certPem);
  } catch (e) {
    throw new CertificateIssueError('CA_ISSUE_BAD_RESPONSE', 'issuer returned an unparsable certificate', { cause: e });
  }
  if (!cert.checkPrivateKey(privateKey)) {
    throw new CertificateIssueError('CA_ISSUE_BAD_RESPONSE', 'issued certificate does not match the generated key');
  }
  if (!uriSansFromSubjectAltName(cert.subjectAltName).includes(id)) {
    throw new CertificateIssueError('CA_ISSUE_BAD_RESPONSE', `issued certificate does not carry URI SAN ${id}`);
  }
  if (!(issued.notAfter instanceof Date) || issued.notAfter.getTime() <= Date.now()) {
    throw new CertificateIssueError('CA_ISSUE_BAD_RESPONSE', 'issued certificate is already expired');
  }
}

/** PKCS#10 CSR with empty subject and the URI SAN, signed by the node:crypto key. */
async function buildCsr(id: string, privateKey: KeyObject, publicKey: KeyObject): Promise<string> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  try {
    const priv = await subtle.importKey('pkcs8', pkcs8, alg, false, ['sign']);
    const pub = await subtle.importKey('spki', publicKey.export({ format: 'der', type: 'spki' }), alg, true, ['verify']);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys: { privateKey: priv, publicKey: pub },
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id }], true)],
    });
    return csr.toString('pem');
  } finally {
    pkcs8.fill(0);
  }
}
