/**
 * The local workload file: namespaces and pods (JSON or YAML), the enrollment
 * source used by the sandbox and by single-machine installs. Parsing is pure;
 * WorkloadFileSource adds the file watching.
 *
 * Bad input never takes the agent down: a malformed entry is reported with its
 * position and name, every other entry is served, and a malformed entry that
 * had a good version before keeps that version ("last good state").
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { parseDocument } from '../config/config.js';
import { AmbientError } from '../util/errors.js';

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';

export interface NamespaceInfo {
  name: string;
  labels: Record<string, string>;
}

export interface PodInfo {
  name: string;
  namespace: string;
  serviceAccount: string;
  node: string | null;
  ip: string;
  netns: string | null;
  cgroup: string | null;
  labels: Record<string, string>;
}

export interface EntryError {
  /** e.g. "pods[3] (ambient-demo/web)" */
  entry: string;
  message: string;
}

export interface WorkloadSnapshot {
  namespaces: Map<string, NamespaceInfo>;
  /** keyed by "namespace/name" */
  pods: Map<string, PodInfo>;
  errors: EntryError[];
}

export function podKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}

/** ztunnel semantics: pod label ambient/none wins, else the namespace label. */
export function isEnrolled(pod: PodInfo, namespaces: Map<string, NamespaceInfo>): boolean {
  const own = pod.labels[DATAPLANE_MODE_LABEL];
  if (own === 'ambient') return true;
  if (own !== undefined && own !== '') return false; // "none" (or any other value) opts out
  return namespaces.get(pod.namespace)?.labels[DATAPLANE_MODE_LABEL] === 'ambient';
}

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

function reqName(o: Record<string, unknown>, k: string): string {
  const v = o[k];
  if (typeof v !== 'string' || !NAME_RE.test(v) || v.length > 253) throw new Error(`"${k}" must be a DNS-1123 name, got ${JSON.stringify(v)}`);
  return v;
}

function optPath(o: Record<string, unknown>, k: string, base: string | null): string | null {
  const v = o[k];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string' || v === '') throw new Error(`"${k}" must be a path, got ${JSON.stringify(v)}`);
  if (path.isAbsolute(v)) return v;
  if (base === null) throw new Error(`"${k}" must be an absolute path, got ${JSON.stringify(v)}`);
  return path.join(base, v);
}

const POD_FIELDS = new Set(['name', 'namespace', 'serviceAccount', 'node', 'ip', 'netns', 'cgroup', 'labels']);

export function parsePod(raw: unknown, cgroupRoot: string | null): PodInfo {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('must be a mapping');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!POD_FIELDS.has(k)) throw new Error(`unknown field "${k}" (known: ${[...POD_FIELDS].join(', ')})`);
  const name = reqName(o, 'name');
  const namespace = reqName(o, 'namespace');
  const serviceAccount = o.serviceAccount === undefined ? 'default' : reqName(o, 'serviceAccount');
  const node = o.node === undefined || o.node === null ? null : reqName(o, 'node');
  if (typeof o.ip !== 'string' || !net.isIP(o.ip)) throw new Error(`"ip" must be an IPv4 or IPv6 address, got ${JSON.stringify(o.ip)}`);
  return {
    name, namespace, serviceAccount, node, ip: o.ip,
    netns: optPath(o, 'netns', '/run/netns'),
    cgroup: optPath(o, 'cgroup', cgroupRoot),
    labels: labelsOf(o.labels, 'labels'),
  };
}

function rawName(raw: unknown): string | null {
  if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
    const o = raw as Record<string, unknown>;
    if (typeof o.name === 'string') return typeof o.namespace === 'string' ? `${o.namespace}/${o.name}` : o.name;
  }
  return null;
}

/**
 * Parses a workload document. Entries that fail validation are reported in
 * `errors`; when `previous` is given, a failing entry whose namespace/name is
 * known keeps its previous version.
 */
export function parseWorkloads(doc: unknown, opts: { file?: string; cgroupRoot?: string | null; previous?: WorkloadSnapshot } = {}): WorkloadSnapshot {
  const file = opts.file ?? '<workloads>';
  if (doc === null || doc === undefined) doc = {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new AmbientError('WORKLOADS_INVALID', `${file}: top level must be a mapping with "namespaces" and "pods"`, 'see docs/workloads.md for the format');
  }
  const d = doc as Record<string, unknown>;
  for (const k of Object.keys(d)) {
    if (k !== 'namespaces' && k !== 'pods') throw new AmbientError('WORKLOADS_INVALID', `${file}: unknown top-level key "${k}" (expected namespaces, pods)`, 'see docs/workloads.md for the format');
  }
  const errors: EntryError[] = [];
  const namespaces = new Map<string, NamespaceInfo>();
  const pods = new Map<string, PodInfo>();
  const list = (k: 'namespaces' | 'pods'): unknown[] => {
    const v = d[k];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new AmbientError('WORKLOADS_INVALID', `${file}: "${k}" must be a list`, 'see docs/workloads.md for the format');
    return v;
  };

  list('namespaces').forEach((raw, i) => {
    const name = rawName(raw);
    const entry = `namespaces[${i}]${name ? ` (${name})` : ''}`;
    try {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('must be a mapping');
      const o = raw as Record<string, unknown>;
      for (const k of Object.keys(o)) if (k !== 'name' && k !== 'labels') throw new Error(`unknown field "${k}" (known: name, labels)`);
      const ns = { name: reqName(o, 'name'), labels: labelsOf(o.labels, 'labels') };
      if (namespaces.has(ns.name)) throw new Error(`duplicate namespace "${ns.name}"`);
      namespaces.set(ns.name, ns);
    } catch (e) {
      errors.push({ entry, message: (e as Error).message });
      const prev = name ? opts.previous?.namespaces.get(name) : undefined;
      if (prev && !namespaces.has(prev.name)) namespaces.set(prev.name, prev);
    }
  });

  const byIp = new Map<string, string>();
  list('pods').forEach((raw, i) => {
    const name = rawName(raw);
    const entry = `pods[${i}]${name ? ` (${name})` : ''}`;
    try {
      const pod = parsePod(raw, opts.cgroupRoot ?? null);
      const key = podKey(pod);
      if (pods.has(key)) throw new Error(`duplicate pod "${key}"`);
      const other = byIp.get(pod.ip);
      if (other) throw new Error(`ip ${pod.ip} is already used by pod "${other}"`);
      pods.set(key, pod);
      byIp.set(pod.ip, key);
    } catch (e) {
      errors.push({ entry, message: (e as Error).message });
      const prev = name ? opts.previous?.pods.get(name) : undefined;
      if (prev && !pods.has(name!) && !byIp.has(prev.ip)) {
        pods.set(name!, prev);
        byIp.set(prev.ip, name!);
      }
    }
  });
  return { namespaces, pods, errors };
}

/**
 * Watches the workload file and emits 'update' (WorkloadSnapshot) on every
 * successful read and 'invalid' (AmbientError) when the whole file is
 * unusable (the last good snapshot stays in force).
 */
export class WorkloadFileSource extends EventEmitter {
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private poll: NodeJS.Timeout | null = null;
  private lastText: string | null = null;
  current: WorkloadSnapshot = { namespaces: new Map(), pods: new Map(), errors: [] };
  lastError: AmbientError | null = null;

  constructor(readonly file: string, private readonly cgroupRoot: string | null) {
    super();
  }

  /** Reads the file now. Returns the snapshot in force afterwards. */
  reload(): WorkloadSnapshot {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      const err = new AmbientError('WORKLOADS_UNREADABLE', `cannot read workload file ${this.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'create the file or fix --workloads; the agent keeps its last good state', { cause: e });
      this.fail(err);
      return this.current;
    }
    if (text === this.lastText) return this.current;
    try {
      const doc = parseDocument(text, this.file, 'WORKLOADS_INVALID');
      const snap = parseWorkloads(doc, { file: this.file, cgroupRoot: this.cgroupRoot, previous: this.current });
      this.lastText = text;
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

  /** Starts watching the file's directory (atomic renames replace the inode). */
  start(): void {
    this.reload();
    const dir = path.dirname(this.file);
    const base = path.basename(this.file);
    try {
      this.watcher = fs.watch(dir, { persistent: false }, (_ev, name) => {
        if (name === null || name === base) this.schedule();
      });
      this.watcher.on('error', () => this.schedule());
    } catch {
      // directory missing: fall back to polling below
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
