/**
 * What the agent reports about itself: each local pod's state, node
 * readiness (kubelet, /healthz/ready) and the resources it holds (config_dump,
 * metrics). Pure functions of what the composition root passes in.
 */
import fs from 'node:fs';
import type { MeshSnapshot } from '../discovery/model.js';
import { podKey } from '../discovery/model.js';
import type { Readiness } from '../metrics/server.js';
import type { Limits } from '../proxy/limits.js';
import type { DataPlaneView } from '../workers/pool.js';
import type { AgentPhase } from './phase.js';
import type { CaptureState, PodError } from './pod-capture.js';
import { isLocalPod } from './reconciler.js';

/** A pod's state as reported: captured ones by their capture, the others not-enrolled (local) or remote. */
export type PodState = CaptureState | 'not-enrolled' | 'remote';

export interface LocalPodState {
  namespace: string;
  name: string;
  state: PodState;
  error: PodError | null;
}

/** Local pods of this node (from the model) and their state. */
export function localPodStates(
  snapshot: Pick<MeshSnapshot, 'pods'>,
  node: string,
  capture: (key: string) => { state: CaptureState; error: PodError | null } | undefined,
): LocalPodState[] {
  const out: LocalPodState[] = [];
  for (const p of snapshot.pods.values()) {
    if (!isLocalPod(p, node)) continue;
    const c = capture(podKey(p));
    out.push({ namespace: p.namespace, name: p.name, state: c ? c.state : 'not-enrolled', error: c?.error ?? null });
  }
  return out;
}

export interface ReadinessInput {
  phase: AgentPhase;
  datapath: boolean;
  ca: boolean;
  adminListening: boolean;
  metricsListening: boolean;
  proxy: boolean;
  /** the workload input was rejected and no pod is known */
  workloadsRejected: boolean;
  pods: LocalPodState[];
}

/**
 * Node readiness: datapath, CA, listeners and discovery. Pods are reported
 * one by one and never make the node unready: a pod that cannot be enrolled
 * is isolated (fails closed) and listed with its error, and must not take the
 * node's other pods out (nor stall a rolling update).
 */
export function readiness(r: ReadinessInput): Readiness {
  const pending: string[] = [];
  if (!r.datapath) pending.push('datapath');
  if (!r.ca) pending.push('ca');
  if (!r.adminListening) pending.push('admin listener');
  if (!r.metricsListening) pending.push('metrics listener');
  if (!r.proxy) pending.push('proxy');
  if (r.phase === 'starting') pending.push('discovery');
  if (r.workloadsRejected) pending.push('workloads');
  if (r.phase === 'draining') pending.push('draining');
  else if (r.phase === 'stopping' || r.phase === 'stopped') pending.push('stopping');
  const pods = r.pods.map((p) => ({
    pod: `${p.namespace}/${p.name}`,
    state: p.state,
    ...(p.error ? { error: { code: p.error.code, message: p.error.message, hint: p.error.hint } } : {}),
  }));
  return { ready: pending.length === 0, pending, pods };
}

export interface Resources {
  memory: NodeJS.MemoryUsage;
  fds: number | null;
  /** RLIMIT_NOFILE soft limit after raising it (-1: unlimited) */
  fdLimit: number | null;
  sockets: { source: number; destination: number };
  hbone: {
    serverSessions: number;
    serverHandshaking: number;
    serverStreams: number;
    clientSessions: number;
    clientStreams: number;
    streamWindow: number | null;
    openStreams: number;
    windowChanges: number;
    settingsTimeouts: number;
  };
  pendingDials: number;
  limits: Limits;
  limitsHit: { handshakes: number; peerSessions: number; dials: number; settingsTimeouts: number };
  peerTimeoutMs: number;
}

/** What the agent holds now and what bounds it (config_dump "resources", and the metrics). */
export function resources(mesh: DataPlaneView | null, settings: { limits: Limits; peerTimeoutMs: number; fdLimit: number | null }): Resources {
  const server = mesh?.hbone.stats();
  const pools = mesh ? Object.values(mesh.stats().pools) : [];
  let fds: number | null = null;
  try {
    fds = fs.readdirSync('/proc/self/fd').length;
  } catch {
    /* no /proc */
  }
  return {
    memory: process.memoryUsage(),
    fds,
    fdLimit: settings.fdLimit,
    sockets: mesh?.openSockets() ?? { source: 0, destination: 0 },
    hbone: {
      serverSessions: server?.connections.established ?? 0,
      serverHandshaking: server?.connections.handshaking ?? 0,
      serverStreams: server?.streams.active ?? 0,
      clientSessions: pools.reduce((n, p) => n + p.sessions, 0),
      clientStreams: pools.reduce((n, p) => n + p.activeStreams, 0),
      streamWindow: mesh?.windows.window ?? null,
      openStreams: mesh?.windows.openStreams ?? 0,
      windowChanges: mesh?.windows.changes ?? 0,
      settingsTimeouts: mesh?.windows.settingsTimeouts ?? 0,
    },
    pendingDials: mesh?.dials.inUse ?? 0,
    limits: settings.limits,
    limitsHit: {
      handshakes: server?.rejections.limit_handshakes ?? 0,
      peerSessions: server?.rejections.limit_peer_sessions ?? 0,
      dials: mesh?.dials.hits ?? 0,
      settingsTimeouts: mesh?.windows.settingsTimeouts ?? 0,
    },
    peerTimeoutMs: settings.peerTimeoutMs,
  };
}
