/**
 * Node authorization: which identity an authenticated caller gets.
 *
 *   - No ImpersonatedIdentity, or the caller's own: the caller's own
 *     ServiceAccount identity (istiod does the same for a sidecar).
 *   - Another identity: only a trusted node account (the agent's own
 *     ServiceAccount, --trusted-node-account ns/sa; Istio's
 *     CA_TRUSTED_NODE_ACCOUNTS) may ask, and only for the identity of a pod
 *     whose spec.nodeName is the caller's node.
 *   - An identity in another trust domain: never.
 * Refusals are CaServiceErrors (PERMISSION_DENIED) whose message says why.
 */
import { formatSpiffeId, parseSpiffeId } from '../identity/spiffe.js';
import type { Caller } from './auth.js';
import { CaServiceError } from './errors.js';
import type { NodePodIndex } from './pod-index.js';

export interface Grant {
  /** the identity to sign for */
  identity: string;
  /** true when a node agent asked for a pod's identity */
  impersonated: boolean;
  /** the pods on the caller's node that hold it (impersonation) */
  pods: readonly string[];
}

export interface AuthorizeOptions {
  trustDomain: string;
  /** "namespace/serviceaccount" of the node agents */
  trustedNodeAccounts: ReadonlySet<string>;
  pods: NodePodIndex;
}

export function authorize(caller: Caller, requested: string | undefined, o: AuthorizeOptions): Grant {
  const own = formatSpiffeId({ trustDomain: o.trustDomain, namespace: caller.namespace, serviceAccount: caller.serviceAccount });
  if (requested === undefined || requested === '' || requested === own) return { identity: own, impersonated: false, pods: [] };
  const account = `${caller.namespace}/${caller.serviceAccount}`;
  if (!o.trustedNodeAccounts.has(account))
    throw new CaServiceError('CA_IMPERSONATION_DENIED', `${account} is not a trusted node account and may not ask for ${requested}`);
  const id = parseSpiffeId(requested); // SpiffeIdError: INVALID_ARGUMENT
  if (id.trustDomain !== o.trustDomain)
    throw new CaServiceError('CA_FOREIGN_TRUST_DOMAIN', `${requested} is in trust domain ${id.trustDomain}, the CA signs for ${o.trustDomain}`);
  const pods = o.pods.podsWith(caller.node, requested);
  if (pods.length === 0) throw new CaServiceError('CA_NODE_DENIED', `no pod on node ${caller.node} has identity ${requested}`);
  return { identity: requested, impersonated: true, pods };
}
