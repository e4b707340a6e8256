import { test } from 'node:test';
import assert from 'node:assert/strict';
import { collect, FieldError, int, knownKeys, label, list, obj, oneOf, port, strMap, subdomain } from '../../../src/util/fields.js';
import { AmbientError } from '../../../src/util/errors.js';

test('field readers name the field and what is wrong; FieldError is an AmbientError', () => {
  assert.throws(
    () => port(0, 'spec.ports[0].port'),
    (e: unknown) =>
      e instanceof FieldError &&
      e instanceof AmbientError &&
      e.code === 'K8S_OBJECT_INVALID' &&
      e.message === 'spec.ports[0].port: must be a port number 1-65535, got 0',
  );
  assert.throws(() => obj(undefined, 'metadata', true), /metadata: missing/);
  assert.equal(obj(undefined, 'metadata'), undefined);
  assert.deepEqual(list(null, 'x'), []);
  assert.throws(() => list({}, 'x'), /x: must be a list/);
  assert.throws(() => label('a.b', 'metadata.namespace'), /not a DNS-1123 label/);
  assert.equal(subdomain('a.b', 'metadata.name'), 'a.b');
  assert.throws(() => strMap({ a: 1 }, 'metadata.labels'), /metadata\.labels\.a: must be a string/);
  assert.equal(oneOf(undefined, 'protocol', ['TCP', 'UDP'] as const, 'TCP'), 'TCP');
  assert.throws(() => oneOf('ICMP', 'protocol', ['TCP', 'UDP'] as const), /must be one of TCP, UDP/);
  assert.throws(() => int(1.5, 'n', 0, 9), /whole number 0-9/);
  assert.throws(() => knownKeys({ a: 1, b: 2 }, ['a'], 'spec'), /spec\.b: unknown field/);
  const errors: string[] = [];
  assert.equal(
    collect(errors, () => port('x', 'p')),
    undefined,
  );
  assert.deepEqual(errors, ['p: must be a port number 1-65535, got "x"']);
  assert.throws(
    () =>
      collect(errors, () => {
        throw new TypeError('bug');
      }),
    TypeError,
  );
});
