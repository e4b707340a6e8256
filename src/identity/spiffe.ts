/**
 * SPIFFE identities in the Istio/Kubernetes form
 * `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
 *
 * Validation follows the SPIFFE ID spec (lower-case scheme and trust domain,
 * trust domain charset [a-z0-9._-], path segments [A-Za-z0-9._-], no `.`/`..`
 * segments, no query/fragment/userinfo/port) plus the Kubernetes shape
 * (exactly `ns/<ns>/sa/<sa>`).
 */

import { AmbientError, type IdentityCode } from '../util/errors.js';

export type SpiffeIdErrorCode = Extract<IdentityCode, `SPIFFE_${string}`>;

const SPIFFE_HINT =
  'a workload identity is spiffe://<trust domain>/ns/<namespace>/sa/<service account>: lower-case trust domain [a-z0-9._-], path segments [A-Za-z0-9._-]';

export class SpiffeIdError extends AmbientError {
  declare readonly code: SpiffeIdErrorCode;
  constructor(
    code: SpiffeIdErrorCode,
    message: string,
    /** The offending input (truncated to 256 chars). */
    readonly input: string,
  ) {
    super(code, message, SPIFFE_HINT);
    this.name = 'SpiffeIdError';
  }
}

export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

export const SPIFFE_SCHEME = 'spiffe://';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
/** SPIFFE spec: URIs SHOULD NOT exceed 2048 bytes. */
export const MAX_SPIFFE_ID_LENGTH = 2048;
const MAX_TRUST_DOMAIN_LENGTH = 255;

const TRUST_DOMAIN_RE = /^[a-z0-9._-]+$/;
const SEGMENT_RE = /^[A-Za-z0-9._-]+$/;

function clip(s: string): string {
  return s.length > 256 ? s.slice(0, 256) + '…' : s;
}

/** Throws SpiffeIdError unless `td` is a valid SPIFFE trust domain. */
export function validateTrustDomain(td: string): void {
  if (typeof td !== 'string' || td.length === 0) {
    throw new SpiffeIdError('SPIFFE_BAD_TRUST_DOMAIN', 'trust domain is empty', String(td));
  }
  if (td.length > MAX_TRUST_DOMAIN_LENGTH) {
    throw new SpiffeIdError('SPIFFE_BAD_TRUST_DOMAIN', `trust domain longer than ${MAX_TRUST_DOMAIN_LENGTH}`, clip(td));
  }
  if (!TRUST_DOMAIN_RE.test(td)) {
    throw new SpiffeIdError('SPIFFE_BAD_TRUST_DOMAIN', 'trust domain may only contain lower-case letters, digits, ".", "-" and "_"', clip(td));
  }
}

function validateSegment(seg: string, what: string, input: string): void {
  if (seg.length === 0) throw new SpiffeIdError('SPIFFE_BAD_PATH', `${what} is empty`, clip(input));
  if (seg === '.' || seg === '..') throw new SpiffeIdError('SPIFFE_BAD_PATH', `${what} may not be "." or ".."`, clip(input));
  if (!SEGMENT_RE.test(seg)) {
    throw new SpiffeIdError('SPIFFE_BAD_PATH', `${what} contains characters outside [A-Za-z0-9._-]`, clip(input));
  }
}

/** Parses and validates `spiffe://<td>/ns/<ns>/sa/<sa>`. Throws SpiffeIdError. */
export function parseSpiffeId(uri: string): SpiffeId {
  if (typeof uri !== 'string' || uri.length === 0) {
    throw new SpiffeIdError('SPIFFE_EMPTY', 'SPIFFE id is empty', String(uri ?? ''));
  }
  if (uri.length > MAX_SPIFFE_ID_LENGTH) {
    throw new SpiffeIdError('SPIFFE_TOO_LONG', `SPIFFE id longer than ${MAX_SPIFFE_ID_LENGTH}`, clip(uri));
  }
  if (!uri.startsWith(SPIFFE_SCHEME)) {
    throw new SpiffeIdError('SPIFFE_BAD_SCHEME', 'SPIFFE id must start with "spiffe://"', clip(uri));
  }
  const rest = uri.slice(SPIFFE_SCHEME.length);
  const slash = rest.indexOf('/');
  const td = slash < 0 ? rest : rest.slice(0, slash);
  // userinfo / port / query / fragment are caught by the charset check.
  validateTrustDomain(td);
  if (slash < 0) throw new SpiffeIdError('SPIFFE_NOT_K8S', 'SPIFFE id has no path', clip(uri));
  const path = rest.slice(slash + 1);
  const segs = path.split('/');
  for (const s of segs) validateSegment(s, 'path segment', uri);
  if (segs.length !== 4 || segs[0] !== 'ns' || segs[2] !== 'sa') {
    throw new SpiffeIdError('SPIFFE_NOT_K8S', 'SPIFFE id path must be /ns/<namespace>/sa/<service-account>', clip(uri));
  }
  return { trustDomain: td, namespace: segs[1]!, serviceAccount: segs[3]! };
}

/** Like parseSpiffeId but returns undefined instead of throwing. */
export function tryParseSpiffeId(uri: string): SpiffeId | undefined {
  try {
    return parseSpiffeId(uri);
  } catch {
    return undefined;
  }
}

export function isSpiffeId(uri: string): boolean {
  return tryParseSpiffeId(uri) !== undefined;
}

/** Formats (and validates) a SPIFFE id. Throws SpiffeIdError. */
export function formatSpiffeId(id: SpiffeId): string {
  validateTrustDomain(id.trustDomain);
  const s = `${SPIFFE_SCHEME}${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
  validateSegment(id.namespace, 'namespace', s);
  validateSegment(id.serviceAccount, 'service account', s);
  if (s.length > MAX_SPIFFE_ID_LENGTH) {
    throw new SpiffeIdError('SPIFFE_TOO_LONG', `SPIFFE id longer than ${MAX_SPIFFE_ID_LENGTH}`, clip(s));
  }
  return s;
}

/** Normalises a string or SpiffeId to its validated string form. */
export function spiffeIdToString(id: string | SpiffeId): string {
  if (typeof id === 'string') {
    parseSpiffeId(id);
    return id;
  }
  return formatSpiffeId(id);
}

/**
 * Splits the `subjectaltname` string Node reports for a peer certificate
 * (e.g. `URI:spiffe://a/ns/b/sa/c, DNS:x`) into its URI entries. Handles the
 * JSON-quoted form Node uses for values containing separators.
 */
export function uriSansFromSubjectAltName(subjectaltname: string | undefined): string[] {
  if (!subjectaltname) return [];
  const out: string[] = [];
  let i = 0;
  const s = subjectaltname;
  while (i < s.length) {
    while (s[i] === ' ' || s[i] === ',') i++;
    if (i >= s.length) break;
    const colon = s.indexOf(':', i);
    if (colon < 0) break;
    const type = s.slice(i, colon);
    let value: string;
    let j = colon + 1;
    if (s[j] === '"') {
      // JSON string literal
      let k = j + 1;
      while (k < s.length && s[k] !== '"') k += s[k] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(s.slice(j, k + 1)) as string;
      } catch {
        value = s.slice(j + 1, k);
      }
      j = k + 1;
    } else {
      const comma = s.indexOf(', ', j);
      const end = comma < 0 ? s.length : comma;
      value = s.slice(j, end);
      j = end;
    }
    if (type === 'URI') out.push(value);
    i = j;
  }
  return out;
}
