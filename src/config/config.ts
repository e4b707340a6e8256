/**
 * Agent settings: a YAML/JSON file plus command-line overrides, validated
 * field by field into one typed, frozen object.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { AmbientError } from '../util/errors.js';
import { isLevel, type Level } from '../util/log.js';
import { DEFAULT_LIMITS, type Limits } from '../proxy/limits.js';
import { DEFAULT_PEER_TIMEOUT_MS } from '../proxy/liveness.js';

export interface Ports {
  outbound: number;
  inbound: number;
  hbone: number;
  admin: number;
  /** Prometheus /metrics (Istio: 15020) */
  metrics: number;
  /** GET /healthz/ready (Istio: 15021) */
  readiness: number;
}

export interface AgentConfig {
  node: string;
  /** The node's own address: traffic from it to pods (kubelet probes) is not captured. */
  nodeIP: string | null;
  cgroupRoot: string;
  bpffsDir: string;
  /** where the mesh model comes from */
  source: 'file' | 'kubernetes';
  /** file source: a file or directory (null with the kubernetes source) */
  workloads: string | null;
  /** cgroup v2 directory of the agent itself (its sockets get the sockops hook). */
  agentCgroup: string | null;
  ports: Ports;
  adminAddress: string;
  /** where the metrics (15020) and readiness (15021) ports listen; 0.0.0.0 like ztunnel (Prometheus and kubelet reach them) */
  metricsAddress: string;
  mark: number;
  acceleration: 'sockmap' | 'none';
  logLevel: Level;
  /** access log: one JSON line per closed connection at this level (off: none) */
  accessLog: 'info' | 'debug' | 'off';
  /** Where the agent writes an empty file once it is ready (sandbox contract). */
  readyFile: string | null;
  bpfObject: string;
  /** SPIFFE trust domain of this mesh. */
  trustDomain: string;
  /** Built-in CA directory (Istio plug-in layout; created with 0600 keys on first start). */
  caDir: string;
  /** Lifetime of workload certificates, ms (renewed at half-life). */
  certLifetimeMs: number;
  /** Istio root namespace: its AuthorizationPolicies apply mesh-wide. */
  rootNamespace: string;
  /**
   * Unix socket over which a starting agent takes the listening sockets of the
   * running one (SCM_RIGHTS) and the old one then serves on; null = off.
   */
  handoverSocket: string | null;
  /** How long a stopping (SIGTERM) or replaced agent keeps serving its established connections, ms. */
  drainTimeoutMs: number;
  /**
   * How long a running agent waits for a successor that asked for its
   * sockets to adopt them, ms; past it the hand-over is aborted and the
   * running agent carries on (enrollment resumes).
   */
  handoverTimeoutMs: number;
  /**
   * How long a silent peer (a dead node, a partition: no FIN ever comes) keeps
   * connections open, ms: HTTP/2 PING, TCP keepalive and TCP_USER_TIMEOUT are
   * derived from it (src/proxy/liveness.ts).
   */
  peerTimeoutMs: number;
  /** What bounds work and memory whatever apps and peers do (src/proxy/limits.ts). */
  limits: Limits;
}

export const DEFAULT_PORTS: Ports = { outbound: 15001, inbound: 15006, hbone: 15008, admin: 15000, metrics: 15020, readiness: 15021 };

export function defaultBpfObject(): string {
  // dist/src/config/config.js -> repo root
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..');
  return process.env.AMBIENTD_BPF_OBJECT ?? path.join(root, 'bpf', 'ambient.bpf.o');
}

const KNOWN = new Set([
  'node', 'nodeIP', 'cgroupRoot', 'bpffsDir', 'workloads', 'agentCgroup', 'ports', 'adminAddress', 'metricsAddress', 'mark',
  'acceleration', 'logLevel', 'accessLog', 'readyFile', 'bpfObject', 'trustDomain', 'caDir', 'certLifetime', 'rootNamespace', 'source',
  'handoverSocket', 'drainTimeout', 'handoverTimeout', 'peerTimeout', 'limits',
]);

/** limits.<key>: [kind, min, max] */
const LIMIT_KEYS: Record<keyof Limits, ['size' | 'count', number, number]> = {
  receiveBuffer: ['size', 1 << 20, 64 * 1024 * 1024 * 1024],
  streamWindow: ['size', 65_535, 2 ** 31 - 1],
  minStreamWindow: ['size', 16 * 1024, 2 ** 31 - 1],
  maxStreamsPerSession: ['count', 1, 10_000],
  maxSessionsPerPeer: ['count', 1, 100_000],
  maxHandshakes: ['count', 1, 100_000],
  maxPendingDials: ['count', 1, 1_000_000],
  socketBuffer: ['size', 4096, 64 * 1024 * 1024],
};

/** "256KiB", "32MiB", "1GiB", "4096" or a number of bytes. */
export function parseSize(v: unknown): number | null {
  if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
  if (typeof v !== 'string') return null;
  const m = /^(\d+)(B|KiB|MiB|GiB)?$/.exec(v.trim());
  if (!m) return null;
  const n = Number(m[1]) * { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[(m[2] ?? 'B') as 'B' | 'KiB' | 'MiB' | 'GiB'];
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

function parseLimits(v: unknown, file: string): Limits {
  if (v === undefined || v === null) return { ...DEFAULT_LIMITS };
  if (typeof v !== 'object' || Array.isArray(v)) throw bad(file, 'limits', `must be a mapping of ${Object.keys(LIMIT_KEYS).join(', ')}`);
  const o = v as Record<string, unknown>;
  const out: Limits = { ...DEFAULT_LIMITS };
  for (const [k, raw] of Object.entries(o)) {
    const spec = LIMIT_KEYS[k as keyof Limits];
    if (!spec) throw bad(file, `limits.${k}`, `is not a known limit (known: ${Object.keys(LIMIT_KEYS).join(', ')})`);
    const [kind, min, max] = spec;
    const n = kind === 'size' ? parseSize(raw) : (typeof raw === 'number' && Number.isInteger(raw) ? raw : null);
    if (n === null || n < min || n > max) throw bad(file, `limits.${k}`, `must be ${kind === 'size' ? 'a size like "256KiB", "32MiB"' : 'an integer'} between ${min} and ${max}, got ${JSON.stringify(raw)}`);
    out[k as keyof Limits] = n;
  }
  if (out.minStreamWindow > out.streamWindow) throw bad(file, 'limits.minStreamWindow', `must not exceed limits.streamWindow (${out.streamWindow})`);
  return out;
}

/** "24h", "90s", "500ms", "15m" or a number of milliseconds. */
export function parseDuration(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v;
  if (typeof v !== 'string') return null;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v.trim());
  if (!m) return null;
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  const n = Number(m[1]) * mult;
  return n > 0 ? n : null;
}

function bad(file: string, field: string, why: string): AmbientError {
  return new AmbientError('CONFIG_INVALID', `${file}: field "${field}" ${why}`, 'fix the field in the config file (see `ambientd agent --help` for every setting and its default)');
}

function str(o: Record<string, unknown>, k: string, file: string, def?: string): string {
  const v = o[k];
  if (v === undefined || v === null) {
    if (def !== undefined) return def;
    throw bad(file, k, 'is required');
  }
  if (typeof v !== 'string' || v === '') throw bad(file, k, `must be a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

function port(v: unknown, file: string, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw bad(file, field, `must be a port number 1..65535, got ${JSON.stringify(v)}`);
  return v;
}

/** Validates a parsed config object (from a file and/or flags). */
export function parseConfig(raw: unknown, file = '<config>'): AgentConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new AmbientError('CONFIG_INVALID', `${file}: the config must be a mapping of settings`, 'write the settings as YAML or JSON keys, e.g. `node: node-1`');
  }
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KNOWN.has(k)) throw bad(file, k, `is not a known setting (known: ${[...KNOWN].join(', ')})`);
  const node = str(o, 'node', file);
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(node) || node.length > 253) throw bad(file, 'node', 'must be a DNS-1123 name');
  const nodeIP = o.nodeIP === undefined || o.nodeIP === null ? null : str(o, 'nodeIP', file);
  if (nodeIP !== null && !net.isIP(nodeIP)) throw bad(file, 'nodeIP', `is not an IP address: ${JSON.stringify(nodeIP)}`);
  const cgroupRoot = str(o, 'cgroupRoot', file, '/sys/fs/cgroup');
  const bpffsDir = str(o, 'bpffsDir', file, `/sys/fs/bpf/ambientd/${node}`);
  if (!path.isAbsolute(bpffsDir)) throw bad(file, 'bpffsDir', 'must be an absolute path on a bpffs');
  const source = o.source ?? 'file';
  if (source !== 'file' && source !== 'kubernetes') throw bad(file, 'source', 'must be "file" or "kubernetes"');
  const workloads = source === 'file' ? str(o, 'workloads', file) : (o.workloads === undefined ? null : str(o, 'workloads', file));
  const agentCgroup = o.agentCgroup === undefined || o.agentCgroup === null ? null : str(o, 'agentCgroup', file);
  const p = (o.ports ?? {}) as Record<string, unknown>;
  if (typeof p !== 'object' || Array.isArray(p)) throw bad(file, 'ports', 'must be a mapping {outbound, inbound, hbone, admin, metrics, readiness}');
  for (const k of Object.keys(p)) if (!(k in DEFAULT_PORTS)) throw bad(file, `ports.${k}`, 'is not a known port (outbound, inbound, hbone, admin, metrics, readiness)');
  const ports: Ports = {
    outbound: port(p.outbound ?? DEFAULT_PORTS.outbound, file, 'ports.outbound'),
    inbound: port(p.inbound ?? DEFAULT_PORTS.inbound, file, 'ports.inbound'),
    hbone: port(p.hbone ?? DEFAULT_PORTS.hbone, file, 'ports.hbone'),
    admin: port(p.admin ?? DEFAULT_PORTS.admin, file, 'ports.admin'),
    metrics: port(p.metrics ?? DEFAULT_PORTS.metrics, file, 'ports.metrics'),
    readiness: port(p.readiness ?? DEFAULT_PORTS.readiness, file, 'ports.readiness'),
  };
  if (new Set([ports.outbound, ports.inbound, ports.hbone]).size !== 3) throw bad(file, 'ports', 'outbound, inbound and hbone must be distinct');
  if (new Set([ports.admin, ports.metrics, ports.readiness]).size !== 3) throw bad(file, 'ports', 'admin, metrics and readiness must be distinct');
  const adminAddress = str(o, 'adminAddress', file, '127.0.0.1');
  if (!net.isIP(adminAddress)) throw bad(file, 'adminAddress', 'must be an IP address (keep it on loopback)');
  const metricsAddress = str(o, 'metricsAddress', file, '0.0.0.0');
  if (!net.isIP(metricsAddress)) throw bad(file, 'metricsAddress', 'must be an IP address (0.0.0.0 for every address)');
  const mark = o.mark === undefined ? 0x539 : o.mark;
  if (typeof mark !== 'number' || !Number.isInteger(mark) || mark <= 0 || mark > 0xffffffff) throw bad(file, 'mark', 'must be a positive 32-bit integer');
  const acceleration = o.acceleration ?? 'none';
  if (acceleration !== 'sockmap' && acceleration !== 'none') throw bad(file, 'acceleration', 'must be "sockmap" or "none"');
  const logLevel = o.logLevel ?? 'info';
  if (typeof logLevel !== 'string' || !isLevel(logLevel)) throw bad(file, 'logLevel', 'must be one of debug, info, warn, error, off');
  const accessLog = o.accessLog ?? 'info';
  if (accessLog !== 'info' && accessLog !== 'debug' && accessLog !== 'off') throw bad(file, 'accessLog', 'must be one of info, debug, off');
  const readyFile = o.readyFile === undefined || o.readyFile === null ? null : str(o, 'readyFile', file);
  const bpfObject = str(o, 'bpfObject', file, defaultBpfObject());
  const trustDomain = str(o, 'trustDomain', file, 'cluster.local');
  if (!/^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$/.test(trustDomain) || trustDomain.length > 255) throw bad(file, 'trustDomain', 'must be a lowercase DNS-like name (e.g. cluster.local)');
  const caDir = str(o, 'caDir', file, '/var/lib/ambientd/ca');
  if (!path.isAbsolute(caDir)) throw bad(file, 'caDir', 'must be an absolute path');
  const certLifetimeMs = o.certLifetime === undefined ? 24 * 3_600_000 : parseDuration(o.certLifetime);
  if (certLifetimeMs === null || certLifetimeMs < 1000) throw bad(file, 'certLifetime', 'must be a duration of at least 1s like "24h", "90s" or a number of ms');
  const rootNamespace = str(o, 'rootNamespace', file, 'istio-system');
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(rootNamespace)) throw bad(file, 'rootNamespace', 'must be a namespace name');
  const handoverSocket = o.handoverSocket === null || o.handoverSocket === '' ? null : str(o, 'handoverSocket', file, '/run/ambientd/handover.sock');
  if (handoverSocket !== null && (!path.isAbsolute(handoverSocket) || Buffer.byteLength(handoverSocket) > 107)) throw bad(file, 'handoverSocket', 'must be an absolute path of at most 107 bytes (a unix socket), or null to turn hand-over off');
  const drainTimeoutMs = o.drainTimeout === undefined ? 30_000 : parseDuration(o.drainTimeout);
  if (drainTimeoutMs === null) throw bad(file, 'drainTimeout', 'must be a duration like "30s", "1h" or a number of ms');
  const handoverTimeoutMs = o.handoverTimeout === undefined ? 10_000 : parseDuration(o.handoverTimeout);
  if (handoverTimeoutMs === null || handoverTimeoutMs < 100 || handoverTimeoutMs > 600_000) throw bad(file, 'handoverTimeout', 'must be a duration between 100ms and 10m like "10s"');
  const peerTimeoutMs = o.peerTimeout === undefined ? DEFAULT_PEER_TIMEOUT_MS : parseDuration(o.peerTimeout);
  if (peerTimeoutMs === null || peerTimeoutMs < 2000 || peerTimeoutMs > 3_600_000) throw bad(file, 'peerTimeout', 'must be a duration between 2s and 1h like "30s"');
  const limits = parseLimits(o.limits, file);
  return Object.freeze({
    node, nodeIP, cgroupRoot, bpffsDir, source, workloads, agentCgroup, ports: Object.freeze(ports), adminAddress, metricsAddress, mark,
    acceleration, logLevel, accessLog, readyFile, bpfObject, trustDomain, caDir, certLifetimeMs, rootNamespace,
    handoverSocket, drainTimeoutMs, handoverTimeoutMs, peerTimeoutMs, limits: Object.freeze(limits),
  });
}

export function parseDocument(text: string, file: string, code: 'CONFIG_INVALID' | 'WORKLOADS_INVALID'): unknown {
  try {
    if (file.endsWith('.json')) return JSON.parse(text);
    // JSON is YAML: take the fast parser when the document is a JSON object
    if (/^\s*\{/.test(text)) {
      try { return JSON.parse(text); } catch { /* not strict JSON: YAML below */ }
    }
    return YAML.parse(text, { uniqueKeys: true });
  } catch (e) {
    throw new AmbientError(code, `${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`, 'fix the syntax; the agent keeps its last good state meanwhile', { cause: e });
  }
}

export function loadConfig(file: string | null, overrides: Record<string, unknown> = {}): AgentConfig {
  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new AmbientError('CONFIG_UNREADABLE', `cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'pass an existing file with --config', { cause: e });
    }
    const doc = parseDocument(text, file, 'CONFIG_INVALID');
    if (doc !== null && (typeof doc !== 'object' || Array.isArray(doc))) return parseConfig(doc, file);
    raw = (doc ?? {}) as Record<string, unknown>;
  }
  const merged: Record<string, unknown> = { ...raw };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) continue;
    if ((k === 'ports' || k === 'limits') && typeof v === 'object') merged[k] = { ...((raw[k] as object) ?? {}), ...(v as object) };
    else merged[k] = v;
  }
  return parseConfig(merged, file ?? '<flags>');
}
