/**
 * Issues workload certificates ahead of need, one at a time with a macrotask
 * between them, so a burst (an agent start with many pods) never delays
 * enrollment or traffic; a connection that needs one first just gets it on
 * demand. An identity no pod holds any more by the time its turn comes is
 * skipped (issuing it would renew a departed pod's certificate for good).
 */
import type { IdentityManager } from '../identity/manager.js';

export interface PrefetchDeps {
  /** the certificates (null before the CA is up, or once closed) */
  identities(): Pick<IdentityManager, 'peek' | 'get'> | null;
  /** still wanted: a local pod holds this identity */
  wanted(id: string): boolean;
  /** false once the agent stops */
  active(): boolean;
  /** pause between two issuances, ms (default 2) */
  gapMs?: number;
}

export class CertificatePrefetch {
  private readonly queue: string[] = [];
  private running = false;

  constructor(private readonly d: PrefetchDeps) {}

  get pending(): number {
    return this.queue.length;
  }

  request(id: string): void {
    if (this.d.identities()?.peek(id) || this.queue.includes(id)) return;
    this.queue.push(id);
    if (this.running) return;
    this.running = true;
    setTimeout(() => this.next(), this.d.gapMs ?? 2);
  }

  private next(): void {
    const ids = this.d.identities();
    let id = this.queue.shift();
    while (id !== undefined && !this.d.wanted(id)) id = this.queue.shift();
    if (id === undefined || !this.d.active() || !ids) {
      this.running = false;
      return;
    }
    void ids
      .get(id)
      .catch(() => undefined)
      .finally(() => setTimeout(() => this.next(), this.d.gapMs ?? 2));
  }
}
