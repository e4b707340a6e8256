/**
 * Validation of Istio AuthorizationPolicy objects for L4 (ztunnel-style)
 * enforcement.
 *
 * Errors follow Istio's own validation (pkg/config/validation
 * ValidateAuthorizationPolicy, pkg/config/security, and the CRD's CEL rules)
 * plus what an L4 engine cannot honour: AUDIT/CUSTOM actions, unknown fields,
 * '*' anywhere but at the start or end of a string pattern, ports outside
 * 1..65535. Every message starts with the field path, e.g.
 *   spec.rules[0].from[1].source.ipBlocks[2]: "10.0.0.0/33" is not a CIDR
 *
 * Warnings are for things Istio accepts but that do not mean at L4 what they
 * say (HTTP-only attributes, DENY without rules, a selector without labels,
 * targetRefs). What an engine does with an invalid policy is engine.ts's
 * business (fail-safe, see there); this file only reports.
 */
import type { AuthorizationPolicy } from '../discovery/model.js';
import { isLabelKeyName, isLabelKeyPrefix, isLabelValue } from '../util/dns1123.js';
import { collect, isAbsent, isObj, nonEmptyStr } from '../util/fields.js';
import { parseCidr } from './ip.js';

/**
 * How `remoteIpBlocks` / `notRemoteIpBlocks` and the `remote.ip` condition
 * are read. 'source-ip' (default): at L4 with no PROXY protocol the "remote"
 * (original client) address is the connection's source address, which is
 * what Istio's sidecar does for TCP. 'http-only': what istiod sends ztunnel
 * (it classes them as HTTP attributes: an ALLOW rule using them never
 * matches, a DENY rule drops them).
 */
export type RemoteIpMode = 'source-ip' | 'http-only';

export interface CheckOptions {
  remoteIpBlocks?: RemoteIpMode;
}

export interface PolicyCheck {
  errors: string[];
  warnings: string[];
}

/** What a value list holds, for validation and compilation. */
export type ValueKind = 'pattern' | 'trustDomain' | 'serviceAccount' | 'ip' | 'port' | 'string';

/** L4 attributes a rule can match on (the engine's vocabulary). */
export type L4Attr = 'principal' | 'namespace' | 'serviceAccount' | 'trustDomain' | 'sourceIp' | 'destinationIp' | 'destinationPort';

interface FieldDef {
  kind: ValueKind;
  /** the L4 attribute it matches, or null for an HTTP-only field */
  attr: L4Attr | null;
  negative: boolean;
  /** true for remoteIpBlocks: L4 or HTTP depending on RemoteIpMode */
  remote?: boolean;
}

export const SOURCE_FIELDS: Readonly<Record<string, FieldDef>> = {
  principals: { kind: 'pattern', attr: 'principal', negative: false },
  notPrincipals: { kind: 'pattern', attr: 'principal', negative: true },
  namespaces: { kind: 'pattern', attr: 'namespace', negative: false },
  notNamespaces: { kind: 'pattern', attr: 'namespace', negative: true },
  serviceAccounts: { kind: 'serviceAccount', attr: 'serviceAccount', negative: false },
  notServiceAccounts: { kind: 'serviceAccount', attr: 'serviceAccount', negative: true },
  // istio/api Source.trust_domains (newer than model.ts; read as an extension)
  trustDomains: { kind: 'trustDomain', attr: 'trustDomain', negative: false },
  notTrustDomains: { kind: 'trustDomain', attr: 'trustDomain', negative: true },
  ipBlocks: { kind: 'ip', attr: 'sourceIp', negative: false },
  notIpBlocks: { kind: 'ip', attr: 'sourceIp', negative: true },
  remoteIpBlocks: { kind: 'ip', attr: 'sourceIp', negative: false, remote: true },
  notRemoteIpBlocks: { kind: 'ip', attr: 'sourceIp', negative: true, remote: true },
  requestPrincipals: { kind: 'string', attr: null, negative: false },
  notRequestPrincipals: { kind: 'string', attr: null, negative: true },
};

export const OPERATION_FIELDS: Readonly<Record<string, FieldDef>> = {
  ports: { kind: 'port', attr: 'destinationPort', negative: false },
  notPorts: { kind: 'port', attr: 'destinationPort', negative: true },
  hosts: { kind: 'string', attr: null, negative: false },
  notHosts: { kind: 'string', attr: null, negative: true },
  methods: { kind: 'string', attr: null, negative: false },
  notMethods: { kind: 'string', attr: null, negative: true },
  paths: { kind: 'string', attr: null, negative: false },
  notPaths: { kind: 'string', attr: null, negative: true },
};

/** [name, def] pairs, computed once (compilation walks them per entry). */
export const SOURCE_FIELD_LIST: ReadonlyArray<readonly [string, FieldDef]> = Object.entries(SOURCE_FIELDS);
export const OPERATION_FIELD_LIST: ReadonlyArray<readonly [string, FieldDef]> = Object.entries(OPERATION_FIELDS);
const SOURCE_KEYS = Object.keys(SOURCE_FIELDS);
const OPERATION_KEYS = Object.keys(OPERATION_FIELDS);

/** Whether a source/operation field is enforced at L4 under the given mode. */
export function fieldIsL4(def: FieldDef, mode: RemoteIpMode): boolean {
  if (def.attr === null) return false;
  return !(def.remote && mode === 'http-only');
}

export type WhenClass =
  | { status: 'l4'; attr: L4Attr; kind: ValueKind }
  /** a valid Istio attribute that an L4 proxy cannot see (HTTP, JWT, SNI) */
  | { status: 'http'; kind: ValueKind }
  | { status: 'error'; message: string };

const WHEN_L4: Readonly<Record<string, { attr: L4Attr; kind: ValueKind }>> = {
  'source.ip': { attr: 'sourceIp', kind: 'ip' },
  'source.namespace': { attr: 'namespace', kind: 'pattern' },
  'source.principal': { attr: 'principal', kind: 'pattern' },
  'source.serviceAccount': { attr: 'serviceAccount', kind: 'serviceAccount' },
  'source.trustDomain': { attr: 'trustDomain', kind: 'trustDomain' },
  'destination.ip': { attr: 'destinationIp', kind: 'ip' },
  'destination.port': { attr: 'destinationPort', kind: 'port' },
};

const WHEN_HTTP = new Set(['request.auth.principal', 'request.auth.audiences', 'request.auth.presenter', 'connection.sni']);

function mapKeyOk(key: string): boolean {
  // Istio: "a[b]" with a non-empty name inside the brackets
  const open = key.indexOf('[');
  return key.endsWith(']') && open > 0 && open < key.length - 2;
}

/** Classifies a `when` key (Istio's list of condition attributes). */
export function classifyWhenKey(key: string, mode: RemoteIpMode = 'source-ip'): WhenClass {
  const l4 = WHEN_L4[key];
  if (l4) return { status: 'l4', ...l4 };
  if (key === 'remote.ip') return mode === 'source-ip' ? { status: 'l4', attr: 'sourceIp', kind: 'ip' } : { status: 'http', kind: 'ip' };
  if (WHEN_HTTP.has(key)) return { status: 'http', kind: 'string' };
  if (key.startsWith('request.headers[') || key.startsWith('request.auth.claims[') || key.startsWith('experimental.envoy.filters.')) {
    return mapKeyOk(key) ? { status: 'http', kind: 'string' } : { status: 'error', message: `bad key ${q(key)}: should have the form name[field]` };
  }
  if (key === 'destination.namespace') return { status: 'error', message: `attribute ${q(key)} is replaced by the policy's namespace` };
  if (key.startsWith('destination.labels')) return { status: 'error', message: `attribute ${q(key)} is replaced by the workload selector` };
  if (key === 'destination.name' || key === 'destination.user') return { status: 'error', message: `attribute ${q(key)} is deprecated (v1alpha1 only)` };
  return { status: 'error', message: `unknown attribute ${q(key)}` };
}

const SPEC_KEYS = ['selector', 'targetRef', 'targetRefs', 'action', 'provider', 'rules'];
const SELECTOR_KEYS = ['matchLabels'];
const RULE_KEYS = ['from', 'to', 'when'];
const FROM_KEYS = ['source'];
const TO_KEYS = ['operation'];
const WHEN_KEYS = ['key', 'values', 'notValues'];

function q(v: unknown): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  return s.length > 200 ? s.slice(0, 200) + '…' : s;
}

// null and undefined both mean "not set" (Kubernetes prunes nulls): isAbsent().

function unknownKeys(o: Record<string, unknown>, known: readonly string[], path: string, errors: string[]): void {
  for (const k in o) {
    if (!Object.prototype.hasOwnProperty.call(o, k) || known.includes(k)) continue;
    const hint = known.find((x) => x.toLowerCase() === k.toLowerCase() || x === `${k}s` || x.toLowerCase() === `${k.toLowerCase()}s`);
    errors.push(`${path}.${k}: unknown field${hint ? ` (did you mean "${hint}"?)` : ''}`);
  }
}

function labelKeyProblem(k: string): string | null {
  if (k === '') return 'empty label key';
  if (k.includes('*')) return 'wildcard is not supported in selector';
  const slash = k.indexOf('/');
  const name = slash >= 0 ? k.slice(slash + 1) : k;
  const prefix = slash >= 0 ? k.slice(0, slash) : null;
  if (prefix !== null && !isLabelKeyPrefix(prefix)) return 'label key prefix is not a DNS subdomain';
  if (!isLabelKeyName(name)) return 'not a valid label key';
  return null;
}

function labelValueProblem(v: string): string | null {
  if (v.includes('*')) return 'wildcard is not supported in selector';
  if (!isLabelValue(v)) return 'not a valid label value';
  return null;
}

/** Problem with one value of the given kind, or null. */
export function valueProblem(kind: ValueKind, v: string): string | null {
  if (v === '') return 'empty value is not allowed';
  switch (kind) {
    case 'string':
      return null;
    case 'pattern':
    case 'trustDomain': {
      const stars = v.split('*').length - 1;
      if (stars > 1) return `${q(v)} has more than one '*' (only exact, "prefix*", "*suffix" or "*" are supported)`;
      if (stars === 1 && v !== '*' && !v.startsWith('*') && !v.endsWith('*')) {
        return `${q(v)} has a '*' in the middle (only exact, "prefix*", "*suffix" or "*" are supported)`;
      }
      if (kind === 'trustDomain' && v.includes('/')) return `${q(v)}: a trust domain must not contain '/'`;
      return null;
    }
    case 'serviceAccount': {
      if (v.includes('*')) return `${q(v)}: wildcards are not allowed in service accounts`;
      if (v.length > 320) return `${q(v)} is longer than 320 characters`;
      const parts = v.split('/');
      if (parts.length > 2) return `${q(v)} is not "serviceAccount" or "namespace/serviceAccount"`;
      if (parts.length === 2 && (parts[0] === '' || parts[1] === '')) return `${q(v)} is not "serviceAccount" or "namespace/serviceAccount" (empty part)`;
      return null;
    }
    case 'ip':
      if (parseCidr(v) !== null) return null;
      return v.includes('/') ? `${q(v)} is not a CIDR` : `${q(v)} is not an IP address`;
    case 'port': {
      if (!/^[0-9]{1,5}$/.test(v)) return `${q(v)} is not a port (1..65535)`;
      const n = Number(v);
      return n >= 1 && n <= 65535 ? null : `${q(v)} is not a port (1..65535)`;
    }
  }
}

/** Checks a list of strings; returns the list (strings only) or null when not a list. */
function checkList(v: unknown, kind: ValueKind, path: string, errors: string[]): string[] | null {
  if (isAbsent(v)) return null;
  if (!Array.isArray(v)) {
    errors.push(`${path}: must be a list of strings, got ${q(v)}`);
    return null;
  }
  const out: string[] = [];
  v.forEach((x, i) => {
    if (typeof x !== 'string') {
      errors.push(`${path}[${i}]: must be a string, got ${q(x)}`);
      return;
    }
    const p = valueProblem(kind, x);
    if (p) errors.push(`${path}[${i}]: ${p}`);
    out.push(x);
  });
  if (kind === 'serviceAccount' && v.length > 16) errors.push(`${path}: at most 16 service accounts are allowed, got ${v.length}`);
  return out;
}

/** A list that is set and not empty. */
function nonEmpty(v: unknown): boolean {
  return Array.isArray(v) && v.length > 0;
}

/** The action as written ('ALLOW' when unset). */
export function actionOf(p: AuthorizationPolicy): unknown {
  const spec = (p as { spec?: unknown }).spec;
  if (!isObj(spec) || isAbsent(spec.action)) return 'ALLOW';
  return spec.action;
}

function httpWarning(action: string, ruleIdx: number, path: string, what: string): string {
  return action === 'DENY'
    ? `${path}: ${what} cannot be checked at L4; dropped from DENY rule ${ruleIdx} (the rest of the rule still applies: more restrictive than written)`
    : `${path}: ${what} cannot be checked at L4; ALLOW rule ${ruleIdx} never matches (use a waypoint for HTTP rules)`;
}

/**
 * Errors and warnings for one policy. Errors make the policy invalid (see
 * engine.ts for what that means); warnings do not.
 */
export function checkPolicy(p: AuthorizationPolicy, opts: CheckOptions = {}): PolicyCheck {
  const mode: RemoteIpMode = opts.remoteIpBlocks ?? 'source-ip';
  const errors: string[] = [];
  const warnings: string[] = [];
  if (!isObj(p)) return { errors: [`policy: must be a mapping, got ${q(p)}`], warnings };
  collect(errors, () => nonEmptyStr(p.name, 'name'));
  collect(errors, () => nonEmptyStr(p.namespace, 'namespace'));
  const spec: unknown = p.spec;
  if (!isObj(spec)) {
    errors.push(`spec: must be a mapping, got ${q(spec)}`);
    return { errors, warnings };
  }
  unknownKeys(spec, SPEC_KEYS, 'spec', errors);

  // action
  const action = actionOf(p);
  if (action === 'AUDIT' || action === 'CUSTOM') errors.push(`spec.action: ${q(action)} is not supported at L4 (ALLOW or DENY)`);
  else if (action !== 'ALLOW' && action !== 'DENY')
    errors.push(`spec.action: ${q(action)} is not an action (ALLOW or DENY; AUDIT and CUSTOM are not supported at L4)`);
  if (!isAbsent(spec.provider) && action !== 'CUSTOM') errors.push(`spec.provider: only allowed with action CUSTOM`);

  // selector / targetRefs
  const hasTargetRefs = (Array.isArray(spec.targetRefs) && spec.targetRefs.length > 0) || !isAbsent(spec.targetRef);
  if (!isAbsent(spec.selector)) {
    if (hasTargetRefs) errors.push(`spec.targetRefs: only one of targetRefs or selector can be set`);
    const sel = spec.selector;
    if (!isObj(sel)) {
      errors.push(`spec.selector: must be a mapping, got ${q(sel)}`);
    } else {
      unknownKeys(sel, SELECTOR_KEYS, 'spec.selector', errors);
      const ml = sel.matchLabels;
      if (!isAbsent(ml) && !isObj(ml)) {
        errors.push(`spec.selector.matchLabels: must be a mapping of strings, got ${q(ml)}`);
      } else if (isObj(ml) && Object.keys(ml).length > 0) {
        for (const [k, v] of Object.entries(ml)) {
          const path = `spec.selector.matchLabels[${q(k)}]`;
          if (typeof v !== 'string') {
            errors.push(`${path}: must be a string, got ${q(v)}`);
            continue;
          }
          const kp = labelKeyProblem(k);
          if (kp) errors.push(`${path}: ${kp}`);
          const vp = labelValueProblem(v);
          if (vp) errors.push(`${path}: ${q(v)}: ${vp}`);
        }
      } else {
        warnings.push('spec.selector: selector without labels: applies to every workload in the namespace (Istio warns; ztunnel binds it to no workload)');
      }
    }
  }
  if (!isAbsent(spec.targetRefs) && !Array.isArray(spec.targetRefs)) errors.push(`spec.targetRefs: must be a list, got ${q(spec.targetRefs)}`);
  if (Array.isArray(spec.targetRefs)) {
    spec.targetRefs.forEach((r, i) => {
      if (!isObj(r) || typeof r.name !== 'string' || r.name === '') errors.push(`spec.targetRefs[${i}]: must be a mapping with a name`);
    });
  }
  if (!isAbsent(spec.targetRef) && (!isObj(spec.targetRef) || typeof spec.targetRef.name !== 'string' || spec.targetRef.name === '')) {
    errors.push(`spec.targetRef: must be a mapping with a name`);
  }
  if (hasTargetRefs) warnings.push('spec.targetRefs: the policy targets a waypoint (targetRefs); not enforced at L4');

  // rules
  const actionName = action === 'DENY' ? 'DENY' : 'ALLOW';
  // what HTTP attributes do at L4 only matters if the policy is enforced at L4
  const l4 = !hasTargetRefs && action !== 'AUDIT' && action !== 'CUSTOM';
  if (isAbsent(spec.rules)) {
    if (action === 'DENY') warnings.push('spec.rules: DENY policy without rules never matches (Istio rejects it; add `rules: [{}]` to deny everything)');
    return { errors, warnings };
  }
  if (!Array.isArray(spec.rules)) {
    errors.push(`spec.rules: must be a list, got ${q(spec.rules)}`);
    return { errors, warnings };
  }
  if (spec.rules.length === 0 && action === 'DENY')
    warnings.push('spec.rules: DENY policy with empty rules never matches (add `rules: [{}]` to deny everything)');

  spec.rules.forEach((rule: unknown, i: number) => {
    const rp = `spec.rules[${i}]`;
    if (!isObj(rule)) {
      errors.push(`${rp}: must be a mapping, got ${q(rule)}`);
      return;
    }
    unknownKeys(rule, RULE_KEYS, rp, errors);

    if (!isAbsent(rule.from)) {
      if (!Array.isArray(rule.from)) errors.push(`${rp}.from: must be a list, got ${q(rule.from)}`);
      else if (rule.from.length === 0) errors.push(`${rp}.from: must not be empty (leave it out to match any source)`);
      else {
        rule.from.forEach((f: unknown, j: number) => {
          const fp = `${rp}.from[${j}]`;
          if (!isObj(f)) {
            errors.push(`${fp}: must be a mapping, got ${q(f)}`);
            return;
          }
          unknownKeys(f, FROM_KEYS, fp, errors);
          const src = f.source;
          if (!isObj(src)) {
            errors.push(`${fp}.source: ${!isAbsent(src) ? `must be a mapping, got ${q(src)}` : 'required'}`);
            return;
          }
          const sp = `${fp}.source`;
          unknownKeys(src, SOURCE_KEYS, sp, errors);
          let any = false;
          for (const [name, def] of SOURCE_FIELD_LIST) {
            const list = checkList(src[name], def.kind, `${sp}.${name}`, errors);
            if (list && list.length > 0) {
              any = true;
              if (l4 && !fieldIsL4(def, mode)) warnings.push(httpWarning(actionName, i, `${sp}.${name}`, 'an HTTP-only attribute'));
            }
          }
          if (!any) errors.push(`${sp}: must not be empty`);
          if (
            (nonEmpty(src.serviceAccounts) || nonEmpty(src.notServiceAccounts)) &&
            (nonEmpty(src.principals) || nonEmpty(src.notPrincipals) || nonEmpty(src.namespaces) || nonEmpty(src.notNamespaces))
          ) {
            errors.push(`${sp}: cannot set serviceAccounts with namespaces or principals`);
          }
        });
      }
    }

    if (!isAbsent(rule.to)) {
      if (!Array.isArray(rule.to)) errors.push(`${rp}.to: must be a list, got ${q(rule.to)}`);
      else if (rule.to.length === 0) errors.push(`${rp}.to: must not be empty (leave it out to match any operation)`);
      else {
        rule.to.forEach((t: unknown, j: number) => {
          const tp = `${rp}.to[${j}]`;
          if (!isObj(t)) {
            errors.push(`${tp}: must be a mapping, got ${q(t)}`);
            return;
          }
          unknownKeys(t, TO_KEYS, tp, errors);
          const op = t.operation;
          if (!isObj(op)) {
            errors.push(`${tp}.operation: ${!isAbsent(op) ? `must be a mapping, got ${q(op)}` : 'required'}`);
            return;
          }
          const op_ = `${tp}.operation`;
          unknownKeys(op, OPERATION_KEYS, op_, errors);
          let any = false;
          for (const [name, def] of OPERATION_FIELD_LIST) {
            const list = checkList(op[name], def.kind, `${op_}.${name}`, errors);
            if (list && list.length > 0) {
              any = true;
              if (l4 && !fieldIsL4(def, mode)) warnings.push(httpWarning(actionName, i, `${op_}.${name}`, 'an HTTP-only attribute'));
            }
          }
          if (!any) errors.push(`${op_}: must not be empty`);
        });
      }
    }

    if (!isAbsent(rule.when)) {
      if (!Array.isArray(rule.when)) errors.push(`${rp}.when: must be a list, got ${q(rule.when)}`);
      else {
        rule.when.forEach((w: unknown, j: number) => {
          const wp = `${rp}.when[${j}]`;
          if (!isObj(w)) {
            errors.push(`${wp}: must be a mapping, got ${q(w)}`);
            return;
          }
          unknownKeys(w, WHEN_KEYS, wp, errors);
          const key = collect(errors, () => nonEmptyStr(w.key, `${wp}.key`));
          if (key === undefined) return;
          const cls = classifyWhenKey(key, mode);
          if (cls.status === 'error') {
            errors.push(`${wp}.key: ${cls.message}`);
            return;
          }
          const vals = checkList(w.values, cls.kind, `${wp}.values`, errors);
          const nvals = checkList(w.notValues, cls.kind, `${wp}.notValues`, errors);
          if ((vals?.length ?? 0) === 0 && (nvals?.length ?? 0) === 0) errors.push(`${wp}: at least one of values or notValues must be set for key ${q(key)}`);
          if (l4 && cls.status === 'http') warnings.push(httpWarning(actionName, i, `${wp}.key`, `${q(key)}`));
        });
      }
    }
  });
  return { errors, warnings };
}

/** Field-path errors of one policy; empty when valid. */
export function validatePolicy(p: AuthorizationPolicy, opts: CheckOptions = {}): string[] {
  return checkPolicy(p, opts).errors;
}
