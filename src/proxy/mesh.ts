// Over 500 lines on purpose: the three paths of a captured connection (outbound, inbound plaintext, inbound HBONE) share one context, policy re-check and record keeping; service choice and Forwarded parsing are in services.ts and forwarded.ts.
/**
 * What the agent does with a captured connection:
 *
 *   outbound (15001): the original destination is an enrolled workload →
 *     HBONE: an HTTP/2 CONNECT stream over mTLS to <dst pod IP>:15008, dialled
 *     from inside the source pod's netns, presenting the source workload's
 *     certificate and requiring the destination's SPIFFE id;
 *     anything else → plaintext passthrough from the source pod's netns.
 *   inbound plaintext (15006): relayed to the app; no peer identity.
 *   inbound HBONE (15008): mTLS + CONNECT handled by the HBONE server, then
 *     relayed to the app inside the destination pod.
 *
 * What is trusted (docs/SECURITY.md): the peer's identity comes only from its
 * verified certificate; the source address used for policy, records and
 * metrics only from the kernel (the TCP peer of the connection: on HBONE the
 * address the tunnel came from, as ztunnel does). The `Forwarded` header is
 * what the peer *claims*; it is kept as `claimedSrc` and never decides
 * anything. A tunnel never targets a port the agent owns.
 */
import net from 'node:net';
import type { NativeAddon } from '../datapath/native-api.js';
import { DialError, dialFromNetns, type AgentSocketOptions } from '../datapath/sockets.js';
import type { Sockaddr } from '../datapath/codec.js';
import type { OriginalDst } from '../datapath/datapath.js';
import { podIps, podSpiffeId, type MeshIndex, type PodInfo, type ServiceInfo, type ServicePort } from '../discovery/model.js';
import type { IdentityManager } from '../identity/manager.js';
import { HbonePool, type HboneStream } from './hbone/client.js';
import { HboneServer, type HboneServerEvent } from './hbone/server.js';
import { HboneError } from './hbone/common.js';
import { resetSocket, spliceStreamSocket } from './hbone/tunnel.js';
import type { ConnectionTracker, TrackedConnection } from './connections.js';
import { parseForwardedFor } from './forwarded.js';
import { chooseEndpoint } from './services.js';
import { CLIENT_GONE, CLOSED, dialFailed, hboneFailed, type Outcome } from './outcome.js';
import { formatHostPort, type HostPort } from '../util/hostport.js';
import { canonicalIp, FAMILY_NAME, ipFamily, type IpFamily } from '../util/address.js';
import { relay } from './relay.js';
import { DEFAULT_LIMITS, Limiter, WindowBudget, type Limits } from './limits.js';
import { livenessParams, type LivenessParams } from './liveness.js';
import type { Logger } from '../util/log.js';
import { AmbientError } from '../util/errors.js';

export interface MeshPod {
  key: string;
  info: PodInfo;
  identity: string;
  /** the pod's cgroup id: original-destination entries must belong to it */
  cgroupId: bigint | null;
  /** its return path is in place: the agent reaches its app from the client's address (MeshDeps.clientAddress) */
  clientAddress?: boolean;
}

export interface MeshDeps {
  native: NativeAddon;
  mark: number;
  /**
   * Inbound connections reach the app from the client's address (HBONE: the
   * tunnel's TCP peer; plaintext: the captured connection's peer), with this
   * mark on the agent's transparent socket; null: from the pod's own address.
   * Only for pods whose return path is in place (MeshPod.clientAddress).
   */
  clientAddress?: { mark: number } | null;
  ports: { outbound: number; inbound: number; hbone: number };
  /** the agent's node ports (admin, metrics, readiness): never a tunnel target either */
  nodePorts?: number[];
  trustDomain: string;
  log: Logger;
  tracker: ConnectionTracker;
  count(reason: string): void;
  identities: IdentityManager;
  /** original destination of a captured outbound connection, by its source (with the socket's pod) */
  originalDst(src: Sockaddr): OriginalDst | null;
  /** the current mesh model with its indexes */
  index(): MeshIndex;
  /** an enrolled pod of this node by IP */
  localPodByIp(ip: string): MeshPod | null;
  /** L4 authorization at the destination; src.id is the peer's SPIFFE id, null on plaintext */
  authorize(dst: { pod: PodInfo; ip: string; port: number }, src: { ip: string; id: string | null }): AuthzDecision;
  /** caps and flow-control budget (src/proxy/limits.ts); default DEFAULT_LIMITS */
  limits?: Limits;
  /** liveness of every socket and session (src/proxy/liveness.ts); default from 30 s */
  liveness?: LivenessParams;
  /** a limit was hit (reason "limit_*"): logged once by the caller with what to change */
  onLimit?(reason: string, message: string): void;
}

/** Sockets of the data path by reporter (istio_tcp_sockets_open): source = outbound side, destination = inbound side. */
export type SocketReporter = 'source' | 'destination';

export interface AuthzDecision {
  allow: boolean;
  /** namespace/name of the deciding policy, if any */
  policy: string | null;
  reason: string;
}

/** An inbound connection that is live now: re-checked when policies change. */
interface LiveInbound {
  pod: MeshPod;
  dst: Sockaddr;
  src: { ip: string; id: string | null };
  rec: TrackedConnection | null;
  /** closes it: RST to the client (plaintext) or RST_STREAM (HBONE) */
  kill(): void;
}

/** A service VIP's connection: the service and the endpoint chosen. */
interface ServiceVia {
  service?: string;
  endpoint?: HostPort;
}

function baggage(p: PodInfo): string {
  const app = p.labels['app.kubernetes.io/name'] ?? p.labels.app ?? p.name;
  const version = p.labels['app.kubernetes.io/version'] ?? p.labels.version ?? 'latest';
  return `k8s.cluster.name=Kubernetes,k8s.namespace.name=${p.namespace},k8s.pod.name=${p.name},service.name=${app},service.version=${version}`;
}

/** The options of an agent socket of this kind (MeshProxy.socketOptions; the control thread's listeners with workers). */
export function agentSocketOptions(liveness: LivenessParams, limits: Pick<Limits, 'socketBuffer'>, kind: 'app' | 'remote' | 'hbone'): AgentSocketOptions {
  const { userTimeoutMs, ...keep } = liveness.tcp;
  return {
    liveness: kind === 'hbone' ? { ...keep, userTimeoutMs: userTimeoutMs ?? 0 } : keep,
    ...(kind === 'app' ? { socketBuffer: limits.socketBuffer } : {}),
  };
}

/** An accepted connection older than this (since its app side was established) has no business with its entry. */
const ORIGINAL_DST_MAX_AGE_NS = 60_000_000_000n;

export class MeshProxy {
  readonly hbone: HboneServer;
  private readonly pools = new Map<string, HbonePool>();
  readonly limits: Limits;
  readonly liveness: LivenessParams;
  /** the node-wide per-stream window of every HBONE session */
  readonly windows: WindowBudget;
  /** connections being opened at once (to apps, destinations, HBONE peers) */
  readonly dials: Limiter;
  private readonly socketsOpen: Record<SocketReporter, number> = { source: 0, destination: 0 };

  /** Counts a data-path socket until it closes. */
  private trackSocket(sock: net.Socket, reporter: SocketReporter): void {
    this.socketsOpen[reporter]++;
    sock.once('close', () => {
      this.socketsOpen[reporter]--;
    });
  }

  /** Sockets of the data path open now, by reporter. */
  openSockets(): Record<SocketReporter, number> {
    return { ...this.socketsOpen };
  }

  /**
   * Opens a connection from a pod's netns under the dial cap (refused with
   * code LIMIT_DIALS when full), with liveness options and, for the app
   * inside the pod, bounded socket buffers.
   */
  private async dial(netns: string, dst: Sockaddr, kind: 'app' | 'remote' | 'hbone', reporter: SocketReporter, from?: Sockaddr | null): Promise<net.Socket> {
    // a burst waits for a slot (bounded queue, 5 s); past that it is refused
    if (!(await this.dials.acquire(5000))) {
      this.d.count('limit_dials');
      this.d.onLimit?.('limit_dials', `${this.dials.max} connections are already being opened and ${this.dials.maxQueue} wait (limits.maxPendingDials)`);
      throw new AmbientError(
        'LIMIT_DIALS',
        `${this.dials.max} connections are being opened already (maxPendingDials)`,
        'raise limits.maxPendingDials, or look for a destination that stopped answering SYNs',
      );
    }
    let s: net.Socket;
    try {
      const opts = this.socketOptions(kind);
      const mark = this.d.clientAddress?.mark;
      if (!from || mark === undefined) s = await dialFromNetns(this.d.native, netns, dst, this.d.mark, 10_000, opts);
      else {
        // the client's address (IP_TRANSPARENT) and the return path's mark, which the app's socket inherits
        try {
          s = await dialFromNetns(this.d.native, netns, dst, mark, 10_000, { ...opts, bind: from, transparent: true });
        } catch (e) {
          // the client's port is taken in the pod (a claimed port reused, TIME_WAIT): the client's address, any port
          if (!(e instanceof DialError) || !from.port || (e.errnoName !== 'EADDRINUSE' && e.errnoName !== 'EADDRNOTAVAIL')) throw e;
          this.d.count('client_port_taken');
          s = await dialFromNetns(this.d.native, netns, dst, mark, 10_000, { ...opts, bind: { ip: from.ip, port: 0 }, transparent: true });
        }
      }
    } finally {
      this.dials.release();
    }
    this.trackSocket(s, reporter);
    return s;
  }

  /**
   * Options of the agent's sockets, set as they are made (listeners pass them
   * on to what they accept): keepalive on every one, TCP_USER_TIMEOUT on HBONE
   * connections, bounded buffers towards apps in pods.
   */
  socketOptions(kind: 'app' | 'remote' | 'hbone'): AgentSocketOptions {
    return agentSocketOptions(this.liveness, this.limits, kind);
  }

  private readonly live = new Set<LiveInbound>();
  private readonly liveByTunnel = new Map<string, LiveInbound>();
  /** captured app-side sockets (outbound and inbound plaintext), for a forced close */
  private readonly clients = new Set<net.Socket>();
  /** A captured app-side socket: tracked (for a forced close), errors reported through the relay, no Nagle. */
  private own(client: net.Socket): void {
    this.clients.add(client);
    client.once('close', () => this.clients.delete(client));
    client.on('error', () => {
      /* reported through the relay */
    });
    client.setNoDelay(true);
  }

  constructor(private readonly d: MeshDeps) {
    const agentPorts = new Set([d.ports.outbound, d.ports.inbound, d.ports.hbone, ...(d.nodePorts ?? [])]);
    this.limits = d.limits ?? DEFAULT_LIMITS;
    this.liveness = d.liveness ?? livenessParams();
    this.windows = new WindowBudget(this.limits);
    this.dials = new Limiter('pending dials', this.limits.maxPendingDials, this.limits.maxPendingDials * 4);
    this.hbone = new HboneServer({
      maxConcurrentStreams: this.limits.maxStreamsPerSession,
      maxHandshakes: this.limits.maxHandshakes,
      maxSessionsPerPeer: this.limits.maxSessionsPerPeer,
      windows: this.windows,
      liveness: this.liveness,
      // liveness options come from the HBONE listener (socketOptions('hbone')), inherited by what it accepts
      tuneSocket: (s) => {
        this.trackSocket(s, 'destination');
      },
      trustDomain: d.trustDomain,
      // a stalled or truncated handshake holds a socket at most this long
      handshakeTimeoutMs: 5000,
      getServerCert: async (localAddress) => {
        const pod = d.localPodByIp(localAddress);
        if (!pod)
          throw new AmbientError(
            'HBONE_IDENTITY',
            `no enrolled pod has address ${localAddress}`,
            'an HBONE connection arrived for an address no enrolled pod of this node has (the pod is gone or not enrolled yet)',
          );
        const c = await d.identities.get(pod.identity);
        return { key: c.keyPem, cert: c.chainPem, ca: c.rootPem };
      },
      // a tunnel into the agent itself (its own listeners, or node ports in the
      // pod): 400 before policy and before any dial
      refuseTarget: (target) => (agentPorts.has(target.port) ? 'agent_port' : null),
      authorize: (peer, target, ctx) => {
        const pod = d.localPodByIp(ctx.local.ip);
        if (!pod) return 'deny';
        // the kernel's word (the TCP peer), never the Forwarded header the peer writes
        const src = { ip: ctx.remote.ip, id: peer.id };
        const r = d.authorize({ pod: pod.info, ip: target.ip, port: target.port }, src);
        if (!r.allow) {
          d.count('policy_denied');
          d.log.info('connection denied by policy', {
            pod: pod.key,
            src: src.ip,
            peer: peer.id,
            dst: formatHostPort(target),
            policy: r.policy,
            reason: r.reason,
            via: 'hbone',
          });
        }
        return r.allow ? 'allow' : 'deny';
      },
      connectTarget: async (target, ctx) => {
        const pod = d.localPodByIp(ctx.local.ip);
        if (!pod || !pod.info.netns)
          throw new AmbientError(
            'UPSTREAM_FAILED',
            `no enrolled pod has address ${ctx.local.ip}`,
            'the destination pod was unenrolled while its tunnel was opened',
          );
        const sock = await this.dial(pod.info.netns, target, 'app', 'destination', this.clientOf(pod, target, ctx.remote.ip, ctx.forwarded));
        const key = `${ctx.connectionId}/${ctx.streamId}`;
        const entry: LiveInbound = {
          pod,
          dst: target,
          src: { ip: ctx.remote.ip, id: ctx.peer.id },
          rec: null,
          kill: () => resetSocket(sock), // the splice turns it into RST_STREAM towards the client
        };
        this.live.add(entry);
        this.liveByTunnel.set(key, entry);
        sock.once('close', () => {
          this.live.delete(entry);
          this.liveByTunnel.delete(key);
        });
        return sock;
      },
      onConnection: (ev) => this.onServerEvent(ev),
    });
  }

  spiffeOf(p: PodInfo): string {
    return podSpiffeId(p, this.d.trustDomain);
  }

  /** One pool per source pod: its sockets are made in that pod's netns. */
  private poolFor(pod: MeshPod): HbonePool {
    let pool = this.pools.get(pod.key);
    if (!pool) {
      const netns = pod.info.netns!;
      pool = new HbonePool({
        getClientCert: async (srcId) => {
          const c = await this.d.identities.get(srcId);
          return { key: c.keyPem, cert: c.chainPem, ca: c.rootPem, notAfter: c.notAfter };
        },
        createSocket: (dst) => this.dial(netns, dst, 'hbone', 'source'),
        windows: this.windows,
        maxStreamsPerSession: this.limits.maxStreamsPerSession,
        pingIntervalMs: this.liveness.pingIntervalMs,
        pingTimeoutMs: this.liveness.pingTimeoutMs,
      });
      this.pools.set(pod.key, pool);
    }
    return pool;
  }

  /** Drops a pod's pool (unenroll); its tunnels finish on their own. */
  releasePod(key: string): void {
    const pool = this.pools.get(key);
    if (!pool) return;
    this.pools.delete(key);
    void pool.close().catch(() => undefined);
  }

  /**
   * The address the app sees its inbound connection come from: the TCP peer
   * (the tunnel's for HBONE: never an address the peer merely claims). Its
   * port: for HBONE, whose TCP port is the shared tunnel's, the port of the
   * Forwarded claim when the claim names that same peer address; else (and
   * always for plaintext, whose client ip:port <-> pod ip:port tuple the
   * captured connection already holds in this netns) any port. null (the
   * pod's own address) when the pod has no return path, the families differ,
   * or the client is the pod itself.
   */
  private clientOf(pod: MeshPod, target: Sockaddr, peerIp: string, forwarded: string | undefined): Sockaddr | null {
    if (!this.d.clientAddress || !pod.clientAddress) return null;
    const ip = canonicalIp(peerIp);
    if (!ip || ipFamily(ip) !== ipFamily(target.ip)) return null;
    // the pod calling itself (through a Service VIP): its own address is the truth, and a transparent
    // socket on lo could not take the replies (routed by the local table, via the pod's eth0)
    if (podIps(pod.info).includes(ip)) return null;
    const claim = forwarded ? parseForwardedFor(forwarded) : null;
    const port = claim && claim.port && canonicalIp(claim.ip) === ip ? claim.port : 0;
    return { ip, port };
  }

  onOutbound(pod: MeshPod, client: net.Socket): void {
    const d = this.d;
    this.own(client);
    this.trackSocket(client, 'source');
    const src: HostPort = { ip: client.remoteAddress ?? '', port: client.remotePort ?? 0 };
    let orig: OriginalDst | null = null;
    try {
      orig = d.originalDst(src);
    } catch (e) {
      d.log.error('original destination lookup failed', { error: e });
    }
    if (!orig) {
      d.count('original_dst_unknown');
      d.log.once('original_dst_unknown', 'warn', 'outbound connection without an original destination (not made by a captured connect of this pod): reset', {
        pod: pod.key,
        src: formatHostPort(src),
      });
      resetSocket(client);
      return;
    }
    // the entry lives only as long as the app socket that made it, and must be
    // this pod's: a connection of any other origin is never forwarded as the pod
    if (pod.cgroupId === null || orig.cgroupId !== pod.cgroupId) {
      d.count('original_dst_foreign');
      d.log.once('original_dst_foreign', 'warn', 'outbound connection whose original destination belongs to another pod: reset', {
        pod: pod.key,
        src: formatHostPort(src),
      });
      resetSocket(client);
      return;
    }
    // ...and is made when the app's connection is established, just before we
    // accept it: one older than a connection can wait in the accept queue is
    // not this connection's (both clocks are CLOCK_MONOTONIC)
    const ageNs = process.hrtime.bigint() - orig.createdNs;
    if (ageNs > ORIGINAL_DST_MAX_AGE_NS || ageNs < -1_000_000_000n) {
      d.count('original_dst_stale');
      d.log.once('original_dst_stale', 'warn', 'outbound connection whose original-destination entry is too old to be its own: reset', {
        pod: pod.key,
        src: formatHostPort(src),
        ageMs: Number(ageNs / 1_000_000n),
      });
      resetSocket(client);
      return;
    }
    const dst = orig.dst;
    client.pause();
    const index = d.index();
    // a service VIP: pick a ready endpoint (round robin), keep the service name
    // (the model keys VIPs by "ip:port"; src/discovery/model.ts writes that key)
    const svc = index.serviceByVip.get(formatHostPort(dst));
    let target: Sockaddr = dst;
    let via: ServiceVia = {};
    if (svc) {
      const ep = this.pickEndpoint(svc.service, svc.port, ipFamily(dst.ip));
      if (!ep) {
        d.count('service_no_endpoint');
        const rec = d.tracker.begin({
          pod: pod.key,
          direction: 'outbound',
          src,
          dst,
          via: 'passthrough',
          service: `${svc.service.namespace}/${svc.service.name}`,
        });
        this.failOutbound(rec, client, { kind: 'no_endpoint' }, `service ${svc.service.hostname} port ${svc.port.port} has no ready endpoint`);
        return;
      }
      target = ep;
      via = { service: `${svc.service.namespace}/${svc.service.name}`, endpoint: ep };
    }
    // the agent dials from the pod's own address of the target's family: a
    // family the pod does not have cannot be reached (refused, never sent from another address)
    const family = ipFamily(target.ip);
    if (!podIps(pod.info).some((ip) => ipFamily(ip) === family)) {
      d.count('family_unavailable');
      const rec = d.tracker.begin({ pod: pod.key, direction: 'outbound', src, dst, via: 'passthrough', ...via });
      this.failOutbound(
        rec,
        client,
        { kind: 'upstream_failed', errno: 'ENETUNREACH' },
        `pod ${pod.key} has no ${FAMILY_NAME[family]} address (${podIps(pod.info).join(', ')}): ${formatHostPort(target)} is unreachable from it`,
      );
      return;
    }
    const dstPod = index.podByIp.get(target.ip);
    if (dstPod && index.enrolled(dstPod)) this.outboundHbone(pod, client, src, dst, target, dstPod, via);
    else this.outboundPassthrough(pod, client, src, dst, target, via);
  }

  private readonly rr = new Map<string, number>();
  /** A ready endpoint of a service port, round robin; null when none is ready. */
  pickEndpoint(svc: ServiceInfo, port: ServicePort, family?: IpFamily): Sockaddr | null {
    const key = `${svc.namespace}/${svc.name}:${port.port}`;
    const n = this.rr.get(key) ?? 0;
    this.rr.set(key, n + 1);
    return chooseEndpoint(svc, port, n, family);
  }

  private outboundPassthrough(pod: MeshPod, client: net.Socket, src: Sockaddr, dst: Sockaddr, target: Sockaddr, via: ServiceVia): void {
    const rec = this.d.tracker.begin({ pod: pod.key, direction: 'outbound', src, dst, via: 'passthrough', ...via });
    this.dial(pod.info.netns!, target, 'remote', 'source').then(
      (up) => {
        if (client.destroyed) {
          up.destroy();
          this.d.tracker.finish(rec, CLIENT_GONE);
          return;
        }
        up.setNoDelay(true);
        relay(client, up, rec, this.d.tracker);
        client.resume();
      },
      (e: unknown) => this.failOutbound(rec, client, dialFailed(e), (e as Error)?.message ?? String(e)),
    );
  }

  private outboundHbone(pod: MeshPod, client: net.Socket, src: Sockaddr, dst: Sockaddr, target: Sockaddr, dstPod: PodInfo, via: ServiceVia): void {
    const dstId = this.spiffeOf(dstPod);
    const rec = this.d.tracker.begin({ pod: pod.key, direction: 'outbound', src, dst, via: 'hbone', peerIdentity: dstId, ...via });
    this.poolFor(pod)
      .connect({
        srcId: pod.identity,
        dstId,
        dstAddr: { ip: target.ip, port: this.d.ports.hbone },
        target,
        headers: { forwardedFor: src, baggage: baggage(pod.info) },
      })
      .then(
        (stream: HboneStream) => {
          if (client.destroyed) {
            stream.destroy();
            this.d.tracker.finish(rec, CLIENT_GONE);
            return;
          }
          spliceStreamSocket(stream, client, (r) => {
            const end: Outcome = r.resetBy ? { kind: 'reset', by: r.resetBy === 'socket' ? 'client' : 'peer' } : CLOSED;
            this.d.tracker.finish(rec, end, { sent: r.bytesSocketToStream, received: r.bytesStreamToSocket });
          });
          client.resume();
        },
        (e: unknown) => {
          const end = hboneFailed(e);
          this.d.count(e instanceof HboneError ? `hbone_client_${end.code.toLowerCase()}` : 'hbone_client_error');
          this.failOutbound(rec, client, end, (e as Error)?.message ?? String(e));
        },
      );
  }

  private failOutbound(rec: TrackedConnection, client: net.Socket, end: Outcome, message: string): void {
    this.d.count('upstream_connect_failed');
    this.d.log.debug('outbound connection failed', { conn: rec.id, dst: formatHostPort(rec.dst), outcome: end, error: message });
    this.d.tracker.finish(rec, end);
    resetSocket(client);
  }

  onInbound(pod: MeshPod, client: net.Socket): void {
    const d = this.d;
    this.own(client);
    this.trackSocket(client, 'destination');
    const dst: HostPort = { ip: client.localAddress ?? '', port: client.localPort ?? 0 };
    const src: HostPort = { ip: client.remoteAddress ?? '', port: client.remotePort ?? 0 };
    const own = new Set([d.ports.outbound, d.ports.inbound, d.ports.hbone]);
    if (!podIps(pod.info).includes(dst.ip) || own.has(dst.port)) {
      d.count('inbound_bad_destination');
      d.log.once('inbound_bad_destination', 'warn', 'inbound connection to an agent port or foreign address: reset', {
        pod: pod.key,
        src: formatHostPort(src),
        dst: formatHostPort(dst),
      });
      resetSocket(client);
      return;
    }
    const peer = { ip: src.ip, id: null };
    const decision = d.authorize({ pod: pod.info, ip: dst.ip, port: dst.port }, peer);
    if (!decision.allow) {
      d.count('policy_denied');
      d.log.info('connection denied by policy', {
        pod: pod.key,
        src: formatHostPort(src),
        dst: formatHostPort(dst),
        policy: decision.policy,
        reason: decision.reason,
        via: 'plaintext',
      });
      const rec = d.tracker.begin({ pod: pod.key, direction: 'inbound', src, dst, via: 'inbound-plaintext' });
      d.tracker.finish(rec, { kind: 'denied', policy: decision.policy, why: decision.reason });
      resetSocket(client);
      return;
    }
    const rec = d.tracker.begin({ pod: pod.key, direction: 'inbound', src, dst, via: 'inbound-plaintext' });
    client.pause();
    this.dial(pod.info.netns!, dst, 'app', 'destination', this.clientOf(pod, dst, src.ip, undefined)).then(
      (up) => {
        if (client.destroyed) {
          up.destroy();
          d.tracker.finish(rec, CLIENT_GONE);
          return;
        }
        up.setNoDelay(true);
        const entry: LiveInbound = {
          pod,
          dst,
          src: peer,
          rec,
          kill: () => {
            resetSocket(client);
            resetSocket(up);
          },
        };
        this.live.add(entry);
        client.once('close', () => this.live.delete(entry));
        relay(client, up, rec, d.tracker);
        client.resume();
      },
      (e: unknown) => {
        d.count('app_connect_failed');
        d.tracker.finish(rec, dialFailed(e));
        resetSocket(client);
      },
    );
  }

  /** HBONE server tunnels become connection records; rejections are counted by reason. */
  private readonly serverRecs = new Map<string, TrackedConnection>();
  private onServerEvent(ev: HboneServerEvent): void {
    const d = this.d;
    switch (ev.type) {
      case 'tunnel_open': {
        const pod = d.localPodByIp(ev.ctx.local.ip);
        const rec = d.tracker.begin({
          pod: pod?.key ?? ev.ctx.local.ip,
          direction: 'inbound',
          src: ev.ctx.remote,
          claimedSrc: ev.ctx.forwarded ? parseForwardedFor(ev.ctx.forwarded) : null,
          dst: ev.ctx.target,
          via: 'inbound-hbone',
          peerIdentity: ev.ctx.peer.id,
          peerCertSerial: ev.ctx.peer.serial,
        });
        this.serverRecs.set(`${ev.ctx.connectionId}/${ev.ctx.streamId}`, rec);
        const live = this.liveByTunnel.get(`${ev.ctx.connectionId}/${ev.ctx.streamId}`);
        if (live) live.rec = rec;
        return;
      }
      case 'tunnel_close': {
        const k = `${ev.ctx.connectionId}/${ev.ctx.streamId}`;
        const rec = this.serverRecs.get(k);
        if (!rec) return;
        this.serverRecs.delete(k);
        d.tracker.finish(rec, ev.resetBy ? { kind: 'reset', by: ev.resetBy } : CLOSED, { sent: ev.bytesFromClient, received: ev.bytesToClient });
        return;
      }
      case 'reject':
        d.count(`hbone_rejected_${ev.reason}`);
        if (ev.reason === 'denied' && ev.target && ev.local && ev.remote) {
          // like a denied plaintext connection: a failed record (config_dump, metrics with response_flags DENY)
          const pod = d.localPodByIp(ev.local.ip);
          const rec = d.tracker.begin({
            pod: pod?.key ?? ev.local.ip,
            direction: 'inbound',
            src: ev.remote,
            claimedSrc: ev.forwarded ? parseForwardedFor(ev.forwarded) : null,
            dst: ev.target,
            via: 'inbound-hbone',
            peerIdentity: ev.peer?.id ?? null,
          });
          d.tracker.finish(rec, { kind: 'denied', policy: null, why: 'HBONE 401' });
        }
        d.log.once(`hbone_rejected_${ev.reason}`, 'warn', 'HBONE request rejected', {
          reason: ev.reason,
          message: ev.message,
          status: ev.status,
          remote: ev.remote,
          peer: ev.peer?.id,
          target: ev.target,
        });
        return;
      default:
        return;
    }
  }

  /**
   * Policies changed: every live inbound connection is checked again and the
   * ones now denied are closed (reset). Returns how many were closed.
   */
  recheck(): number {
    let closed = 0;
    for (const c of [...this.live]) {
      const r = this.d.authorize({ pod: c.pod.info, ip: c.dst.ip, port: c.dst.port }, c.src);
      if (r.allow) continue;
      closed++;
      this.live.delete(c);
      this.d.count('policy_revoked');
      this.d.log.info('live connection closed: denied by a policy change', {
        pod: c.pod.key,
        src: c.src.ip,
        peer: c.src.id,
        dst: formatHostPort(c.dst),
        policy: r.policy,
        reason: r.reason,
      });
      if (c.rec) this.d.tracker.revoke(c.rec, r.policy);
      c.kill();
    }
    return closed;
  }

  stats(): { server: ReturnType<HboneServer['stats']>; pools: Record<string, ReturnType<HbonePool['stats']>> } {
    return { server: this.hbone.stats(), pools: Object.fromEntries([...this.pools].map(([k, p]) => [k, p.stats()])) };
  }

  /** Graceful by default (streams finish); `force` resets every connection now (end of a drain). */
  async close(opts: { force?: boolean } = {}): Promise<void> {
    if (opts.force) for (const c of this.clients) resetSocket(c);
    await Promise.all([...this.pools.values()].map((p) => p.close(opts).catch(() => undefined)));
    this.pools.clear();
    await this.hbone.close({ graceMs: opts.force ? 0 : 1000 }).catch(() => undefined);
  }
}
