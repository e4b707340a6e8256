/**
 * The cluster CA's gRPC server: Istio's IstioCertificateService over TLS.
 * Stateless: every replica signs with the same CA material and reads the
 * same pod index, so replicas need no coordination to serve.
 *
 * One CreateCertificate:
 *   1. the pod index must be synced (else UNAVAILABLE, CA_NOT_READY);
 *   2. the bearer token ("authorization" metadata) is authenticated
 *      (Authenticator: who, on which node);
 *   3. node authorization (authorize.ts) picks the identity, from the
 *      caller's ServiceAccount or request.metadata.ImpersonatedIdentity;
 *   4. the CSR is checked (csr.ts: no extra SANs, no CA flag, no other trust
 *      domain: refused, not sanitised) and signed for validity_duration
 *      seconds (0: the default; above the maximum: clamped to it);
 *   5. the answer is cert_chain: leaf, intermediates, root (root last).
 * Every answer is counted in ambientd_ca_requests_total{result,code}; a
 * refusal is logged (once per code, node and identity at warn, later at
 * debug) with its reason, which the caller also gets in the status details
 * and the "ambientd-error-code" trailer.
 */
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { Counter, Histogram, Registry } from 'prom-client';
import type { CertificateAuthority } from '../identity/ca.js';
import { CaError } from '../identity/ca-errors.js';
import { splitPemCertificates } from '../identity/ca-keys.js';
import { AmbientError, errorMessage } from '../util/errors.js';
import { Logger } from '../util/log.js';
import { bearerToken, type Authenticator, type Caller } from './auth.js';
import { authorize } from './authorize.js';
import { checkCsr } from './csr.js';
import { CaServiceError, ERROR_CODE_METADATA, grpcStatusOf } from './errors.js';
import type { NodePodIndex } from './pod-index.js';
import { IMPERSONATED_IDENTITY, loadCaService, structString, type IstioCertificateRequest, type IstioCertificateResponse } from './proto.js';

export const DEFAULT_MAX_CERT_LIFETIME_MS = 7 * 24 * 3_600_000;
export const DEFAULT_CERT_LIFETIME_MS = 24 * 3_600_000;
/** Largest CreateCertificate request accepted (RESOURCE_EXHAUSTED above). */
export const MAX_REQUEST_BYTES = 64 * 1024;

export interface CaServerOptions {
  /** the signer: CA material loaded from a plug-in layout or created */
  signer: Pick<CertificateAuthority, 'issue' | 'rootPem' | 'trustDomain' | 'intermediatesPem'>;
  authenticator: Authenticator;
  pods: NodePodIndex;
  /** "namespace/serviceaccount" of node agents (may ask for other identities) */
  trustedNodeAccounts: readonly string[];
  /** the server's own TLS certificate chain and key (PEM) */
  tls: { certChainPem: string; keyPem: string };
  /** lifetime when the request asks for none (validity_duration 0) */
  defaultCertLifetimeMs?: number;
  /** longer requests are clamped to this */
  maxCertLifetimeMs?: number;
  log?: Logger;
  /** where the CA's metrics go (default: a registry of its own) */
  registry?: Registry;
}

export type RequestResult = 'issued' | 'refused' | 'failed';

export class CaServer {
  readonly registry: Registry;
  readonly #o: CaServerOptions;
  readonly #log: Logger;
  readonly #trusted: ReadonlySet<string>;
  // a CSR is about 1 KiB: a 64 KiB cap keeps a caller from making the CA parse megabytes
  readonly #server = new grpc.Server({ 'grpc.max_receive_message_length': MAX_REQUEST_BYTES });
  readonly #requests: Counter<'result' | 'code'>;
  readonly #duration: Histogram<'result'>;
  #port = 0;
  readonly #identity = new MemoryIdentityProvider();

  constructor(o: CaServerOptions) {
    this.#o = o;
    this.#identity.set(o.tls);
    this.#log = o.log ?? new Logger('ambientd.ca', 'info');
    this.#trusted = new Set(o.trustedNodeAccounts);
    this.registry = o.registry ?? new Registry();
    this.#requests = new Counter({
      name: 'ambientd_ca_requests_total',
      help: 'CreateCertificate requests by result (issued, refused: the caller may not have it, failed: the CA could not decide or sign) and error code',
      labelNames: ['result', 'code'],
      registers: [this.registry],
    });
    this.#duration = new Histogram({
      name: 'ambientd_ca_request_duration_seconds',
      help: 'CreateCertificate handling time (authentication, authorization, signing)',
      labelNames: ['result'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry],
    });
    const { definition } = loadCaService();
    this.#server.addService(definition, {
      CreateCertificate: (call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>, cb: grpc.sendUnaryData<IstioCertificateResponse>) => {
        void this.#handle(call, cb);
      },
    });
  }

  /** Listens on `address` ("host:port", port 0 for any); resolves with the port. */
  listen(address: string): Promise<number> {
    // a certificate provider, not fixed credentials: setServingCertificate() swaps the certificate of the bound
    // server (new handshakes get the new one). grpc-js's createCertificateProviderServerCredentials hands its
    // first argument to the constructor as the identity provider (its own argument names say "ca" first):
    // (identity, no client-certificate provider, no client certificate required).
    const creds = grpc.experimental.createCertificateProviderServerCredentials(this.#identity, null as unknown as grpc.experimental.CertificateProvider, false);
    return new Promise((resolve, reject) => {
      this.#server.bindAsync(address, creds, (err, port) => {
        if (err) return reject(new CaServiceError('CA_SERVER_CONFIG', `cannot listen on ${address}: ${err.message}`, { cause: err }));
        this.#port = port;
        resolve(port);
      });
    });
  }

  /** Serves a new TLS certificate (a renewal): handshakes from now on get it; established connections keep theirs. */
  setServingCertificate(tls: { certChainPem: string; keyPem: string }): void {
    this.#identity.set(tls);
  }

  get port(): number {
    return this.#port;
  }

  /** Stops accepting; in-flight calls finish (forced after `graceMs`). */
  close(graceMs = 5000): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      t.unref();
      this.#server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  async #handle(
    call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
    cb: grpc.sendUnaryData<IstioCertificateResponse>,
  ): Promise<void> {
    const started = process.hrtime.bigint();
    const req = call.request;
    const requested = structString(req.metadata, IMPERSONATED_IDENTITY);
    let caller: Caller | undefined;
    try {
      if (!this.#o.pods.synced) throw new CaServiceError('CA_NOT_READY', 'the pod index is not synced yet');
      caller = await this.#o.authenticator.authenticate(bearerToken(call.metadata.get('authorization')));
      const grant = authorize(caller, requested, { trustDomain: this.#o.signer.trustDomain, trustedNodeAccounts: this.#trusted, pods: this.#o.pods });
      const csr = typeof req.csr === 'string' ? req.csr : '';
      // the CSR is parsed and its signature verified once, here; the signer gets its key
      const publicKey = await checkCsr(csr, grant.identity, this.#o.signer.trustDomain);
      const issued = await this.#o.signer.issue({ spiffeId: grant.identity, publicKey, lifetimeMs: this.#lifetime(req.validity_duration) });
      const chain = [...splitPemCertificates(issued.chainPem), rootOf(issued.chainPem, issued.rootPem)];
      this.#finish(started, 'issued', 'OK');
      this.#log.info('certificate issued', {
        identity: grant.identity,
        node: caller.node,
        caller: `${caller.namespace}/${caller.serviceAccount}`,
        ...(grant.impersonated ? { pods: grant.pods.slice(0, 5) } : {}),
        serial: issued.serial,
        notAfter: issued.notAfter.toISOString(),
      });
      cb(null, { cert_chain: chain });
    } catch (e) {
      const code = grpcStatusOf(e);
      const errCode = e instanceof AmbientError ? e.code : 'INTERNAL';
      const refused = code === grpc.status.UNAUTHENTICATED || code === grpc.status.PERMISSION_DENIED || code === grpc.status.INVALID_ARGUMENT;
      this.#finish(started, refused ? 'refused' : 'failed', errCode);
      const fields = {
        code: errCode,
        error: errorMessage(e),
        ...(caller ? { node: caller.node, caller: `${caller.namespace}/${caller.serviceAccount}` } : {}),
        ...(requested ? { requested } : {}),
        ...(errCode === 'CA_NODE_DENIED' && requested ? { runsOn: this.#o.pods.nodesOf(requested) } : {}),
        ...(e instanceof AmbientError ? { hint: e.hint } : { stack: (e as Error)?.stack }),
      };
      if (refused) this.#log.once(`${errCode}\0${caller?.node ?? ''}\0${requested ?? ''}`, 'warn', 'certificate request refused', fields);
      else this.#log.warn('certificate request failed', fields);
      const md = new grpc.Metadata();
      md.set(ERROR_CODE_METADATA, errCode);
      const details = e instanceof AmbientError ? `${e.code}: ${e.message}` : 'internal error (see the CA log)';
      cb({ code, details, metadata: md });
    }
  }

  #lifetime(validity: string | number | undefined): number {
    const max = this.#o.maxCertLifetimeMs ?? DEFAULT_MAX_CERT_LIFETIME_MS;
    const seconds = Number(validity ?? 0);
    if (!Number.isFinite(seconds) || seconds < 0)
      throw new CaError('CA_BAD_REQUEST', `validity_duration must be a number of seconds >= 0, got ${String(validity)}`);
    if (seconds === 0) return Math.min(this.#o.defaultCertLifetimeMs ?? DEFAULT_CERT_LIFETIME_MS, max);
    return Math.min(seconds * 1000, max);
  }

  #finish(started: bigint, result: RequestResult, code: string): void {
    this.#requests.inc({ result, code });
    this.#duration.observe({ result }, Number(process.hrtime.bigint() - started) / 1e9);
  }
}

/** The root that ends `chainPem`: the one of `rootsPem` that signed the chain's last certificate (else the first root). */
export function rootOf(chainPem: string, rootsPem: string): string {
  const chain = splitPemCertificates(chainPem);
  const roots = splitPemCertificates(rootsPem);
  const last = chain.length > 0 ? new X509Certificate(chain[chain.length - 1]!) : undefined;
  if (last) {
    for (const r of roots) {
      const root = new X509Certificate(r);
      if (last.checkIssued(root) && last.verify(root.publicKey)) return r;
    }
  }
  if (roots.length === 0) throw new CaServiceError('CA_SERVER_CONFIG', 'the CA has no root certificate');
  return roots[0]!;
}

/** The CA's serving certificate as a grpc-js certificate provider: set() reaches every listener (the bound server). */
class MemoryIdentityProvider implements grpc.experimental.CertificateProvider {
  #latest: grpc.experimental.IdentityCertificateUpdate | null = null;
  readonly #listeners = new Set<grpc.experimental.IdentityCertificateUpdateListener>();

  set(tls: { certChainPem: string; keyPem: string }): void {
    this.#latest = { certificate: Buffer.from(tls.certChainPem), privateKey: Buffer.from(tls.keyPem) };
    for (const l of this.#listeners) l(this.#latest);
  }
  addIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.#listeners.add(l);
    // later, not now: grpc-js registers its own watcher only after adding this listener
    queueMicrotask(() => {
      if (this.#latest && this.#listeners.has(l)) l(this.#latest);
    });
  }
  removeIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.#listeners.delete(l);
  }
  addCaCertificateListener(): void {
    // no client certificates: callers authenticate with a bearer token
  }
  removeCaCertificateListener(): void {}
}
