// Over 500 lines on purpose: HboneServer is one state machine over its private fields (sockets, sessions, streams, limits, counters); what needs none of them is in server-options.ts and server-session.ts, and cutting the class further would hand those fields around.
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
 *
 * The options, events and the default app connection are in
 * server-options.ts; the checks and answers that need no server state (TLS
 * options, the client's certificate, the CONNECT request, GOAWAY) in
 * server-session.ts.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as http2 from 'node:http2';
import { validateTrustDomain } from '../../identity/spiffe.js';
import { GOAWAY_REJECT_CODE, H2, HBONE_CONNECTION_WINDOW, HBONE_MAX_CONCURRENT_STREAMS, normalizeIp, noop, type HostPort } from './common.js';
import { spliceStreamSocket } from './tunnel.js';
import { KeyedLimiter, Limiter } from '../limits.js';
import { keepPinging } from '../liveness.js';
import { AmbientError } from '../../util/errors.js';
import { formatHostPort } from '../../util/hostport.js';
import {
  defaultConnectTarget,
  HBONE_REJECT_REASONS,
  type AuthorizeDecision,
  type HboneRejectReason,
  type HboneServerEvent,
  type HboneServerOptions,
  type HboneServerStats,
  type HboneStreamContext,
  type PeerInfo,
  type ServerCert,
} from './server-options.js';
import { answerRejected, checkConnect, checkPeer, goawayAndClose, pemKey, tlsServerOptions } from './server-session.js';

export {
  HBONE_REJECT_REASONS,
  type AuthorizeDecision,
  type HboneRejectReason,
  type HboneServerEvent,
  type HboneServerOptions,
  type HboneServerStats,
  type HboneStreamContext,
  type PeerInfo,
  type ServerCert,
} from './server-options.js';

interface Conn {
  id: number;
  peer: PeerInfo;
  local: HostPort;
  remote: HostPort;
  session: http2.ServerHttp2Session;
  streams: number;
  started: number;
}

/** on an accepted socket: frees its TLS-handshake slot (called once the session starts, or at close) */
const HANDSHAKE_DONE = Symbol('hbone.handshakeDone');
const MAX_CACHED_CONTEXTS = 64;

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
  /** the most streams one session had at once (maxStreamsPerSession bounds it) */
  #perSessionPeak = 0;
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
      this.#reject({
        scope: 'connection',
        reason: 'limit_peer_sessions',
        message: `${remote.ip} already has ${this.#perPeer.max} connections open (maxSessionsPerPeer)`,
        local,
        remote,
      });
      socket.destroy();
      return;
    }
    if (!this.#handshakes.tryAcquire()) {
      this.#perPeer.release(remote.ip);
      this.#reject({
        scope: 'connection',
        reason: 'limit_handshakes',
        message: `${this.#handshakes.max} TLS handshakes already in progress (maxHandshakes)`,
        local,
        remote,
      });
      socket.destroy();
      return;
    }
    let handshaking = true;
    const handshakeDone = (): void => {
      if (handshaking) {
        handshaking = false;
        this.#handshakes.release();
      }
    };
    (socket as net.Socket & { [HANDSHAKE_DONE]?: () => void })[HANDSHAKE_DONE] = handshakeDone;
    this.#sockets.add(socket);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      handshakeDone();
      this.#perPeer.release(remote.ip);
    });
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
        perSessionPeak: this.#perSessionPeak,
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
    const srv = http2.createSecureServer(tlsServerOptions(sc, this.#opts));
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

  #onSession(session: http2.ServerHttp2Session): void {
    const sock = session.socket as tls.TLSSocket;
    const local: HostPort = { ip: normalizeIp(sock.localAddress), port: sock.localPort ?? 0 };
    const remote: HostPort = { ip: normalizeIp(sock.remoteAddress), port: sock.remotePort ?? 0 };
    // the TLS handshake is over: its slot is free
    const raw = (sock as unknown as { _parent?: net.Socket & { [HANDSHAKE_DONE]?: () => void } })._parent;
    raw?.[HANDSHAKE_DONE]?.();
    // the peer's end (FIN, RST, TLS error) ends every stream of the session
    sock.once('end', () => {
      if (!session.destroyed) session.destroy();
    });
    sock.once('close', () => {
      if (!session.destroyed) session.destroy();
    });
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
      goawayAndClose(session, H2.NGHTTP2_NO_ERROR, 'server_closing');
      return;
    }
    const res = checkPeer(sock, this.#opts.trustDomain);
    if ('reason' in res) {
      counted = true;
      this.#reject({ scope: 'connection', reason: res.reason, message: res.message, local, remote });
      goawayAndClose(session, GOAWAY_REJECT_CODE, res.reason);
      return;
    }
    const conn: Conn = { id: ++this.#connSeq, peer: res.peer, local, remote, session, streams: 0, started: Date.now() };
    this.#conns.set(session, conn);
    const windows = this.#opts.windows;
    if (windows) {
      windows.add(session);
      try {
        session.settings({ initialWindowSize: windows.window });
      } catch {
        /* closing */
      }
    }
    if (this.#opts.liveness) {
      keepPinging(session, this.#opts.liveness, () =>
        this.#reject({
          scope: 'connection',
          reason: 'ping_timeout',
          message: `no PING answer within ${this.#opts.liveness!.pingTimeoutMs} ms`,
          local,
          remote,
          peer: res.peer,
        }),
      );
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
    answerRejected(stream, status, reason);
  }

  #onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    this.#streamsTotal++;
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
      this.#reject({
        scope: 'stream',
        reason: 'limit_streams',
        message: `session already has ${maxStreams} streams (maxStreamsPerSession)`,
        local: conn.local,
        remote: conn.remote,
        peer: conn.peer,
      });
      stream.close(H2.NGHTTP2_REFUSED_STREAM);
      return;
    }
    conn.streams++;
    if (conn.streams > this.#perSessionPeak) this.#perSessionPeak = conn.streams;
    // only admitted streams count as active and share the window budget: a refused one (a
    // Rapid Reset flood's) may wait for its 'close' a while, and must not shrink everyone's window
    this.#streamsActive++;
    const windows = this.#opts.windows;
    windows?.streamOpened();
    stream.once('close', () => {
      conn.streams--;
      this.#streamsActive--;
      windows?.streamClosed();
    });

    const req = checkConnect(headers, conn.local, this.#opts.refuseTarget);
    if ('reason' in req) {
      this.#rejectStream(stream, conn, 400, req.reason, req.message, req.target);
      return;
    }
    const target = req.target;
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
