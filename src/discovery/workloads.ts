/**
 * The file source: the mesh model from local files — the embedded default,
 * used by the sandbox and single-machine installs. `workloads` names a file or
 * a directory (every *.json, *.yaml, *.yml in it, in name order). A file holds
 * either
 *   - the compact form: { namespaces: [...], pods: [...] } (compact.ts turns
 *     each entry into a Kubernetes object), or
 *   - Kubernetes-shaped objects (Namespace, Pod, Service, AuthorizationPolicy;
 *     no EndpointSlices: endpoints come from the Service selector), as a YAML
 *     stream, a `kind: List`, or a JSON array.
 * Either way every entry goes through the one mapper the Kubernetes source
 * uses (k8s-mapping.ts), with the same rules. What only the file source does:
 * a namespaced object without metadata.namespace is in "default" (as kubectl
 * applies it), a pod without spec.nodeName is on this node, where a pod lives
 * comes from its ambientd.io/netns and ambientd.io/cgroup annotations, and a
 * Service's endpoints are the pods its selector matches.
 * Parsing is pure; WorkloadFileSource adds the watching.
 *
 * Bad input never takes the agent down: a malformed entry is reported with its
 * position/kind and name, every other entry is served, and a malformed entry
 * that had a good version before keeps that version ("last good state").
 */
import fs from 'node:fs';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import YAML from 'yaml';
import { parseDocument } from '../config/config.js';
import { AmbientError } from '../util/errors.js';
import { FieldError, filePath, isAbsent, isObj, type Obj } from '../util/fields.js';
import { emptySnapshot, podIps, podKey, type MeshSnapshot, type PodInfo } from './model.js';
import { CGROUP_ANNOTATION, compactError, compactNamespace, compactPod, NETNS_ANNOTATION } from './compact.js';
import { isMeshKind, mapAuthorizationPolicy, mapNamespace, mapPod, mapService, type MapOptions } from './k8s-mapping.js';
import type { WorkloadSource, WorkloadSourceEvents } from './source.js';

export { DATAPLANE_MODE_LABEL, isEnrolled, podKey } from './model.js';
export type { NamespaceInfo, PodInfo, EntryError } from './model.js';
export { CGROUP_ANNOTATION, NETNS_ANNOTATION } from './compact.js';
export type WorkloadSnapshot = MeshSnapshot;

/** The kinds a workload file may hold. */
export const FILE_KINDS = ['Namespace', 'Pod', 'Service', 'AuthorizationPolicy'] as const;

/** The file source's side of the mapping: no node = this node. */
const FILE_MAP: MapOptions = { nodeOptional: true };

/** Where a file-source pod lives: its annotations (a relative netns is under /run/netns, a relative cgroup under cgroupRoot). */
export function locateByAnnotations(pod: PodInfo, annotations: Record<string, string>, cgroupRoot: string | null): PodInfo {
  return {
    ...pod,
    netns: filePath(annotations[NETNS_ANNOTATION], `metadata.annotations.${NETNS_ANNOTATION}`, '/run/netns'),
    cgroup: filePath(annotations[CGROUP_ANNOTATION], `metadata.annotations.${CGROUP_ANNOTATION}`, cgroupRoot),
  };
}

/**
 * One compact pod entry as the file source serves it: converted to a v1 Pod,
 * mapped, located; errors name the compact fields.
 */
export function parsePod(raw: unknown, cgroupRoot: string | null): PodInfo {
  try {
    const m = mapPod(compactPod(raw), FILE_MAP);
    if ('skip' in m) throw new FieldError('ip', 'missing'); // the only skip a compact pod (Running, not hostNetwork) can have
    return locateByAnnotations(m.pod, m.annotations, cgroupRoot);
  } catch (e) {
    throw compactError(e);
  }
}

/** The objects of one document: a mapping with `kind`, a `kind: List`, or an array. */
function objectsOf(doc: unknown): unknown[] | null {
  if (Array.isArray(doc)) return doc;
  if (isObj(doc) && 'kind' in doc) {
    if (doc.kind === 'List' && Array.isArray(doc.items)) return doc.items;
    return [doc];
  }
  return null;
}

/** The object with metadata.namespace "default" when it has none (namespaced kinds, as kubectl applies them). */
function defaultNamespace(o: Obj): Obj {
  if (o.kind === 'Namespace' || !isObj(o.metadata)) return o;
  const ns = o.metadata.namespace;
  return isAbsent(ns) || ns === '' ? { ...o, metadata: { ...o.metadata, namespace: 'default' } } : o;
}

function invalid(message: string): AmbientError {
  return new AmbientError('WORKLOADS_INVALID', message, 'fix the entry; the others are served, and it keeps its last good version meanwhile');
}

export interface ParseOptions {
  file?: string;
  cgroupRoot?: string | null;
  previous?: MeshSnapshot;
}

/**
 * Parses documents (one file may hold several YAML documents) into a
 * snapshot, merging into `into` when given (directory of files).
 */
export function parseWorkloads(docs: unknown | unknown[], opts: ParseOptions = {}, into: MeshSnapshot = emptySnapshot(), multi = false): MeshSnapshot {
  const file = opts.file ?? '<workloads>';
  const documents = multi ? (docs as unknown[]) : [docs];
  const s = into;
  const prev = opts.previous;
  const cgroupRoot = opts.cgroupRoot ?? null;
  const err = (entry: string, e: unknown): void => {
    s.errors.push({ entry: opts.file && multi ? `${path.basename(file)}: ${entry}` : entry, message: e instanceof Error ? e.message : String(e) });
  };

  // Two pods with one IP are both kept, as the Kubernetes API can show them
  // (an IP reused while the old pod object lingers): the agent isolates local
  // ambient pods that share an address (POD_IP_CONFLICT), never leaving one open.
  const addPod = (pod: PodInfo): void => {
    const key = podKey(pod);
    if (s.pods.has(key)) throw invalid(`duplicate pod "${key}"`);
    s.pods.set(key, pod);
  };
  const addNamespace = (o: unknown): void => {
    const ns = mapNamespace(o);
    if (s.namespaces.has(ns.name)) throw invalid(`duplicate namespace "${ns.name}"`);
    s.namespaces.set(ns.name, ns);
  };
  /** a malformed entry keeps its last good version */
  const keepPrevious = (kind: string, key: string | null): void => {
    if (!key || !prev) return;
    const keep = <T>(from: Map<string, T>, to: Map<string, T>): void => {
      const p = from.get(key);
      if (p !== undefined && !to.has(key)) to.set(key, p);
    };
    if (kind === 'Namespace') keep(prev.namespaces, s.namespaces);
    else if (kind === 'Pod') keep(prev.pods, s.pods);
    else if (kind === 'Service') keep(prev.services, s.services);
    else if (kind === 'AuthorizationPolicy') keep(prev.policies, s.policies);
  };

  for (const doc of documents) {
    if (doc === null || doc === undefined) continue;
    const objs = objectsOf(doc);
    if (objs) {
      objs.forEach((raw, i) => {
        const o = isObj(raw) ? defaultNamespace(raw) : null;
        const kind = typeof o?.kind === 'string' ? o.kind : '?';
        const md = isObj(o?.metadata) ? o.metadata : undefined;
        const nm = typeof md?.name === 'string' ? (kind === 'Namespace' ? md.name : `${String(md.namespace)}/${md.name}`) : null;
        const entry = `${kind}${nm ? ` ${nm}` : ` [${i}]`}`;
        try {
          if (!o) throw new FieldError('(object)', `must be an object, got ${JSON.stringify(raw) ?? String(raw)}`);
          if (!isMeshKind(kind) || !(FILE_KINDS as readonly string[]).includes(kind)) {
            throw invalid(`kind ${JSON.stringify(kind)} is not supported (${FILE_KINDS.join(', ')})`);
          }
          switch (kind) {
            case 'Namespace':
              addNamespace(o);
              break;
            case 'Pod': {
              const m = mapPod(o, FILE_MAP);
              if (!('skip' in m)) addPod(locateByAnnotations(m.pod, m.annotations, cgroupRoot));
              break;
            }
            case 'Service': {
              const svc = mapService(o, FILE_MAP);
              const key = podKey(svc);
              if (s.services.has(key)) throw invalid(`duplicate service "${key}"`);
              s.services.set(key, svc);
              break;
            }
            case 'AuthorizationPolicy': {
              const pol = mapAuthorizationPolicy(o);
              const key = podKey(pol);
              if (s.policies.has(key)) throw invalid(`duplicate policy "${key}"`);
              s.policies.set(key, pol);
              break;
            }
          }
        } catch (e) {
          err(entry, e);
          keepPrevious(kind, nm);
        }
      });
      continue;
    }
    // the compact form
    if (!isObj(doc)) {
      throw new AmbientError(
        'WORKLOADS_INVALID',
        `${file}: top level must be a mapping with "namespaces" and "pods", or Kubernetes objects`,
        'see docs/workloads.md for the format',
      );
    }
    for (const k of Object.keys(doc)) {
      if (k !== 'namespaces' && k !== 'pods')
        throw new AmbientError(
          'WORKLOADS_INVALID',
          `${file}: unknown top-level key "${k}" (expected namespaces, pods, or Kubernetes objects with "kind")`,
          'see docs/workloads.md for the format',
        );
    }
    const items = (k: 'namespaces' | 'pods'): unknown[] => {
      const v = doc[k];
      if (isAbsent(v)) return [];
      if (!Array.isArray(v)) throw new AmbientError('WORKLOADS_INVALID', `${file}: "${k}" must be a list`, 'see docs/workloads.md for the format');
      return v;
    };
    const rawName = (raw: unknown): string | null => {
      if (isObj(raw) && typeof raw.name === 'string') return typeof raw.namespace === 'string' ? `${raw.namespace}/${raw.name}` : raw.name;
      return null;
    };
    items('namespaces').forEach((raw, i) => {
      const nm = rawName(raw);
      try {
        try {
          addNamespace(compactNamespace(raw));
        } catch (e) {
          throw compactError(e);
        }
      } catch (e) {
        err(`namespaces[${i}]${nm ? ` (${nm})` : ''}`, e);
        keepPrevious('Namespace', nm);
      }
    });
    items('pods').forEach((raw, i) => {
      const nm = rawName(raw);
      try {
        addPod(parsePod(raw, cgroupRoot));
      } catch (e) {
        err(`pods[${i}]${nm ? ` (${nm})` : ''}`, e);
        keepPrevious('Pod', nm);
      }
    });
  }
  return s;
}

/**
 * Endpoints of selector services (the file has no EndpointSlices): every
 * address of the namespace's pods whose labels match (a dual-stack pod is an
 * endpoint in each family, as the EndpointSlice controller makes one slice
 * per family), ready as the pod is.
 */
export function resolveEndpoints(s: MeshSnapshot): void {
  for (const svc of s.services.values()) {
    if (!svc.selector || Object.keys(svc.selector).length === 0) continue;
    svc.endpoints = [...s.pods.values()]
      .filter((p) => p.namespace === svc.namespace && Object.entries(svc.selector!).every(([k, v]) => p.labels[k] === v))
      .flatMap((p) => podIps(p).map((ip) => ({ ip, ready: p.ready !== false, pod: podKey(p), ...(p.node ? { node: p.node } : {}) })));
  }
}

function filesOf(p: string): string[] {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return [p];
  return fs
    .readdirSync(p)
    .filter((f) => /\.(json|ya?ml)$/.test(f) && !f.startsWith('.'))
    .sort()
    .map((f) => path.join(p, f));
}

/**
 * Watches the workload file or directory; emits 'update' (MeshSnapshot) on
 * every successful read and 'invalid' (AmbientError) when a file is unusable
 * (the last good snapshot stays in force).
 */
export class WorkloadFileSource extends EventEmitter<WorkloadSourceEvents> implements WorkloadSource {
  readonly kind = 'file' as const;
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private poll: NodeJS.Timeout | null = null;
  private lastText: string | null = null;
  private stopped = false;
  current: MeshSnapshot = emptySnapshot();
  lastError: AmbientError | null = null;

  constructor(
    readonly file: string,
    private readonly cgroupRoot: string | null,
  ) {
    super();
  }

  /** Reads the file(s) now. Returns the snapshot in force afterwards. */
  reload(): MeshSnapshot {
    let texts: Array<[string, string]>;
    try {
      texts = filesOf(this.file).map((f) => [f, fs.readFileSync(f, 'utf8')]);
    } catch (e) {
      this.fail(
        new AmbientError(
          'WORKLOADS_UNREADABLE',
          `cannot read workload file ${this.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
          'create the file or fix --workloads; the agent keeps its last good state',
          { cause: e },
        ),
      );
      return this.current;
    }
    const joined = texts.map(([f, t]) => `${f}\0${t}`).join('\0\0');
    if (joined === this.lastText) return this.current;
    try {
      const snap = emptySnapshot();
      for (const [f, text] of texts) {
        const multi = !f.endsWith('.json') && /^---/m.test(text);
        const doc = multi
          ? YAML.parseAllDocuments(text).map((d) => {
              if (d.errors.length)
                throw new AmbientError(
                  'WORKLOADS_INVALID',
                  `${f}: not valid YAML: ${d.errors[0]!.message.split('\n')[0]}`,
                  'fix the syntax; the agent keeps its last good state meanwhile',
                );
              return d.toJS() as unknown;
            })
          : parseDocument(text, f, 'WORKLOADS_INVALID');
        parseWorkloads(doc, { file: f, cgroupRoot: this.cgroupRoot, previous: this.current }, snap, multi);
      }
      resolveEndpoints(snap);
      this.lastText = joined;
      this.current = snap;
      this.lastError = null;
      if (!this.stopped) this.emit('update', snap);
    } catch (e) {
      this.fail(
        e instanceof AmbientError
          ? e
          : new AmbientError('WORKLOADS_INVALID', String(e), 'fix the workload file; the agent keeps its last good state meanwhile', { cause: e }),
      );
    }
    return this.current;
  }

  private fail(err: AmbientError): void {
    this.lastError = err;
    if (!this.stopped) this.emit('invalid', err);
  }

  /**
   * Reads the file(s) and starts watching (the file's directory, or the
   * directory itself). The first 'update' (or 'invalid') is emitted before
   * this returns; the promise is resolved already.
   */
  start(): Promise<void> {
    this.stopped = false;
    this.reload();
    let dir = path.dirname(this.file);
    let base: string | null = path.basename(this.file);
    try {
      if (fs.statSync(this.file).isDirectory()) {
        dir = this.file;
        base = null;
      }
    } catch {
      /* missing: watch its dir */
    }
    try {
      this.watcher = fs.watch(dir, { persistent: false }, (_ev, n) => {
        if (base === null || n === null || n === base) this.schedule();
      });
      this.watcher.on('error', () => this.schedule());
    } catch {
      // directory missing: polling below
    }
    // A slow poll as a safety net (watchers can miss events on some filesystems).
    this.poll = setInterval(() => this.reload(), 2000);
    this.poll.unref();
    return Promise.resolve();
  }

  private schedule(): void {
    if (this.timer || this.stopped) return;
    // coalesce bursts of events from one write
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reload();
    }, 2);
  }

  stop(): void {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  /** What config_dump shows of the file source. */
  status(): Record<string, unknown> {
    return {
      kind: this.kind,
      file: this.file,
      entryErrors: this.current.errors,
      lastError: this.lastError?.toJSON() ?? null,
    };
  }
}
