/**
 * The one toolkit for reading untrusted structured input (Kubernetes
 * objects, the workload file, the agent config, AuthorizationPolicies): each
 * reader takes the value and its field path, returns the typed value or
 * throws a FieldError naming the field ("spec.ports[0].port: must be a port
 * number 1-65535, got 0"). Callers decide what a FieldError becomes (an entry
 * skipped, a file rejected, a policy marked invalid) with `collect`.
 */
import path from 'node:path';
import { AmbientError, type ErrorCode } from './errors.js';
import { badIpReason, canonicalIp } from './address.js';
import { DNS1123_LABEL_RULE, DNS1123_SUBDOMAIN_RULE, IANA_SVC_NAME_RULE, isDns1123Label, isDns1123Subdomain, isIanaSvcName } from './dns1123.js';

export type Obj = Record<string, unknown>;

export class FieldError extends AmbientError {
  constructor(
    readonly field: string,
    readonly problem: string,
    code: ErrorCode = 'K8S_OBJECT_INVALID',
    hint = `fix ${field}`,
  ) {
    super(code, `${field}: ${problem}`, hint);
    this.name = 'FieldError';
  }
}

/** A value for a message: JSON, at most 80 characters. */
export function show(v: unknown): string {
  const s = v === undefined ? 'undefined' : (JSON.stringify(v) ?? String(v));
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

export function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** null and undefined both mean "not set" (Kubernetes prunes nulls). */
export function isAbsent(v: unknown): v is null | undefined {
  return v === undefined || v === null;
}
const absent = isAbsent;

/** An object; absent is an error when required, else undefined. */
export function obj(v: unknown, field: string, required: true): Obj;
export function obj(v: unknown, field: string, required?: boolean): Obj | undefined;
export function obj(v: unknown, field: string, required = false): Obj | undefined {
  if (absent(v)) {
    if (required) throw new FieldError(field, 'missing');
    return undefined;
  }
  if (!isObj(v)) throw new FieldError(field, `must be an object, got ${show(v)}`);
  return v;
}

/** A list; absent reads as []. */
export function list(v: unknown, field: string): unknown[] {
  if (absent(v)) return [];
  if (!Array.isArray(v)) throw new FieldError(field, `must be a list, got ${show(v)}`);
  return v;
}

export function str(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') throw new FieldError(field, absent(v) ? 'missing' : `must be a non-empty string, got ${show(v)}`);
  return v;
}

/** A non-empty string; anything else (absent too) is "must be a non-empty string, got X". */
export function nonEmptyStr(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') throw new FieldError(field, `must be a non-empty string, got ${show(v)}`);
  return v;
}

export function optStr(v: unknown, field: string): string | undefined {
  if (absent(v)) return undefined;
  if (typeof v !== 'string') throw new FieldError(field, `must be a string, got ${show(v)}`);
  return v;
}

export function optBool(v: unknown, field: string): boolean | undefined {
  if (absent(v)) return undefined;
  if (typeof v !== 'boolean') throw new FieldError(field, `must be true or false, got ${show(v)}`);
  return v;
}

export function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new FieldError(field, `must be a whole number ${min}-${max}, got ${show(v)}`);
  return v;
}

export function port(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new FieldError(field, `must be a port number 1-65535, got ${show(v)}`);
  return v;
}

export function oneOf<T extends string>(v: unknown, field: string, values: readonly T[], def?: T): T {
  if (absent(v) && def !== undefined) return def;
  if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
  throw new FieldError(field, `must be one of ${values.join(', ')}, got ${show(v)}`);
}

/** An IP address of either family, in its canonical text (src/util/address.ts: IPv6 compressed lower case, v4-mapped as IPv4). */
export function ip(v: unknown, field: string): string {
  const c = typeof v === 'string' ? canonicalIp(v) : null;
  if (c === null) throw new FieldError(field, `${show(v)} ${badIpReason(v) ?? 'is not an IP address'}`);
  return c;
}

/** A DNS-1123 label (namespace names, Service names). */
export function label(v: unknown, field: string): string {
  if (!isDns1123Label(v)) throw new FieldError(field, `${show(v)} is not ${DNS1123_LABEL_RULE}`);
  return v;
}

/** A DNS-1123 subdomain (pod, ServiceAccount, policy names). */
export function subdomain(v: unknown, field: string): string {
  if (!isDns1123Subdomain(v)) throw new FieldError(field, `${show(v)} is not ${DNS1123_SUBDOMAIN_RULE}`);
  return v;
}

/**
 * An object name that must be given: a non-empty string ("must be a
 * non-empty string, got X"), then the DNS-1123 rule ("label": namespace and
 * Service names; "subdomain": pods, nodes, ServiceAccounts, policies).
 */
export function dnsName(v: unknown, field: string, rule: 'label' | 'subdomain'): string {
  const s = nonEmptyStr(v, field);
  return rule === 'label' ? label(s, field) : subdomain(s, field);
}

/** A port name (IANA service name). */
export function portName(v: unknown, field: string): string {
  if (!isIanaSvcName(v)) throw new FieldError(field, `${show(v)} is not ${IANA_SVC_NAME_RULE}`);
  return v;
}

/** A file path: absolute, or relative to `base` (null: relative is an error); absent reads as null. */
export function filePath(v: unknown, field: string, base: string | null): string | null {
  if (absent(v)) return null;
  if (typeof v !== 'string' || v === '') throw new FieldError(field, `must be a path, got ${show(v)}`);
  if (path.isAbsolute(v)) return v;
  if (base === null) throw new FieldError(field, `must be an absolute path, got ${show(v)}`);
  return path.join(base, v);
}

/** A map of strings (labels, annotations); absent reads as {}. */
export function strMap(v: unknown, field: string): Record<string, string> {
  if (absent(v)) return {};
  if (!isObj(v)) throw new FieldError(field, `must be a map of strings, got ${show(v)}`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw new FieldError(`${field}.${k}`, `must be a string, got ${show(val)}`);
    out[k] = val;
  }
  return out;
}

/** Rejects keys outside `known` (strict inputs: config, the workload file's compact form). */
export function knownKeys(o: Obj, known: readonly string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) throw new FieldError(where ? `${where}.${k}` : k, `unknown field (known: ${known.join(', ')})`);
  }
}

/** Runs `read`; a FieldError is pushed to `errors` (its message) and yields undefined. Other errors propagate. */
export function collect<T>(errors: string[], read: () => T): T | undefined {
  try {
    return read();
  } catch (e) {
    if (e instanceof FieldError) {
      errors.push(e.message);
      return undefined;
    }
    throw e;
  }
}
