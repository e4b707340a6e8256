/**
 * How a connection ended, decided where it is handled (src/proxy/mesh.ts,
 * relay.ts) and never re-read from text: a closed union, so every reader
 * (config_dump's and the access log's `state`/`reason`, Istio's
 * `response_flags`, the denial reason of the metrics) is a `switch` that
 * TypeScript checks covers every kind.
 */
import type { HboneErrorCode } from './hbone/common.js';
import { HboneError } from './hbone/common.js';
import { AmbientError } from '../util/errors.js';

/** Who reset an established connection. */
export type ResetBy = 'client' | 'peer' | 'upstream' | 'server';

export type Outcome =
  /** both sides finished (FIN both ways) */
  | { readonly kind: 'closed' }
  /** an established connection ended with a reset */
  | { readonly kind: 'reset'; readonly by: ResetBy }
  /** an established relay failed on one side (errno name other than ECONNRESET) */
  | { readonly kind: 'socket_error'; readonly side: 'client' | 'upstream'; readonly errno: string }
  /** the client went away before the upstream side was open */
  | { readonly kind: 'client_gone' }
  /** an AuthorizationPolicy of this node denied it (`policy` = namespace/name when one decided) */
  | { readonly kind: 'denied'; readonly policy: string | null; readonly why: string }
  /** it was allowed, then a policy change denied it while it ran (it was reset) */
  | { readonly kind: 'revoked'; readonly policy: string | null }
  /** the client dialled a service VIP with no ready endpoint */
  | { readonly kind: 'no_endpoint' }
  /** the connection to the destination (or the app, inbound) failed: errno name when known */
  | { readonly kind: 'upstream_failed'; readonly errno: string | null }
  /** a cap of the agent (limits.*) was hit */
  | { readonly kind: 'limit'; readonly limit: 'dials' }
  /** the HBONE tunnel could not be opened: the client's error code, the peer's HTTP status and reject reason */
  | { readonly kind: 'hbone_failed'; readonly code: HboneErrorCode; readonly status: number | null; readonly reason: string | null };

export type OutcomeKind = Outcome['kind'];

/** Every kind, once (a Record over the union: adding a kind without listing it here does not compile). */
const KINDS: Record<OutcomeKind, true> = {
  closed: true,
  reset: true,
  socket_error: true,
  client_gone: true,
  denied: true,
  revoked: true,
  no_endpoint: true,
  upstream_failed: true,
  limit: true,
  hbone_failed: true,
};
export const OUTCOME_KINDS = Object.keys(KINDS) as readonly OutcomeKind[];
export const RESET_BY: readonly ResetBy[] = ['client', 'peer', 'upstream', 'server'];

/** For the `default` of an exhaustive switch: a value of type never cannot reach it. */
export function unreachable(x: never): never {
  throw new AmbientError('AGENT_INTERNAL', `unhandled case ${JSON.stringify(x)}`, 'a bug: a switch misses a case');
}

export const CLOSED: Outcome = { kind: 'closed' };
export const CLIENT_GONE: Outcome = { kind: 'client_gone' };

/** A dial (to a destination or to the app) that failed: the dial cap, or the socket's errno. */
export function dialFailed(e: unknown): Outcome {
  if (e instanceof AmbientError && e.code === 'LIMIT_DIALS') return { kind: 'limit', limit: 'dials' };
  // a DialError (src/datapath/sockets.ts) names the errno; a Node socket error carries it as `code`
  const x = e as { errnoName?: unknown; code?: unknown } | null;
  const name = typeof x?.errnoName === 'string' ? x.errnoName : x?.code;
  return { kind: 'upstream_failed', errno: typeof name === 'string' && name.length > 0 ? name : null };
}

/** An HBONE tunnel that could not be opened (anything but an HboneError counts as the session closing). */
export function hboneFailed(e: unknown): Outcome & { kind: 'hbone_failed' } {
  const h = e instanceof HboneError ? e : new HboneError('HBONE_CLOSED', String((e as Error)?.message ?? e), { cause: e });
  return { kind: 'hbone_failed', code: h.code, status: h.status ?? null, reason: h.reason ?? null };
}

/** config_dump / access-log `state` of an ended connection. */
export function outcomeState(o: Outcome): 'closed' | 'failed' {
  switch (o.kind) {
    case 'closed':
      return 'closed';
    case 'reset':
    case 'socket_error':
    case 'client_gone':
    case 'denied':
    case 'revoked':
    case 'no_endpoint':
    case 'upstream_failed':
    case 'limit':
    case 'hbone_failed':
      return 'failed';
    default:
      return unreachable(o);
  }
}

/** config_dump / access-log `reason`: the text these have always carried ("eof", "reset by client", "denied by policy ns/p (...)", "HBONE_DENIED 401", ...). */
export function outcomeReason(o: Outcome): string {
  switch (o.kind) {
    case 'closed':
      return 'eof';
    case 'reset':
      return `reset by ${o.by}`;
    case 'socket_error':
      return `${o.side}: ${o.errno}`;
    case 'client_gone':
      return 'client gone';
    case 'denied':
      return `denied by policy${o.policy ? ` ${o.policy}` : ''} (${o.why})`;
    case 'revoked':
      return `denied by policy change${o.policy ? ` (${o.policy})` : ''}`;
    case 'no_endpoint':
      return 'no ready endpoint';
    case 'upstream_failed':
      return o.errno ?? 'connect failed';
    case 'limit':
      return `LIMIT_${o.limit.toUpperCase()}`;
    case 'hbone_failed':
      return `${o.code}${o.status ? ` ${o.status}` : ''}`;
    default:
      return unreachable(o);
  }
}
