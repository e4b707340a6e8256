/**
 * GET /config_dump: the type every reader shares (tests, demo, `inspect`),
 * and its assembly from the agent's parts. Everything in it is JSON as is
 * (64-bit values are strings).
 */
import type { AgentConfig } from '../config/config.js';
import type { Datapath, Isolation } from '../datapath/datapath.js';
import type { FeatureCheck } from '../datapath/features.js';
import {
  isEnrolled,
  podKey,
  podIps,
  podSpiffeId,
  type AuthorizationPolicySpec,
  type EntryError,
  type MeshSnapshot,
  type PodInfo,
  type ServicePort,
} from '../discovery/model.js';
import type { WorkloadSource } from '../discovery/source.js';
import type { CertificateInfo, IdentityManager } from '../identity/manager.js';
import type { Readiness } from '../metrics/server.js';
import type { PolicyDescription, PolicyStats } from '../policy/engine.js';
import type { ActivePolicies } from '../policy/active.js';
import type { ConnectionRecord, ConnectionTracker } from '../proxy/connections.js';
import type { DataPlaneView } from '../workers/pool.js';
import type { MeshProxy } from '../proxy/mesh.js';
import type { HandoverInfo } from './handover.js';
import type { AgentPhase } from './phase.js';
import type { PodCapture, PodError } from './pod-capture.js';
import { isLocalPod } from './reconciler.js';
import type { PodState, Resources } from './status.js';

export interface WorkloadDump {
  name: string;
  namespace: string;
  serviceAccount: string;
  identity: string;
  node: string | null;
  ip: string;
  /** every address (status.podIPs, one of each family), ip first */
  ips: string[];
  netns: string | null;
  cgroup: string | null;
  labels: Record<string, string>;
  /** in the mesh (pod or namespace label) */
  ambient: boolean;
  state: PodState;
  cgroupId?: string;
  error?: PodError;
  enrolledAt?: string;
  /** isolated or failed: what is in place, how many attempts, and the next (null: when its IP conflict is resolved) */
  isolation?: Isolation;
  attempts?: number;
  nextAttempt?: string | null;
  /** connections opened before its first capture, reset then */
  preexistingReset?: number;
  /** enrolled: its app sees its clients' real addresses (its return path is in place), else the pod's own */
  clientAddress?: 'client' | 'pod';
  /** its datapath counters (amb_pod_stats) */
  redirect?: Record<string, string>;
}

export interface ServiceDump {
  name: string;
  namespace: string;
  hostname: string;
  vips: string[];
  ports: ServicePort[];
  endpoints: Array<{ ip: string; ready: boolean; pod?: string }>;
}

export interface DatapathDump {
  pins: string;
  acceleration: AgentConfig['acceleration'];
  features: FeatureCheck[];
  programs: Record<string, { id: number; tag: string }>;
  adoptedLinks: { updated: number; upgraded: number };
  /** the datapath's refusal counters, by reason (null: unreadable) */
  refused: Record<string, string> | null;
  originalDstEntries: number | null;
}

export interface ConfigDump {
  node: string;
  pid: number;
  phase: AgentPhase;
  workloads: WorkloadDump[];
  services: ServiceDump[];
  policies: Array<PolicyDescription & { spec?: AuthorizationPolicySpec }>;
  policyStats: PolicyStats;
  connections: ConnectionRecord[];
  certificates: Array<Omit<CertificateInfo, 'chainPem' | 'rootPem'>>;
  /** null until the proxy runs */
  hbone: ReturnType<MeshProxy['stats']> | null;
  /** the data-plane workers (docs/WORKERS.md): how many, why, each thread's figures; null before they start or with workers: 0 */
  workers: { workers: number; from: string; threads: unknown[] } | null;
  workloadSource: {
    kind: AgentConfig['source'];
    file: string | null;
    entryErrors: EntryError[];
    lastError: Record<string, unknown> | null;
  };
  /** null until the datapath is loaded */
  datapath: DatapathDump | null;
  counters: Record<string, number>;
  resources: Resources;
  handover: HandoverInfo & { socket: string | null; draining: boolean };
  readiness: Readiness;
}

export interface ConfigDumpParts {
  cfg: Pick<AgentConfig, 'node' | 'trustDomain' | 'source' | 'workloads' | 'bpffsDir' | 'acceleration' | 'handoverSocket'>;
  phase: AgentPhase;
  snapshot: MeshSnapshot;
  capture(key: string): PodCapture | undefined;
  datapath: Datapath | null;
  policies: ActivePolicies;
  tracker: Pick<ConnectionTracker, 'dump'>;
  identities: Pick<IdentityManager, 'list'> | null;
  mesh: Pick<DataPlaneView, 'stats'> | null;
  /** the data-plane workers: how many, from what, and each thread's figures (null: not started) */
  workers: { workers: number; from: string; threads: unknown[] } | null;
  source: Pick<WorkloadSource, 'lastError'> | null;
  counters: ReadonlyMap<string, number>;
  resources: Resources;
  handover: HandoverInfo;
  readiness: Readiness;
}

const strings = (o: Record<string, bigint>): Record<string, string> => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v.toString()]));

function workload(parts: ConfigDumpParts, p: PodInfo): WorkloadDump {
  const { snapshot, datapath: dp, cfg } = parts;
  const c = parts.capture(podKey(p));
  const st = c?.status();
  const state: PodState = !isLocalPod(p, cfg.node) ? 'remote' : c ? c.state : 'not-enrolled';
  let redirect: Record<string, string> | null = null;
  if (c && st?.cgroupId != null && dp) {
    const stats = dp.podStats(st.cgroupId);
    redirect = stats ? strings({ ...stats }) : {};
  }
  return {
    name: p.name,
    namespace: p.namespace,
    serviceAccount: p.serviceAccount,
    identity: podSpiffeId(p, cfg.trustDomain),
    node: p.node,
    ip: p.ip,
    ips: podIps(p),
    netns: p.netns,
    cgroup: p.cgroup,
    labels: p.labels,
    ambient: isEnrolled(p, snapshot.namespaces),
    state,
    ...(st?.cgroupId != null ? { cgroupId: st.cgroupId.toString() } : {}),
    ...(st?.error ? { error: st.error } : {}),
    ...(st?.enrolledAt ? { enrolledAt: st.enrolledAt } : {}),
    ...(st?.isolation && c!.state !== 'enrolled'
      ? { isolation: st.isolation, attempts: st.attempts, nextAttempt: st.error?.code === 'POD_IP_CONFLICT' ? null : new Date(st.retryAt).toISOString() }
      : {}),
    ...(st?.preexistingReset != null ? { preexistingReset: st.preexistingReset } : {}),
    ...(state === 'enrolled' && st ? { clientAddress: st.clientAddress ? ('client' as const) : ('pod' as const) } : {}),
    ...(redirect ? { redirect } : {}),
  };
}

export function buildConfigDump(parts: ConfigDumpParts): ConfigDump {
  const { cfg, snapshot, datapath: dp } = parts;
  let refused: Record<string, string> | null = null;
  let originalDstEntries: number | null = null;
  try {
    if (dp) {
      refused = strings(dp.counters());
      originalDstEntries = dp.originalDstCount();
    }
  } catch {
    /* a map read failing must not fail the dump */
  }
  return {
    node: cfg.node,
    pid: process.pid,
    phase: parts.phase,
    workloads: [...snapshot.pods.values()].map((p) => workload(parts, p)),
    services: [...snapshot.services.values()].map((s) => ({
      name: s.name,
      namespace: s.namespace,
      hostname: s.hostname,
      vips: s.vips,
      ports: s.ports,
      endpoints: s.endpoints.map((e) => ({ ip: e.ip, ready: e.ready, ...(e.pod ? { pod: e.pod } : {}) })),
    })),
    policies: parts.policies.describe().map((d) => ({ ...d, spec: snapshot.policies.get(d.policy)?.spec })),
    policyStats: parts.policies.stats(),
    connections: parts.tracker.dump(),
    certificates: (parts.identities?.list() ?? []).map(({ chainPem: _c, rootPem: _r, ...c }) => c),
    hbone: parts.mesh?.stats() ?? null,
    workers: parts.workers,
    workloadSource: {
      kind: cfg.source,
      file: cfg.workloads,
      entryErrors: snapshot.errors,
      lastError: parts.source?.lastError?.toJSON() ?? null,
    },
    datapath: dp
      ? {
          pins: cfg.bpffsDir,
          acceleration: cfg.acceleration,
          features: dp.features,
          programs: dp.programs(),
          adoptedLinks: dp.adoptedLinks,
          refused,
          originalDstEntries,
        }
      : null,
    counters: Object.fromEntries(parts.counters),
    resources: parts.resources,
    handover: { socket: cfg.handoverSocket, ...parts.handover, draining: parts.phase === 'draining' },
    readiness: parts.readiness,
  };
}
