/**
 * The CA's errors: AmbientErrors with a code per way it fails and a hint.
 */
import { AmbientError, type IdentityCode } from '../util/errors.js';

/** The built-in CA's codes: IdentityCode's CA_* ones, less those of the issuing client (manager.ts) and the agent. */
export type CaErrorCode = Exclude<
  Extract<IdentityCode, `CA_${string}`>,
  'CA_UNAVAILABLE' | 'CA_ISSUE_TIMEOUT' | 'CA_ISSUE_BAD_RESPONSE' | 'CA_ISSUE_FAILED' | 'CA_CLOSED'
>;

const CA_HINTS: Record<CaErrorCode, string> = {
  CA_INCOMPLETE_LAYOUT:
    'caDir holds part of an Istio plug-in CA: it needs at least ca-cert.pem and ca-key.pem (root-cert.pem, cert-chain.pem for an intermediate), or nothing (the agent then creates a root)',
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
