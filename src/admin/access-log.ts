/**
 * Access log: one structured JSON line per closed connection, written through
 * the agent's Logger (scope "<root>.access", stderr JSON lines). Who talked to
 * whom (workloads from the model, SPIFFE principals), the addresses, bytes
 * each way, how long and how it ended. The fields come from
 * src/metrics/record-view.ts, the derivation the metric labels come from too.
 */
import type { EventEmitter } from 'node:events';
import type { TrackedConnection } from '../proxy/connections.js';
import { recordView, type AccessLogEntry, type RecordContext } from '../metrics/record-view.js';
import type { Logger } from '../util/log.js';

export type { AccessLogEntry } from '../metrics/record-view.js';

export type AccessLogLevel = 'info' | 'debug' | 'off';

/** The model's pods by address and their identities (and, optionally, by key and services). */
export type AccessLogContext = RecordContext;

export function accessLogEntry(rec: TrackedConnection, ctx: AccessLogContext): AccessLogEntry {
  return recordView(rec, ctx).accessLog;
}

/**
 * Subscribes to the tracker's 'close' events and logs each closed connection
 * at `level` (nothing when 'off'). A failure to build a line never reaches the
 * connection path.
 */
export function attachAccessLog(tracker: EventEmitter, log: Logger, level: AccessLogLevel, ctx: AccessLogContext): void {
  if (level === 'off') return;
  tracker.on('close', (rec: TrackedConnection) => {
    if (!log.enabled(level)) return;
    try {
      log.log(level, 'connection', { ...accessLogEntry(rec, ctx) });
    } catch {
      /* never let logging break the relay */
    }
  });
}
