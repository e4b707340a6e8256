/**
 * Errnos of the native binding (./native-api.d.ts: every call returns a
 * negative errno instead of throwing): their names, the operator hints for
 * them, and the one function that turns a `-errno` into an AmbientError.
 * Every place in the datapath that reports a native failure goes through
 * nativeError() (or check()), so a hint is written once, here.
 */
import os from 'node:os';
import { AmbientError, type ErrorCode } from '../util/errors.js';

const ERRNO_NAMES: ReadonlyMap<number, string> = (() => {
  const m = new Map<number, string>();
  // Preferred names first: when two names share a number (ENOTSUP/EOPNOTSUPP,
  // EAGAIN/EWOULDBLOCK, EDEADLK/EDEADLOCK) the first one wins.
  const preferred = [
    'EPERM',
    'ENOENT',
    'ESRCH',
    'EINTR',
    'EIO',
    'ENXIO',
    'E2BIG',
    'EBADF',
    'EAGAIN',
    'ENOMEM',
    'EACCES',
    'EFAULT',
    'EBUSY',
    'EEXIST',
    'EXDEV',
    'ENODEV',
    'ENOTDIR',
    'EISDIR',
    'EINVAL',
    'ENFILE',
    'EMFILE',
    'ENOSPC',
    'ERANGE',
    'ENAMETOOLONG',
    'ENOSYS',
    'ENOTEMPTY',
    'ELOOP',
    'EOPNOTSUPP',
    'EAFNOSUPPORT',
    'EADDRINUSE',
    'EADDRNOTAVAIL',
    'ENETUNREACH',
    'ECONNREFUSED',
    'ECONNRESET',
    'ETIMEDOUT',
    'EHOSTUNREACH',
    'EPROTONOSUPPORT',
    'EOVERFLOW',
    'ENOTSOCK',
    'ENOTCONN',
    'ENOTSUP',
  ];
  const table = os.constants.errno as Readonly<Record<string, number>>;
  for (const name of [...preferred, ...Object.keys(table)]) {
    const n = table[name];
    if (typeof n === 'number' && !m.has(n)) m.set(n, name);
  }
  // Linux errnos that Node does not list but the bpf(2) syscall returns.
  const extra: Array<[number, string]> = [
    [524, 'ENOTSUPP'],
    [515, 'ENOIOCTLCMD'],
  ];
  for (const [n, name] of extra) if (!m.has(n)) m.set(n, name);
  return m;
})();

/**
 * The symbolic name of an errno, given as returned by the addon (negative) or
 * positive: errnoName(-2) === 'ENOENT'. Unknown numbers give "errno <n>".
 */
export function errnoName(n: number): string {
  const abs = Math.abs(n);
  return ERRNO_NAMES.get(abs) ?? `errno ${abs}`;
}

/** The (positive) number of an errno name, when Node or this table knows it. */
export function errnoNumber(name: string): number | undefined {
  const n = (os.constants.errno as Readonly<Record<string, number>>)[name];
  if (typeof n === 'number') return n;
  for (const [k, v] of ERRNO_NAMES) if (v === name) return k;
  return undefined;
}

/** True when a native call returned a (negative) errno instead of a value. */
export function isErrno(v: unknown): v is number {
  return typeof v === 'number' && v < 0;
}

/** What an operator can do about an errno of a datapath call, by errno name. */
export const ERRNO_HINTS: Readonly<Partial<Record<string, string>>> = {
  EPERM: 'needs CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN (run as root or grant the capabilities)',
  EACCES: 'needs CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN; the verifier may also have rejected a program (see the log)',
  ENOENT: 'a path does not exist: check bpffs is mounted and the netns/cgroup paths are right',
  ENOSPC: 'a BPF map is full: raise its max_entries or unenroll pods',
  E2BIG: 'a BPF map is full or a value is too large',
  EINVAL: 'the kernel rejected the request: it may be older than 5.10 or lack a BPF feature',
  EBUSY: 'something else holds this hook; remove the other program or run `ambientd cleanup`',
  EEXIST: 'a stale pin exists; run `ambientd cleanup`',
  EOPNOTSUPP: 'the kernel lacks the feature (for sock_diag resets: CONFIG_INET_DIAG_DESTROY)',
  EBADF: 'a bug: an fd the datapath held was closed under it; report it',
  EMFILE: 'the agent ran out of file descriptors: raise its RLIMIT_NOFILE (LimitNOFILE=)',
};

/** The hint for an errno (negative number or name); a generic one when the table has none. */
export function errnoHint(errno: number | string): string {
  const name = typeof errno === 'number' ? errnoName(errno) : errno;
  return ERRNO_HINTS[name] ?? 'see the agent log for details';
}

const KEEP_CODE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['CGROUP_UNAVAILABLE', 'NETNS_UNAVAILABLE', 'HANDLE_CLOSED']);

/**
 * The AmbientError for a native call that returned `rc` (a negative errno):
 * "<what>: <ENAME>", with the table's hint unless the caller knows better.
 * EPERM (and EACCES outside a program load, where it means a verifier
 * rejection) is reported as BPF_PERMISSION, except for the codes that name
 * what is missing rather than a privilege (a pod's cgroup or netns).
 */
export function nativeError(code: ErrorCode, what: string, rc: number, extraHint?: string): AmbientError {
  const name = errnoName(rc);
  const hint = extraHint ?? errnoHint(name);
  const denied = name === 'EPERM' || (name === 'EACCES' && code !== 'BPF_LOAD');
  const c: ErrorCode = denied && !KEEP_CODE.has(code) ? 'BPF_PERMISSION' : code;
  return new AmbientError(c, `${what}: ${name}`, hint, { errno: Math.abs(rc) });
}

/** rc itself when it is not an errno; else throws nativeError(code, what, rc). */
export function check(rc: number, code: ErrorCode, what: string): number {
  if (rc < 0) throw nativeError(code, what, rc);
  return rc;
}
