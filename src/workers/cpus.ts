/**
 * How many data-plane workers `workers: auto` means (as ztunnel: CPU-aware):
 * the agent cgroup's CPU limit (cgroup v2 cpu.max, else v1
 * cpu.cfs_quota_us / cpu.cfs_period_us), rounded up; else the CPUs this
 * process may run on (os.availableParallelism); at least 1.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CpuFacts {
  /** /proc/self/cgroup */
  procCgroup: string | null;
  read(file: string): string | null;
  cpus: number;
}

export function hostCpuFacts(): CpuFacts {
  const read = (f: string): string | null => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      return null;
    }
  };
  return { procCgroup: read('/proc/self/cgroup'), read, cpus: os.availableParallelism() };
}

/** The CPU limit of the cgroup (cores, fractional), or null when it has none or it cannot be read. */
export function cgroupCpuLimit(facts: CpuFacts, cgroupRoot: string, v1Root = '/sys/fs/cgroup'): number | null {
  const lines = (facts.procCgroup ?? '').split('\n').filter(Boolean);
  // cgroup v2: "0::/path"
  const v2 = lines.find((l) => l.startsWith('0::'));
  if (v2) {
    // the limit of this cgroup or the nearest ancestor with one
    let rel = v2.slice(3).trim();
    for (;;) {
      const t = facts.read(path.join(cgroupRoot, rel, 'cpu.max'));
      const m = t?.trim().match(/^(\d+|max)\s+(\d+)$/);
      if (m && m[1] !== 'max') return Number(m[1]) / Number(m[2]);
      if (rel === '/' || rel === '') break;
      rel = path.dirname(rel);
    }
  }
  // cgroup v1: "N:cpu,cpuacct:/path"
  const v1 = lines.find((l) => /^\d+:([^:]*,)?cpu(,[^:]*)?:/.test(l));
  if (v1) {
    const [, ctrls, rel] = v1.split(':') as [string, string, string];
    const dir = path.join(v1Root, ctrls, rel);
    const quota = Number(facts.read(path.join(dir, 'cpu.cfs_quota_us'))?.trim());
    const period = Number(facts.read(path.join(dir, 'cpu.cfs_period_us'))?.trim());
    if (quota > 0 && period > 0) return quota / period;
  }
  return null;
}

/** `workers: auto`: the cgroup's CPU limit rounded up, else the CPUs; at least 1. */
export function autoWorkers(facts: CpuFacts, cgroupRoot: string, v1Root?: string): { workers: number; from: 'cgroup' | 'cpus' } {
  const limit = cgroupCpuLimit(facts, cgroupRoot, v1Root);
  if (limit !== null) return { workers: Math.max(1, Math.min(facts.cpus, Math.ceil(limit))), from: 'cgroup' };
  return { workers: Math.max(1, facts.cpus), from: 'cpus' };
}
