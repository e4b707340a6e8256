/**
 * Workload snapshots, applied one at a time and only the newest: the model
 * and the policies always (live connections are re-checked, also while a
 * successor takes over and while draining), the enrollment changes only
 * while the phase allows them. During a hand-over they wait (`deferred`) and
 * run if it is aborted; while draining they are moot.
 */
import type { MeshSnapshot } from '../discovery/model.js';
import type { AgentLifecycle } from './phase.js';

export interface SnapshotQueueDeps {
  lifecycle: AgentLifecycle;
  /** the model and policies of a snapshot (whatever the phase, until stopping) */
  applyModel(s: MeshSnapshot): void;
  /** the enrollment changes of a snapshot (starting, running) */
  reconcile(s: MeshSnapshot): Promise<unknown>;
  /** a reconcile threw (it is retried on the next change) */
  onError(e: unknown): void;
}

export class SnapshotQueue {
  private chain: Promise<void> = Promise.resolve();
  private pending: MeshSnapshot | null = null;
  /** a snapshot whose enrollment changes wait for the end of a hand-over */
  private deferred: MeshSnapshot | null = null;
  private lastScheduled: MeshSnapshot | null = null;

  constructor(private readonly d: SnapshotQueueDeps) {}

  /** Whether this very snapshot was scheduled already. */
  scheduled(s: MeshSnapshot): boolean {
    return this.lastScheduled === s;
  }

  schedule(s: MeshSnapshot): void {
    this.pending = s;
    this.lastScheduled = s;
    this.chain = this.chain
      .then(async () => {
        const next = this.pending;
        const lc = this.d.lifecycle;
        if (!next || lc.stopped) return;
        this.pending = null;
        this.d.applyModel(next);
        if (!lc.enrolling) {
          if (lc.phase === 'handing-over') this.deferred = next;
          return;
        }
        await this.d.reconcile(next);
      })
      .catch((e: unknown) => this.d.onError(e));
  }

  /** The hand-over was aborted: the enrollment changes that waited (else `current` again) run now. */
  resume(current: MeshSnapshot): void {
    const next = this.deferred ?? current;
    this.deferred = null;
    this.schedule(next);
  }

  /** Waits until every queued snapshot was applied. */
  async settle(): Promise<void> {
    for (;;) {
      const p = this.chain;
      await p;
      if (p === this.chain) return;
    }
  }
}
