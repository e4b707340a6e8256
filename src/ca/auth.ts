/**
 * Who is calling the CA. An Authenticator turns the bearer token of a
 * request into a Caller: the ServiceAccount the token was issued to and the
 * node the caller runs on. Two implementations:
 *   - KubernetesAuthenticator (auth-kubernetes.ts): a projected, pod-bound
 *     ServiceAccount token checked by TokenReview;
 *   - SandboxAuthenticator (auth-sandbox.ts): the sandbox's stand-in, a
 *     per-node token signed by a sandbox key (there is no API server there).
 * Both fail with a CaServiceError (CA_AUTH_*), answered UNAUTHENTICATED, or
 * CA_AUTH_UNAVAILABLE when the token cannot be checked now.
 */

export interface Caller {
  /** namespace and name of the ServiceAccount the token was issued to */
  namespace: string;
  serviceAccount: string;
  /** the node the caller runs on (the token's node claim, or its pod's spec.nodeName) */
  node: string;
  /** the pod the token is bound to, when it is */
  pod?: { name: string; uid?: string };
  /** how the caller was authenticated (logs) */
  via: 'kubernetes' | 'sandbox';
}

export interface Authenticator {
  readonly kind: 'kubernetes' | 'sandbox';
  /** `token`: the bearer token of the request, undefined when none was sent. */
  authenticate(token: string | undefined): Promise<Caller>;
}

/** "system:serviceaccount:<ns>:<sa>" -> { namespace, serviceAccount }, else undefined. */
export function parseServiceAccountUser(username: string | undefined): { namespace: string; serviceAccount: string } | undefined {
  const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(username ?? '');
  return m ? { namespace: m[1]!, serviceAccount: m[2]! } : undefined;
}

/** The bearer token of an "authorization" metadata value ("Bearer <token>"), else undefined. */
export function bearerToken(values: Array<string | Buffer>): string | undefined {
  for (const v of values) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(String(v));
    if (m) return m[1];
  }
  return undefined;
}
