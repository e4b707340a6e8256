/**
 * Kubernetes discovery against a fake API server: recorded objects
 * (test/fixtures/k8s/*.json, kubectl -o json shapes) served over list +
 * watch (newline-delimited JSON events, bookmarks, 410 Gone, dropped
 * connections, a missing CRD).
 */
import { compilePolicies } from '../../../src/policy/engine.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import YAML from 'yaml';
import { KubeConfig } from '@kubernetes/client-node';
import {
  KubernetesSource, WATCHED_RESOURCES, findPodSandbox, PodSandboxFinder, podUidFromCgroupSegment, mapPod, mapService, mapEndpointSlice, mapAuthorizationPolicy, type KubernetesSourceOptions, type KubernetesApiError,
} from '../../../src/discovery/kubernetes.js';
import { isEnrolled, type MeshSnapshot, type PodInfo } from '../../../src/discovery/model.js';
import { Logger } from '../../../src/util/log.js';
import { ROOT } from '../../helpers/paths.js';

type Obj = Record<string, any>;

const FIX = path.join(ROOT, 'test', 'fixtures', 'k8s');
function fixture(name: string): Obj[] {
  return (JSON.parse(fs.readFileSync(path.join(FIX, `${name}.json`), 'utf8')) as { items: Obj[] }).items;
}
const clone = <T>(v: T): T => structuredClone(v);

const P = {
  namespaces: '/api/v1/namespaces',
  pods: '/api/v1/pods',
  services: '/api/v1/services',
  endpointslices: '/apis/discovery.k8s.io/v1/endpointslices',
  authorizationpolicies: '/apis/security.istio.io/v1/authorizationpolicies',
} as const;
type Res = keyof typeof P;
const LIST_KIND: Record<Res, [string, string]> = {
  namespaces: ['v1', 'NamespaceList'],
  pods: ['v1', 'PodList'],
  services: ['v1', 'ServiceList'],
  endpointslices: ['discovery.k8s.io/v1', 'EndpointSliceList'],
  authorizationpolicies: ['security.istio.io/v1', 'AuthorizationPolicyList'],
};

const keyOf = (o: Obj): string => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);

interface Watcher { res: Res; out: http.ServerResponse; bookmarks: boolean; timer: NodeJS.Timeout }

/** Just enough of the API server for list (with limit/continue) and watch. */
class FakeApi {
  readonly server = http.createServer((req, res) => this.handle(req, res));
  rv = 50_000;
  readonly store = new Map<Res, Map<string, Obj>>();
  readonly history = new Map<Res, Array<{ rv: number; type: string; object: Obj }>>();
  /** watches from a resourceVersion below this get 410 */
  readonly compacted = new Map<Res, number>();
  readonly watchers = new Set<Watcher>();
  readonly requests: Array<{ res: Res | null; watch: boolean; query: URLSearchParams; auth?: string }> = [];
  /** resources answering 404 (CRD not installed) */
  readonly missing = new Set<Res>();
  /** when set, list requests wait until releaseLists() */
  holdLists = false;
  private held: Array<() => void> = [];
  private readonly heldWaiters: Array<() => void> = [];
  port = 0;

  constructor() {
    for (const r of Object.keys(P) as Res[]) {
      this.store.set(r, new Map());
      this.history.set(r, []);
      this.compacted.set(r, 0);
    }
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const w of this.watchers) { clearTimeout(w.timer); w.out.destroy(); }
    this.watchers.clear();
    for (const h of this.held) h();
    this.held = [];
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  seed(r: Res, items: Obj[]): void {
    const m = this.store.get(r)!;
    for (const it of items) {
      const o = clone(it);
      o.metadata.resourceVersion = String(++this.rv);
      m.set(keyOf(o), o);
    }
  }

  seedAll(): void {
    for (const r of Object.keys(P) as Res[]) this.seed(r, fixture(r));
  }

  get(r: Res, key: string): Obj {
    return clone(this.store.get(r)!.get(key)!);
  }

  private event(r: Res, type: string, o: Obj): void {
    const ev = { rv: this.rv, type, object: o };
    this.history.get(r)!.push(ev);
    for (const w of this.watchers) if (w.res === r) w.out.write(JSON.stringify({ type, object: o }) + '\n');
  }

  /** ADDED or MODIFIED */
  put(r: Res, obj: Obj): void {
    const o = clone(obj);
    o.metadata.resourceVersion = String(++this.rv);
    const m = this.store.get(r)!;
    const type = m.has(keyOf(o)) ? 'MODIFIED' : 'ADDED';
    m.set(keyOf(o), o);
    this.event(r, type, o);
  }

  del(r: Res, key: string): void {
    const m = this.store.get(r)!;
    const o = clone(m.get(key)!);
    m.delete(key);
    o.metadata.resourceVersion = String(++this.rv);
    this.event(r, 'DELETED', o);
  }

  /** Changes the store without any watch event (as if the events were compacted away). */
  putSilently(r: Res, obj: Obj): void {
    const o = clone(obj);
    o.metadata.resourceVersion = String(++this.rv);
    this.store.get(r)!.set(keyOf(o), o);
  }

  delSilently(r: Res, key: string): void {
    this.store.get(r)!.delete(key);
    ++this.rv;
  }

  /** History compacted: open watches get ERROR 410 and end; older resourceVersions are refused. */
  expire(r: Res): void {
    this.compacted.set(r, this.rv);
    for (const w of [...this.watchers]) {
      if (w.res !== r) continue;
      w.out.end(JSON.stringify({ type: 'ERROR', object: gone(this.rv) }) + '\n');
      this.dropWatcher(w);
    }
  }

  bookmark(r: Res): number {
    const rv = ++this.rv;
    const [apiVersion] = LIST_KIND[r];
    for (const w of this.watchers) {
      if (w.res === r && w.bookmarks) w.out.write(JSON.stringify({ type: 'BOOKMARK', object: { apiVersion, kind: LIST_KIND[r][1].replace(/List$/, ''), metadata: { resourceVersion: String(rv) } } }) + '\n');
    }
    return rv;
  }

  /** Kills the TCP connections of the open watches (no clean end of stream). */
  drop(r: Res): void {
    for (const w of [...this.watchers]) {
      if (w.res !== r) continue;
      this.dropWatcher(w);
      w.out.socket?.destroy();
    }
  }

  watching(r: Res): number {
    return [...this.watchers].filter((w) => w.res === r).length;
  }

  releaseLists(): void {
    this.holdLists = false;
    const h = this.held;
    this.held = [];
    for (const f of h) f();
  }

  /** resolves once a list request is being held */
  listHeld(): Promise<void> {
    if (this.held.length > 0) return Promise.resolve();
    return new Promise((resolve) => this.heldWaiters.push(resolve));
  }

  count(r: Res, watch: boolean): number {
    return this.requests.filter((q) => q.res === r && q.watch === watch).length;
  }

  private dropWatcher(w: Watcher): void {
    clearTimeout(w.timer);
    this.watchers.delete(w);
  }

  private handle(req: http.IncomingMessage, out: http.ServerResponse): void {
    const url = new URL(req.url!, 'http://x');
    const r = (Object.keys(P) as Res[]).find((k) => P[k] === url.pathname) ?? null;
    const watch = url.searchParams.get('watch') === 'true';
    this.requests.push({ res: r, watch, query: url.searchParams, ...(req.headers.authorization ? { auth: req.headers.authorization } : {}) });
    const status = (code: number, reason: string, message: string): void => {
      out.writeHead(code, { 'content-type': 'application/json' });
      out.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
    };
    if (req.headers.authorization !== 'Bearer test-token') return status(401, 'Unauthorized', 'Unauthorized');
    if (r === null || this.missing.has(r)) return status(404, 'NotFound', 'the server could not find the requested resource');
    if (!watch) {
      const serve = (): void => {
        const items = [...this.store.get(r)!.values()].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1));
        const limit = Number(url.searchParams.get('limit') ?? '0');
        const from = Number(url.searchParams.get('continue') ?? '0');
        const page = limit > 0 ? items.slice(from, from + limit) : items.slice(from);
        const next = limit > 0 && from + limit < items.length ? String(from + limit) : undefined;
        const [apiVersion, kind] = LIST_KIND[r];
        out.writeHead(200, { 'content-type': 'application/json' });
        out.end(JSON.stringify({ apiVersion, kind, metadata: { resourceVersion: String(this.rv), ...(next ? { continue: next } : {}) }, items: page }));
      };
      if (this.holdLists) {
        this.held.push(serve);
        for (const w of this.heldWaiters.splice(0)) w();
        return;
      }
      return serve();
    }
    const from = Number(url.searchParams.get('resourceVersion') ?? '0');
    out.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    if (from < this.compacted.get(r)!) {
      out.end(JSON.stringify({ type: 'ERROR', object: gone(from) }) + '\n');
      return;
    }
    out.flushHeaders();
    for (const ev of this.history.get(r)!) if (ev.rv > from) out.write(JSON.stringify({ type: ev.type, object: ev.object }) + '\n');
    const timeout = Number(url.searchParams.get('timeoutSeconds') ?? '1800');
    const w: Watcher = { res: r, out, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', timer: setTimeout(() => { this.dropWatcher(w); out.end(); }, timeout * 1000) };
    this.watchers.add(w);
    out.on('close', () => this.dropWatcher(w));
  }
}

function gone(rv: number): Obj {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${rv} (${rv + 1})`, reason: 'Expired', code: 410 };
}

function kubeConfigFor(api: FakeApi): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: `http://127.0.0.1:${api.port}`, skipTLSVerify: true }],
    users: [{ name: 'agent', token: 'test-token' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'agent' }],
    currentContext: 'fake',
  });
  return kc;
}

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

async function harness(t: { after(fn: () => Promise<void>): void }, prepare: (api: FakeApi) => void = (a) => a.seedAll(), opts: Partial<KubernetesSourceOptions> = {}): Promise<Harness> {
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
    const timer = setTimeout(() => { src.off('update', on); reject(new Error(`timed out waiting for: ${what}`)); }, ms);
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
  assert.deepEqual([...s.pods.keys()].sort(), [
    'ambient-demo/db-0', 'ambient-demo/legacy-7f5b8d6c4-h3j8n', WEB, 'ambient-demo/web-6d8f7c9b5-q9z4m', 'plain/client-5c7d9f8b6-m4n2v',
  ].sort());
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
  assert.deepEqual([db.ip, db.ips, db.node, db.netns, db.cgroup, db.serviceAccount, db.ready], ['10.244.2.20', ['10.244.2.20', 'fd00:10:244:2::14'], 'node-b', null, null, 'db', true]);
  assert.equal(s.pods.get('ambient-demo/web-6d8f7c9b5-q9z4m')!.ready, false);
  // resolveLocalPod is asked about local pods only
  assert.deepEqual(h.resolved.sort(), ['ambient-demo/legacy-7f5b8d6c4-h3j8n', WEB, 'plain/client-5c7d9f8b6-m4n2v'].sort());

  const enrolled = [...s.pods.values()].filter((p) => isEnrolled(p, s.namespaces)).map((p) => p.name).sort();
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
  assert.deepEqual(dbSvc.endpoints.map((e) => e.ip), ['10.244.2.20']);
  const client = s.services.get('plain/client')!;
  assert.deepEqual(client.vips, ['10.96.33.7', 'fd00:10:96::2a1f']);
  assert.deepEqual(client.endpoints.map((e) => e.ip), ['fd00:10:244:1::1e', '10.244.1.30'], 'both address families, from two slices');
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
  assert.deepEqual(lists.map((q) => q.query.get('continue')), [null, '3', '6']);
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
  assert.deepEqual(s.services.get('ambient-demo/api')!.endpoints, [{ ip: '10.244.2.11', ready: true, ports: [{ name: 'grpc', port: 9001 }], pod: 'ambient-demo/web-6d8f7c9b5-q9z4m', node: 'node-b' }]);
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
  assert.ok(h.errors.length >= 1 && /connection closed|aborted|ECONNRESET|socket hang up/.test(h.errors[0]!.message), h.errors.map((e) => e.message).join('; '));

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
  const h = await harness(t, (a) => { a.seedAll(); a.missing.add('authorizationpolicies'); });
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

test('mapping details: dual-stack pods, serviceAccount default, named targetPorts, slice conditions, targetRef folding', () => {
  const pod = clone(fixture('pods')[2]!); // db-0
  delete pod.spec.serviceAccountName;
  delete pod.spec.serviceAccount;
  const m = mapPod(pod);
  assert.ok('pod' in m);
  assert.equal(m.pod.serviceAccount, 'default');
  assert.deepEqual(m.pod.ips, ['10.244.2.20', 'fd00:10:244:2::14']);
  assert.deepEqual(mapPod(fixture('pods')[5]), { skip: 'hostNetwork' });
  assert.deepEqual(mapPod(fixture('pods')[6]), { skip: 'terminated' });
  assert.deepEqual(mapPod(fixture('pods')[7]), { skip: 'noIP' });
  const nonode = clone(fixture('pods')[0]!);
  delete nonode.spec.nodeName;
  assert.throws(() => mapPod(nonode), /^FieldError: spec\.nodeName: must be a non-empty string, got undefined$/);

  const svc = clone(fixture('services')[1]!);
  svc.spec.ports.push({ port: 81 }, { port: 82, targetPort: 8082 });
  svc.spec.type = 'ExternalName';
  const ms = mapService(svc, { clusterDomain: 'example.org' });
  assert.equal(ms.hostname, 'web.ambient-demo.svc.example.org');
  assert.deepEqual(ms.vips, [], 'ExternalName has no VIP');
  assert.deepEqual(ms.ports.slice(1), [{ port: 81, targetPort: 81, protocol: 'TCP' }, { port: 82, targetPort: 8082, protocol: 'TCP' }]);
  // targetPort "8082" (a string of digits) is neither a number nor a port name: the API server rejects it (was read as 8082)
  svc.spec.ports[2].targetPort = '8082';
  assert.throws(() => mapService(svc), /^FieldError: spec\.ports\[2\]\.targetPort: "8082" is a string of digits/);

  const sl = clone(fixture('endpointslices')[0]!);
  delete sl.endpoints[0].conditions.ready;
  sl.endpoints.push({ addresses: ['172.18.0.9'], conditions: { ready: false, serving: true, terminating: true } });
  const info = mapEndpointSlice(sl);
  assert.deepEqual(info.endpoints.map((e) => [e.ip, e.ready]), [['172.18.0.2', true], ['172.18.0.9', false]], 'nil ready means ready');
  assert.equal(info.service, 'kubernetes');
  assert.deepEqual(mapEndpointSlice({ ...sl, addressType: 'FQDN', endpoints: [{ addresses: ['db.example.org'] }] }).endpoints, []);

  const pol = clone(fixture('authorizationpolicies')[0]!);
  delete pol.spec.selector;
  pol.spec.targetRef = { kind: 'Service', group: '', name: 'web' };
  assert.deepEqual(mapAuthorizationPolicy(pol).spec.targetRefs, [{ kind: 'Service', group: '', name: 'web' }]);
  const empty = clone(pol);
  delete empty.spec;
  assert.deepEqual(mapAuthorizationPolicy(empty).spec, {}, 'no spec = allow nothing, kept as the empty spec');
});

test('findPodSandbox finds the pod cgroup (systemd and cgroupfs forms) and a non-host netns in a fake /proc', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-proc-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const proc = path.join(dir, 'proc');
  const cg = path.join(dir, 'cgroup');
  const HOST = 'net:[4026531840]';
  const mkproc = (pid: number, cgroup: string, netns: string, cmd = 'app'): void => {
    const d = path.join(proc, String(pid));
    fs.mkdirSync(path.join(d, 'ns'), { recursive: true });
    fs.writeFileSync(path.join(d, 'cgroup'), cgroup);
    fs.writeFileSync(path.join(d, 'cmdline'), `${cmd}\0--flag\0`);
    fs.symlinkSync(netns, path.join(d, 'ns', 'net')); // like the kernel's magic links: readlink gives "net:[inode]"
  };
  const sysd = '3f9c2a1e-7b4d-4c8e-9a51-2d6f0e8b1c47';
  const sysdDir = `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${sysd.replace(/-/g, '_')}.slice`;
  const cgfs = 'e4b7d0a9-2c5f-4a18-8e3b-6f9c1d4a7b02';
  const cgfsDir = `/kubepods/burstable/pod${cgfs}`;
  const hostnet = '0d3e6f9a-4b7c-4e1d-a2f5-8c9b0a1d2e3f';
  const guaranteed = 'c7e2f9a4-1d6b-4b8e-93c5-0a4d8f2e6b71';
  const guarDir = `/kubepods.slice/kubepods-pod${guaranteed.replace(/-/g, '_')}.slice`;

  mkproc(1, '0::/init.scope\n', HOST, '/sbin/init');
  mkproc(57, '0::/system.slice/containerd.service\n', HOST, '/usr/bin/containerd');
  // the app container first (lower pid than pause would be unusual, but must not matter), then pause
  mkproc(880, `0::${sysdDir}/cri-containerd-7d1c0f.scope\n`, 'net:[4026532301]', '/usr/local/bin/web');
  mkproc(901, `0::${sysdDir}/cri-containerd-a3b9e2.scope\n`, 'net:[4026532301]', '/pause');
  mkproc(1200, `12:pids:${cgfsDir}/deadbeef\n0::${cgfsDir}/4c5d6e7f\n`, 'net:[4026532410]');
  mkproc(1300, `0::/kubepods/besteffort/pod${hostnet}/abcdef\n`, HOST, '/usr/local/bin/kube-proxy');
  mkproc(1400, `0::${guarDir}/cri-containerd-ffff.scope\n`, 'net:[4026532555]', '/pause');
  // a process whose cgroup v1 line mentions a pod but has no v2 line: ignored
  mkproc(1500, `4:memory:/kubepods/pod99999999-9999-4999-8999-999999999999/x\n`, 'net:[4026532999]');
  for (const d of [sysdDir, cgfsDir, `/kubepods/besteffort/pod${hostnet}`, guarDir]) fs.mkdirSync(path.join(cg, d), { recursive: true });

  const o = { procRoot: proc, cgroupRoot: cg };
  assert.deepEqual(findPodSandbox(sysd, o), { netns: path.join(proc, '901', 'ns', 'net'), cgroup: path.join(cg, sysdDir) }, 'systemd form; pause preferred');
  assert.deepEqual(findPodSandbox(cgfs, o), { netns: path.join(proc, '1200', 'ns', 'net'), cgroup: path.join(cg, cgfsDir) }, 'cgroupfs form');
  assert.deepEqual(findPodSandbox(guaranteed, o), { netns: path.join(proc, '1400', 'ns', 'net'), cgroup: path.join(cg, guarDir) }, 'guaranteed QoS (no qos level)');
  assert.deepEqual(findPodSandbox(hostnet, o), { netns: null, cgroup: path.join(cg, `/kubepods/besteffort/pod${hostnet}`) }, 'host netns is never returned');
  assert.equal(findPodSandbox('99999999-9999-4999-8999-999999999999', o), null, 'cgroup v1 only: not found');
  assert.equal(findPodSandbox('12345678-1234-4234-8234-123456789abc', o), null, 'unknown pod');
  assert.equal(findPodSandbox('../../etc', o), null, 'not a UID');
  // the cgroup directory is missing under cgroupRoot (cgroup namespace mismatch): netns only
  fs.rmSync(path.join(cg, cgfsDir), { recursive: true });
  assert.deepEqual(findPodSandbox(cgfs, o), { netns: path.join(proc, '1200', 'ns', 'net'), cgroup: null });
  assert.equal(findPodSandbox(sysd, { procRoot: path.join(dir, 'nope'), cgroupRoot: cg }), null);

  // segment names
  assert.equal(podUidFromCgroupSegment(`kubepods-burstable-pod${sysd.replace(/-/g, '_')}.slice`), sysd);
  assert.equal(podUidFromCgroupSegment(`pod${sysd}`), sysd);
  assert.equal(podUidFromCgroupSegment(`pod${sysd.replace(/-/g, '_')}`), null, 'underscores only in the systemd .slice form');
  assert.equal(podUidFromCgroupSegment(`kubepods-pod${sysd}.slice`), null);
  assert.equal(podUidFromCgroupSegment(`cri-containerd-${sysd}.scope`), null);

  // the finder: one scan serves lookups for maxAgeMs; a new pod is seen once the scan is older
  const finder = new PodSandboxFinder({ procRoot: proc, cgroupRoot: cg, maxAgeMs: 60_000 });
  assert.equal(finder.find(sysd)!.netns, path.join(proc, '901', 'ns', 'net'));
  const late = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
  mkproc(2000, `0::/kubepods/besteffort/pod${late}/c1\n`, 'net:[4026532777]', '/pause');
  assert.equal(finder.find(late), null, 'cached scan');
  const fresh = new PodSandboxFinder({ procRoot: proc, cgroupRoot: cg, maxAgeMs: -1 });
  assert.equal(fresh.find(sysd)!.netns, path.join(proc, '901', 'ns', 'net'));
  assert.equal(fresh.find(late.toUpperCase())!.netns, path.join(proc, '2000', 'ns', 'net'), 'rescanned');
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
    for (const g of rule.apiGroups) for (const r of rule.resources) for (const v of rule.verbs) {
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
