// The errno table beside the native binding (src/datapath/errno.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { check, errnoHint, errnoName, errnoNumber, ERRNO_HINTS, isErrno, nativeError } from '../../../src/datapath/errno.js';
import * as loader from '../../../src/datapath/native.js';
import { AmbientError } from '../../../src/util/errors.js';

const E = os.constants.errno;

test('errnoName: negative or positive, preferred names, Linux-only ones, unknown numbers', () => {
  assert.equal(errnoName(-E.ENOENT), 'ENOENT');
  assert.equal(errnoName(E.EPERM), 'EPERM');
  assert.equal(errnoName(-E.EOPNOTSUPP), 'EOPNOTSUPP', 'not ENOTSUP');
  assert.equal(errnoName(-E.EAGAIN), 'EAGAIN', 'not EWOULDBLOCK');
  assert.equal(errnoName(-524), 'ENOTSUPP');
  assert.equal(errnoName(-99999), 'errno 99999');
  assert.equal(errnoNumber('ECONNREFUSED'), E.ECONNREFUSED);
  assert.equal(errnoNumber('ENOTSUPP'), 524);
  assert.equal(errnoNumber('ECONNFAILED'), undefined);
});

test('the loader re-exports the same helpers (callers outside the datapath import them from native.js)', () => {
  assert.equal(loader.errnoName, errnoName);
  assert.equal(loader.isErrno, isErrno);
  assert.equal(isErrno(-1), true);
  assert.equal(isErrno(0), false);
  assert.equal(isErrno(Buffer.alloc(1)), false);
});

test('nativeError: message, errno, hint from the table, EPERM as BPF_PERMISSION', () => {
  const e = nativeError('BPF_MAP', 'update amb_pods', -E.ENOSPC);
  assert.ok(e instanceof AmbientError);
  assert.equal(e.code, 'BPF_MAP');
  assert.equal(e.message, 'update amb_pods: ENOSPC');
  assert.equal(e.errno, E.ENOSPC);
  assert.equal(e.hint, ERRNO_HINTS.ENOSPC);
  assert.equal(nativeError('BPF_ATTACH', 'x', -E.EPERM).code, 'BPF_PERMISSION');
  assert.equal(nativeError('BPF_ATTACH', 'x', -E.EACCES).code, 'BPF_PERMISSION');
  assert.equal(nativeError('BPF_LOAD', 'x', -E.EACCES).code, 'BPF_LOAD', 'EACCES of a load is the verifier');
  assert.equal(nativeError('CGROUP_UNAVAILABLE', 'x', -E.EPERM).code, 'CGROUP_UNAVAILABLE', 'a missing cgroup keeps its code');
  assert.equal(nativeError('BPF_MAP', 'x', -E.EINVAL, 'my hint').hint, 'my hint');
  assert.equal(errnoHint(-99999), 'see the agent log for details');
  assert.equal(check(5, 'BPF_MAP', 'x'), 5);
  assert.throws(
    () => check(-E.EBUSY, 'BPF_ATTACH', 'attach'),
    (x: unknown) => x instanceof AmbientError && x.code === 'BPF_ATTACH' && /cleanup/.test(x.hint),
  );
});
