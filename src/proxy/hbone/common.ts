/**
 * Shared HBONE constants and helpers (Istio ambient compatible HTTP/2 CONNECT
 * over mutual TLS 1.3).
 */
import * as net from 'node:net';
import * as http2 from 'node:http2';
import { uriSansFromSubjectAltName } from '../../identity/spiffe.js';
import { AmbientError, type ProxyCode } from '../../util/errors.js';
import { formatHostPort, parseHostPort, type HostPort } from '../../util/hostport.js';

export const HBONE_PORT = 15008;
export const HBONE_ALPN = 'h2';
/** ztunnel flow-control settings. */
export const HBONE_STREAM_WINDOW = 4 * 1024 * 1024;
export const HBONE_CONNECTION_WINDOW = 16 * 1024 * 1024;
export const HBONE_MAX_FRAME_SIZE = 1024 * 1024;
export const HBONE_MAX_CONCURRENT_STREAMS = 100;
/** Node http2 per-session memory cap (MB); the default 10 MB is below one full connection window. */
export const HBONE_MAX_SESSION_MEMORY_MB = 128;

export const H2 = http2.constants;

/** HTTP/2 settings both ends advertise. */
export function hboneSettings(maxConcurrentStreams = HBONE_MAX_CONCURRENT_STREAMS): http2.Settings {
  return {
    initialWindowSize: HBONE_STREAM_WINDOW,
    maxFrameSize: HBONE_MAX_FRAME_SIZE,
    maxConcurrentStreams,
    enablePush: false,
  };
}

/** GOAWAY error code + debug-data prefix the server uses when it rejects a peer's identity. */
export const GOAWAY_REJECT_CODE = H2.NGHTTP2_INADEQUATE_SECURITY;
export const GOAWAY_REASON_PREFIX = 'hbone-reject:';

/** PEM text (one or more blocks). */
export type PemInput = string | Buffer;

// one address type and one way to write and read it (src/util/hostport.ts)
export { formatHostPort, type HostPort };

/** Strips an IPv4-mapped IPv6 prefix and canonicalises IPv6 text. Returns '' for non-IPs. */
export function normalizeIp(ip: string | undefined): string {
  if (!ip) return '';
  let s = ip;
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const pct = s.indexOf('%');
  const zone = pct >= 0 ? s.slice(pct) : '';
  if (pct >= 0) s = s.slice(0, pct);
  const lower = s.toLowerCase();
  if (lower.startsWith('::ffff:') && net.isIPv4(s.slice(7))) return s.slice(7);
  const fam = net.isIP(s);
  if (fam === 4) return s;
  if (fam === 6) {
    try {
      return new URL(`http://[${s}]/`).hostname.slice(1, -1) + zone;
    } catch {
      return lower + zone;
    }
  }
  return '';
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 1 && p <= 65535;
}

/** Parses `<ip>:<port>` / `[<ipv6>]:<port>` strictly (no host names). */
export function parseAuthority(authority: string | undefined): HostPort | undefined {
  if (typeof authority !== 'string' || authority.length === 0 || authority.length > 64) return undefined;
  const hp = parseHostPort(authority);
  if (!hp || !validPort(hp.port)) return undefined;
  return { ip: normalizeIp(hp.ip), port: hp.port };
}

export function assertHostPort(hp: HostPort, what: string): void {
  if (!hp || typeof hp.ip !== 'string' || net.isIP(hp.ip) === 0 || !validPort(hp.port)) {
    throw new HboneError('HBONE_BAD_ARGUMENT', `${what} must be {ip, port} with a literal IP address, got ${JSON.stringify(hp)}`);
  }
}

/** URI SANs of a peer certificate as reported by tls.TLSSocket#getPeerCertificate(). */
export function peerUriSans(cert: { subjectaltname?: string } | undefined | null): string[] {
  return uriSansFromSubjectAltName(cert?.subjectaltname);
}

export type HboneErrorCode = Extract<ProxyCode, `HBONE_${string}`>;

/** What to do about each HBONE failure (the operator reads it with the code). */
const HBONE_HINTS: Record<HboneErrorCode, string> = {
  HBONE_DENIED:
    'an AuthorizationPolicy at the destination denied this source (401): see the policies selecting the destination pod (config_dump policies on its node)',
  HBONE_BAD_REQUEST:
    'the destination agent refused the request (400, see the reason): a tunnel targets the address it arrived on and never a port of the agent itself',
  HBONE_UNAVAILABLE: 'the destination agent could not reach the app (503): is it listening on that port inside the pod?',
  HBONE_STATUS: 'the peer answered with an unexpected HTTP status: is an HBONE (ztunnel-compatible) agent listening on 15008 there?',
  HBONE_TLS:
    "mutual TLS failed (see the reason): both sides need certificates of the mesh root and trust domain, and the server's URI SAN must be the destination's SPIFFE id",
  HBONE_CONNECT: "the destination's port 15008 cannot be reached: is its node agent running and the pod enrolled?",
  HBONE_TIMEOUT: 'the peer did not answer in time: a network partition, or an overloaded peer agent',
  HBONE_REFUSED: 'the peer is draining or restarting (GOAWAY, REFUSED_STREAM): the stream is tried again on a new session',
  HBONE_CLOSED: 'the session ended before the answer: the peer agent restarted or the network failed',
  HBONE_ABORTED: 'the client went away while its tunnel was being opened',
  HBONE_IDENTITY: 'no certificate for this identity: see config_dump certificates and the CA (caDir)',
  HBONE_BAD_ARGUMENT: 'an invalid SPIFFE id or address was given to connect(): a bug in the caller',
  HBONE_POOL_CLOSED: 'the source pod was unenrolled or the agent is stopping',
};

/** Every HboneErrorCode (wire checks of records read them). */
export const HBONE_ERROR_CODES = Object.keys(HBONE_HINTS) as readonly HboneErrorCode[];

export class HboneError extends AmbientError {
  declare readonly code: HboneErrorCode;
  /** HTTP status for HBONE_DENIED / HBONE_BAD_REQUEST / HBONE_UNAVAILABLE / HBONE_STATUS. */
  readonly status: number | undefined;
  /** Machine-readable detail (e.g. 'san_mismatch', 'no_client_cert', TLS error code). */
  readonly reason: string | undefined;
  constructor(code: HboneErrorCode, message: string, opts: { status?: number; reason?: string; cause?: unknown; hint?: string } = {}) {
    super(code, message, opts.hint ?? HBONE_HINTS[code], opts.cause !== undefined ? { cause: opts.cause } : {});
    this.name = 'HboneError';
    this.status = opts.status;
    this.reason = opts.reason;
  }
  /** True when nothing reached the destination and another attempt may succeed. */
  get retryable(): boolean {
    return this.code === 'HBONE_REFUSED' || this.code === 'HBONE_CONNECT' || this.code === 'HBONE_TIMEOUT';
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), ...(this.status !== undefined ? { status: this.status } : {}), ...(this.reason !== undefined ? { reason: this.reason } : {}) };
  }
}

export function noop(): void {}
