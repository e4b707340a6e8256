/**
 * HBONE server: HTTP/2 CONNECT over mutual TLS 1.3 (Istio ambient / ztunnel
 * compatible inbound on :15008).
 *
 * Sockets can come from our own listener (`listen`), from an existing
 * net.Server (`attach`, e.g. one created from an fd bound inside a pod netns)
 * or be handed over one by one (`handle`). The certificate is chosen per
 * connection from its local address (`getServerCert`).
 *
 * Identity: the client must present a certificate chaining to the trust root
 * whose single SPIFFE URI SAN is in our trust domain. Verification failures
 * are answered with an HTTP/2 GOAWAY(INADEQUATE_SECURITY) carrying the reason
 * as debug data, before any stream is processed, and counted.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as http2 from 'node:http2';
import { constants as cryptoConstants } from 'node:crypto';
import { tryParseSpiffeId, validateTrustDomain } from '../../identity/spiffe.js';
import {
  GOAWAY_REASON_PREFIX,
  GOAWAY_REJECT_CODE,
  H2,
  HBONE_CONNECTION_WINDOW,
  HBONE_MAX_CONCURRENT_STREAMS,
  HBONE_MAX_SESSION_MEMORY_MB,
  hboneSettings,
  normalizeIp,
  noop,
  parseAuthority,
  peerUriSans,
  type HostPort,
  type PemInput,
} from './common.js';
import { spliceStreamSocket } from './tunnel.js';
import { KeyedLimiter, Limiter, type WindowBudget } from '../limits.js';
import { keepPinging, type LivenessParams } from '../liveness.js';
import { AmbientError } from '../../util/errors.js';
import { formatHostPort } from '../../util/hostport.js';

export interface ServerCert {
  key: PemInput;
  /** Leaf certificate followed by intermediates. */
  cert: PemInput;
  /** Trust root(s) used to verify client certificates. */
  ca: PemInput | PemInput[];
}

export interface PeerInfo {
  /** The client's SPIFFE id (its only URI SAN). */
  id: string;
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
  /** Client certificate serial (hex, upper case as reported by OpenSSL). */
  serial: string;
}

export interface HboneStreamContext {
  connectionId: number;
  streamId: number;
  peer: PeerInfo;
  target: HostPort;
  /** Local end of the HBONE TCP connection (the destination pod IP:15008). */
  local: HostPort;
  /** Remote end of the HBONE TCP connection (source node / pod). */
  remote: HostPort;
  forwarded: string | undefined;
  baggage: string | undefined;
  traceparent: string | undefined;
  headers: http2.IncomingHttpHeaders;
  /** Aborted when the client resets the stream or the server closes. */
  signal: AbortSignal;
}

export type AuthorizeDecision = 'allow' | 'deny';

export const HBONE_REJECT_REASONS = [
  // connection level
  'no_client_cert',
  'bad_trust_domain',
  'cert_expired',
  'untrusted_cert',
  'bad_identity',
  'no_server_cert',
  'tls_error',
  'tls_timeout',
  'bad_alpn',
  'bad_preface',
  'h2_error',
  'server_closing',
  'limit_handshakes',
  'limit_peer_sessions',
  'ping_timeout',
  // stream level
  'not_connect',
  'bad_authority',
  'authority_mismatch',
  'agent_port',
  'limit_streams',
  'denied',
  'upstream_unreachable',
  'limit_dials',
  'internal_error',
] as const;
export type HboneRejectReason = (typeof HBONE_REJECT_REASONS)[number];

export type HboneServerEvent =
  | {
      type: 'connection_open';
      connectionId: number;
      peer: PeerInfo;
      local: HostPort;
      remote: HostPort;
    }
  | { type: 'connection_close'; connectionId: number; peer: PeerInfo; streams: number; durationMs: number }
  | { type: 'tunnel_open'; ctx: HboneStreamContext }
  | {
      type: 'tunnel_close';
      ctx: HboneStreamContext;
      /** Bytes the client sent to the destination. */
      bytesFromClient: number;
      /** Bytes the destination sent to the client. */
      bytesToClient: number;
      durationMs: number;
      /** Set when the tunnel ended with a reset instead of FINs both ways. */
      resetBy: 'client' | 'upstream' | 'server' | undefined;
    }
  | {
      type: 'reject';
      scope: 'connection' | 'stream';
      reason: HboneRejectReason;
      message: string;
      status?: number;
      local?: HostPort;
      remote?: HostPort;
      peer?: PeerInfo;
      target?: HostPort;
      /** the request's Forwarded header (what the peer claims), for the record */
      forwarded?: string;
    };

export interface HboneServerOptions {
  /** Certificate to present on a connection that arrived on `localAddress`. */
  getServerCert(localAddress: string, localPort: number): ServerCert | Promise<ServerCert>;
  trustDomain: string;
  /**
   * Targets refused outright (400, before policy and before any dial), e.g.
   * the ports of the agent itself: returns the reject reason, or null.
   */
  refuseTarget?(target: HostPort): 'agent_port' | null;
  /** Policy hook; default allows. A thrown error answers 503 (internal_error). */
  authorize?(peer: PeerInfo, target: HostPort, ctx: HboneStreamContext): AuthorizeDecision | Promise<AuthorizeDecision>;
  /**
   * Opens the connection to the application. Must resolve with a *connected*
   * socket (create it with allowHalfOpen: true). Default: net.connect(target).
   */
  connectTarget?(target: HostPort, ctx: HboneStreamContext): Promise<net.Socket>;
  /** Tunnel / connection / rejection events (metrics, access log). Must not throw. */
  onConnection?(event: HboneServerEvent): void;
  /** Extra headers on the 200 response (e.g. destination baggage). */
  responseHeaders?(ctx: HboneStreamContext): http2.OutgoingHttpHeaders | undefined;
  /** TLS handshake deadline. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Default connectTarget timeout. Default 10 s. */
  connectTimeoutMs?: number;
  /** Streams per connection. Default 100. */
  maxConcurrentStreams?: number;
  /** TCP keep-alive on accepted sockets when no `tuneSocket` is given (0 disables). Default 30 s. */
  keepAliveMs?: number;
  /** Sets liveness options (keepalive, TCP_USER_TIMEOUT) on each accepted socket. */
  tuneSocket?(socket: net.Socket): void;
  /** HTTP/2 PING both ways: an unanswered PING ends the session. Default: none from this side. */
  liveness?: LivenessParams;
  /** TLS handshakes in progress at once; more are closed at once (limit_handshakes). Default 128. */
  maxHandshakes?: number;
  /** Connections open at once from one peer address; more are closed (limit_peer_sessions). Default 16. */
  maxSessionsPerPeer?: number;
  /** The node-wide per-stream window (flow control bounded by a receive budget). Default: fixed windows. */
  windows?: WindowBudget;
}

export interface HboneServerStats {
  connections: {
    /** TCP connections handed to the server. */
    accepted: number;
    /** TCP connections currently open (any phase). */
    open: number;
    /** Authenticated HTTP/2 sessions currently open. */
    established: number;
    /** TLS handshakes in progress. */
    handshaking: number;
  };
  streams: {
    total: number;
    /** HTTP/2 streams currently open. */
    active: number;
    tunnelsOpened: number;
    /** Sockets to applications currently open. */
    upstreamsOpen: number;
  };
  rejections: Record<HboneRejectReason, number>;
}

interface Conn {
  id: number;
  peer: PeerInfo;
  local: HostPort;
  remote: HostPort;
  session: http2.ServerHttp2Session;
  streams: number;
  started: number;
}

const TLS13_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384';
/** on an accepted socket: frees its TLS-handshake slot (called once the session starts, or at close) */
const HANDSHAKE_DONE = Symbol('hbone.handshakeDone');
const MAX_CACHED_CONTEXTS = 64;

function pemKey(p: PemInput | PemInput[]): string {
  return Array.isArray(p) ? p.map((x) => x.toString()).join('') : p.toString();
}

function defaultConnectTarget(timeoutMs: number) {
  return (target: HostPort, ctx: HboneStreamContext): Promise<net.Socket> =>
    new Promise<net.Socket>((resolve, reject) => {
      const sock = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true, noDelay: true });
      let timer: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        if (timer) clearTimeout(timer);
        sock.off('error', fail);
        ctx.signal.removeEventListener('abort', onAbort);
      };
      const fail = (err: Error): void => {
        cleanup();
        sock.on('error', noop);
        sock.destroy();
        reject(err);
      };
      const onAbort = (): void => fail(new AmbientError('UPSTREAM_FAILED', 'stream closed while connecting', 'the client reset its stream before the app answered'));
      timer = setTimeout(
        () => fail(new AmbientError('UPSTREAM_FAILED', `connect to ${formatHostPort(target)} timed out`, 'the app did not accept the connection in time: is it overloaded, or is a firewall dropping SYNs?')),
        timeoutMs,
      );
      timer.unref();
      if (ctx.signal.aborted) return onAbort();
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      sock.once('error', fail);
      sock.once('connect', () => {
        cleanup();
        resolve(sock);
      });
    });
}

export class HboneServer {
  readonly #opts: HboneServerOptions;
  readonly #connectTarget: (target: HostPort, ctx: HboneStreamContext) => Promise<net.Socket>;
  readonly #h2servers = new Map<string, http2.Http2SecureServer>();
  readonly #conns = new Map<http2.ServerHttp2Session, Conn>();
  readonly #sockets = new Set<net.Socket>();
  readonly #streamAborts = new Set<AbortController>();
  readonly #listeners = new Set<net.Server>();
  readonly #attached = new Map<net.Server, (s: net.Socket) => void>();
  readonly #rejections = Object.fromEntries(HBONE_REJECT_REASONS.map((r) => [r, 0])) as Record<HboneRejectReason, number>;
  #accepted = 0;
  #streamsTotal = 0;
  #streamsActive = 0;
  #tunnelsOpened = 0;
  #upstreamsOpen = 0;
  #connSeq = 0;
  #closing = false;
  readonly #handshakes: Limiter;
  readonly #perPeer: KeyedLimiter;

  constructor(opts: HboneServerOptions) {
    validateTrustDomain(opts.trustDomain);
    this.#opts = opts;
    this.#connectTarget = opts.connectTarget ?? defaultConnectTarget(opts.connectTimeoutMs ?? 10_000);
    this.#handshakes = new Limiter('handshakes', opts.maxHandshakes ?? 128);
    this.#perPeer = new KeyedLimiter('peer sessions', opts.maxSessionsPerPeer ?? 16);
  }

  // ---------------------------------------------------------------- intake

  /** Serves one accepted TCP socket (from any netns). */
  handle(socket: net.Socket): void {
    if (this.#closing) {
      socket.on('error', noop);
      socket.destroy();
      return;
    }
    this.#accepted++;
    // HBONE has no TCP half-close: a FIN from the peer means it is gone, and
    // the session (all its streams, their sockets) must end with it
    socket.allowHalfOpen = false;
    socket.on('error', noop); // reported through tlsClientError / session errors
    const local: HostPort = { ip: normalizeIp(socket.localAddress), port: socket.localPort ?? 0 };
    const remote: HostPort = { ip: normalizeIp(socket.remoteAddress), port: socket.remotePort ?? 0 };
    // caps: connections per peer address, TLS handshakes in progress
    if (!this.#perPeer.tryAcquire(remote.ip)) {
      this.#reject({ scope: 'connection', reason: 'limit_peer_sessions', message: `${remote.ip} already has ${this.#perPeer.max} connections open (maxSessionsPerPeer)`, local, remote });
      socket.destroy();
      return;
    }
    if (!this.#handshakes.tryAcquire()) {
      this.#perPeer.release(remote.ip);
      this.#reject({ scope: 'connection', reason: 'limit_handshakes', message: `${this.#handshakes.max} TLS handshakes already in progress (maxHandshakes)`, local, remote });
      socket.destroy();
      return;
    }
    let handshaking = true;
    const handshakeDone = (): void => { if (handshaking) { handshaking = false; this.#handshakes.release(); } };
    (socket as net.Socket & { [HANDSHAKE_DONE]?: () => void })[HANDSHAKE_DONE] = handshakeDone;
    this.#sockets.add(socket);
    socket.once('close', () => { this.#sockets.delete(socket); handshakeDone(); this.#perPeer.release(remote.ip); });
    socket.setNoDelay(true);
    if (this.#opts.tuneSocket) this.#opts.tuneSocket(socket);
    else {
      const ka = this.#opts.keepAliveMs ?? 30_000;
      if (ka > 0) socket.setKeepAlive(true, ka);
    }
    let sc: ServerCert | Promise<ServerCert>;
    try {
      sc = this.#opts.getServerCert(local.ip, local.port);
    } catch (err) {
      this.#noServerCert(socket, local, remote, err);
      return;
    }
    if (typeof (sc as Promise<ServerCert>).then === 'function') {
      (sc as Promise<ServerCert>).then(
        (c) => this.#startTls(socket, c, local, remote),
        (err: unknown) => this.#noServerCert(socket, local, remote, err),
      );
    } else {
      this.#startTls(socket, sc as ServerCert, local, remote);
    }
  }

  /** Serves connections accepted by an existing server (e.g. created from a pod-netns fd). Returns a detach function. */
  attach(server: net.Server): () => void {
    const l = (s: net.Socket): void => this.handle(s);
    server.on('connection', l);
    this.#attached.set(server, l);
    return () => {
      server.off('connection', l);
      this.#attached.delete(server);
    };
  }

  /** Listens on host:port or an inherited fd (`{fd}`); resolves with the bound address. */
  listen(options: net.ListenOptions): Promise<net.AddressInfo> {
    const srv = net.createServer({ noDelay: true });
    srv.on('connection', (s) => this.handle(s));
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(options, () => {
        srv.off('error', reject);
        srv.on('error', noop);
        this.#listeners.add(srv);
        resolve(srv.address() as net.AddressInfo);
      });
    });
  }

  // ---------------------------------------------------------------- stats

  stats(): HboneServerStats {
    return {
      connections: { accepted: this.#accepted, open: this.#sockets.size, established: this.#conns.size, handshaking: this.#handshakes.inUse },
      streams: {
        total: this.#streamsTotal,
        active: this.#streamsActive,
        tunnelsOpened: this.#tunnelsOpened,
        upstreamsOpen: this.#upstreamsOpen,
      },
      rejections: { ...this.#rejections },
    };
  }

  /**
   * Stops accepting, sends GOAWAY on every session and waits for tunnels to
   * finish; after `graceMs` (default 5 s) everything left is destroyed.
   * Attached external servers are detached, not closed.
   */
  async close(opts: { graceMs?: number } = {}): Promise<void> {
    this.#closing = true;
    for (const [srv, l] of this.#attached) srv.off('connection', l);
    this.#attached.clear();
    const listenerClosed = [...this.#listeners].map((s) => new Promise<void>((r) => s.close(() => r())));
    this.#listeners.clear();
    for (const conn of this.#conns.values()) {
      try {
        conn.session.close();
      } catch {
        /* already closed */
      }
    }
    const graceMs = opts.graceMs ?? 5000;
    const deadline = Date.now() + graceMs;
    while (this.#sockets.size > 0 || this.#upstreamsOpen > 0) {
      if (Date.now() >= deadline) {
        for (const a of this.#streamAborts) a.abort();
        for (const c of this.#conns.values()) c.session.destroy();
        for (const s of this.#sockets) s.destroy();
        await new Promise((r) => setImmediate(r));
        if (this.#sockets.size === 0 && this.#upstreamsOpen === 0) break;
        await new Promise((r) => setTimeout(r, 10));
        if (Date.now() > deadline + 2000) break;
        continue;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(listenerClosed);
    this.#h2servers.clear();
  }

  // ---------------------------------------------------------------- internals

  #emit(ev: HboneServerEvent): void {
    if (!this.#opts.onConnection) return;
    try {
      this.#opts.onConnection(ev);
    } catch {
      /* observer errors must not break the datapath */
    }
  }

  #reject(ev: Omit<Extract<HboneServerEvent, { type: 'reject' }>, 'type'>): void {
    this.#rejections[ev.reason]++;
    this.#emit({ type: 'reject', ...ev });
  }

  #noServerCert(socket: net.Socket, local: HostPort, remote: HostPort, err: unknown): void {
    this.#reject({
      scope: 'connection',
      reason: 'no_server_cert',
      message: `no certificate for ${local.ip}: ${(err as Error)?.message ?? err}`,
      local,
      remote,
    });
    socket.destroy();
  }

  #startTls(socket: net.Socket, sc: ServerCert, local: HostPort, remote: HostPort): void {
    if (socket.destroyed || socket.readableEnded) {
      this.#reject({ scope: 'connection', reason: 'tls_error', message: 'client went away before TLS', local, remote });
      socket.destroy();
      return;
    }
    // while closing, a connection accepted just before the listener closed is
    // still served up to the HTTP/2 session, which then gets GOAWAY: the client
    // retries on a new connection (the successor's) instead of seeing a reset
    let srv: http2.Http2SecureServer;
    try {
      srv = this.#serverFor(sc);
    } catch (err) {
      this.#noServerCert(socket, local, remote, err);
      return;
    }
    srv.emit('connection', socket);
  }

  #serverFor(sc: ServerCert): http2.Http2SecureServer {
    const key = pemKey(sc.cert) + '\0' + pemKey(sc.ca);
    const hit = this.#h2servers.get(key);
    if (hit) {
      this.#h2servers.delete(key);
      this.#h2servers.set(key, hit);
      return hit;
    }
    const srv = http2.createSecureServer({
      key: sc.key,
      cert: sc.cert,
      ca: sc.ca,
      requestCert: true,
      // Verification result is enforced in #onSession (before any frame is
      // processed) so the rejection can be classified, counted and explained.
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      ciphers: TLS13_CIPHERS,
      secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
      handshakeTimeout: this.#opts.handshakeTimeoutMs ?? 10_000,
      allowHTTP1: false,
      unknownProtocolTimeout: 1000,
      // with a window budget sessions start at its floor and are raised in
      // #onSession (raising takes effect at once; lowering needs the peer's ACK)
      settings: this.#opts.windows
        ? { ...hboneSettings(this.#opts.maxConcurrentStreams ?? HBONE_MAX_CONCURRENT_STREAMS), initialWindowSize: 65_535 }
        : hboneSettings(this.#opts.maxConcurrentStreams ?? HBONE_MAX_CONCURRENT_STREAMS),
      maxSessionMemory: HBONE_MAX_SESSION_MEMORY_MB,
      peerMaxConcurrentStreams: this.#opts.maxConcurrentStreams ?? HBONE_MAX_CONCURRENT_STREAMS,
    });
    srv.on('session', (s: http2.ServerHttp2Session) => this.#onSession(s));
    srv.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => this.#onStream(stream, headers));
    srv.on('tlsClientError', (err: NodeJS.ErrnoException, tlsSocket: tls.TLSSocket) => {
      const timeout = err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT';
      this.#reject({
        scope: 'connection',
        reason: timeout ? 'tls_timeout' : 'tls_error',
        message: err.message,
        local: { ip: normalizeIp(tlsSocket?.localAddress), port: tlsSocket?.localPort ?? 0 },
        remote: { ip: normalizeIp(tlsSocket?.remoteAddress), port: tlsSocket?.remotePort ?? 0 },
      });
      tlsSocket?.destroy();
    });
    srv.on('unknownProtocol', (tlsSocket: tls.TLSSocket) => {
      this.#reject({
        scope: 'connection',
        reason: 'bad_alpn',
        message: `ALPN ${JSON.stringify(tlsSocket.alpnProtocol)} is not h2`,
        local: { ip: normalizeIp(tlsSocket.localAddress), port: tlsSocket.localPort ?? 0 },
        remote: { ip: normalizeIp(tlsSocket.remoteAddress), port: tlsSocket.remotePort ?? 0 },
      });
      tlsSocket.destroy();
    });
    srv.on('sessionError', noop);
    srv.on('error', noop);
    this.#h2servers.set(key, srv);
    if (this.#h2servers.size > MAX_CACHED_CONTEXTS) {
      const oldest = this.#h2servers.keys().next().value as string;
      this.#h2servers.delete(oldest); // not listening: nothing to close; live sessions keep their context
    }
    return srv;
  }

  #checkPeer(sock: tls.TLSSocket): { peer: PeerInfo } | { reason: HboneRejectReason; message: string } {
    const cert = sock.getPeerCertificate(false);
    if (!cert || !cert.raw) return { reason: 'no_client_cert', message: 'client presented no certificate' };
    const spiffe = peerUriSans(cert).filter((u) => u.startsWith('spiffe://'));
    if (spiffe.length !== 1) {
      return {
        reason: 'bad_identity',
        message: `client certificate must carry exactly one SPIFFE URI SAN, found ${spiffe.length}`,
      };
    }
    const id = tryParseSpiffeId(spiffe[0]!);
    if (!id) return { reason: 'bad_identity', message: `invalid SPIFFE id ${JSON.stringify(spiffe[0]!.slice(0, 200))}` };
    if (id.trustDomain !== this.#opts.trustDomain) {
      return {
        reason: 'bad_trust_domain',
        message: `client trust domain ${id.trustDomain} is not ${this.#opts.trustDomain}`,
      };
    }
    if (!sock.authorized) {
      const code = String(sock.authorizationError ?? 'unknown');
      if (code === 'CERT_HAS_EXPIRED') return { reason: 'cert_expired', message: `client certificate expired (${cert.valid_to})` };
      return { reason: 'untrusted_cert', message: `client certificate not trusted: ${code}` };
    }
    return {
      peer: {
        id: spiffe[0]!,
        trustDomain: id.trustDomain,
        namespace: id.namespace,
        serviceAccount: id.serviceAccount,
        serial: cert.serialNumber,
      },
    };
  }

  #onSession(session: http2.ServerHttp2Session): void {
    const sock = session.socket as tls.TLSSocket;
    const local: HostPort = { ip: normalizeIp(sock.localAddress), port: sock.localPort ?? 0 };
    const remote: HostPort = { ip: normalizeIp(sock.remoteAddress), port: sock.remotePort ?? 0 };
    // the TLS handshake is over: its slot is free
    const raw = (sock as unknown as { _parent?: net.Socket & { [HANDSHAKE_DONE]?: () => void } })._parent;
    raw?.[HANDSHAKE_DONE]?.();
    // the peer's end (FIN, RST, TLS error) ends every stream of the session
    sock.once('end', () => { if (!session.destroyed) session.destroy(); });
    sock.once('close', () => { if (!session.destroyed) session.destroy(); });
    let counted = false;
    session.on('error', (err: NodeJS.ErrnoException) => {
      if (counted) return;
      counted = true;
      const badMagic = /magic|preface/i.test(err.message);
      this.#reject({
        scope: 'connection',
        reason: badMagic ? 'bad_preface' : 'h2_error',
        message: err.message,
        local,
        remote,
      });
    });
    session.on('frameError', noop);

    if (this.#closing) {
      counted = true;
      this.#reject({ scope: 'connection', reason: 'server_closing', message: 'server is shutting down', local, remote });
      this.#goawayAndClose(session, H2.NGHTTP2_NO_ERROR, 'server_closing');
      return;
    }
    const res = this.#checkPeer(sock);
    if ('reason' in res) {
      counted = true;
      this.#reject({ scope: 'connection', reason: res.reason, message: res.message, local, remote });
      this.#goawayAndClose(session, GOAWAY_REJECT_CODE, res.reason);
      return;
    }
    const conn: Conn = { id: ++this.#connSeq, peer: res.peer, local, remote, session, streams: 0, started: Date.now() };
    this.#conns.set(session, conn);
    const windows = this.#opts.windows;
    if (windows) {
      windows.add(session);
      try {
        session.settings({ initialWindowSize: windows.window });
      } catch { /* closing */ }
    }
    if (this.#opts.liveness) {
      keepPinging(session, this.#opts.liveness, () => this.#reject({ scope: 'connection', reason: 'ping_timeout', message: `no PING answer within ${this.#opts.liveness!.pingTimeoutMs} ms`, local, remote, peer: res.peer }));
    }
    let total = 0;
    session.on('stream', () => total++);
    session.once('close', () => {
      this.#conns.delete(session);
      this.#emit({
        type: 'connection_close',
        connectionId: conn.id,
        peer: conn.peer,
        streams: total,
        durationMs: Date.now() - conn.started,
      });
    });
    try {
      session.setLocalWindowSize(HBONE_CONNECTION_WINDOW);
    } catch {
      session.once('connect', () => {
        try {
          session.setLocalWindowSize(HBONE_CONNECTION_WINDOW);
        } catch {
          /* session gone */
        }
      });
    }
    this.#emit({ type: 'connection_open', connectionId: conn.id, peer: res.peer, local, remote });
  }

  /** GOAWAY with the reason as debug data, then close; force-destroy shortly after. */
  #goawayAndClose(session: http2.ServerHttp2Session, code: number, reason: string): void {
    try {
      session.goaway(code, 0, Buffer.from(GOAWAY_REASON_PREFIX + reason));
    } catch {
      /* destroyed */
    }
    const t = setTimeout(() => session.destroy(), 1000);
    t.unref();
    session.once('close', () => clearTimeout(t));
    try {
      session.close();
    } catch {
      session.destroy();
    }
  }

  #rejectStream(
    stream: http2.ServerHttp2Stream,
    conn: Conn | undefined,
    status: number,
    reason: HboneRejectReason,
    message: string,
    target?: HostPort,
    forwarded?: string,
  ): void {
    this.#reject({
      scope: 'stream',
      reason,
      message,
      status,
      ...(conn ? { local: conn.local, remote: conn.remote, peer: conn.peer } : {}),
      ...(target ? { target } : {}),
      ...(forwarded !== undefined ? { forwarded } : {}),
    });
    if (!stream.destroyed && !stream.closed && !stream.headersSent) {
      try {
        stream.respond({ ':status': status, 'x-hbone-reason': reason }, { endStream: true });
      } catch {
        /* stream went away */
      }
    }
    stream.resume(); // discard request body
    // If the client never closes its side, reset after a while.
    const t = setTimeout(() => {
      if (!stream.closed) stream.close(H2.NGHTTP2_NO_ERROR);
    }, 5000);
    t.unref();
    stream.once('close', () => clearTimeout(t));
  }

  #onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    this.#streamsTotal++;
    this.#streamsActive++;
    const windows = this.#opts.windows;
    windows?.streamOpened();
    stream.once('close', () => { this.#streamsActive--; windows?.streamClosed(); });
    stream.on('error', noop); // outcome handled via 'close'
    const conn = this.#conns.get(stream.session as http2.ServerHttp2Session);
    if (!conn) {
      stream.close(H2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    // a peer may open streams before it has our SETTINGS (MAX_CONCURRENT_STREAMS):
    // the cap is enforced here too, for every stream
    const maxStreams = this.#opts.maxConcurrentStreams ?? HBONE_MAX_CONCURRENT_STREAMS;
    if (conn.streams >= maxStreams) {
      this.#reject({ scope: 'stream', reason: 'limit_streams', message: `session already has ${maxStreams} streams (maxStreamsPerSession)`, local: conn.local, remote: conn.remote, peer: conn.peer });
      stream.close(H2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    conn.streams++;
    stream.once('close', () => conn.streams--);

    if (headers[':method'] !== 'CONNECT') {
      this.#rejectStream(stream, conn, 400, 'not_connect', `method ${String(headers[':method'])} is not CONNECT`);
      return;
    }
    const authority = headers[':authority'];
    const target = parseAuthority(typeof authority === 'string' ? authority : undefined);
    if (!target) {
      this.#rejectStream(stream, conn, 400, 'bad_authority', `:authority ${JSON.stringify(authority)} is not <ip>:<port>`);
      return;
    }
    if (target.ip !== conn.local.ip) {
      this.#rejectStream(
        stream,
        conn,
        400,
        'authority_mismatch',
        `:authority ip ${target.ip} differs from the connection's local address ${conn.local.ip}`,
        target,
      );
      return;
    }
    const refused = this.#opts.refuseTarget?.(target) ?? null;
    if (refused) {
      this.#rejectStream(stream, conn, 400, refused, `${formatHostPort(target)} is a port of the agent itself, never a tunnel target`, target);
      return;
    }
    const abort = new AbortController();
    this.#streamAborts.add(abort);
    stream.once('close', () => {
      this.#streamAborts.delete(abort);
      abort.abort();
    });
    const h = (name: string): string | undefined => {
      const v = headers[name];
      return Array.isArray(v) ? v.join(', ') : v;
    };
    const ctx: HboneStreamContext = {
      connectionId: conn.id,
      streamId: stream.id ?? 0,
      peer: conn.peer,
      target,
      local: conn.local,
      remote: conn.remote,
      forwarded: h('forwarded'),
      baggage: h('baggage'),
      traceparent: h('traceparent'),
      headers,
      signal: abort.signal,
    };
    void this.#openTunnel(stream, conn, ctx);
  }

  async #openTunnel(stream: http2.ServerHttp2Stream, conn: Conn, ctx: HboneStreamContext): Promise<void> {
    const gone = (): boolean => stream.destroyed || stream.closed;
    if (this.#opts.authorize) {
      let decision: AuthorizeDecision;
      try {
        decision = await this.#opts.authorize(ctx.peer, ctx.target, ctx);
      } catch (err) {
        this.#rejectStream(stream, conn, 503, 'internal_error', `authorize failed: ${(err as Error)?.message ?? err}`, ctx.target);
        return;
      }
      if (decision !== 'allow') {
        this.#rejectStream(stream, conn, 401, 'denied', `${ctx.peer.id} may not reach ${formatHostPort(ctx.target)}`, ctx.target, ctx.forwarded);
        return;
      }
    }
    if (gone()) return;
    let upstream: net.Socket;
    try {
      upstream = await this.#connectTarget(ctx.target, ctx);
    } catch (err) {
      if (gone()) return;
      const limited = err instanceof AmbientError && err.code === 'LIMIT_DIALS';
      this.#rejectStream(
        stream,
        conn,
        503,
        limited ? 'limit_dials' : 'upstream_unreachable',
        `cannot reach ${formatHostPort(ctx.target)}: ${(err as Error)?.message ?? err}`,
        ctx.target,
      );
      return;
    }
    if (gone() || upstream.destroyed) {
      upstream.on('error', noop);
      upstream.destroy();
      if (!gone()) {
        this.#rejectStream(stream, conn, 503, 'upstream_unreachable', 'upstream closed before the tunnel opened', ctx.target);
      }
      return;
    }
    let extra: http2.OutgoingHttpHeaders | undefined;
    try {
      extra = this.#opts.responseHeaders?.(ctx);
    } catch {
      extra = undefined;
    }
    try {
      stream.respond({ ...(extra ?? {}), ':status': 200 }, { endStream: false });
    } catch {
      upstream.on('error', noop);
      upstream.destroy();
      return;
    }
    this.#tunnelsOpened++;
    this.#splice(stream, upstream, ctx);
  }

  /** Bidirectional copy with half-close and reset propagation. */
  #splice(stream: http2.ServerHttp2Stream, sock: net.Socket, ctx: HboneStreamContext): void {
    this.#upstreamsOpen++;
    sock.setNoDelay(true);
    let counted = false;
    const uncount = (): void => {
      if (counted) return;
      counted = true;
      this.#upstreamsOpen--;
    };
    sock.once('close', uncount);
    spliceStreamSocket(stream, sock, (r) => {
      uncount();
      this.#emit({
        type: 'tunnel_close',
        ctx,
        bytesFromClient: r.bytesStreamToSocket,
        bytesToClient: r.bytesSocketToStream,
        durationMs: r.durationMs,
        resetBy: r.resetBy === 'stream' ? (this.#closing ? 'server' : 'client') : r.resetBy === 'socket' ? 'upstream' : undefined,
      });
    });
    this.#emit({ type: 'tunnel_open', ctx });
  }
}

export function createHboneServer(opts: HboneServerOptions): HboneServer {
  return new HboneServer(opts);
}
