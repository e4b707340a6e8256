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

const UID_RE = /^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/;

/** Index of the pod cgroup segment in a cgroup path's segments, or -1. */
export function podCgroupSegment(segments: string[], podUid: string): number {
  const dashed = `pod${podUid}`;
  const systemd = `pod${podUid.replace(/-/g, '_')}.slice`;
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === dashed) return i;
    if (s === systemd || s.endsWith(`-${systemd}`)) return i;
  }
  return -1;
}

function readLink(p: string): string | null {
  try {
    return fs.readlinkSync(p);
  } catch {
    return null;
  }
}

/** The cgroup v2 path of a process ("0::/path" line), or null. */
function v2Path(procRoot: string, pid: string): string | null {
  let text: string;
  try {
    text = fs.readFileSync(path.join(procRoot, pid, 'cgroup'), 'utf8');
  } catch {
    return null; // gone, or not readable
  }
  for (const line of text.split('\n')) {
    if (line.startsWith('0::')) return line.slice(3).trim();
  }
  return null;
}

function isPause(procRoot: string, pid: string): boolean {
  try {
    const argv0 = fs.readFileSync(path.join(procRoot, pid, 'cmdline'), 'utf8').split('\0')[0] ?? '';
    return path.basename(argv0) === 'pause';
  } catch {
    return false;
  }
}

/**
 * Scans procRoot/<pid>/cgroup for processes of the pod. Returns null when no
 * process of the pod is found (not started yet, or already gone). netns is
 * null when every process of the pod shares the host's network namespace
 * (a hostNetwork pod); cgroup is null when the directory does not exist under
 * cgroupRoot (e.g. a cgroup namespace mismatch).
 */
export function findPodSandbox(podUid: string, opts: FindPodSandboxOptions = {}): PodSandbox | null {
  const procRoot = opts.procRoot ?? '/proc';
  const cgroupRoot = opts.cgroupRoot ?? '/sys/fs/cgroup';
  if (!UID_RE.test(podUid)) return null;
  const uid = podUid.toLowerCase();
  let pids: string[];
  try {
    pids = fs.readdirSync(procRoot).filter((d) => /^[0-9]+$/.test(d));
  } catch {
    return null;
  }
  pids.sort((a, b) => Number(a) - Number(b));
  const hostNet = readLink(path.join(procRoot, '1', 'ns', 'net')) ?? readLink(path.join(procRoot, 'self', 'ns', 'net'));
  let podDir: string | null = null;
  const members: string[] = [];
  for (const pid of pids) {
    const p = v2Path(procRoot, pid);
    if (p === null) continue;
    const segs = p.split('/').filter((s) => s !== '');
    const i = podCgroupSegment(segs, uid);
    if (i < 0) continue;
    podDir ??= '/' + segs.slice(0, i + 1).join('/');
    members.push(pid);
  }
  if (members.length === 0 || podDir === null) return null;
  // pause first (it lives as long as the sandbox), then lowest pid
  const ordered = [...members.filter((pid) => isPause(procRoot, pid)), ...members.filter((pid) => !isPause(procRoot, pid))];
  let netns: string | null = null;
  for (const pid of ordered) {
    const link = readLink(path.join(procRoot, pid, 'ns', 'net'));
    if (link === null || (hostNet !== null && link === hostNet)) continue;
    netns = path.join(procRoot, pid, 'ns', 'net');
    break;
  }
  const dir = path.join(cgroupRoot, podDir);
  let cgroup: string | null = null;
  try {
    if (fs.statSync(dir).isDirectory()) cgroup = dir;
  } catch { /* not there */ }
  return { netns, cgroup };
}
