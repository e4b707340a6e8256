/**
 * What the agent needs from a workload source, whichever it is (the workload
 * file, the Kubernetes API). Both map Kubernetes-shaped objects with the same
 * code (k8s-mapping.ts) and publish whole snapshots of the mesh model.
 */
import type { EventEmitter } from 'node:events';
import type { AmbientError } from '../util/errors.js';
import type { MeshSnapshot } from './model.js';

export type WorkloadSourceKind = 'file' | 'kubernetes';

export interface WorkloadSourceEvents {
  /** a new snapshot is in force (also for the initial one) */
  update: [MeshSnapshot];
  /** the whole input was rejected; the last good snapshot stays in force */
  invalid: [AmbientError];
  /** a transient failure (the source retries; the last good snapshot stays in force) */
  error: [Error];
}

export interface WorkloadSource extends EventEmitter<WorkloadSourceEvents> {
  readonly kind: WorkloadSourceKind;
  /** the snapshot in force (empty until start() resolved) */
  readonly current: MeshSnapshot;
  /** why the last input was rejected, until a good one arrives */
  readonly lastError: AmbientError | null;
  /** starts watching; resolves once the initial state is in `current` */
  start(): Promise<void>;
  /** stops watching; no event is emitted afterwards */
  stop(): void;
  /** what config_dump shows of the source (counters, versions) */
  status(): Record<string, unknown>;
}
