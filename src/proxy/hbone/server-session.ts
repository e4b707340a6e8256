/**
 * The stateless parts of serving HBONE: the TLS 1.3 server options, the
 * check of a client's certificate (one SPIFFE id of our trust domain, chained
 * to the root), a GOAWAY that carries its reason, and the answer to a
 * rejected stream.
 */
import type * as tls from 'node:tls';
import type * as http2 from 'node:http2';
import { constants as cryptoConstants } from 'node:crypto';
import { tryParseSpiffeId } from '../../identity/spiffe.js';
import {
  GOAWAY_REASON_PREFIX,
  H2,
  HBONE_MAX_CONCURRENT_STREAMS,
  HBONE_MAX_SESSION_MEMORY_MB,
  hboneSettings,
  parseAuthority,
  peerUriSans,
  type HostPort,
  type PemInput,
} from './common.js';
import { formatHostPort } from '../../util/hostport.js';
import type { HboneRejectReason, HboneServerOptions, PeerInfo, ServerCert } from './server-options.js';

const TLS13_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384';

/** The cache key of a TLS context: its certificate chain and roots. */
export function pemKey(p: PemInput | PemInput[]): string {
  return Array.isArray(p) ? p.map((x) => x.toString()).join('') : p.toString();
}

/** http2.createSecureServer options for one certificate: TLS 1.3 only, client certificate required (checked by checkPeer), HBONE's HTTP/2 settings. */
export function tlsServerOptions(sc: ServerCert, opts: HboneServerOptions): http2.SecureServerOptions {
  return {
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
    handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
    allowHTTP1: false,
    unknownProtocolTimeout: 1000,
    // with a window budget sessions start at its floor and are raised in
    // #onSession (raising takes effect at once; lowering needs the peer's ACK)
    settings: opts.windows
      ? { ...hboneSettings(opts.maxConcurrentStreams ?? HBONE_MAX_CONCURRENT_STREAMS), initialWindowSize: 65_535 }
      : hboneSettings(opts.maxConcurrentStreams ?? HBONE_MAX_CONCURRENT_STREAMS),
    maxSessionMemory: HBONE_MAX_SESSION_MEMORY_MB,
    peerMaxConcurrentStreams: opts.maxConcurrentStreams ?? HBONE_MAX_CONCURRENT_STREAMS,
  };
}

/** The client's identity from its verified certificate, or why it is refused. */
export function checkPeer(sock: tls.TLSSocket, trustDomain: string): { peer: PeerInfo } | { reason: HboneRejectReason; message: string } {
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
  if (id.trustDomain !== trustDomain) {
    return {
      reason: 'bad_trust_domain',
      message: `client trust domain ${id.trustDomain} is not ${trustDomain}`,
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

/** GOAWAY with the reason as debug data, then close; force-destroy shortly after. */
export function goawayAndClose(session: http2.ServerHttp2Session, code: number, reason: string): void {
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

/** Answers a rejected CONNECT (status and x-hbone-reason), discards its body and closes it if the client does not. */
export function answerRejected(stream: http2.ServerHttp2Stream, status: number, reason: HboneRejectReason): void {
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

/**
 * A stream's request: CONNECT to `<ip>:<port>` of the address the connection
 * arrived on, and never a port `refuseTarget` names (the agent's own); else
 * why it is answered 400.
 */
export function checkConnect(
  headers: http2.IncomingHttpHeaders,
  local: HostPort,
  refuseTarget: HboneServerOptions['refuseTarget'],
): { target: HostPort } | { reason: HboneRejectReason; message: string; target?: HostPort } {
  if (headers[':method'] !== 'CONNECT') return { reason: 'not_connect', message: `method ${String(headers[':method'])} is not CONNECT` };
  const authority = headers[':authority'];
  const target = parseAuthority(typeof authority === 'string' ? authority : undefined);
  if (!target) return { reason: 'bad_authority', message: `:authority ${JSON.stringify(authority)} is not <ip>:<port>` };
  if (target.ip !== local.ip) {
    return { reason: 'authority_mismatch', message: `:authority ip ${target.ip} differs from the connection's local address ${local.ip}`, target };
  }
  const refused = refuseTarget?.(target) ?? null;
  if (refused) return { reason: refused, message: `${formatHostPort(target)} is a port of the agent itself, never a tunnel target`, target };
  return { target };
}
