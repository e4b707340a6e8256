// One derivation of who talked to whom: the Istio labels of the metrics and
// the access-log fields come from recordView() and agree on every record.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordContext, recordView, responseFlags, sidesOf, workloadName, UNKNOWN } from '../../../src/metrics/record-view.js';
import { istioLabels } from '../../../src/metrics/metrics.js';
import { accessLogEntry } from '../../../src/admin/access-log.js';
import { MeshIndex, emptySnapshot } from '../../../src/discovery/model.js';
import type { TrackedConnection } from '../../../src/proxy/connections.js';
import type { Outcome } from '../../../src/proxy/outcome.js';
import { hp, pod, spiffe, tracked } from '../proxy/fixtures.js';

function model(): MeshIndex {
  const s = emptySnapshot();
  s.pods.set('shop/web-7d4b9c8f6d-x2x9z', pod('web-7d4b9c8f6d-x2x9z', 'shop', '10.0.0.1', { app: 'web', 'pod-template-hash': '7d4b9c8f6d' }));
  s.pods.set('db/db-0', pod('db-0', 'db', '10.0.0.2', { app: 'db' }));
  s.pods.set('v6/six', pod('six', 'v6', 'fd00::6'));
  s.services.set('db/pg', {
    name: 'pg',
    namespace: 'db',
    hostname: 'pg.db.svc.cluster.local',
    vips: ['10.96.0.5'],
    ports: [{ port: 5432, targetPort: 5432, protocol: 'TCP' }],
    endpoints: [{ ip: '10.0.0.2', ready: true }],
  });
  return new MeshIndex(s);
}

const WEB = 'spiffe://cluster.local/ns/shop/sa/sa-web-7d4b9c8f6d-x2x9z';
const DB = 'spiffe://cluster.local/ns/db/sa/sa-db-0';
const T0 = Date.parse('2024-01-01T00:00:00.000Z');

const records: Array<[string, TrackedConnection]> = [
  [
    'outbound HBONE via a service',
    tracked({
      pod: 'shop/web-7d4b9c8f6d-x2x9z',
      direction: 'outbound',
      via: 'hbone',
      src: hp('10.0.0.1:40000'),
      dst: hp('10.96.0.5:5432'),
      service: 'db/pg',
      endpoint: hp('10.0.0.2:5432'),
      peerIdentity: DB,
    }),
  ],
  [
    'outbound passthrough to the outside',
    tracked({ pod: 'shop/web-7d4b9c8f6d-x2x9z', direction: 'outbound', via: 'passthrough', src: hp('10.0.0.1:40000'), dst: hp('192.0.2.9:443') }),
  ],
  [
    'inbound plaintext from a mesh pod',
    tracked({ pod: 'db/db-0', direction: 'inbound', via: 'inbound-plaintext', src: hp('10.0.0.1:5555'), dst: hp('10.0.0.2:5432') }),
  ],
  [
    'inbound HBONE, proven identity of the pod at the address',
    tracked({
      pod: 'db/db-0',
      direction: 'inbound',
      via: 'inbound-hbone',
      src: hp('10.0.0.1:5555'),
      dst: hp('10.0.0.2:5432'),
      peerIdentity: WEB,
      claimedSrc: { ip: '10.99.0.1', port: 7 },
    }),
  ],
  [
    'inbound HBONE, another identity than the pod at the address',
    tracked({
      pod: 'db/db-0',
      direction: 'inbound',
      via: 'inbound-hbone',
      src: hp('10.0.0.1:5555'),
      dst: hp('10.0.0.2:5432'),
      peerIdentity: 'spiffe://cluster.local/ns/evil/sa/mallory',
    }),
  ],
  ['IPv6 inbound plaintext', tracked({ pod: 'v6/six', direction: 'inbound', via: 'inbound-plaintext', src: hp('[fd00::1]:5555'), dst: hp('[fd00::6]:80') })],
];
const outcomes: Array<Outcome | null> = [
  null,
  { kind: 'closed' },
  { kind: 'reset', by: 'peer' },
  { kind: 'denied', policy: 'db/p', why: 'no ALLOW policy matched' },
  { kind: 'revoked', policy: null },
  { kind: 'upstream_failed', errno: 'ECONNREFUSED' },
  { kind: 'limit', limit: 'dials' },
  { kind: 'hbone_failed', code: 'HBONE_TLS', status: null, reason: 'san_mismatch' },
];

test('metric labels and access-log fields agree: workloads, principals, how it ended, security', () => {
  const idx = model();
  const ctx = recordContext(idx, spiffe);
  for (const [what, base] of records) {
    for (const outcome of outcomes) {
      const rec: TrackedConnection = { ...base, outcome, endMs: outcome ? T0 + 1500 : null, bytesSent: 7, bytesReceived: 9 };
      const name = `${what}, ${outcome?.kind ?? 'open'}`;
      const { labels: l, accessLog: a } = recordView(rec, ctx);
      // the wrappers are the same derivation
      assert.deepEqual(istioLabels(rec, idx, spiffe), l, name);
      assert.deepEqual(accessLogEntry(rec, ctx), a, name);
      const mtls = rec.via === 'hbone' || rec.via === 'inbound-hbone';
      assert.equal(l.connection_security_policy, mtls ? 'mutual_tls' : UNKNOWN, name);
      assert.equal(l.reporter, rec.direction === 'outbound' ? 'source' : 'destination', name);
      // workloads: the same pod on each side (namespace/name in the log, controller name in the labels)
      for (const [side, lw, lns, aw] of [
        ['source', l.source_workload, l.source_workload_namespace, a.srcWorkload],
        ['destination', l.destination_workload, l.destination_workload_namespace, a.dstWorkload],
      ] as const) {
        if (aw === null) {
          assert.equal(lw, UNKNOWN, `${name}: ${side}`);
        } else {
          const p = idx.snap.pods.get(aw)!;
          assert.ok(p, `${name}: ${side} ${aw} is a pod of the model`);
          assert.equal(lw, workloadName(p), `${name}: ${side}`);
          assert.equal(lns, p.namespace, `${name}: ${side}`);
        }
      }
      // principals: derived once; the labels show those mTLS proved, the log every known one
      assert.equal(l.source_principal, mtls ? (a.srcPrincipal ?? UNKNOWN) : UNKNOWN, `${name}: source principal`);
      assert.equal(l.destination_principal, mtls ? (a.dstPrincipal ?? UNKNOWN) : UNKNOWN, `${name}: destination principal`);
      // how it ended: the flag and the log's state/reason read the same outcome
      assert.equal(l.response_flags, responseFlags(outcome), name);
      assert.equal(a.state, outcome === null ? 'open' : outcome.kind === 'closed' ? 'closed' : 'failed', name);
      assert.equal(a.reason === null, outcome === null, name);
      assert.equal(a.durationMs, outcome ? 1500 : null, name);
      assert.equal(a.service, rec.service, name);
      // cardinality: no label carries an address, a port or an id
      for (const [k, v] of Object.entries(l)) assert.ok(!/:\d+$/.test(v) && !/^\d+$/.test(v), `${name}: ${k}=${v}`);
    }
  }
});

test('one rule for the sides: the local pod by the record, the remote by address, an address never lends its workload to another identity', () => {
  const ctx = recordContext(model(), spiffe);
  const out = sidesOf(records[0]![1], ctx);
  assert.equal(out.src.pod?.name, 'web-7d4b9c8f6d-x2x9z');
  assert.equal(out.src.principal, WEB);
  assert.equal(out.src.proof, 'mtls', 'our certificate proves the local pod to the peer');
  assert.equal(out.dst.pod?.name, 'db-0', 'the endpoint, not the VIP');
  assert.equal(out.dst.principal, DB);
  const plain = sidesOf(records[2]![1], ctx);
  assert.equal(plain.src.principal, null, 'plaintext: no client identity');
  assert.equal(plain.dst.proof, 'local', 'known to us, not proven on the wire');
  const evil = sidesOf(records[4]![1], ctx);
  assert.equal(evil.src.pod, undefined);
  assert.equal(evil.src.principal, 'spiffe://cluster.local/ns/evil/sa/mallory');
  const { labels, accessLog } = recordView(records[4]![1], ctx);
  assert.equal(labels.source_workload, UNKNOWN);
  assert.equal(labels.source_principal, 'spiffe://cluster.local/ns/evil/sa/mallory');
  assert.equal(accessLog.srcWorkload, null);
  assert.equal(recordView(records[3]![1], ctx).accessLog.claimedSrc, '10.99.0.1:7', 'the claim is kept apart, informational');
  assert.equal(recordView(records[5]![1], ctx).accessLog.dst, '[fd00::6]:80');
  assert.equal(recordView(records[5]![1], ctx).labels.destination_workload, 'six');
});

test("the local pod gone from the model: the log still names the record's pod, the labels say unknown", () => {
  const s = emptySnapshot();
  const ctx = recordContext(new MeshIndex(s), spiffe);
  const { labels, accessLog } = recordView({ ...records[0]![1], outcome: { kind: 'closed' }, endMs: T0 + 1 }, ctx);
  assert.equal(accessLog.srcWorkload, 'shop/web-7d4b9c8f6d-x2x9z');
  assert.equal(accessLog.srcPrincipal, null);
  assert.equal(labels.source_workload, UNKNOWN);
  assert.equal(labels.source_principal, UNKNOWN);
});
