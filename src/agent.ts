/**
 * The composition root: config -> datapath -> workload source -> per-pod
 * listeners and redirection -> relay -> admin. Nothing else wires subsystems.
 */
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import type http from 'node:http';
import { EventEmitter } from 'node:events';
import type { AgentConfig } from './config/config.js';
import { Datapath, type Isolation } from './datapath/datapath.js';
import { DATAPATH_COUNTER_CAUSES, type DatapathCounter } from './datapath/codec.js';
import { loadNative, errnoName } from './datapath/native.js';
import type { NativeAddon } from './datapath/native-api.js';
import { handleFd, listenInNetns, serveListeningFd, type PodListener } from './datapath/sockets.js';
import { HandoverServer, RecordForwarder, requestHandover, type HandoverEntry, type Inherited } from './lifecycle/handover.js';
import { isEnrolled, podKey, WorkloadFileSource, type PodInfo, type WorkloadSnapshot } from './discovery/workloads.js';
import { conflictingIps, retryDelayMs, socketsToReset, LIVE_STATES } from './capture/plan.js';
import { livenessParams } from './proxy/liveness.js';
import { verifyAgentPeer } from './lifecycle/peer.js';
import { ConnectionTracker, parseClosedRecord, type ConnectionRecord } from './proxy/connections.js';
import { MeshProxy, type AuthzDecision, type MeshPod } from './proxy/mesh.js';
import { emptySnapshot, MeshIndex, podSpiffeId } from './discovery/model.js';
// the Kubernetes client takes ~0.7 s to load: only imported with source: kubernetes (start())
import type { KubernetesSource } from './discovery/kubernetes.js';
import { PodSandboxFinder } from './discovery/k8s-sandbox.js';
import { compilePolicies, type PolicyIndex } from './policy/engine.js';
import { CertificateAuthority } from './identity/ca.js';
import { IdentityManager } from './identity/manager.js';
import { promisify } from 'node:util';
import { generateKeyPair } from 'node:crypto';

import { createAdminServer } from './admin/server.js';
import { attachAccessLog } from './admin/access-log.js';
import { AgentMetrics } from './metrics/metrics.js';
import { createMetricsServer, createReadinessServer, type Readiness } from './metrics/server.js';
import { AmbientError, errorMessage } from './util/errors.js';
import type { Logger } from './util/log.js';

/** An ECDSA P-256 key pair in PEM (for the X.509 warm-up at start). */
const generateEcKey = (): Promise<{ publicKey: string }> =>
  promisify(generateKeyPair)('ec', { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } }) as Promise<{ publicKey: string; privateKey: string }>;

/**
 * enrolled: captured. isolated: enrollment failed and the pod fails closed
 * (the datapath refuses its TCP; retried with back-off). failed: not even
 * isolation could be put in place (its netns/cgroup are missing: the pod
 * sandbox is gone or its paths are wrong).
 */
export type PodState = 'enrolled' | 'isolated' | 'failed' | 'not-enrolled' | 'remote';

interface LocalPod extends MeshPod {
  state: 'enrolled' | 'isolated' | 'failed';
  error: { code: string; message: string; hint: string } | null;
  listeners: Array<PodListener & { role: PodRole }>;
  enrolledAt: string | null;
  /** inode of the pod's netns when enrolled (checked at a hand-over) */
  netnsInode: bigint | null;
  /** the addresses the datapath holds for it */
  ips: string[];
  /** consecutive failed enrollments, and when the next attempt is due (ms epoch) */
  failures: number;
  retryAt: number;
  /** what isolate() put in place after a failure */
  isolation: Isolation | null;
  /** connections opened before the pod was captured, reset at its first capture */
  preexistingReset: number | null;
}

/**
 * One lifecycle state instead of flags:
 *   starting -> running -> (handing-over -> running | draining) -> stopping -> stopped
 * handing-over: a successor is taking our sockets; enrollment waits (it would
 * bind ports the successor binds too), policy and the model are applied.
 * draining: the successor serves, or SIGTERM; established connections run on
 * and are still re-checked against policy.
 */
export type AgentPhase = 'starting' | 'running' | 'handing-over' | 'draining' | 'stopping' | 'stopped';

type PodRole = 'outbound' | 'inbound' | 'hbone';
type NodeRole = 'readiness' | 'metrics' | 'admin';


export class Agent {
  readonly tracker = new ConnectionTracker();
  private datapath: Datapath | null = null;
  private source: WorkloadFileSource | KubernetesSource | null = null;
  private admin: http.Server | null = null;
  private metricsServer: http.Server | null = null;
  private readyServer: http.Server | null = null;
  /** the first workload snapshot was reconciled */
  private discovered = false;
  readonly metrics: AgentMetrics;
  private readonly pods = new Map<string, LocalPod>();
  private snapshot: WorkloadSnapshot = emptySnapshot();
  private index: MeshIndex = new MeshIndex(this.snapshot);
  private policy: PolicyIndex = compilePolicies([]);
  private policyKey = '[]';
  private reconciling: Promise<void> = Promise.resolve();
  private pendingSnapshot: WorkloadSnapshot | null = null;
  /** a snapshot whose enrollment changes wait for the end of a hand-over */
  private deferred: WorkloadSnapshot | null = null;
  private phaseValue: AgentPhase = 'starting';
  private retryTimer: NodeJS.Timeout | null = null;
  /** reads the datapath's refusal counters, to log each reason once with its cause */
  private refusalWatch: NodeJS.Timeout | null = null;
  /** RLIMIT_NOFILE soft limit after raising it (-1: unlimited) */
  private fdLimit: number | null = null;
  /** pod+error code pairs already logged at error level (a retry that fails alike logs at debug) */
  private readonly reportedFailures = new Set<string>();
  /** counters of bad input and failures, by reason (config_dump; ambientd_agent_events_total) */
  readonly counters = new Map<string, number>();
  private readonly native: NativeAddon;
  private identities: IdentityManager | null = null;
  private mesh: MeshProxy | null = null;
  /** enrolled local pods by each of their addresses */
  private readonly podsByIp = new Map<string, LocalPod>();

  private readonly sandboxFinder: PodSandboxFinder;
  /** 'drained' (the process may exit now) */
  readonly lifecycle = new EventEmitter();
  /** listening sockets taken from the previous agent (until ack) */
  private inherited: Inherited | null = null;
  private handover: HandoverServer | null = null;
  private handoverInfo: { from: number | null; adopted: number; rejected: Array<{ listener: string; reason: string }>; unused: number; handedTo: number | null; recordsImported: number } = { from: null, adopted: 0, rejected: [], unused: 0, handedTo: null, recordsImported: 0 };
  private draining: Promise<void> | null = null;

  get phase(): AgentPhase { return this.phaseValue; }
  private setPhase(p: AgentPhase): void {
    if (this.phaseValue === p) return;
    this.log.debug('agent phase', { from: this.phaseValue, to: p });
    this.phaseValue = p;
  }
  private get stopped(): boolean { return this.phaseValue === 'stopping' || this.phaseValue === 'stopped'; }

  constructor(readonly cfg: AgentConfig, private readonly log: Logger, native?: NativeAddon) {
    this.sandboxFinder = new PodSandboxFinder({ cgroupRoot: cfg.cgroupRoot });
    this.native = native ?? loadNative();
    if (cfg.source === 'file') this.source = new WorkloadFileSource(cfg.workloads!, cfg.cgroupRoot);
    this.metrics = new AgentMetrics({
      index: () => this.index,
      spiffeOf: (p) => podSpiffeId(p, cfg.trustDomain),
      pods: () => this.localPodStates(),
      certificates: () => (this.identities?.list() ?? []).map((c) => ({ id: c.id, notAfter: c.notAfter })),
      podStats: () => {
        const dp = this.datapath;
        if (!dp) return [];
        const out: Array<{ namespace: string; name: string; stats: Record<string, bigint> }> = [];
        for (const lp of this.pods.values()) {
          if (lp.cgroupId === null) continue;
          try {
            const st = dp.podStats(lp.cgroupId);
            if (st) out.push({ namespace: lp.info.namespace, name: lp.info.name, stats: { ...st } });
          } catch { /* a map read failing must not fail the scrape */ }
        }
        return out;
      },
      datapathCounters: () => {
        try {
          return this.datapath?.counters() ?? null;
        } catch { return null; }
      },
      resources: () => this.resources(),
    });
    this.metrics.observe(this.tracker);
    // access log: one JSON line per closed connection (this.tracker 'close')
    attachAccessLog(this.tracker, log.child('access'), cfg.accessLog ?? 'info', {
      podByIp: (ip) => this.index.podByIp.get(ip),
      spiffeOf: (p) => podSpiffeId(p, cfg.trustDomain),
    });
  }

  /** Local pods of this node (from the model) and their state. */
  private localPodStates(): Array<{ namespace: string; name: string; state: PodState; error: LocalPod['error'] }> {
    const out: Array<{ namespace: string; name: string; state: PodState; error: LocalPod['error'] }> = [];
    for (const p of this.snapshot.pods.values()) {
      if (!this.isLocal(p)) continue;
      const lp = this.pods.get(podKey(p));
      out.push({ namespace: p.namespace, name: p.name, state: lp ? lp.state : 'not-enrolled', error: lp?.error ?? null });
    }
    return out;
  }

  count(reason: string, n = 1): void {
    this.counters.set(reason, (this.counters.get(reason) ?? 0) + n);
    this.metrics.countEvent(reason, n);
  }

  /**
   * accept() failed on a listener (EMFILE/ENFILE: out of fds): libuv drops the
   * pending connections (they see a reset: closed, never open) and accepts
   * again as soon as fds are free; we count it and log it once, never exit.
   */
  private acceptError(e: NodeJS.ErrnoException, where: string): void {
    const code = e.code ?? 'ERROR';
    this.count(code === 'EMFILE' || code === 'ENFILE' ? 'accept_out_of_fds' : 'accept_failed');
    this.log.once(`accept:${code}`, 'error', 'accept() failed: pending connections were refused; accepting resumes by itself', {
      listener: where, error: code, fds: this.resources().fds, fdLimit: this.fdLimit,
      hint: code === 'EMFILE' || code === 'ENFILE' ? 'the agent ran out of file descriptors: raise its nofile limit (the agent raises the soft limit to the hard one at start), or lower limits.*' : 'see the error',
    });
  }

  private async listen(server: http.Server, port: number, address: string, what: NodeRole, setting: string): Promise<void> {
    const fd = this.inherited?.take('node', what, { ip: address, port }) ?? null;
    if (fd !== null) this.handoverInfo.adopted++;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new AmbientError('LISTENER_FAILED', `${what} listener ${address}:${port}: ${e.code}`, `another agent runs in this network namespace (hand-over needs handoverSocket set alike on both), or change ${setting}`, { cause: e })));
      if (fd !== null) server.listen({ fd }, () => resolve());
      else server.listen(port, address, () => resolve());
    });
    server.on('error', (e: NodeJS.ErrnoException) => this.acceptError(e, what));
  }

  /**
   * Takes the listening sockets of the agent already running on this node
   * (restart, rolling update); see src/lifecycle/handover.ts. A failure is
   * logged and counted, and the agent starts as if it were the first.
   */
  private takeOver(): void {
    const sock = this.cfg.handoverSocket;
    if (!sock) return;
    try {
      this.inherited = requestHandover(this.native, sock, this.cfg.node, { verifyPeer: verifyAgentPeer });
      if (this.inherited) {
        this.handoverInfo.from = this.inherited.fromPid;
        this.log.info('taking over from the running agent', { pid: this.inherited.fromPid, sockets: this.inherited.size });
      }
    } catch (e) {
      this.count('handover_failed');
      this.log.warn('hand-over from the running agent failed; starting on fresh sockets', { socket: sock, error: errorMessage(e) });
    }
  }

  /**
   * After the first reconcile: tells the old agent we serve on its sockets
   * and waits for its confirmation (it may have given up on us: past its
   * handoverTimeout it carries on, and then this agent must not serve too);
   * then we serve the hand-over socket ourselves.
   */
  private async finishTakeOver(): Promise<void> {
    const inh = this.inherited;
    if (inh) {
      this.inherited = null;
      const unused = inh.closeRest();
      this.handoverInfo.unused = unused.length;
      for (const r of inh.rejected) {
        this.count('handover_socket_rejected');
        this.handoverInfo.rejected.push({ listener: `${r.entry.kind}/${r.entry.key ?? ''}/${r.entry.role}`, reason: r.reason });
        this.log.warn('inherited socket not usable; bound a new one', { listener: r.entry, reason: r.reason });
      }
      const confirmed = inh.ack();
      if (!confirmed.ok) {
        this.count('handover_failed');
        throw new AmbientError('HANDOVER_ABORTED', `the running agent (pid ${inh.fromPid}) did not confirm the hand-over: ${confirmed.reason}`,
          'it gave up waiting (handoverTimeout) and serves on; this agent exits so the two never serve together. Its supervisor restarts it and the next hand-over starts afresh');
      }
      this.count('handover_adopted');
      this.log.info('took over the listening sockets', { from: inh.fromPid, adopted: this.handoverInfo.adopted, rejected: inh.rejected.length, unused: unused.length });
    }
    if (!this.cfg.handoverSocket) return;
    const hs = new HandoverServer({
      native: this.native, socketPath: this.cfg.handoverSocket, node: this.cfg.node, log: this.log.child('handover'),
      adoptTimeoutMs: this.cfg.handoverTimeoutMs,
      verifyPeer: verifyAgentPeer,
      onPeerRejected: (why) => { this.count('handover_peer_rejected'); this.log.once(`handover_peer_rejected:${why.replace(/\d+/g, 'N')}`, 'warn', 'hand-over socket: peer refused (only an ambientd agent of this node, uid 0, may take part)', { reason: why }); },
      listeners: async () => {
        // no enrollment while a successor takes the sockets: it would bind
        // a pod's ports the successor binds too (policy still applies)
        this.setPhase('handing-over');
        await this.settle();
        return this.handoverListeners();
      },
      onAdopted: (pid) => {
        this.handoverInfo.handedTo = pid;
        this.log.info('the new agent serves on our sockets; draining', { pid });
        void this.drain('handover');
      },
      // connections our predecessor drained: counted here, where Prometheus scrapes now
      onRecord: (raw) => {
        const rec = parseClosedRecord(raw);
        if (!rec) { this.count('handover_record_invalid'); return; }
        this.handoverInfo.recordsImported++;
        this.metrics.onClose(rec);
      },
      onBadRecord: (pid, why) => { this.count('handover_record_invalid'); this.log.warn('bad connection record on the hand-over socket', { pid, why }); },
      onAborted: (pid, reason) => {
        this.count('handover_aborted');
        this.log.warn('the new agent did not take over; serving on', { pid, reason });
        if (this.phaseValue !== 'handing-over') return;
        this.setPhase('running');
        const next = this.deferred ?? this.snapshot;
        this.deferred = null;
        this.schedule(next);
      },
    });
    try {
      await hs.start();
      this.handover = hs;
    } catch (e) {
      this.count('handover_failed');
      this.log.warn('cannot serve the hand-over socket: the next restart will refuse connections while it starts', { socket: this.cfg.handoverSocket, error: errorMessage(e) });
    }
  }

  /** Every listening socket, for a successor. */
  private handoverListeners(): Array<{ entry: HandoverEntry; fd: number }> {
    const out: Array<{ entry: HandoverEntry; fd: number }> = [];
    for (const lp of this.pods.values()) {
      if (lp.state !== 'enrolled') continue;
      for (const l of lp.listeners) {
        out.push({ entry: { kind: 'pod', role: l.role, key: lp.key, ip: l.ip, port: l.port, ...(lp.netnsInode !== null ? { netnsInode: String(lp.netnsInode) } : {}) }, fd: l.fd });
      }
    }
    const node: Array<[NodeRole, http.Server | null]> = [['readiness', this.readyServer], ['metrics', this.metricsServer], ['admin', this.admin]];
    for (const [role, srv] of node) {
      const fd = handleFd(srv);
      const a = srv?.address();
      if (fd === null || !a || typeof a === 'string') continue;
      out.push({ entry: { kind: 'node', role, ip: a.address, port: a.port }, fd });
    }
    return out;
  }

  async start(): Promise<void> {
    const cfg = this.cfg;
    // as ztunnel: as many fds as the hard limit allows (raising it needs CAP_SYS_RESOURCE)
    const nofile = this.native.raiseFdLimit();
    if (typeof nofile !== 'number') this.fdLimit = nofile.soft;
    this.datapath = Datapath.open({
      bpffsDir: cfg.bpffsDir, bpfObject: cfg.bpfObject, ports: cfg.ports, mark: cfg.mark,
      acceleration: cfg.acceleration, agentCgroup: cfg.agentCgroup ?? ownCgroup(cfg.cgroupRoot),
    }, this.log.child('datapath'), this.native);
    this.takeOver();
    // right after the datapath (whose kernel-feature errors come first): readiness
    // answers 500 with what is pending while the rest starts
    this.readyServer = createReadinessServer(() => this.readiness(), this.log);
    await this.listen(this.readyServer, cfg.ports.readiness, cfg.metricsAddress, 'readiness', 'ports.readiness');
    this.metricsServer = createMetricsServer(this.metrics, this.log);
    await this.listen(this.metricsServer, cfg.ports.metrics, cfg.metricsAddress, 'metrics', 'ports.metrics');

    const ca = await CertificateAuthority.loadOrCreate(cfg.caDir, { trustDomain: cfg.trustDomain }).catch((e: Error) => {
      throw new AmbientError('CA_UNAVAILABLE', `built-in CA at ${cfg.caDir}: ${e.message}`, 'the CA directory must be writable by the agent (or hold an Istio plug-in CA: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)', { cause: e });
    });
    this.identities = new IdentityManager({ issuer: ca, lifetimeMs: cfg.certLifetimeMs });
    // Warm the key generation and X.509 code once before serving: the first
    // issuance compiles a lot of JavaScript, and would otherwise delay the first
    // enrollment by a few hundred ms.
    await ca.issue({ spiffeId: `spiffe://${cfg.trustDomain}/ns/ambientd-system/sa/ambientd-warmup`, publicKey: (await generateEcKey()).publicKey, lifetimeMs: 60_000 }).catch(() => undefined);
    this.identities.on('renewalFailed', (ev) => { this.count('certificate_renewal_failed'); this.log.warn('certificate renewal failed; keeping the current one', { id: ev.id, error: ev.error }); });
    const log = this.log.child('proxy');
    this.mesh = new MeshProxy({
      native: this.native, mark: cfg.mark, ports: cfg.ports, trustDomain: cfg.trustDomain, log, tracker: this.tracker,
      nodePorts: [cfg.ports.admin, cfg.ports.metrics, cfg.ports.readiness],
      count: (r) => this.count(r), identities: this.identities,
      originalDst: (src) => this.datapath?.originalDst(src) ?? null,
      index: () => this.index,
      authorize: (dst, src) => this.authorize(dst, src),
      localPodByIp: (ip) => {
        const lp = this.podsByIp.get(ip);
        return lp && lp.state === 'enrolled' ? lp : null;
      },
      limits: cfg.limits,
      liveness: livenessParams(cfg.peerTimeoutMs),
      onLimit: (reason, message) => this.log.once(reason, 'warn', 'a limit was hit: the connection was refused', { reason, message, hint: LIMIT_HINTS[reason] ?? 'raise the limit in "limits:" if this is legitimate load' }),
    });

    this.admin = createAdminServer({
      configDump: () => this.configDump(),
      ready: () => this.readiness(),
      quit: () => { void this.stop().then(() => process.exit(0)); },
    }, this.log);
    await this.listen(this.admin, cfg.ports.admin, cfg.adminAddress, 'admin', 'ports.admin');

    const reported = new Set<string>();
    if (!this.source) {
      const { KubernetesSource } = await import('./discovery/kubernetes.js');
      this.source = new KubernetesSource({ nodeName: cfg.node, log: this.log.child('kubernetes'), resolveLocalPod: (pod) => (pod.uid ? this.sandboxFinder.find(pod.uid) : null) });
    }
    const source = this.source;
    source.on('update', (s: WorkloadSnapshot) => {
      for (const e of s.errors) {
        const k = `${e.entry}\0${e.message}`;
        if (reported.has(k)) continue;
        reported.add(k);
        this.count('workload_entry_invalid');
        this.log.warn('workload entry rejected', { source: cfg.source, entry: e.entry, error: e.message });
      }
      this.schedule(s);
    });
    (source as WorkloadFileSource).on('invalid', (e: AmbientError) => {
      this.count('workload_file_invalid');
      this.log.error('workload file rejected; keeping the last good state', { error: e.toJSON() });
    });
    source.on('error', (e: Error) => {
      this.count('discovery_error');
      this.log.warn('discovery error (retrying; last good state kept)', { error: e.message });
    });
    this.watchRefusals();
    this.setPhase('running');
    await source.start();
    if (!(source instanceof WorkloadFileSource)) this.schedule(source.current);
    await this.settle();
    await this.finishTakeOver();
    this.discovered = true;
    if (cfg.readyFile) fs.writeFileSync(cfg.readyFile, `${process.pid}\n`);
    this.log.info('agent ready', { node: cfg.node, enrolled: [...this.pods.values()].filter((p) => p.state === 'enrolled').length });
  }

  /** Every 5 s: a datapath refusal reason seen for the first time is logged once, with its cause. */
  private watchRefusals(): void {
    const last = new Map<string, bigint>();
    const tick = (): void => {
      let c: Record<string, bigint>;
      try {
        c = this.datapath?.counters() ?? {};
      } catch { return; }
      for (const [reason, v] of Object.entries(c)) {
        const before = last.get(reason);
        last.set(reason, v);
        if (before === undefined || v <= before) continue;
        this.log.once(`datapath_refused_${reason}`, 'warn', 'the datapath refused connections', { reason, count: v.toString(), cause: DATAPATH_COUNTER_CAUSES[reason as DatapathCounter] });
      }
    };
    tick();
    this.refusalWatch = setInterval(tick, 5000);
    this.refusalWatch.unref();
  }

  /** Waits until every queued reconcile ran. */
  async settle(): Promise<void> {
    for (;;) {
      const p = this.reconciling;
      await p.catch(() => undefined);
      if (p === this.reconciling) return;
    }
  }

  /**
   * Applies a snapshot: the model and policy always (live connections are
   * re-checked, also while a successor takes over and while draining), the
   * enrollment changes only while running (else they wait: `deferred`).
   */
  private schedule(s: WorkloadSnapshot): void {
    this.pendingSnapshot = s;
    this.reconciling = this.reconciling.then(async () => {
      const next = this.pendingSnapshot;
      if (!next || this.stopped) return;
      this.pendingSnapshot = null;
      this.applyModel(next);
      if (this.phaseValue !== 'running') {
        if (this.phaseValue === 'handing-over') this.deferred = next;
        return;
      }
      await this.reconcile(next);
    }).catch((e: unknown) => {
      this.count('reconcile_failed');
      this.log.error('reconcile failed (retrying on the next change)', { error: errorMessage(e) });
    });
  }

  private isLocal(p: PodInfo): boolean {
    return p.node === null || p.node === this.cfg.node;
  }

  /** The model and the policies of a snapshot; live connections checked again. */
  private applyModel(s: WorkloadSnapshot): void {
    this.snapshot = s;
    this.index = new MeshIndex(s, this.cfg.trustDomain);
    this.updatePolicies(s);
    // policies, labels or identities may have changed: live connections are checked again
    const closed = this.mesh?.recheck() ?? 0;
    if (closed) this.log.info('policy re-check closed connections', { closed, phase: this.phaseValue });
  }

  /** Enrollment: every local ambient pod captured (or isolated), nothing else. */
  private async reconcile(s: WorkloadSnapshot): Promise<void> {
    const dp = this.datapath!;
    const wanted = new Map<string, PodInfo>();
    for (const [k, p] of s.pods) if (this.isLocal(p) && isEnrolled(p, s.namespaces)) wanted.set(k, p);
    const ipsOf = (p: PodInfo): string[] => [...new Set([p.ip, ...(p.ips ?? [])])];
    // two live pods with one address: both fail closed, none is silently open
    const shared = conflictingIps([...wanted.values()].map((p) => ({ ips: ipsOf(p) })));
    const claimedBy = new Map<string, string[]>();
    for (const [k, p] of wanted) for (const ip of ipsOf(p)) claimedBy.set(ip, [...(claimedBy.get(ip) ?? []), k]);
    // addresses a wanted pod other than `key` claims: never released by key's unenroll
    const keepFor = (key: string): Set<string> => new Set([...claimedBy].filter(([, ks]) => ks.some((k) => k !== key)).map(([ip]) => ip));

    // unenroll what is no longer wanted (or changed address/netns/cgroup)
    for (const [k, lp] of this.pods) {
      const w = wanted.get(k);
      const changed = w && (ipsOf(w).join() !== ipsOf(lp.info).join() || w.netns !== lp.info.netns || w.cgroup !== lp.info.cgroup || (w.uid ?? '') !== (lp.info.uid ?? ''));
      if (!w || changed) await this.unenroll(k, keepFor(k));
    }
    // pinned links of pods this agent does not know (stale, from an earlier run)
    for (const k of dp.pinnedPods()) {
      if (!wanted.has(k) && !this.pods.has(k)) {
        this.log.info('removing stale redirection', { pod: k });
        dp.removeLinks(k);
      }
    }
    const now = Date.now();
    for (const [k, p] of wanted) {
      const cur = this.pods.get(k);
      const conflict = ipsOf(p).filter((ip) => shared.has(ip));
      if (conflict.length > 0) {
        if (cur?.error?.code === 'POD_IP_CONFLICT') { cur.info = p; continue; }
        const others = conflict.flatMap((ip) => claimedBy.get(ip) ?? []).filter((o) => o !== k);
        await this.failPod(cur ?? this.newLocalPod(p), new AmbientError('POD_IP_CONFLICT',
          `pod ${k} and ${[...new Set(others)].join(', ')} both claim ${conflict.join(', ')}`,
          'two live pods cannot share an address: both are isolated until one of them is gone (check the CNI, or the workload file)'), shared);
        continue;
      }
      if (cur && cur.state === 'enrolled') { cur.info = p; continue; }
      if (cur && cur.retryAt > now && cur.error?.code !== 'POD_IP_CONFLICT') { cur.info = p; continue; }
      await this.enroll(p, cur);
    }
    // map entries of pods nobody wants (an earlier agent's, a pod gone while none ran)
    const cgroups = new Set<bigint>();
    const ips = new Set<string>();
    for (const lp of this.pods.values()) {
      if (lp.cgroupId !== null) cgroups.add(lp.cgroupId);
      for (const ip of lp.ips) ips.add(ip);
    }
    const swept = dp.sweep(cgroups, ips);
    if (swept) this.log.info('removed stale datapath entries', { entries: swept });
    this.armRetry();
  }

  private newLocalPod(p: PodInfo, prev?: LocalPod): LocalPod {
    return {
      key: podKey(p), info: p, identity: podSpiffeId(p, this.cfg.trustDomain), cgroupId: null, state: 'failed', error: null, listeners: [],
      enrolledAt: null, netnsInode: null, ips: [], failures: prev?.failures ?? 0, retryAt: 0, isolation: null, preexistingReset: prev?.preexistingReset ?? null,
    };
  }

  /** A timer for the earliest retry of an isolated pod. */
  private armRetry(): void {
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
    let at = Infinity;
    for (const lp of this.pods.values()) if (lp.state !== 'enrolled' && lp.error?.code !== 'POD_IP_CONFLICT') at = Math.min(at, lp.retryAt);
    if (at === Infinity || this.stopped) return;
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.schedule(this.snapshot); }, Math.max(10, at - Date.now()));
    this.retryTimer.unref();
  }

  private async enroll(p: PodInfo, prev?: LocalPod): Promise<void> {
    const key = podKey(p);
    const lp = this.newLocalPod(p, prev);
    if (prev) this.releaseListeners(prev);
    this.pods.set(key, lp);
    const t0 = process.hrtime.bigint();
    const dp = this.datapath!;
    // a pod captured (or isolated) for the first time: what it opened before is reset after
    const firstCapture = !dp.isPinned(key);
    try {
      if (!p.netns) throw new AmbientError('NETNS_UNAVAILABLE', `pod ${key} has no netns path`, 'set "netns" for local pods in the workload file');
      if (!p.cgroup) throw new AmbientError('CGROUP_UNAVAILABLE', `pod ${key} has no cgroup path`, 'set "cgroup" for local pods in the workload file');
      if (!fs.existsSync(p.netns)) throw new AmbientError('NETNS_UNAVAILABLE', `pod ${key}: netns ${p.netns} does not exist`, 'the pod sandbox is gone or the netns path is wrong; the pod is isolated until its netns exists');
      lp.ips = [...new Set([p.ip, ...(p.ips ?? [])])];
      lp.cgroupId = dp.cgroupIdOf({ key, cgroup: p.cgroup });
      const v4 = lp.ips.find((ip) => !ip.includes(':'));
      if (!v4) throw new AmbientError('POD_UNSUPPORTED', `pod ${key} has only IPv6 addresses (${lp.ips.join(', ')}); IPv6 capture is not built yet`, 'the pod is isolated (its TCP is refused) until IPv6 capture lands; give it an IPv4 address to enroll it');
      const { outbound, inbound, hbone } = this.cfg.ports;
      const mesh = this.mesh!;
      const ino = this.native.netnsInode(p.netns);
      lp.netnsInode = typeof ino === 'bigint' ? ino : null;
      const listen = async (role: PodRole, bind: { ip: string; port: number }, onConn: (s: net.Socket) => void): Promise<PodListener> => {
        const fd = this.inherited?.take('pod', role, { ...bind, key, netnsInode: lp.netnsInode }) ?? null;
        let l: PodListener;
        if (fd !== null) {
          l = await serveListeningFd(fd, bind, onConn).catch((e: unknown) => { this.native.closeFd(fd); throw e; });
          this.handoverInfo.adopted++;
        } else {
          // outbound: the app in this pod (bounded buffers); inbound: plaintext clients; hbone: peers (TCP_USER_TIMEOUT)
          l = await listenInNetns(this.native, p.netns!, bind, this.cfg.mark, onConn, mesh.socketOptions(role === 'outbound' ? 'app' : role === 'hbone' ? 'hbone' : 'remote'));
        }
        l.server.on('error', (e: NodeJS.ErrnoException) => this.acceptError(e, `${key} ${role}`));
        lp.listeners.push({ ...l, role });
        return l;
      };
      const out = await listen('outbound', { ip: v4, port: outbound }, (s) => mesh.onOutbound(lp, s));
      const inb = await listen('inbound', { ip: '127.0.0.1', port: inbound }, (s) => mesh.onInbound(lp, s));
      const hb = await listen('hbone', { ip: v4, port: hbone }, (s) => mesh.hbone.handle(s));
      dp.registerListener(lp.cgroupId, outbound, out.fd);
      dp.registerListener(lp.cgroupId, inbound, inb.fd);
      dp.registerListener(lp.cgroupId, hbone, hb.fd);
      dp.enroll({ key, cgroupId: lp.cgroupId, ips: lp.ips, netns: p.netns, cgroup: p.cgroup, exemptSrc: this.cfg.nodeIP });
      lp.state = 'enrolled';
      lp.failures = 0;
      lp.enrolledAt = new Date().toISOString();
      for (const ip of lp.ips) this.podsByIp.set(ip, lp);
      if (firstCapture) this.resetPreexisting(lp);
      // fetched ahead (after redirection is active) so the first connection does not wait for it
      this.prefetchCertificate(lp.identity);
      this.log.info('pod enrolled', { pod: key, ip: v4, adopted: !firstCapture, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    } catch (e) {
      const err = e instanceof AmbientError ? e : new AmbientError('LISTENER_FAILED', errorMessage(e), 'see the agent log');
      await this.failPod(lp, err, new Set(), firstCapture);
    }
  }

  /**
   * A pod that cannot be captured fails closed: its listeners go, the
   * datapath isolates it (its TCP is refused both ways, no listener needed),
   * and it is reported (metric, readiness detail, config_dump, log) and
   * retried with back-off (an IP conflict: when it is resolved).
   */
  private async failPod(lp: LocalPod, err: AmbientError, shared: ReadonlySet<string>, firstCapture = !this.datapath!.isPinned(lp.key)): Promise<void> {
    const p = lp.info;
    this.pods.set(lp.key, lp);
    this.releaseListeners(lp);
    for (const ip of lp.ips) if (this.podsByIp.get(ip) === lp) this.podsByIp.delete(ip);
    this.mesh?.releasePod(lp.key);
    if (lp.ips.length === 0) lp.ips = [...new Set([p.ip, ...(p.ips ?? [])])];
    if (lp.cgroupId === null && p.cgroup) {
      try { lp.cgroupId = this.datapath!.cgroupIdOf({ key: lp.key, cgroup: p.cgroup }); } catch { /* missing: inbound-only isolation */ }
    }
    lp.isolation = this.datapath!.isolate({ key: lp.key, cgroupId: lp.cgroupId, ips: lp.ips, netns: p.netns, cgroup: p.cgroup, exemptSrc: this.cfg.nodeIP }, shared);
    lp.state = lp.isolation.outbound || lp.isolation.inbound ? 'isolated' : 'failed';
    lp.error = { code: err.code, message: err.message, hint: err.hint };
    lp.enrolledAt = null;
    lp.failures++;
    lp.retryAt = Date.now() + retryDelayMs(lp.failures);
    if (firstCapture && lp.isolation.outbound) this.resetPreexisting(lp);
    this.count('pod_enroll_failed');
    this.metrics.countEnrollFailure(err.code);
    const seen = `${lp.key}\0${err.code}`;
    const fields = { pod: lp.key, state: lp.state, isolation: lp.isolation, error: err.toJSON(), retryInMs: err.code === 'POD_IP_CONFLICT' ? null : lp.retryAt - Date.now(), attempt: lp.failures };
    if (this.reportedFailures.has(seen)) this.log.debug('pod enrollment failed again', fields);
    else {
      this.reportedFailures.add(seen);
      this.log.error(lp.state === 'isolated' ? 'pod enrollment failed: the pod is isolated (its TCP is refused) until it can be enrolled' : 'pod enrollment failed and the pod could not be isolated (its netns/cgroup are missing)', fields);
    }
  }

  /** Resets the TCP connections a pod opened before it was captured (sock_diag SOCK_DESTROY). */
  private resetPreexisting(lp: LocalPod): void {
    const netns = lp.info.netns;
    if (!netns) return;
    const socks = this.native.tcpSockets(netns, LIVE_STATES);
    const fail = (rc: number): void => {
      this.count('preexisting_reset_failed');
      const name = errnoName(rc);
      this.log.warn('could not reset the connections a pod opened before it was captured', {
        pod: lp.key, error: name, hint: name === 'EOPNOTSUPP' ? 'the kernel lacks CONFIG_INET_DIAG_DESTROY: restart the pod to close them' : 'restart the pod to close them',
      });
    };
    if (typeof socks === 'number') { fail(socks); return; }
    const stale = socketsToReset(socks, { ips: lp.ips, mark: this.cfg.mark, exempt: [this.cfg.nodeIP, PROBE_SNAT_IP].filter((x): x is string => !!x) });
    if (stale.length === 0) { lp.preexistingReset = 0; return; }
    const n = this.native.destroyTcpSockets(netns, stale);
    if (n < 0) { fail(n); return; }
    lp.preexistingReset = n;
    this.count('preexisting_connection_reset', n);
    this.log.info('connections opened before the pod was captured were reset', { pod: lp.key, count: n, peers: stale.slice(0, 10).map((s) => `${s.dst}:${s.dport}`) });
  }

  private releaseListeners(lp: LocalPod): void {
    for (const l of lp.listeners) l.server.close();
    lp.listeners = [];
  }

  private async unenroll(key: string, keepIps: ReadonlySet<string> = new Set()): Promise<void> {
    const lp = this.pods.get(key);
    if (!lp) return;
    this.pods.delete(key);
    for (const ip of lp.ips) if (this.podsByIp.get(ip) === lp) this.podsByIp.delete(ip);
    this.mesh?.releasePod(key);
    try {
      this.datapath!.unenroll({ key, cgroupId: lp.cgroupId, ips: lp.ips }, keepIps);
    } catch (e) {
      this.log.error('pod unenroll failed', { pod: key, error: errorMessage(e) });
    }
    this.releaseListeners(lp);
    // its certificate is not renewed any more once no local pod has that identity
    if (![...this.pods.values()].some((o) => o.identity === lp.identity)) this.identities?.forget(lp.identity);
    for (const k of [...this.reportedFailures]) if (k.startsWith(`${key}\0`)) this.reportedFailures.delete(k);
    this.log.info('pod unenrolled', { pod: key });
  }

  private readonly prefetchQueue: string[] = [];
  private prefetching = false;
  /**
   * Issues certificates ahead of need, one at a time with a macrotask between
   * them, so a burst (an agent start with many pods) never delays enrollment
   * or traffic; a connection that needs one first just gets it on demand.
   */
  private prefetchCertificate(id: string): void {
    if (this.identities?.peek(id) || this.prefetchQueue.includes(id)) return;
    this.prefetchQueue.push(id);
    if (this.prefetching) return;
    this.prefetching = true;
    const next = (): void => {
      const nextId = this.prefetchQueue.shift();
      if (!nextId || this.stopped || !this.identities) { this.prefetching = false; return; }
      void this.identities.get(nextId).catch(() => undefined).finally(() => setTimeout(next, 2));
    };
    setTimeout(next, 2);
  }

  /** L4 authorization at the destination (Istio AuthorizationPolicy semantics, src/policy). */
  private authorize(dst: { pod: PodInfo; ip: string; port: number }, src: { ip: string; id: string | null }): AuthzDecision {
    const d = this.policy.evaluate({
      dst: { namespace: dst.pod.namespace, labels: dst.pod.labels, ip: dst.ip, port: dst.port },
      src: { ip: src.ip, principal: src.id, namespace: null, serviceAccount: null },
    });
    return { allow: d.allow, policy: d.policy, reason: d.reason };
  }

  /** Recompiles the policy index when the policies changed; reports invalid ones. */
  private updatePolicies(s: WorkloadSnapshot): void {
    const list = [...s.policies.values()];
    const key = JSON.stringify(list);
    if (key === this.policyKey) return;
    this.policyKey = key;
    const t0 = process.hrtime.bigint();
    this.policy = compilePolicies(list, { trustDomain: this.cfg.trustDomain, rootNamespace: this.cfg.rootNamespace });
    for (const p of this.policy.describe()) {
      if (p.errors.length === 0) continue;
      this.count('policy_invalid');
      this.log.warn('invalid AuthorizationPolicy (fail-safe applied)', { policy: p.policy, status: p.status, errors: p.errors });
    }
    this.log.info('policies compiled', { policies: list.length, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
  }

  /**
   * Node readiness: datapath, CA, listeners and discovery. Pods are reported
   * one by one and never make the node unready: a pod that cannot be
   * enrolled is isolated (fails closed) and listed with its error, and must
   * not take the node's other pods out (nor stall a rolling update).
   */
  readiness(): Readiness {
    const pending: string[] = [];
    if (!this.datapath) pending.push('datapath');
    if (!this.identities) pending.push('ca');
    if (!this.admin?.listening) pending.push('admin listener');
    if (!this.metricsServer?.listening) pending.push('metrics listener');
    if (!this.mesh) pending.push('proxy');
    if (!this.discovered) pending.push('discovery');
    if (this.source instanceof WorkloadFileSource && this.source.lastError && this.snapshot.pods.size === 0) pending.push('workloads');
    if (this.draining) pending.push('draining');
    else if (this.stopped) pending.push('stopping');
    const pods = this.localPodStates().map((p) => ({ pod: `${p.namespace}/${p.name}`, state: p.state, ...(p.error ? { error: { code: p.error.code, message: p.error.message, hint: p.error.hint } } : {}) }));
    return { ready: pending.length === 0, pending, pods };
  }

  configDump() {
    const dp = this.datapath;
    const workloads = [...this.snapshot.pods.values()].map((p) => {
      const key = podKey(p);
      const lp = this.pods.get(key);
      const local = this.isLocal(p);
      const ambient = isEnrolled(p, this.snapshot.namespaces);
      const state: PodState = !local ? 'remote' : lp ? lp.state : 'not-enrolled';
      let redirect: Record<string, string> | null = null;
      if (lp && lp.cgroupId !== null && dp) {
        const st = dp.podStats(lp.cgroupId);
        redirect = st ? Object.fromEntries(Object.entries(st).map(([k, v]) => [k, v.toString()])) : {};
      }
      return {
        name: p.name, namespace: p.namespace, serviceAccount: p.serviceAccount, identity: podSpiffeId(p, this.cfg.trustDomain), node: p.node, ip: p.ip,
        netns: p.netns, cgroup: p.cgroup, labels: p.labels, ambient, state,
        ...(lp?.cgroupId != null ? { cgroupId: lp.cgroupId.toString() } : {}),
        ...(lp?.error ? { error: lp.error } : {}), ...(lp?.enrolledAt ? { enrolledAt: lp.enrolledAt } : {}),
        ...(lp?.isolation && lp.state !== 'enrolled' ? { isolation: lp.isolation, attempts: lp.failures, nextAttempt: lp.error?.code === 'POD_IP_CONFLICT' ? null : new Date(lp.retryAt).toISOString() } : {}),
        ...(lp?.preexistingReset != null ? { preexistingReset: lp.preexistingReset } : {}),
        ...(redirect ? { redirect } : {}),
      };
    });
    let datapathCounters: Record<string, string> | null = null;
    let originalDstEntries: number | null = null;
    try {
      if (dp) {
        datapathCounters = Object.fromEntries(Object.entries(dp.counters()).map(([k, v]) => [k, v.toString()]));
        originalDstEntries = dp.originalDstCount();
      }
    } catch { /* a map read failing must not fail the dump */ }
    return {
      node: this.cfg.node,
      pid: process.pid,
      phase: this.phaseValue,
      workloads,
      services: [...this.snapshot.services.values()].map((s) => ({
        name: s.name, namespace: s.namespace, hostname: s.hostname, vips: s.vips, ports: s.ports,
        endpoints: s.endpoints.map((e) => ({ ip: e.ip, ready: e.ready, ...(e.pod ? { pod: e.pod } : {}) })),
      })),
      policies: this.policy.describe().map((d) => ({ ...d, spec: this.snapshot.policies.get(d.policy)?.spec })),
      policyStats: this.policy.stats(),
      connections: this.tracker.list(),
      certificates: (this.identities?.list() ?? []).map(({ chainPem: _c, rootPem: _r, ...c }) => c),
      hbone: this.mesh?.stats() ?? null,
      workloadSource: {
        kind: this.cfg.source,
        file: this.cfg.workloads,
        entryErrors: this.snapshot.errors,
        lastError: this.source instanceof WorkloadFileSource ? this.source.lastError?.toJSON() ?? null : null,
      },
      datapath: dp ? {
        pins: this.cfg.bpffsDir,
        acceleration: this.cfg.acceleration,
        features: dp.features,
        programs: dp.programs(),
        adoptedLinks: dp.adoptedLinks,
        refused: datapathCounters,
        originalDstEntries,
      } : null,
      counters: Object.fromEntries(this.counters),
      resources: this.resources(),
      handover: { socket: this.cfg.handoverSocket, ...this.handoverInfo, draining: this.draining !== null },
      readiness: this.readiness(),
    };
  }

  /** What the agent holds now and what bounds it (config_dump "resources", and the metrics). */
  resources() {
    const mesh = this.mesh;
    const server = mesh?.hbone.stats();
    const pools = mesh ? Object.values(mesh.stats().pools) : [];
    let fds: number | null = null;
    try { fds = fs.readdirSync('/proc/self/fd').length; } catch { /* no /proc */ }
    return {
      memory: process.memoryUsage(),
      fds, fdLimit: this.fdLimit,
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
      limits: this.cfg.limits,
      limitsHit: {
        handshakes: server?.rejections.limit_handshakes ?? 0,
        peerSessions: server?.rejections.limit_peer_sessions ?? 0,
        dials: mesh?.dials.hits ?? 0,
        settingsTimeouts: mesh?.windows.settingsTimeouts ?? 0,
      },
      peerTimeoutMs: this.cfg.peerTimeoutMs,
    };
  }

  /**
   * Graceful end (SIGTERM, or a successor took our sockets): no new
   * connections (they go to the successor, or are refused: fail closed),
   * GOAWAY on HBONE sessions, established connections run on until they end
   * or drainTimeout passes, and are still re-checked against policy changes
   * meanwhile (the source keeps running); then stop(). Emits 'drained'.
   */
  drain(reason: string): Promise<void> {
    if (this.draining) return this.draining;
    this.draining = (async () => {
      const t0 = Date.now();
      const handedOver = this.handoverInfo.handedTo !== null;
      this.setPhase('draining');
      if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
      await this.settle();
      this.handover?.close();
      for (const lp of this.pods.values()) for (const l of lp.listeners) l.server.close();
      if (handedOver) {
        // the successor answers on these ports now
        for (const srv of [this.admin, this.metricsServer, this.readyServer]) {
          srv?.close();
          srv?.closeIdleConnections?.();
        }
      }
      // connections that close from now on are reported to the successor, which answers the metrics port
      const fwd = handedOver && this.cfg.handoverSocket ? new RecordForwarder(this.cfg.handoverSocket, this.cfg.node) : null;
      const forward = (rec: ConnectionRecord): void => fwd?.send(rec);
      this.tracker.on('close', forward);
      const open = (): number => this.tracker.openCount() + (this.mesh?.hbone.stats().connections.open ?? 0);
      const atStart = open();
      this.log.info('draining', { reason, connections: this.tracker.openCount(), hboneSessions: this.mesh?.hbone.stats().connections.open ?? 0, deadlineMs: this.cfg.drainTimeoutMs });
      const deadline = t0 + this.cfg.drainTimeoutMs;
      // GOAWAY: peers open new tunnels to the successor; ours finish
      const hboneDone = this.mesh?.hbone.close({ graceMs: this.cfg.drainTimeoutMs }).catch(() => undefined);
      while (Date.now() < deadline && open() > 0) await new Promise((r) => setTimeout(r, 50));
      const left = this.tracker.openCount();
      if (left > 0) {
        this.count('drain_deadline_closed');
        await this.mesh?.close({ force: true });
      }
      await hboneDone;
      this.tracker.off('close', forward);
      const records = fwd ? await fwd.end() : null;
      this.log.info('drained', { reason, ms: Date.now() - t0, connectionsAtStart: atStart, closedAtDeadline: left, ...(records ? { recordsToSuccessor: records } : {}) });
      await this.stop();
      this.lifecycle.emit('drained');
    })();
    return this.draining;
  }

  /**
   * Stops serving. Redirection stays pinned on purpose: enrolled pods fail
   * closed until an agent comes back (or `ambientd cleanup` removes it).
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.setPhase('stopping');
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
    if (this.refusalWatch) { clearInterval(this.refusalWatch); this.refusalWatch = null; }
    this.source?.stop();
    await this.settle();
    this.inherited?.abort('the new agent stopped');
    this.handover?.close();
    for (const lp of this.pods.values()) for (const l of lp.listeners) l.server.close();
    await this.mesh?.close();
    this.identities?.close();
    for (const srv of [this.admin, this.metricsServer, this.readyServer]) {
      if (!srv) continue;
      srv.closeAllConnections?.();
      await new Promise<void>((r) => srv.close(() => r()));
    }
    this.datapath?.close();
    // only our own ready file: after a hand-over it is the successor's
    if (this.cfg.readyFile) {
      try {
        if (fs.readFileSync(this.cfg.readyFile, 'utf8').trim() === String(process.pid)) fs.rmSync(this.cfg.readyFile, { force: true });
      } catch { /* absent */ }
    }
    this.setPhase('stopped');
  }
}

/** What to change when a limit is hit (logged once with it). */
const LIMIT_HINTS: Record<string, string> = {
  limit_dials: 'too many connections being opened at once: raise limits.maxPendingDials, or look for a destination that stopped answering SYNs',
};

/** Istio's CNI SNATs kubelet probes to this address; the datapath never captures it. */
const PROBE_SNAT_IP = '169.254.7.127';

/** What GET /config_dump answers (tests, bench, demo and `inspect` read it). */
export type ConfigDump = ReturnType<Agent['configDump']>;

/** The agent's own cgroup v2 directory (from /proc/self/cgroup). */
export function ownCgroup(cgroupRoot: string): string | null {
  try {
    const line = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
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
