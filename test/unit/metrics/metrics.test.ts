import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AgentMetrics,
  istioLabels,
  responseFlags,
  workloadName,
  canonicalService,
  canonicalRevision,
  ISTIO_LABELS,
  type MetricsSource,
} from '../../../src/metrics/metrics.js';
import { createMetricsServer, createReadinessServer, formatReadiness, type Readiness } from '../../../src/metrics/server.js';
import { ConnectionTracker, type TrackedConnection } from '../../../src/proxy/connections.js';
import { outcomeReason, outcomeState, type Outcome } from '../../../src/proxy/outcome.js';
import { hp, pod, spiffe, tracked } from '../proxy/fixtures.js';
import { MeshIndex, emptySnapshot } from '../../../src/discovery/model.js';
import { Logger } from '../../../src/util/log.js';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

function model(): MeshIndex {
  const s = emptySnapshot();
  s.pods.set('shop/web-7d4b9c8f6d-x2x9z', pod('web-7d4b9c8f6d-x2x9z', 'shop', '10.0.0.1', { app: 'web', version: 'v2', 'pod-template-hash': '7d4b9c8f6d' }));
  s.pods.set(
    'db/db-0',
    pod('db-0', 'db', '10.0.0.2', { 'service.istio.io/canonical-name': 'database', 'app.kubernetes.io/name': 'postgres', 'app.kubernetes.io/version': '16' }),
  );
  s.pods.set('plain/bare', pod('bare', 'plain', '10.0.0.3'));
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

/** A record as the tests write it: addresses as "ip:port" text. */
type RecText = Omit<Partial<TrackedConnection>, 'src' | 'dst' | 'endpoint'> & { src?: string; dst?: string; endpoint?: string };
const rec = ({ src, dst, endpoint, ...r }: RecText): TrackedConnection =>
  tracked({
    id: 1,
    pod: 'shop/web-7d4b9c8f6d-x2x9z',
    direction: 'outbound',
    src: hp(src ?? '10.0.0.1:40000'),
    dst: hp(dst ?? '10.0.0.2:5432'),
    via: 'hbone',
    peerIdentity: 'spiffe://cluster.local/ns/db/sa/sa-db-0',
    endpoint: endpoint ? hp(endpoint) : null,
    ...r,
  });

test('workload, canonical service and revision from labels, with fallbacks', () => {
  const idx = model();
  const web = idx.podByIp.get('10.0.0.1')!;
  const db = idx.podByIp.get('10.0.0.2')!;
  const bare = idx.podByIp.get('10.0.0.3')!;
  assert.equal(workloadName(web), 'web', 'ReplicaSet hash suffix stripped');
  assert.equal(workloadName(db), 'db-0');
  assert.equal(canonicalService(web), 'web');
  assert.equal(canonicalService(db), 'database');
  assert.equal(canonicalService(bare), 'bare');
  assert.equal(canonicalRevision(web), 'v2');
  assert.equal(canonicalRevision(db), '16');
  assert.equal(canonicalRevision(bare), 'latest');
});

test('outbound HBONE via a service VIP: reporter source, both principals, the service, mutual_tls', () => {
  const l = istioLabels(rec({ dst: '10.96.0.5:5432', endpoint: '10.0.0.2:5432', service: 'db/pg' }), model(), spiffe);
  assert.deepEqual(Object.keys(l).sort(), [...ISTIO_LABELS].sort());
  assert.equal(l.reporter, 'source');
  assert.equal(l.source_workload, 'web');
  assert.equal(l.source_workload_namespace, 'shop');
  assert.equal(l.source_app, 'web');
  assert.equal(l.source_version, 'v2');
  assert.equal(l.source_principal, 'spiffe://cluster.local/ns/shop/sa/sa-web-7d4b9c8f6d-x2x9z');
  assert.equal(l.source_cluster, 'Kubernetes');
  assert.equal(l.destination_workload, 'db-0');
  assert.equal(l.destination_canonical_service, 'database');
  assert.equal(l.destination_app, 'postgres');
  assert.equal(l.destination_principal, 'spiffe://cluster.local/ns/db/sa/sa-db-0');
  assert.equal(l.destination_service, 'pg.db.svc.cluster.local');
  assert.equal(l.destination_service_name, 'pg');
  assert.equal(l.destination_service_namespace, 'db');
  assert.equal(l.request_protocol, 'tcp');
  assert.equal(l.response_flags, '-');
  assert.equal(l.connection_security_policy, 'mutual_tls');
});

test('unknown peers and plaintext: every unknown value is "unknown", no principals without mTLS', () => {
  const out = istioLabels(rec({ dst: '192.0.2.9:443', via: 'passthrough', peerIdentity: null }), model(), spiffe);
  assert.equal(out.source_workload, 'web');
  assert.equal(out.source_principal, 'unknown');
  for (const k of [
    'destination_workload',
    'destination_canonical_service',
    'destination_canonical_revision',
    'destination_workload_namespace',
    'destination_principal',
    'destination_app',
    'destination_version',
    'destination_cluster',
    'destination_service',
    'destination_service_name',
    'destination_service_namespace',
  ] as const) {
    assert.equal(out[k], 'unknown', k);
  }
  assert.equal(out.connection_security_policy, 'unknown');
  const inb = istioLabels(
    rec({ pod: 'db/db-0', direction: 'inbound', src: '10.0.0.3:5555', dst: '10.0.0.2:5432', via: 'inbound-plaintext', peerIdentity: null }),
    model(),
    spiffe,
  );
  assert.equal(inb.reporter, 'destination');
  assert.equal(inb.source_workload, 'bare');
  assert.equal(inb.source_app, 'unknown');
  assert.equal(inb.source_version, 'unknown');
  assert.equal(inb.source_principal, 'unknown');
  assert.equal(inb.destination_principal, 'unknown');
  const hb = istioLabels(
    rec({
      pod: 'db/db-0',
      direction: 'inbound',
      src: '10.0.0.1:5555',
      dst: '10.0.0.2:5432',
      via: 'inbound-hbone',
      peerIdentity: 'spiffe://cluster.local/ns/shop/sa/sa-web',
    }),
    model(),
    spiffe,
  );
  assert.equal(hb.source_principal, 'spiffe://cluster.local/ns/shop/sa/sa-web');
  assert.equal(hb.destination_principal, 'spiffe://cluster.local/ns/db/sa/sa-db-0');
  assert.equal(hb.connection_security_policy, 'mutual_tls');
  // the address (the TCP peer) names a workload only if it is who the certificate proved
  assert.equal(hb.source_workload, 'unknown', 'the pod at 10.0.0.1 has another identity than the peer proved');
  const proven = istioLabels(
    rec({
      pod: 'db/db-0',
      direction: 'inbound',
      src: '10.0.0.1:5555',
      dst: '10.0.0.2:5432',
      via: 'inbound-hbone',
      peerIdentity: 'spiffe://cluster.local/ns/shop/sa/sa-web-7d4b9c8f6d-x2x9z',
    }),
    model(),
    spiffe,
  );
  assert.equal(proven.source_workload, 'web');
  assert.equal(proven.source_workload_namespace, 'shop');
});

test('response_flags from the record state and reason', () => {
  // each outcome still shows the state and reason text it always had (config_dump, access log)
  const f = (state: 'closed' | 'failed', reason: string, o: Outcome): string => {
    assert.equal(outcomeState(o), state, reason);
    assert.equal(outcomeReason(o), reason);
    return responseFlags(o);
  };
  assert.equal(f('closed', 'eof', { kind: 'closed' }), '-');
  assert.equal(f('failed', 'reset by client', { kind: 'reset', by: 'client' }), '-');
  assert.equal(f('failed', 'client gone', { kind: 'client_gone' }), '-');
  assert.equal(
    f('failed', 'denied by policy ambient-demo/x (no ALLOW policy matched)', { kind: 'denied', policy: 'ambient-demo/x', why: 'no ALLOW policy matched' }),
    'DENY',
  );
  assert.equal(f('failed', 'denied by policy change (ns/p)', { kind: 'revoked', policy: 'ns/p' }), 'DENY');
  assert.equal(f('failed', 'HBONE_DENIED 401', { kind: 'hbone_failed', code: 'HBONE_DENIED', status: 401, reason: null }), 'DENY');
  assert.equal(f('failed', 'HBONE_TLS', { kind: 'hbone_failed', code: 'HBONE_TLS', status: null, reason: null }), 'TLS_FAILURE');
  assert.equal(f('failed', 'HBONE_CONNECT', { kind: 'hbone_failed', code: 'HBONE_CONNECT', status: null, reason: null }), 'CONNECT');
  assert.equal(f('failed', 'HBONE_UNAVAILABLE 503', { kind: 'hbone_failed', code: 'HBONE_UNAVAILABLE', status: 503, reason: null }), 'CONNECT');
  assert.equal(f('failed', 'ECONNREFUSED', { kind: 'upstream_failed', errno: 'ECONNREFUSED' }), 'CONNECT');
  assert.equal(f('failed', 'no ready endpoint', { kind: 'no_endpoint' }), 'CONNECT');
});

function source(idx: MeshIndex): MetricsSource {
  return {
    index: () => idx,
    spiffeOf: spiffe,
    pods: () => [
      { namespace: 'shop', name: 'web-7d4b9c8f6d-x2x9z', state: 'enrolled' },
      { namespace: 'shop', name: 'broken', state: 'failed' },
    ],
    certificates: () => [{ id: 'spiffe://cluster.local/ns/shop/sa/web', notAfter: '2030-01-01T00:00:00.000Z' }],
    podStats: () => [{ namespace: 'shop', name: 'web-7d4b9c8f6d-x2x9z', stats: { capturedOut: 3n, refusedOut: 0n } }],
  };
}

/** Parses the exposition: every sample line is name{labels} value; HELP/TYPE precede each family. */
function parseExposition(text: string): { types: Map<string, string>; samples: Array<{ name: string; labels: Record<string, string>; value: number }> } {
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Array<{ name: string; labels: Record<string, string>; value: number }> = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/.exec(line);
    if (m) {
      helps.add(m[1]!);
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (m) {
      assert.ok(helps.has(m[1]!), `HELP before TYPE for ${m[1]}`);
      types.set(m[1]!, m[2]!);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `sample line parses: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2]) for (const lm of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]!] = lm[2]!;
    const value = Number(m[3]);
    assert.ok(!Number.isNaN(value) || /^nan$/i.test(m[3]!), `value of ${line}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { types, samples };
}

test('counters from tracker records; exposition parses with HELP/TYPE; agent health metrics', async () => {
  const idx = model();
  const m = new AgentMetrics(source(idx));
  const t = new ConnectionTracker();
  m.observe(t);
  const r = t.begin({
    pod: 'shop/web-7d4b9c8f6d-x2x9z',
    direction: 'outbound',
    src: hp('10.0.0.1:40000'),
    dst: hp('10.0.0.2:5432'),
    via: 'hbone',
    peerIdentity: 'spiffe://cluster.local/ns/db/sa/sa-db-0',
  });
  t.finish(r, { kind: 'closed' }, { sent: 1234, received: 99 });
  const d = t.begin({ pod: 'db/db-0', direction: 'inbound', src: hp('10.0.0.3:1'), dst: hp('10.0.0.2:5432'), via: 'inbound-plaintext' });
  t.finish(d, { kind: 'denied', policy: 'db/p', why: 'no ALLOW policy matched' });
  m.countEvent('policy_denied');
  const text = await m.exposition();
  const { types, samples } = parseExposition(text);
  for (const n of [
    'istio_tcp_connections_opened_total',
    'istio_tcp_connections_closed_total',
    'istio_tcp_sent_bytes_total',
    'istio_tcp_received_bytes_total',
    'istio_tcp_connections_failed_total',
    'ambientd_denied_connections_total',
    'ambientd_agent_events_total',
    'ambientd_bpf_redirect_total',
  ]) {
    assert.equal(types.get(n), 'counter', n);
  }
  for (const n of ['ambientd_enrolled_pods', 'ambientd_pod_state', 'ambientd_certificate_expiry_timestamp_seconds']) assert.equal(types.get(n), 'gauge', n);
  assert.ok(types.has('process_cpu_user_seconds_total') || types.has('process_cpu_seconds_total'), 'default process metrics');
  const one = (name: string, f: (l: Record<string, string>) => boolean): number => {
    const s = samples.filter((x) => x.name === name && f(x.labels));
    assert.equal(s.length, 1, `${name}: ${s.length} series`);
    return s[0]!.value;
  };
  const flow = (l: Record<string, string>): boolean => l.reporter === 'source' && l.destination_workload === 'db-0';
  assert.equal(one('istio_tcp_connections_opened_total', flow), 1);
  assert.equal(one('istio_tcp_connections_closed_total', flow), 1);
  assert.equal(one('istio_tcp_sent_bytes_total', flow), 1234);
  assert.equal(one('istio_tcp_received_bytes_total', flow), 99);
  assert.equal(samples.filter((x) => x.name === 'istio_tcp_connections_failed_total' && flow(x.labels)).length, 0);
  assert.equal(
    one('istio_tcp_connections_failed_total', (l) => l.reporter === 'destination' && l.response_flags === 'DENY' && l.source_workload === 'bare'),
    1,
  );
  assert.equal(
    one('ambientd_denied_connections_total', (l) => l.reason === 'policy_plaintext'),
    1,
  );
  assert.equal(
    one('ambientd_agent_events_total', (l) => l.reason === 'policy_denied'),
    1,
  );
  assert.equal(
    one('ambientd_enrolled_pods', () => true),
    1,
  );
  assert.equal(
    one('ambientd_pod_state', (l) => l.pod === 'broken' && l.state === 'failed'),
    1,
  );
  assert.equal(
    one('ambientd_pod_state', (l) => l.pod === 'broken' && l.state === 'enrolled'),
    0,
  );
  assert.equal(
    one('ambientd_certificate_expiry_timestamp_seconds', () => true),
    Date.parse('2030-01-01T00:00:00Z') / 1000,
  );
  assert.equal(
    one('ambientd_bpf_redirect_total', (l) => l.counter === 'captured_out'),
    3,
  );
  // bounded cardinality: no label carries a port or a connection id
  for (const s of samples.filter((x) => x.name.startsWith('istio_'))) {
    for (const [k, v] of Object.entries(s.labels)) assert.ok(!/:\d+$/.test(v) && k !== 'id', `${k}=${v}`);
  }
});

async function get(
  server: http.Server,
  p: string,
  method = 'GET',
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; type: string }> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  try {
    return await new Promise((resolve, reject) => {
      http
        .request({ host: '127.0.0.1', port, path: p, method, headers }, (res) => {
          let b = '';
          res.on('data', (c: Buffer) => (b += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, body: b, type: String(res.headers['content-type']) }));
        })
        .on('error', reject)
        .end();
    });
  } finally {
    await new Promise((r) => server.close(r));
  }
}

test('metrics and readiness servers: paths, methods, per-pod reporting', async () => {
  const log = new Logger('t', 'off');
  const m = new AgentMetrics(source(model()), { defaultMetrics: false });
  for (const p of ['/metrics', '/stats/prometheus']) {
    const r = await get(createMetricsServer(m, log), p);
    assert.equal(r.status, 200);
    assert.match(r.type, /text\/plain/);
    assert.match(r.body, /# TYPE istio_tcp_connections_opened_total counter/);
  }
  assert.equal((await get(createMetricsServer(m, log), '/nope')).status, 404);
  assert.equal((await get(createMetricsServer(m, log), '/metrics', 'POST')).status, 405);

  let state: Readiness = {
    ready: true,
    pending: [],
    pods: [
      { pod: 'shop/a', state: 'enrolled' },
      { pod: 'shop/b', state: 'failed', error: { code: 'NETNS_UNAVAILABLE', message: 'gone' } },
    ],
  };
  const rs = (): http.Server => createReadinessServer(() => state, log);
  const ok = await get(rs(), '/healthz/ready');
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'ready\n');
  const v = await get(rs(), '/healthz/ready?verbose');
  assert.equal(v.status, 200);
  assert.match(v.body, /pod shop\/b: failed \(NETNS_UNAVAILABLE: gone\)/);
  const j = await get(rs(), '/healthz/ready?format=json');
  assert.equal(JSON.parse(j.body).pods[1].state, 'failed');
  assert.equal((await get(rs(), '/healthz/ready', 'GET', { accept: 'application/json' })).type, 'application/json');
  state = { ready: false, pending: ['datapath', 'discovery'], pods: [] };
  const bad = await get(rs(), '/healthz/ready');
  assert.equal(bad.status, 500);
  assert.equal(bad.body, 'not ready: datapath, discovery\n');
  assert.equal((await get(rs(), '/other')).status, 404);
  assert.equal((await get(rs(), '/healthz/ready', 'DELETE')).status, 405);
  assert.equal(formatReadiness(state, true), 'not ready: datapath, discovery\n');
});

test('/metrics renders at most every METRICS_MIN_INTERVAL_MS (here 50 ms): back-to-back callers share the next render, each rendered after it asked', async () => {
  const { pacedRenderer } = await import('../../../src/metrics/server.js');
  let renders = 0;
  const times: number[] = [];
  const paced = pacedRenderer(async () => {
    renders++;
    times.push(Date.now());
    await new Promise((r) => setTimeout(r, 5));
    return `render ${renders}`;
  }, 50);
  // the first at once
  const t0 = Date.now();
  assert.equal(await paced(), 'render 1');
  assert.ok(Date.now() - t0 < 40);
  // three callers at once, right after: one render, 50 ms after the last one ended, shared
  const asked = Date.now();
  const got = await Promise.all([paced(), paced(), paced()]);
  assert.deepEqual(got, ['render 2', 'render 2', 'render 2']);
  assert.ok(times[1]! >= asked, 'rendered after they asked');
  assert.ok(times[1]! - times[0]! >= 50, `paced: ${times[1]! - times[0]!} ms apart`);
  // a caller that comes while a render runs is not given that render: it gets the next one
  const running = paced();
  await new Promise((r) => setTimeout(r, 60)); // the render has started (and is at most done)
  const later = paced();
  assert.equal(await running, 'render 3');
  assert.equal(await later, 'render 4');
  // a render that fails fails its callers only; the next caller gets a new render
  const failing = pacedRenderer(async () => {
    renders++;
    if (renders === 5) throw new Error('boom');
    return 'ok';
  }, 0);
  await assert.rejects(failing(), /boom/);
  assert.equal(await failing(), 'ok');
});
