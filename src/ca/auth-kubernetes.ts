/**
 * Kubernetes authentication of node agents: the agent sends a projected,
 * pod-bound ServiceAccount token (audience --token-audience); the CA asks the
 * API server about it with a TokenReview (authentication.k8s.io/v1) and
 * reads from the answer:
 *   - the ServiceAccount: status.user.username "system:serviceaccount:<ns>:<sa>";
 *   - the pod: extra "authentication.kubernetes.io/pod-name" / "pod-uid";
 *   - the node: extra "authentication.kubernetes.io/node-name" (Kubernetes
 *     >= 1.30 puts it in bound tokens), else the spec.nodeName of the bound
 *     pod in the CA's pod index, whose uid must match the token's.
 * An accepted token is remembered for cacheTtlMs (30 s) by its SHA-256, so an
 * agent asking for many identities at once costs one TokenReview.
 * A token the API server does not accept is refused with its reason; one for
 * another audience (status.audiences) too. An API server that cannot be
 * asked gives CA_AUTH_UNAVAILABLE (UNAVAILABLE: the agent retries).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { PodInfo } from '../discovery/model.js';
import { CaServiceError } from './errors.js';
import { parseServiceAccountUser, type Authenticator, type Caller } from './auth.js';

export const TOKEN_REVIEW_PATH = '/apis/authentication.k8s.io/v1/tokenreviews';
export const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
export const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';
export const EXTRA_NODE_NAME = 'authentication.kubernetes.io/node-name';

/** status of a TokenReview (authentication.k8s.io/v1), the fields read here. */
export interface TokenReviewStatus {
  authenticated?: boolean;
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  audiences?: string[];
  error?: string;
}

/** Creates a TokenReview for `token` with spec.audiences and returns its status. Throws CA_AUTH_UNAVAILABLE when the API server cannot answer. */
export type TokenReviewer = (token: string, audiences: string[]) => Promise<TokenReviewStatus>;

/** A pod by namespace and name, from the CA's pod index (the node fallback). */
export type PodLookup = (namespace: string, name: string) => PodInfo | undefined;

export interface KubernetesAuthenticatorOptions {
  review: TokenReviewer;
  /** the audience the token must be for (Istio's default: "istio-ca") */
  audience: string;
  pods?: PodLookup;
  /**
   * How long an accepted token is remembered (default 30 s; 0: every request
   * is reviewed). An agent asks for all its pods' identities at once with one
   * token: one TokenReview instead of one per pod. Refusals are never cached.
   */
  cacheTtlMs?: number;
  /** most tokens remembered (default 1000; the oldest go first) */
  cacheSize?: number;
  now?: () => number;
}

export class KubernetesAuthenticator implements Authenticator {
  readonly kind = 'kubernetes' as const;
  /** sha256(token) -> the caller it proved, until `until` */
  readonly #cache = new Map<string, { caller: Caller; until: number }>();
  constructor(private readonly o: KubernetesAuthenticatorOptions) {}

  /** TokenReviews made (the cache's effect, for tests and metrics) */
  reviews = 0;

  async authenticate(token: string | undefined): Promise<Caller> {
    if (!token) throw new CaServiceError('CA_AUTH_MISSING', 'no bearer token');
    const now = (this.o.now ?? Date.now)();
    const key = createHash('sha256').update(token).digest('base64');
    const hit = this.#cache.get(key);
    if (hit && hit.until > now) return { ...hit.caller };
    if (hit) this.#cache.delete(key);
    const caller = await this.#review(token);
    const ttl = this.o.cacheTtlMs ?? 30_000;
    if (ttl > 0) {
      if (this.#cache.size >= (this.o.cacheSize ?? 1000)) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(key, { caller, until: now + ttl });
    }
    return { ...caller };
  }

  async #review(token: string): Promise<Caller> {
    this.reviews++;
    const st = await this.o.review(token, [this.o.audience]);
    if (st.authenticated !== true) {
      const why = st.error ?? 'not authenticated';
      if (/expired/i.test(why)) throw new CaServiceError('CA_AUTH_EXPIRED', `TokenReview: ${why}`);
      if (/audience/i.test(why)) throw new CaServiceError('CA_AUTH_AUDIENCE', `TokenReview: ${why}`);
      throw new CaServiceError('CA_AUTH_INVALID', `TokenReview: ${why}`);
    }
    // the API server answers with the audiences the token is valid for among those asked
    if (!(st.audiences ?? []).includes(this.o.audience))
      throw new CaServiceError(
        'CA_AUTH_AUDIENCE',
        `the token is valid for ${JSON.stringify(st.audiences ?? [])}, the CA expects ${JSON.stringify(this.o.audience)}`,
      );
    const sa = parseServiceAccountUser(st.user?.username);
    if (!sa) throw new CaServiceError('CA_AUTH_INVALID', `the token is not a ServiceAccount token (user ${JSON.stringify(st.user?.username ?? '')})`);
    const extra = st.user?.extra ?? {};
    const podName = extra[EXTRA_POD_NAME]?.[0];
    const podUid = extra[EXTRA_POD_UID]?.[0];
    let node = extra[EXTRA_NODE_NAME]?.[0];
    if (!podName) throw new CaServiceError('CA_AUTH_NO_NODE', `the token of ${sa.namespace}/${sa.serviceAccount} is not bound to a pod`);
    const pod = this.o.pods?.(sa.namespace, podName);
    if (!node) {
      if (!pod || pod.node === null)
        throw new CaServiceError('CA_AUTH_NO_NODE', `the token has no node claim and pod ${sa.namespace}/${podName} is not in the pod index`);
      if (podUid !== undefined && pod.uid !== undefined && pod.uid !== podUid)
        throw new CaServiceError('CA_AUTH_INVALID', `the token is bound to pod ${sa.namespace}/${podName} uid ${podUid}, the index holds uid ${pod.uid}`);
      node = pod.node;
    }
    return { ...sa, node, pod: { name: podName, ...(podUid ? { uid: podUid } : {}) }, via: 'kubernetes' };
  }
}

/** A TokenReviewer that POSTs to the API server of `kc` (the CA's own credentials: RBAC tokenreviews create). */
export function httpTokenReviewer(kc: KubeConfig, timeoutMs = 10_000): TokenReviewer {
  return async (token, audiences) => {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new CaServiceError('CA_AUTH_UNAVAILABLE', 'kubeconfig has no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + TOKEN_REVIEW_PATH);
    const opts: https.RequestOptions = { headers: {} };
    await kc.applyToHTTPSOptions(opts);
    const body = JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } });
    const headers: http.OutgoingHttpHeaders = {
      ...(opts.headers as http.OutgoingHttpHeaders),
      accept: 'application/json',
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'user-agent': 'ambientd/ca',
    };
    const mod = url.protocol === 'https:' ? https : http;
    const { code, text } = await new Promise<{ code: number; text: string }>((resolve, reject) => {
      const req = mod.request(url, { method: 'POST', headers, agent: opts.agent, ...(opts.auth ? { auth: opts.auth } : {}) });
      const timer = setTimeout(() => req.destroy(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
      req.once('close', () => clearTimeout(timer));
      req.on('error', reject);
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve({ code: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.end(body);
    }).catch((e: Error) => {
      throw new CaServiceError('CA_AUTH_UNAVAILABLE', `TokenReview: POST ${url.pathname}: ${e.message}`, { cause: e });
    });
    if (code !== 201 && code !== 200) {
      let message = '';
      try {
        message = String((JSON.parse(text) as { message?: unknown }).message ?? '');
      } catch {
        // not a Status object: the HTTP code says enough
      }
      throw new CaServiceError('CA_AUTH_UNAVAILABLE', `TokenReview: HTTP ${code}${message ? `: ${message}` : ''}`);
    }
    try {
      return ((JSON.parse(text) as { status?: TokenReviewStatus }).status ?? {}) as TokenReviewStatus;
    } catch (e) {
      throw new CaServiceError('CA_AUTH_UNAVAILABLE', 'TokenReview: the answer is not JSON', { cause: e });
    }
  };
}
