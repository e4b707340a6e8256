/**
 * Every connection the agent carries (plaintext passthrough, HBONE tunnels
 * both ways, inbound plaintext), open or recently closed: who talked to whom,
 * the original destination, bytes each way, when, and how it ended.
 *
 * A record is typed (`TrackedConnection`): addresses are HostPort values and
 * the end is an `Outcome` set where the connection was handled. Three views
 * are made from it, each in one place:
 *  - config_dump's `connections[]` (`ConnectionRecord`, `dumpRecord`):
 *    addresses as "ip:port" text ("[v6]:port"), `state`/`reason` from the outcome;
 *  - the Istio metric labels and the access-log line (src/metrics/record-view.ts);
 *  - the hand-over wire format, versioned (src/lifecycle/records.ts).
 * Bounded: the last `keepClosed` closed ones are kept.
 */
import { EventEmitter } from 'node:events';
import { formatHostPort, type HostPort } from '../util/hostport.js';
import { outcomeReason, outcomeState, type Outcome } from './outcome.js';

export type Direction = 'outbound' | 'inbound';
export type Via = 'passthrough' | 'hbone' | 'inbound-plaintext' | 'inbound-hbone';
export const VIAS: readonly Via[] = ['passthrough', 'hbone', 'inbound-plaintext', 'inbound-hbone'];

/** What an HBONE peer claims its client was (Forwarded `for=`): an address, maybe without a port. */
export interface ClaimedAddress {
  readonly ip: string;
  readonly port: number | null;
}

export function formatClaimed(c: ClaimedAddress): string {
  return c.port === null ? c.ip : formatHostPort({ ip: c.ip, port: c.port });
}

export interface TrackedConnection {
  readonly id: number;
  /** the enrolled pod (namespace/name) whose traffic this is */
  readonly pod: string;
  readonly direction: Direction;
  /** how the agent carried it */
  readonly via: Via;
  /** source as the kernel saw it (the TCP peer; on inbound HBONE: where the tunnel came from) */
  readonly src: HostPort;
  /** inbound HBONE: the client the peer claimed (Forwarded header); informational, never used to decide */
  readonly claimedSrc: ClaimedAddress | null;
  /** original destination (what the client dialled) */
  readonly dst: HostPort;
  /** the service (namespace/name) when the client dialled a service VIP */
  readonly service: string | null;
  /** the endpoint chosen for a service */
  readonly endpoint: HostPort | null;
  /** the peer's SPIFFE id when mutual TLS proves it (HBONE), else null */
  readonly peerIdentity: string | null;
  /** serial of the certificate the peer presented (inbound HBONE) */
  readonly peerCertSerial: string | null;
  /** ms since the epoch */
  readonly startMs: number;
  /** set by the tracker when it ends */
  readonly endMs: number | null;
  /** bytes from the client towards the destination */
  readonly bytesSent: number;
  /** bytes from the destination back to the client */
  readonly bytesReceived: number;
  /**
   * how it ended; null while open, except a revocation (a policy change
   * denied it), set while open because it explains the reset that follows
   */
  readonly outcome: Outcome | null;
}

/** What the code handling a connection knows when it starts. */
export interface ConnectionStart {
  pod: string;
  direction: Direction;
  via: Via;
  src: HostPort;
  dst: HostPort;
  claimedSrc?: ClaimedAddress | null;
  service?: string | null;
  endpoint?: HostPort | null;
  peerIdentity?: string | null;
  peerCertSerial?: string | null;
}

export type RecordState = 'open' | 'closed' | 'failed';

export function recordState(r: TrackedConnection): RecordState {
  return r.endMs === null || r.outcome === null ? 'open' : outcomeState(r.outcome);
}

export function recordReason(r: TrackedConnection): string | null {
  return r.outcome ? outcomeReason(r.outcome) : null;
}

/**
 * A connection as config_dump shows it (tests, the bench, the demo and
 * `ambientd inspect` read it): addresses as "ip:port" text, IPv6 in brackets.
 */
export interface ConnectionRecord {
  id: number;
  pod: string;
  direction: Direction;
  src: string;
  claimedSrc?: string;
  dst: string;
  via: Via;
  peerIdentity: string | null;
  peerCertSerial?: string;
  service?: string;
  endpoint?: string;
  bytesSent: number;
  bytesReceived: number;
  start: string;
  end: string | null;
  state: RecordState;
  /** why it ended: "eof", "reset by client", "denied by policy ...", an error code */
  reason: string | null;
}

export function dumpRecord(r: TrackedConnection): ConnectionRecord {
  return {
    id: r.id,
    pod: r.pod,
    direction: r.direction,
    src: formatHostPort(r.src),
    ...(r.claimedSrc ? { claimedSrc: formatClaimed(r.claimedSrc) } : {}),
    dst: formatHostPort(r.dst),
    via: r.via,
    peerIdentity: r.peerIdentity,
    ...(r.peerCertSerial !== null ? { peerCertSerial: r.peerCertSerial } : {}),
    ...(r.service !== null ? { service: r.service } : {}),
    ...(r.endpoint ? { endpoint: formatHostPort(r.endpoint) } : {}),
    bytesSent: r.bytesSent,
    bytesReceived: r.bytesReceived,
    start: new Date(r.startMs).toISOString(),
    end: r.endMs === null ? null : new Date(r.endMs).toISOString(),
    state: recordState(r),
    reason: recordReason(r),
  };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Emits 'open' and 'close' with the record (metrics, the access log, the hand-over forwarder). */
export class ConnectionTracker extends EventEmitter {
  private nextId = 1;
  private readonly open = new Map<number, Mutable<TrackedConnection>>();
  private readonly closed: TrackedConnection[] = [];

  constructor(
    private readonly keepClosed = 1000,
    private readonly now: () => number = Date.now,
  ) {
    super();
  }

  begin(s: ConnectionStart): TrackedConnection {
    const rec: Mutable<TrackedConnection> = {
      id: this.nextId++,
      pod: s.pod,
      direction: s.direction,
      via: s.via,
      src: s.src,
      claimedSrc: s.claimedSrc ?? null,
      dst: s.dst,
      service: s.service ?? null,
      endpoint: s.endpoint ?? null,
      peerIdentity: s.peerIdentity ?? null,
      peerCertSerial: s.peerCertSerial ?? null,
      startMs: this.now(),
      endMs: null,
      bytesSent: 0,
      bytesReceived: 0,
      outcome: null,
    };
    this.open.set(rec.id, rec);
    this.emit('open', rec);
    return rec;
  }

  /**
   * An open record made by another tracker (a data-plane worker's): kept here
   * under this tracker's next id, its start time as it was; emits 'open'.
   */
  mirror(r: TrackedConnection): TrackedConnection {
    const rec: Mutable<TrackedConnection> = { ...r, id: this.nextId++, endMs: null, bytesSent: 0, bytesReceived: 0, outcome: r.outcome ?? null };
    this.open.set(rec.id, rec);
    this.emit('open', rec);
    return rec;
  }

  /** A policy change denied this open connection: that is how it ends, whatever the reset that follows looks like. */
  revoke(rec: TrackedConnection, policy: string | null): void {
    const r = this.open.get(rec.id);
    if (r) r.outcome = { kind: 'revoked', policy };
  }

  finish(rec: TrackedConnection, outcome: Outcome, bytes?: { sent: number; received: number }): void {
    const r = this.open.get(rec.id);
    if (!r) return;
    this.open.delete(rec.id);
    if (bytes) {
      r.bytesSent = bytes.sent;
      r.bytesReceived = bytes.received;
    }
    r.outcome = r.outcome ?? outcome;
    r.endMs = this.now();
    this.closed.push(r);
    if (this.closed.length > this.keepClosed) this.closed.splice(0, this.closed.length - this.keepClosed);
    this.emit('close', r);
  }

  openCount(): number {
    return this.open.size;
  }

  list(): TrackedConnection[] {
    return [...this.closed, ...this.open.values()];
  }

  /** config_dump's `connections`: closed ones first, then the open ones. */
  dump(): ConnectionRecord[] {
    return this.list().map(dumpRecord);
  }
}
