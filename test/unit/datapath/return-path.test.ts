// The TypeScript side of the in-pod return path (src/datapath/return-path.ts), over a fake addon:
// what it asks the addon for, and the typed error it throws for each errno. The kernel side is
// tested in test/privileged/return-path.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import type { NativeAddon, ReturnPathOptions, ReturnPathState } from '../../../src/datapath/native-api.js';
import {
  DEFAULT_RETURN_PATH,
  RETURN_MARK,
  RETURN_PRIORITY,
  RETURN_TABLE,
  ReturnPathError,
  disableReturnPath,
  enableReturnPath,
  returnPathState,
} from '../../../src/datapath/return-path.js';
import { AmbientError } from '../../../src/util/errors.js';

const E = os.constants.errno;

function fake(rc: number, state: ReturnPathState | number = rc): { native: NativeAddon; calls: Array<[string, unknown]> } {
  const calls: Array<[string, unknown]> = [];
  const native = {
    returnPath: (p: string, o: ReturnPathOptions) => {
      calls.push([p, o]);
      return rc;
    },
    returnPathState: (p: string, o: unknown) => {
      calls.push([p, o]);
      return state;
    },
  } as unknown as NativeAddon;
  return { native, calls };
}

test('the constants: mark 0x4d3, table 133 (not default/main/local), priority before main', () => {
  assert.equal(RETURN_MARK, 0x4d3);
  assert.equal(RETURN_TABLE, 133);
  assert.ok(![253, 254, 255].includes(RETURN_TABLE));
  assert.equal(RETURN_PRIORITY, 32000);
  assert.ok(RETURN_PRIORITY > 0 && RETURN_PRIORITY < 32766, 'after lookup local (0), before lookup main (32766)');
  assert.deepEqual(DEFAULT_RETURN_PATH, { mark: RETURN_MARK, table: RETURN_TABLE, priority: RETURN_PRIORITY });
});

test('enable / disable pass the netns, families and config through', () => {
  const { native, calls } = fake(0);
  enableReturnPath(native, '/proc/42/ns/net', [4, 6]);
  disableReturnPath(native, '/proc/42/ns/net', [6], { mark: 7, table: 1000, priority: 100 });
  assert.deepEqual(calls, [
    ['/proc/42/ns/net', { mark: RETURN_MARK, table: RETURN_TABLE, priority: RETURN_PRIORITY, families: [4, 6], enable: true }],
    ['/proc/42/ns/net', { mark: 7, table: 1000, priority: 100, families: [6], enable: false }],
  ]);
});

test('a failure is a ReturnPathError: RETURN_PATH_FAILED, the errno name, and a hint for it', () => {
  const cases: Array<[number, RegExp]> = [
    [-E.ENOENT, /netns path exists/],
    [-E.EPERM, /CAP_NET_ADMIN/],
    [-E.EACCES, /IPv6 is disabled in the pod/],
    [-E.EAFNOSUPPORT, /kernel has no IPv6/],
    [-E.ENETDOWN, /loopback/],
    [-E.EIO, /CAP_NET_ADMIN.*IPv6/],
  ];
  for (const [rc, hint] of cases) {
    const { native } = fake(rc);
    for (const call of [() => enableReturnPath(native, '/run/netns/p', [4, 6]), () => disableReturnPath(native, '/run/netns/p', [6])]) {
      assert.throws(call, (e: unknown) => {
        assert.ok(e instanceof ReturnPathError && e instanceof AmbientError);
        assert.equal(e.code, 'RETURN_PATH_FAILED', 'EPERM too: not folded into BPF_PERMISSION');
        assert.equal(e.errno, -rc);
        assert.match(e.message, new RegExp(`/run/netns/p: ${e.errnoName}$`));
        assert.match(e.hint, hint);
        assert.deepEqual(Object.keys(e.toJSON()).sort(), ['code', 'errno', 'hint', 'message']);
        return true;
      });
    }
  }
  assert.throws(() => enableReturnPath(fake(-E.EACCES).native, 'ns', [4, 6]), /enable the IPv4\+IPv6 return path in ns: EACCES/);
});

test('returnPathState returns the state, or throws for an errno', () => {
  const st: ReturnPathState = { fwmarkAccept: 1, rules: [{ family: 4, priority: 32000 }], routes: [{ family: 4 }] };
  const { native, calls } = fake(0, st);
  assert.deepEqual(returnPathState(native, 'ns'), st);
  assert.deepEqual(calls, [['ns', { table: RETURN_TABLE, mark: RETURN_MARK }]]);
  assert.throws(
    () => returnPathState(fake(0, -E.ENOENT).native, 'ns'),
    (e: unknown) => e instanceof ReturnPathError && e.errnoName === 'ENOENT',
  );
});
