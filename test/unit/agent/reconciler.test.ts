// The pure reconciler: snapshot + captured pods -> a plan of
// unenroll / enroll / retry / isolate / update.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planReconcile, nextRetryAt, type CapturedPod, type ReconcileInput } from '../../../src/agent/reconciler.js';
import { DATAPLANE_MODE_LABEL, emptySnapshot, podSpiffeId, type PodInfo } from '../../../src/discovery/model.js';

const TD = 'cluster.local';
const NOW = 1_000_000;

function pod(name: string, o: Partial<PodInfo> = {}): PodInfo {
  return {
    uid: `uid-${name}`,
    name,
    namespace: 'shop',
    serviceAccount: `sa-${name}`,
    node: 'n1',
    ip: `10.0.0.${name.length}`,
    netns: `/run/netns/${name}`,
    cgroup: `/cg/${name}`,
    labels: {},
    ...o,
  };
}

function snap(...pods: PodInfo[]): ReconcileInput['snapshot'] {
  const s = emptySnapshot();
  s.namespaces.set('shop', { name: 'shop', labels: { [DATAPLANE_MODE_LABEL]: 'ambient' } });
  s.namespaces.set('plain', { name: 'plain', labels: {} });
  for (const p of pods) s.pods.set(`${p.namespace}/${p.name}`, p);
  return s;
}

function captured(p: PodInfo, o: Partial<CapturedPod> = {}): [string, CapturedPod] {
  return [`${p.namespace}/${p.name}`, { pod: p, identity: podSpiffeId(p, TD), state: 'enrolled', errorCode: null, retryAt: 0, ...o }];
}

function plan(snapshot: ReconcileInput['snapshot'], current: Array<[string, CapturedPod]> = [], pinned: string[] = []) {
  return planReconcile({ snapshot, node: 'n1', trustDomain: TD, current: new Map(current), pinned, now: NOW });
}

const steps = (p: ReturnType<typeof plan>): string[] => p.pods.map((s) => `${s.kind}:${s.key}${s.kind === 'update' ? `:${s.why}` : ''}`);

test('a new local ambient pod is enrolled; a pod outside the mesh is not', () => {
  const p = plan(snap(pod('web'), pod('db', { namespace: 'plain' }), pod('opt', { labels: { [DATAPLANE_MODE_LABEL]: 'none' } })));
  assert.deepEqual(steps(p), ['enroll:shop/web']);
  assert.deepEqual(p.unenroll, []);
});

test('a pod label opts in where the namespace does not', () => {
  const p = plan(snap(pod('db', { namespace: 'plain', labels: { [DATAPLANE_MODE_LABEL]: 'ambient' } })));
  assert.deepEqual(steps(p), ['enroll:plain/db']);
});

test('an enrolled pod that is still wanted is updated, not captured again', () => {
  const web = pod('web');
  const p = plan(snap({ ...web, labels: { app: 'web', version: 'v2' } }), [captured(web)]);
  assert.deepEqual(steps(p), ['update:shop/web:enrolled']);
  assert.deepEqual(p.pods[0]!.pod.labels, { app: 'web', version: 'v2' }, 'the new entry (labels) is applied');
  assert.deepEqual(p.unenroll, []);
});

test('a departed pod is unenrolled', () => {
  const p = plan(snap(), [captured(pod('web'))]);
  assert.deepEqual(
    p.unenroll.map((u) => [u.key, u.reason]),
    [['shop/web', 'gone']],
  );
  assert.deepEqual(p.pods, []);
});

test('label removed (pod or namespace): unenrolled as not-ambient', () => {
  const web = pod('web');
  const byPod = plan(snap({ ...web, labels: { [DATAPLANE_MODE_LABEL]: 'none' } }), [captured(web)]);
  assert.deepEqual(
    byPod.unenroll.map((u) => [u.key, u.reason]),
    [['shop/web', 'not-ambient']],
  );
  assert.deepEqual(byPod.pods, []);
  const s = snap(web);
  s.namespaces.set('shop', { name: 'shop', labels: {} });
  assert.deepEqual(
    plan(s, [captured(web)]).unenroll.map((u) => u.reason),
    ['not-ambient'],
  );
});

test('changed address, netns, cgroup, uid or identity: unenrolled, then enrolled afresh', () => {
  const web = pod('web');
  const cases: Array<[string, Partial<PodInfo>]> = [
    ['ips', { ip: '10.0.9.9' }],
    ['ips', { ips: [web.ip, '10.0.9.10'] }],
    ['netns', { netns: '/proc/4242/ns/net' }],
    ['cgroup', { cgroup: '/cg/other' }],
    ['uid', { uid: 'uid-new' }],
    ['identity', { serviceAccount: 'other' }],
  ];
  for (const [what, change] of cases) {
    const p = plan(snap({ ...web, ...change }), [captured(web)]);
    assert.deepEqual(
      p.unenroll.map((u) => [u.key, u.reason, u.changed]),
      [['shop/web', 'changed', [what]]],
      what,
    );
    assert.deepEqual(steps(p), ['enroll:shop/web'], `${what}: a new capture, not a retry of the old one`);
  }
});

test('two pods with one IP: both isolated (POD_IP_CONFLICT), naming each other', () => {
  const a = pod('a', { ip: '10.0.0.7' });
  const b = pod('b', { ip: '10.0.0.7' });
  const p = plan(snap(a, b, pod('c', { ip: '10.0.0.8' })));
  assert.deepEqual([...p.sharedIps], ['10.0.0.7']);
  assert.deepEqual(
    p.pods.map((s) => (s.kind === 'isolate' ? [s.key, s.ips, s.with] : [s.key, s.kind])),
    [
      ['shop/a', ['10.0.0.7'], ['shop/b']],
      ['shop/b', ['10.0.0.7'], ['shop/a']],
      ['shop/c', 'enroll'],
    ],
  );
});

test('an enrolled pod joined by a second one with its IP is isolated too; one already isolated for it is left as is', () => {
  const a = pod('a', { ip: '10.0.0.7' });
  const b = pod('b', { ip: '10.0.0.7' });
  const first = plan(snap(a, b), [captured(a)]);
  assert.deepEqual(steps(first), ['isolate:shop/a', 'isolate:shop/b']);
  const again = plan(snap(a, b), [
    captured(a, { state: 'isolated', errorCode: 'POD_IP_CONFLICT', retryAt: NOW + 60_000 }),
    captured(b, { state: 'isolated', errorCode: 'POD_IP_CONFLICT' }),
  ]);
  assert.deepEqual(steps(again), ['update:shop/a:conflict', 'update:shop/b:conflict']);
});

test('the conflict resolved: the survivor is retried at once (whatever its back-off); the address stays with it', () => {
  const a = pod('a', { ip: '10.0.0.7' });
  const b = pod('b', { ip: '10.0.0.7' });
  const p = plan(snap(a), [
    captured(a, { state: 'isolated', errorCode: 'POD_IP_CONFLICT', retryAt: NOW + 60_000 }),
    captured(b, { state: 'isolated', errorCode: 'POD_IP_CONFLICT' }),
  ]);
  assert.deepEqual(
    p.unenroll.map((u) => [u.key, [...u.keepIps]]),
    [['shop/b', ['10.0.0.7']]],
    'b goes, its address stays (a claims it)',
  );
  assert.deepEqual(steps(p), ['retry:shop/a']);
});

test('retry back-off: an isolated pod waits until its attempt is due', () => {
  const web = pod('web');
  const waiting = plan(snap(web), [captured(web, { state: 'isolated', errorCode: 'LISTENER_FAILED', retryAt: NOW + 1 })]);
  assert.deepEqual(steps(waiting), ['update:shop/web:backoff']);
  const due = plan(snap(web), [captured(web, { state: 'failed', errorCode: 'NETNS_UNAVAILABLE', retryAt: NOW })]);
  assert.deepEqual(steps(due), ['retry:shop/web']);
});

test('nextRetryAt: the earliest isolated/failed pod, never an enrolled one nor an IP conflict', () => {
  const c = (o: Partial<CapturedPod>): CapturedPod => captured(pod('x'), o)[1];
  assert.equal(nextRetryAt([]), null);
  assert.equal(nextRetryAt([c({ state: 'enrolled', retryAt: 5 }), c({ state: 'isolated', errorCode: 'POD_IP_CONFLICT', retryAt: 1 })]), null);
  assert.equal(
    nextRetryAt([c({ state: 'isolated', errorCode: 'LISTENER_FAILED', retryAt: 30 }), c({ state: 'failed', errorCode: 'NETNS_UNAVAILABLE', retryAt: 20 })]),
    20,
  );
});

test('remote pods are never captured; a captured pod that moved to another node is unenrolled', () => {
  const remote = pod('far', { node: 'n2', netns: null, cgroup: null });
  assert.deepEqual(steps(plan(snap(remote))), []);
  const web = pod('web');
  const moved = plan(snap({ ...web, node: 'n2' }), [captured(web)]);
  assert.deepEqual(
    moved.unenroll.map((u) => [u.key, u.reason]),
    [['shop/web', 'remote']],
  );
  assert.deepEqual(steps(plan(snap(pod('solo', { node: null })))), ['enroll:shop/solo'], 'node null: the single-machine file source, local');
});

test('an address a departed pod shared with a remote pod is released (only wanted local pods keep one)', () => {
  const web = pod('web', { ip: '10.0.0.7' });
  const p = plan(snap(pod('far', { node: 'n2', ip: '10.0.0.7' })), [captured(web)]);
  assert.deepEqual(
    p.unenroll.map((u) => [...u.keepIps]),
    [[]],
  );
});

test("stale links: pinned pods nobody wants nor holds; a departing pod's own links go with its unenroll", () => {
  const web = pod('web');
  const p = plan(snap(pod('db')), [captured(web)], ['shop/web', 'shop/db', 'old/gone']);
  assert.deepEqual(p.staleLinks, ['old/gone']);
  assert.deepEqual(
    p.unenroll.map((u) => u.key),
    ['shop/web'],
  );
  assert.deepEqual(steps(p), ['enroll:shop/db']);
});
