// How a connection ended is a closed union set where it is handled; the
// Istio response_flags, the denial reason and config_dump's state/reason are
// read from it by exhaustive switches, never from text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dialFailed, hboneFailed, OUTCOME_KINDS, outcomeReason, outcomeState, unreachable, type Outcome } from '../../../src/proxy/outcome.js';
import { denialReason, responseFlags } from '../../../src/metrics/record-view.js';
import { HboneError } from '../../../src/proxy/hbone/common.js';
import { DialError } from '../../../src/datapath/sockets.js';
import { AmbientError } from '../../../src/util/errors.js';
import { ConnectionTracker } from '../../../src/proxy/connections.js';
import { hp } from './fixtures.js';

/** One outcome of every kind (the Record makes a new kind a compile error here until it is listed). */
const SAMPLE: { [K in Outcome['kind']]: Extract<Outcome, { kind: K }> } = {
  closed: { kind: 'closed' },
  reset: { kind: 'reset', by: 'client' },
  socket_error: { kind: 'socket_error', side: 'upstream', errno: 'EPIPE' },
  client_gone: { kind: 'client_gone' },
  denied: { kind: 'denied', policy: 'ns/p', why: 'no ALLOW policy matched' },
  revoked: { kind: 'revoked', policy: 'ns/p' },
  no_endpoint: { kind: 'no_endpoint' },
  upstream_failed: { kind: 'upstream_failed', errno: 'ECONNREFUSED' },
  limit: { kind: 'limit', limit: 'dials' },
  hbone_failed: { kind: 'hbone_failed', code: 'HBONE_CONNECT', status: null, reason: null },
};

test('every outcome kind has a response flag, a state and a reason', () => {
  const expected: Record<Outcome['kind'], string> = {
    closed: '-',
    reset: '-',
    socket_error: '-',
    client_gone: '-',
    denied: 'DENY',
    revoked: 'DENY',
    no_endpoint: 'CONNECT',
    upstream_failed: 'CONNECT',
    limit: 'UO',
    hbone_failed: 'CONNECT',
  };
  assert.deepEqual([...OUTCOME_KINDS].sort(), Object.keys(SAMPLE).sort(), 'OUTCOME_KINDS lists every kind');
  for (const k of OUTCOME_KINDS) {
    const o = SAMPLE[k];
    assert.equal(responseFlags(o), expected[k], k);
    assert.equal(outcomeState(o), k === 'closed' ? 'closed' : 'failed', k);
    assert.ok(outcomeReason(o).length > 0, k);
  }
  assert.equal(responseFlags(null), '-', 'open: no flag yet');
});

test('an HBONE failure is flagged by its code: DENY for a 401 of the peer, TLS_FAILURE for the handshake, else CONNECT', () => {
  const h = (code: 'HBONE_DENIED' | 'HBONE_TLS' | 'HBONE_UNAVAILABLE' | 'HBONE_TIMEOUT' | 'HBONE_CLOSED', status: number | null = null): Outcome => ({
    kind: 'hbone_failed',
    code,
    status,
    reason: null,
  });
  assert.equal(responseFlags(h('HBONE_DENIED', 401)), 'DENY');
  assert.equal(responseFlags(h('HBONE_TLS')), 'TLS_FAILURE');
  assert.equal(responseFlags(h('HBONE_UNAVAILABLE', 503)), 'CONNECT');
  assert.equal(responseFlags(h('HBONE_TIMEOUT')), 'CONNECT');
  assert.equal(responseFlags(h('HBONE_CLOSED')), 'CONNECT');
  assert.equal(outcomeReason(h('HBONE_DENIED', 401)), 'HBONE_DENIED 401');
});

test('denial reason: bounded, only for denials', () => {
  assert.equal(denialReason({ via: 'inbound-plaintext', outcome: SAMPLE.denied }), 'policy_plaintext');
  assert.equal(denialReason({ via: 'inbound-hbone', outcome: SAMPLE.denied }), 'policy_hbone');
  assert.equal(denialReason({ via: 'inbound-hbone', outcome: SAMPLE.revoked }), 'policy_revoked');
  assert.equal(denialReason({ via: 'hbone', outcome: { kind: 'hbone_failed', code: 'HBONE_DENIED', status: 401, reason: null } }), 'denied_by_peer');
  for (const k of OUTCOME_KINDS) {
    const o = SAMPLE[k];
    const r = denialReason({ via: 'hbone', outcome: o });
    assert.equal(r !== null, responseFlags(o) === 'DENY', `${k}: a denial reason exactly when the flag is DENY`);
  }
  assert.equal(denialReason({ via: 'hbone', outcome: null }), null);
});

test('dialFailed: the cap, the errno a DialError or a socket names, else "connect failed"', () => {
  assert.deepEqual(dialFailed(new AmbientError('LIMIT_DIALS', 'busy', 'raise it')), { kind: 'limit', limit: 'dials' });
  assert.deepEqual(dialFailed(new DialError('ECONNREFUSED', 'connect 10.0.0.1:80: ECONNREFUSED')), { kind: 'upstream_failed', errno: 'ECONNREFUSED' });
  assert.deepEqual(dialFailed(Object.assign(new Error('x'), { code: 'ETIMEDOUT' })), { kind: 'upstream_failed', errno: 'ETIMEDOUT' });
  const none = dialFailed('weird');
  assert.deepEqual(none, { kind: 'upstream_failed', errno: null });
  assert.equal(outcomeReason(none), 'connect failed');
  assert.equal(outcomeReason(dialFailed(new AmbientError('LIMIT_DIALS', 'busy', 'raise it'))), 'LIMIT_DIALS');
});

test('hboneFailed: an HboneError keeps code, status and reason; anything else is the session closing', () => {
  assert.deepEqual(hboneFailed(new HboneError('HBONE_DENIED', 'no', { status: 401, reason: 'denied' })), {
    kind: 'hbone_failed',
    code: 'HBONE_DENIED',
    status: 401,
    reason: 'denied',
  });
  assert.deepEqual(hboneFailed(new Error('boom')), { kind: 'hbone_failed', code: 'HBONE_CLOSED', status: null, reason: null });
});

test('a revocation set while the connection is open is how it ends, whatever reset follows', () => {
  const t = new ConnectionTracker();
  const r = t.begin({ pod: 'ns/b', direction: 'inbound', via: 'inbound-plaintext', src: hp('10.0.0.1:1'), dst: hp('10.0.0.2:80') });
  t.revoke(r, 'ns/p');
  assert.equal(t.dump()[0]!.state, 'open', 'still open until it closes');
  t.finish(r, { kind: 'reset', by: 'client' });
  assert.deepEqual(r.outcome, { kind: 'revoked', policy: 'ns/p' });
  assert.equal(t.dump()[0]!.reason, 'denied by policy change (ns/p)');
  t.finish(r, { kind: 'closed' });
  assert.equal(t.list().length, 1, 'finished once');
});

test('unreachable() is a typed internal error', () => {
  assert.throws(
    () => unreachable('x' as never),
    (e: unknown) => e instanceof AmbientError && e.code === 'AGENT_INTERNAL',
  );
});
