/**
 * What the control thread (main) and the data-plane workers say to each other
 * (docs/WORKERS.md). Every message is structured-cloned by postMessage: plain
 * data only (Maps, bigints and arrays are fine; class instances are not).
 *
 *   main -> worker: the model (snapshot: services, pods, policies), the node's
 *   enrolled pods, listening sockets to serve (a dup of each fd: the worker's
 *   copy dies with it, main's keeps the socket listening), certificates on
 *   request, and commands (close, stats, heap, log level).
 *
 *   worker -> main: batched events (connection opened / ended, counters, log
 *   lines) at most once per event-loop turn, requests for certificates, and
 *   replies. Main owns the Prometheus registry, the access log and config_dump:
 *   metrics and admin never run on a data-plane thread.
 */
import type { MeshSnapshot, PodInfo } from '../discovery/model.js';
import type { Outcome } from '../proxy/outcome.js';
import type { TrackedConnection } from '../proxy/connections.js';
import type { Limits } from '../proxy/limits.js';
import type { LivenessParams } from '../proxy/liveness.js';
import type { Level } from '../util/log.js';

export type ListenerRole = 'outbound' | 'inbound' | 'hbone';

/** An enrolled pod as the data plane needs it (MeshPod, cloneable). */
export interface PodWire {
  key: string;
  info: PodInfo;
  identity: string;
  cgroupId: bigint | null;
  clientAddress: boolean;
}

/** The cloneable copy of an enrolled pod (a PodCapture is a MeshPod with a lot more on it). */
export function podWire(p: Pick<PodWire, 'key' | 'info' | 'identity' | 'cgroupId'> & { clientAddress?: boolean }): PodWire {
  return { key: p.key, info: p.info, identity: p.identity, cgroupId: p.cgroupId, clientAddress: !!p.clientAddress };
}

/** A certificate handed to a worker (WorkloadCert's fields; the key is sent explicitly, it is not enumerable there). */
export interface CertWire {
  id: string;
  keyPem: string;
  chainPem: string;
  rootPem: string;
  notAfter: string;
}

/** What a worker starts with (workerData). */
export interface WorkerInit {
  index: number;
  workers: number;
  mark: number;
  /** the return path's mark when apps see their clients' addresses; null: the pod's own address */
  clientAddressMark: number | null;
  ports: { outbound: number; inbound: number; hbone: number };
  nodePorts: number[];
  trustDomain: string;
  rootNamespace: string;
  /** this worker's share of the node's limits (splitLimits) */
  limits: Limits;
  liveness: LivenessParams;
  logLevel: Level;
  /** the amb_orig_dst map (fds are process-wide: the worker reads it directly) */
  origDstMapFd: number | null;
  /** the native addon's path (default: build/Release) */
  nativePath?: string;
}

/** The data plane's figures (config_dump, resources, the drain's wait). */
export interface WorkerStats {
  server: { connections: Record<string, number>; streams: Record<string, number>; rejections: Record<string, number> };
  pools: Record<string, Record<string, unknown>>;
  sockets: { source: number; destination: number };
  windows: { window: number; openStreams: number; changes: number; settingsTimeouts: number };
  dials: { inUse: number; hits: number };
}

export type ToWorker =
  | { t: 'model'; snapshot: MeshSnapshot }
  | { t: 'pods'; pods: PodWire[] }
  | { t: 'listen'; id: number; fd: number; role: ListenerRole; pod: PodWire; ip: string; port: number }
  | { t: 'unlisten'; id: number }
  | { t: 'release'; key: string }
  | { t: 'cert'; req: number; cert?: CertWire; error?: { code: string; message: string } }
  | { t: 'certDrop'; id: string }
  | { t: 'logLevel'; level: Level }
  | { t: 'call'; req: number; op: 'stats' | 'heap' }
  | { t: 'call'; req: number; op: 'close'; force: boolean }
  | { t: 'call'; req: number; op: 'hboneClose'; graceMs: number };

/** A connection event: 'open' carries the record, 'end' how it ended. */
export type WorkerEvent =
  | { k: 'open'; rec: TrackedConnection }
  | { k: 'end'; id: number; outcome: Outcome; sent: number; received: number }
  | { k: 'count'; reason: string; n: number }
  | { k: 'log'; line: string };

export type FromWorker =
  | { t: 'ready' }
  | { t: 'batch'; events: WorkerEvent[]; sockets: { source: number; destination: number } }
  | { t: 'certReq'; req: number; id: string }
  | { t: 'listening'; id: number; error?: string }
  | { t: 'reply'; req: number; value?: unknown; error?: string };

/**
 * One worker's share of the node-wide limits: the memory and concurrency caps
 * are split (rounded up, never below a floor), so N workers together hold
 * what one agent would. Per-stream and per-session figures stay as they are.
 */
export function splitLimits(l: Limits, workers: number): Limits {
  if (workers <= 1) return { ...l };
  const share = (v: number, floor: number): number => Math.max(floor, Math.ceil(v / workers));
  return {
    ...l,
    receiveBuffer: share(l.receiveBuffer, l.minStreamWindow),
    maxSessionsPerPeer: share(l.maxSessionsPerPeer, 1),
    maxHandshakes: share(l.maxHandshakes, 1),
    maxPendingDials: share(l.maxPendingDials, 1),
  };
}

/** Sums the numeric leaves of b into a (nested records: HBONE server and pool stats). */
export function addStats(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  for (const [k, v] of Object.entries(b)) {
    if (typeof v === 'number') a[k] = ((a[k] as number | undefined) ?? 0) + v;
    else if (v && typeof v === 'object' && !Array.isArray(v))
      a[k] = addStats((a[k] as Record<string, unknown> | undefined) ?? {}, v as Record<string, unknown>);
    else if (!(k in a)) a[k] = v;
  }
  return a;
}
