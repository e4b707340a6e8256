// Helpers shared by the policy tests: a policy, a connection's attributes,
// table-driven cases, one-rule ALLOW/DENY checks.
import assert from 'node:assert/strict';
import type { AuthorizationPolicy, AuthorizationPolicySpec } from '../../../src/discovery/model.js';
import { compilePolicies, type CompileOptions, type ConnectionAttributes, type Decision } from '../../../src/policy/engine.js';

export const pol = (namespace: string, name: string, spec: unknown): AuthorizationPolicy => ({ namespace, name, spec: spec as AuthorizationPolicySpec });

export const CURL = 'spiffe://cluster.local/ns/client/sa/curl';
export const ADMIN = 'spiffe://cluster.local/ns/ops/sa/admin';

export interface ConnOpts {
  ns?: string;
  labels?: Record<string, string>;
  dstIp?: string;
  port?: number;
  srcIp?: string;
  /** SPIFFE id (with scheme, as the HBONE server reports it), null = plaintext */
  principal?: string | null;
  srcNamespace?: string | null;
  srcSa?: string | null;
}

export function conn(o: ConnOpts = {}): ConnectionAttributes {
  return {
    dst: { namespace: o.ns ?? 'app', labels: o.labels ?? { app: 'web' }, ip: o.dstIp ?? '10.0.1.1', port: o.port ?? 8080 },
    src: {
      ip: o.srcIp ?? '10.0.2.2',
      principal: o.principal === undefined ? CURL : o.principal,
      namespace: o.srcNamespace ?? null,
      serviceAccount: o.srcSa ?? null,
    },
  };
}

export interface Case {
  name: string;
  policies: AuthorizationPolicy[];
  conn?: ConnOpts;
  opts?: CompileOptions;
  allow: boolean;
  reason?: Decision['reason'];
  policy?: string | null;
  rule?: number | null;
}

export function run(cases: Case[]): void {
  for (const c of cases) {
    const idx = compilePolicies(c.policies, c.opts);
    const d = idx.evaluate(conn(c.conn));
    assert.equal(d.allow, c.allow, `${c.name}: allow (got ${JSON.stringify(d)})`);
    if (c.reason !== undefined) assert.equal(d.reason, c.reason, `${c.name}: reason (got ${JSON.stringify(d)})`);
    if (c.policy !== undefined) assert.equal(d.policy, c.policy, `${c.name}: policy`);
    if (c.rule !== undefined) assert.equal(d.rule, c.rule, `${c.name}: rule`);
  }
}

/** One policy in ns "app", selector-less, with a single rule; returns the allow result for conn. */
export function allowRule(rule: unknown, c: ConnOpts, opts?: CompileOptions): boolean {
  return compilePolicies([pol('app', 'p', { action: 'ALLOW', rules: [rule] })], opts).evaluate(conn(c)).allow;
}
export function denyRule(rule: unknown, c: ConnOpts, opts?: CompileOptions): boolean {
  return !compilePolicies([pol('app', 'p', { action: 'DENY', rules: [rule] })], opts).evaluate(conn(c)).allow;
}

export const ALLOW_ALL = { action: 'ALLOW', rules: [{}] };
