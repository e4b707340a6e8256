// The access log: one JSON line per closed connection, its fields (workloads,
// principals, addresses, bytes, duration, how it ended) and its level.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { accessLogEntry, attachAccessLog } from '../../../src/admin/access-log.js';
import { ConnectionTracker, type TrackedConnection } from '../../../src/proxy/connections.js';
import { parseHostPort } from '../../../src/util/hostport.js';
import { hp, tracked } from '../proxy/fixtures.js';
import { Logger } from '../../../src/util/log.js';
import type { PodInfo } from '../../../src/discovery/workloads.js';

const pods: PodInfo[] = [
  { name: 'a', namespace: 'ns1', serviceAccount: 'sa-a', ip: '10.0.0.1', labels: {} } as PodInfo,
  { name: 'b', namespace: 'ns2', serviceAccount: 'sa-b', ip: '10.0.0.2', labels: {} } as PodInfo,
];
const ctx = {
  podByIp: (ip: string) => pods.find((p) => p.ip === ip),
  spiffeOf: (p: PodInfo) => `spiffe://td/ns/${p.namespace}/sa/${p.serviceAccount}`,
};

test('access log entry: workloads, principals, addresses, bytes, duration', () => {
  const rec: TrackedConnection = tracked({
    id: 9,
    pod: 'ns1/a',
    direction: 'outbound',
    src: hp('10.0.0.1:5555'),
    dst: hp('10.96.0.1:80'),
    endpoint: hp('10.0.0.2:8080'),
    service: 'ns2/svc',
    via: 'hbone',
    peerIdentity: 'spiffe://td/ns/ns2/sa/sa-b',
    bytesSent: 10,
    bytesReceived: 20,
    startMs: Date.parse('2024-01-01T00:00:00.000Z'),
    endMs: Date.parse('2024-01-01T00:00:01.500Z'),
    outcome: { kind: 'closed' },
  });
  assert.deepEqual(accessLogEntry(rec, ctx), {
    connectionId: 9,
    direction: 'outbound',
    via: 'hbone',
    srcWorkload: 'ns1/a',
    dstWorkload: 'ns2/b',
    srcPrincipal: 'spiffe://td/ns/ns1/sa/sa-a',
    dstPrincipal: 'spiffe://td/ns/ns2/sa/sa-b',
    src: '10.0.0.1:5555',
    claimedSrc: null,
    dst: '10.96.0.1:80',
    endpoint: '10.0.0.2:8080',
    service: 'ns2/svc',
    bytesSent: 10,
    bytesReceived: 20,
    durationMs: 1500,
    state: 'closed',
    reason: 'eof',
    start: '2024-01-01T00:00:00.000Z',
    end: '2024-01-01T00:00:01.500Z',
  });
  const inb = accessLogEntry(
    {
      ...rec,
      direction: 'inbound',
      pod: 'ns2/b',
      via: 'inbound-plaintext',
      src: hp('192.168.0.9:1'),
      dst: hp('10.0.0.2:8080'),
      endpoint: null,
      service: null,
      peerIdentity: null,
    },
    ctx,
  );
  assert.equal(inb.srcWorkload, null);
  assert.equal(inb.srcPrincipal, null, 'plaintext: no verified client identity');
  assert.equal(inb.dstWorkload, 'ns2/b');
  assert.equal(inb.dstPrincipal, 'spiffe://td/ns/ns2/sa/sa-b');
  assert.equal(parseHostPort('[fd00::1]:80')?.ip, 'fd00::1');
});

test('access log, inbound HBONE: the source workload only when its identity is the one the certificate proved; Forwarded is only "claimed"', () => {
  const base: TrackedConnection = tracked({
    id: 1,
    pod: 'ns2/b',
    direction: 'inbound',
    via: 'inbound-hbone',
    src: hp('10.0.0.1:40000'),
    claimedSrc: hp('10.99.1.1:5'),
    dst: hp('10.0.0.2:8080'),
    peerIdentity: 'spiffe://td/ns/ns1/sa/sa-a',
    startMs: Date.parse('2024-01-01T00:00:00.000Z'),
  });
  const ok = accessLogEntry(base, ctx);
  assert.equal(ok.srcWorkload, 'ns1/a', 'the pod at the TCP peer address has the proven identity');
  assert.equal(ok.src, '10.0.0.1:40000');
  assert.equal(ok.claimedSrc, '10.99.1.1:5', 'what the peer claimed is kept apart');
  const other = accessLogEntry({ ...base, peerIdentity: 'spiffe://td/ns/evil/sa/mallory' }, ctx);
  assert.equal(other.srcWorkload, null, 'an address does not lend its workload to another identity');
  assert.equal(other.srcPrincipal, 'spiffe://td/ns/evil/sa/mallory');
});

test('access log: one line per closed connection at the configured level; off logs nothing', () => {
  for (const [level, logLevel, expect] of [
    ['info', 'info', 1],
    ['debug', 'info', 0],
    ['debug', 'debug', 1],
    ['off', 'debug', 0],
  ] as const) {
    const out: string[] = [];
    const log = new Logger('ambientd', logLevel, (l) => out.push(l));
    const tr = new ConnectionTracker();
    attachAccessLog(tr, log.child('access'), level, ctx);
    const r = tr.begin({ pod: 'ns1/a', direction: 'outbound', src: hp('10.0.0.1:1'), dst: hp('10.0.0.2:2'), via: 'passthrough' });
    assert.equal(out.length, 0, 'nothing while open');
    tr.finish(r, { kind: 'closed' }, { sent: 3, received: 4 });
    assert.equal(out.length, expect, `${level} at log level ${logLevel}`);
    if (expect) {
      const j = JSON.parse(out[0]!);
      assert.equal(j.scope, 'ambientd.access');
      assert.equal(j.level, level);
      assert.equal(j.srcWorkload, 'ns1/a');
      assert.equal(j.dstWorkload, 'ns2/b');
      assert.equal(j.bytesSent, 3);
      assert.equal(j.bytesReceived, 4);
    }
  }
});
