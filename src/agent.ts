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
import { Datapath } from './datapath/datapath.js';
import { loadNative } from './datapath/native.js';
import type { NativeAddon } from './datapath/native-api.js';
import { handleFd, listenInNetns, serveListeningFd, type PodListener } from './datapath/sockets.js';
import { HandoverServer, RecordForwarder, requestHandover, type HandoverEntry, type Inherited } from './lifecycle/handover.js';
import { isEnrolled, podKey, WorkloadFileSource, type PodInfo, type WorkloadSnapshot } from './discovery/workloads.js';
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

export type PodState = 'enrolled' | 'failed' | 'not-enrolled' | 'remote';

interface LocalPod extends MeshPod {
  index: number;
  state: PodState;
  error: { code: string; message: string; hint: string } | null;
  listeners: Array<PodListener & { role: PodRole }>;
  enrolledAt: string | null;
  /** inode of the pod's netns when enrolled (checked at a hand-over) */
  netnsInode: bigint | null;
}

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
  private nextIndex = 1;
  private reconciling: Promise<void> = Promise.resolve();
  private pendingSnapshot: WorkloadSnapshot | null = null;
  private stopped = false;
  private stopping = false;
  /** a successor is taking our sockets: listeners must not change */
  private paused = false;
  /** counters of bad input and failures, by reason (config_dump; ambientd_agent_events_total) */
  readonly counters = new Map<string, number>();
  private readonly native: NativeAddon;
  private identities: IdentityManager | null = null;
  private mesh: MeshProxy | null = null;
  private readonly podsByIp = new Map<string, LocalPod>();

  private readonly sandboxFinder: PodSandboxFinder;
  /** 'drained' (the process may exit now) */
  readonly lifecycle = new EventEmitter();
  /** listening sockets taken from the previous agent (until ack) */
  private inherited: Inherited | null = null;
  private handover: HandoverServer | null = null;
  private handoverInfo: { from: number | null; adopted: number; rejected: Array<{ listener: string; reason: string }>; unused: number; handedTo: number | null; recordsImported: number } = { from: null, adopted: 0, rejected: [], unused: 0, handedTo: null, recordsImported: 0 };
  private draining: Promise<void> | null = null;

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
          if (lp.state !== 'enrolled') continue;
          try {
            const st = dp.podStats(lp.info.ip);
            if (st) out.push({ namespace: lp.info.namespace, name: lp.info.name, stats: { ...st } });
          } catch { /* a map read failing must not fail the scrape */ }
        }
        return out;
      },
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

  count(reason: string): void {
    this.counters.set(reason, (this.counters.get(reason) ?? 0) + 1);
    this.metrics.countEvent(reason);
  }

  private async listen(server: http.Server, port: number, address: string, what: NodeRole, setting: string): Promise<void> {
    const fd = this.inherited?.take('node', what, { ip: address, port }) ?? null;
    if (fd !== null) this.handoverInfo.adopted++;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new AmbientError('LISTENER_FAILED', `${what} listener ${address}:${port}: ${e.code}`, `another agent runs in this network namespace (hand-over needs handoverSocket set alike on both), or change ${setting}`, { cause: e })));
      if (fd !== null) server.listen({ fd }, () => resolve());
      else server.listen(port, address, () => resolve());
    });
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
      this.inherited = requestHandover(this.native, sock, this.cfg.node);
      if (this.inherited) {
        this.handoverInfo.from = this.inherited.fromPid;
        this.log.info('taking over from the running agent', { pid: this.inherited.fromPid, sockets: this.inherited.size });
      }
    } catch (e) {
      this.count('handover_failed');
      this.log.warn('hand-over from the running agent failed; starting on fresh sockets', { socket: sock, error: errorMessage(e) });
    }
  }

  /** After the first reconcile: the old agent may stop accepting; then we serve the hand-over socket ourselves. */
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
      inh.ack();
      this.count('handover_adopted');
      this.log.info('took over the listening sockets', { from: inh.fromPid, adopted: this.handoverInfo.adopted, rejected: inh.rejected.length, unused: unused.length });
    }
    if (!this.cfg.handoverSocket) return;
    const hs = new HandoverServer({
      native: this.native, socketPath: this.cfg.handoverSocket, node: this.cfg.node, log: this.log.child('handover'),
      listeners: async () => {
        // no enrollment while a successor takes the sockets: it would bind
        // a pod's ports the successor binds too
        this.paused = true;
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
        this.paused = false;
        if (this.pendingSnapshot) this.schedule(this.pendingSnapshot);
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
      count: (r) => this.count(r), identities: this.identities,
      originalDst: (src) => this.datapath?.originalDst(src) ?? null,
      index: () => this.index,
      authorize: (dst, src) => this.authorize(dst, src),
      localPodByIp: (ip) => {
        const lp = this.podsByIp.get(ip);
        return lp && lp.state === 'enrolled' ? lp : null;
      },
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
    await source.start();
    if (!(source instanceof WorkloadFileSource)) this.schedule(source.current);
    await this.reconciling;
    await this.settle();
    await this.finishTakeOver();
    this.discovered = true;
    if (cfg.readyFile) fs.writeFileSync(cfg.readyFile, `${process.pid}\n`);
    this.log.info('agent ready', { node: cfg.node, enrolled: [...this.pods.values()].filter((p) => p.state === 'enrolled').length });
  }

  /** Waits until every queued reconcile ran. */
  async settle(): Promise<void> {
    for (;;) {
      const p = this.reconciling;
      await p;
      if (p === this.reconciling && (!this.pendingSnapshot || this.paused)) return;
    }
  }

  private schedule(s: WorkloadSnapshot): void {
    this.pendingSnapshot = s;
    if (this.paused) return; // applied when the hand-over is aborted (or never: we drain)
    this.reconciling = this.reconciling.then(() => {
      const next = this.pendingSnapshot;
      if (this.paused) return;
      this.pendingSnapshot = null;
      if (next && !this.stopped) return this.reconcile(next);
    });
  }

  private isLocal(p: PodInfo): boolean {
    return p.node === null || p.node === this.cfg.node;
  }

  private async reconcile(s: WorkloadSnapshot): Promise<void> {
    this.snapshot = s;
    this.index = new MeshIndex(s, this.cfg.trustDomain);
    this.updatePolicies(s);
    const dp = this.datapath!;
    const wanted = new Map<string, PodInfo>();
    for (const [k, p] of s.pods) if (this.isLocal(p) && isEnrolled(p, s.namespaces)) wanted.set(k, p);

    // unenroll what is no longer wanted (or changed address/netns/cgroup)
    for (const [k, lp] of this.pods) {
      const w = wanted.get(k);
      const changed = w && (w.ip !== lp.info.ip || w.netns !== lp.info.netns || w.cgroup !== lp.info.cgroup);
      if (!w || changed) await this.unenroll(k);
    }
    // pinned state of pods this agent does not know (stale, from an earlier run)
    for (const k of dp.pinnedPods()) {
      if (!wanted.has(k) && !this.pods.has(k)) {
        this.log.info('removing stale redirection', { pod: k });
        dp.unenroll(k, null);
      }
    }
    const wantedIps = new Set([...wanted.values()].map((p) => p.ip));
    for (const ip of dp.enrolledIps()) if (!wantedIps.has(ip)) dp.forgetIp(ip);
    for (const [k, p] of wanted) {
      const cur = this.pods.get(k);
      if (cur && cur.state === 'enrolled') { cur.info = p; continue; }
      await this.enroll(p);
    }
    // policies, labels or identities may have changed: live connections are checked again
    const closed = this.mesh?.recheck() ?? 0;
    if (closed) this.log.info('policy re-check closed connections', { closed });
  }

  private async enroll(p: PodInfo): Promise<void> {
    const key = podKey(p);
    const prev = this.pods.get(key);
    const identity = podSpiffeId(p, this.cfg.trustDomain);
    const lp: LocalPod = { key, info: p, identity, index: prev?.index ?? this.nextIndex++, state: 'failed', error: null, listeners: [], enrolledAt: null, netnsInode: null };
    this.pods.set(key, lp);
    this.podsByIp.set(p.ip, lp);
    const t0 = process.hrtime.bigint();
    try {
      if (!p.netns) throw new AmbientError('NETNS_UNAVAILABLE', `pod ${key} has no netns path`, 'set "netns" for local pods in the workload file');
      if (!p.cgroup) throw new AmbientError('CGROUP_UNAVAILABLE', `pod ${key} has no cgroup path`, 'set "cgroup" for local pods in the workload file');
      if (p.ip.includes(':')) throw new AmbientError('KERNEL_FEATURE_MISSING', `pod ${key}: IPv6-only pods are not captured yet`, 'give the pod an IPv4 address; IPv6 capture is planned on the same maps');
      const dp = this.datapath!;
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
          l = await listenInNetns(this.native, p.netns!, bind, this.cfg.mark, onConn);
        }
        lp.listeners.push({ ...l, role });
        return l;
      };
      const out = await listen('outbound', { ip: p.ip, port: outbound }, (s) => mesh.onOutbound(lp, s));
      const inb = await listen('inbound', { ip: '127.0.0.1', port: inbound }, (s) => mesh.onInbound(lp, s));
      const hb = await listen('hbone', { ip: p.ip, port: hbone }, (s) => mesh.hbone.handle(s));
      dp.registerListener(p.ip, outbound, out.fd);
      dp.registerListener(p.ip, inbound, inb.fd);
      dp.registerListener(p.ip, hbone, hb.fd);
      const adopted = dp.isPinned(key);
      dp.enroll({ key, ip: p.ip, netns: p.netns, cgroup: p.cgroup, index: lp.index, exemptSrc: this.cfg.nodeIP });
      lp.state = 'enrolled';
      lp.enrolledAt = new Date().toISOString();
      // fetched ahead (after redirection is active) so the first connection does not wait for it
      this.prefetchCertificate(identity);
      this.log.info('pod enrolled', { pod: key, ip: p.ip, adopted, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    } catch (e) {
      const err = e instanceof AmbientError ? e : new AmbientError('LISTENER_FAILED', errorMessage(e), 'see the agent log');
      lp.state = 'failed';
      lp.error = { code: err.code, message: err.message, hint: err.hint };
      this.count('pod_enroll_failed');
      this.log.error('pod enrollment failed', { pod: key, error: err.toJSON() });
      for (const l of lp.listeners) l.server.close();
      lp.listeners = [];
    }
  }

  private async unenroll(key: string): Promise<void> {
    const lp = this.pods.get(key);
    if (!lp) return;
    this.pods.delete(key);
    if (this.podsByIp.get(lp.info.ip) === lp) this.podsByIp.delete(lp.info.ip);
    this.mesh?.releasePod(key);
    try {
      this.datapath!.unenroll(key, lp.info.ip);
    } catch (e) {
      this.log.error('pod unenroll failed', { pod: key, error: errorMessage(e) });
    }
    for (const l of lp.listeners) l.server.close();
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
   * one by one and never make the node unready: one pod whose enrollment
   * failed (e.g. its netns vanished) must not take the node's other pods out.
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
    const pods = this.localPodStates().map((p) => ({ pod: `${p.namespace}/${p.name}`, state: p.state, ...(p.error ? { error: { code: p.error.code, message: p.error.message } } : {}) }));
    return { ready: pending.length === 0, pending, pods };
  }

  configDump(): unknown {
    const dp = this.datapath;
    const workloads = [...this.snapshot.pods.values()].map((p) => {
      const key = podKey(p);
      const lp = this.pods.get(key);
      const local = this.isLocal(p);
      const ambient = isEnrolled(p, this.snapshot.namespaces);
      const state: PodState = !local ? 'remote' : lp ? lp.state : 'not-enrolled';
      let redirect: Record<string, string> | null = null;
      if (lp?.state === 'enrolled' && dp) {
        const st = dp.podStats(p.ip);
        redirect = st ? Object.fromEntries(Object.entries(st).map(([k, v]) => [k, v.toString()])) : {};
      }
      return {
        name: p.name, namespace: p.namespace, serviceAccount: p.serviceAccount, identity: podSpiffeId(p, this.cfg.trustDomain), node: p.node, ip: p.ip,
        netns: p.netns, cgroup: p.cgroup, labels: p.labels, ambient, state,
        ...(lp?.error ? { error: lp.error } : {}), ...(lp?.enrolledAt ? { enrolledAt: lp.enrolledAt } : {}),
        ...(redirect ? { redirect } : {}),
      };
    });
    return {
      node: this.cfg.node,
      pid: process.pid,
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
      } : null,
      counters: Object.fromEntries(this.counters),
      handover: { socket: this.cfg.handoverSocket, ...this.handoverInfo, draining: this.draining !== null },
      readiness: this.readiness(),
    };
  }

  /**
   * Graceful end (SIGTERM, or a successor took our sockets): no new
   * connections (they go to the successor, or are refused: fail closed),
   * GOAWAY on HBONE sessions, established connections run on until they end
   * or drainTimeout passes; then stop(). Emits 'drained' on this.lifecycle.
   */
  drain(reason: string): Promise<void> {
    if (this.draining) return this.draining;
    this.draining = (async () => {
      const t0 = Date.now();
      const handedOver = this.handoverInfo.handedTo !== null;
      this.stopped = true;
      this.source?.stop();
      await this.reconciling.catch(() => undefined);
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
    if (this.stopping) return;
    this.stopping = true;
    this.stopped = true;
    this.source?.stop();
    await this.reconciling.catch(() => undefined);
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
  }
}

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
