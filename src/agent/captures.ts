/**
 * The node's pod captures: executes the reconciler's plans (reconciler.ts)
 * with one PodCapture per local pod, indexes the enrolled ones by address
 * (the proxy's localPodByIp), sweeps datapath entries nobody wants, and arms
 * the retry of isolated pods.
 */
import type { Datapath } from '../datapath/datapath.js';
import { podSpiffeId, type MeshSnapshot, type PodInfo } from '../discovery/model.js';
import { AmbientError } from '../util/errors.js';
import type { HandoverEntry } from '../lifecycle/handover.js';
import { nextRetryAt, planReconcile, type ReconcilePlan } from './reconciler.js';
import { PodCapture, type CaptureDatapath, type CaptureDeps } from './pod-capture.js';

export interface CaptureSetDeps extends Omit<CaptureDeps, 'datapath'> {
  datapath: CaptureDatapath & Pick<Datapath, 'pinnedPods' | 'removeLinks' | 'sweep'>;
  node: string;
  trustDomain: string;
  /** a retry is due: reconcile the snapshot in force again */
  retry(): void;
  /** false once the agent stops: no retry is armed */
  active(): boolean;
}

export class CaptureSet {
  private readonly byKey = new Map<string, PodCapture>();
  /** enrolled captures by each of their addresses */
  private readonly byIp = new Map<string, PodCapture>();
  private retryTimer: NodeJS.Timeout | null = null;

  constructor(private readonly d: CaptureSetDeps) {}

  get(key: string): PodCapture | undefined {
    return this.byKey.get(key);
  }

  values(): IterableIterator<PodCapture> {
    return this.byKey.values();
  }

  get enrolledCount(): number {
    let n = 0;
    for (const c of this.byKey.values()) if (c.state === 'enrolled') n++;
    return n;
  }

  /** The enrolled pod that has this address, if any. */
  localPodByIp(ip: string): PodCapture | null {
    const c = this.byIp.get(ip);
    return c && c.state === 'enrolled' ? c : null;
  }

  /** Applies a snapshot: every local ambient pod captured (or isolated), nothing else. */
  async reconcile(s: MeshSnapshot): Promise<ReconcilePlan> {
    const d = this.d;
    const dp = d.datapath;
    const plan = planReconcile({ snapshot: s, node: d.node, trustDomain: d.trustDomain, current: this.byKey, pinned: dp.pinnedPods(), now: d.now() });
    for (const u of plan.unenroll) this.remove(u.key, u.keepIps);
    // pinned links of pods this agent does not know (stale, from an earlier run)
    for (const k of plan.staleLinks) {
      d.log.info('removing stale redirection', { pod: k });
      dp.removeLinks(k);
    }
    for (const step of plan.pods) {
      const cur = this.byKey.get(step.key);
      switch (step.kind) {
        case 'update':
          cur!.update(step.pod);
          break;
        case 'isolate': {
          const c = cur ?? this.add(step);
          c.update(step.pod);
          this.unindex(c);
          c.isolate(
            new AmbientError(
              'POD_IP_CONFLICT',
              `pod ${step.key} and ${step.with.join(', ')} both claim ${step.ips.join(', ')}`,
              'two live pods cannot share an address: both are isolated until one of them is gone (check the CNI, or the workload file)',
            ),
            plan.sharedIps,
          );
          break;
        }
        case 'retry':
        case 'enroll': {
          const c = cur ?? this.add(step);
          c.update(step.pod);
          this.unindex(c);
          await c.enroll();
          if (c.state === 'enrolled' && !c.released) for (const ip of c.ips) this.byIp.set(ip, c);
          break;
        }
      }
    }
    // map entries of pods nobody wants (an earlier agent's, a pod gone while none ran)
    const cgroups = new Set<bigint>();
    const ips = new Set<string>();
    for (const c of this.byKey.values()) {
      if (c.cgroupId !== null) cgroups.add(c.cgroupId);
      for (const ip of c.ips) ips.add(ip);
    }
    const swept = dp.sweep(cgroups, ips);
    if (swept) d.log.info('removed stale datapath entries', { entries: swept });
    this.armRetry();
    return plan;
  }

  private add(step: { key: string; pod: PodInfo }): PodCapture {
    const c = new PodCapture(this.d, step.pod, podSpiffeId(step.pod, this.d.trustDomain));
    this.byKey.set(step.key, c);
    return c;
  }

  private unindex(c: PodCapture): void {
    for (const ip of c.ips) if (this.byIp.get(ip) === c) this.byIp.delete(ip);
  }

  private remove(key: string, keepIps: ReadonlySet<string>): void {
    const c = this.byKey.get(key);
    if (!c) return;
    this.byKey.delete(key);
    this.unindex(c);
    c.release(keepIps);
  }

  /** A timer for the earliest retry of an isolated pod. */
  private armRetry(): void {
    this.cancelRetry();
    const at = nextRetryAt(this.byKey.values());
    if (at === null || !this.d.active()) return;
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = null;
        this.d.retry();
      },
      Math.max(10, at - this.d.now()),
    );
    this.retryTimer.unref();
  }

  cancelRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** Every enrolled pod's listening sockets, for a successor. */
  handoverEntries(): Array<{ entry: HandoverEntry; fd: number }> {
    return [...this.byKey.values()].flatMap((c) => c.handoverEntries());
  }

  /** No new connections (drain, stop); captures and the datapath stay. */
  closeListeners(): void {
    for (const c of this.byKey.values()) c.closeListeners();
  }

  /** The agent stops: every capture's listeners and netns handle close; the pods stay pinned (fail closed). */
  detachAll(): void {
    this.cancelRetry();
    for (const c of this.byKey.values()) c.detach();
  }
}
