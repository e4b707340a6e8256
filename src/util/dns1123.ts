/**
 * Kubernetes name rules (k8s.io/apimachinery/pkg/util/validation), the one
 * place they are written:
 *  - DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters
 *    (namespace names, Service names, port names' shape);
 *  - DNS-1123 subdomain: labels joined by dots, at most 253 characters (most
 *    object names: pods, ServiceAccounts, AuthorizationPolicies);
 *  - IANA service name (a port's name): at most 15 characters of [a-z0-9-],
 *    at least one letter, no leading/trailing or double hyphen;
 *  - label keys ("prefix/name", IsQualifiedName) and label values.
 * As in Kubernetes, a subdomain's labels are not held to 63 characters each:
 * only the pattern and the 253 total are checked.
 */
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export const DNS1123_LABEL_MAX = 63;
export const DNS1123_SUBDOMAIN_MAX = 253;

export function isDns1123Label(v: unknown): v is string {
  return typeof v === 'string' && v.length <= DNS1123_LABEL_MAX && LABEL.test(v);
}

export function isDns1123Subdomain(v: unknown): v is string {
  // Kubernetes checks the pattern and the total length, not each label's length
  return typeof v === 'string' && v.length > 0 && v.length <= DNS1123_SUBDOMAIN_MAX && v.split('.').every((l) => LABEL.test(l));
}

export function isIanaSvcName(v: unknown): v is string {
  return typeof v === 'string' && v.length >= 1 && v.length <= 15 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(v) && /[a-z]/.test(v) && !v.includes('--');
}

const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** The prefix of a label key ("example.com" in "example.com/app"): Kubernetes' IsDNS1123Subdomain (pattern, at most 253 characters). */
export function isLabelKeyPrefix(v: unknown): v is string {
  return isDns1123Subdomain(v);
}

/** The name part of a label key: at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric. */
export function isLabelKeyName(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 63 && QUALIFIED_NAME.test(v);
}

/** A label value: empty, or a label key's name part. */
export function isLabelValue(v: unknown): v is string {
  return v === '' || isLabelKeyName(v);
}

/** What a rule wants, for error messages. */
export const DNS1123_LABEL_RULE = 'a DNS-1123 label (lower-case letters, digits and "-", starting and ending with a letter or digit, at most 63 characters)';
export const DNS1123_SUBDOMAIN_RULE = 'a DNS-1123 subdomain (DNS-1123 labels joined by ".", at most 253 characters)';
export const IANA_SVC_NAME_RULE = 'an IANA service name (at most 15 lower-case letters, digits and "-", at least one letter, no "--")';
