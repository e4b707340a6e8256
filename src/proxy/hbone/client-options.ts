/**
 * What an HbonePool is given (certificates, sockets, limits), what a tunnel
 * request says, and what the pool reports.
 */
import type * as net from 'node:net';
import type * as http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { HostPort, PemInput } from './common.js';
import type { WindowBudget } from '../limits.js';

export interface ClientCert {
  key: PemInput;
  /** Leaf + intermediates. */
  cert: PemInput;
  /** Trust roots for verifying servers; falls back to the pool's rootPem. */
  ca?: PemInput | PemInput[];
  /** If given, sessions using this certificate stop taking new streams at this time. */
  notAfter?: Date;
}

export interface HbonePoolOptions {
  getClientCert(srcId: string): ClientCert | Promise<ClientCert>;
  /** Trust root(s) for server verification (unless the ClientCert carries `ca`). */
  rootPem?: PemInput | PemInput[];
  /**
   * Creates the TCP socket to the HBONE endpoint (e.g. inside the source pod's
   * netns, with SO_MARK). May return a connecting socket. Default: net.connect.
   */
  createSocket?(dst: HostPort, info: { srcId: string; dstId: string }): net.Socket | Promise<net.Socket>;
  /** Default 100 (also capped by the server's SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxStreamsPerSession?: number;
  /** Default 5 min. */
  idleTimeoutMs?: number;
  /** Default 10 s. */
  pingIntervalMs?: number;
  /** Session is destroyed if a PING is not answered within this. Default 20 s. */
  pingTimeoutMs?: number;
  /** TCP connect + TLS handshake + 200 response. Default 10 s. */
  connectTimeoutMs?: number;
  /** The node-wide per-stream window (flow control bounded by a receive budget). Default: fixed windows. */
  windows?: WindowBudget;
}

export interface HboneConnectRequest {
  srcId: string;
  /** Expected SPIFFE id of the server (exact URI SAN match). */
  dstId: string;
  /** HBONE endpoint, normally <pod ip>:15008. */
  dstAddr: HostPort;
  /** Tunnel target, sent as :authority. */
  target: HostPort;
  headers?: {
    /** Original client address: {ip, port} or a ready `for=` value. */
    forwardedFor?: HostPort | string;
    baggage?: string;
    /** Extra request headers. */
    extra?: http2.OutgoingHttpHeaders;
  };
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** The tunnel: a Duplex (HTTP/2 stream) with a few read-only extras. */
export interface HboneStream extends Duplex {
  readonly hbone: {
    responseHeaders: http2.IncomingHttpHeaders;
    traceparent: string;
    /** Identity the server proved (equals dstId). */
    peerId: string;
  };
}

export interface HbonePoolStats {
  sessions: number;
  /** Streams currently open (including ones waiting for their response). */
  activeStreams: number;
  sessionsOpened: number;
  streamsOpened: number;
  /** streams refused before the server answered (GOAWAY, REFUSED_STREAM) and tried again */
  retries: number;
  /** sessions retired because their streams were reset so often the server would end them */
  resetDrains: number;
  failures: Record<string, number>;
}
