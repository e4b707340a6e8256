/**
 * The control thread's side of the data-plane workers (docs/WORKERS.md).
 *
 * - Spawns `count` worker threads (src/workers/worker.ts) and replaces one
 *   that dies: its connections are lost (counted, their records end as reset
 *   by the agent), its listening sockets are not — the control thread keeps
 *   the original fd of every socket it hands a worker (the worker serves a
 *   dup), so the pod stays captured and what queues meanwhile is served by
 *   the replacement.
 * - Pushes the model, the node's enrolled pods and certificates to them.
 * - Replays their batched connection events into the agent's tracker, so the
 *   metrics, the access log, config_dump and the hand-over's record forwarding
 *   see every connection of every worker, exactly once.
 * - Is the data plane as the rest of the agent sees it (DataPlaneView): the
 *   figures are the sum over workers, refreshed on each batch and on demand.
 */
import { Worker } from 'node:worker_threads';
import type { MeshSnapshot } from '../discovery/model.js';
import type { NativeAddon } from '../datapath/native-api.js';
import type { AgentSocketOptions } from '../datapath/sockets.js';
import type { IdentityManager } from '../identity/manager.js';
import type { ConnectionTracker, TrackedConnection } from '../proxy/connections.js';
import type { MeshProxy } from '../proxy/mesh.js';
import type { HboneServer } from '../proxy/hbone/server.js';
import { errorMessage } from '../util/errors.js';
import type { Level, Logger } from '../util/log.js';
import { addStats, type FromWorker, type ListenerRole, type PodWire, type ToWorker, type WorkerInit, type WorkerStats } from './protocol.js';

/** What the agent reads of its data plane (MeshProxy inline, WorkerPool with workers). */
export interface DataPlaneView {
  stats(): ReturnType<MeshProxy['stats']>;
  openSockets(): { source: number; destination: number };
  readonly windows: { window: number; openStreams: number; changes: number; settingsTimeouts: number };
  readonly dials: { inUse: number; hits: number };
  readonly hbone: { stats(): ReturnType<HboneServer['stats']>; close(o: { graceMs: number }): Promise<void> };
  close(o?: { force?: boolean }): Promise<void>;
  socketOptions(kind: 'app' | 'remote' | 'hbone'): AgentSocketOptions;
}

export interface WorkerPoolDeps {
  count: number;
  /** everything a worker starts with but its index and the pool size */
  init: Omit<WorkerInit, 'index' | 'workers'>;
  native: NativeAddon;
  log: Logger;
  tracker: ConnectionTracker;
  identities(): IdentityManager | null;
  countEvent(reason: string, n: number): void;
  socketOptions(kind: 'app' | 'remote' | 'hbone'): AgentSocketOptions;
  /** a worker was replaced (metrics) */
  onRestart?(index: number): void;
  /** how often every worker is asked for its figures, which is also the liveness check (default 1000 ms) */
  refreshMs?: number;
  /** a worker that has not answered for this long is stuck: it is ended and replaced (default 10 000 ms) */
  stuckMs?: number;
  /** the worker script (tests); default ./worker.js */
  script?: URL;
}

interface Slot {
  index: number;
  worker: Worker | null;
  ready: Promise<void> | null;
  /** records of its open connections by the worker's id -> the agent's record */
  recs: Map<number, TrackedConnection>;
  stats: WorkerStats | null;
  /** connections it has opened since the agent started (all its lives) */
  served: number;
  restarts: number;
  startedAt: number;
  /** when it last answered (a reply or a batch): the watchdog's clock */
  lastHeard: number;
  /** listeners it serves: group id -> its dup'ed fd's listen message (re-sent to a replacement) */
  listening: Map<number, Extract<ToWorker, { t: 'listen' }>>;
  calls: Map<number, { resolve(v: unknown): void; reject(e: Error): void }>;
}

/** A listening socket group of one pod and role, as the workers serve it. */
export interface ServedGroup {
  readonly fds: readonly number[];
  close(): void;
}

/** A command to a worker, without its envelope. */
type CallOp = { op: 'stats' | 'heap' } | { op: 'close'; force: boolean } | { op: 'hboneClose'; graceMs: number };

/**
 * A worker's young generation (V8 new space and its large-object space), in
 * MiB: 24 keeps new space at 16 MiB where V8's default lets it grow to 32 MiB
 * per isolate under a proxy's allocation rate (measured: docs/WORKERS.md).
 * Each worker is an isolate of its own: this is per worker.
 */
export const WORKER_YOUNG_GENERATION_MB = 12;

const EMPTY_STATS: WorkerStats = {
  server: { connections: {}, streams: {}, rejections: {} },
  pools: {},
  sockets: { source: 0, destination: 0 },
  windows: { window: 0, openStreams: 0, changes: 0, settingsTimeouts: 0 },
  dials: { inUse: 0, hits: 0 },
};

export class WorkerPool implements DataPlaneView {
  private readonly slots: Slot[] = [];
  private snapshot: MeshSnapshot | null = null;
  private pods: PodWire[] = [];
  private nextId = 1;
  private nextReq = 1;
  private stopping = false;
  private refreshTimer: NodeJS.Timeout | null = null;
  private lastRefresh = 0;

  constructor(private readonly d: WorkerPoolDeps) {
    for (let i = 0; i < d.count; i++)
      this.slots.push({
        index: i,
        worker: null,
        ready: null,
        recs: new Map(),
        stats: null,
        served: 0,
        restarts: 0,
        startedAt: 0,
        lastHeard: 0,
        listening: new Map(),
        calls: new Map(),
      });
  }

  get size(): number {
    return this.slots.length;
  }

  /** Starts every worker; resolves when all are ready. */
  async start(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.spawn(s)));
    this.refreshTimer = setInterval(() => {
      this.watchdog();
      void this.refresh().catch(() => undefined);
    }, this.d.refreshMs ?? 1000);
    this.refreshTimer.unref();
  }

  /**
   * A worker that answers nothing (a busy loop, a deadlock in a native call)
   * holds its share of every listener's connections without serving them:
   * past stuckMs it is ended like a dead one and replaced.
   */
  private watchdog(): void {
    const stuckMs = this.d.stuckMs ?? 10_000;
    for (const s of this.slots) {
      if (!s.worker || Date.now() - s.lastHeard < stuckMs) continue;
      this.d.countEvent('worker_stuck', 1);
      this.d.log.error('data-plane worker stuck: ending and replacing it', { worker: s.index, silentMs: Date.now() - s.lastHeard });
      void s.worker.terminate();
      s.lastHeard = Date.now(); // once per episode: onExit replaces it
    }
  }

  private spawn(s: Slot): Promise<void> {
    const init: WorkerInit = { ...this.d.init, index: s.index, workers: this.slots.length };
    const w = new Worker(this.d.script ?? new URL('./worker.js', import.meta.url), {
      workerData: init,
      name: `ambientd-worker-${s.index}`,
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
    });
    s.worker = w;
    s.startedAt = Date.now();
    s.lastHeard = Date.now();
    s.stats = null;
    this.summed = null;
    s.ready = new Promise<void>((resolve, reject) => {
      const onExit = (code: number): void => reject(new Error(`worker ${s.index} exited with code ${code} before it was ready`));
      w.once('exit', onExit);
      w.on('message', (m: FromWorker) => {
        if (m.t !== 'ready') return this.onMessage(s, m);
        w.off('exit', onExit);
        w.on('exit', (code) => this.onExit(s, w, code));
        // what a worker needs before it serves anything: the model and the pods
        if (this.snapshot) this.send(s, { t: 'model', snapshot: this.snapshot });
        this.send(s, { t: 'pods', pods: this.pods });
        this.send(s, { t: 'logLevel', level: this.d.log.getLevel() });
        resolve();
      });
    });
    w.on('error', (e) => {
      this.d.countEvent('worker_error', 1);
      this.d.log.error('data-plane worker failed', { worker: s.index, error: errorMessage(e), hint: 'a bug: the worker is replaced; report the stack' });
    });
    return s.ready;
  }

  private send(s: Slot, m: ToWorker): void {
    s.worker?.postMessage(m);
  }

  private broadcast(m: ToWorker): void {
    for (const s of this.slots) this.send(s, m);
  }

  private onExit(s: Slot, w: Worker, code: number): void {
    if (s.worker !== w) return;
    s.worker = null;
    for (const c of s.calls.values()) c.reject(new Error(`worker ${s.index} exited`));
    s.calls.clear();
    // its connections went with it: their records end here, counted
    const lost = s.recs.size;
    for (const rec of s.recs.values()) this.d.tracker.finish(rec, { kind: 'reset', by: 'server' });
    s.recs.clear();
    if (this.stopping) return;
    this.d.countEvent('worker_died', 1);
    if (lost) this.d.countEvent('worker_connections_lost', lost);
    this.d.log.error('data-plane worker died: replacing it (its listening sockets were kept)', { worker: s.index, code, connectionsLost: lost });
    s.restarts++;
    this.d.onRestart?.(s.index);
    // a worker that dies at once again is not restarted in a tight loop
    const delay = Date.now() - s.startedAt < 1000 ? 500 : 0;
    setTimeout(() => {
      if (this.stopping) return;
      this.spawn(s).then(
        () => {
          // its share of every listener again, from a new dup of the kept fd
          const again = [...s.listening.values()];
          s.listening.clear();
          for (const m of again) void this.listenOn(s, m.id, m.fd, m.role, m.pod, m.ip, m.port).catch(() => undefined);
        },
        (e: unknown) => this.d.log.error('data-plane worker could not be replaced', { worker: s.index, error: errorMessage(e) }),
      );
    }, delay).unref();
  }

  private onMessage(s: Slot, m: FromWorker): void {
    s.lastHeard = Date.now();
    switch (m.t) {
      case 'batch': {
        const t = this.d.tracker;
        for (const e of m.events) {
          switch (e.k) {
            case 'open':
              s.served++;
              s.recs.set(e.rec.id, t.mirror(e.rec));
              break;
            case 'end': {
              const rec = s.recs.get(e.id);
              if (!rec) break;
              s.recs.delete(e.id);
              t.finish(rec, e.outcome, { sent: e.sent, received: e.received });
              break;
            }
            case 'count':
              this.d.countEvent(e.reason, e.n);
              break;
            case 'log':
              this.d.log.write(e.line);
              break;
          }
        }
        if (s.stats) {
          s.stats.sockets = m.sockets;
          this.summed = null;
        }
        return;
      }
      case 'certReq': {
        const ids = this.d.identities();
        if (!ids) {
          this.send(s, { t: 'cert', req: m.req, error: { code: 'WORKER_UNAVAILABLE', message: 'the agent has no identities yet' } });
          return;
        }
        ids.get(m.id).then(
          (c) =>
            this.send(s, {
              t: 'cert',
              req: m.req,
              cert: { id: c.id, keyPem: c.keyPem, chainPem: c.chainPem, rootPem: c.rootPem, notAfter: c.notAfter.toISOString() },
            }),
          (e: unknown) =>
            this.send(s, {
              t: 'cert',
              req: m.req,
              error: { code: (e as { code?: string })?.code ?? 'IDENTITY', message: errorMessage(e) },
            }),
        );
        return;
      }
      case 'listening': {
        if (m.error === undefined) return;
        // its socket of the group would hold connections nobody accepts: the worker is replaced,
        // and the replacement serves a new dup of every socket
        const l = s.listening.get(m.id);
        this.d.countEvent('worker_listen_failed', 1);
        this.d.log.error('a data-plane worker could not serve a listening socket: replacing it', {
          worker: s.index,
          pod: l?.pod.key,
          role: l?.role,
          error: m.error,
        });
        void s.worker?.terminate();
        return;
      }
      case 'reply': {
        const c = s.calls.get(m.req);
        if (!c) return;
        s.calls.delete(m.req);
        if (m.error !== undefined) c.reject(new Error(m.error));
        else c.resolve(m.value);
        return;
      }
      case 'ready':
        return;
    }
  }

  private call<T>(s: Slot, m: CallOp, timeoutMs = 5000): Promise<T> {
    if (!s.worker) return Promise.reject(new Error(`worker ${s.index} is not running`));
    const req = this.nextReq++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        s.calls.delete(req);
        reject(new Error(`worker ${s.index} did not answer ${m.op} in ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      s.calls.set(req, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.send(s, { t: 'call', req, ...m } as ToWorker);
    });
  }

  /** The model changed: every worker gets it (and re-checks its live connections against it). */
  model(s: MeshSnapshot): void {
    this.snapshot = s;
    this.broadcast({ t: 'model', snapshot: s });
  }

  /** The node's enrolled pods (localPodByIp of every worker). */
  setPods(pods: PodWire[]): void {
    this.pods = pods;
    this.broadcast({ t: 'pods', pods });
  }

  /** A pod left: its HBONE pool goes in every worker. */
  releasePod(key: string): void {
    this.broadcast({ t: 'release', key });
  }

  /** The identity's certificate changed or was dropped: workers ask again. */
  dropCertificate(id: string): void {
    this.broadcast({ t: 'certDrop', id });
  }

  setLogLevel(level: Level): void {
    this.broadcast({ t: 'logLevel', level });
  }

  /**
   * Serves a pod's listening sockets of one role (one SO_REUSEPORT group):
   * socket j goes to worker j mod N, as a dup; the control thread keeps the
   * originals (hand-over, a worker's replacement) until close().
   */
  async serve(fds: readonly number[], role: ListenerRole, pod: PodWire, ip: string, port: number): Promise<ServedGroup> {
    const ids: Array<{ slot: Slot; id: number }> = [];
    const n = this.slots.length;
    const count = Math.max(fds.length, n);
    const closeAll = (): void => {
      for (const { slot, id } of ids) {
        slot.listening.delete(id);
        this.send(slot, { t: 'unlisten', id });
      }
      ids.length = 0;
      for (const fd of fds) this.d.native.closeFd(fd);
    };
    try {
      for (let j = 0; j < count; j++) {
        const fd = fds[j % fds.length]!;
        const slot = this.slots[j % n]!;
        const id = this.nextId++;
        ids.push({ slot, id });
        await this.listenOn(slot, id, fd, role, pod, ip, port);
      }
    } catch (e) {
      closeAll();
      throw e;
    }
    let closed = false;
    return {
      fds,
      close: () => {
        if (closed) return;
        closed = true;
        closeAll();
      },
    };
  }

  private async listenOn(slot: Slot, id: number, fd: number, role: ListenerRole, pod: PodWire, ip: string, port: number): Promise<void> {
    await slot.ready;
    const dup = this.d.native.dupFd(fd);
    if (dup < 0) throw new Error(`dup of listener fd ${fd}: errno ${-dup}`);
    const m: Extract<ToWorker, { t: 'listen' }> = { t: 'listen', id, fd: dup, role, pod, ip, port };
    // kept with the original fd: a replacement worker gets a fresh dup of it
    slot.listening.set(id, { ...m, fd });
    if (!slot.worker) {
      this.d.native.closeFd(dup);
      return;
    }
    this.send(slot, m);
  }

  /** Fresh figures from every worker (config_dump, scrapes); a worker that does not answer keeps its last ones. */
  async refresh(): Promise<void> {
    this.lastRefresh = Date.now();
    await Promise.all(
      this.slots.map((s) =>
        this.call<WorkerStats>(s, { op: 'stats' }, 2000).then(
          (v) => {
            s.stats = v;
            this.summed = null;
          },
          () => undefined,
        ),
      ),
    );
  }

  private maybeRefresh(): void {
    if (Date.now() - this.lastRefresh > 100) void this.refresh().catch(() => undefined);
  }

  /**
   * The figures summed over workers, kept until a worker's figures change: one
   * resources() reads a dozen of them (config_dump, every scrape).
   */
  private summed: WorkerStats | null = null;
  private sum(): WorkerStats {
    if (this.summed) return this.summed;
    const total = structuredClone(EMPTY_STATS) as unknown as Record<string, unknown>;
    const pools: Record<string, Record<string, unknown>> = {};
    for (const s of this.slots) {
      if (!s.stats) continue;
      const { pools: p, ...rest } = s.stats;
      addStats(total, rest as unknown as Record<string, unknown>);
      for (const [k, v] of Object.entries(p)) pools[k] = addStats(pools[k] ?? {}, v);
    }
    const out = total as unknown as WorkerStats;
    out.pools = pools;
    // a peak is not a sum: the highest of any worker
    const peaks = this.slots.map((s) => s.stats?.server.streams.perSessionPeak).filter((x): x is number => typeof x === 'number');
    if (peaks.length) out.server.streams.perSessionPeak = Math.max(...peaks);
    // the window is per stream: the smallest any worker grants
    const windows = this.slots.map((s) => s.stats?.windows.window).filter((w): w is number => typeof w === 'number');
    out.windows.window = windows.length ? Math.min(...windows) : 0;
    this.summed = out;
    return out;
  }

  stats(): ReturnType<MeshProxy['stats']> {
    this.maybeRefresh();
    const s = this.sum();
    return { server: s.server, pools: s.pools } as unknown as ReturnType<MeshProxy['stats']>;
  }

  openSockets(): { source: number; destination: number } {
    return this.sum().sockets;
  }

  get windows(): WorkerStats['windows'] {
    return this.sum().windows;
  }

  get dials(): WorkerStats['dials'] {
    return this.sum().dials;
  }

  readonly hbone = {
    stats: (): ReturnType<HboneServer['stats']> => {
      this.maybeRefresh();
      return this.sum().server as unknown as ReturnType<HboneServer['stats']>;
    },
    close: async (o: { graceMs: number }): Promise<void> => {
      await Promise.all(this.slots.map((s) => this.call(s, { op: 'hboneClose', graceMs: o.graceMs }, o.graceMs + 5000).catch(() => undefined)));
    },
  };

  socketOptions(kind: 'app' | 'remote' | 'hbone'): AgentSocketOptions {
    return this.d.socketOptions(kind);
  }

  /** Graceful by default; `force` resets every connection of every worker now. */
  async close(o: { force?: boolean } = {}): Promise<void> {
    await Promise.all(this.slots.map((s) => this.call(s, { op: 'close', force: !!o.force }, 5000).catch(() => undefined)));
  }

  /** Each worker's live heap after a full GC in it (POST /debug/heap). */
  async heap(): Promise<Array<{ worker: number; heapUsed: number; external: number } | null>> {
    return Promise.all(
      this.slots.map((s) =>
        this.call<{ heapUsed: number; external: number }>(s, { op: 'heap' }, 10_000).then(
          (h) => ({ worker: s.index, ...h }),
          () => null,
        ),
      ),
    );
  }

  /** config_dump's `workers`. */
  info(): Array<{ index: number; threadId: number | null; running: boolean; served: number; open: number; restarts: number; listeners: number }> {
    return this.slots.map((s) => ({
      index: s.index,
      threadId: s.worker?.threadId ?? null,
      running: s.worker !== null,
      served: s.served,
      open: s.recs.size,
      restarts: s.restarts,
      listeners: s.listening.size,
    }));
  }

  /** Ends a worker thread as a crash would (POST /workers/kill; tests): it is replaced. */
  kill(index: number): boolean {
    const s = this.slots[index];
    if (!s?.worker) return false;
    void s.worker.terminate();
    return true;
  }

  /** Stops every worker (the agent stops): their connections end with them. */
  async terminate(): Promise<void> {
    this.stopping = true;
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    await Promise.all(this.slots.map((s) => s.worker?.terminate().catch(() => undefined)));
  }
}
