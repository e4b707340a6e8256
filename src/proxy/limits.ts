/**
 * What bounds the agent's work and memory, whatever apps and peers do
 * (docs/ARCHITECTURE.md#limits has the memory formula):
 *
 *   Limiter       a counting cap (TLS handshakes in progress, upstream dials
 *                 in progress, sessions per peer): tryAcquire() or refuse,
 *                 and count the refusal.
 *   WindowBudget  HTTP/2 flow control sized for throughput but bounded:
 *                 every HBONE session (server and client side) advertises
 *                 the same per-stream window, the node's receive budget
 *                 split over the streams open now, between a floor and a
 *                 ceiling. Unconsumed data a peer may push is then at most
 *                 max(receiveBuffer, streams × floor), whatever the apps do.
 *                 A change is sent as SETTINGS to every session; a peer that
 *                 does not acknowledge it in time loses its session.
 */
import type * as http2 from 'node:http2';
import { AmbientError } from '../util/errors.js';

export interface Limits {
  /** node-wide bytes HBONE peers may send ahead of the apps, split over open streams */
  receiveBuffer: number;
  /** ceiling of the per-stream window (one bulk stream's throughput) */
  streamWindow: number;
  /** floor of the per-stream window */
  minStreamWindow: number;
  /** concurrent streams per HBONE session (both sides) */
  maxStreamsPerSession: number;
  /** server: concurrent HBONE connections from one peer address */
  maxSessionsPerPeer: number;
  /** server: TLS handshakes in progress at once */
  maxHandshakes: number;
  /** connections being opened (to apps, destinations, HBONE peers) at once */
  maxPendingDials: number;
  /** SO_SNDBUF/SO_RCVBUF of the agent's sockets inside pods (kernel memory per connection) */
  socketBuffer: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  receiveBuffer: 32 * 1024 * 1024,
  streamWindow: 1024 * 1024,
  minStreamWindow: 64 * 1024,
  maxStreamsPerSession: 100,
  maxSessionsPerPeer: 16,
  maxHandshakes: 128,
  maxPendingDials: 512,
  socketBuffer: 256 * 1024,
});

/** Per-stream buffers besides its window: Node's stream high-water marks, a TLS record, the app socket's queue. */
export const STREAM_OVERHEAD_BYTES = 64 * 1024;
/** JS state of one proxied connection (records, sockets, closures; bench: ~12 KiB per idle connection). */
export const CONNECTION_STATE_BYTES = 16 * 1024;

/**
 * The agent's memory beyond its idle size (docs/ARCHITECTURE.md#limits),
 * whatever apps and peers do, for `streams` open HBONE streams and
 * `connections` proxied connections, on `workers` data-plane workers:
 *
 *   max(receiveBuffer, streams × minStreamWindow)   data peers may send ahead of the apps
 *   + streams × STREAM_OVERHEAD_BYTES                 per-stream buffers
 *   + connections × CONNECTION_STATE_BYTES            per-connection state
 *   + workers × WORKER_LOAD_BYTES                     each worker isolate under load
 *
 * Kernel memory charged to the agent is bounded apart: 4 × socketBuffer per
 * in-pod socket (the kernel doubles SO_SNDBUF/SO_RCVBUF), and HBONE
 * connections hold at most what flow control lets into flight.
 */
export function memoryBound(
  limits: Pick<Limits, 'receiveBuffer' | 'minStreamWindow'>,
  load: { streams: number; connections: number; workers?: number },
): number {
  return (
    Math.max(limits.receiveBuffer, load.streams * limits.minStreamWindow) +
    load.streams * STREAM_OVERHEAD_BYTES +
    load.connections * CONNECTION_STATE_BYTES +
    (load.workers ?? 0) * WORKER_LOAD_BYTES
  );
}

/**
 * What a data-plane worker adds under load beyond its idle size: its
 * isolate's young generation filling up (capped at 12 MiB: src/workers/pool.ts
 * WORKER_YOUNG_GENERATION_MB), its first TLS/HTTP/2 working set and its
 * thread's malloc arena. Measured with the chaos suite's non-reading app
 * (300 × 8 MiB): one thread grew +23 MiB, two workers +47 to +75 MiB over 7
 * runs, i.e. 12 to 26 MiB per worker. The node-wide buffer budget does not
 * grow with the workers (it is split).
 */
export const WORKER_LOAD_BYTES = 26 * 1024 * 1024;

/**
 * A counting cap with a bounded wait: acquire() takes a slot, or waits for
 * one (at most `maxQueue` waiters, each at most `timeoutMs`), or refuses.
 * `hits` counts refusals.
 */
export class Limiter {
  private used = 0;
  private readonly queue: Array<{ grant: (ok: boolean) => void; timer: NodeJS.Timeout }> = [];
  hits = 0;
  constructor(
    readonly name: string,
    readonly max: number,
    readonly maxQueue = 0,
  ) {}
  get inUse(): number {
    return this.used;
  }
  get waiting(): number {
    return this.queue.length;
  }
  /** true when a slot was taken (call release() once when done), false when full (counted). */
  tryAcquire(): boolean {
    if (this.used >= this.max) {
      this.hits++;
      return false;
    }
    this.used++;
    return true;
  }
  /** A slot now, or when one frees within timeoutMs; false (counted) when the queue is full or the wait times out. */
  acquire(timeoutMs: number): Promise<boolean> {
    if (this.used < this.max) {
      this.used++;
      return Promise.resolve(true);
    }
    if (this.queue.length >= this.maxQueue) {
      this.hits++;
      return Promise.resolve(false);
    }
    return new Promise((resolve) => {
      const entry = {
        grant: (ok: boolean): void => {
          clearTimeout(entry.timer);
          resolve(ok);
        },
        timer: setTimeout(() => {
          const i = this.queue.indexOf(entry);
          if (i >= 0) this.queue.splice(i, 1);
          this.hits++;
          resolve(false);
        }, timeoutMs),
      };
      this.queue.push(entry);
    });
  }
  release(): void {
    const next = this.queue.shift();
    if (next) {
      next.grant(true);
      return;
    } // the slot passes to the next waiter
    if (this.used > 0) this.used--;
  }
}

/** Caps per key (e.g. per peer address); keys with nothing in use are forgotten. */
export class KeyedLimiter {
  private readonly used = new Map<string, number>();
  hits = 0;
  constructor(
    readonly name: string,
    readonly max: number,
  ) {}
  tryAcquire(key: string): boolean {
    const n = this.used.get(key) ?? 0;
    if (n >= this.max) {
      this.hits++;
      return false;
    }
    this.used.set(key, n + 1);
    return true;
  }
  release(key: string): void {
    const n = this.used.get(key) ?? 0;
    if (n <= 1) this.used.delete(key);
    else this.used.set(key, n - 1);
  }
  get keys(): number {
    return this.used.size;
  }
}

/** Largest power of two <= n (n >= 1). */
function pow2floor(n: number): number {
  return 2 ** Math.floor(Math.log2(Math.max(1, n)));
}

/**
 * The per-stream window every session advertises: receiveBuffer / open
 * streams, as a power of two (so it changes rarely), clamped to
 * [minStreamWindow, streamWindow]. New sessions start at the current value;
 * a change goes to every session as SETTINGS_INITIAL_WINDOW_SIZE.
 */
export class WindowBudget {
  private open = 0;
  private current: number;
  private readonly sessions = new Set<http2.Http2Session>();
  /** SETTINGS a peer did not acknowledge in time (its session was closed) */
  settingsTimeouts = 0;
  /** how many times the window changed */
  changes = 0;
  private pending: NodeJS.Immediate | null = null;

  constructor(
    private readonly limits: Pick<Limits, 'receiveBuffer' | 'streamWindow' | 'minStreamWindow'>,
    private readonly ackTimeoutMs = 5000,
  ) {
    this.current = this.target();
  }

  /** The window to advertise now. */
  get window(): number {
    return this.current;
  }
  get openStreams(): number {
    return this.open;
  }
  get sessionCount(): number {
    return this.sessions.size;
  }

  private target(): number {
    const share = pow2floor(this.limits.receiveBuffer / Math.max(1, this.open));
    return Math.max(this.limits.minStreamWindow, Math.min(this.limits.streamWindow, share));
  }

  /** A session to keep at the current window (removed when it closes). */
  add(session: http2.Http2Session): void {
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
  }

  streamOpened(): void {
    this.open++;
    // shrinking is urgent (more streams may push the old window each): apply
    // on this turn; growing waits for the turn to end (a burst of closes)
    if (this.target() < this.current) this.apply();
    else this.schedule();
  }

  streamClosed(): void {
    if (this.open > 0) this.open--;
    this.schedule();
  }

  private schedule(): void {
    if (this.pending) return;
    this.pending = setImmediate(() => {
      this.pending = null;
      this.apply();
    });
    this.pending.unref?.();
  }

  private apply(): void {
    const t = this.target();
    if (t === this.current) return;
    this.current = t;
    this.changes++;
    for (const s of this.sessions) this.send(s);
  }

  private send(s: http2.Http2Session): void {
    if (s.destroyed || s.closed) return;
    let timer: NodeJS.Timeout | null = null;
    try {
      const ok = s.settings({ initialWindowSize: this.current }, () => {
        if (timer) clearTimeout(timer);
      });
      void ok;
    } catch {
      return; // too many unacknowledged SETTINGS, or closing: the session goes anyway
    }
    timer = setTimeout(() => {
      if (s.destroyed) return;
      // a peer that keeps the larger window by not acknowledging loses its session
      this.settingsTimeouts++;
      s.destroy(
        new AmbientError(
          'HBONE_TIMEOUT',
          'SETTINGS not acknowledged in time',
          'the peer did not acknowledge a flow-control change within 5 s: its session is ended',
        ),
        4 /* SETTINGS_TIMEOUT */,
      );
    }, this.ackTimeoutMs);
    timer.unref();
    s.once('close', () => {
      if (timer) clearTimeout(timer);
    });
  }
}
