/**
 * Every setting of `ambientd agent`, declared once, in SETTINGS below: its
 * AgentConfig field, its key in the settings file, its flag, what it holds
 * (a Kind: reading and validating, units, allowed values), its default and
 * its help. From the table come
 *   - the AgentConfig type (a mapped type over the table),
 *   - reading and validating the YAML/JSON file (config.ts, parseConfig),
 *   - the flags of `ambientd agent` and what key each sets (flags.ts),
 *   - the settings part of `ambientd agent --help` (flags.ts).
 *
 * The table is in the order help lists it and the file is validated in; a
 * default computed from other settings (bpffsDir from node) reads only the
 * ones above it.
 */
import net from 'node:net';
import path from 'node:path';
import { AmbientError } from '../util/errors.js';
import { FieldError, int, port as portNumber, show, str } from '../util/fields.js';
import { parseDialAddress } from '../util/hostport.js';
import { DNS1123_LABEL_RULE, DNS1123_SUBDOMAIN_RULE, isDns1123Label, isDns1123Subdomain } from '../util/dns1123.js';
import { LEVELS } from '../util/log.js';
import { DEFAULT_LIMITS, type Limits } from '../proxy/limits.js';
import { DEFAULT_PEER_TIMEOUT_MS } from '../proxy/liveness.js';
import { formatDuration, formatSize, parseDuration, parseSize } from './units.js';

// ---------------------------------------------------------------------------
// Kinds: what a setting holds
// ---------------------------------------------------------------------------

export interface Kind<T> {
  /** A value present in the file (never undefined; null only when `takesNull`): the typed value, or a FieldError naming `field`. */
  read(v: unknown, field: string): T;
  /** What a flag's text stands for in the file ("15001" -> 15001); without it, the text itself. `flag` names the flag in errors. */
  fromFlag?(text: string, flag: string): unknown;
  /** A value as a file would hold it (help shows defaults so): 30000 -> "30s". */
  format?(v: T): string;
  /** The values allowed, for help. */
  values?: readonly string[];
  /** The range allowed, for help ("2s..1h"). */
  range?: string;
  /** null is a value of this kind (handoverSocket: off), not "use the default". */
  takesNull?: boolean;
}

const invalid = (field: string, problem: string): FieldError =>
  new FieldError(field, problem, 'CONFIG_INVALID', 'fix the setting (`ambientd agent --help` lists every setting)');

function integerFlag(text: string, flag: string): number {
  const n = text.trim() === '' ? NaN : Number(text);
  if (!Number.isInteger(n))
    throw new AmbientError('USAGE', `${flag} must be an integer, got ${show(text)}`, 'run `ambientd agent --help` for every flag and its default');
  return n;
}

/** A non-empty string. */
const text: Kind<string> = { read: (v, field) => str(v, field) };

/** A non-empty string that passes `ok`. */
function textThat(what: string, ok: (s: string) => boolean): Kind<string> {
  return {
    read(v, field) {
      const s = str(v, field);
      if (!ok(s)) throw invalid(field, `must be ${what}, got ${show(s)}`);
      return s;
    },
  };
}

const ipAddress = (note = ''): Kind<string> => textThat(`an IP address${note}`, (s) => net.isIP(s) !== 0);
const absolutePath = (note = ''): Kind<string> => textThat(`an absolute path${note}`, (s) => path.isAbsolute(s));

/** null is the default: the setting is off or found another way. */
function optional<T>(kind: Kind<T>): Kind<T | null> {
  return kind;
}

/** A unix socket path; null or "" turn it off. */
const unixSocket: Kind<string | null> = {
  takesNull: true,
  read(v, field) {
    if (v === null || v === '') return null;
    const s = str(v, field);
    if (!path.isAbsolute(s) || Buffer.byteLength(s) > 107)
      throw invalid(field, `must be an absolute path of at most 107 bytes (a unix socket), or null or "" to turn it off, got ${show(s)}`);
    return s;
  },
};

const port: Kind<number> = { read: (v, field) => portNumber(v, field), fromFlag: integerFlag };

/** A socket mark (SO_MARK): a positive 32-bit integer, shown in hex. */
const mark: Kind<number> = {
  read(v, field) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > 0xffffffff) throw invalid(field, `must be a positive 32-bit integer, got ${show(v)}`);
    return v;
  },
  fromFlag: integerFlag,
  format: (v) => `0x${v.toString(16)}`,
};

function oneOf<const T extends string>(values: readonly T[]): Kind<T> {
  const what = values.length === 2 ? `"${values[0]}" or "${values[1]}"` : `one of ${values.join(', ')}`;
  return {
    values,
    read(v, field) {
      if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
      throw invalid(field, `must be ${what}, got ${show(v)}`);
    },
  };
}

/** Milliseconds, written "30s", "24h" (units.ts) or as a number of ms. */
function duration(min = 0, max = Infinity): Kind<number> {
  const range = max < Infinity ? `between ${formatDuration(min)} and ${formatDuration(max)}` : min > 0 ? `of at least ${formatDuration(min)}` : '';
  return {
    range: max < Infinity ? `${formatDuration(min)}..${formatDuration(max)}` : min > 0 ? `>= ${formatDuration(min)}` : undefined,
    format: formatDuration,
    read(v, field) {
      const n = parseDuration(v);
      if (n === null || n < min || n > max)
        throw invalid(field, `must be a duration${range ? ` ${range}` : ''} like "30s", "24h" or a number of milliseconds, got ${show(v)}`);
      return n;
    },
  };
}

/** Bytes, written "256KiB", "32MiB" (units.ts) or as a number. */
function size(min: number, max: number): Kind<number> {
  return {
    range: `${formatSize(min)}..${formatSize(max)}`,
    format: formatSize,
    read(v, field) {
      const n = parseSize(v);
      if (n === null || n < min || n > max)
        throw invalid(field, `must be a size like "256KiB", "32MiB" or a number of bytes, between ${formatSize(min)} and ${formatSize(max)}, got ${show(v)}`);
      return n;
    },
  };
}

/** `auto` or a whole number in min..max. */
function autoOrCount(min: number, max: number): Kind<number | 'auto'> {
  return {
    range: `auto, ${min}..${max}`,
    read(v, field) {
      if (v === 'auto') return 'auto';
      if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
      throw invalid(field, `must be "auto" or a whole number between ${min} and ${max}, got ${show(v)}`);
    },
    fromFlag: (t, flag) => (t.trim() === 'auto' ? 'auto' : integerFlag(t, flag)),
    format: (v) => String(v),
  };
}

/** A whole number. */
function count(min: number, max: number): Kind<number> {
  return { range: `${min}..${max}`, read: (v, field) => int(v, field, min, max), fromFlag: integerFlag };
}

// ---------------------------------------------------------------------------
// Settings and groups of them
// ---------------------------------------------------------------------------

/** No default: the file or a flag must give it. */
export class Required {
  constructor(readonly when = '') {}
}
/** A default computed from the settings above it in the table. */
export class Derived<T> {
  constructor(readonly compute: (above: Readonly<Record<string, unknown>>) => T | Required) {}
}

export interface Setting<T> {
  readonly kind: Kind<T>;
  /** Its key in the settings file, when it is not the AgentConfig field's name (drainTimeout -> drainTimeoutMs). */
  readonly key?: string;
  /** Its flag of `ambientd agent` (without "--"); members of a group with a KEY=VALUE flag have none. */
  readonly flag?: string;
  /** The flag's argument in help: N, D, DIR. */
  readonly arg?: string;
  readonly help: string;
  readonly default: T | Required | Derived<T>;
  /** What help shows for the default when the default cannot say it (computed, found at run time). */
  readonly shown?: string;
}

export interface Group<M extends Record<string, Setting<unknown>>> {
  readonly members: M;
  /** Its key in the file, a mapping of its members, when it is not the field's name. */
  readonly key?: string;
  /** What one member is called in errors: "port", "limit". */
  readonly noun: string;
  /** One repeatable KEY=VALUE flag for all members (--limit K=V), else each member has its own. */
  readonly flag?: string;
  readonly arg?: string;
  readonly help?: string;
  /** Checks across members; throws a FieldError. */
  check?(value: { [K in keyof M]: ValueOf<M[K]> }, field: string): void;
}

export type ValueOf<S> = S extends Group<infer M> ? { -readonly [K in keyof M]: ValueOf<M[K]> } : S extends Setting<infer T> ? T : never;

export function isGroup(s: Setting<unknown> | Group<Record<string, Setting<unknown>>>): s is Group<Record<string, Setting<unknown>>> {
  return 'members' in s;
}

function setting<T>(s: Omit<Setting<T>, 'default'> & { readonly default: NoInfer<T> | Required | Derived<NoInfer<T>> }): Setting<T> {
  return s;
}

function group<M extends Record<string, Setting<unknown>>>(g: Group<M>): Group<M> {
  return g;
}

const required = (when = ''): Required => new Required(when);
const derived = <T>(compute: (above: Readonly<Record<string, unknown>>) => T | Required): Derived<T> => new Derived(compute);

export function defaultBpfObject(): string {
  // dist/src/config/settings.js -> repo root
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..');
  return process.env.AMBIENTD_BPF_OBJECT ?? path.join(root, 'bpf', 'ambient.bpf.o');
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

const PORTS = {
  outbound: setting({ kind: port, flag: 'outbound-port', arg: 'N', default: 15001, help: 'outbound capture port in each pod' }),
  inbound: setting({ kind: port, flag: 'inbound-port', arg: 'N', default: 15006, help: 'inbound plaintext capture port' }),
  hbone: setting({ kind: port, flag: 'hbone-port', arg: 'N', default: 15008, help: 'inbound HBONE port' }),
  admin: setting({ kind: port, flag: 'admin-port', arg: 'N', default: 15000, help: 'admin endpoint port, on --admin-address' }),
  metrics: setting({
    kind: port,
    flag: 'metrics-port',
    arg: 'N',
    default: 15020,
    help: 'Prometheus GET /metrics and /stats/prometheus (Istio: 15020), on --metrics-address',
  }),
  readiness: setting({
    kind: port,
    flag: 'readiness-port',
    arg: 'N',
    default: 15021,
    help: 'GET /healthz/ready (Istio: 15021): 200 "ready" | 500 pending; ?verbose, ?format=json list each pod; a failed pod is reported per pod, never makes the node unready',
  }),
};

const LIMITS = {
  receiveBuffer: setting({
    kind: size(1 << 20, 64 * 1024 ** 3),
    default: DEFAULT_LIMITS.receiveBuffer,
    help: 'bytes HBONE peers may send ahead of the apps, node-wide, split over open streams as their window',
  }),
  streamWindow: setting({
    kind: size(65_535, 2 ** 31 - 1),
    default: DEFAULT_LIMITS.streamWindow,
    help: "largest per-stream window (one bulk stream's throughput)",
  }),
  minStreamWindow: setting({
    kind: size(16 * 1024, 2 ** 31 - 1),
    default: DEFAULT_LIMITS.minStreamWindow,
    help: 'smallest per-stream window (at most streamWindow)',
  }),
  maxStreamsPerSession: setting({ kind: count(1, 10_000), default: DEFAULT_LIMITS.maxStreamsPerSession, help: 'streams per HBONE connection (both sides)' }),
  maxSessionsPerPeer: setting({ kind: count(1, 100_000), default: DEFAULT_LIMITS.maxSessionsPerPeer, help: 'HBONE connections open at once from one address' }),
  maxHandshakes: setting({ kind: count(1, 100_000), default: DEFAULT_LIMITS.maxHandshakes, help: 'TLS handshakes in progress at once' }),
  maxPendingDials: setting({ kind: count(1, 1_000_000), default: DEFAULT_LIMITS.maxPendingDials, help: 'connections being opened at once' }),
  socketBuffer: setting({ kind: size(4096, 64 * 1024 ** 2), default: DEFAULT_LIMITS.socketBuffer, help: "SO_SNDBUF/SO_RCVBUF of the agent's sockets in pods" }),
} satisfies Record<keyof Limits, Setting<number>>;

export const SETTINGS = {
  node: setting({
    kind: textThat(`a DNS-1123 name: ${DNS1123_SUBDOMAIN_RULE}`, isDns1123Subdomain),
    flag: 'node',
    arg: 'NAME',
    default: required(),
    help: "this node's name",
  }),
  nodeIP: setting({
    kind: optional(ipAddress()),
    flag: 'node-ip',
    arg: 'IP',
    default: null,
    help: "the node's own address: its traffic to pods (kubelet probes) is not captured",
  }),
  source: setting({ kind: oneOf(['file', 'kubernetes']), flag: 'source', arg: 'S', default: 'file', help: 'where the mesh model comes from' }),
  workloads: setting({
    kind: optional(text),
    flag: 'workloads',
    arg: 'PATH',
    default: derived((above) => (above.source === 'file' ? required('with source "file"') : null)),
    shown: '(required with --source file)',
    help: 'file source: a file or directory of YAML/JSON (compact form or Kubernetes objects: Namespace, Pod, Service, AuthorizationPolicy), re-read on change',
  }),
  rootNamespace: setting({
    kind: textThat(`a namespace name: ${DNS1123_LABEL_RULE}`, isDns1123Label),
    flag: 'root-namespace',
    arg: 'NS',
    default: 'istio-system',
    help: 'Istio root namespace: its AuthorizationPolicies apply mesh-wide',
  }),
  cgroupRoot: setting({ kind: text, flag: 'cgroup-root', arg: 'DIR', default: '/sys/fs/cgroup', help: 'cgroup v2 mount' }),
  agentCgroup: setting({
    kind: optional(text),
    flag: 'agent-cgroup',
    arg: 'DIR',
    default: null,
    shown: '[from /proc/self/cgroup]',
    help: "the agent's own cgroup v2 directory (its sockets get the sockops hook)",
  }),
  bpffsDir: setting({
    kind: absolutePath(' on a bpffs'),
    flag: 'bpffs',
    arg: 'DIR',
    default: derived((above) => `/sys/fs/bpf/ambientd/${String(above.node)}`),
    shown: '[/sys/fs/bpf/ambientd/<node>]',
    help: 'where maps and links are pinned',
  }),
  bpfObject: setting({
    kind: text,
    flag: 'bpf-object',
    arg: 'FILE',
    default: derived(() => defaultBpfObject()),
    shown: '[bpf/ambient.bpf.o of this install, or $AMBIENTD_BPF_OBJECT]',
    help: 'compiled datapath',
  }),
  ports: group({
    noun: 'port',
    members: PORTS,
    check(p, field) {
      if (new Set([p.outbound, p.inbound, p.hbone]).size !== 3)
        throw invalid(field, `outbound, inbound and hbone must be distinct, got ${p.outbound}, ${p.inbound}, ${p.hbone}`);
      if (new Set([p.admin, p.metrics, p.readiness]).size !== 3)
        throw invalid(field, `admin, metrics and readiness must be distinct, got ${p.admin}, ${p.metrics}, ${p.readiness}`);
    },
  }),
  adminAddress: setting({
    kind: ipAddress(' (keep it on loopback)'),
    flag: 'admin-address',
    arg: 'IP',
    default: '127.0.0.1',
    help: 'where the admin endpoint listens (keep it on loopback)',
  }),
  metricsAddress: setting({
    kind: ipAddress(' (0.0.0.0 for every address)'),
    flag: 'metrics-address',
    arg: 'IP',
    default: '0.0.0.0',
    help: 'where the metrics and readiness ports listen (0.0.0.0 like ztunnel: Prometheus and the kubelet reach them)',
  }),
  mark: setting({ kind: mark, flag: 'mark', arg: 'N', default: 0x539, help: "SO_MARK of the agent's own sockets" }),
  clientAddress: setting({
    kind: oneOf(['preserve', 'pod']),
    flag: 'client-address',
    arg: 'M',
    default: 'preserve',
    help: "what an app sees as its inbound client: preserve = the client's real address (IP_TRANSPARENT and an in-pod return path; Linux >= 5.17, else pod), pod = the pod's own address",
  }),
  workers: setting({
    kind: autoOrCount(0, 256),
    flag: 'workers',
    arg: 'N',
    default: 'auto',
    help:
      'data-plane worker threads, each with its own socket of every pod listener (SO_REUSEPORT) and its own HBONE pools; ' +
      "the main thread keeps discovery, policy, certificates, metrics and admin. auto = the agent cgroup's CPU limit, else the CPUs (at least 1); " +
      '0 = no workers: the main thread carries the traffic too (debugging)',
  }),
  acceleration: setting({
    kind: oneOf(['sockmap', 'none']),
    flag: 'acceleration',
    arg: 'M',
    default: 'none',
    help: 'sk_msg fast path for in-pod app<->agent bytes (experimental: no backpressure, bulk senders can hit ENOMEM; see bench/RESULTS.md)',
  }),
  trustDomain: setting({
    kind: textThat('a lowercase DNS-like name (e.g. cluster.local)', (s) => /^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$/.test(s) && s.length <= 255),
    flag: 'trust-domain',
    arg: 'TD',
    default: 'cluster.local',
    help: 'SPIFFE trust domain: identities are spiffe://TD/ns/<ns>/sa/<sa>',
  }),
  caDir: setting({
    kind: absolutePath(),
    flag: 'ca-dir',
    arg: 'DIR',
    default: '/var/lib/ambientd/ca',
    help: 'built-in CA directory; holds or receives ca-cert.pem, ca-key.pem (0600), root-cert.pem, cert-chain.pem (Istio plug-in layout)',
  }),
  certLifetimeMs: setting({
    key: 'certLifetime',
    kind: duration(1000),
    flag: 'cert-lifetime',
    arg: 'D',
    default: 24 * 3_600_000,
    help: 'workload certificate lifetime, renewed at half-life',
  }),
  caAddress: setting({
    kind: optional(textThat('host:port (an IP or DNS name and a port)', (s) => parseDialAddress(s) !== null)),
    flag: 'ca-address',
    arg: 'ADDR',
    default: null,
    shown: '[unset: the built-in CA in caDir signs]',
    help:
      'HOST:PORT of the cluster CA the agent gets its certificates from (`ambientd ca`, or istiod:15012): Istio CreateCertificate over TLS, ' +
      'no CA key on the node; renewal at half-life, back-off, a valid certificate kept when renewal fails',
  }),
  caRootCert: setting({
    kind: absolutePath(),
    flag: 'ca-root-cert',
    arg: 'FILE',
    default: '/var/run/secrets/ambientd/ca/root-cert.pem',
    help: 'with caAddress: the trust bundle (PEM roots, e.g. a ConfigMap like istio-ca-root-cert): verifies the CA and is the mesh root; re-read per request',
  }),
  caTokenFile: setting({
    kind: absolutePath(),
    flag: 'ca-token-file',
    arg: 'FILE',
    default: '/var/run/secrets/tokens/ambientd-ca',
    help: "with caAddress: the node's bearer token for the CA (a projected ServiceAccount token for the CA's audience; sandbox: the node token); re-read per request",
  }),
  clusterId: setting({
    kind: optional(textThat('a cluster name (letters, digits, ".", "_", "-")', (s) => /^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$/.test(s) && s.length <= 253)),
    flag: 'cluster-id',
    arg: 'ID',
    default: null,
    shown: '[unset: no ClusterID header]',
    help: 'with caAddress: sent to the CA as the "ClusterID" header; istiod needs its cluster name (CLUSTER_ID, "Kubernetes" by default) in multi-cluster meshes',
  }),
  readyFile: setting({
    kind: optional(text),
    flag: 'ready-file',
    arg: 'FILE',
    default: null,
    help:
      'once the agent is ready (first workload snapshot applied, a hand-over confirmed) it writes its pid here; ' +
      "on stop it removes the file if it still holds its pid (after a hand-over it is the successor's)",
  }),
  handoverSocket: setting({
    kind: unixSocket,
    flag: 'handover-socket',
    arg: 'P',
    default: '/run/ambientd/handover.sock',
    help:
      'unix socket of the restart hand-over: a starting agent takes the listening sockets of the one running and serves on them ' +
      '(no refused connections); "" (null in the file) turns it off; only an agent of the same --node takes over',
  }),
  drainTimeoutMs: setting({
    key: 'drainTimeout',
    kind: duration(),
    flag: 'drain-timeout',
    arg: 'D',
    default: 30_000,
    help: 'on SIGTERM, or once a new agent took over, established connections keep running until they end or this passes',
  }),
  handoverTimeoutMs: setting({
    key: 'handoverTimeout',
    kind: duration(100, 600_000),
    flag: 'handover-timeout',
    arg: 'D',
    default: 10_000,
    help:
      'how long a running agent waits for a successor that asked for its sockets to adopt them; past it the hand-over is aborted ' +
      'and the running agent carries on (policy is applied throughout)',
  }),
  peerTimeoutMs: setting({
    key: 'peerTimeout',
    kind: duration(2000, 3_600_000),
    flag: 'peer-timeout',
    arg: 'D',
    default: DEFAULT_PEER_TIMEOUT_MS,
    help:
      'how long a silent peer (dead node, partition: no FIN ever comes) keeps connections open: HTTP/2 PING every D/4 ' +
      '(unanswered for D/2 ends the session), TCP keepalive (idle D/2, 3 probes D/6 apart) on every socket, TCP_USER_TIMEOUT D on HBONE connections',
  }),
  limits: group({
    noun: 'limit',
    members: LIMITS,
    flag: 'limit',
    arg: 'K=V',
    help:
      'one of the limits below (repeatable). Each hit is counted (ambientd_limit_hits_total{limit}) and logged once. ' +
      'Memory formula: docs/ARCHITECTURE.md#limits',
    check(l, field) {
      if (l.minStreamWindow > l.streamWindow)
        throw invalid(
          `${field}.minStreamWindow`,
          `must not exceed ${field}.streamWindow (${formatSize(l.streamWindow)}), got ${formatSize(l.minStreamWindow)}`,
        );
    },
  }),
  logLevel: setting({
    kind: oneOf(LEVELS),
    flag: 'log-level',
    arg: 'L',
    default: 'info',
    help: "the agent's log level (JSON lines on stderr; POST /logging?level= changes it while running)",
  }),
  accessLog: setting({
    kind: oneOf(['info', 'debug', 'off']),
    flag: 'access-log',
    arg: 'L',
    default: 'info',
    help: 'one JSON line (scope "ambientd.access") per closed connection, logged at that level (off: none)',
  }),
};

/** The agent's settings, one field per entry of SETTINGS (groups are nested objects). */
export type AgentConfig = ConfigOf<typeof SETTINGS>;
type ConfigOf<S> = { -readonly [F in keyof S]: ValueOf<S[F]> };

export type Ports = AgentConfig['ports'];

export const DEFAULT_PORTS: Readonly<Ports> = Object.freeze(Object.fromEntries(Object.entries(PORTS).map(([k, s]) => [k, s.default])) as Ports);

/** A leaf of the table: its path in AgentConfig (`field`) and in the file (`key`: "ports.admin"), its flag as typed. */
export interface Entry {
  readonly field: string;
  readonly key: string;
  readonly setting: Setting<unknown>;
  /** "--admin-port", "--limit maxHandshakes=V"; null without one */
  readonly flag: string | null;
}

/** Every leaf setting, in table order; a group's members with dotted paths. */
export function entries(): Entry[] {
  const out: Entry[] = [];
  for (const [field, s] of Object.entries(SETTINGS) as Array<[string, Setting<unknown> | Group<Record<string, Setting<unknown>>>]>) {
    const key = s.key ?? field;
    if (!isGroup(s)) {
      out.push({ field, key, setting: s, flag: s.flag ? `--${s.flag}` : null });
      continue;
    }
    for (const [m, ms] of Object.entries(s.members)) {
      const mkey = ms.key ?? m;
      out.push({ field: `${field}.${m}`, key: `${key}.${mkey}`, setting: ms, flag: ms.flag ? `--${ms.flag}` : s.flag ? `--${s.flag} ${mkey}=V` : null });
    }
  }
  return out;
}

/** "nodeIp" -> "nodeip", "node-ip" -> "nodeip": for "did you mean". */
const loose = (s: string): string => s.replace(/[-_.]/g, '').toLowerCase();

/**
 * The setting a mistyped key or flag most likely meant ("nodeIp", "node-ip",
 * "--drainTimeout", "admin"), as its file key or its flag; null when none is close.
 */
export function didYouMean(name: string, as: 'key' | 'flag'): string | null {
  const n = loose(name.replace(/^-+/, ''));
  for (const e of entries()) {
    const names = [e.key, e.key.split('.').pop()!, ...(e.setting.flag ? [e.setting.flag] : [])];
    if (names.some((x) => loose(x) === n)) return as === 'key' ? e.key : e.flag;
  }
  return null;
}
