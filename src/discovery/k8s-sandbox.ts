/**
 * Finds a local pod's sandbox (network namespace and cgroup v2 directory) from
 * /proc, by pod UID. Needs the host's PID namespace and the host's cgroup
 * namespace (hostPID: true; cgroup paths in /proc/<pid>/cgroup are relative to
 * the reader's cgroup namespace).
 *
 * The kubelet names the pod cgroup
 *   cgroupfs driver: .../kubepods/<qos>/pod<uid>            (uid with dashes)
 *   systemd driver:  .../kubepods-<qos>-pod<uid_with_underscores>.slice
 * (guaranteed pods have no <qos> level). The pod cgroup is the ancestor with
 * that name; containers (and the pause sandbox) are directories below it.
 * Only the cgroup v2 line ("0::/path") of /proc/<pid>/cgroup is used.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface PodSandbox {
  /** /proc/<pid>/ns/net of a process of the pod (the pause process when recognisable) */
  netns: string | null;
  /** cgroup v2 directory of the pod (the pod<uid> ancestor), under cgroupRoot */
  cgroup: string | null;
}

export interface FindPodSandboxOptions {
  procRoot?: string;
  cgroupRoot?: string;
}

const UID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SEGMENT_RE = /^(?:.*-)?pod([0-9a-f]{8}([-_])[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{12})(\.slice)?$/;

/** The pod UID (with dashes) a cgroup path segment names, or null. */
export function podUidFromCgroupSegment(segment: string): string | null {
  const m = SEGMENT_RE.exec(segment);
  if (!m) return null;
  const [, uid, sep, slice] = m;
  // systemd: "...pod<uid_with_underscores>.slice"; cgroupfs: exactly "pod<uid>"
  if (sep === '_' ? slice === undefined : slice !== undefined || !segment.startsWith('pod')) return null;
  return uid!.replace(/_/g, '-');
}

interface PodProcs {
  /** pod cgroup path (from the cgroup v2 root) */
  dir: string;
  pids: string[];
}

/** One pass over procRoot: pod UID -> its cgroup path and processes (pids ascending). */
export function scanPodProcesses(procRoot = '/proc'): Map<string, PodProcs> {
  const out = new Map<string, PodProcs>();
  let pids: string[];
  try {
    pids = fs.readdirSync(procRoot).filter((d) => /^[0-9]+$/.test(d));
  } catch {
    return out;
  }
  pids.sort((a, b) => Number(a) - Number(b));
  for (const pid of pids) {
    let text: string;
    try {
      text = fs.readFileSync(path.join(procRoot, pid, 'cgroup'), 'utf8');
    } catch {
      continue; // exited, or not readable
    }
    const line = text.split('\n').find((l) => l.startsWith('0::'));
    if (!line) continue;
    const segs = line
      .slice(3)
      .trim()
      .split('/')
      .filter((s) => s !== '');
    for (let i = 0; i < segs.length; i++) {
      const uid = podUidFromCgroupSegment(segs[i]!);
      if (uid === null) continue;
      const e = out.get(uid);
      if (e) e.pids.push(pid);
      else out.set(uid, { dir: '/' + segs.slice(0, i + 1).join('/'), pids: [pid] });
      break;
    }
  }
  return out;
}

function readLink(p: string): string | null {
  try {
    return fs.readlinkSync(p);
  } catch {
    return null;
  }
}

function isPause(procRoot: string, pid: string): boolean {
  try {
    const argv0 = fs.readFileSync(path.join(procRoot, pid, 'cmdline'), 'utf8').split('\0')[0] ?? '';
    return path.basename(argv0) === 'pause';
  } catch {
    return false;
  }
}

function sandboxOf(e: PodProcs, procRoot: string, cgroupRoot: string): PodSandbox {
  const hostNet = readLink(path.join(procRoot, '1', 'ns', 'net')) ?? readLink(path.join(procRoot, 'self', 'ns', 'net'));
  // pause first (it lives as long as the sandbox), then lowest pid
  const pause = e.pids.filter((pid) => isPause(procRoot, pid));
  const ordered = [...pause, ...e.pids.filter((pid) => !pause.includes(pid))];
  let netns: string | null = null;
  for (const pid of ordered) {
    const link = readLink(path.join(procRoot, pid, 'ns', 'net'));
    if (link === null || (hostNet !== null && link === hostNet)) continue;
    netns = path.join(procRoot, pid, 'ns', 'net');
    break;
  }
  const dir = path.join(cgroupRoot, e.dir);
  let cgroup: string | null = null;
  try {
    if (fs.statSync(dir).isDirectory()) cgroup = dir;
  } catch {
    /* not there */
  }
  return { netns, cgroup };
}

/**
 * The sandbox of one pod. Returns null when no process of the pod is found
 * (not started yet, or gone). netns is null when every process of the pod is
 * in the host's network namespace (hostNetwork); cgroup is null when the
 * directory does not exist under cgroupRoot (e.g. a cgroup namespace mismatch).
 */
export function findPodSandbox(podUid: string, opts: FindPodSandboxOptions = {}): PodSandbox | null {
  const uid = podUid.toLowerCase();
  if (!UID_RE.test(uid)) return null;
  const procRoot = opts.procRoot ?? '/proc';
  const e = scanPodProcesses(procRoot).get(uid);
  return e ? sandboxOf(e, procRoot, opts.cgroupRoot ?? '/sys/fs/cgroup') : null;
}

/**
 * findPodSandbox for many pods: one /proc scan serves every lookup for
 * maxAgeMs (default 1 s), so an initial list of N local pods costs one scan,
 * not N. A miss is not cached beyond that window.
 */
export class PodSandboxFinder {
  private scan: Map<string, PodProcs> | null = null;
  private scannedAt = 0;
  private readonly procRoot: string;
  private readonly cgroupRoot: string;
  private readonly maxAgeMs: number;

  constructor(opts: FindPodSandboxOptions & { maxAgeMs?: number } = {}) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.cgroupRoot = opts.cgroupRoot ?? '/sys/fs/cgroup';
    this.maxAgeMs = opts.maxAgeMs ?? 1000;
  }

  find(podUid: string): PodSandbox | null {
    const uid = podUid.toLowerCase();
    if (!UID_RE.test(uid)) return null;
    const now = Date.now();
    if (!this.scan || now - this.scannedAt > this.maxAgeMs) {
      this.scan = scanPodProcesses(this.procRoot);
      this.scannedAt = now;
    }
    const e = this.scan.get(uid);
    return e ? sandboxOf(e, this.procRoot, this.cgroupRoot) : null;
  }
}
