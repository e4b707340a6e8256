// Connection records received from the agent this one replaced (hand-over):
// only well-formed closed records of the format version this agent writes are
// counted in the successor's metrics; anything else is a typed, counted error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionTracker, type TrackedConnection } from '../../../src/proxy/connections.js';
import { droppedRecordCounters, encodeRecord, RECORD_VERSION, RecordError, recordFromWire, recordToWire } from '../../../src/lifecycle/records.js';
import { AmbientError } from '../../../src/util/errors.js';
import type { Outcome } from '../../../src/proxy/outcome.js';
import { hp } from '../proxy/fixtures.js';

function closedTracked(): TrackedConnection {
  let now = 1_700_000_000_000;
  const t = new ConnectionTracker(1000, () => (now += 250));
  const rec = t.begin({
    pod: 'ambient-demo/n1-p1',
    direction: 'outbound',
    src: hp('10.244.1.2:40000'),
    dst: hp('10.244.2.2:7000'),
    via: 'hbone',
    peerIdentity: 'spiffe://cluster.local/ns/ambient-demo/sa/sa-n2-p1',
  });
  t.finish(rec, { kind: 'closed' }, { sent: 1234, received: 56 });
  return rec;
}

function closedRecord(): Record<string, unknown> {
  // what crosses the hand-over socket: one JSON line
  return JSON.parse(encodeRecord(closedTracked())) as Record<string, unknown>;
}

function refused(x: unknown): RecordError {
  const r = recordFromWire(x);
  assert.equal(r.ok, false, `refused: ${JSON.stringify(x)?.slice(0, 200)}`);
  if (r.ok) throw new AmbientError('AGENT_INTERNAL', 'unreachable', 'test');
  assert.ok(r.error instanceof RecordError);
  assert.ok(r.error instanceof AmbientError, 'a typed AmbientError');
  assert.ok(r.error.hint.length > 0, 'with a hint');
  return r.error;
}

test('a closed record round-trips through JSON unchanged', () => {
  const rec = closedTracked();
  const raw = closedRecord();
  assert.equal(raw.v, RECORD_VERSION, 'every line carries the record format version');
  const back = recordFromWire(raw);
  assert.ok(back.ok);
  assert.deepEqual(back.rec, rec);
  assert.deepEqual(recordToWire(back.rec), raw);
});

test('IPv6 addresses, a claimed source, a service endpoint and every outcome kind round-trip', () => {
  const outcomes: Outcome[] = [
    { kind: 'closed' },
    { kind: 'reset', by: 'peer' },
    { kind: 'socket_error', side: 'upstream', errno: 'EPIPE' },
    { kind: 'client_gone' },
    { kind: 'denied', policy: 'ns/p', why: 'no ALLOW policy matched' },
    { kind: 'denied', policy: null, why: 'HBONE 401' },
    { kind: 'revoked', policy: null },
    { kind: 'no_endpoint' },
    { kind: 'upstream_failed', errno: 'ECONNREFUSED' },
    { kind: 'upstream_failed', errno: null },
    { kind: 'limit', limit: 'dials' },
    { kind: 'hbone_failed', code: 'HBONE_DENIED', status: 401, reason: 'denied' },
    { kind: 'hbone_failed', code: 'HBONE_TLS', status: null, reason: null },
  ];
  for (const outcome of outcomes) {
    const rec: TrackedConnection = {
      id: 3,
      pod: 'ns/b',
      direction: 'inbound',
      via: 'inbound-hbone',
      src: hp('[fd00::1]:40000'),
      claimedSrc: { ip: 'fd00::9', port: null },
      dst: hp('[::1]:80'),
      service: 'ns/svc',
      endpoint: hp('[fd00::2]:8080'),
      peerIdentity: 'spiffe://td/ns/ns/sa/a',
      peerCertSerial: '0a1b',
      startMs: 1_700_000_000_000,
      endMs: 1_700_000_001_500,
      bytesSent: 1,
      bytesReceived: 2,
      outcome,
    };
    const line = encodeRecord(rec);
    const wire = JSON.parse(line) as Record<string, unknown>;
    assert.equal(wire.dst, '[::1]:80', 'IPv6 in brackets');
    assert.equal(wire.src, '[fd00::1]:40000');
    assert.equal(wire.claimedSrc, 'fd00::9', 'a claim without a port is the bare address');
    const back = recordFromWire(wire);
    assert.ok(back.ok, outcome.kind);
    assert.deepEqual(back.rec, rec, outcome.kind);
  }
});

test('anything else is refused: wrong types, open records, unknown via, absurd byte counts', () => {
  const bad: Array<[string, (r: Record<string, unknown>) => unknown, string | null]> = [
    ['not an object', () => 'x', null],
    ['null', () => null, null],
    ['array', () => [], null],
    ['open record', (r) => ({ ...r, endMs: null, outcome: null }), 'endMs'],
    ['unknown via', (r) => ({ ...r, via: 'carrier-pigeon' }), 'via'],
    ['unknown direction', (r) => ({ ...r, direction: 'sideways' }), 'direction'],
    ['via of the other direction', (r) => ({ ...r, via: 'inbound-hbone' }), 'via'],
    ['negative bytes', (r) => ({ ...r, bytesSent: -1 }), 'bytesSent'],
    ['fractional bytes', (r) => ({ ...r, bytesReceived: 1.5 }), 'bytesReceived'],
    ['bytes as string', (r) => ({ ...r, bytesSent: '1234' }), 'bytesSent'],
    ['huge string', (r) => ({ ...r, pod: 'x'.repeat(5000) }), 'pod'],
    ['peer identity a number', (r) => ({ ...r, peerIdentity: 7 }), 'peerIdentity'],
    [
      'missing src',
      (r) => {
        const c = { ...r };
        delete c.src;
        return c;
      },
      'src',
    ],
    ['src not ip:port', (r) => ({ ...r, src: 'example.com:80' }), 'src'],
    ['IPv6 without brackets', (r) => ({ ...r, dst: 'fd00::1:80' }), 'dst'],
    ['port out of range', (r) => ({ ...r, dst: '10.0.0.1:70000' }), 'dst'],
    ['end before start', (r) => ({ ...r, endMs: (r.startMs as number) - 1 }), 'endMs'],
    ['unknown outcome kind', (r) => ({ ...r, outcome: { kind: 'teleported' } }), 'outcome.kind'],
    ['outcome without its detail', (r) => ({ ...r, outcome: { kind: 'reset' } }), 'outcome.by'],
    ['unknown HBONE code', (r) => ({ ...r, outcome: { kind: 'hbone_failed', code: 'HBONE_NOPE', status: null, reason: null } }), 'outcome.code'],
    ['absurd HTTP status', (r) => ({ ...r, outcome: { kind: 'hbone_failed', code: 'HBONE_DENIED', status: 4010, reason: null } }), 'outcome.status'],
  ];
  for (const [what, make, field] of bad) {
    const e = refused(make(closedRecord()));
    assert.equal(e.code, 'HANDOVER_RECORD_INVALID', what);
    assert.equal(e.field, field, what);
    if (field) assert.match(e.message, new RegExp(field.replace('.', '\\.')), `${what}: the message names the field`);
    assert.deepEqual(droppedRecordCounters(e), ['handover_record_invalid'], what);
  }
});

test('a record of another format version, or an unversioned one from an older agent, is refused as such and counted apart', () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ['a future version', { ...closedRecord(), v: RECORD_VERSION + 1 }],
    ['a version as text', { ...closedRecord(), v: String(RECORD_VERSION) }],
    // what an agent from before versioned records sent: the config_dump shape, no "v"
    [
      'unversioned (older agent)',
      {
        id: 1,
        pod: 'ambient-demo/n1-p1',
        direction: 'outbound',
        src: '10.244.1.2:40000',
        dst: '10.244.2.2:7000',
        via: 'hbone',
        peerIdentity: null,
        bytesSent: 1,
        bytesReceived: 2,
        start: '2024-01-01T00:00:00.000Z',
        end: '2024-01-01T00:00:01.000Z',
        state: 'closed',
        reason: 'eof',
      },
    ],
  ];
  for (const [what, x] of cases) {
    const e = refused(x);
    assert.equal(e.code, 'HANDOVER_RECORD_VERSION', what);
    assert.equal(e.field, 'v', what);
    assert.match(e.message, new RegExp(`reads version ${RECORD_VERSION}`), what);
    assert.deepEqual(
      droppedRecordCounters(e),
      ['handover_record_invalid', 'handover_record_unknown_version'],
      `${what}: counted as invalid and as another version`,
    );
    assert.deepEqual(e.toJSON().code, 'HANDOVER_RECORD_VERSION');
  }
  assert.match(refused({ id: 1 }).message, /version none/, 'the message says the record had no version');
});

test('an open record is not handed over (a bug, not a wire format)', () => {
  const t = new ConnectionTracker();
  const rec = t.begin({ pod: 'ns/a', direction: 'outbound', src: hp('10.0.0.1:1'), dst: hp('10.0.0.2:2'), via: 'passthrough' });
  assert.throws(
    () => encodeRecord(rec),
    (e: unknown) => e instanceof AmbientError && e.code === 'AGENT_INTERNAL',
  );
});
