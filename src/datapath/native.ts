/**
 * Loader of the native addon (native/*.cc → build/Release/ambient_native.node).
 * The surface itself is declared, and documented, in ./native-api.d.ts; its
 * negative errnos are named and turned into AmbientErrors by ./errno.ts.
 */
import { createRequire } from 'node:module';
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
      'run `npm run build:native` (needs libbpf-dev, a C++ compiler and node-gyp); ' + 'set AMBIENTD_NATIVE to use an addon built elsewhere',
      { cause: err },
    );
  }
  cached = addon;
  return addon;
}

// The errno helpers live beside the binding in ./errno.ts; re-exported here
// for the callers that import them from the loader.
export { errnoName, isErrno } from './errno.js';
