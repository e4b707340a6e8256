/**
 * L4 authorization (Istio AuthorizationPolicy, as ztunnel enforces it).
 *
 *   const index = compilePolicies(policies, { rootNamespace: 'istio-system', trustDomain: 'cluster.local' });
 *   const d = index.evaluate({ dst: { namespace, labels, ip, port }, src: { ip, principal, namespace, serviceAccount } });
 *
 * Decision order (ztunnel): any DENY policy matches → deny; else no ALLOW
 * policy applies → allow; else any ALLOW policy matches → allow; else deny.
 *
 * Which policies apply to a destination workload: policies in its namespace
 * without a selector, or whose selector's labels are all among the workload's
 * labels; plus the same from the root namespace, whose selector-less policies
 * apply to every workload and whose selector policies to matching workloads in
 * every namespace. Policies with targetRefs are for waypoints: not applied.
 *
 * Matching (istiod's conversion for ztunnel + ztunnel's rbac.rs):
 *  - a policy matches if any rule matches; no rules / `rules: []` = never.
 *  - a rule matches if every clause matches: its `from` (any entry), its `to`
 *    (any entry), and each `when` condition; `{}` = always.
 *  - an entry matches if every field set in it matches; a field matches if
 *    any value matches and, for the not-form, no value matches.
 *  - strings: "*" presence (non-empty), "abc*" prefix, "*abc" suffix, else exact.
 *  - principals are matched against the SPIFFE id without "spiffe://"
 *    ("cluster.local/ns/foo/sa/bar"); namespaces against the peer's namespace;
 *    serviceAccounts are "ns/sa", or "sa" meaning the policy's namespace
 *    (exact only); ipBlocks (and remoteIpBlocks, see RemoteIpMode) against
 *    the source IP; ports against the destination port.
 *  - no peer identity (plaintext): principal, namespace, service account and
 *    trust domain are absent: every positive match on them fails and every
 *    not-form matches (so `DENY notPrincipals: ["*"]` denies plaintext, the
 *    STRICT-mTLS idiom). Identity attributes come only from the principal.
 *  - HTTP-only attributes (requestPrincipals, hosts, methods, paths, their
 *    not-forms, request.* / connection.sni conditions): an ALLOW rule that
 *    uses any of them never matches (the policy still applies, so it is more
 *    restrictive); in a DENY rule they are dropped and the rest of the rule
 *    applies. If an entry or condition consists only of HTTP attributes, it
 *    drops out entirely, leaving the rule's other clauses (a rule left with
 *    nothing matches every connection). Deliberate difference from ztunnel,
 *    which skips such an emptied entry so the DENY rule never fires
 *    (istio/istio#61126); we fail closed instead.
 *
 * Invalid policies (validatePolicy reports errors) are never dropped silently
 * in a way that widens access:
 *  - invalid ALLOW: still applies to the workloads it selects and matches
 *    nothing (allows nothing: those workloads need another ALLOW to match);
 *  - invalid DENY, or an unrecognised action value: denies every connection
 *    to the workloads it selects (but "allow" in another case is read as an
 *    invalid ALLOW);
 *  - an invalid selector selects the whole namespace (the mesh for the root
 *    namespace); an empty selector too (Istio warns about it);
 *  - AUDIT / CUSTOM (reported as errors: L4 cannot do them) are not enforced,
 *    as ztunnel does: AUDIT never changes a decision, CUSTOM needs an
 *    ext-authz provider only a waypoint can call;
 *  - a policy without a usable namespace cannot be placed: reported, ignored.
 */
import type { AuthorizationPolicy } from '../discovery/model.js';
import { actionOf, checkPolicy, type RemoteIpMode } from './validate.js';
import { Ctx, compileRule, type CompileCtx, type CompiledRule } from './rules.js';
import {
  DEFAULT_ROOT_NAMESPACE,
  DEFAULT_TRUST_DOMAIN,
  type CompileOptions,
  type ConnectionAttributes,
  type Decision,
  type PolicyDescription,
  type PolicyScope,
  type PolicyStats,
  type PolicyStatus,
} from './types.js';

export * from './types.js';
export { checkPolicy, validatePolicy, classifyWhenKey, type CheckOptions, type PolicyCheck, type RemoteIpMode } from './validate.js';

const NO_MATCH = -1;
const MATCH_WITHOUT_RULE = -2;

const enum Mode {
  Rules,
  MatchAll,
  MatchNone,
}

interface CompiledPolicy {
  key: string;
  ord: number;
  deny: boolean;
  mode: Mode;
  rules: CompiledRule[];
  /** label pairs that must all be present; null = every workload in scope */
  selector: Array<[string, string]> | null;
}

function selects(p: CompiledPolicy, labels: Record<string, string>): boolean {
  const sel = p.selector;
  if (sel === null) return true;
  for (const [k, v] of sel) if (labels[k] !== v) return false;
  return true;
}

function matchPolicy(p: CompiledPolicy, c: Ctx): number {
  if (p.mode === Mode.MatchAll) return MATCH_WITHOUT_RULE;
  if (p.mode === Mode.MatchNone) return NO_MATCH;
  rules: for (const r of p.rules) {
    for (const clause of r.clauses) {
      let ok = false;
      for (const entry of clause) {
        let all = true;
        for (const pr of entry)
          if (!pr(c)) {
            all = false;
            break;
          }
        if (all) {
          ok = true;
          break;
        }
      }
      if (!ok) continue rules;
    }
    return r.index;
  }
  return NO_MATCH;
}

/** Policies of one namespace. */
class Bucket {
  readonly wideDeny: CompiledPolicy[] = [];
  readonly wideAllow: CompiledPolicy[] = [];
  /**
   * selector policies, each under one of its label pairs (key → value →
   * policies), the rarest pair in this namespace. Two levels rather than a
   * "key=value" string: lookups then use the workload's own label strings,
   * whose hashes V8 caches, instead of hashing a fresh string per label.
   */
  readonly bySelector = new Map<string, Map<string, CompiledPolicy[]>>();
}

const pairKey = (k: string, v: string): string => `${k}\u0000${v}`;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A selector's label pairs, or null when it selects everything (absent, empty or invalid: fail-safe). */
function selectorPairs(spec: Record<string, unknown>, selectorErrors: boolean): Array<[string, string]> | null {
  if (selectorErrors || !isObject(spec.selector)) return null;
  const ml = spec.selector.matchLabels;
  if (!isObject(ml)) return null;
  const pairs = Object.entries(ml).filter((e): e is [string, string] => typeof e[1] === 'string');
  if (pairs.length === 0 || pairs.length !== Object.keys(ml).length) return null;
  return pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

export class PolicyIndex {
  readonly rootNamespace: string;
  readonly trustDomain: string;
  private readonly buckets = new Map<string, Bucket>();
  private readonly descriptions: PolicyDescription[];
  private readonly statsValue: PolicyStats;

  /** use compilePolicies() */
  constructor(
    compiled: CompiledPolicy[],
    namespaces: string[],
    descriptions: PolicyDescription[],
    stats: PolicyStats,
    rootNamespace: string,
    trustDomain: string,
  ) {
    this.rootNamespace = rootNamespace;
    this.trustDomain = trustDomain;
    this.descriptions = descriptions;
    this.statsValue = stats;
    // group by namespace; compiled is sorted by ord
    const byNs = new Map<string, CompiledPolicy[]>();
    compiled.forEach((p, i) => {
      const ns = namespaces[i]!;
      const l = byNs.get(ns);
      if (l) l.push(p);
      else byNs.set(ns, [p]);
    });
    for (const [ns, list] of byNs) {
      const b = new Bucket();
      const freq = new Map<string, number>();
      for (const p of list) for (const [k, v] of p.selector ?? []) freq.set(pairKey(k, v), (freq.get(pairKey(k, v)) ?? 0) + 1);
      for (const p of list) {
        if (p.selector === null) {
          (p.deny ? b.wideDeny : b.wideAllow).push(p);
          continue;
        }
        let best = p.selector[0]!;
        let bestN = Infinity;
        for (const pair of p.selector) {
          const n = freq.get(pairKey(pair[0], pair[1]))!;
          if (n < bestN) {
            best = pair;
            bestN = n;
          }
        }
        let byValue = b.bySelector.get(best[0]);
        if (!byValue) b.bySelector.set(best[0], (byValue = new Map()));
        const l = byValue.get(best[1]);
        if (l) l.push(p);
        else byValue.set(best[1], [p]);
      }
      this.buckets.set(ns, b);
    }
  }

  private collect(b: Bucket, labels: Record<string, string>, deny: CompiledPolicy[], allow: CompiledPolicy[]): void {
    for (const p of b.wideDeny) deny.push(p);
    for (const p of b.wideAllow) allow.push(p);
    if (b.bySelector.size === 0) return;
    for (const k in labels) {
      const byValue = b.bySelector.get(k);
      if (byValue === undefined) continue;
      const v = labels[k];
      if (typeof v !== 'string') continue;
      const l = byValue.get(v);
      if (l === undefined) continue;
      for (const p of l) if (selects(p, labels)) (p.deny ? deny : allow).push(p);
    }
  }

  /** The DENY and ALLOW policies that apply to a workload, in evaluation order. */
  private applicable(namespace: string, labels: Record<string, string> | undefined): { deny: CompiledPolicy[]; allow: CompiledPolicy[] } {
    const deny: CompiledPolicy[] = [];
    const allow: CompiledPolicy[] = [];
    const l = labels ?? {};
    const root = this.buckets.get(this.rootNamespace);
    if (root) this.collect(root, l, deny, allow);
    if (namespace !== this.rootNamespace) {
      const b = this.buckets.get(namespace);
      if (b) this.collect(b, l, deny, allow);
    }
    if (deny.length > 1) deny.sort((a, b) => a.ord - b.ord);
    if (allow.length > 1) allow.sort((a, b) => a.ord - b.ord);
    return { deny, allow };
  }

  /** Keys ("ns/name") of the policies that apply to a workload (for config_dump and tests). */
  policiesFor(namespace: string, labels: Record<string, string>): { deny: string[]; allow: string[] } {
    const { deny, allow } = this.applicable(namespace, labels);
    return { deny: deny.map((p) => p.key), allow: allow.map((p) => p.key) };
  }

  evaluate(conn: ConnectionAttributes): Decision {
    const { deny, allow } = this.applicable(conn.dst.namespace, conn.dst.labels);
    if (deny.length === 0 && allow.length === 0) return { allow: true, policy: null, rule: null, reason: 'no-allow-policies' };
    const c = new Ctx(conn);
    for (const p of deny) {
      const r = matchPolicy(p, c);
      if (r !== NO_MATCH) return { allow: false, policy: p.key, rule: r >= 0 ? r : null, reason: 'deny-match' };
    }
    if (allow.length === 0) return { allow: true, policy: null, rule: null, reason: 'no-allow-policies' };
    for (const p of allow) {
      const r = matchPolicy(p, c);
      if (r !== NO_MATCH) return { allow: true, policy: p.key, rule: r >= 0 ? r : null, reason: 'allow-match' };
    }
    return { allow: false, policy: null, rule: null, reason: 'no-allow-match' };
  }

  stats(): PolicyStats {
    return { ...this.statsValue, byNamespace: { ...this.statsValue.byNamespace } };
  }

  /** Every policy given, sorted by "ns/name", with its status, errors and warnings. */
  describe(): PolicyDescription[] {
    return this.descriptions.map((d) => ({ ...d, selector: d.selector ? { ...d.selector } : null, errors: [...d.errors], warnings: [...d.warnings] }));
  }
}

function effectOf(status: PolicyStatus, deny: boolean, note: string): string {
  switch (status) {
    case 'enforced':
      return deny ? 'denies matching connections' : 'allows matching connections; others to the selected workloads are denied unless another ALLOW matches';
    case 'invalid-allow-nothing':
      return 'invalid ALLOW: applies to the selected workloads and allows nothing (fail-safe)';
    case 'invalid-deny-all':
      return 'invalid DENY: denies every connection to the selected workloads (fail-safe)';
    case 'ignored':
      return `not enforced at L4: ${note}`;
  }
}

/** Precompiles policies into an index for evaluation at connection set-up. */
export function compilePolicies(policies: AuthorizationPolicy[], opts: CompileOptions = {}): PolicyIndex {
  const rootNamespace = opts.rootNamespace || DEFAULT_ROOT_NAMESPACE;
  const trustDomain = opts.trustDomain || DEFAULT_TRUST_DOMAIN;
  const mode: RemoteIpMode = opts.remoteIpBlocks ?? 'source-ip';

  interface Entry {
    p: AuthorizationPolicy;
    i: number;
    key: string;
    ns: string | null;
    name: string;
  }
  const entries: Entry[] = policies.map((p, i) => {
    const o = (isObject(p) ? p : {}) as Record<string, unknown>;
    const ns = typeof o.namespace === 'string' && o.namespace !== '' ? o.namespace : null;
    const name = typeof o.name === 'string' ? o.name : '';
    return { p, i, key: `${ns ?? ''}/${name}`, ns, name };
  });
  entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.i - b.i));

  const compiled: CompiledPolicy[] = [];
  const compiledNs: string[] = [];
  const descriptions: PolicyDescription[] = [];
  const stats: PolicyStats = {
    policies: policies.length,
    enforced: 0,
    invalid: 0,
    failSafe: 0,
    ignored: 0,
    allow: 0,
    deny: 0,
    byNamespace: {},
    withWarnings: 0,
  };

  for (const e of entries) {
    const chk = checkPolicy(e.p, { remoteIpBlocks: mode });
    const spec = (isObject(e.p) && isObject(e.p.spec) ? e.p.spec : {}) as Record<string, unknown>;
    const action = actionOf(e.p);
    const actionStr = typeof action === 'string' ? action : (JSON.stringify(action) ?? String(action));
    const hasTargetRefs = (Array.isArray(spec.targetRefs) && spec.targetRefs.length > 0) || (spec.targetRef !== undefined && spec.targetRef !== null);
    const hasSelector = spec.selector !== undefined && spec.selector !== null;
    // unrecognised actions fail closed, except a mis-cased "allow" (an invalid ALLOW is fail-safe too)
    const deny = !(action === 'ALLOW' || (typeof action === 'string' && action.toUpperCase() === 'ALLOW'));
    const nsKey = e.ns ?? '';
    stats.byNamespace[nsKey] = (stats.byNamespace[nsKey] ?? 0) + 1;
    if (chk.errors.length > 0) stats.invalid++;
    if (chk.warnings.length > 0) stats.withWarnings++;

    let status: PolicyStatus;
    let note = '';
    if (e.ns === null) {
      status = 'ignored';
      note = 'it has no namespace, so it cannot be placed';
    } else if (action === 'AUDIT' || action === 'CUSTOM') {
      status = 'ignored';
      note = `action ${action} is not enforced at L4`;
    } else if (hasTargetRefs && !hasSelector) {
      status = 'ignored';
      note = 'it has targetRefs (enforced by a waypoint)';
    } else if (chk.errors.length > 0) status = deny ? 'invalid-deny-all' : 'invalid-allow-nothing';
    else status = 'enforced';

    const selectorErrors = chk.errors.some((m) => m.startsWith('spec.selector'));
    const selector = status === 'ignored' ? null : selectorPairs(spec, selectorErrors);
    const scope: PolicyScope =
      status === 'ignored' ? 'none' : e.ns === rootNamespace ? (selector ? 'global-selector' : 'global') : selector ? 'workload-selector' : 'namespace';
    const rulesWritten = Array.isArray(spec.rules) ? spec.rules.length : 0;

    let cp: CompiledPolicy | null = null;
    if (status === 'enforced') {
      const cc: CompileCtx = { policyNamespace: e.ns!, trustDomain, mode };
      const rules: CompiledRule[] = [];
      (Array.isArray(spec.rules) ? spec.rules : []).forEach((r: unknown, i: number) => {
        const cr = compileRule(r as Record<string, unknown>, i, deny, cc);
        if (cr) rules.push(cr);
      });
      cp = { key: e.key, ord: compiled.length, deny, mode: Mode.Rules, rules, selector };
      stats.enforced++;
    } else if (status === 'invalid-allow-nothing' || status === 'invalid-deny-all') {
      cp = { key: e.key, ord: compiled.length, deny, mode: deny ? Mode.MatchAll : Mode.MatchNone, rules: [], selector };
      stats.failSafe++;
    } else {
      stats.ignored++;
    }
    if (cp) {
      compiled.push(cp);
      compiledNs.push(e.ns!);
      if (deny) stats.deny++;
      else stats.allow++;
    }
    descriptions.push({
      policy: e.key,
      namespace: e.ns ?? '',
      name: e.name,
      action: actionStr,
      scope,
      selector: selector ? Object.fromEntries(selector) : null,
      status,
      effect: effectOf(status, deny, note),
      rules: rulesWritten,
      enforcedRules: cp ? cp.rules.length : 0,
      errors: chk.errors,
      warnings: chk.warnings,
    });
  }
  return new PolicyIndex(compiled, compiledNs, descriptions, stats, rootNamespace, trustDomain);
}
