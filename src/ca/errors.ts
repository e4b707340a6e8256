/**
 * Errors of the cluster CA (`ambientd ca`) and of the agent's client of it:
 * AmbientErrors with a stable code (CaServiceCode), a hint, and the gRPC
 * status the server answers with.
 *
 * Status choice (as istiod's): a caller that cannot be authenticated gets
 * UNAUTHENTICATED; an authenticated caller asking for what it may not have
 * gets PERMISSION_DENIED; a malformed request INVALID_ARGUMENT; a CA that
 * cannot decide now (API server down, pod index not synced) UNAVAILABLE, so
 * the agent retries with back-off.
 */
import { status } from '@grpc/grpc-js';
import { AmbientError, type CaServiceCode, type ErrorCode } from '../util/errors.js';

export type { CaServiceCode } from '../util/errors.js';

const HINTS: Record<CaServiceCode, string> = {
  CA_AUTH_MISSING: 'the caller sent no bearer token: the agent sends its node token (caTokenFile) as "authorization: Bearer <token>"',
  CA_AUTH_INVALID: 'the bearer token is not valid (signature, issuer, not a ServiceAccount token): check the token the agent reads from caTokenFile',
  CA_AUTH_EXPIRED: 'the bearer token has expired: projected tokens are refreshed by the kubelet; the agent re-reads caTokenFile on every request',
  CA_AUTH_AUDIENCE: 'the token was minted for another audience: the projected token volume must ask for the audience the CA checks (--token-audience)',
  CA_AUTH_NO_NODE:
    'the token does not say which node the caller runs on: use a projected (pod-bound) ServiceAccount token; Kubernetes >= 1.30 adds the node claim',
  CA_AUTH_UNAVAILABLE: "the CA could not check the token (TokenReview failed): check the API server and the CA's RBAC (tokenreviews create)",
  CA_IMPERSONATION_DENIED:
    "only a trusted node account (--trusted-node-account, the agent's own ServiceAccount) may ask for another identity (ImpersonatedIdentity)",
  CA_NODE_DENIED:
    "a node agent only gets identities of pods scheduled on its own node (spec.nodeName): is the pod on this node, and is the CA's pod index current?",
  CA_FOREIGN_TRUST_DOMAIN: 'the identity asked for is in another trust domain: the CA signs only for its own (--trust-domain)',
  CA_CSR_REJECTED:
    'the CSR asks for more than a workload certificate (extra SANs, a CA flag, another identity): send a CSR with only the URI SAN of the identity',
  CA_NOT_READY: 'the CA has not read its pod index yet: retry (the agent backs off and retries on its own)',
  CA_SERVER_CONFIG: 'fix the flags of `ambientd ca` (`ambientd ca --help`)',
  CA_REMOTE_UNAVAILABLE: 'the cluster CA (caAddress) cannot be reached or cannot decide now: the agent keeps valid certificates and retries with back-off',
  CA_REMOTE_DENIED: 'the cluster CA refused the request (see the reason): check the node token (caTokenFile) and that the pod runs on this node',
  CA_REMOTE_REJECTED: 'the cluster CA found the request malformed (see the reason): a bug in the agent or a CA of another version',
  CA_REMOTE_FAILED: "the cluster CA failed to sign (see the reason): check the CA's log",
  CA_CLIENT_CONFIG: 'the agent cannot read caRootCert or caTokenFile: check the settings and the mounted files',
};

/** The gRPC status each code is answered with. */
const GRPC_STATUS: Partial<Record<ErrorCode, status>> = {
  CA_AUTH_MISSING: status.UNAUTHENTICATED,
  CA_AUTH_INVALID: status.UNAUTHENTICATED,
  CA_AUTH_EXPIRED: status.UNAUTHENTICATED,
  CA_AUTH_AUDIENCE: status.UNAUTHENTICATED,
  CA_AUTH_NO_NODE: status.UNAUTHENTICATED,
  CA_AUTH_UNAVAILABLE: status.UNAVAILABLE,
  CA_IMPERSONATION_DENIED: status.PERMISSION_DENIED,
  CA_NODE_DENIED: status.PERMISSION_DENIED,
  CA_FOREIGN_TRUST_DOMAIN: status.PERMISSION_DENIED,
  CA_CSR_REJECTED: status.INVALID_ARGUMENT,
  CA_NOT_READY: status.UNAVAILABLE,
  // from the signer (src/identity/ca.ts) and SPIFFE parsing
  CA_BAD_CSR: status.INVALID_ARGUMENT,
  CA_CSR_IDENTITY_MISMATCH: status.INVALID_ARGUMENT,
  CA_UNSUPPORTED_KEY: status.INVALID_ARGUMENT,
  CA_BAD_REQUEST: status.INVALID_ARGUMENT,
  SPIFFE_EMPTY: status.INVALID_ARGUMENT,
  SPIFFE_TOO_LONG: status.INVALID_ARGUMENT,
  SPIFFE_BAD_SCHEME: status.INVALID_ARGUMENT,
  SPIFFE_BAD_TRUST_DOMAIN: status.INVALID_ARGUMENT,
  SPIFFE_BAD_PATH: status.INVALID_ARGUMENT,
  SPIFFE_NOT_K8S: status.INVALID_ARGUMENT,
  CA_EXPIRED: status.UNAVAILABLE,
};

export class CaServiceError extends AmbientError {
  declare readonly code: CaServiceCode;
  constructor(code: CaServiceCode, message: string, options?: { cause?: unknown }) {
    super(code, message, HINTS[code], options?.cause !== undefined ? { cause: options.cause } : {});
    this.name = 'CaServiceError';
  }
}

/** The gRPC status for an error the handler met (INTERNAL for anything unexpected). */
export function grpcStatusOf(e: unknown): status {
  if (e instanceof AmbientError) return GRPC_STATUS[e.code] ?? status.INTERNAL;
  return status.INTERNAL;
}

/** What the agent's client makes of a gRPC status the CA answered with. */
export function clientCodeOf(s: status): CaServiceCode {
  switch (s) {
    case status.UNAUTHENTICATED:
    case status.PERMISSION_DENIED:
      return 'CA_REMOTE_DENIED';
    case status.INVALID_ARGUMENT:
      return 'CA_REMOTE_REJECTED';
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
    case status.RESOURCE_EXHAUSTED:
    case status.CANCELLED:
      return 'CA_REMOTE_UNAVAILABLE';
    default:
      return 'CA_REMOTE_FAILED';
  }
}

/** Metadata key carrying the stable code of a refusal (alongside the gRPC status and its details). */
export const ERROR_CODE_METADATA = 'ambientd-error-code';

/** A refusal or failure the cluster CA answered with, as the agent's client sees it. */
export class RemoteCaError extends CaServiceError {
  constructor(
    code: CaServiceCode,
    message: string,
    /** the gRPC status */
    readonly grpcCode: status,
    /** the CA's own code of the refusal (CA_NODE_DENIED, ...), when it sent one */
    readonly serverCode: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.name = 'RemoteCaError';
  }
}
