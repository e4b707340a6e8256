// HboneError is an AmbientError: the code callers match on, a hint for the
// operator, and its HTTP status and reason kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HboneError, assertHostPort } from '../../../../src/proxy/hbone/common.js';
import { AmbientError } from '../../../../src/util/errors.js';

test('HboneError: an AmbientError with code, hint, status and reason', () => {
  const e = new HboneError('HBONE_DENIED', 'HBONE 10.0.0.2:15008 -> 10.0.0.2:80: 401 denied', { status: 401, reason: 'denied' });
  assert.ok(e instanceof AmbientError);
  assert.equal(e.name, 'HboneError');
  assert.deepEqual([e.code, e.status, e.reason], ['HBONE_DENIED', 401, 'denied']);
  assert.match(e.hint, /AuthorizationPolicy/);
  assert.deepEqual(e.toJSON(), { code: 'HBONE_DENIED', message: e.message, hint: e.hint, status: 401, reason: 'denied' });
  assert.equal(e.retryable, false);
  assert.equal(new HboneError('HBONE_REFUSED', 'x').retryable, true);
  assert.match(e.describe(), /^HBONE_DENIED: /);
});

test('a bad address for a tunnel is HBONE_BAD_ARGUMENT', () => {
  assert.throws(
    () => assertHostPort({ ip: 'web', port: 80 }, 'target'),
    (e: unknown) => e instanceof HboneError && e.code === 'HBONE_BAD_ARGUMENT',
  );
  assert.throws(
    () => assertHostPort({ ip: '10.0.0.1', port: 0 }, 'target'),
    (e: unknown) => e instanceof HboneError && e.code === 'HBONE_BAD_ARGUMENT',
  );
  assertHostPort({ ip: 'fd00::1', port: 15008 }, 'dstAddr');
});
