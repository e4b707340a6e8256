/**
 * Kernel feature probes. The required path (Linux >= 5.10) fails start-up
 * with an error that names the missing feature; newer features are optional.
 */
import fs from 'node:fs';
import type { NativeAddon } from './native-api.js';
import { AmbientError } from '../util/errors.js';

// helper ids from include/uapi/linux/bpf.h (stable ABI)
export const HELPERS = {
  get_socket_cookie: 46,
  sock_hash_update: 70,
  msg_redirect_hash: 71,
  sk_lookup_tcp: 84,
  sk_release: 86,
  get_current_cgroup_id: 80,
  get_current_ancestor_cgroup_id: 123,
  sk_assign: 124,
  ktime_get_ns: 5,
} as const;

export interface FeatureCheck {
  name: string;
  kind: 'prog' | 'map' | 'helper' | 'fs';
  /** kernel version that introduced it */
  since: string;
  required: boolean;
  ok: boolean;
  detail?: string;
}

interface Spec {
  name: string;
  kind: FeatureCheck['kind'];
  since: string;
  required: boolean;
  probe: (n: NativeAddon) => number;
}

const SPECS: Spec[] = [
  { name: 'bpffs mounted at /sys/fs/bpf', kind: 'fs', since: '4.4', required: true, probe: () => (isBpffs('/sys/fs/bpf') ? 1 : 0) },
  { name: 'program type cgroup_sock_addr (connect4)', kind: 'prog', since: '4.17', required: true, probe: (n) => n.probeProgType('cgroup_sock_addr') },
  { name: 'program type sock_ops', kind: 'prog', since: '4.13', required: true, probe: (n) => n.probeProgType('sock_ops') },
  { name: 'program type sk_lookup', kind: 'prog', since: '5.9', required: true, probe: (n) => n.probeProgType('sk_lookup') },
  { name: 'attach type cgroup/getpeername4', kind: 'prog', since: '5.8', required: false, probe: (n) => n.probeAttach('getpeername4') },
  { name: 'program type sk_msg', kind: 'prog', since: '4.17', required: false, probe: (n) => n.probeProgType('sk_msg') },
  { name: 'map type sockhash', kind: 'map', since: '4.18', required: true, probe: (n) => n.probeMapType('sockhash') },
  { name: 'map type lru_hash', kind: 'map', since: '4.10', required: true, probe: (n) => n.probeMapType('lru_hash') },
  {
    name: 'helper bpf_get_current_ancestor_cgroup_id in cgroup_sock_addr',
    kind: 'helper',
    since: '5.7',
    required: true,
    probe: (n) => n.probeHelper('cgroup_sock_addr', HELPERS.get_current_ancestor_cgroup_id),
  },
  {
    name: 'helper bpf_sk_lookup_tcp in cgroup_sock_addr',
    kind: 'helper',
    since: '5.2',
    required: true,
    probe: (n) => n.probeHelper('cgroup_sock_addr', HELPERS.sk_lookup_tcp),
  },
  { name: 'helper bpf_sk_assign in sk_lookup', kind: 'helper', since: '5.9', required: true, probe: (n) => n.probeHelper('sk_lookup', HELPERS.sk_assign) },
  {
    name: 'helper bpf_msg_redirect_hash in sk_msg',
    kind: 'helper',
    since: '4.18',
    required: false,
    probe: (n) => n.probeHelper('sk_msg', HELPERS.msg_redirect_hash),
  },
];

function isBpffs(p: string): boolean {
  try {
    const mounts = fs.readFileSync('/proc/self/mounts', 'utf8');
    return mounts.split('\n').some((l) => {
      const f = l.split(' ');
      return f[1] === p && f[2] === 'bpf';
    });
  } catch {
    return false;
  }
}

/** Runs every probe. `disabled` lets tests pretend a feature is missing. */
export function probeFeatures(n: NativeAddon, disabled: ReadonlySet<string> = envDisabled()): FeatureCheck[] {
  return SPECS.map((s) => {
    let r: number;
    try {
      r = disabled.has(s.name) || disabled.has(s.name.split(' ').slice(-1)[0]!) ? 0 : s.probe(n);
    } catch (e) {
      return { name: s.name, kind: s.kind, since: s.since, required: s.required, ok: false, detail: (e as Error).message };
    }
    return { name: s.name, kind: s.kind, since: s.since, required: s.required, ok: r === 1, ...(r < 0 ? { detail: `probe failed: errno ${-r}` } : {}) };
  });
}

/** AMBIENTD_DISABLE_FEATURES="sk_lookup,..." (testing aid: pretend the kernel lacks them). */
function envDisabled(): Set<string> {
  const v = process.env.AMBIENTD_DISABLE_FEATURES;
  if (!v) return new Set();
  const out = new Set<string>();
  for (const name of v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    for (const s of SPECS) if (s.name.includes(name)) out.add(s.name);
  }
  return out;
}

export function requireFeatures(checks: FeatureCheck[]): void {
  const missing = checks.filter((c) => c.required && !c.ok);
  if (missing.length === 0) return;
  const list = missing.map((c) => `${c.name} (Linux ${c.since}+)${c.detail ? ` [${c.detail}]` : ''}`).join('; ');
  throw new AmbientError(
    'KERNEL_FEATURE_MISSING',
    `the kernel lacks what the datapath needs: ${list}`,
    missing.some((c) => c.kind === 'fs')
      ? 'mount bpffs (`mount -t bpf bpf /sys/fs/bpf`) and run on Linux >= 5.10'
      : 'run ambientd on Linux >= 5.10 with CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF and CONFIG_NET_SOCK_MSG enabled',
  );
}
