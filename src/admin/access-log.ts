/**
 * Access log: one structured JSON line per closed connection, written through
 * the agent's Logger (scope "<root>.access", stderr JSON lines). Who talked to
 * whom (workloads from the model, SPIFFE principals), the addresses, bytes
 * each way, how long and how it ended.
 */
import type { EventEmitter } from 'node:events';
import type { ConnectionRecord } from '../proxy/connections.js';
import type { PodInfo } from '../discovery/workloads.js';
import type { Logger } from '../util/log.js';

export type AccessLogLevel = 'info' | 'debug' | 'off';

export interface AccessLogContext {
  /** the model's pod at an address (local or remote), when known */
  podByIp(ip: string): PodInfo | undefined;
  /** SPIFFE identity of a pod */
  spiffeOf(p: PodInfo): string;
}

export interface AccessLogEntry {
  connectionId: number;
  direction: ConnectionRecord['direction'];
  via: ConnectionRecord['via'];
  /** namespace/name, null when the address is not a workload of the model */
  srcWorkload: string | null;
  dstWorkload: string | null;
  srcPrincipal: string | null;
  dstPrincipal: string | null;
  src: string;
  /** inbound HBONE: the client the peer claimed (Forwarded), informational */
  claimedSrc: string | null;
  /** what the client dialled */
  dst: string;
  /** where it was sent (service endpoint), else the original destination */
  endpoint: string;
  service: string | null;
  bytesSent: number;
  bytesReceived: number;
  durationMs: number | null;
  state: ConnectionRecord['state'];
  reason: string | null;
  start: string;
  end: string | null;
}

/** "1.2.3.4:80" / "[::1]:80" / "::1:80" -> the address part. */
export function hostOf(hostPort: string): string {
  if (hostPort.startsWith('[')) return hostPort.slice(1, hostPort.indexOf(']'));
  const i = hostPort.lastIndexOf(':');
  return i < 0 ? hostPort : hostPort.slice(0, i);
}

const keyOf = (p: PodInfo): string => `${p.namespace}/${p.name}`;

export function accessLogEntry(rec: ConnectionRecord, ctx: AccessLogContext): AccessLogEntry {
  const endpoint = rec.endpoint ?? rec.dst;
  let srcPod = ctx.podByIp(hostOf(rec.src));
  // inbound mTLS: the address names a workload only if it has the identity the certificate proved
  if (rec.direction === 'inbound' && rec.via === 'inbound-hbone' && srcPod && ctx.spiffeOf(srcPod) !== rec.peerIdentity) srcPod = undefined;
  const dstPod = ctx.podByIp(hostOf(endpoint));
  const hbone = rec.via === 'hbone' || rec.via === 'inbound-hbone';
  let srcPrincipal: string | null;
  let dstPrincipal: string | null;
  if (rec.direction === 'outbound') {
    // the local pod is the client; the server's identity is only known (verified) over HBONE
    srcPrincipal = srcPod ? ctx.spiffeOf(srcPod) : null;
    dstPrincipal = hbone ? rec.peerIdentity : null;
  } else {
    // the local pod is the server; the client's identity is only known over HBONE
    srcPrincipal = hbone ? rec.peerIdentity : null;
    dstPrincipal = dstPod ? ctx.spiffeOf(dstPod) : null;
  }
  const t0 = Date.parse(rec.start);
  const t1 = rec.end ? Date.parse(rec.end) : NaN;
  return {
    connectionId: rec.id,
    direction: rec.direction,
    via: rec.via,
    srcWorkload: srcPod ? keyOf(srcPod) : (rec.direction === 'outbound' ? rec.pod : null),
    dstWorkload: dstPod ? keyOf(dstPod) : (rec.direction === 'inbound' ? rec.pod : null),
    srcPrincipal,
    dstPrincipal,
    src: rec.src,
    claimedSrc: rec.claimedSrc ?? null,
    dst: rec.dst,
    endpoint,
    service: rec.service ?? null,
    bytesSent: rec.bytesSent,
    bytesReceived: rec.bytesReceived,
    durationMs: Number.isFinite(t0) && Number.isFinite(t1) ? t1 - t0 : null,
    state: rec.state,
    reason: rec.reason,
    start: rec.start,
    end: rec.end,
  };
}

/**
 * Subscribes to the tracker's 'close' events and logs each closed connection
 * at `level` (nothing when 'off'). A failure to build a line never reaches the
 * connection path.
 */
export function attachAccessLog(tracker: EventEmitter, log: Logger, level: AccessLogLevel, ctx: AccessLogContext): void {
  if (level === 'off') return;
  tracker.on('close', (rec: ConnectionRecord) => {
    if (!log.enabled(level)) return;
    try {
      log.log(level, 'connection', { ...accessLogEntry(rec, ctx) });
    } catch { /* never let logging break the relay */ }
  });
}
