/**
 * Every 5 s: a datapath refusal counter that grew is logged, once per reason
 * (Logger.once), with its cause. The counters themselves are in config_dump
 * and the metrics.
 */
import { DATAPATH_COUNTER_CAUSES, type DatapathCounter } from '../datapath/codec.js';
import type { Logger } from '../util/log.js';

/** Starts watching; returns the function that stops it. */
export function watchRefusals(counters: () => Record<string, bigint> | null, log: Logger, everyMs = 5000): () => void {
  const last = new Map<string, bigint>();
  const tick = (): void => {
    let c: Record<string, bigint>;
    try {
      c = counters() ?? {};
    } catch {
      return;
    }
    for (const [reason, v] of Object.entries(c)) {
      const before = last.get(reason);
      last.set(reason, v);
      if (before === undefined || v <= before) continue;
      log.once(`datapath_refused_${reason}`, 'warn', 'the datapath refused connections', {
        reason,
        count: v.toString(),
        cause: DATAPATH_COUNTER_CAUSES[reason as DatapathCounter],
      });
    }
  };
  tick();
  const timer = setInterval(tick, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
