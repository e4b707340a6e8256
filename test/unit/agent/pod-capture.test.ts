// One pod's capture with fakes: the netns handle's path is what is passed on,
// release() undoes everything once, the identity lease forgets the
// certificate with the last pod of an identity, failures fail closed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PodCapture } from '../../../src/agent/pod-capture.js';
import { IdentityLeases } from '../../../src/agent/identity-lease.js';
import { podSpiffeId, type PodInfo } from '../../../src/discovery/model.js';
import { AmbientError, isAmbientError } from '../../../src/util/errors.js';
import { captureWorld, type CaptureWorld } from './fakes.js';

function pod(name: string, o: Partial<PodInfo> = {}): PodInfo {
  return {
    uid: `uid-${name}`,
    name,
    namespace: 'shop',
    serviceAccount: 'web',
    node: 'n1',
    ip: '10.0.0.5',
    netns: `/proc/77/ns/net`,
    cgroup: `/cg/${name}`,
    labels: {},
    ...o,
  };
}
const capture = (w: CaptureWorld, p: PodInfo): PodCapture => new PodCapture(w.deps, p, podSpiffeId(p, 'cluster.local'));

test("enroll: listeners, amb_listeners and links all in the netns the handle holds (/proc/self/fd/N), never the pod's path", async () => {
  const w = captureWorld();
  const c = capture(w, pod('web'));
  await c.enroll();
  assert.equal(c.state, 'enrolled');
  assert.equal(w.handles.length, 1, 'the netns is opened once');
  const h = w.handles[0]!;
  assert.equal(h.source, '/proc/77/ns/net');
  assert.deepEqual(
    w.listens.map((l) => [l.role, l.bind.ip, l.bind.port, l.netns.path]),
    [
      ['outbound', '10.0.0.5', 15001, h.path],
      ['inbound', '127.0.0.1', 15006, h.path],
      ['hbone', '10.0.0.5', 15008, h.path],
    ],
  );
  assert.equal(w.dp.named('registerListener').length, 3);
  assert.deepEqual(w.dp.named('enroll'), [['enroll', 'shop/web', h.path, ['10.0.0.5']]]);
  assert.equal(c.info.netns, h.path, 'the proxy dials through the handle');
  assert.equal(c.pod.netns, '/proc/77/ns/net', 'the reconciler compares the entry as given');
  assert.equal(c.netnsInode, h.inode);
  assert.deepEqual(w.prefetched, ['spiffe://cluster.local/ns/shop/sa/web']);
  assert.deepEqual(
    c.handoverEntries().map((e) => e.entry),
    ['outbound', 'inbound', 'hbone'].map((role, i) => ({
      kind: 'pod',
      role,
      key: 'shop/web',
      ip: i === 1 ? '127.0.0.1' : '10.0.0.5',
      port: [15001, 15006, 15008][i],
      netnsInode: String(h.inode),
    })),
  );
});

test('release: proxy pool, datapath, listeners, lease and netns handle; exactly once', async () => {
  const w = captureWorld();
  const c = capture(w, pod('web'));
  await c.enroll();
  c.release(new Set(['10.0.0.5']));
  c.release();
  assert.deepEqual(w.released, ['shop/web']);
  assert.deepEqual(w.dp.named('unenroll'), [['unenroll', 'shop/web', ['10.0.0.5']]], 'once, keeping what another pod claims');
  assert.equal(w.closedListeners, 3);
  assert.ok(w.handles[0]!.closed, 'the netns handle is closed');
  assert.equal(c.info.netns, null, 'a released capture names no netns');
  assert.deepEqual(w.forgotten, ['spiffe://cluster.local/ns/shop/sa/web'], 'its certificate is forgotten');
  assert.deepEqual(c.handoverEntries(), []);
  await assert.rejects(c.enroll(), (e: unknown) => isAmbientError(e) && e.code === 'CAPTURE_RELEASED');
});

test('identity lease: the certificate is forgotten only when the last pod of that identity goes', async () => {
  const w = captureWorld();
  const a = capture(w, pod('a'));
  const b = capture(w, pod('b', { ip: '10.0.0.6' }));
  const other = capture(w, pod('c', { ip: '10.0.0.8', serviceAccount: 'db' }));
  assert.equal(w.leases.count('spiffe://cluster.local/ns/shop/sa/web'), 2);
  a.release();
  assert.deepEqual(w.forgotten, [], 'b still has it');
  b.release();
  assert.deepEqual(w.forgotten, ['spiffe://cluster.local/ns/shop/sa/web']);
  other.release();
  assert.deepEqual(w.forgotten, ['spiffe://cluster.local/ns/shop/sa/web', 'spiffe://cluster.local/ns/shop/sa/db']);
  assert.equal(w.leases.held('spiffe://cluster.local/ns/shop/sa/web'), false);
});

test('IdentityLeases: a lease released twice counts once', () => {
  const forgotten: string[] = [];
  const l = new IdentityLeases((id) => forgotten.push(id));
  const x = l.acquire('id');
  const y = l.acquire('id');
  x.release();
  x.release();
  assert.deepEqual(forgotten, []);
  y.release();
  assert.deepEqual(forgotten, ['id']);
});

test('a listener that cannot be made: the pod is isolated (fails closed), its other listeners closed, retried with back-off, logged once', async () => {
  const w = captureWorld();
  w.failRole = 'hbone';
  const c = capture(w, pod('web'));
  await c.enroll();
  assert.equal(c.state, 'isolated');
  assert.equal(c.error?.code, 'LISTENER_FAILED');
  assert.equal(w.closedListeners, 2, 'the two made before the failure are closed');
  const h = w.handles[0]!;
  assert.deepEqual(w.dp.named('isolate'), [['isolate', 'shop/web', h.path, []]], 'isolated through the handle');
  assert.equal(w.dp.named('enroll').length, 0);
  assert.equal(c.retryAt, w.now + 1000);
  assert.equal(c.status().attempts, 1);
  w.now += 1000;
  await c.enroll();
  assert.equal(c.retryAt, w.now + 2000, 'back-off doubles');
  assert.equal(w.handles.length, 1, 'the retry uses the same handle');
  assert.deepEqual(
    w.lines.filter((l) => l.msg.startsWith('pod enrollment failed')).map((l) => l.level),
    ['error', 'debug'],
    'the same error logs once',
  );
  assert.equal(w.counts.get('pod_enroll_failed'), 2);
  w.failRole = null;
  w.now += 2000;
  await c.enroll();
  assert.equal(c.state, 'enrolled');
  assert.equal(c.error, null);
  assert.equal(c.status().attempts, 0);
});

test('a missing netns: NETNS_UNAVAILABLE, isolated outbound only (no handle, no sk_lookup)', async () => {
  const w = captureWorld({ missingNetns: ['/proc/77/ns/net'] });
  const c = capture(w, pod('web'));
  await c.enroll();
  assert.equal(c.error?.code, 'NETNS_UNAVAILABLE');
  assert.match(c.error!.message, /pod shop\/web: netns \/proc\/77\/ns\/net does not exist/);
  assert.equal(c.state, 'isolated');
  assert.deepEqual(w.dp.named('isolate'), [['isolate', 'shop/web', null, []]]);
  assert.equal(c.status().isolation?.inbound, false);
  const none = captureWorld();
  none.dp.isolation = { outbound: false, inbound: false };
  const gone = capture(none, pod('gone', { netns: null, cgroup: '/cg/missing' }));
  await gone.enroll();
  assert.equal(gone.state, 'failed', 'nothing could be put in place');
  assert.equal(gone.error?.code, 'NETNS_UNAVAILABLE');
});

test('a retry whose netns path names another namespace now: not retargeted, stays isolated', async () => {
  const w = captureWorld();
  w.failRole = 'outbound';
  const c = capture(w, pod('web'));
  await c.enroll();
  w.failRole = null;
  w.handles[0]!.replaced = true;
  w.now = c.retryAt;
  await c.enroll();
  assert.equal(c.state, 'isolated');
  assert.equal(c.error?.code, 'NETNS_UNAVAILABLE');
  assert.match(c.error!.message, /no longer names the namespace/);
  assert.equal(w.handles.length, 1, 'the path is not opened again');
  assert.equal(w.dp.named('enroll').length, 0);
});

test('isolate (an IP conflict) of an enrolled pod: listeners and proxy pool go, the shared address has no owner', async () => {
  const w = captureWorld();
  const c = capture(w, pod('web'));
  await c.enroll();
  c.isolate(new AmbientError('POD_IP_CONFLICT', 'pod shop/web and shop/x both claim 10.0.0.5', 'test'), new Set(['10.0.0.5']));
  assert.equal(c.state, 'isolated');
  assert.equal(w.closedListeners, 3);
  assert.deepEqual(w.released, ['shop/web']);
  assert.deepEqual(w.dp.named('isolate').at(-1), ['isolate', 'shop/web', w.handles[0]!.path, ['10.0.0.5']]);
  assert.equal(w.lines.find((l) => l.msg.startsWith('pod enrollment failed'))?.level, 'error');
});

test('detach (the agent stops): listeners and handle close, the datapath keeps the pod, the lease stays', async () => {
  const w = captureWorld();
  const c = capture(w, pod('web'));
  await c.enroll();
  c.detach();
  assert.equal(w.closedListeners, 3);
  assert.ok(w.handles[0]!.closed);
  assert.equal(w.dp.named('unenroll').length, 0, 'pinned: the pod fails closed until an agent comes back');
  assert.deepEqual(w.forgotten, []);
  c.release();
  assert.equal(w.dp.named('unenroll').length, 0, 'a detached capture is not released');
});

test('IPv6-only and dual-stack pods: one set of listeners per family (outbound and HBONE on the pod address, inbound on loopback), each registered with its family', async () => {
  const w = captureWorld();
  const c = capture(w, pod('v6', { ip: 'fd00::5', ips: ['fd00::5'] }));
  await c.enroll();
  assert.equal(c.state, 'enrolled');
  assert.deepEqual(
    w.listens.map((l) => [l.role, l.bind.ip, l.bind.port]),
    [
      ['outbound', 'fd00::5', 15001],
      ['inbound', '::1', 15006],
      ['hbone', 'fd00::5', 15008],
    ],
  );
  assert.deepEqual(
    w.dp.named('registerListener').map((r) => [r[2], r[4]]),
    [
      [15001, 6],
      [15006, 6],
      [15008, 6],
    ],
  );
  assert.deepEqual(w.dp.named('enroll')[0]![3], ['fd00::5']);

  const w2 = captureWorld();
  const d = capture(w2, pod('dual', { ip: '10.0.0.5', ips: ['10.0.0.5', 'fd00::5'] }));
  await d.enroll();
  assert.equal(d.state, 'enrolled');
  assert.deepEqual(
    w2.listens.map((l) => [l.role, l.bind.ip]),
    [
      ['outbound', '10.0.0.5'],
      ['inbound', '127.0.0.1'],
      ['hbone', '10.0.0.5'],
      ['outbound', 'fd00::5'],
      ['inbound', '::1'],
      ['hbone', 'fd00::5'],
    ],
  );
  assert.deepEqual(
    w2.dp.named('registerListener').map((r) => r[4]),
    [4, 4, 4, 6, 6, 6],
  );
  assert.deepEqual(w2.dp.named('enroll')[0]![3], ['10.0.0.5', 'fd00::5']);
  assert.equal(d.handoverEntries().length, 6, 'every listener is handed over, told apart by its address');
});
