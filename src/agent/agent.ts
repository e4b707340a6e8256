// Over 500 lines on purpose: the composition root wires every part in one place (start, snapshot, drain and stop order); each part's logic lives in its own module.
/**
 * The composition root: config -> datapath -> workload source -> pod captures
 * -> proxy -> admin. It only wires: what each part does is in its own module
 * (reconciler, pod-capture/captures, snapshots, handover, drain, prefetch,
 * status, config-dump; policy in src/policy/active.ts). Everything it uses
 * from outside comes in through AgentInputs, so a test can build it with
 * fakes.
 */
import fs from 'node:fs';
import path from 'node:path';
import type http from 'node:http';
import type { AgentConfig } from '../config/config.js';
import { Datapath, type DatapathOptions } from '../datapath/datapath.js';
import { loadNative } from '../datapath/native.js';
import type { NativeAddon } from '../datapath/native-api.js';
import { WorkloadFileSource } from '../discovery/workloads.js';
import { emptySnapshot, MeshIndex, podSpiffeId, type MeshSnapshot } from '../discovery/model.js';
import type { WorkloadSource } from '../discovery/source.js';
import type { IdentityManager } from '../identity/manager.js';
import { openIdentities, waitForCertificates } from './identities.js';
import { createAdminServer } from '../admin/server.js';
import { attachAccessLog } from '../admin/access-log.js';
import { AgentMetrics } from '../metrics/metrics.js';
import { recordContext } from '../metrics/record-view.js';
import { createMetricsServer, createReadinessServer, type Readiness } from '../metrics/server.js';
import { ActivePolicies } from '../policy/active.js';
import { ConnectionTracker } from '../proxy/connections.js';
import { livenessParams } from '../proxy/liveness.js';
import { agentSocketOptions, MeshProxy } from '../proxy/mesh.js';
import { WorkerPool, type DataPlaneView } from '../workers/pool.js';
import { autoWorkers, hostCpuFacts } from '../workers/cpus.js';
import { podWire, splitLimits, type PodWire } from '../workers/protocol.js';
import { errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { CaptureSet } from './captures.js';
import { buildConfigDump, type ConfigDump } from './config-dump.js';
import { drainAgent, realClock, type Clock } from './drain.js';
import { Handover } from './handover.js';
import { IdentityLeases } from './identity-lease.js';
import { Listeners } from './listeners.js';
import { AgentLifecycle, type AgentPhase } from './phase.js';
import { openPodNetns, type NetnsRef, type ReturnPathOps } from './pod-capture.js';
import { disableReturnPath, enableReturnPath, RETURN_MARK } from '../datapath/return-path.js';
import { CertificatePrefetch } from './prefetch.js';
import { watchRefusals } from './refusals.js';
import { SnapshotQueue } from './snapshots.js';
import { localPodStates, readiness, resources, type LocalPodState, type Resources } from './status.js';

/** What the agent is built from; all but config and log have a default. */
export interface AgentInputs {
  config: AgentConfig;
  log: Logger;
  /** the native addon (default: build/Release/ambient_native.node) */
  native?: NativeAddon;
  /** where the mesh model comes from (default: from config.source; the Kubernetes client loads only then) */
  source?: WorkloadSource;
  /** loads the datapath (default Datapath.open) */
  openDatapath?: (opts: DatapathOptions, log: Logger, native: NativeAddon) => Datapath;
  /** opens a pod's netns (default: a NetnsHandle) */
  openNetns?: (path: string, owner: string) => NetnsRef;
  /** time and waits (default: the real ones) */
  clock?: Clock;
}

/** What to change when a limit is hit (logged once with it). */
const LIMIT_HINTS: Record<string, string> = {
  limit_dials: 'too many connections being opened at once: raise limits.maxPendingDials, or look for a destination that stopped answering SYNs',
};

export class Agent {
  readonly tracker = new ConnectionTracker();
  readonly metrics: AgentMetrics;
  /** counters of bad input and failures, by reason (config_dump; ambientd_agent_events_total) */
  readonly counters = new Map<string, number>();
  /** the phase, its transitions, and 'drained' (the process may exit now) */
  readonly lifecycle = new AgentLifecycle();
  readonly cfg: AgentConfig;
  private readonly log: Logger;
  private readonly native: NativeAddon;
  private readonly clock: Clock;
  private source: WorkloadSource | null;
  private datapath: Datapath | null = null;
  private identities: IdentityManager | null = null;
  /** true once a certificate could be had (at once with the built-in CA) */
  private certificatesReady = false;
  /** the data plane on this thread (workers: 0) */
  private mesh: MeshProxy | null = null;
  /** the data-plane worker threads (workers >= 1) */
  private pool: WorkerPool | null = null;
  /** whichever of the two carries the traffic */
  private plane: DataPlaneView | null = null;
  /** how many workers (resolved at start from `workers`) and why */
  private workerCount: { workers: number; from: 'setting' | 'cgroup' | 'cpus' } | null = null;
  private captures: CaptureSet | null = null;
  private admin: http.Server | null = null;
  private metricsServer: http.Server | null = null;
  private readyServer: http.Server | null = null;
  private snapshot: MeshSnapshot = emptySnapshot();
  private index: MeshIndex = new MeshIndex(this.snapshot);
  private readonly policies: ActivePolicies;
  private readonly leases: IdentityLeases;
  private readonly prefetch: CertificatePrefetch;
  private readonly snapshots: SnapshotQueue;
  private readonly handover: Handover;
  private readonly listeners: Listeners;
  /** RLIMIT_NOFILE soft limit after raising it (-1: unlimited) */
  private fdLimit: number | null = null;
  private stopRefusalWatch: (() => void) | null = null;
  /** drain() and stop() run once: later calls get the same promise */
  private drainRun: Promise<void> | null = null;
  private stopRun: Promise<void> | null = null;

  constructor(private readonly inputs: AgentInputs) {
    const cfg = inputs.config;
    const log = inputs.log;
    this.cfg = cfg;
    this.log = log;
    this.native = inputs.native ?? loadNative();
    this.clock = inputs.clock ?? realClock;
    this.source =
      inputs.source ??
      (cfg.source === 'file'
        ? (new WorkloadFileSource(cfg.workloads!, cfg.cgroupRoot) as unknown as WorkloadSource) // conforms once s-disc lands
        : null);
    this.policies = new ActivePolicies({ trustDomain: cfg.trustDomain, rootNamespace: cfg.rootNamespace });
    this.leases = new IdentityLeases((id) => {
      this.identities?.forget(id);
      this.pool?.dropCertificate(id);
    });
    this.prefetch = new CertificatePrefetch({ identities: () => this.identities, wanted: (id) => this.leases.held(id), active: () => !this.lifecycle.stopped });
    this.lifecycle.on('phase', (to, from) => log.debug('agent phase', { from, to }));
    this.snapshots = new SnapshotQueue({
      lifecycle: this.lifecycle,
      applyModel: (s) => this.applyModel(s),
      reconcile: async (s) => {
        const plan = await this.captures?.reconcile(s);
        this.pushPods();
        return plan;
      },
      onError: (e) => {
        this.count('reconcile_failed');
        log.error('reconcile failed (retrying on the next change)', { error: errorMessage(e) });
      },
    });
    this.handover = new Handover({
      socket: cfg.handoverSocket,
      node: cfg.node,
      adoptTimeoutMs: cfg.handoverTimeoutMs,
      native: this.native,
      log,
      lifecycle: this.lifecycle,
      count: (r) => this.count(r),
      settle: () => this.settle(),
      listeners: () => [
        ...(this.captures?.handoverEntries() ?? []),
        ...Listeners.nodeEntries([
          ['readiness', this.readyServer],
          ['metrics', this.metricsServer],
          ['admin', this.admin],
        ]),
      ],
      resume: () => this.snapshots.resume(this.snapshot),
      drain: (reason) => {
        void this.drain(reason);
      },
      onRecord: (rec) => this.metrics.onClose(rec),
    });
    this.listeners = new Listeners({
      native: this.native,
      mark: cfg.mark,
      handover: this.handover,
      log,
      socketOptions: (kind) => this.plane!.socketOptions(kind),
      workers: () => this.pool,
      count: (r) => this.count(r),
      fds: () => ({ fds: this.resources().fds, fdLimit: this.fdLimit }),
    });
    this.metrics = new AgentMetrics({
      index: () => this.index,
      spiffeOf: (p) => podSpiffeId(p, cfg.trustDomain),
      pods: () => this.localPodStates(),
      certificates: () => (this.identities?.list() ?? []).map((c) => ({ id: c.id, notAfter: c.notAfter })),
      podStats: () => {
        const dp = this.datapath;
        if (!dp || !this.captures) return [];
        const out: Array<{ namespace: string; name: string; stats: Record<string, bigint> }> = [];
        for (const c of this.captures.values()) {
          if (c.cgroupId === null) continue;
          try {
            const st = dp.podStats(c.cgroupId);
            if (st) out.push({ namespace: c.pod.namespace, name: c.pod.name, stats: { ...st } });
          } catch {
            /* a map read failing must not fail the scrape */
          }
        }
        return out;
      },
      datapathCounters: () => {
        try {
          return this.datapath?.counters() ?? null;
        } catch {
          return null;
        }
      },
      resources: () => this.resources(),
      workers: () => this.pool?.info() ?? [],
    });
    this.metrics.observe(this.tracker);
    // access log: one JSON line per closed connection (this.tracker 'close')
    // the same context the metric labels are derived with (src/metrics/record-view.ts)
    attachAccessLog(
      this.tracker,
      log.child('access'),
      cfg.accessLog ?? 'info',
      recordContext(
        () => this.index,
        (p) => podSpiffeId(p, cfg.trustDomain),
      ),
    );
  }

  get phase(): AgentPhase {
    return this.lifecycle.phase;
  }

  count(reason: string, n = 1): void {
    this.counters.set(reason, (this.counters.get(reason) ?? 0) + n);
    this.metrics.countEvent(reason, n);
  }

  /**
   * How pods get a return path (client-address preservation), or null when
   * apps see the pod's own address: `clientAddress: pod`, or a kernel without
   * the loopback-aware sk_lookup program (Linux < 5.17), or a mark clash.
   */
  private clientAddressPath(dp: Datapath): ReturnPathOps | null {
    const { cfg, log } = this;
    if (cfg.clientAddress !== 'preserve') return null;
    if (!dp.clientAddressCapable) {
      log.warn("client addresses are not preserved: apps see the pod's own address", {
        hint: 'this kernel refused the loopback-aware sk_lookup program (bpf_sk_lookup.ingress_ifindex, Linux 5.17); set clientAddress: pod to silence this',
      });
      return null;
    }
    if (cfg.mark === RETURN_MARK) {
      log.warn("client addresses are not preserved: apps see the pod's own address", {
        hint: `mark ${cfg.mark.toString(16)} is the return path's mark (0x${RETURN_MARK.toString(16)}); choose another agent mark`,
      });
      return null;
    }
    const native = this.native;
    return {
      mark: RETURN_MARK,
      enable: (netns, families) => enableReturnPath(native, netns, families),
      disable: (netns, families) => disableReturnPath(native, netns, families),
    };
  }

  /** `workers` resolved: the setting, or auto (CPU-aware). */
  private resolveWorkers(): { workers: number; from: 'setting' | 'cgroup' | 'cpus' } {
    const w = this.cfg.workers;
    this.workerCount = w === 'auto' ? autoWorkers(hostCpuFacts(), this.cfg.cgroupRoot) : { workers: w, from: 'setting' };
    return this.workerCount;
  }

  /** The node's enrolled pods, to every worker (their localPodByIp; return paths set since the listeners were made). */
  private pushPods(): void {
    if (!this.pool || !this.captures) return;
    const pods: PodWire[] = [];
    for (const c of this.captures.values()) if (c.state === 'enrolled') pods.push(podWire(c));
    this.pool.setPods(pods);
  }

  private localPodStates(): LocalPodState[] {
    return localPodStates(this.snapshot, this.cfg.node, (k) => this.captures?.get(k));
  }

  async start(): Promise<void> {
    const cfg = this.cfg;
    const log = this.log;
    // as ztunnel: as many fds as the hard limit allows (raising it needs CAP_SYS_RESOURCE)
    const nofile = this.native.raiseFdLimit();
    if (typeof nofile !== 'number') this.fdLimit = nofile.soft;
    const dp = (this.inputs.openDatapath ?? Datapath.open)(
      {
        bpffsDir: cfg.bpffsDir,
        bpfObject: cfg.bpfObject,
        ports: cfg.ports,
        mark: cfg.mark,
        acceleration: cfg.acceleration,
        agentCgroup: cfg.agentCgroup ?? ownCgroup(cfg.cgroupRoot),
      },
      log.child('datapath'),
      this.native,
    );
    this.datapath = dp;
    this.handover.takeOver();
    // right after the datapath (whose kernel-feature errors come first): readiness
    // answers 500 with what is pending while the rest starts
    this.readyServer = createReadinessServer(() => this.readiness(), log);
    await this.listeners.node(this.readyServer, cfg.ports.readiness, cfg.metricsAddress, 'readiness', 'ports.readiness');
    this.metricsServer = createMetricsServer(this.metrics, log);
    await this.listeners.node(this.metricsServer, cfg.ports.metrics, cfg.metricsAddress, 'metrics', 'ports.metrics');

    const identities = await openIdentities(cfg, log);
    this.identities = identities;
    // a worker asks again for a certificate that changed or went
    identities.on('issued', (ev: { id: string }) => this.pool?.dropCertificate(ev.id));
    identities.on('expired', (ev: { id: string }) => this.pool?.dropCertificate(ev.id));
    identities.on('renewalFailed', (ev) => {
      this.count('certificate_renewal_failed');
      log.warn('certificate renewal failed; keeping the current one', { id: ev.id, error: ev.error });
    });
    identities.on('issueFailed', (ev) => {
      // no certificate: the identity's connections fail closed until a retry succeeds
      this.count('certificate_issue_failed');
      log.once(
        `certificate_issue_failed\0${ev.id}\0${(ev.error as { code?: string }).code ?? ''}`,
        'warn',
        'no certificate for an identity (its connections are refused; retrying)',
        {
          id: ev.id,
          attempt: ev.attempt,
          retryInMs: ev.retryInMs,
          error: ev.error,
        },
      );
    });
    // a drain or stop came while the CA loaded: nothing more is built (stop() closes what is)
    if (!this.lifecycle.is('starting')) return;
    const returnPath = this.clientAddressPath(dp);
    const liveness = livenessParams(cfg.peerTimeoutMs);
    const onLimit = (reason: string, message: string): void =>
      log.once(reason, 'warn', 'a limit was hit: the connection was refused', {
        reason,
        message,
        hint: LIMIT_HINTS[reason] ?? 'raise the limit in "limits:" if this is legitimate load',
      });
    const workers = this.resolveWorkers();
    let mesh: MeshProxy | null = null;
    if (workers.workers === 0) {
      mesh = new MeshProxy({
        native: this.native,
        mark: cfg.mark,
        clientAddress: returnPath ? { mark: returnPath.mark } : null,
        ports: cfg.ports,
        trustDomain: cfg.trustDomain,
        log: log.child('proxy'),
        tracker: this.tracker,
        nodePorts: [cfg.ports.admin, cfg.ports.metrics, cfg.ports.readiness],
        count: (r) => this.count(r),
        identities,
        originalDst: (src) => this.datapath?.originalDst(src) ?? null,
        index: () => this.index,
        authorize: (dst, src) => this.policies.authorize(dst, src),
        localPodByIp: (ip) => this.captures?.localPodByIp(ip) ?? null,
        limits: cfg.limits,
        liveness,
        onLimit,
      });
      this.mesh = mesh;
      this.plane = mesh;
    } else {
      const pool = new WorkerPool({
        count: workers.workers,
        init: {
          mark: cfg.mark,
          clientAddressMark: returnPath ? returnPath.mark : null,
          ports: { outbound: cfg.ports.outbound, inbound: cfg.ports.inbound, hbone: cfg.ports.hbone },
          nodePorts: [cfg.ports.admin, cfg.ports.metrics, cfg.ports.readiness],
          trustDomain: cfg.trustDomain,
          rootNamespace: cfg.rootNamespace,
          limits: splitLimits(cfg.limits, workers.workers),
          liveness,
          logLevel: log.getLevel(),
          origDstMapFd: dp.map('amb_orig_dst'),
        },
        native: this.native,
        log: log.child('workers'),
        tracker: this.tracker,
        identities: () => this.identities,
        countEvent: (r, n) => this.count(r, n),
        socketOptions: (kind) => agentSocketOptions(liveness, cfg.limits, kind),
      });
      this.pool = pool;
      this.plane = pool;
      await pool.start();
      pool.model(this.snapshot);
      log.info('data-plane workers started', { workers: workers.workers, from: workers.from });
    }
    this.captures = new CaptureSet({
      node: cfg.node,
      trustDomain: cfg.trustDomain,
      ports: cfg.ports,
      mark: cfg.mark,
      returnPath,
      nodeIP: cfg.nodeIP,
      datapath: dp,
      native: this.native,
      log,
      openNetns: this.inputs.openNetns ?? openPodNetns,
      listen: (req) => this.listeners.pod(req),
      // with workers these three are never called: the workers serve the listeners
      proxy: {
        outbound: (p, s) => mesh?.onOutbound(p, s),
        inbound: (p, s) => mesh?.onInbound(p, s),
        hbone: (s) => mesh?.hbone.handle(s),
        release: (k) => (mesh ? mesh.releasePod(k) : this.pool?.releasePod(k)),
      },
      leases: this.leases,
      prefetch: (id) => this.prefetch.request(id),
      count: (r, n) => this.count(r, n),
      countEnrollFailure: (code) => this.metrics.countEnrollFailure(code),
      now: () => this.clock.now(),
      retry: () => this.snapshots.schedule(this.snapshot),
      active: () => !this.lifecycle.stopped,
    });

    this.admin = createAdminServer(
      {
        // fresh figures from every worker first
        configDump: async () => {
          await this.pool?.refresh();
          return this.configDump();
        },
        workerHeaps: () => this.pool?.heap() ?? Promise.resolve([]),
        workers: () => this.pool?.info() ?? [],
        killWorker: (i) => this.pool?.kill(i) ?? false,
        logLevel: (level) => this.pool?.setLogLevel(level),
        ready: () => this.readiness(),
        quit: () => {
          void this.stop().then(() => process.exit(0));
        },
      },
      log,
    );
    await this.listeners.node(this.admin, cfg.ports.admin, cfg.adminAddress, 'admin', 'ports.admin');

    const source = this.source ?? (this.source = await kubernetesSource(cfg, log));
    const reported = new Set<string>();
    source.on('update', (s) => {
      for (const e of s.errors) {
        const k = `${e.entry}\0${e.message}`;
        if (reported.has(k)) continue;
        reported.add(k);
        this.count('workload_entry_invalid');
        log.warn('workload entry rejected', { source: cfg.source, entry: e.entry, error: e.message });
      }
      this.snapshots.schedule(s);
    });
    source.on('invalid', (e) => {
      this.count('workload_file_invalid');
      log.error('workload file rejected; keeping the last good state', { error: e.toJSON() });
    });
    source.on('error', (e) => {
      this.count('discovery_error');
      log.warn('discovery error (retrying; last good state kept)', { error: e.message });
    });
    this.stopRefusalWatch = watchRefusals(() => this.datapath?.counters() ?? null, log);
    await source.start();
    // a source may not emit its initial state: it is applied here (never a
    // rejected input's empty one: that would unenroll every pinned pod)
    if (!this.snapshots.scheduled(source.current) && !source.lastError) this.snapshots.schedule(source.current);
    await this.settle();
    // with a cluster CA, ready means certificates can be had (token, bundle, CA all work)
    if (cfg.caAddress !== null && !(await waitForCertificates(identities, cfg, log, () => this.lifecycle.is('starting')))) return;
    this.certificatesReady = true;
    // a drain or stop came first: it takes it from here
    if (!this.lifecycle.is('starting')) return;
    await this.handover.finish();
    if (!this.lifecycle.tryMoveTo('running')) return;
    if (cfg.readyFile) fs.writeFileSync(cfg.readyFile, `${process.pid}\n`);
    log.info('agent ready', { node: cfg.node, enrolled: this.captures.enrolledCount });
  }

  /** Waits until every queued reconcile ran. */
  settle(): Promise<void> {
    return this.snapshots.settle();
  }

  /** The model and the policies of a snapshot; live connections checked again. */
  private applyModel(s: MeshSnapshot): void {
    this.snapshot = s;
    this.index = new MeshIndex(s, this.cfg.trustDomain);
    const u = this.policies.update([...s.policies.values()]);
    if (u) {
      for (const p of u.invalid) {
        this.count('policy_invalid');
        this.log.warn('invalid AuthorizationPolicy (fail-safe applied)', { policy: p.policy, status: p.status, errors: p.errors });
      }
      this.log.info('policies compiled', { policies: u.policies, ms: u.ms });
    }
    // policies, labels or identities may have changed: live connections are checked again
    // with workers, each checks its own on receiving the model (and logs what it closed)
    this.pool?.model(s);
    const closed = this.mesh?.recheck() ?? 0;
    if (closed) this.log.info('policy re-check closed connections', { closed, phase: this.phase });
  }

  readiness(): Readiness {
    return readiness({
      phase: this.phase,
      datapath: this.datapath !== null,
      ca: this.identities !== null && this.certificatesReady,
      adminListening: this.admin?.listening ?? false,
      metricsListening: this.metricsServer?.listening ?? false,
      proxy: this.plane !== null,
      workloadsRejected: !!this.source?.lastError && this.snapshot.pods.size === 0,
      pods: this.localPodStates(),
    });
  }

  configDump(): ConfigDump {
    return buildConfigDump({
      cfg: this.cfg,
      phase: this.phase,
      snapshot: this.snapshot,
      capture: (k) => this.captures?.get(k),
      datapath: this.datapath,
      policies: this.policies,
      tracker: this.tracker,
      identities: this.identities,
      mesh: this.plane,
      workers: this.workerCount ? { ...this.workerCount, threads: this.pool?.info() ?? [] } : null,
      source: this.source,
      counters: this.counters,
      resources: this.resources(),
      handover: this.handover.info,
      readiness: this.readiness(),
    });
  }

  /** What the agent holds now and what bounds it (config_dump "resources", and the metrics). */
  resources(): Resources {
    return resources(this.plane, { limits: this.cfg.limits, peerTimeoutMs: this.cfg.peerTimeoutMs, fdLimit: this.fdLimit });
  }

  /**
   * Graceful end (SIGTERM, or a successor took our sockets): see drain.ts.
   * Then stop(); emits 'drained' on `lifecycle`.
   */
  drain(reason: string): Promise<void> {
    if (this.drainRun) return this.drainRun;
    if (this.lifecycle.stopped) return this.stop();
    this.lifecycle.moveTo('draining');
    this.captures?.cancelRetry();
    const handedOver = this.handover.handedOver && this.cfg.handoverSocket !== null;
    this.drainRun = drainAgent(
      {
        drainTimeoutMs: this.cfg.drainTimeoutMs,
        successor: handedOver ? { socket: this.cfg.handoverSocket!, node: this.cfg.node } : null,
        settle: () => this.settle(),
        stopAccepting: () => {
          this.handover.close();
          this.captures?.closeListeners();
        },
        closeNodeServers: () => {
          // the successor answers on these ports now
          for (const srv of [this.admin, this.metricsServer, this.readyServer]) {
            srv?.close();
            srv?.closeIdleConnections?.();
          }
        },
        tracker: this.tracker,
        mesh: this.plane,
        count: (r) => this.count(r),
        log: this.log,
        clock: this.clock,
        stop: () => this.stop(),
      },
      reason,
    ).then(() => {
      this.lifecycle.emit('drained');
    });
    return this.drainRun;
  }

  /**
   * Stops serving. Redirection stays pinned on purpose: enrolled pods fail
   * closed until an agent comes back (or `ambientd cleanup` removes it).
   */
  stop(): Promise<void> {
    if (this.stopRun) return this.stopRun;
    this.lifecycle.moveTo('stopping');
    this.stopRun = (async () => {
      this.captures?.cancelRetry();
      this.stopRefusalWatch?.();
      this.source?.stop();
      await this.settle();
      this.handover.abort('the new agent stopped');
      this.handover.close();
      this.captures?.closeListeners();
      await this.plane?.close();
      // the workers' connections end with them (a drain waited for them first)
      await this.pool?.terminate();
      this.identities?.close();
      for (const srv of [this.admin, this.metricsServer, this.readyServer]) {
        if (!srv) continue;
        srv.closeAllConnections?.();
        await new Promise<void>((r) => srv.close(() => r()));
      }
      this.captures?.detachAll();
      this.datapath?.close();
      // only our own ready file: after a hand-over it is the successor's
      if (this.cfg.readyFile) {
        try {
          if (fs.readFileSync(this.cfg.readyFile, 'utf8').trim() === String(process.pid)) fs.rmSync(this.cfg.readyFile, { force: true });
        } catch {
          /* absent */
        }
      }
      this.lifecycle.moveTo('stopped');
    })();
    return this.stopRun;
  }
}

/** The Kubernetes source (its client takes ~0.7 s to load: only imported with source: kubernetes). */
async function kubernetesSource(cfg: AgentConfig, log: Logger): Promise<WorkloadSource> {
  const [{ KubernetesSource }, { PodSandboxFinder }] = await Promise.all([import('../discovery/kubernetes.js'), import('../discovery/k8s-sandbox.js')]);
  const finder = new PodSandboxFinder({ cgroupRoot: cfg.cgroupRoot });
  return new KubernetesSource({
    nodeName: cfg.node,
    log: log.child('kubernetes'),
    resolveLocalPod: (pod) => (pod.uid ? finder.find(pod.uid) : null),
  }) as unknown as WorkloadSource; // conforms once s-disc lands
}

/** The agent's own cgroup v2 directory (from /proc/self/cgroup). */
export function ownCgroup(cgroupRoot: string): string | null {
  try {
    const line = fs
      .readFileSync('/proc/self/cgroup', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    if (!line) return null;
    const rel = line.slice(3).trim();
    // never hook the root cgroup: that would see every socket of the machine
    if (rel === '/' || rel === '') return null;
    const p = path.join(cgroupRoot, rel);
    return fs.existsSync(p) ? p : null;
  } catch {
    return null;
  }
}
