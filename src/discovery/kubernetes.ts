// Over 500 lines on purpose: one source over five collections (namespaces, pods, services, EndpointSlices, policies) and their coalesced snapshot; the mapping is in k8s-mapping.ts, list+watch in k8s-reflector.ts.
/**
 * Kubernetes discovery: namespaces, pods, services + EndpointSlices and Istio
 * AuthorizationPolicies, kept by list+watch (see k8s-reflector.ts) and served
 * as one MeshSnapshot (model.ts).
 *
 * - start() resolves once every collection has been listed (an absent
 *   AuthorizationPolicy CRD counts as listed, with no policies); no 'update'
 *   is emitted before that, so consumers never see pods without their
 *   namespaces (which would look like un-enrollment).
 * - 'update' (MeshSnapshot) is coalesced: changes within ~5 ms make one emit.
 *   Each snapshot is a new object; the previous one is never mutated.
 * - 'error' (KubernetesApiError) reports list/watch failures; the watches
 *   retry with back-off on their own and the last state keeps being served.
 *   Errors are only emitted when someone listens (an unhandled 'error' event
 *   would throw); they are always logged.
 * - Objects are mapped by the one mapper both sources use (k8s-mapping.ts);
 *   list items without apiVersion/kind (the API server leaves them out for
 *   built-in kinds) get those of the collection that was listed.
 * - A malformed object becomes an EntryError in snapshot.errors
 *   ("<Kind> <ns>/<name>: <field>: <problem>") and is left out; everything
 *   else is served.
 *
 * Pods: every pod with an IP, on any node (destinations need identities and
 * enrollment). Not in the snapshot (not errors): hostNetwork pods (they share
 * the node IP, are never captured and cannot be told apart by IP), pods in
 * phase Succeeded/Failed (their IP may be reused), and pods without an IP yet.
 * Pods on this node (spec.nodeName === nodeName) get netns/cgroup from
 * resolveLocalPod (default: findPodSandbox by UID); unresolved local pods are
 * retried periodically.
 */
import { EventEmitter } from 'node:events';
import { KubeConfig } from '@kubernetes/client-node';
import { AmbientError } from '../util/errors.js';
import { FieldError } from '../util/fields.js';
import { Logger } from '../util/log.js';
import { emptySnapshot, type AuthorizationPolicy, type EntryError, type MeshSnapshot, type NamespaceInfo, type PodInfo, type ServiceInfo } from './model.js';
import {
  describeObject,
  mapAuthorizationPolicy,
  mapEndpointSlice,
  mapNamespace,
  mapPod,
  mapService,
  mergeEndpoints,
  withTypeMeta,
  type MeshKind,
  type PodSkip,
  type SliceInfo,
} from './k8s-mapping.js';
import { KubernetesApiError, Reflector, type KObject } from './k8s-reflector.js';
import { PodSandboxFinder, type PodSandbox } from './k8s-sandbox.js';
import type { WorkloadSource, WorkloadSourceEvents } from './source.js';

export { findPodSandbox, PodSandboxFinder, podUidFromCgroupSegment, scanPodProcesses, type PodSandbox, type FindPodSandboxOptions } from './k8s-sandbox.js';
export { KubernetesApiError } from './k8s-reflector.js';
export {
  API_VERSIONS,
  FieldError,
  mapAuthorizationPolicy,
  mapEndpointSlice,
  mapNamespace,
  mapPod,
  mapService,
  mergeEndpoints,
  SERVICE_NAME_LABEL,
  type MapOptions,
  type PodMapping,
  type PodSkip,
  type SliceInfo,
} from './k8s-mapping.js';

export type ResourceName = 'namespaces' | 'pods' | 'services' | 'endpointslices' | 'authorizationpolicies';

export interface WatchedResource {
  name: ResourceName;
  kind: MeshKind;
  /** API group ('' = core) */
  group: string;
  version: string;
  /** list/watch path, all namespaces */
  path: string;
  namespaced: boolean;
  /** may be absent (CRD): 404 means "none" */
  optional: boolean;
  /** the API verbs this source issues (RBAC must grant exactly these) */
  verbs: readonly string[];
}

/** Everything this source reads from the API server; deploy/rbac.yaml is checked against it. */
export const WATCHED_RESOURCES: readonly WatchedResource[] = Object.freeze([
  { name: 'namespaces', kind: 'Namespace', group: '', version: 'v1', path: '/api/v1/namespaces', namespaced: false, optional: false, verbs: ['list', 'watch'] },
  { name: 'pods', kind: 'Pod', group: '', version: 'v1', path: '/api/v1/pods', namespaced: true, optional: false, verbs: ['list', 'watch'] },
  { name: 'services', kind: 'Service', group: '', version: 'v1', path: '/api/v1/services', namespaced: true, optional: false, verbs: ['list', 'watch'] },
  {
    name: 'endpointslices',
    kind: 'EndpointSlice',
    group: 'discovery.k8s.io',
    version: 'v1',
    path: '/apis/discovery.k8s.io/v1/endpointslices',
    namespaced: true,
    optional: false,
    verbs: ['list', 'watch'],
  },
  {
    name: 'authorizationpolicies',
    kind: 'AuthorizationPolicy',
    group: 'security.istio.io',
    version: 'v1',
    path: '/apis/security.istio.io/v1/authorizationpolicies',
    namespaced: true,
    optional: true,
    verbs: ['list', 'watch'],
  },
] as const);

export type LocalPodResolver = (pod: PodInfo) => PodSandbox | null;

export interface KubernetesSourceOptions {
  /** default: KubeConfig.loadFromDefault() ($KUBECONFIG, ~/.kube/config, then in-cluster) */
  kubeConfig?: KubeConfig;
  /** this node's name (spec.nodeName of local pods) */
  nodeName: string;
  /** netns/cgroup of a local pod; default: findPodSandbox(pod.uid) with /proc and /sys/fs/cgroup (one /proc scan per second at most) */
  resolveLocalPod?: LocalPodResolver;
  log?: Logger;
  /** default cluster.local */
  clusterDomain?: string;
  /** coalescing window for 'update' (default 5 ms) */
  coalesceMs?: number;
  /** reconnect back-off (defaults 250 ms .. 30 s, exponential with jitter) */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** retry period while the AuthorizationPolicy CRD is absent (default 60 s) */
  absentRetryMs?: number;
  /** list page size (default 500) */
  pageSize?: number;
  /** the resources to watch (default: all of WATCHED_RESOURCES); the cluster CA watches only pods, so its RBAC has nothing else */
  resources?: readonly ResourceName[];
  /** server-side watch timeout, randomised in [t, 2t) (default 300 s) */
  watchTimeoutSeconds?: number;
  /** timeout of a list page / of a watch's response headers (default 60 s) */
  requestTimeoutMs?: number;
  /** retry period for local pods whose sandbox was not found yet (default 2 s, up to 30 tries) */
  resolveRetryMs?: number;
}

interface Cached<T> {
  /** resourceVersion of the mapped object (the raw object is not kept) */
  rv: string | undefined;
  value?: T;
  error?: EntryError;
}

interface PodValue {
  pod?: PodInfo;
  skip?: PodSkip;
  /** local pod whose sandbox is not found yet */
  unresolved?: number;
}

function rvOf(o: KObject): string | undefined {
  const rv = o.metadata?.resourceVersion;
  return typeof rv === 'string' && rv !== '' ? rv : undefined;
}

/** One collection of mapped objects, keyed as the reflector keys them. */
class Collection<T> {
  entries = new Map<string, Cached<T>>();
  /** unkeyable objects from the last list (and watch events since) */
  invalid: EntryError[] = [];

  constructor(
    readonly res: WatchedResource,
    private readonly map: (raw: KObject) => T,
    private readonly onEntryError: (e: EntryError) => void,
  ) {}

  private build(raw: KObject): Cached<T> {
    const rv = rvOf(raw);
    try {
      // list items of built-in kinds come without apiVersion/kind: they are what was listed
      const apiVersion = this.res.group === '' ? this.res.version : `${this.res.group}/${this.res.version}`;
      return { rv, value: this.map(withTypeMeta(raw, this.res.kind, apiVersion) as KObject) };
    } catch (e) {
      const entry = describeObject(this.res.kind, raw);
      const error = { entry, message: e instanceof FieldError ? e.message : `mapping failed: ${(e as Error).message}` };
      this.onEntryError(error);
      return { rv, error };
    }
  }

  /** true when something changed */
  upsert(key: string, raw: KObject): boolean {
    const prev = this.entries.get(key);
    const rv = rvOf(raw);
    if (prev && rv !== undefined && prev.rv === rv) return false;
    this.entries.set(key, this.build(raw));
    return true;
  }

  remove(key: string): boolean {
    return this.entries.delete(key);
  }

  replace(items: Map<string, KObject>, invalid: Array<{ where: string; problem: string }>): boolean {
    let changed = items.size !== this.entries.size || invalid.length > 0 || this.invalid.length > 0;
    const next = new Map<string, Cached<T>>();
    for (const [k, raw] of items) {
      const prev = this.entries.get(k);
      const rv = rvOf(raw);
      if (prev && rv !== undefined && prev.rv === rv) next.set(k, prev);
      else {
        next.set(k, this.build(raw));
        changed = true;
      }
    }
    this.entries = next;
    this.invalid = invalid.map((i) => ({ entry: `${this.res.kind} ${i.where}`, message: i.problem }));
    return changed;
  }

  addInvalid(where: string, problem: string): void {
    if (this.invalid.length < 100) this.invalid.push({ entry: `${this.res.kind} ${where}`, message: problem });
  }

  errors(): EntryError[] {
    const out = [...this.invalid];
    for (const c of this.entries.values()) if (c.error) out.push(c.error);
    return out;
  }
}

export interface KubernetesSourceEvents extends WorkloadSourceEvents {
  /** a list/watch failure (the watch retries with back-off; the last state is served) */
  error: [KubernetesApiError];
}

export class KubernetesSource extends EventEmitter<KubernetesSourceEvents> implements WorkloadSource {
  readonly kind = 'kubernetes' as const;
  /** the whole input is never rejected (malformed objects are entry errors): always null */
  readonly lastError: AmbientError | null = null;
  private readonly kc: KubeConfig;
  private readonly log: Logger;
  private readonly nodeName: string;
  private readonly resolveLocalPod: LocalPodResolver;
  private readonly clusterDomain: string;
  private readonly coalesceMs: number;
  private readonly resolveRetryMs: number;
  private readonly reflectors = new Map<ResourceName, Reflector>();

  private readonly namespaces: Collection<NamespaceInfo>;
  private readonly pods: Collection<PodValue>;
  private readonly services: Collection<ServiceInfo>;
  private readonly slices: Collection<SliceInfo>;
  private readonly policies: Collection<AuthorizationPolicy>;

  private snap: MeshSnapshot = emptySnapshot();
  private synced = new Set<ResourceName>();
  private startPromise: Promise<void> | null = null;
  private startResolve: (() => void) | null = null;
  private startReject: ((e: Error) => void) | null = null;
  private stopped = false;
  private flushTimer: NodeJS.Timeout | null = null;
  private resolveTimer: NodeJS.Timeout | null = null;
  private dirty = false;
  private readonly loggedEntryErrors = new Set<string>();

  constructor(opts: KubernetesSourceOptions) {
    super();
    if (typeof opts.nodeName !== 'string' || opts.nodeName === '')
      throw new AmbientError(
        'K8S_CONFIG',
        'KubernetesSource: nodeName is required',
        'set "node" in the agent config (the name of this node, spec.nodeName of its pods)',
      );
    this.nodeName = opts.nodeName;
    this.log = opts.log ?? new Logger('discovery.kubernetes');
    if (opts.kubeConfig) this.kc = opts.kubeConfig;
    else {
      this.kc = new KubeConfig();
      this.kc.loadFromDefault();
    }
    if (!this.kc.getCurrentCluster())
      throw new AmbientError(
        'K8S_CONFIG',
        'KubernetesSource: the kubeconfig has no current cluster',
        'run in a pod with a ServiceAccount token, or set $KUBECONFIG to a kubeconfig with a current context',
      );
    if (opts.resolveLocalPod) this.resolveLocalPod = opts.resolveLocalPod;
    else {
      const finder = new PodSandboxFinder();
      this.resolveLocalPod = (p) => (p.uid ? finder.find(p.uid) : null);
    }
    this.clusterDomain = opts.clusterDomain ?? 'cluster.local';
    this.coalesceMs = opts.coalesceMs ?? 5;
    this.resolveRetryMs = opts.resolveRetryMs ?? 2000;

    const entryError = (e: EntryError): void => {
      const k = `${e.entry}: ${e.message}`;
      if (this.loggedEntryErrors.has(k)) return;
      if (this.loggedEntryErrors.size > 1000) this.loggedEntryErrors.clear();
      this.loggedEntryErrors.add(k);
      this.log.warn('skipping malformed object', { entry: e.entry, problem: e.message });
    };
    const res = (n: ResourceName): WatchedResource => WATCHED_RESOURCES.find((r) => r.name === n)!;
    this.namespaces = new Collection(res('namespaces'), mapNamespace, entryError);
    this.pods = new Collection(res('pods'), (raw) => this.mapPodValue(raw), entryError);
    this.services = new Collection(res('services'), (raw) => mapService(raw, { clusterDomain: this.clusterDomain }), entryError);
    this.slices = new Collection(res('endpointslices'), mapEndpointSlice, entryError);
    this.policies = new Collection(res('authorizationpolicies'), mapAuthorizationPolicy, entryError);
    const collections: Record<ResourceName, Collection<unknown>> = {
      namespaces: this.namespaces,
      pods: this.pods,
      services: this.services,
      endpointslices: this.slices,
      authorizationpolicies: this.policies,
    } as Record<ResourceName, Collection<unknown>>;

    const wanted = new Set<ResourceName>(opts.resources ?? WATCHED_RESOURCES.map((r) => r.name));
    for (const r of WATCHED_RESOURCES) {
      if (!wanted.has(r.name)) continue;
      const col = collections[r.name];
      this.reflectors.set(
        r.name,
        new Reflector({
          kubeConfig: this.kc,
          path: r.path,
          kind: r.kind,
          optional: r.optional,
          log: this.log,
          backoffInitialMs: opts.backoffInitialMs ?? 250,
          backoffMaxMs: opts.backoffMaxMs ?? 30_000,
          pageSize: opts.pageSize ?? 500,
          watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
          absentRetryMs: opts.absentRetryMs ?? 60_000,
          requestTimeoutMs: opts.requestTimeoutMs ?? 60_000,
          handlers: {
            replace: (items, invalid) => {
              if (col.replace(items, invalid)) this.changed();
            },
            upsert: (k, o) => {
              if (col.upsert(k, o)) this.changed();
            },
            remove: (k) => {
              if (col.remove(k)) this.changed();
            },
            invalid: (where, problem) => {
              col.addInvalid(where, problem);
              this.changed();
            },
            synced: () => this.onSynced(r.name),
            error: (e) => this.onError(e),
          },
        }),
      );
    }
  }

  /** The last snapshot (empty until start() resolved). */
  get current(): MeshSnapshot {
    return this.snap;
  }

  /** Reflector counters (lists, watches, events, bookmarks, relists, errors) and resourceVersions. */
  stats(): Record<ResourceName, Reflector['stats'] & { resourceVersion: string | null }> {
    const out = {} as Record<ResourceName, Reflector['stats'] & { resourceVersion: string | null }>;
    for (const [n, r] of this.reflectors) out[n] = { ...r.stats, resourceVersion: r.resourceVersion };
    return out;
  }

  /** What config_dump shows of the Kubernetes source: the reflectors' counters and resourceVersions. */
  status(): Record<string, unknown> {
    return {
      kind: this.kind,
      node: this.nodeName,
      synced: this.synced.size === this.reflectors.size,
      resources: this.stats(),
      entryErrors: this.snap.errors,
      lastError: null,
    };
  }

  /** Starts every watch; resolves after the initial list of each resource. */
  start(): Promise<void> {
    if (this.startPromise) return this.startPromise;
    if (this.stopped) return Promise.reject(new AmbientError('K8S_API', 'KubernetesSource: stopped', 'a stopped source does not start again; make a new one'));
    this.startPromise = new Promise<void>((resolve, reject) => {
      this.startResolve = resolve;
      this.startReject = reject;
    });
    for (const r of this.reflectors.values()) r.start();
    return this.startPromise;
  }

  /** Stops every watch and timer; no event is emitted afterwards. A pending start() rejects. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const r of this.reflectors.values()) r.stop();
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.resolveTimer) {
      clearTimeout(this.resolveTimer);
      this.resolveTimer = null;
    }
    const reject = this.startReject;
    this.startResolve = this.startReject = null;
    reject?.(
      new AmbientError(
        'K8S_API',
        'KubernetesSource stopped before the initial list completed',
        'the source was stopped (agent shutting down) before its first list; nothing to do',
      ),
    );
  }

  private onError(e: KubernetesApiError): void {
    if (this.stopped) return;
    this.log.warn('kubernetes watch error; retrying with back-off', { resource: e.path, status: e.statusCode, error: e.message });
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', e);
      } catch (err) {
        this.log.error('error listener threw', { error: err });
      }
    }
  }

  private onSynced(n: ResourceName): void {
    this.synced.add(n);
    if (this.synced.size === this.reflectors.size && this.startResolve) {
      this.flush();
      const resolve = this.startResolve;
      this.startResolve = this.startReject = null;
      this.log.info('kubernetes discovery synced', {
        namespaces: this.snap.namespaces.size,
        pods: this.snap.pods.size,
        services: this.snap.services.size,
        policies: this.snap.policies.size,
        errors: this.snap.errors.length,
      });
      resolve();
    }
  }

  private changed(): void {
    this.dirty = true;
    if (this.stopped || this.synced.size < this.reflectors.size || this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, this.coalesceMs);
  }

  private mapPodValue(raw: KObject): PodValue {
    const m = mapPod(raw);
    if ('skip' in m) return { skip: m.skip };
    // where a local pod lives comes from /proc (resolveLocalPod), never from its annotations
    const pod = m.pod;
    if (pod.node !== this.nodeName) return { pod };
    const found = this.resolve(pod);
    if (found) return { pod: { ...pod, netns: found.netns, cgroup: found.cgroup } };
    this.scheduleResolve();
    return { pod, unresolved: 1 };
  }

  private resolve(pod: PodInfo): PodSandbox | null {
    try {
      const r = this.resolveLocalPod(pod);
      return r && (r.netns !== null || r.cgroup !== null) ? r : null;
    } catch (e) {
      this.log.warn('resolveLocalPod failed', { pod: `${pod.namespace}/${pod.name}`, error: e });
      return null;
    }
  }

  private scheduleResolve(): void {
    if (this.resolveTimer || this.stopped) return;
    this.resolveTimer = setTimeout(() => {
      this.resolveTimer = null;
      this.retryResolve();
    }, this.resolveRetryMs);
  }

  /** Local pods seen before their sandbox was findable. */
  private retryResolve(): void {
    let pending = false;
    let changed = false;
    for (const c of this.pods.entries.values()) {
      const v = c.value;
      if (!v?.pod || !v.unresolved) continue;
      const found = this.resolve(v.pod);
      if (found) {
        c.value = { pod: { ...v.pod, netns: found.netns, cgroup: found.cgroup } };
        changed = true;
      } else if (v.unresolved >= 30) {
        this.log.warn('sandbox of a local pod not found; giving up until the pod changes', { pod: `${v.pod.namespace}/${v.pod.name}`, uid: v.pod.uid });
        c.value = { pod: v.pod };
      } else {
        c.value = { pod: v.pod, unresolved: v.unresolved + 1 };
        pending = true;
      }
    }
    if (changed) this.changed();
    if (pending) this.scheduleResolve();
  }

  /** Builds a new snapshot from the collections and emits it (if it changed). */
  private flush(): void {
    if (this.stopped || !this.dirty) return;
    this.dirty = false;
    const snap = emptySnapshot();
    for (const c of this.namespaces.entries.values()) if (c.value) snap.namespaces.set(c.value.name, c.value);
    for (const c of this.pods.entries.values()) if (c.value?.pod) snap.pods.set(`${c.value.pod.namespace}/${c.value.pod.name}`, c.value.pod);
    const slicesBySvc = new Map<string, SliceInfo[]>();
    for (const c of this.slices.entries.values()) {
      const s = c.value;
      if (!s || s.service === null) continue;
      const k = `${s.namespace}/${s.service}`;
      const l = slicesBySvc.get(k);
      if (l) l.push(s);
      else slicesBySvc.set(k, [s]);
    }
    for (const c of this.services.entries.values()) {
      if (!c.value) continue;
      const k = `${c.value.namespace}/${c.value.name}`;
      snap.services.set(k, { ...c.value, endpoints: mergeEndpoints(slicesBySvc.get(k) ?? []) });
    }
    for (const c of this.policies.entries.values()) if (c.value) snap.policies.set(`${c.value.namespace}/${c.value.name}`, c.value);
    snap.errors = [...this.namespaces.errors(), ...this.pods.errors(), ...this.services.errors(), ...this.slices.errors(), ...this.policies.errors()];
    this.snap = snap;
    try {
      this.emit('update', snap);
    } catch (e) {
      this.log.error('update listener threw', { error: e });
    }
  }
}
