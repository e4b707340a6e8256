/**
 * Loader of the native addon (native/addon.cc → build/Release/ambient_native.node)
 * and small helpers around its negative-errno convention. The surface itself is
 * declared, and documented, in ./native-api.d.ts.
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AmbientError } from '../util/errors.js';
import type { NativeAddon } from './native-api.js';

export type { BpfObject, Errno, MapInfo, NativeAddon, ProgInfo, SocketOptions } from './native-api.js';

/**
 * The repository root. This file is compiled to dist/src/datapath/native.js,
 * so the root is three levels up from it.
 */
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Where loadNative() looks for the addon (AMBIENTD_NATIVE overrides it). */
export function nativeAddonPath(): string {
  const override = process.env.AMBIENTD_NATIVE;
  if (override !== undefined && override !== '') return path.resolve(override);
  return path.join(REPO_ROOT, 'build', 'Release', 'ambient_native.node');
}

let cached: NativeAddon | undefined;

/**
 * Loads (once) and returns the native addon. Throws an AmbientError with code
 * NATIVE_UNAVAILABLE (an Error) telling the operator to run
 * `npm run build:native` when the addon cannot be loaded.
 */
export function loadNative(): NativeAddon {
  if (cached !== undefined) return cached;
  const file = nativeAddonPath();
  const require = createRequire(import.meta.url);
  let addon: NativeAddon;
  try {
    addon = require(file) as NativeAddon;
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    throw new AmbientError(
      'NATIVE_UNAVAILABLE',
      `cannot load the native addon ${file}: ${detail}; run \`npm run build:native\` to build it`,
      'run `npm run build:native` (needs libbpf-dev, a C++ compiler and node-gyp); ' +
        'set AMBIENTD_NATIVE to use an addon built elsewhere',
      { cause: err },
    );
  }
  cached = addon;
  return addon;
}

/** True when a native call returned a (negative) errno instead of a value. */
export function isErrno(v: unknown): v is number {
  return typeof v === 'number' && v < 0;
}

const ERRNO_NAMES: ReadonlyMap<number, string> = (() => {
  const m = new Map<number, string>();
  // Preferred names first: when two names share a number (ENOTSUP/EOPNOTSUPP,
  // EAGAIN/EWOULDBLOCK, EDEADLK/EDEADLOCK) the first one wins.
  const preferred = [
    'EPERM', 'ENOENT', 'ESRCH', 'EINTR', 'EIO', 'ENXIO', 'E2BIG', 'EBADF', 'EAGAIN', 'ENOMEM',
    'EACCES', 'EFAULT', 'EBUSY', 'EEXIST', 'EXDEV', 'ENODEV', 'ENOTDIR', 'EISDIR', 'EINVAL',
    'ENFILE', 'EMFILE', 'ENOSPC', 'ERANGE', 'ENAMETOOLONG', 'ENOSYS', 'ENOTEMPTY', 'ELOOP',
    'EOPNOTSUPP', 'EAFNOSUPPORT', 'EADDRINUSE', 'EADDRNOTAVAIL', 'ENETUNREACH',
    'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'EPROTONOSUPPORT',
    'EOVERFLOW', 'ENOTSOCK', 'ENOTCONN', 'ENOTSUP',
  ];
  const table = os.constants.errno as Readonly<Record<string, number>>;
  for (const name of [...preferred, ...Object.keys(table)]) {
    const n = table[name];
    if (typeof n === 'number' && !m.has(n)) m.set(n, name);
  }
  // Linux errnos that Node does not list but the bpf(2) syscall returns.
  const extra: Array<[number, string]> = [[524, 'ENOTSUPP'], [515, 'ENOIOCTLCMD']];
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
