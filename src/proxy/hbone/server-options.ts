/**
 * What an HboneServer is given (certificates, policy, the app connection,
 * limits), what it tells its observer, and what it reports; with the default
 * connection to the app (plain TCP to the target).
 */
import * as net from 'node:net';
import type * as http2 from 'node:http2';
import { noop, type HostPort, type PemInput } from './common.js';
import type { WindowBudget } from '../limits.js';
import type { LivenessParams } from '../liveness.js';
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
    /** HTTP/2 streams admitted (within maxStreamsPerSession) and open now; refused ones are not counted. */
    active: number;
    /** The most streams one session held at once since the start (at most maxStreamsPerSession). */
    perSessionPeak: number;
    tunnelsOpened: number;
    /** Sockets to applications currently open. */
    upstreamsOpen: number;
  };
  rejections: Record<HboneRejectReason, number>;
}

/** Default `connectTarget`: TCP to the target from the agent's own namespace, given up after `timeoutMs` or when the stream closes. */
export function defaultConnectTarget(timeoutMs: number) {
  return (target: HostPort, ctx: HboneStreamContext): Promise<net.Socket> =>
    new Promise<net.Socket>((resolve, reject) => {
      const sock = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true, noDelay: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        sock.off('error', fail);
        ctx.signal.removeEventListener('abort', onAbort);
      };
      const fail = (err: Error): void => {
        cleanup();
        sock.on('error', noop);
        sock.destroy();
        reject(err);
      };
      const onAbort = (): void =>
        fail(new AmbientError('UPSTREAM_FAILED', 'stream closed while connecting', 'the client reset its stream before the app answered'));
      // set before anything can call cleanup()
      const timer = setTimeout(
        () =>
          fail(
            new AmbientError(
              'UPSTREAM_FAILED',
              `connect to ${formatHostPort(target)} timed out`,
              'the app did not accept the connection in time: is it overloaded, or is a firewall dropping SYNs?',
            ),
          ),
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
