/**
 * Every connection the agent carries, open or recently closed: who talked to
 * whom, the original destination, bytes each way, when, and how it ended.
 * Shown by /config_dump; bounded (the last `keepClosed` closed ones are kept).
 */
import { EventEmitter } from 'node:events';

export type Direction = 'outbound' | 'inbound';

export interface ConnectionRecord {
  id: number;
  /** the enrolled pod (namespace/name) whose traffic this is */
  pod: string;
  direction: Direction;
  /** source address as the kernel saw it (the TCP peer; on inbound HBONE: where the tunnel came from) */
  src: string; // ip:port
  /** inbound HBONE: the client address the peer claimed (Forwarded header); informational, never used to decide */
  claimedSrc?: string;
  /** original destination (what the client dialled) */
  dst: string; // ip:port
  /** how the agent carried it */
  via: 'passthrough' | 'hbone' | 'inbound-plaintext' | 'inbound-hbone';
  /** peer identity when known (HBONE), else null */
  peerIdentity: string | null;
  /** serial of the certificate the peer presented (inbound HBONE) */
  peerCertSerial?: string;
  /** the service (namespace/name) when the client dialled a service VIP */
  service?: string;
  /** the endpoint chosen for a service (ip:port) */
  endpoint?: string;
  /** bytes from the client towards the destination */
  bytesSent: number;
  /** bytes from the destination back to the client */
  bytesReceived: number;
  start: string;
  end: string | null;
  state: 'open' | 'closed' | 'failed';
  /** why it ended: "eof", "reset", or an error code */
  reason: string | null;
}

const VIAS = new Set(['passthrough', 'hbone', 'inbound-plaintext', 'inbound-hbone']);
const str = (v: unknown): v is string => typeof v === 'string' && v.length <= 1024;
const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * A closed connection record received from elsewhere (the agent this one
 * replaced), checked field by field; null when it is not one.
 */
export function parseClosedRecord(x: unknown): ConnectionRecord | null {
  if (x === null || typeof x !== 'object' || Array.isArray(x)) return null;
  const r = x as Record<string, unknown>;
  if (!count(r.id) || !str(r.pod) || !str(r.src) || !str(r.dst) || !str(r.start)) return null;
  if (r.direction !== 'outbound' && r.direction !== 'inbound') return null;
  if (!VIAS.has(r.via as string)) return null;
  if (r.state !== 'closed' && r.state !== 'failed') return null;
  if (!count(r.bytesSent) || !count(r.bytesReceived)) return null;
  for (const k of ['peerIdentity', 'reason', 'end']) if (r[k] !== null && r[k] !== undefined && !str(r[k])) return null;
  for (const k of ['service', 'endpoint', 'peerCertSerial', 'claimedSrc']) if (r[k] !== undefined && !str(r[k])) return null;
  return {
    id: r.id, pod: r.pod, direction: r.direction, src: r.src, dst: r.dst, via: r.via as ConnectionRecord['via'],
    peerIdentity: (r.peerIdentity as string | null | undefined) ?? null,
    ...(r.peerCertSerial !== undefined ? { peerCertSerial: r.peerCertSerial as string } : {}),
    ...(r.claimedSrc !== undefined ? { claimedSrc: r.claimedSrc as string } : {}),
    ...(r.service !== undefined ? { service: r.service as string } : {}),
    ...(r.endpoint !== undefined ? { endpoint: r.endpoint as string } : {}),
    bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, start: r.start,
    end: (r.end as string | null | undefined) ?? null, state: r.state, reason: (r.reason as string | null | undefined) ?? null,
  };
}

export class ConnectionTracker extends EventEmitter {
  private nextId = 1;
  private readonly open = new Map<number, ConnectionRecord>();
  private readonly closed: ConnectionRecord[] = [];

  constructor(private readonly keepClosed = 1000) {
    super();
  }

  begin(r: Omit<ConnectionRecord, 'id' | 'bytesSent' | 'bytesReceived' | 'start' | 'end' | 'state' | 'reason' | 'peerIdentity'> & { peerIdentity?: string | null }): ConnectionRecord {
    const rec: ConnectionRecord = {
      id: this.nextId++, bytesSent: 0, bytesReceived: 0, start: new Date().toISOString(), end: null, state: 'open',
      reason: null, peerIdentity: null, ...r,
    };
    this.open.set(rec.id, rec);
    this.emit('open', rec);
    return rec;
  }

  finish(rec: ConnectionRecord, state: 'closed' | 'failed', reason: string, bytes?: { sent: number; received: number }): void {
    if (!this.open.delete(rec.id)) return;
    if (bytes) {
      rec.bytesSent = bytes.sent;
      rec.bytesReceived = bytes.received;
    }
    rec.state = state;
    // a reason set while it was open (e.g. "denied by policy change") explains the reset better
    rec.reason = rec.reason ?? reason;
    rec.end = new Date().toISOString();
    this.closed.push(rec);
    if (this.closed.length > this.keepClosed) this.closed.splice(0, this.closed.length - this.keepClosed);
    this.emit('close', rec);
  }

  openCount(): number {
    return this.open.size;
  }

  list(): ConnectionRecord[] {
    return [...this.closed, ...this.open.values()];
  }
}
