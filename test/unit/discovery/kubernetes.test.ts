/**
 * The Kubernetes source against a fake API server (fake-k8s-api.ts):
 * recorded objects served over list + watch (bookmarks, 410 Gone, dropped
 * connections, a missing CRD). Over 500 lines: each scenario drives one
 * source through a sequence of API events, and they share the harness below;
 * the mapper's and the /proc finder's own tests are in k8s-mapping.test.ts
 * and k8s-sandbox.test.ts.
 */
import { compilePolicies } from '../../../src/policy/engine.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { KubernetesSource, WATCHED_RESOURCES, type KubernetesSourceOptions, type KubernetesApiError } from '../../../src/discovery/kubernetes.js';
import { isEnrolled, type MeshSnapshot, type PodInfo } from '../../../src/discovery/model.js';
import { Logger } from '../../../src/util/log.js';
import { ROOT } from '../../helpers/paths.js';
import { clone, FakeApi, fixture, kubeConfigFor, P, type Obj, type Res } from './fake-k8s-api.js';

const LOCAL = 'node-a';

interface Harness {
  api: FakeApi;
  src: KubernetesSource;
  updates: MeshSnapshot[];
  errors: KubernetesApiError[];
  logs: Array<Record<string, unknown>>;
  resolved: string[];
  close(): Promise<void>;
}

async function harness(
  t: { after(fn: () => Promise<void>): void },
  prepare: (api: FakeApi) => void = (a) => a.seedAll(),
  opts: Partial<KubernetesSourceOptions> = {},
): Promise<Harness> {
  const api = new FakeApi();
  prepare(api);
  await api.listen();
  const logs: Array<Record<string, unknown>> = [];
  const resolved: string[] = [];
  const src = new KubernetesSource({
    kubeConfig: kubeConfigFor(api),
    nodeName: LOCAL,
    resolveLocalPod: (p: PodInfo) => {
      resolved.push(`${p.namespace}/${p.name}`);
      return { netns: `/proc/4242/ns/net#${p.uid}`, cgroup: `/sys/fs/cgroup/kubepods.slice/pod${p.uid}` };
    },
    log: new Logger('test', 'debug', (l) => logs.push(JSON.parse(l) as Record<string, unknown>)),
    backoffInitialMs: 20,
    backoffMaxMs: 100,
    absentRetryMs: 60,
    ...opts,
  });
  const updates: MeshSnapshot[] = [];
  const errors: KubernetesApiError[] = [];
  src.on('update', (s) => updates.push(s));
  src.on('error', (e) => errors.push(e));
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    src.stop();
    await api.close();
  };
  t.after(close);
  return { api, src, updates, errors, logs, resolved, close };
}

/** Resolves when the source's snapshot satisfies pred (checked now and on every update). */
function until(src: KubernetesSource, pred: (s: MeshSnapshot) => boolean, what: string, ms = 3000): Promise<MeshSnapshot> {
  if (pred(src.current)) return Promise.resolve(src.current);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      src.off('update', on);
      reject(new Error(`timed out waiting for: ${what}`));
    }, ms);
    const on = (s: MeshSnapshot): void => {
      if (!pred(s)) return;
      clearTimeout(timer);
      src.off('update', on);
      resolve(s);
    };
    src.on('update', on);
  });
}

async function eventually(pred: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const WEB = 'ambient-demo/web-6d8f7c9b5-x2k7p';

// ---------------------------------------------------------------------------

test('initial list builds the snapshot: namespaces, pods, services with endpoints, policies', async (t) => {
  const h = await harness(t, (a) => a.seedAll(), { pageSize: 3 });
  await h.src.start();
  const s = h.src.current;
  assert.equal(h.updates.length, 1, 'exactly one update, at the end of the initial sync');
  assert.equal(h.updates[0], s);
  assert.deepEqual(s.errors, []);

  assert.deepEqual([...s.namespaces.keys()].sort(), ['ambient-demo', 'default', 'istio-system', 'kube-system', 'plain']);
  assert.deepEqual(s.namespaces.get('ambient-demo')!.labels, { 'istio.io/dataplane-mode': 'ambient', 'kubernetes.io/metadata.name': 'ambient-demo' });

  // hostNetwork (kube-proxy), Succeeded (job) and Pending-without-IP pods are not workloads
  assert.deepEqual(
    [...s.pods.keys()].sort(),
    ['ambient-demo/db-0', 'ambient-demo/legacy-7f5b8d6c4-h3j8n', WEB, 'ambient-demo/web-6d8f7c9b5-q9z4m', 'plain/client-5c7d9f8b6-m4n2v'].sort(),
  );
  assert.deepEqual(s.pods.get(WEB), {
    uid: '3f9c2a1e-7b4d-4c8e-9a51-2d6f0e8b1c47',
    name: 'web-6d8f7c9b5-x2k7p',
    namespace: 'ambient-demo',
    serviceAccount: 'web',
    node: 'node-a',
    ip: '10.244.1.10',
    ips: ['10.244.1.10'],
    netns: '/proc/4242/ns/net#3f9c2a1e-7b4d-4c8e-9a51-2d6f0e8b1c47',
    cgroup: '/sys/fs/cgroup/kubepods.slice/pod3f9c2a1e-7b4d-4c8e-9a51-2d6f0e8b1c47',
    labels: { app: 'web', 'pod-template-hash': '6d8f7c9b5', version: 'v1' },
    ready: true,
  });
  const db = s.pods.get('ambient-demo/db-0')!;
  assert.deepEqual(
    [db.ip, db.ips, db.node, db.netns, db.cgroup, db.serviceAccount, db.ready],
    ['10.244.2.20', ['10.244.2.20', 'fd00:10:244:2::14'], 'node-b', null, null, 'db', true],
  );
  assert.equal(s.pods.get('ambient-demo/web-6d8f7c9b5-q9z4m')!.ready, false);
  // resolveLocalPod is asked about local pods only
  assert.deepEqual(h.resolved.sort(), ['ambient-demo/legacy-7f5b8d6c4-h3j8n', WEB, 'plain/client-5c7d9f8b6-m4n2v'].sort());

  const enrolled = [...s.pods.values()]
    .filter((p) => isEnrolled(p, s.namespaces))
    .map((p) => p.name)
    .sort();
  assert.deepEqual(enrolled, ['db-0', 'web-6d8f7c9b5-q9z4m', 'web-6d8f7c9b5-x2k7p']);

  assert.deepEqual(s.services.get('ambient-demo/web'), {
    name: 'web',
    namespace: 'ambient-demo',
    hostname: 'web.ambient-demo.svc.cluster.local',
    vips: ['10.96.120.15'],
    ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }],
    selector: { app: 'web' },
    endpoints: [
      { ip: '10.244.1.10', ready: true, ports: [{ name: 'http', port: 8080 }], pod: WEB, node: 'node-a' },
      { ip: '10.244.2.11', ready: false, ports: [{ name: 'http', port: 8080 }], pod: 'ambient-demo/web-6d8f7c9b5-q9z4m', node: 'node-b' },
    ],
  });
  const dbSvc = s.services.get('ambient-demo/db')!;
  assert.deepEqual(dbSvc.vips, [], 'headless');
  assert.deepEqual(
    dbSvc.endpoints.map((e) => e.ip),
    ['10.244.2.20'],
  );
  const client = s.services.get('plain/client')!;
  assert.deepEqual(client.vips, ['10.96.33.7', 'fd00:10:96::2a1f']);
  assert.deepEqual(
    client.endpoints.map((e) => e.ip),
    ['fd00:10:244:1::1e', '10.244.1.30'],
    'both address families, from two slices',
  );
  const kube = s.services.get('default/kubernetes')!;
  assert.deepEqual(kube.ports, [{ name: 'https', port: 443, targetPort: 6443, protocol: 'TCP' }]);
  assert.deepEqual(kube.endpoints, [{ ip: '172.18.0.2', ready: true, ports: [{ name: 'https', port: 6443 }] }]);

  assert.deepEqual([...s.policies.keys()].sort(), ['ambient-demo/deny-legacy', 'ambient-demo/web-allow-client']);
  assert.deepEqual(s.policies.get('ambient-demo/web-allow-client'), {
    name: 'web-allow-client',
    namespace: 'ambient-demo',
    spec: {
      selector: { matchLabels: { app: 'web' } },
      action: 'ALLOW',
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/plain/sa/client'] } }], to: [{ operation: { ports: ['8080'] } }] }],
    },
  });
  assert.deepEqual(s.policies.get('ambient-demo/deny-legacy')!.spec.rules![0]!.when, [{ key: 'source.ip', values: ['192.0.2.0/24'] }]);

  // the protocol: paginated lists, then watches from the list's resourceVersion with bookmarks
  const podReqs = h.api.requests.filter((q) => q.res === 'pods');
  const lists = podReqs.filter((q) => !q.watch);
  assert.equal(lists.length, 3, '8 pods in pages of 3');
  assert.deepEqual(
    lists.map((q) => q.query.get('continue')),
    [null, '3', '6'],
  );
  assert.ok(lists.every((q) => q.query.get('limit') === '3' && !q.query.has('resourceVersion')));
  await eventually(() => h.api.count('pods', true) === 1, 'pod watch');
  const w = h.api.requests.find((q) => q.res === 'pods' && q.watch)!;
  assert.equal(w.query.get('allowWatchBookmarks'), 'true');
  assert.equal(w.query.get('resourceVersion'), String(h.api.rv));
  assert.ok(Number(w.query.get('timeoutSeconds')) >= 300);
  assert.ok(h.api.requests.every((q) => q.auth === 'Bearer test-token'));
  assert.deepEqual(h.errors, []);
  await h.close();
});

test('pods and services: add, update, delete via watch events; bursts are coalesced', async (t) => {
  const h = await harness(t);
  await h.src.start();
  await eventually(() => (Object.keys(P) as Res[]).every((r) => h.api.watching(r) === 1), 'all watches open');

  const base = h.api.get('pods', WEB);
  const np = clone(base);
  np.metadata.name = 'web-6d8f7c9b5-n3w1p';
  np.metadata.uid = '11111111-2222-4333-8444-555555555555';
  np.spec.nodeName = 'node-b';
  np.status.podIP = '10.244.2.40';
  np.status.podIPs = [{ ip: '10.244.2.40' }];
  h.api.put('pods', np);
  let s = await until(h.src, (x) => x.pods.has('ambient-demo/web-6d8f7c9b5-n3w1p'), 'pod added');
  assert.equal(s.pods.get('ambient-demo/web-6d8f7c9b5-n3w1p')!.ip, '10.244.2.40');
  assert.equal(s.pods.get('ambient-demo/web-6d8f7c9b5-n3w1p')!.netns, null, 'remote pod');

  np.metadata.labels.version = 'v2';
  np.status.conditions.find((c: Obj) => c.type === 'Ready').status = 'False';
  h.api.put('pods', np);
  s = await until(h.src, (x) => x.pods.get('ambient-demo/web-6d8f7c9b5-n3w1p')?.labels.version === 'v2', 'pod updated');
  assert.equal(s.pods.get('ambient-demo/web-6d8f7c9b5-n3w1p')!.ready, false);

  // a pod that completes leaves the snapshot (its IP may be reused)
  const done = clone(np);
  done.status.phase = 'Succeeded';
  h.api.put('pods', done);
  await until(h.src, (x) => !x.pods.has('ambient-demo/web-6d8f7c9b5-n3w1p'), 'succeeded pod gone');
  h.api.del('pods', 'ambient-demo/web-6d8f7c9b5-n3w1p');
  h.api.del('pods', WEB);
  s = await until(h.src, (x) => !x.pods.has(WEB), 'pod deleted');
  assert.ok(s.pods.has('ambient-demo/db-0'));

  // service + its EndpointSlice
  const svc = h.api.get('services', 'ambient-demo/web');
  svc.metadata.name = 'api';
  svc.spec.clusterIP = '10.96.200.2';
  svc.spec.clusterIPs = ['10.96.200.2'];
  svc.spec.ports = [{ name: 'grpc', port: 9000, protocol: 'TCP', targetPort: 9001 }];
  h.api.put('services', svc);
  const slice = h.api.get('endpointslices', 'ambient-demo/web-7xq2d');
  slice.metadata.name = 'api-abcde';
  slice.metadata.labels['kubernetes.io/service-name'] = 'api';
  slice.endpoints = [slice.endpoints[1]];
  slice.endpoints[0].conditions.ready = true;
  slice.ports = [{ name: 'grpc', port: 9001, protocol: 'TCP' }];
  h.api.put('endpointslices', slice);
  s = await until(h.src, (x) => (x.services.get('ambient-demo/api')?.endpoints.length ?? 0) === 1, 'service with endpoints');
  assert.deepEqual(s.services.get('ambient-demo/api')!.endpoints, [
    { ip: '10.244.2.11', ready: true, ports: [{ name: 'grpc', port: 9001 }], pod: 'ambient-demo/web-6d8f7c9b5-q9z4m', node: 'node-b' },
  ]);
  assert.deepEqual(s.services.get('ambient-demo/api')!.vips, ['10.96.200.2']);

  svc.spec.ports[0].port = 9100;
  h.api.put('services', svc);
  s = await until(h.src, (x) => x.services.get('ambient-demo/api')?.ports[0]?.port === 9100, 'service updated');
  assert.equal(s.services.get('ambient-demo/api')!.endpoints.length, 1, 'endpoints kept across a service update');
  slice.endpoints[0].conditions.ready = false;
  h.api.put('endpointslices', slice);
  await until(h.src, (x) => x.services.get('ambient-demo/api')?.endpoints[0]?.ready === false, 'endpoint not ready');
  h.api.del('endpointslices', 'ambient-demo/api-abcde');
  await until(h.src, (x) => x.services.get('ambient-demo/api')?.endpoints.length === 0, 'slice deleted');
  h.api.del('services', 'ambient-demo/api');
  await until(h.src, (x) => !x.services.has('ambient-demo/api'), 'service deleted');

  // a burst of 20 events in one go -> few updates, the last one complete
  await sleep(20);
  const before = h.updates.length;
  for (let i = 0; i < 20; i++) {
    const p = clone(base);
    p.metadata.name = `burst-${i}`;
    p.metadata.uid = `00000000-0000-4000-8000-0000000000${String(i).padStart(2, '0')}`;
    p.spec.nodeName = 'node-b';
    p.status.podIP = p.status.podIPs[0].ip = `10.244.3.${i + 1}`;
    h.api.put('pods', p);
  }
  await until(h.src, (x) => [...x.pods.keys()].filter((k) => k.includes('burst-')).length === 20, 'burst applied');
  await sleep(30);
  assert.ok(h.updates.length - before <= 3, `20 events in one burst gave ${h.updates.length - before} updates`);
  assert.deepEqual(h.errors, []);
  await h.close();
});

test('namespace relabel switches enrollment of its pods; a pod label "none" opts out', async (t) => {
  const h = await harness(t);
  await h.src.start();
  const client = 'plain/client-5c7d9f8b6-m4n2v';
  let s = h.src.current;
  assert.equal(isEnrolled(s.pods.get(client)!, s.namespaces), false);
  assert.equal(isEnrolled(s.pods.get('ambient-demo/legacy-7f5b8d6c4-h3j8n')!, s.namespaces), false, 'label none wins over the namespace');
  await eventually(() => h.api.watching('namespaces') === 1, 'namespace watch');

  const ns = h.api.get('namespaces', 'plain');
  ns.metadata.labels['istio.io/dataplane-mode'] = 'ambient';
  h.api.put('namespaces', ns);
  s = await until(h.src, (x) => isEnrolled(x.pods.get(client)!, x.namespaces), 'plain enrolled');
  assert.equal(s.namespaces.get('plain')!.labels['istio.io/dataplane-mode'], 'ambient');

  delete ns.metadata.labels['istio.io/dataplane-mode'];
  h.api.put('namespaces', ns);
  await until(h.src, (x) => !isEnrolled(x.pods.get(client)!, x.namespaces), 'plain unenrolled');

  const ambientNs = h.api.get('namespaces', 'ambient-demo');
  ambientNs.metadata.labels['istio.io/dataplane-mode'] = 'none';
  h.api.put('namespaces', ambientNs);
  s = await until(h.src, (x) => !isEnrolled(x.pods.get(WEB)!, x.namespaces), 'ambient-demo off');
  assert.equal([...s.pods.values()].filter((p) => isEnrolled(p, s.namespaces)).length, 0);
  ambientNs.metadata.labels['istio.io/dataplane-mode'] = 'ambient';
  h.api.put('namespaces', ambientNs);
  await until(h.src, (x) => isEnrolled(x.pods.get(WEB)!, x.namespaces), 'ambient-demo on');

  // a pod opting out in an ambient namespace, then back in
  const web = h.api.get('pods', WEB);
  web.metadata.labels['istio.io/dataplane-mode'] = 'none';
  h.api.put('pods', web);
  await until(h.src, (x) => !isEnrolled(x.pods.get(WEB)!, x.namespaces), 'web opted out');
  delete web.metadata.labels['istio.io/dataplane-mode'];
  h.api.put('pods', web);
  await until(h.src, (x) => isEnrolled(x.pods.get(WEB)!, x.namespaces), 'web back in');
  // namespace deleted: its pods lose enrollment (pods are deleted too, in a real cluster)
  h.api.del('namespaces', 'ambient-demo');
  await until(h.src, (x) => !x.namespaces.has('ambient-demo') && !isEnrolled(x.pods.get(WEB)!, x.namespaces), 'namespace deleted');
  await h.close();
});

test('watch ERROR 410 Gone -> relist; the old state is served until the relist completes, then replaced at once', async (t) => {
  const h = await harness(t);
  await h.src.start();
  await eventually(() => h.api.watching('pods') === 1, 'pod watch');
  const before = h.src.current;
  const updatesBefore = h.updates.length;

  h.api.holdLists = true;
  // the events in between are lost to compaction
  h.api.delSilently('pods', WEB);
  const np = h.api.get('pods', 'ambient-demo/db-0');
  np.metadata.name = 'db-1';
  np.metadata.uid = '22222222-3333-4444-8555-666666666666';
  np.status.podIP = '10.244.2.21';
  np.status.podIPs = [{ ip: '10.244.2.21' }];
  h.api.putSilently('pods', np);
  const db0 = h.api.get('pods', 'ambient-demo/db-0');
  db0.metadata.labels.role = 'primary';
  h.api.putSilently('pods', db0);
  h.api.expire('pods');

  await h.api.listHeld();
  await sleep(30);
  assert.equal(h.src.current, before, 'same snapshot while relisting');
  assert.equal(h.updates.length, updatesBefore, 'no update while relisting');
  assert.ok(h.src.current.pods.has(WEB));

  h.api.releaseLists();
  const s = await until(h.src, (x) => x.pods.has('ambient-demo/db-1'), 'relisted');
  assert.equal(h.updates.length, updatesBefore + 1, 'the relist is one atomic update');
  assert.equal(s.pods.has(WEB), false);
  assert.equal(s.pods.get('ambient-demo/db-0')!.labels.role, 'primary');
  assert.equal(s.pods.size, before.pods.size);
  assert.equal(s.services.size, before.services.size, 'other collections untouched');
  assert.equal(h.src.stats().pods.relists, 1);
  assert.deepEqual(h.errors, [], '410 is routine, not an error');

  // watching resumes from the relist's resourceVersion
  await eventually(() => h.api.watching('pods') === 1, 'pod watch again');
  const web = h.api.get('pods', 'ambient-demo/web-6d8f7c9b5-q9z4m');
  web.metadata.labels.after = 'relist';
  h.api.put('pods', web);
  await until(h.src, (x) => x.pods.get('ambient-demo/web-6d8f7c9b5-q9z4m')?.labels.after === 'relist', 'watch after relist');
  await h.close();
});

test('dropped connection -> reconnect from the last resourceVersion (bookmarks count), no relist; expired by then -> relist', async (t) => {
  const h = await harness(t);
  await h.src.start();
  await eventually(() => h.api.watching('pods') === 1, 'pod watch');
  const lists = h.api.count('pods', false);
  const watches = h.api.count('pods', true);

  const rv = h.api.bookmark('pods');
  await eventually(() => h.src.stats().pods.bookmarks === 1, 'bookmark seen');
  assert.equal(h.src.stats().pods.resourceVersion, String(rv));

  h.api.drop('pods');
  const web = h.api.get('pods', WEB);
  web.metadata.labels.during = 'outage';
  h.api.put('pods', web); // nobody is watching: only in the history
  await until(h.src, (x) => x.pods.get(WEB)?.labels.during === 'outage', 'missed event replayed');
  assert.equal(h.api.count('pods', false), lists, 'no relist');
  assert.equal(h.api.count('pods', true), watches + 1);
  const rewatch = h.api.requests.filter((q) => q.res === 'pods' && q.watch).at(-1)!;
  assert.equal(rewatch.query.get('resourceVersion'), String(rv), 'resumed from the bookmark');
  assert.ok(
    h.errors.length >= 1 && /connection closed|aborted|ECONNRESET|socket hang up/.test(h.errors[0]!.message),
    h.errors.map((e) => e.message).join('; '),
  );

  // the API server is unreachable for a while: errors and back-off, state kept
  h.api.missing.add('pods');
  h.api.drop('pods');
  await eventually(() => h.errors.some((e) => e.statusCode === 404), '404 while the server is broken');
  assert.ok(h.src.current.pods.has(WEB), 'state kept');
  const retries = h.api.count('pods', true);
  await sleep(150);
  const n = h.api.count('pods', true) - retries;
  assert.ok(n >= 1 && n <= 8, `back-off bounds retries (${n} in 150 ms)`);
  // ... and when it is back, the history is gone: 410 on the re-watch -> relist
  h.api.putSilently('pods', { ...web, metadata: { ...web.metadata, labels: { ...web.metadata.labels, during: 'compacted' } } });
  h.api.expire('pods');
  h.api.missing.delete('pods');
  await until(h.src, (x) => x.pods.get(WEB)?.labels.during === 'compacted', 'relisted after expiry');
  assert.ok(h.api.count('pods', false) > lists);
  await h.close();
});

test('AuthorizationPolicy CRD missing (404) -> no policies, no crash, logged once; policies appear once it is installed', async (t) => {
  const h = await harness(t, (a) => {
    a.seedAll();
    a.missing.add('authorizationpolicies');
  });
  await h.src.start();
  assert.equal(h.src.current.policies.size, 0);
  assert.ok(h.src.current.pods.size > 0);
  await eventually(() => h.api.count('authorizationpolicies', false) >= 3, 'retried');
  const warned = h.logs.filter((l) => l.level === 'warn' && /not served/.test(String(l.msg)));
  assert.equal(warned.length, 1, 'logged once');
  assert.deepEqual(h.errors, [], 'absence is not an error event');

  h.api.missing.delete('authorizationpolicies');
  const s = await until(h.src, (x) => x.policies.size === 2, 'policies after CRD install');
  assert.ok(s.policies.has('ambient-demo/deny-legacy'));
  await eventually(() => h.api.watching('authorizationpolicies') === 1, 'policy watch');
  const pol = h.api.get('authorizationpolicies', 'ambient-demo/deny-legacy');
  pol.spec.action = 'AUDIT';
  h.api.put('authorizationpolicies', pol);
  await until(h.src, (x) => x.policies.get('ambient-demo/deny-legacy')?.spec.action === 'AUDIT', 'policy watch works');

  // CRD removed again: the watch breaks with 404, policies go away
  h.api.missing.add('authorizationpolicies');
  h.api.drop('authorizationpolicies');
  await until(h.src, (x) => x.policies.size === 0, 'CRD deleted -> no policies');
  await h.close();
});

test('malformed objects -> EntryError naming kind, object and field; the rest is served; fixing the object restores it', async (t) => {
  const h = await harness(t, (a) => {
    a.seedAll();
    const bad = clone(fixture('pods')[0]!);
    bad.metadata.name = 'broken';
    bad.metadata.uid = '33333333-4444-4555-8666-777777777777';
    bad.status.podIP = '10.244.1.999';
    bad.status.podIPs = [{ ip: '10.244.1.999' }];
    a.seed('pods', [bad]);
    const svc = clone(fixture('services')[1]!);
    svc.metadata.name = 'badport';
    svc.spec.ports = [{ name: 'http', port: 70000, protocol: 'TCP', targetPort: 8080 }];
    a.seed('services', [svc]);
    const sl = clone(fixture('endpointslices')[1]!);
    sl.metadata.name = 'web-broken';
    sl.endpoints[0].addresses = ['fd00::1'];
    a.seed('endpointslices', [sl]);
    const pol = clone(fixture('authorizationpolicies')[0]!);
    pol.metadata.name = 'permit';
    pol.spec.action = 'PERMIT';
    a.seed('authorizationpolicies', [pol]);
    const pol2 = clone(fixture('authorizationpolicies')[0]!);
    pol2.metadata.name = 'typo';
    pol2.spec.rules[0].from[0].source = { principal: ['cluster.local/ns/plain/sa/client'] };
    a.seed('authorizationpolicies', [pol2]);
    a.seed('namespaces', [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'odd', labels: { 'istio.io/dataplane-mode': true } } }]);
  });
  await h.src.start();
  const s = h.src.current;
  const msgs = s.errors.map((e) => `${e.entry}: ${e.message}`).sort();
  assert.deepEqual(msgs, [
    'EndpointSlice ambient-demo/web-broken: endpoints[0].addresses[0]: fd00::1 is not an IPv4 address',
    'Namespace odd: metadata.labels.istio.io/dataplane-mode: must be a string, got true',
    'Pod ambient-demo/broken: status.podIP: "10.244.1.999" is not an IP address',
    'Service ambient-demo/badport: spec.ports[0].port: must be a port number 1-65535, got 70000',
  ]);
  assert.equal(s.pods.has('ambient-demo/broken'), false);
  assert.equal(s.services.has('ambient-demo/badport'), false);
  // malformed policies are served as written: the policy engine reports them and
  // applies the fail-safe (dropping them here would open access)
  assert.equal(s.policies.size, 4);
  const described = compilePolicies([...s.policies.values()]).describe();
  assert.equal(described.find((d) => d.policy === 'ambient-demo/permit')!.status, 'invalid-deny-all');
  assert.equal(described.find((d) => d.policy === 'ambient-demo/typo')!.status, 'invalid-allow-nothing');
  assert.match(described.find((d) => d.policy === 'ambient-demo/typo')!.errors.join('\n'), /source\.principal/);
  assert.equal(s.namespaces.size, 5);
  assert.equal(s.pods.size, 5, 'the good pods are served');
  assert.equal(s.services.get('ambient-demo/web')!.endpoints.length, 2, 'a broken slice does not hide the good one');
  assert.ok(h.logs.some((l) => l.level === 'warn' && l.entry === 'Pod ambient-demo/broken'));

  // a good object turning bad is dropped with an error; fixed, it is back
  await eventually(() => h.api.watching('pods') === 1, 'pod watch');
  const web = h.api.get('pods', WEB);
  web.status.conditions = 'Ready';
  h.api.put('pods', web);
  let x = await until(h.src, (y) => !y.pods.has(WEB), 'bad update');
  assert.ok(x.errors.some((e) => e.entry === `Pod ${WEB}` && e.message === 'status.conditions: must be a list, got "Ready"'));
  web.status.conditions = [{ type: 'Ready', status: 'True' }];
  h.api.put('pods', web);
  x = await until(h.src, (y) => y.pods.has(WEB), 'fixed');
  assert.ok(!x.errors.some((e) => e.entry === `Pod ${WEB}`));
  // an object without a spec arriving on the watch is reported too, and the watch goes on
  h.api.put('pods', { metadata: { name: 'ok-but-no-spec', namespace: 'plain' } });
  x = await until(h.src, (y) => y.errors.some((e) => e.entry === 'Pod plain/ok-but-no-spec'), 'no spec');
  assert.equal(x.errors.find((e) => e.entry === 'Pod plain/ok-but-no-spec')!.message, 'spec: missing');
  assert.deepEqual(h.errors, []);
  await h.close();
});

test('stop() before the initial list completes rejects start() and leaves nothing running', async (t) => {
  const h = await harness(t);
  h.api.holdLists = true;
  const started = h.src.start();
  await h.api.listHeld();
  h.src.stop();
  await assert.rejects(started, /stopped before the initial list/);
  assert.equal(h.updates.length, 0);
  await h.close();
});

test('a local pod whose sandbox is not found yet is resolved again later', async (t) => {
  let calls = 0;
  let sandboxUp = false;
  const h = await harness(t, (a) => a.seedAll(), {
    resolveRetryMs: 20,
    resolveLocalPod: (p: PodInfo) => {
      if (p.name !== 'web-6d8f7c9b5-x2k7p') return null;
      calls++;
      return sandboxUp ? { netns: '/proc/77/ns/net', cgroup: '/sys/fs/cgroup/pod' } : null;
    },
  });
  await h.src.start();
  assert.equal(h.src.current.pods.get(WEB)!.netns, null, 'served without a netns meanwhile');
  await eventually(() => calls >= 2, 'retried');
  sandboxUp = true;
  const s = await until(h.src, (x) => x.pods.get(WEB)?.netns === '/proc/77/ns/net', 'resolved on retry');
  assert.equal(s.pods.get(WEB)!.cgroup, '/sys/fs/cgroup/pod');
  const n = calls;
  await sleep(60);
  assert.equal(calls, n, 'no more lookups once resolved');
  await h.close();
});

test('deploy/rbac.yaml grants exactly the resources and verbs the source uses', () => {
  const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy', 'rbac.yaml'), 'utf8')).map((d) => d.toJS() as Obj);
  const byKind = new Map(docs.map((d) => [d.kind as string, d]));
  assert.deepEqual([...byKind.keys()].sort(), ['ClusterRole', 'ClusterRoleBinding', 'ServiceAccount']);
  const sa = byKind.get('ServiceAccount')!;
  assert.deepEqual([sa.metadata.name, sa.metadata.namespace], ['ambientd', 'ambientd-system']);
  const role = byKind.get('ClusterRole')!;
  const binding = byKind.get('ClusterRoleBinding')!;
  assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'ambientd', namespace: 'ambientd-system' }]);

  const granted = new Set<string>();
  for (const rule of role.rules as Obj[]) {
    assert.deepEqual(Object.keys(rule).sort(), ['apiGroups', 'resources', 'verbs'], 'no resourceNames/nonResourceURLs');
    for (const g of rule.apiGroups)
      for (const r of rule.resources)
        for (const v of rule.verbs) {
          assert.ok(!['*'].includes(g) && !['*'].includes(r) && !['*'].includes(v), 'no wildcards');
          const k = `${g}/${r}:${v}`;
          assert.ok(!granted.has(k), `duplicate grant ${k}`);
          granted.add(k);
        }
  }
  const used = new Set(WATCHED_RESOURCES.flatMap((r) => r.verbs.map((v) => `${r.group}/${r.name}:${v}`)));
  assert.deepEqual([...granted].sort(), [...used].sort());
  // and the watched paths are the ones the groups/versions say
  for (const r of WATCHED_RESOURCES) assert.equal(r.path, r.group === '' ? `/api/${r.version}/${r.name}` : `/apis/${r.group}/${r.version}/${r.name}`);
});
