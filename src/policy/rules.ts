/**
 * One AuthorizationPolicy rule compiled into predicates over a connection's
 * attributes (the matching semantics are at the top of engine.ts), and those
 * attributes computed lazily, once per evaluation.
 */
import { IpSet, parseCidr, parseIp, type IpAddr, type IpRange } from './ip.js';
import { classifyWhenKey, fieldIsL4, OPERATION_FIELD_LIST, SOURCE_FIELD_LIST, type L4Attr, type RemoteIpMode } from './validate.js';
import { DEFAULT_TRUST_DOMAIN, type ConnectionAttributes } from './types.js';

// ---------------------------------------------------------------------------
// connection attributes, computed lazily once per evaluation

export class Ctx {
  private idDone = false;
  private p: string | null = null;
  private n: string | null = null;
  private s: string | null = null;
  private sk: string | null | undefined = undefined;
  private t: string | null = null;
  private srcDone = false;
  private srcA: IpAddr | null = null;
  private dstDone = false;
  private dstA: IpAddr | null = null;
  readonly port: number;

  constructor(private readonly conn: ConnectionAttributes) {
    this.port = conn.dst.port;
  }

  private identity(): void {
    this.idDone = true;
    const src = this.conn.src;
    let p = src.principal;
    if (typeof p !== 'string' || p === '') return;
    if (p.startsWith('spiffe://')) p = p.slice(9);
    if (p === '') return;
    this.p = p;
    // <td>/ns/<ns>/sa/<sa>, without split(): this runs once per connection
    const a = p.indexOf('/');
    this.t = a > 0 ? p.slice(0, a) : a < 0 ? p : null;
    const b = a >= 0 && p.startsWith('ns/', a + 1) ? p.indexOf('/', a + 4) : -1;
    if (b > a + 4 && p.startsWith('sa/', b + 1) && p.length > b + 4 && p.indexOf('/', b + 4) < 0) {
      this.n = p.slice(a + 4, b);
      this.s = p.slice(b + 4);
    } else {
      this.n = typeof src.namespace === 'string' && src.namespace !== '' ? src.namespace : null;
      this.s = typeof src.serviceAccount === 'string' && src.serviceAccount !== '' ? src.serviceAccount : null;
    }
  }

  get saKey(): string | null {
    if (!this.idDone) this.identity();
    if (this.sk === undefined) this.sk = this.n !== null && this.s !== null ? `${this.n}/${this.s}` : null;
    return this.sk;
  }

  get principal(): string | null {
    if (!this.idDone) this.identity();
    return this.p;
  }
  get namespace(): string | null {
    if (!this.idDone) this.identity();
    return this.n;
  }
  get trustDomain(): string | null {
    if (!this.idDone) this.identity();
    return this.t;
  }

  get srcIp(): IpAddr | null {
    if (!this.srcDone) {
      this.srcDone = true;
      this.srcA = parseIp(this.conn.src.ip);
    }
    return this.srcA;
  }

  get dstIp(): IpAddr | null {
    if (!this.dstDone) {
      this.dstDone = true;
      this.dstA = parseIp(this.conn.dst.ip);
    }
    return this.dstA;
  }
}

// ---------------------------------------------------------------------------
// matchers

class StrMatcher {
  private readonly exact = new Set<string>();
  private readonly prefixes: string[] = [];
  private readonly suffixes: string[] = [];
  private presence = false;

  constructor(values: string[]) {
    for (const v of values) {
      if (v === '*') this.presence = true;
      else if (v.startsWith('*')) this.suffixes.push(v.slice(1));
      else if (v.endsWith('*')) this.prefixes.push(v.slice(0, -1));
      else this.exact.add(v);
    }
  }

  test(v: string): boolean {
    if (this.presence && v !== '') return true;
    if (this.exact.has(v)) return true;
    for (const p of this.prefixes) if (v.startsWith(p)) return true;
    for (const s of this.suffixes) if (v.endsWith(s)) return true;
    return false;
  }
}

/** One check on the connection; an entry is a conjunction of them. */
export type Pred = (c: Ctx) => boolean;

export interface CompileCtx {
  policyNamespace: string;
  trustDomain: string;
  mode: RemoteIpMode;
}

function rewritePrincipal(v: string, td: string): string {
  if (td === DEFAULT_TRUST_DOMAIN) return v;
  const parts = v.split('/');
  if (parts.length === 5 && parts[0] === DEFAULT_TRUST_DOMAIN) {
    parts[0] = td;
    return parts.join('/');
  }
  return v;
}

function strPred(get: (c: Ctx) => string | null, m: StrMatcher, negative: boolean): Pred {
  return negative
    ? (c) => {
        const v = get(c);
        return v === null || !m.test(v);
      }
    : (c) => {
        const v = get(c);
        return v !== null && m.test(v);
      };
}

function makePred(attr: L4Attr, values: string[], negative: boolean, cc: CompileCtx): Pred {
  switch (attr) {
    case 'principal':
      return strPred((c) => c.principal, new StrMatcher(values.map((v) => rewritePrincipal(v, cc.trustDomain))), negative);
    case 'namespace':
      return strPred((c) => c.namespace, new StrMatcher(values), negative);
    case 'trustDomain':
      return strPred((c) => c.trustDomain, new StrMatcher(values), negative);
    case 'serviceAccount': {
      const set = new Set(values.map((v) => (v.includes('/') ? v : `${cc.policyNamespace}/${v}`)));
      return negative
        ? (c) => {
            const k = c.saKey;
            return k === null || !set.has(k);
          }
        : (c) => {
            const k = c.saKey;
            return k !== null && set.has(k);
          };
    }
    case 'sourceIp':
    case 'destinationIp': {
      const set = new IpSet(values.map((v) => parseCidr(v)).filter((r): r is IpRange => r !== null));
      const src = attr === 'sourceIp';
      return negative
        ? (c) => {
            const a = src ? c.srcIp : c.dstIp;
            return a === null || !set.has(a);
          }
        : (c) => {
            const a = src ? c.srcIp : c.dstIp;
            return a !== null && set.has(a);
          };
    }
    case 'destinationPort': {
      const set = new Set(values.map(Number));
      return negative ? (c) => !set.has(c.port) : (c) => set.has(c.port);
    }
  }
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

export interface CompiledRule {
  /** index in spec.rules */
  index: number;
  /** all must match; each clause is a list of entries (any), each entry a list of preds (all) */
  clauses: Pred[][][];
}

/** Compiles one entry (a source or an operation): L4 fields only. */
function compileEntry(o: Record<string, unknown>, fields: typeof SOURCE_FIELD_LIST, cc: CompileCtx): { preds: Pred[]; http: boolean } {
  const preds: Pred[] = [];
  let http = false;
  for (const [name, def] of fields) {
    const values = strings(o[name]);
    if (values.length === 0) continue;
    if (!fieldIsL4(def, cc.mode)) {
      http = true;
      continue;
    }
    preds.push(makePred(def.attr!, values, def.negative, cc));
  }
  return { preds, http };
}

/** null: the rule can never match (an ALLOW rule with HTTP attributes). */
export function compileRule(rule: Record<string, unknown>, index: number, deny: boolean, cc: CompileCtx): CompiledRule | null {
  const clauses: Pred[][][] = [];
  let http = false;
  const addClause = (entries: Pred[][]): void => {
    // an entry with no checks matches everything, and so does its clause
    if (entries.some((e) => e.length === 0)) return;
    clauses.push(entries);
  };
  for (const [list, key, fields] of [
    [rule.to, 'operation', OPERATION_FIELD_LIST],
    [rule.from, 'source', SOURCE_FIELD_LIST],
  ] as const) {
    if (!Array.isArray(list)) continue;
    const entries: Pred[][] = [];
    for (const item of list as Array<Record<string, unknown>>) {
      const e = compileEntry((item[key] ?? {}) as Record<string, unknown>, fields, cc);
      if (e.http) http = true;
      entries.push(e.preds);
    }
    if (entries.length > 0) addClause(entries);
  }
  if (Array.isArray(rule.when)) {
    for (const w of rule.when as Array<Record<string, unknown>>) {
      const cls = classifyWhenKey(String(w.key), cc.mode);
      if (cls.status !== 'l4') {
        http = true;
        continue;
      }
      const preds: Pred[] = [];
      const values = strings(w.values);
      const notValues = strings(w.notValues);
      if (values.length > 0) preds.push(makePred(cls.attr, values, false, cc));
      if (notValues.length > 0) preds.push(makePred(cls.attr, notValues, true, cc));
      addClause([preds]);
    }
  }
  if (http && !deny) return null;
  return { index, clauses };
}
