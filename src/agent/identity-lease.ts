/**
 * Which SPIFFE identities the node's pods hold, counted per identity: a pod's
 * capture takes a lease on its identity for as long as it lives; when the
 * last lease of an identity ends, its certificate is forgotten (not renewed
 * any more, its key dropped).
 */

export interface IdentityLease {
  readonly id: string;
  /** ends this lease (again: nothing) */
  release(): void;
}

export class IdentityLeases {
  private readonly counts = new Map<string, number>();

  /** `forget(id)`: the last lease of `id` ended (IdentityManager.forget). */
  constructor(private readonly forget: (id: string) => void) {}

  acquire(id: string): IdentityLease {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    let held = true;
    return {
      id,
      release: () => {
        if (!held) return;
        held = false;
        const n = (this.counts.get(id) ?? 1) - 1;
        if (n > 0) {
          this.counts.set(id, n);
          return;
        }
        this.counts.delete(id);
        this.forget(id);
      },
    };
  }

  /** Whether a pod of this node holds `id` now. */
  held(id: string): boolean {
    return this.counts.has(id);
  }

  /** Leases of `id` (0: none). */
  count(id: string): number {
    return this.counts.get(id) ?? 0;
  }
}
