// The capture set executing plans with fakes: the enrolled pods by address,
// departures released, IP conflicts isolated both ways, retries armed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { CaptureSet } from '../../../src/agent/captures.js';
import { DATAPLANE_MODE_LABEL, emptySnapshot, type MeshSnapshot, type PodInfo } from '../../../src/discovery/model.js';
import { captureWorld } from './fakes.js';

function pod(name: string, o: Partial<PodInfo> = {}): PodInfo {
  return {
    uid: `uid-${name}`,
    name,
    namespace: 'shop',
    serviceAccount: name,
    node: 'n1',
    ip: `10.0.0.${name.charCodeAt(0) - 90}`,
    netns: `/run/netns/${name}`,
    cgroup: `/cg/${name}`,
    labels: {},
    ...o,
  };
}

function snap(...pods: PodInfo[]): MeshSnapshot {
  const s = emptySnapshot();
  s.namespaces.set('shop', { name: 'shop', labels: { [DATAPLANE_MODE_LABEL]: 'ambient' } });
  for (const p of pods) s.pods.set(`${p.namespace}/${p.name}`, p);
  return s;
}

test('enrolled pods are found by address; a departed pod is released and forgotten', async () => {
  const w = captureWorld();
  const set = new CaptureSet(w.deps);
  const a = pod('a');
  const b = pod('b');
  await set.reconcile(snap(a, b));
  assert.equal(set.enrolledCount, 2);
  assert.equal(set.localPodByIp(a.ip)?.key, 'shop/a');
  assert.equal(set.localPodByIp('10.9.9.9'), null);
  await set.reconcile(snap(b));
  assert.equal(set.get('shop/a'), undefined);
  assert.equal(set.localPodByIp(a.ip), null);
  assert.deepEqual(
    w.dp.named('unenroll').map((c) => c[1]),
    ['shop/a'],
  );
  assert.deepEqual(w.forgotten, ['spiffe://cluster.local/ns/shop/sa/a']);
  assert.ok(w.handles.find((h) => h.source === a.netns)!.closed);
  assert.ok(!w.handles.find((h) => h.source === b.netns)!.closed);
});

test('a changed netns: the old capture is released (its handle closed), a new one opened', async () => {
  const w = captureWorld();
  const set = new CaptureSet(w.deps);
  const a = pod('a');
  await set.reconcile(snap(a));
  const first = set.get('shop/a')!;
  await set.reconcile(snap({ ...a, netns: '/proc/99/ns/net' }));
  const second = set.get('shop/a')!;
  assert.notEqual(first, second);
  assert.ok(first.released);
  assert.deepEqual(
    w.handles.map((h) => [h.source, h.closed]),
    [
      ['/run/netns/a', true],
      ['/proc/99/ns/net', false],
    ],
  );
  assert.equal(set.localPodByIp(a.ip), second);
  assert.deepEqual(w.forgotten, ['spiffe://cluster.local/ns/shop/sa/a'], 'forgotten with the old capture (the new one fetches it again)');
});

test('two pods with one IP: both isolated, neither reachable by that address; once one goes, the other is enrolled', async () => {
  const w = captureWorld();
  const set = new CaptureSet(w.deps);
  const a = pod('a', { ip: '10.0.0.7' });
  const b = pod('b', { ip: '10.0.0.7' });
  await set.reconcile(snap(a));
  assert.equal(set.get('shop/a')!.state, 'enrolled');
  await set.reconcile(snap(a, b));
  for (const k of ['shop/a', 'shop/b']) {
    assert.equal(set.get(k)!.state, 'isolated', k);
    assert.equal(set.get(k)!.error?.code, 'POD_IP_CONFLICT');
  }
  assert.equal(set.localPodByIp('10.0.0.7'), null, 'no pod owns the address');
  assert.deepEqual(
    w.dp.named('isolate').map((c) => [c[1], c[3]]),
    [
      ['shop/a', ['10.0.0.7']],
      ['shop/b', ['10.0.0.7']],
    ],
  );
  await set.reconcile(snap(a, b));
  assert.equal(w.dp.named('isolate').length, 2, 'still in conflict: not isolated again');
  await set.reconcile(snap(b));
  assert.deepEqual(
    w.dp.named('unenroll').map((c) => [c[1], c[2]]),
    [['shop/a', ['10.0.0.7']]],
    'a goes, the address stays for b',
  );
  assert.equal(set.get('shop/b')!.state, 'enrolled');
  assert.equal(set.localPodByIp('10.0.0.7')?.key, 'shop/b');
});

test('an isolated pod is retried when its back-off is due (timer), not before', async () => {
  const w = captureWorld();
  w.failRole = 'inbound';
  const set = new CaptureSet(w.deps);
  const a = pod('a');
  await set.reconcile(snap(a));
  assert.equal(set.get('shop/a')!.state, 'isolated');
  const listens = w.listens.length;
  await set.reconcile(snap(a));
  assert.equal(w.listens.length, listens, 'back-off: no new attempt yet');
  w.now = set.get('shop/a')!.retryAt - 5;
  await set.reconcile(snap(a));
  await sleep(40);
  assert.equal(w.retries, 1, 'the retry timer fired');
  set.cancelRetry();
});

test('stale pinned links of unknown pods are removed; closeListeners and detachAll keep the datapath', async () => {
  const w = captureWorld();
  w.dp.pinned.add('old/gone');
  const set = new CaptureSet(w.deps);
  await set.reconcile(snap(pod('a')));
  assert.deepEqual(w.dp.named('removeLinks'), [['removeLinks', 'old/gone']]);
  set.closeListeners();
  assert.equal(w.closedListeners, 3);
  assert.equal(set.handoverEntries().length, 0, 'no listener left to hand over');
  set.detachAll();
  assert.ok(w.handles.every((h) => h.closed));
  assert.equal(w.dp.named('unenroll').length, 0);
});
