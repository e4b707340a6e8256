/**
 * Just enough of a Kubernetes API server for the discovery tests: recorded
 * objects (test/fixtures/k8s/*.json, kubectl -o json shapes) served over list
 * (limit/continue) and watch (newline-delimited JSON events, bookmarks, 410
 * Gone, dropped connections, a missing CRD). A helper, not a test file.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { ROOT } from '../../helpers/paths.js';

// parsed YAML/JSON of any shape, read field by field by the assertions
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = Record<string, any>;

const FIX = path.join(ROOT, 'test', 'fixtures', 'k8s');
export function fixture(name: string): Obj[] {
  return (JSON.parse(fs.readFileSync(path.join(FIX, `${name}.json`), 'utf8')) as { items: Obj[] }).items;
}
export const clone = <T>(v: T): T => structuredClone(v);

export const P = {
  namespaces: '/api/v1/namespaces',
  pods: '/api/v1/pods',
  services: '/api/v1/services',
  endpointslices: '/apis/discovery.k8s.io/v1/endpointslices',
  authorizationpolicies: '/apis/security.istio.io/v1/authorizationpolicies',
} as const;
export type Res = keyof typeof P;
const LIST_KIND: Record<Res, [string, string]> = {
  namespaces: ['v1', 'NamespaceList'],
  pods: ['v1', 'PodList'],
  services: ['v1', 'ServiceList'],
  endpointslices: ['discovery.k8s.io/v1', 'EndpointSliceList'],
  authorizationpolicies: ['security.istio.io/v1', 'AuthorizationPolicyList'],
};

export const keyOf = (o: Obj): string => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);

interface Watcher {
  res: Res;
  out: http.ServerResponse;
  bookmarks: boolean;
  timer: NodeJS.Timeout;
}

/** Just enough of the API server for list (with limit/continue) and watch. */
export class FakeApi {
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
    for (const w of this.watchers) {
      clearTimeout(w.timer);
      w.out.destroy();
    }
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
      if (w.res === r && w.bookmarks)
        w.out.write(
          JSON.stringify({ type: 'BOOKMARK', object: { apiVersion, kind: LIST_KIND[r][1].replace(/List$/, ''), metadata: { resourceVersion: String(rv) } } }) +
            '\n',
        );
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
    const w: Watcher = {
      res: r,
      out,
      bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true',
      timer: setTimeout(() => {
        this.dropWatcher(w);
        out.end();
      }, timeout * 1000),
    };
    this.watchers.add(w);
    out.on('close', () => this.dropWatcher(w));
  }
}

function gone(rv: number): Obj {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `too old resource version: ${rv} (${rv + 1})`,
    reason: 'Expired',
    code: 410,
  };
}

/** A kubeconfig for a fake API server at `server` that presents `token` (every fake API of the tests uses this one). */
export function kubeConfigAt(server: string, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server, skipTLSVerify: true }],
    users: [{ name: 'user', token }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'user' }],
    currentContext: 'fake',
  });
  return kc;
}

export function kubeConfigFor(api: FakeApi): KubeConfig {
  return kubeConfigAt(`http://127.0.0.1:${api.port}`, 'test-token');
}
