/**
 * Everything the agent holds for one local pod, owned in one place: its
 * network namespace (a NetnsHandle, open for the capture's lifetime: a reused
 * pid cannot retarget it; every netns path handed on is the handle's
 * /proc/self/fd/N), its three listeners, its datapath entries and links
 * (through the Datapath API), and a lease on its SPIFFE identity (the
 * certificate is forgotten when the node's last pod of that identity goes).
 *
 *   enroll()   capture the pod (listeners, amb_listeners, entries, links);
 *              on failure it is isolated (fails closed) and retried later
 *   isolate()  fail closed: the datapath refuses its TCP both ways
 *   release()  unenroll: all of the above undone, exactly once
 *   detach()   the agent stops: listeners and netns handle closed, the
 *              datapath state stays pinned (the pod fails closed until an
 *              agent comes back)
 */
import fs from 'node:fs';
import type net from 'node:net';
import type { Datapath, Isolation } from '../datapath/datapath.js';
import type { NativeAddon } from '../datapath/native-api.js';
import { errnoName } from '../datapath/native.js';
import { NetnsHandle } from '../datapath/netns.js';
import { foreignListeners, type PodListener } from '../datapath/sockets.js';
import type { PodInfo } from '../discovery/model.js';
import type { HandoverEntry } from '../lifecycle/handover.js';
import type { MeshPod } from '../proxy/mesh.js';
import { LIVE_STATES, PROBE_SNAT_IPS, retryDelayMs, socketsToReset } from '../capture/plan.js';
import { AmbientError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { ipsOf } from './reconciler.js';
import type { IdentityLease, IdentityLeases } from './identity-lease.js';
import { formatHostPort } from '../util/hostport.js';
import { ipFamily } from '../util/address.js';

/**
 * enrolled: captured. isolated: enrollment failed and the pod fails closed
 * (the datapath refuses its TCP; retried with back-off). failed: not even
 * isolation could be put in place (its netns/cgroup are missing: the pod
 * sandbox is gone or its paths are wrong).
 */
export type CaptureState = 'enrolled' | 'isolated' | 'failed';

export type PodRole = 'outbound' | 'inbound' | 'hbone';

export interface PodError {
  code: string;
  message: string;
  hint: string;
}

/** What a capture needs of a netns handle (NetnsHandle; a fake in unit tests). */
export type NetnsRef = Pick<NetnsHandle, 'path' | 'inode' | 'source' | 'sameAs' | 'close'>;

/** The Datapath calls a capture makes. */
export type CaptureDatapath = Pick<Datapath, 'isPinned' | 'cgroupIdOf' | 'registerListener' | 'enroll' | 'isolate' | 'unenroll'>;

export interface ListenRequest {
  key: string;
  /** the pod as the data plane sees it (a worker gets a copy with the listener) */
  pod: MeshPod;
  role: PodRole;
  bind: { ip: string; port: number };
  netns: NetnsRef;
  onConnection(s: net.Socket): void;
}

/** The in-pod return path of client-address preservation (src/datapath/return-path.ts). */
export interface ReturnPathOps {
  /** the mark of the agent's transparent sockets (and so of the app sockets they reach) */
  mark: number;
  enable(netns: string, families: Array<4 | 6>): void;
  disable(netns: string, families: Array<4 | 6>): void;
}

export interface CaptureDeps {
  ports: { outbound: number; inbound: number; hbone: number };
  mark: number;
  /** set up per pod so apps see their clients' addresses; null: they see the pod's own */
  returnPath?: ReturnPathOps | null;
  /** the node's address: its traffic to pods is not captured (kubelet probes) */
  nodeIP: string | null;
  datapath: CaptureDatapath;
  native: Pick<NativeAddon, 'tcpSockets' | 'destroyTcpSockets'>;
  /** opens a pod's netns (default openPodNetns) */
  openNetns(path: string, owner: string): NetnsRef;
  /** a listening socket in the pod's netns: inherited from the previous agent, or new */
  listen(req: ListenRequest): Promise<PodListener>;
  /** the proxy serving the pod's listeners */
  proxy: {
    outbound(pod: MeshPod, s: net.Socket): void;
    inbound(pod: MeshPod, s: net.Socket): void;
    hbone(s: net.Socket): void;
    /** the pod is no longer captured (its HBONE pool goes) */
    release(key: string): void;
  };
  leases: IdentityLeases;
  /** fetch this identity's certificate ahead of the first connection */
  prefetch(id: string): void;
  count(reason: string, n?: number): void;
  countEnrollFailure(code: string): void;
  log: Logger;
  now(): number;
}

const noNetnsPath = (key: string): AmbientError =>
  new AmbientError('NETNS_UNAVAILABLE', `pod ${key} has no netns path`, 'set "netns" for local pods in the workload file');

/** Opens a pod's netns, with the error a missing one always had. */
export function openPodNetns(path: string, owner: string): NetnsHandle {
  if (!fs.existsSync(path))
    throw new AmbientError(
      'NETNS_UNAVAILABLE',
      `${owner}: netns ${path} does not exist`,
      'the pod sandbox is gone or the netns path is wrong; the pod is isolated until its netns exists',
    );
  return NetnsHandle.open(path, owner);
}

export class PodCapture implements MeshPod {
  readonly key: string;
  private podValue: PodInfo;
  /** podValue as the proxy sees it: netns = the handle's path */
  private view: PodInfo;
  private netns: NetnsRef | null = null;
  private readonly lease: IdentityLease;
  private life: 'live' | 'released' | 'detached' = 'live';
  private stateValue: CaptureState = 'failed';
  private errorValue: PodError | null = null;
  private cgroup: bigint | null = null;
  /** the addresses the datapath holds for it */
  private held: string[] = [];
  private listeners: Array<PodListener & { role: PodRole }> = [];
  /** its return path is in place (MeshPod.clientAddress) */
  clientAddress = false;
  private enrolledAt: string | null = null;
  /** consecutive failed attempts, and when the next one is due (ms epoch) */
  private failures = 0;
  private retryAtValue = 0;
  /** what isolate() put in place after a failure */
  private isolation: Isolation | null = null;
  /** connections opened before the pod was captured, reset at its first capture */
  private preexistingReset: number | null = null;
  /** error codes already logged at error level (a retry that fails alike logs at debug) */
  private readonly reported = new Set<string>();

  constructor(
    private readonly d: CaptureDeps,
    pod: PodInfo,
    readonly identity: string,
  ) {
    this.key = `${pod.namespace}/${pod.name}`;
    this.podValue = pod;
    this.view = pod;
    this.lease = d.leases.acquire(identity);
  }

  /** The pod's snapshot entry, as last applied. */
  get pod(): PodInfo {
    return this.podValue;
  }
  /** The pod for the proxy: its netns is the handle's path (null when none is open). */
  get info(): PodInfo {
    return this.view;
  }
  get state(): CaptureState {
    return this.stateValue;
  }
  get error(): PodError | null {
    return this.errorValue;
  }
  get errorCode(): string | null {
    return this.errorValue?.code ?? null;
  }
  get cgroupId(): bigint | null {
    return this.cgroup;
  }
  get ips(): readonly string[] {
    return this.held;
  }
  get retryAt(): number {
    return this.retryAtValue;
  }
  get netnsInode(): bigint | null {
    return this.netns?.inode ?? null;
  }
  get released(): boolean {
    return this.life !== 'live';
  }

  /** What config_dump shows of the capture. */
  status(): {
    cgroupId: bigint | null;
    error: PodError | null;
    enrolledAt: string | null;
    isolation: Isolation | null;
    attempts: number;
    retryAt: number;
    preexistingReset: number | null;
    clientAddress: boolean;
  } {
    return {
      clientAddress: this.clientAddress,
      cgroupId: this.cgroup,
      error: this.errorValue,
      enrolledAt: this.enrolledAt,
      isolation: this.isolation,
      attempts: this.failures,
      retryAt: this.retryAtValue,
      preexistingReset: this.preexistingReset,
    };
  }

  /** A new snapshot entry that needs no new capture (labels, readiness). */
  update(pod: PodInfo): void {
    this.podValue = pod;
    this.refreshView();
  }

  private refreshView(): void {
    const netns = this.netns && this.life === 'live' ? this.netns.path : null;
    this.view = netns === this.podValue.netns ? this.podValue : { ...this.podValue, netns };
  }

  private assertLive(what: string): void {
    if (this.life !== 'live')
      throw new AmbientError(
        'CAPTURE_RELEASED',
        `pod ${this.key}: ${what} after its capture was ${this.life}`,
        'a bug in ambientd: report it with the agent log',
      );
  }

  /**
   * The handle of the pod's netns, opened on first use. On a retry, the path
   * must still name the namespace the handle holds (else the sandbox was
   * replaced, or the pid reused: the pod stays isolated until its entry
   * changes).
   */
  private openNetns(): NetnsRef {
    const path = this.podValue.netns;
    if (!path) throw noNetnsPath(this.key);
    if (this.netns) {
      if (!this.netns.sameAs(path))
        throw new AmbientError(
          'NETNS_UNAVAILABLE',
          `pod ${this.key}: netns ${path} no longer names the namespace it was first seen in`,
          'the pod sandbox was re-created or its process is gone; the pod is isolated until its entry names its new netns',
        );
      return this.netns;
    }
    this.netns = this.d.openNetns(path, `pod ${this.key}`);
    this.refreshView();
    return this.netns;
  }

  /** Captures the pod; a failure isolates it instead (and is reported). */
  async enroll(): Promise<void> {
    this.assertLive('enroll');
    const d = this.d;
    const p = this.podValue;
    const key = this.key;
    this.closeListeners();
    this.stateValue = 'failed';
    this.errorValue = null;
    this.cgroup = null;
    this.held = [];
    this.enrolledAt = null;
    this.retryAtValue = 0;
    this.isolation = null;
    const t0 = process.hrtime.bigint();
    const dp = d.datapath;
    // a pod captured (or isolated) for the first time: what it opened before is reset after
    const firstCapture = !dp.isPinned(key);
    try {
      if (!p.netns) throw noNetnsPath(key);
      if (!p.cgroup) throw new AmbientError('CGROUP_UNAVAILABLE', `pod ${key} has no cgroup path`, 'set "cgroup" for local pods in the workload file');
      const netns = this.openNetns();
      this.held = ipsOf(p);
      const cgroupId = dp.cgroupIdOf({ key, cgroup: p.cgroup });
      this.cgroup = cgroupId;
      // one set of listeners per family the pod has (status.podIPs: at most one address of each)
      const v4 = this.held.find((ip) => ipFamily(ip) === 4);
      const v6 = this.held.find((ip) => ipFamily(ip) === 6);
      const { outbound, inbound, hbone } = d.ports;
      const listen = async (role: PodRole, bind: { ip: string; port: number }, onConnection: (s: net.Socket) => void): Promise<PodListener> => {
        const l = await d.listen({ key, pod: this, role, bind, netns, onConnection });
        this.listeners.push({ ...l, role });
        // released while the socket was being made: it is ours to close
        if (this.life !== 'live') this.closeListeners();
        return l;
      };
      const registered: Array<[number, number, 4 | 6]> = [];
      for (const [ip, loopback, family] of [
        [v4, '127.0.0.1', 4],
        [v6, '::1', 6],
      ] as const) {
        if (ip === undefined) continue;
        // outbound on the pod's own address (connect4/6 rewrite to it: the app socket's address keys its
        // original destination, unique across pods), inbound on loopback (only sk_lookup hands it SYNs),
        // HBONE on the pod's address
        const out = await listen('outbound', { ip, port: outbound }, (s) => d.proxy.outbound(this, s));
        const inb = await listen('inbound', { ip: loopback, port: inbound }, (s) => d.proxy.inbound(this, s));
        const hb = await listen('hbone', { ip, port: hbone }, (s) => d.proxy.hbone(s));
        registered.push([outbound, out.fd, family], [inbound, inb.fd, family], [hbone, hb.fd, family]);
      }
      this.assertLive('enroll');
      for (const [port, fd, family] of registered) dp.registerListener(cgroupId, port, fd, family);
      dp.enroll({ key, cgroupId, ips: this.held, netns: netns.path, cgroup: p.cgroup, exemptSrc: d.nodeIP });
      // the bind hooks are in place: no app can take an agent port from now on; one taken before is found here
      this.assertOwnListeners(netns.path);
      this.enableReturnPath(netns.path);
      this.stateValue = 'enrolled';
      this.failures = 0;
      this.enrolledAt = new Date(d.now()).toISOString();
      if (firstCapture) this.resetPreexisting();
      // fetched ahead (after redirection is active) so the first connection does not wait for it
      d.prefetch(this.identity);
      d.log.info('pod enrolled', { pod: key, ips: this.held, adopted: !firstCapture, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    } catch (e) {
      if (this.life !== 'live') return;
      const err = e instanceof AmbientError ? e : new AmbientError('LISTENER_FAILED', errorMessage(e), 'see the agent log');
      this.isolate(err, new Set(), firstCapture);
    }
  }

  /**
   * A pod that cannot be captured fails closed: its listeners go, the
   * datapath isolates it (its TCP is refused both ways, no listener needed),
   * and it is reported (metric, readiness detail, config_dump, log) and
   * retried with back-off (an IP conflict: when it is resolved).
   */
  isolate(err: AmbientError, sharedIps: ReadonlySet<string>, firstCapture = !this.d.datapath.isPinned(this.key)): void {
    this.assertLive('isolate');
    const d = this.d;
    const p = this.podValue;
    this.closeListeners();
    d.proxy.release(this.key);
    if (this.held.length === 0) this.held = ipsOf(p);
    if (this.cgroup === null && p.cgroup) {
      try {
        this.cgroup = d.datapath.cgroupIdOf({ key: this.key, cgroup: p.cgroup });
      } catch {
        /* missing: inbound-only isolation */
      }
    }
    let netns: string | null = null;
    try {
      netns = this.openNetns().path;
    } catch {
      /* missing: outbound-only isolation */
    }
    this.isolation = d.datapath.isolate({ key: this.key, cgroupId: this.cgroup, ips: this.held, netns, cgroup: p.cgroup, exemptSrc: d.nodeIP }, sharedIps);
    this.stateValue = this.isolation.outbound || this.isolation.inbound ? 'isolated' : 'failed';
    this.errorValue = { code: err.code, message: err.message, hint: err.hint };
    this.enrolledAt = null;
    this.failures++;
    this.retryAtValue = d.now() + retryDelayMs(this.failures);
    if (firstCapture && this.isolation.outbound) this.resetPreexisting();
    d.count('pod_enroll_failed');
    d.countEnrollFailure(err.code);
    const fields = {
      pod: this.key,
      state: this.stateValue,
      isolation: this.isolation,
      error: err.toJSON(),
      retryInMs: err.code === 'POD_IP_CONFLICT' ? null : this.retryAtValue - d.now(),
      attempt: this.failures,
    };
    if (this.reported.has(err.code)) d.log.debug('pod enrollment failed again', fields);
    else {
      this.reported.add(err.code);
      d.log.error(
        this.stateValue === 'isolated'
          ? 'pod enrollment failed: the pod is isolated (its TCP is refused) until it can be enrolled'
          : 'pod enrollment failed and the pod could not be isolated (its netns/cgroup are missing)',
        fields,
      );
    }
  }

  /** Resets the TCP connections a pod opened before it was captured (sock_diag SOCK_DESTROY). */
  private resetPreexisting(): void {
    const d = this.d;
    const netns = this.netns?.path;
    if (!netns) return;
    const socks = d.native.tcpSockets(netns, LIVE_STATES);
    const fail = (rc: number): void => {
      d.count('preexisting_reset_failed');
      const name = errnoName(rc);
      d.log.warn('could not reset the connections a pod opened before it was captured', {
        pod: this.key,
        error: name,
        hint: name === 'EOPNOTSUPP' ? 'the kernel lacks CONFIG_INET_DIAG_DESTROY: restart the pod to close them' : 'restart the pod to close them',
      });
    };
    if (typeof socks === 'number') {
      fail(socks);
      return;
    }
    const stale = socketsToReset(socks, {
      ips: this.held,
      marks: [d.mark, ...(d.returnPath ? [d.returnPath.mark] : [])],
      exempt: [d.nodeIP, ...PROBE_SNAT_IPS].filter((x): x is string => !!x),
    });
    if (stale.length === 0) {
      this.preexistingReset = 0;
      return;
    }
    const n = d.native.destroyTcpSockets(netns, stale);
    if (n < 0) {
      fail(n);
      return;
    }
    this.preexistingReset = n;
    d.count('preexisting_connection_reset', n);
    d.log.info('connections opened before the pod was captured were reset', {
      pod: this.key,
      count: n,
      peers: stale.slice(0, 10).map((s) => formatHostPort({ ip: s.dst, port: s.dport })),
    });
  }

  /**
   * Every listening socket on the agent's ports in the pod is the agent's. An
   * app that bound one with SO_REUSEPORT (same uid) before the pod was
   * enrolled would be in the agent's group and get a share of its
   * connections, around the mesh: the pod is isolated instead (fail closed,
   * retried) until the app lets the port go.
   */
  private assertOwnListeners(netnsPath: string): void {
    const own = new Set<bigint>();
    for (const l of this.listeners)
      for (const fd of l.fds) {
        try {
          own.add(fs.fstatSync(fd, { bigint: true }).ino);
        } catch {
          /* closed meanwhile: its inode is nobody's */
        }
      }
    const { outbound, inbound, hbone } = this.d.ports;
    const foreign = foreignListeners(this.d.native, netnsPath, [outbound, inbound, hbone], own);
    if (foreign.length === 0) return;
    const f = foreign[0]!;
    throw new AmbientError(
      'LISTENER_FAILED',
      `a socket that is not the agent's listens on ${formatHostPort(f)} in pod ${this.key} (uid ${f.uid}); ${foreign.length} such`,
      "an app in the pod bound one of the agent's ports (15001/15006/15008, or `ports`) before the pod was enrolled: free the port in the app; the pod stays isolated (its TCP refused) until then",
    );
  }

  /** Its listening sockets, for a successor (enrolled pods only). */
  handoverEntries(): Array<{ entry: HandoverEntry; fd: number }> {
    if (this.stateValue !== 'enrolled' || this.life !== 'live') return [];
    const ino = this.netnsInode;
    // every socket of each listener: one per data-plane worker (its SO_REUSEPORT group)
    return this.listeners.flatMap((l) =>
      l.fds.map((fd) => ({
        entry: { kind: 'pod' as const, role: l.role, key: this.key, ip: l.ip, port: l.port, ...(ino !== null ? { netnsInode: String(ino) } : {}) },
        fd,
      })),
    );
  }

  /** Stops accepting (drain, stop, a new attempt); the datapath state stays. */
  closeListeners(): void {
    for (const l of this.listeners) l.close();
    this.listeners = [];
  }

  private families(): Array<4 | 6> {
    return [...new Set(this.held.map((ip) => ipFamily(ip)))];
  }

  /**
   * The return path that lets the agent reach the app from its client's
   * address. Without it (disabled, or it could not be set up) the app sees
   * the pod's own address, as before: logged and counted, never a refusal.
   */
  private enableReturnPath(netns: string): void {
    const rp = this.d.returnPath;
    this.clientAddress = false;
    if (!rp) return;
    try {
      rp.enable(netns, this.families());
      this.clientAddress = true;
    } catch (e) {
      this.d.count('return_path_failed');
      this.d.log.warn("the pod's return path could not be set up: its app sees the pod's own address as its clients'", {
        pod: this.key,
        error: errorMessage(e),
        ...(e instanceof AmbientError ? { code: e.code, hint: e.hint } : {}),
      });
    }
  }

  private disableReturnPath(): void {
    const rp = this.d.returnPath;
    const netns = this.netns?.path;
    if (!rp || !netns || !this.clientAddress) return;
    this.clientAddress = false;
    try {
      rp.disable(netns, this.families());
    } catch (e) {
      this.d.log.warn("the pod's return path could not be removed", { pod: this.key, error: errorMessage(e) });
    }
  }

  /**
   * Unenrolls: the proxy's pool, the datapath's links and entries (an
   * address in `keepIps` stays: another live pod claims it), the listeners,
   * the identity lease and the netns handle. Once; later calls do nothing.
   */
  release(keepIps: ReadonlySet<string> = new Set()): void {
    if (this.life !== 'live') return;
    this.life = 'released';
    const d = this.d;
    d.proxy.release(this.key);
    try {
      d.datapath.unenroll({ key: this.key, cgroupId: this.cgroup, ips: this.held }, keepIps);
    } catch (e) {
      d.log.error('pod unenroll failed', { pod: this.key, error: errorMessage(e) });
    }
    this.closeListeners();
    this.disableReturnPath();
    // its certificate is not renewed any more once no local pod has that identity
    this.lease.release();
    this.closeNetns();
    d.log.info('pod unenrolled', { pod: this.key });
  }

  /** The agent stops: listeners and the netns handle close, the datapath keeps the pod pinned (fail closed). */
  detach(): void {
    if (this.life !== 'live') return;
    this.life = 'detached';
    this.closeListeners();
    this.closeNetns();
  }

  private closeNetns(): void {
    this.netns?.close();
    this.netns = null;
    this.refreshView();
  }
}
