/**
 * The policies in force on a node: recompiled only when the list changes,
 * and the L4 decision at the destination in the shape the proxy asks for.
 */
import type { AuthorizationPolicy, PodInfo } from '../discovery/model.js';
import { compilePolicies, type CompileOptions, type Decision, type PolicyDescription, type PolicyIndex, type PolicyStats } from './engine.js';

export interface PolicyUpdate {
  /** policies given */
  policies: number;
  /** compiled with errors (a fail-safe status applies to them) */
  invalid: PolicyDescription[];
  ms: number;
}

export class ActivePolicies {
  private index: PolicyIndex = compilePolicies([]);
  private key = '[]';

  constructor(private readonly opts: CompileOptions) {}

  /** Recompiles when `list` differs from the list in force; null when it does not. */
  update(list: AuthorizationPolicy[]): PolicyUpdate | null {
    const key = JSON.stringify(list);
    if (key === this.key) return null;
    this.key = key;
    const t0 = process.hrtime.bigint();
    this.index = compilePolicies(list, this.opts);
    const invalid = this.index.describe().filter((p) => p.errors.length > 0);
    return { policies: list.length, invalid, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
  }

  /** L4 authorization at the destination (Istio AuthorizationPolicy semantics). */
  authorize(dst: { pod: PodInfo; ip: string; port: number }, src: { ip: string; id: string | null }): Pick<Decision, 'allow' | 'policy' | 'reason'> {
    const d = this.index.evaluate({
      dst: { namespace: dst.pod.namespace, labels: dst.pod.labels, ip: dst.ip, port: dst.port },
      src: { ip: src.ip, principal: src.id, namespace: null, serviceAccount: null },
    });
    return { allow: d.allow, policy: d.policy, reason: d.reason };
  }

  describe(): PolicyDescription[] {
    return this.index.describe();
  }

  stats(): PolicyStats {
    return this.index.stats();
  }
}
