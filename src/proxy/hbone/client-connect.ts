/**
 * Setting up a client session to a peer agent: the mutual TLS 1.3 handshake
 * that requires the server's SPIFFE id (exact URI SAN, no SNI), how its
 * failures become HboneErrors, and the deadline of a whole connect.
 */
import type * as net from 'node:net';
import * as tls from 'node:tls';
import { formatHostPort, HboneError, noop, peerUriSans, type HostPort, type PemInput } from './common.js';
import type { ClientCert } from './client-options.js';

function tlsError(err: NodeJS.ErrnoException & { reason?: string }): HboneError {
  const code = err.code ?? '';
  if (err instanceof HboneError) return err;
  if (['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EADDRNOTAVAIL', 'EPIPE'].includes(code)) {
    return new HboneError('HBONE_CONNECT', `connect failed: ${err.message}`, { reason: code, cause: err });
  }
  return new HboneError('HBONE_TLS', `TLS failed: ${err.message}`, { reason: err.reason ?? (code || 'tls_error'), cause: err });
}

/** TLS over `raw` presenting `cc`, trusting `ca`, accepting only a server that proves `expected`. Resolves once the handshake is done. */
export async function mtlsHandshake(
  raw: net.Socket,
  cc: ClientCert,
  ca: PemInput | PemInput[],
  expected: string,
  dstAddr: HostPort,
  timeoutMs: number,
): Promise<tls.TLSSocket> {
  const tlsSock = tls.connect({
    socket: raw,
    key: cc.key,
    cert: cc.cert,
    ca,
    servername: '',
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384',
    rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) => {
      const sans = peerUriSans(cert);
      if (sans.includes(expected)) return undefined;
      return new HboneError('HBONE_TLS', `server identity mismatch: expected ${expected}, got [${sans.join(', ')}]`, {
        reason: 'san_mismatch',
      });
    },
  });
  tlsSock.on('error', noop);

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      tlsSock.destroy();
      reject(new HboneError('HBONE_TIMEOUT', `TLS handshake with ${formatHostPort(dstAddr)} timed out`));
    }, timeoutMs);
    timer.unref();
    const onErr = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      tlsSock.off('secureConnect', onOk);
      tlsSock.destroy();
      reject(tlsError(err));
    };
    const onClose = (): void => onErr(new HboneError('HBONE_CONNECT', 'connect failed: connection closed during TLS handshake', { reason: 'ECONNRESET' }));
    const onOk = (): void => {
      clearTimeout(timer);
      tlsSock.off('error', onErr);
      tlsSock.off('close', onClose);
      resolve();
    };
    tlsSock.once('secureConnect', onOk);
    tlsSock.once('error', onErr);
    tlsSock.once('close', onClose);
  });
  return tlsSock;
}

/** `p`, or HBONE_TIMEOUT at `deadline`, or HBONE_ABORTED when `signal` aborts. */
export function withDeadline<T>(p: Promise<T>, deadline: number, signal: AbortSignal | undefined, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => {
        cleanup();
        reject(new HboneError('HBONE_TIMEOUT', `${what} not established in time`));
      },
      Math.max(0, deadline - Date.now()),
    );
    timer.unref();
    const onAbort = (): void => {
      cleanup();
      reject(new HboneError('HBONE_ABORTED', 'aborted'));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        cleanup();
        resolve(v);
      },
      (e: unknown) => {
        cleanup();
        reject(e);
      },
    );
  });
}
