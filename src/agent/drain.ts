/**
 * The graceful end (SIGTERM, or a successor took our sockets): no new
 * connections (they go to the successor, or are refused: fail closed),
 * GOAWAY on HBONE sessions, established connections run on until they end or
 * drainTimeout passes, and are still re-checked against policy changes
 * meanwhile (the workload source keeps running); then the agent stops.
 * Connections that close while we drain after a hand-over are reported to the
 * successor, which answers the metrics port now.
 */
import { RecordForwarder } from '../lifecycle/forwarder.js';
import type { TrackedConnection } from '../proxy/connections.js';
import type { DataPlaneView } from '../workers/pool.js';
import type { Logger } from '../util/log.js';

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

/** Where drained connections are reported (RECORDS on the successor's hand-over socket). */
export interface RecordSink {
  send(rec: TrackedConnection): void;
  end(): Promise<{ sent: number; lost: number }>;
}

export interface DrainDeps {
  drainTimeoutMs: number;
  /** the successor's hand-over socket, when one took over from us */
  successor: { socket: string; node: string } | null;
  /** waits for the reconcile in progress */
  settle(): Promise<void>;
  /** no new connections: the hand-over socket and every pod listener close */
  stopAccepting(): void;
  /** the node ports (readiness, metrics, admin) close: the successor answers on them */
  closeNodeServers(): void;
  tracker: {
    openCount(): number;
    on(event: 'close', f: (rec: TrackedConnection) => void): unknown;
    off(event: 'close', f: (rec: TrackedConnection) => void): unknown;
  };
  mesh: Pick<DataPlaneView, 'hbone' | 'close'> | null;
  count(reason: string): void;
  log: Logger;
  stop(): Promise<void>;
  clock?: Clock;
  /** default: a RecordForwarder to the successor */
  records?(successor: { socket: string; node: string }): RecordSink;
}

export async function drainAgent(d: DrainDeps, reason: string): Promise<void> {
  const clock = d.clock ?? realClock;
  const t0 = clock.now();
  await d.settle();
  d.stopAccepting();
  if (d.successor) d.closeNodeServers();
  const sink = d.successor ? (d.records ?? ((s) => new RecordForwarder(s.socket, s.node)))(d.successor) : null;
  const forward = (rec: TrackedConnection): void => sink?.send(rec);
  d.tracker.on('close', forward);
  const mesh = d.mesh;
  const hboneOpen = (): number => mesh?.hbone.stats().connections.open ?? 0;
  const open = (): number => d.tracker.openCount() + hboneOpen();
  const atStart = open();
  d.log.info('draining', { reason, connections: d.tracker.openCount(), hboneSessions: hboneOpen(), deadlineMs: d.drainTimeoutMs });
  const deadline = t0 + d.drainTimeoutMs;
  // GOAWAY: peers open new tunnels to the successor; ours finish
  const hboneDone = mesh?.hbone.close({ graceMs: d.drainTimeoutMs }).catch(() => undefined);
  while (clock.now() < deadline && open() > 0) await clock.sleep(50);
  const left = d.tracker.openCount();
  if (left > 0) {
    d.count('drain_deadline_closed');
    await mesh?.close({ force: true });
  }
  await hboneDone;
  d.tracker.off('close', forward);
  const records = sink ? await sink.end() : null;
  d.log.info('drained', {
    reason,
    ms: clock.now() - t0,
    connectionsAtStart: atStart,
    closedAtDeadline: left,
    ...(records ? { recordsToSuccessor: records } : {}),
  });
  await d.stop();
}
