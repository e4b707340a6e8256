/**
 * The reconciler, pure: a workload snapshot and the pods captured now give a
 * plan (no I/O, no clock of its own; unit-tested). Executing it is
 * captures.ts's job.
 *
 *   unenroll  a captured pod that is gone, went to another node, left the
 *             mesh (label or namespace), or changed what its capture is
 *             bound to (addresses, netns, cgroup, uid, identity)
 *   enroll    a local ambient pod not captured yet (or just unenrolled for a change)
 *   retry     an isolated/failed pod whose back-off is over, or whose IP
 *             conflict is resolved
 *   isolate   two live pods claim one address: both fail closed, none is
 *             silently open (POD_IP_CONFLICT; retried once resolved)
 *   update    nothing to capture again: the pod's entry is refreshed
 *             (labels, readiness) while enrolled, waiting for its retry, or
 *             still in conflict
 */
import { isEnrolled, podIps, podSpiffeId, type MeshSnapshot, type PodInfo } from '../discovery/model.js';
import { conflictingIps } from '../capture/plan.js';

/** What the reconciler needs of a pod captured now. */
export interface CapturedPod {
  /** its snapshot entry, as last applied */
  pod: PodInfo;
  identity: string;
  state: 'enrolled' | 'isolated' | 'failed';
  /** code of the last failed attempt (null when enrolled) */
  errorCode: string | null;
  /** when the next attempt is due (ms epoch) */
  retryAt: number;
}

export type DepartureReason = 'gone' | 'remote' | 'not-ambient' | 'changed';

export interface Unenroll {
  key: string;
  reason: DepartureReason;
  /** what changed, for 'changed' */
  changed: string[];
  /** addresses another wanted pod claims: never released by this pod's unenroll */
  keepIps: ReadonlySet<string>;
}

export type PodStep =
  | { kind: 'enroll'; key: string; pod: PodInfo }
  | { kind: 'retry'; key: string; pod: PodInfo }
  | { kind: 'isolate'; key: string; pod: PodInfo; ips: string[]; with: string[] }
  | { kind: 'update'; key: string; pod: PodInfo; why: 'enrolled' | 'backoff' | 'conflict' };

export interface ReconcilePlan {
  /** first, in this order */
  unenroll: Unenroll[];
  /** then: pinned links of pods nobody wants nor holds (an earlier agent's) */
  staleLinks: string[];
  /** then, in snapshot order: every wanted pod */
  pods: PodStep[];
  /** addresses more than one wanted pod claims */
  sharedIps: ReadonlySet<string>;
}

export interface ReconcileInput {
  snapshot: Pick<MeshSnapshot, 'pods' | 'namespaces'>;
  /** this node's name (pods with node null are local too: the single-machine file source) */
  node: string;
  trustDomain: string;
  /** the pods captured now, by key */
  current: ReadonlyMap<string, CapturedPod>;
  /** pod keys with pinned links (Datapath.pinnedPods()) */
  pinned: readonly string[];
  now: number;
}

export const ipsOf = (p: PodInfo): string[] => podIps(p);

export function isLocalPod(p: PodInfo, node: string): boolean {
  return p.node === null || p.node === node;
}

/** What differs between the pod a capture is bound to and its new entry (empty: nothing). */
export function captureChanges(was: CapturedPod, now: PodInfo, trustDomain: string): string[] {
  const out: string[] = [];
  if (ipsOf(now).join() !== ipsOf(was.pod).join()) out.push('ips');
  if (now.netns !== was.pod.netns) out.push('netns');
  if (now.cgroup !== was.pod.cgroup) out.push('cgroup');
  if ((now.uid ?? '') !== (was.pod.uid ?? '')) out.push('uid');
  if (podSpiffeId(now, trustDomain) !== was.identity) out.push('identity');
  return out;
}

export function planReconcile(input: ReconcileInput): ReconcilePlan {
  const { snapshot: s, node, current } = input;
  const wanted = new Map<string, PodInfo>();
  for (const [k, p] of s.pods) if (isLocalPod(p, node) && isEnrolled(p, s.namespaces)) wanted.set(k, p);

  const sharedIps = conflictingIps([...wanted.values()].map((p) => ({ ips: ipsOf(p) })));
  const claimedBy = new Map<string, string[]>();
  for (const [k, p] of wanted) for (const ip of ipsOf(p)) claimedBy.set(ip, [...(claimedBy.get(ip) ?? []), k]);
  const keepFor = (key: string): Set<string> => new Set([...claimedBy].filter(([, ks]) => ks.some((k) => k !== key)).map(([ip]) => ip));

  const unenroll: Unenroll[] = [];
  for (const [k, cur] of current) {
    const w = wanted.get(k);
    let reason: DepartureReason | null = null;
    let changed: string[] = [];
    if (!w) {
      const p = s.pods.get(k);
      reason = !p ? 'gone' : !isLocalPod(p, node) ? 'remote' : 'not-ambient';
    } else {
      changed = captureChanges(cur, w, input.trustDomain);
      if (changed.length > 0) reason = 'changed';
    }
    if (reason) unenroll.push({ key: k, reason, changed, keepIps: keepFor(k) });
  }
  const gone = new Set(unenroll.map((u) => u.key));
  const held = (k: string): CapturedPod | undefined => (gone.has(k) ? undefined : current.get(k));

  const staleLinks = input.pinned.filter((k) => !wanted.has(k) && !current.has(k));

  const pods: PodStep[] = [];
  for (const [k, p] of wanted) {
    const cur = held(k);
    const conflict = ipsOf(p).filter((ip) => sharedIps.has(ip));
    if (conflict.length > 0) {
      if (cur?.errorCode === 'POD_IP_CONFLICT') pods.push({ kind: 'update', key: k, pod: p, why: 'conflict' });
      else {
        const others = [...new Set(conflict.flatMap((ip) => claimedBy.get(ip) ?? []).filter((o) => o !== k))];
        pods.push({ kind: 'isolate', key: k, pod: p, ips: conflict, with: others });
      }
      continue;
    }
    if (cur?.state === 'enrolled') pods.push({ kind: 'update', key: k, pod: p, why: 'enrolled' });
    else if (cur && cur.retryAt > input.now && cur.errorCode !== 'POD_IP_CONFLICT') pods.push({ kind: 'update', key: k, pod: p, why: 'backoff' });
    else pods.push({ kind: cur ? 'retry' : 'enroll', key: k, pod: p });
  }
  return { unenroll, staleLinks, pods, sharedIps };
}

/** When the earliest retry of an isolated/failed pod is due (ms epoch); null: none (an IP conflict waits for its resolution). */
export function nextRetryAt(captured: Iterable<CapturedPod>): number | null {
  let at = Infinity;
  for (const c of captured) if (c.state !== 'enrolled' && c.errorCode !== 'POD_IP_CONFLICT') at = Math.min(at, c.retryAt);
  return at === Infinity ? null : at;
}
