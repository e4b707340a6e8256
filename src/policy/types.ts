/**
 * What the policy engine is given (compile options, a connection's
 * attributes) and what it answers (decisions, descriptions, statistics).
 */
import type { RemoteIpMode } from './validate.js';

export const DEFAULT_ROOT_NAMESPACE = 'istio-system';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

export interface CompileOptions {
  /** Istio's root namespace: its policies apply mesh-wide. Default istio-system. */
  rootNamespace?: string;
  /**
   * The mesh trust domain. A principal pattern "cluster.local/ns/…/sa/…"
   * (five segments, first exactly cluster.local) is rewritten to this trust
   * domain, as Istio does ("cluster.local" in a policy points at the local
   * trust domain). Default cluster.local (no rewriting).
   */
  trustDomain?: string;
  /** How remoteIpBlocks / remote.ip are read; default 'source-ip'. */
  remoteIpBlocks?: RemoteIpMode;
}

export interface ConnectionAttributes {
  dst: { namespace: string; labels: Record<string, string>; ip: string; port: number };
  src: {
    ip: string;
    /**
     * The peer's SPIFFE id, with or without "spiffe://"; null (or '') when the
     * connection carries no identity (plaintext).
     */
    principal: string | null;
    /**
     * Used only when the principal is not of the form <td>/ns/<ns>/sa/<sa>;
     * ignored when principal is null (no identity, no namespace).
     */
    namespace: string | null;
    serviceAccount: string | null;
  };
}

export type DecisionReason = 'deny-match' | 'allow-match' | 'no-allow-policies' | 'no-allow-match';

export interface Decision {
  allow: boolean;
  /** "namespace/name" of the deciding policy (a matching DENY or ALLOW) */
  policy: string | null;
  /** index in spec.rules of the matching rule; null when none, or for an invalid DENY (matches everything) */
  rule: number | null;
  reason: DecisionReason;
}

export type PolicyStatus = 'enforced' | 'invalid-allow-nothing' | 'invalid-deny-all' | 'ignored';
export type PolicyScope = 'global' | 'global-selector' | 'namespace' | 'workload-selector' | 'none';

export interface PolicyDescription {
  /** "namespace/name" */
  policy: string;
  namespace: string;
  name: string;
  /** as written ('ALLOW' when unset) */
  action: string;
  scope: PolicyScope;
  /** the labels it selects on; null for namespace/mesh-wide */
  selector: Record<string, string> | null;
  status: PolicyStatus;
  /** what the status means for traffic */
  effect: string;
  /** rules as written, and those enforced at L4 */
  rules: number;
  enforcedRules: number;
  errors: string[];
  warnings: string[];
}

export interface PolicyStats {
  /** policies given */
  policies: number;
  enforced: number;
  /** with validation errors (whatever their status) */
  invalid: number;
  /** invalid ones applied fail-safe (allow nothing / deny all) */
  failSafe: number;
  ignored: number;
  allow: number;
  deny: number;
  /** policies given, by namespace */
  byNamespace: Record<string, number>;
  withWarnings: number;
}
