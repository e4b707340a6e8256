/**
 * The file source: the mesh model from local files — the embedded default,
 * used by the sandbox and single-machine installs. `workloads` names a file or
 * a directory (every *.json, *.yaml, *.yml in it, in name order). A file holds
 * either
 *   - the compact form: { namespaces: [...], pods: [...] }, or
 *   - Kubernetes-shaped objects (Namespace, Pod, Service, EndpointSlice-free:
 *     endpoints come from the Service selector, AuthorizationPolicy), as a
 *     YAML stream, a `kind: List`, or a JSON array.
 * Parsing is pure; WorkloadFileSource adds the watching.
 *
 * Bad input never takes the agent down: a malformed entry is reported with its
 * position/kind and name, every other entry is served, and a malformed entry
 * that had a good version before keeps that version ("last good state").
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import YAML from 'yaml';
import { parseDocument } from '../config/config.js';
import { AmbientError } from '../util/errors.js';
import {
  emptySnapshot, podKey, type AuthorizationPolicy, type MeshSnapshot, type NamespaceInfo, type PodInfo,
  type ServiceInfo, type ServicePort,
} from './model.js';

export { DATAPLANE_MODE_LABEL, isEnrolled, podKey } from './model.js';
export type { NamespaceInfo, PodInfo, EntryError } from './model.js';
export type WorkloadSnapshot = MeshSnapshot;

export const NETNS_ANNOTATION = 'ambientd.io/netns';
export const CGROUP_ANNOTATION = 'ambientd.io/cgroup';

const NAME_RE = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function labelsOf(v: unknown, where: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${where} must be a mapping of strings`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (typeof val !== 'string') throw new Error(`${where}.${k} must be a string, got ${JSON.stringify(val)}`);
    out[k] = val;
  }
  return out;
}

function name(v: unknown, field: string): string {
  if (typeof v !== 'string' || !NAME_RE.test(v) || v.length > 253) throw new Error(`"${field}" must be a DNS-1123 name, got ${JSON.stringify(v)}`);
  return v;
}

function optPath(v: unknown, field: string, base: string | null): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string' || v === '') throw new Error(`"${field}" must be a path, got ${JSON.stringify(v)}`);
  if (path.isAbsolute(v)) return v;
  if (base === null) throw new Error(`"${field}" must be an absolute path, got ${JSON.stringify(v)}`);
  return path.join(base, v);
}

function ip(v: unknown, field: string): string {
  if (typeof v !== 'string' || !net.isIP(v)) throw new Error(`"${field}" must be an IPv4 or IPv6 address, got ${JSON.stringify(v)}`);
  return v;
}

function mapping(raw: unknown, what = 'must be a mapping'): Record<string, unknown> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(what);
  return raw as Record<string, unknown>;
}

function onlyKeys(o: Record<string, unknown>, known: string[], where = ''): void {
  for (const k of Object.keys(o)) if (!known.includes(k)) throw new Error(`unknown field "${where}${k}" (known: ${known.join(', ')})`);
}

// ---- the compact form ------------------------------------------------------

const POD_FIELDS = ['name', 'namespace', 'serviceAccount', 'node', 'ip', 'netns', 'cgroup', 'labels'];

export function parsePod(raw: unknown, cgroupRoot: string | null): PodInfo {
  const o = mapping(raw);
  onlyKeys(o, POD_FIELDS);
  return {
    name: name(o.name, 'name'),
    namespace: name(o.namespace, 'namespace'),
    serviceAccount: o.serviceAccount === undefined ? 'default' : name(o.serviceAccount, 'serviceAccount'),
    node: o.node === undefined || o.node === null ? null : name(o.node, 'node'),
    ip: ip(o.ip, 'ip'),
    netns: optPath(o.netns, 'netns', '/run/netns'),
    cgroup: optPath(o.cgroup, 'cgroup', cgroupRoot),
    labels: labelsOf(o.labels, 'labels'),
  };
}

// ---- Kubernetes-shaped objects --------------------------------------------

function meta(o: Record<string, unknown>, namespaced: boolean): { name: string; namespace: string; labels: Record<string, string>; annotations: Record<string, string> } {
  const m = mapping(o.metadata, '"metadata" must be a mapping');
  return {
    name: name(m.name, 'metadata.name'),
    namespace: namespaced ? name(m.namespace ?? 'default', 'metadata.namespace') : '',
    labels: labelsOf(m.labels, 'metadata.labels'),
    annotations: labelsOf(m.annotations, 'metadata.annotations'),
  };
}

function k8sPod(o: Record<string, unknown>, cgroupRoot: string | null): PodInfo {
  const m = meta(o, true);
  const spec = o.spec === undefined ? {} : mapping(o.spec, '"spec" must be a mapping');
  const status = mapping(o.status ?? {}, '"status" must be a mapping');
  const podIP = ip(status.podIP, 'status.podIP');
  const ips = Array.isArray(status.podIPs) ? (status.podIPs as Array<{ ip?: unknown }>).map((x, i) => ip(x?.ip, `status.podIPs[${i}].ip`)) : [podIP];
  const conditions = Array.isArray(status.conditions) ? (status.conditions as Array<{ type?: string; status?: string }>) : [];
  const readyCond = conditions.find((c) => c.type === 'Ready');
  return {
    uid: typeof (o.metadata as Record<string, unknown>).uid === 'string' ? ((o.metadata as Record<string, unknown>).uid as string) : undefined,
    name: m.name, namespace: m.namespace,
    serviceAccount: spec.serviceAccountName === undefined ? 'default' : name(spec.serviceAccountName, 'spec.serviceAccountName'),
    node: spec.nodeName === undefined ? null : name(spec.nodeName, 'spec.nodeName'),
    ip: podIP, ips: ips.includes(podIP) ? [podIP, ...ips.filter((x) => x !== podIP)] : [podIP, ...ips],
    netns: optPath(m.annotations[NETNS_ANNOTATION], `metadata.annotations.${NETNS_ANNOTATION}`, '/run/netns'),
    cgroup: optPath(m.annotations[CGROUP_ANNOTATION], `metadata.annotations.${CGROUP_ANNOTATION}`, cgroupRoot),
    labels: m.labels,
    ready: readyCond ? readyCond.status === 'True' : true,
  };
}

function k8sService(o: Record<string, unknown>): ServiceInfo {
  const m = meta(o, true);
  const spec = mapping(o.spec, '"spec" must be a mapping');
  const vips: string[] = [];
  if (spec.clusterIP !== undefined && spec.clusterIP !== 'None') vips.push(ip(spec.clusterIP, 'spec.clusterIP'));
  if (Array.isArray(spec.clusterIPs)) (spec.clusterIPs as unknown[]).forEach((v, i) => { const a = ip(v, `spec.clusterIPs[${i}]`); if (!vips.includes(a)) vips.push(a); });
  if (!Array.isArray(spec.ports) || spec.ports.length === 0) throw new Error('"spec.ports" must be a non-empty list');
  const ports: ServicePort[] = (spec.ports as unknown[]).map((raw, i) => {
    const p = mapping(raw, `"spec.ports[${i}]" must be a mapping`);
    const port = p.port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`"spec.ports[${i}].port" must be a port number, got ${JSON.stringify(port)}`);
    const tp = p.targetPort ?? port;
    if (!(typeof tp === 'string' && tp !== '') && !(typeof tp === 'number' && Number.isInteger(tp) && tp >= 1 && tp <= 65535)) throw new Error(`"spec.ports[${i}].targetPort" must be a port number or name`);
    const protocol = (p.protocol ?? 'TCP') as ServicePort['protocol'];
    if (!['TCP', 'UDP', 'SCTP'].includes(protocol)) throw new Error(`"spec.ports[${i}].protocol" must be TCP, UDP or SCTP`);
    return { ...(typeof p.name === 'string' ? { name: p.name } : {}), port, targetPort: tp as number | string, protocol };
  });
  const selector = spec.selector === undefined ? undefined : labelsOf(spec.selector, 'spec.selector');
  return { name: m.name, namespace: m.namespace, hostname: `${m.name}.${m.namespace}.svc.cluster.local`, vips, ports, ...(selector ? { selector } : {}), endpoints: [] };
}

function k8sPolicy(o: Record<string, unknown>): AuthorizationPolicy {
  const m = meta(o, true);
  const spec = o.spec === undefined ? {} : mapping(o.spec, '"spec" must be a mapping');
  return { name: m.name, namespace: m.namespace, spec: spec as AuthorizationPolicy['spec'] };
}

/** The objects of one document: a mapping with `kind`, a `kind: List`, or an array. */
function objectsOf(doc: unknown): unknown[] | null {
  if (Array.isArray(doc)) return doc;
  if (doc && typeof doc === 'object' && 'kind' in doc) {
    const d = doc as { kind: unknown; items?: unknown };
    if (d.kind === 'List' && Array.isArray(d.items)) return d.items;
    return [doc];
  }
  return null;
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
  const list = multi ? (docs as unknown[]) : [docs];
  const s = into;
  const prev = opts.previous;
  const err = (entry: string, e: unknown): void => { s.errors.push({ entry: opts.file && multi ? `${path.basename(file)}: ${entry}` : entry, message: (e as Error).message }); };

  // Two pods with one IP are both kept, as the Kubernetes API can show them
  // (an IP reused while the old pod object lingers): the agent isolates local
  // ambient pods that share an address (POD_IP_CONFLICT), never leaving one open.
  const addPod = (pod: PodInfo): void => {
    const key = podKey(pod);
    if (s.pods.has(key)) throw new Error(`duplicate pod "${key}"`);
    s.pods.set(key, pod);
  };
  const keepPrevPod = (key: string | null): void => {
    const p = key ? prev?.pods.get(key) : undefined;
    if (p && !s.pods.has(key!)) s.pods.set(key!, p);
  };

  for (const doc of list) {
    if (doc === null || doc === undefined) continue;
    const objs = objectsOf(doc);
    if (objs) {
      objs.forEach((raw, i) => {
        const o = raw && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>) : null;
        const kind = typeof o?.kind === 'string' ? o.kind : '?';
        const md = o?.metadata as Record<string, unknown> | undefined;
        const nm = typeof md?.name === 'string' ? (kind === 'Namespace' ? md.name : `${typeof md.namespace === 'string' ? md.namespace : 'default'}/${md.name}`) : null;
        const entry = `${kind}${nm ? ` ${nm}` : ` [${i}]`}`;
        try {
          if (!o) throw new Error('must be a mapping');
          switch (kind) {
            case 'Namespace': {
              const m = meta(o, false);
              if (s.namespaces.has(m.name)) throw new Error(`duplicate namespace "${m.name}"`);
              s.namespaces.set(m.name, { name: m.name, labels: m.labels });
              break;
            }
            case 'Pod': addPod(k8sPod(o, opts.cgroupRoot ?? null)); break;
            case 'Service': {
              const svc = k8sService(o);
              const key = podKey(svc);
              if (s.services.has(key)) throw new Error(`duplicate service "${key}"`);
              s.services.set(key, svc);
              break;
            }
            case 'AuthorizationPolicy': {
              if (o.apiVersion !== undefined && !/^security\.istio\.io\/v1(beta1)?$/.test(String(o.apiVersion))) throw new Error(`apiVersion ${JSON.stringify(o.apiVersion)} is not security.istio.io/v1`);
              const pol = k8sPolicy(o);
              const key = podKey(pol);
              if (s.policies.has(key)) throw new Error(`duplicate policy "${key}"`);
              s.policies.set(key, pol);
              break;
            }
            default:
              throw new Error(`kind ${JSON.stringify(kind)} is not supported (Namespace, Pod, Service, AuthorizationPolicy)`);
          }
        } catch (e) {
          err(entry, e);
          if (!nm) return;
          if (kind === 'Namespace') { const p = prev?.namespaces.get(nm); if (p && !s.namespaces.has(nm)) s.namespaces.set(nm, p); }
          if (kind === 'Pod') keepPrevPod(nm);
          if (kind === 'Service') { const p = prev?.services.get(nm); if (p && !s.services.has(nm)) s.services.set(nm, p); }
          if (kind === 'AuthorizationPolicy') { const p = prev?.policies.get(nm); if (p && !s.policies.has(nm)) s.policies.set(nm, p); }
        }
      });
      continue;
    }
    // the compact form
    if (typeof doc !== 'object') {
      throw new AmbientError('WORKLOADS_INVALID', `${file}: top level must be a mapping with "namespaces" and "pods", or Kubernetes objects`, 'see docs/workloads.md for the format');
    }
    const d = doc as Record<string, unknown>;
    for (const k of Object.keys(d)) {
      if (k !== 'namespaces' && k !== 'pods') throw new AmbientError('WORKLOADS_INVALID', `${file}: unknown top-level key "${k}" (expected namespaces, pods, or Kubernetes objects with "kind")`, 'see docs/workloads.md for the format');
    }
    const items = (k: 'namespaces' | 'pods'): unknown[] => {
      const v = d[k];
      if (v === undefined || v === null) return [];
      if (!Array.isArray(v)) throw new AmbientError('WORKLOADS_INVALID', `${file}: "${k}" must be a list`, 'see docs/workloads.md for the format');
      return v;
    };
    const rawName = (raw: unknown): string | null => {
      if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
        const o = raw as Record<string, unknown>;
        if (typeof o.name === 'string') return typeof o.namespace === 'string' ? `${o.namespace}/${o.name}` : o.name;
      }
      return null;
    };
    items('namespaces').forEach((raw, i) => {
      const nm = rawName(raw);
      try {
        const o = mapping(raw);
        onlyKeys(o, ['name', 'labels']);
        const ns: NamespaceInfo = { name: name(o.name, 'name'), labels: labelsOf(o.labels, 'labels') };
        if (s.namespaces.has(ns.name)) throw new Error(`duplicate namespace "${ns.name}"`);
        s.namespaces.set(ns.name, ns);
      } catch (e) {
        err(`namespaces[${i}]${nm ? ` (${nm})` : ''}`, e);
        const p = nm ? prev?.namespaces.get(nm) : undefined;
        if (p && !s.namespaces.has(p.name)) s.namespaces.set(p.name, p);
      }
    });
    items('pods').forEach((raw, i) => {
      const nm = rawName(raw);
      try {
        addPod(parsePod(raw, opts.cgroupRoot ?? null));
      } catch (e) {
        err(`pods[${i}]${nm ? ` (${nm})` : ''}`, e);
        keepPrevPod(nm);
      }
    });
  }
  return s;
}

/** Endpoints of selector services: ready pods of the namespace whose labels match. */
export function resolveEndpoints(s: MeshSnapshot): void {
  for (const svc of s.services.values()) {
    if (!svc.selector || Object.keys(svc.selector).length === 0) continue;
    svc.endpoints = [...s.pods.values()]
      .filter((p) => p.namespace === svc.namespace && Object.entries(svc.selector!).every(([k, v]) => p.labels[k] === v))
      .map((p) => ({ ip: p.ip, ready: p.ready !== false, pod: podKey(p), ...(p.node ? { node: p.node } : {}) }));
  }
}

function filesOf(p: string): string[] {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return [p];
  return fs.readdirSync(p).filter((f) => /\.(json|ya?ml)$/.test(f) && !f.startsWith('.')).sort().map((f) => path.join(p, f));
}

/**
 * Watches the workload file or directory; emits 'update' (MeshSnapshot) on
 * every successful read and 'invalid' (AmbientError) when a file is unusable
 * (the last good snapshot stays in force).
 */
export class WorkloadFileSource extends EventEmitter {
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private poll: NodeJS.Timeout | null = null;
  private lastText: string | null = null;
  current: MeshSnapshot = emptySnapshot();
  lastError: AmbientError | null = null;

  constructor(readonly file: string, private readonly cgroupRoot: string | null) {
    super();
  }

  /** Reads the file(s) now. Returns the snapshot in force afterwards. */
  reload(): MeshSnapshot {
    let texts: Array<[string, string]>;
    try {
      texts = filesOf(this.file).map((f) => [f, fs.readFileSync(f, 'utf8')]);
    } catch (e) {
      this.fail(new AmbientError('WORKLOADS_UNREADABLE', `cannot read workload file ${this.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'create the file or fix --workloads; the agent keeps its last good state', { cause: e }));
      return this.current;
    }
    const joined = texts.map(([f, t]) => `${f}\0${t}`).join('\0\0');
    if (joined === this.lastText) return this.current;
    try {
      const snap = emptySnapshot();
      for (const [f, text] of texts) {
        const multi = !f.endsWith('.json') && /^---/m.test(text);
        const doc = multi ? YAML.parseAllDocuments(text).map((d) => {
          if (d.errors.length) throw new AmbientError('WORKLOADS_INVALID', `${f}: not valid YAML: ${d.errors[0]!.message.split('\n')[0]}`, 'fix the syntax; the agent keeps its last good state meanwhile');
          return d.toJS();
        }) : parseDocument(text, f, 'WORKLOADS_INVALID');
        parseWorkloads(doc, { file: f, cgroupRoot: this.cgroupRoot, previous: this.current }, snap, multi);
      }
      resolveEndpoints(snap);
      this.lastText = joined;
      this.current = snap;
      this.lastError = null;
      this.emit('update', snap);
    } catch (e) {
      this.fail(e instanceof AmbientError ? e : new AmbientError('WORKLOADS_INVALID', String(e), 'fix the workload file'));
    }
    return this.current;
  }

  private fail(err: AmbientError): void {
    this.lastError = err;
    this.emit('invalid', err);
  }

  /** Starts watching (the file's directory, or the directory itself). */
  start(): void {
    this.reload();
    let dir = path.dirname(this.file);
    let base: string | null = path.basename(this.file);
    try { if (fs.statSync(this.file).isDirectory()) { dir = this.file; base = null; } } catch { /* missing: watch its dir */ }
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
  }

  private schedule(): void {
    if (this.timer) return;
    // coalesce bursts of events from one write
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reload();
    }, 2);
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearTimeout(this.timer);
    if (this.poll) clearInterval(this.poll);
  }
}
