// Over 500 lines on purpose: HbonePool is one state machine over its private session pool (keys, stream counts, drains, resets, timers); the options and the TLS handshake are in client-options.ts and client-connect.ts, and cutting the class further would hand its pool around.
/**
 * HBONE client: pooled HTTP/2 CONNECT over mutual TLS 1.3.
 *
 * Sessions are keyed by (source identity, expected destination identity,
 * destination address); each carries at most 100 streams (another session is
 * opened when full), is pinged every 10 s and closed after 5 min idle.
 * The server certificate must carry a URI SAN equal to the expected
 * destination identity; no SNI is sent.
 */
import * as net from 'node:net';
import * as http2 from 'node:http2';
import { randomBytes } from 'node:crypto';
import { parseSpiffeId } from '../../identity/spiffe.js';
import {
  assertHostPort,
  formatHostPort,
  GOAWAY_REASON_PREFIX,
  GOAWAY_REJECT_CODE,
  H2,
  HBONE_CONNECTION_WINDOW,
  HBONE_MAX_CONCURRENT_STREAMS,
  HBONE_MAX_SESSION_MEMORY_MB,
  HboneError,
  hboneSettings,
  noop,
  type HostPort,
} from './common.js';
import { resetStream } from './tunnel.js';
import { mtlsHandshake, withDeadline } from './client-connect.js';
import type { ClientCert, HboneConnectRequest, HbonePoolOptions, HbonePoolStats, HboneStream } from './client-options.js';
import { keepPinging } from '../liveness.js';

export type { ClientCert, HbonePoolOptions, HboneConnectRequest, HboneStream, HbonePoolStats } from './client-options.js';

interface PooledSession {
  key: string;
  dstId: string;
  session: http2.ClientHttp2Session | undefined;
  ready: Promise<http2.ClientHttp2Session>;
  active: number;
  draining: boolean;
  closed: boolean;
  goaway: { code: number; reason: string | undefined } | undefined;
  idleTimer: NodeJS.Timeout | undefined;
  stopPing: (() => void) | undefined;
  expiryTimer: NodeJS.Timeout | undefined;
  /** what is left of the server's stream-reset allowance (see RESET_BURST) and when it was last refilled */
  resetTokens: number;
  resetRefilledAt: number;
}

/**
 * nghttp2 >= 1.57 (in Node's and most HTTP/2 servers) ends a server session
 * that receives RST_STREAM faster than a token bucket allows (its Rapid Reset
 * mitigation: a burst of 1000, refilled at 33 per second), with every stream
 * on it. An app that resets its connections often would so cut its
 * neighbours' tunnels: a session that used most of its allowance takes no new
 * streams (the pool opens another), and its remaining streams, at most
 * maxStreamsPerSession, fit in what is left.
 */
const RESET_BURST = 1000;
const RESET_RATE_PER_S = 33;
const RESET_RESERVE = 250;

function traceparent(): string {
  const b = randomBytes(24);
  return `00-${b.subarray(0, 16).toString('hex')}-${b.subarray(16).toString('hex')}-00`;
}

function forwardedValue(f: HostPort | string): string {
  if (typeof f === 'string') return f.startsWith('for=') ? f : `for="${f}"`;
  return `for="${formatHostPort(f)}"`;
}

export class HbonePool {
  readonly #opts: HbonePoolOptions;
  /** Sessions that take new streams, per key. */
  readonly #sessions = new Map<string, PooledSession[]>();
  /** Every session not yet closed (including draining ones). */
  readonly #all = new Set<PooledSession>();
  readonly #maxStreams: number;
  readonly #idleTimeoutMs: number;
  readonly #pingIntervalMs: number;
  readonly #pingTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #failures: Record<string, number> = {};
  #activeStreams = 0;
  #sessionsOpened = 0;
  #streamsOpened = 0;
  #retries = 0;
  #resetDrains = 0;
  #closed = false;

  constructor(opts: HbonePoolOptions) {
    this.#opts = opts;
    this.#maxStreams = opts.maxStreamsPerSession ?? HBONE_MAX_CONCURRENT_STREAMS;
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? 300_000;
    this.#pingIntervalMs = opts.pingIntervalMs ?? 10_000;
    this.#pingTimeoutMs = opts.pingTimeoutMs ?? 20_000;
    this.#connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
  }

  stats(): HbonePoolStats {
    let n = 0;
    for (const l of this.#sessions.values()) n += l.length;
    return {
      sessions: n,
      activeStreams: this.#activeStreams,
      sessionsOpened: this.#sessionsOpened,
      streamsOpened: this.#streamsOpened,
      retries: this.#retries,
      resetDrains: this.#resetDrains,
      failures: { ...this.#failures },
    };
  }

  /** Opens a tunnel; resolves after the server's 200. Rejects with HboneError. */
  async connect(req: HboneConnectRequest): Promise<HboneStream> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#connect(req);
      } catch (err) {
        const e = err instanceof HboneError ? err : new HboneError('HBONE_CLOSED', String((err as Error)?.message ?? err), { cause: err });
        // refused before the server answered (GOAWAY of a draining or restarted
        // peer agent, REFUSED_STREAM, a reset during the TLS handshake): nothing
        // reached the destination yet, so it is safe to try again, on a new session
        const retryable = e.code === 'HBONE_REFUSED' || (e.code === 'HBONE_CONNECT' && (e.reason === 'ECONNRESET' || e.reason === 'EPIPE'));
        if (retryable && attempt < 2 && !this.#closed && !req.signal?.aborted) {
          this.#retries++;
          continue;
        }
        this.#failures[e.code] = (this.#failures[e.code] ?? 0) + 1;
        throw e;
      }
    }
  }

  async #connect(req: HboneConnectRequest): Promise<HboneStream> {
    if (this.#closed) throw new HboneError('HBONE_POOL_CLOSED', 'HBONE pool is closed');
    try {
      parseSpiffeId(req.srcId);
      parseSpiffeId(req.dstId);
      assertHostPort(req.dstAddr, 'dstAddr');
      assertHostPort(req.target, 'target');
    } catch (err) {
      throw new HboneError('HBONE_BAD_ARGUMENT', (err as Error).message, { cause: err });
    }
    if (req.signal?.aborted) throw new HboneError('HBONE_ABORTED', 'aborted');

    const timeoutMs = req.timeoutMs ?? this.#connectTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    const ps = this.#acquire(req);
    let session: http2.ClientHttp2Session;
    try {
      session = await withDeadline(ps.ready, deadline, req.signal, `HBONE session to ${formatHostPort(req.dstAddr)}`);
    } catch (err) {
      this.#release(ps);
      throw err;
    }
    if (ps.closed || session.closed || session.destroyed) {
      this.#release(ps);
      throw new HboneError('HBONE_REFUSED', 'session closed before the stream could be opened', {
        ...(ps.goaway?.reason ? { reason: ps.goaway.reason } : {}),
      });
    }

    const tp = traceparent();
    const headers: http2.OutgoingHttpHeaders = {
      ...(req.headers?.extra ?? {}),
      ':method': 'CONNECT',
      ':authority': formatHostPort(req.target),
      traceparent: tp,
    };
    if (req.headers?.forwardedFor !== undefined) headers['forwarded'] = forwardedValue(req.headers.forwardedFor);
    if (req.headers?.baggage !== undefined) headers['baggage'] = req.headers.baggage;

    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: false });
    } catch (err) {
      this.#release(ps);
      throw new HboneError('HBONE_REFUSED', `cannot open stream: ${(err as Error).message}`, { cause: err });
    }
    this.#activeStreams++;
    this.#streamsOpened++;
    const windows = this.#opts.windows;
    windows?.streamOpened();
    stream.once('close', () => {
      this.#activeStreams--;
      windows?.streamClosed();
      if (stream.rstCode !== H2.NGHTTP2_NO_ERROR) this.#spendReset(ps);
      this.#release(ps);
    });
    stream.on('error', noop); // callers attach their own; avoid crashes before they do

    const responseHeaders = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        stream.off('response', onResponse);
        stream.off('close', onClose);
        req.signal?.removeEventListener('abort', onAbort);
      };
      const fail = (e: HboneError): void => {
        cleanup();
        resetStream(stream, H2.NGHTTP2_CANCEL);
        reject(e);
      };
      const onResponse = (h: http2.IncomingHttpHeaders): void => {
        const status = Number(h[':status']);
        if (status === 200) {
          cleanup();
          resolve(h);
          return;
        }
        const reason = typeof h['x-hbone-reason'] === 'string' ? h['x-hbone-reason'] : undefined;
        const opts = { status, ...(reason ? { reason } : {}) };
        const what = `${formatHostPort(req.dstAddr)} -> ${formatHostPort(req.target)}`;
        if (status === 401) fail(new HboneError('HBONE_DENIED', `HBONE ${what}: 401 denied${reason ? ` (${reason})` : ''}`, opts));
        else if (status === 400) fail(new HboneError('HBONE_BAD_REQUEST', `HBONE ${what}: 400 bad request${reason ? ` (${reason})` : ''}`, opts));
        else if (status === 503) fail(new HboneError('HBONE_UNAVAILABLE', `HBONE ${what}: 503 unavailable${reason ? ` (${reason})` : ''}`, opts));
        else fail(new HboneError('HBONE_STATUS', `HBONE ${what}: unexpected status ${status}`, opts));
      };
      const onClose = (): void => {
        cleanup();
        const g = ps.goaway;
        if (g && g.code === GOAWAY_REJECT_CODE) {
          reject(new HboneError('HBONE_TLS', `server rejected our identity: ${g.reason ?? 'unknown'}`, { reason: g.reason ?? 'rejected' }));
        } else if (stream.rstCode === H2.NGHTTP2_REFUSED_STREAM || (g && stream.id === undefined)) {
          reject(new HboneError('HBONE_REFUSED', 'stream refused', { ...(g?.reason ? { reason: g.reason } : {}) }));
        } else if (g) {
          reject(new HboneError('HBONE_REFUSED', `session going away (code ${g.code})`, { ...(g.reason ? { reason: g.reason } : {}) }));
        } else {
          reject(new HboneError('HBONE_CLOSED', `stream closed before response (code ${stream.rstCode})`, { reason: String(stream.rstCode) }));
        }
      };
      const onAbort = (): void => fail(new HboneError('HBONE_ABORTED', 'aborted'));
      stream.once('response', onResponse);
      stream.once('close', onClose);
      req.signal?.addEventListener('abort', onAbort, { once: true });
      const left = deadline - Date.now();
      // the handlers above run on later events only: the timer is set before any can call cleanup()
      const timer = setTimeout(() => fail(new HboneError('HBONE_TIMEOUT', `no response within ${timeoutMs} ms`)), Math.max(0, left));
      timer.unref();
    });

    // destroy() by the user resets the stream with RST_STREAM(CANCEL) (or
    // INTERNAL_ERROR when given an error), without a preceding END_STREAM.
    const origDestroy = stream.destroy.bind(stream);
    stream.destroy = ((err?: Error) => {
      resetStream(stream, err ? H2.NGHTTP2_INTERNAL_ERROR : H2.NGHTTP2_CANCEL);
      return origDestroy(err);
    }) as typeof stream.destroy;
    Object.defineProperty(stream, 'hbone', {
      value: Object.freeze({ responseHeaders, traceparent: tp, peerId: ps.dstId }),
      enumerable: false,
    });
    return stream as unknown as HboneStream;
  }

  /** Graceful: no new streams; resolves when all sessions are closed. `force` destroys them. */
  async close(opts: { force?: boolean } = {}): Promise<void> {
    this.#closed = true;
    const all = [...this.#all];
    this.#sessions.clear();
    await Promise.all(
      all.map(async (ps) => {
        ps.draining = true;
        let s: http2.ClientHttp2Session | undefined;
        try {
          s = await ps.ready;
        } catch {
          return;
        }
        this.#clearTimers(ps);
        if (s.closed && s.destroyed) return;
        await new Promise<void>((resolve) => {
          s!.once('close', () => resolve());
          if (opts.force) s!.destroy();
          else s!.close();
          if (s!.destroyed) resolve();
        });
      }),
    );
  }

  // -------------------------------------------------------------------------

  #key(req: HboneConnectRequest): string {
    return `${req.srcId}\n${req.dstId}\n${formatHostPort(req.dstAddr)}`;
  }

  #limit(ps: PooledSession): number {
    const remote = ps.session?.remoteSettings?.maxConcurrentStreams;
    return Math.min(this.#maxStreams, typeof remote === 'number' && remote > 0 ? remote : this.#maxStreams);
  }

  /** One RST_STREAM against the server's allowance; near its end the session takes no new streams. */
  #spendReset(ps: PooledSession): void {
    const now = Date.now();
    ps.resetTokens = Math.min(RESET_BURST, ps.resetTokens + ((now - ps.resetRefilledAt) / 1000) * RESET_RATE_PER_S) - 1;
    ps.resetRefilledAt = now;
    if (ps.resetTokens < RESET_RESERVE && !ps.draining) {
      ps.draining = true;
      this.#remove(ps);
      this.#resetDrains++;
      if (ps.active === 0) ps.session?.close();
    }
  }

  #acquire(req: HboneConnectRequest): PooledSession {
    const key = this.#key(req);
    let list = this.#sessions.get(key);
    if (!list) this.#sessions.set(key, (list = []));
    let ps = list.find((p) => !p.draining && !p.closed && p.active < this.#limit(p));
    if (!ps) {
      ps = this.#open(key, req);
      list.push(ps);
    }
    ps.active++;
    if (ps.idleTimer) {
      clearTimeout(ps.idleTimer);
      ps.idleTimer = undefined;
    }
    return ps;
  }

  #release(ps: PooledSession): void {
    ps.active--;
    if (ps.active > 0 || ps.closed) return;
    if (ps.draining) {
      ps.session?.close();
      return;
    }
    if (ps.idleTimer) clearTimeout(ps.idleTimer);
    ps.idleTimer = setTimeout(() => {
      ps.idleTimer = undefined;
      if (ps.active === 0) {
        ps.draining = true;
        this.#remove(ps);
        ps.session?.close();
      }
    }, this.#idleTimeoutMs);
    ps.idleTimer.unref();
  }

  #remove(ps: PooledSession): void {
    const list = this.#sessions.get(ps.key);
    if (!list) return;
    const i = list.indexOf(ps);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#sessions.delete(ps.key);
  }

  #clearTimers(ps: PooledSession): void {
    for (const t of [ps.idleTimer, ps.expiryTimer]) if (t) clearTimeout(t);
    ps.stopPing?.();
    ps.idleTimer = ps.expiryTimer = ps.stopPing = undefined;
  }

  #open(key: string, req: HboneConnectRequest): PooledSession {
    this.#sessionsOpened++;
    const ps: PooledSession = {
      key,
      dstId: req.dstId,
      session: undefined,
      ready: undefined as unknown as Promise<http2.ClientHttp2Session>,
      active: 0,
      draining: false,
      closed: false,
      goaway: undefined,
      idleTimer: undefined,
      stopPing: undefined,
      expiryTimer: undefined,
      resetTokens: RESET_BURST,
      resetRefilledAt: Date.now(),
    };
    this.#all.add(ps);
    // The whole setup (cert lookup, socket creation, TLS, h2) is bounded; a
    // late success after the deadline is torn down inside #establish.
    ps.ready = withDeadline(this.#establish(ps, req), Date.now() + this.#connectTimeoutMs, undefined, `HBONE session to ${formatHostPort(req.dstAddr)}`).catch(
      (err: unknown) => {
        ps.closed = true;
        this.#all.delete(ps);
        this.#remove(ps);
        this.#clearTimers(ps);
        throw err;
      },
    );
    ps.ready.catch(noop);
    return ps;
  }

  async #establish(ps: PooledSession, req: HboneConnectRequest): Promise<http2.ClientHttp2Session> {
    const timeoutMs = this.#connectTimeoutMs;
    let cc: ClientCert;
    try {
      cc = await this.#opts.getClientCert(req.srcId);
    } catch (err) {
      throw new HboneError('HBONE_IDENTITY', `no certificate for ${req.srcId}: ${(err as Error)?.message ?? err}`, {
        cause: err,
      });
    }
    const ca = cc.ca ?? this.#opts.rootPem;
    if (!ca) throw new HboneError('HBONE_IDENTITY', 'no trust root configured (rootPem)');

    let raw: net.Socket;
    try {
      raw = this.#opts.createSocket
        ? await this.#opts.createSocket(req.dstAddr, { srcId: req.srcId, dstId: req.dstId })
        : net.connect({ host: req.dstAddr.ip, port: req.dstAddr.port, noDelay: true });
    } catch (err) {
      throw new HboneError('HBONE_CONNECT', `cannot create socket: ${(err as Error)?.message ?? err}`, { cause: err });
    }
    raw.on('error', noop);
    if (ps.closed) {
      raw.destroy();
      throw new HboneError('HBONE_TIMEOUT', 'session setup abandoned');
    }
    raw.setNoDelay?.(true);
    // no TCP half-close under HBONE: the server's FIN means it is gone, and
    // the session (every stream, every socket joined to them) ends with it
    raw.allowHalfOpen = false;

    const tlsSock = await mtlsHandshake(raw, cc, ca, req.dstId, req.dstAddr, timeoutMs);
    if (ps.closed) {
      tlsSock.destroy();
      throw new HboneError('HBONE_TIMEOUT', 'session setup abandoned');
    }
    if (tlsSock.alpnProtocol !== 'h2') {
      tlsSock.destroy();
      throw new HboneError('HBONE_TLS', `server did not negotiate h2 (ALPN ${String(tlsSock.alpnProtocol)})`, { reason: 'bad_alpn' });
    }

    const windows = this.#opts.windows;
    const session = http2.connect(`https://${formatHostPort(req.dstAddr)}`, {
      createConnection: () => tlsSock,
      // with a window budget: start at the floor, raised once connected (raising takes effect at once)
      settings: windows ? { ...hboneSettings(this.#maxStreams), initialWindowSize: 65_535 } : hboneSettings(this.#maxStreams),
      maxSessionMemory: HBONE_MAX_SESSION_MEMORY_MB,
      peerMaxConcurrentStreams: this.#maxStreams,
    });
    ps.session = session;
    session.on('error', noop);
    tlsSock.once('end', () => {
      if (!session.destroyed) session.destroy();
    });
    tlsSock.once('close', () => {
      if (!session.destroyed) session.destroy();
    });
    session.on('frameError', noop);
    session.on('goaway', (code: number, _last: number, data?: Buffer) => {
      const txt = data && data.length > 0 ? data.toString('utf8', 0, Math.min(data.length, 256)) : undefined;
      const reason = txt?.startsWith(GOAWAY_REASON_PREFIX) ? txt.slice(GOAWAY_REASON_PREFIX.length) : txt;
      ps.goaway = { code, reason };
      ps.draining = true;
      this.#remove(ps);
    });
    session.once('close', () => {
      ps.closed = true;
      ps.draining = true;
      this.#all.delete(ps);
      this.#remove(ps);
      this.#clearTimers(ps);
    });

    await new Promise<void>((resolve, reject) => {
      const onConnect = (): void => {
        session.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        session.off('connect', onConnect);
        reject(new HboneError('HBONE_CLOSED', 'HTTP/2 session closed during setup'));
      };
      session.once('connect', onConnect);
      session.once('close', onClose);
    });
    if (ps.closed) {
      session.destroy();
      throw new HboneError('HBONE_TIMEOUT', 'session setup abandoned');
    }
    try {
      session.setLocalWindowSize(HBONE_CONNECTION_WINDOW);
    } catch {
      /* closed meanwhile */
    }

    if (windows) {
      windows.add(session);
      try {
        session.settings({ initialWindowSize: windows.window });
      } catch {
        /* closed meanwhile */
      }
    }

    // Keep-alive pings: an unanswered one ends the session and its streams.
    const stopPing = keepPinging(session, { pingIntervalMs: this.#pingIntervalMs, pingTimeoutMs: this.#pingTimeoutMs }, () => {
      this.#failures.ping_timeout = (this.#failures.ping_timeout ?? 0) + 1;
    });
    ps.stopPing = stopPing;

    // Stop using the session once either certificate expires.
    const peerCert = tlsSock.getPeerCertificate();
    const peerNotAfter = peerCert?.valid_to ? Date.parse(peerCert.valid_to) : NaN;
    const ends = [peerNotAfter, cc.notAfter?.getTime() ?? NaN].filter((n) => Number.isFinite(n));
    if (ends.length > 0) {
      const at = Math.min(...ends);
      const delay = Math.min(Math.max(0, at - Date.now()), 0x7fffffff);
      ps.expiryTimer = setTimeout(() => {
        ps.draining = true;
        this.#remove(ps);
        if (ps.active === 0) session.close();
      }, delay);
      ps.expiryTimer.unref();
    }
    return session;
  }
}
