// Owned handles of the datapath (src/datapath/handles.ts): closed exactly
// once, named by their owner in leak reports, and a typed error when used
// after close. No kernel needed: the native calls are stand-ins.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { BpfObjectHandle, OwnedFd, openHandles, openHandlesOf } from '../../../src/datapath/handles.js';
import { AmbientError } from '../../../src/util/errors.js';
import type { BpfObject, NativeAddon } from '../../../src/datapath/native-api.js';

const E = os.constants.errno;

/** A closeFd that records what it closed. */
function closer(): { closeFd(fd: number): number; closed: number[] } {
  const closed: number[] = [];
  return {
    closed,
    closeFd: (fd: number) => {
      closed.push(fd);
      return 0;
    },
  };
}

function isHandleClosed(e: unknown): boolean {
  return e instanceof AmbientError && e.code === 'HANDLE_CLOSED' && e.hint.length > 0;
}

test('OwnedFd: close() closes the fd exactly once', () => {
  const c = closer();
  const h = new OwnedFd(c, 41, 'bpf-map', 'test close-once', 'map amb_pods');
  assert.equal(h.open, true);
  assert.equal(h.fd, 41);
  h.close();
  h.close();
  h.close();
  assert.deepEqual(c.closed, [41]);
  assert.equal(h.open, false);
});

test('OwnedFd: use after close is a typed error naming the owner and the fd', () => {
  const c = closer();
  const h = new OwnedFd(c, 42, 'bpf-link', 'enroll ns/pod', 'link sk_lookup');
  h.close();
  assert.throws(() => h.fd, isHandleClosed);
  assert.throws(() => h.release(), isHandleClosed);
  try {
    void h.fd;
  } catch (e) {
    assert.match((e as Error).message, /enroll ns\/pod/);
    assert.match((e as Error).message, /link sk_lookup/);
  }
  assert.deepEqual(c.closed, [42], 'the failed uses closed nothing');
});

test('OwnedFd: release() hands the fd over: not closed, not reported, not usable', () => {
  const c = closer();
  const h = new OwnedFd(c, 43, 'socket', 'test release', 'socket in /proc/self/fd/9');
  assert.ok(openHandlesOf('test release').length === 1);
  assert.equal(h.release(), 43);
  h.close();
  assert.deepEqual(c.closed, [], 'a released fd belongs to its new owner');
  assert.deepEqual(openHandlesOf('test release'), []);
  assert.throws(() => h.fd, isHandleClosed);
});

test('leak reports list every open handle with its owner until it is closed', () => {
  const c = closer();
  const a = new OwnedFd(c, 50, 'bpf-prog', 'leak-test datapath', 'program amb_connect4');
  const b = new OwnedFd(c, 51, 'bpf-link', 'leak-test enroll ns/a', 'link connect4 on /sys/fs/cgroup/x');
  const report = openHandlesOf('leak-test');
  assert.deepEqual(report.map((r) => [r.owner, r.kind, r.what, r.fd]).sort(), [
    ['leak-test datapath', 'bpf-prog', 'program amb_connect4', 50],
    ['leak-test enroll ns/a', 'bpf-link', 'link connect4 on /sys/fs/cgroup/x', 51],
  ]);
  assert.ok(
    openHandles().some((r) => r.owner === 'leak-test datapath'),
    'openHandles() lists them too',
  );
  a.close();
  assert.deepEqual(
    openHandlesOf('leak-test').map((r) => r.fd),
    [51],
  );
  b.close();
  assert.deepEqual(openHandlesOf('leak-test'), []);
});

test("OwnedFd.take: a negative errno becomes an AmbientError with the errno table's hint", () => {
  const c = closer();
  const h = OwnedFd.take(c, 7, 'bpf-map', 'take-test', 'map amb_pods', 'BPF_MAP');
  assert.equal(h.fd, 7);
  h.close();
  assert.throws(
    () => OwnedFd.take(c, -E.ENOENT, 'bpf-map', 'take-test', 'map amb_nope', 'BPF_MAP'),
    (e: unknown) => {
      assert.ok(e instanceof AmbientError);
      assert.equal(e.code, 'BPF_MAP');
      assert.equal(e.errno, E.ENOENT);
      assert.equal(e.message, 'map amb_nope: ENOENT');
      assert.match(e.hint, /path does not exist/);
      return true;
    },
  );
  assert.throws(
    () => OwnedFd.take(c, -E.EPERM, 'bpf-link', 'take-test', 'link x', 'BPF_ATTACH'),
    (e: unknown) => e instanceof AmbientError && e.code === 'BPF_PERMISSION',
  );
  assert.throws(
    () => OwnedFd.take(c, -E.EADDRINUSE, 'socket', 'take-test', 'listener', 'LISTENER_FAILED', 'free the port'),
    (e: unknown) => e instanceof AmbientError && e.hint === 'free the port',
  );
  assert.deepEqual(openHandlesOf('take-test'), [], 'failed takes own nothing');
});

/** A stand-in for the addon's BpfObject that counts its calls. */
function fakeObject(): BpfObject & { closes: number; loads: string[] } {
  const o = {
    closes: 0,
    loads: [] as string[],
    load(dir: string) {
      o.loads.push(dir);
      return 0;
    },
    programFd(name: string) {
      return name === 'amb_connect4' ? 60 : -E.ENOENT;
    },
    mapFd(name: string) {
      return name === 'amb_pods' ? 61 : -E.ENOENT;
    },
    close() {
      o.closes++;
    },
  };
  return o;
}

function fakeNative(obj: BpfObject | number): Pick<NativeAddon, 'objectOpen' | 'closeFd'> & { closed: number[] } {
  const c = closer();
  return { closed: c.closed, closeFd: c.closeFd, objectOpen: () => obj };
}

test('BpfObjectHandle: closes its libbpf object once; fds taken from it are owned separately', () => {
  const obj = fakeObject();
  const n = fakeNative(obj);
  const h = BpfObjectHandle.open(n, '/x/ambient.bpf.o', 'bpfobj-test');
  assert.equal(h.load('/sys/fs/bpf/x/maps'), 0);
  const prog = h.programFd('amb_connect4', 'bpfobj-test datapath');
  const map = h.mapFd('amb_pods', 'bpfobj-test datapath');
  assert.deepEqual(
    openHandlesOf('bpfobj-test')
      .map((r) => r.kind)
      .sort(),
    ['bpf-map', 'bpf-object', 'bpf-prog'],
  );
  h.close();
  h.close();
  assert.equal(obj.closes, 1, 'bpf_object freed once');
  assert.equal(prog.fd, 60, 'a program fd outlives the object it came from');
  prog.close();
  map.close();
  assert.deepEqual(n.closed.sort(), [60, 61]);
  assert.deepEqual(openHandlesOf('bpfobj-test'), []);
});

test('BpfObjectHandle: use after close is a typed error; missing programs and maps are AmbientErrors', () => {
  const obj = fakeObject();
  const h = BpfObjectHandle.open(fakeNative(obj), '/x/ambient.bpf.o', 'bpfobj-test2');
  assert.throws(
    () => h.programFd('amb_nope', 'bpfobj-test2'),
    (e: unknown) => e instanceof AmbientError && e.code === 'BPF_LOAD' && /amb_nope: ENOENT/.test(e.message),
  );
  assert.throws(
    () => h.mapFd('amb_nope', 'bpfobj-test2'),
    (e: unknown) => e instanceof AmbientError && e.code === 'BPF_MAP',
  );
  h.close();
  assert.throws(() => h.load('/x'), isHandleClosed);
  assert.throws(() => h.programFd('amb_connect4', 'bpfobj-test2'), isHandleClosed);
  assert.throws(() => h.mapFd('amb_pods', 'bpfobj-test2'), isHandleClosed);
  assert.deepEqual(obj.loads, [], 'nothing reached the addon after close');
  assert.deepEqual(openHandlesOf('bpfobj-test2'), []);
});

test("BpfObjectHandle.open: an errno is a BPF_OBJECT error with the caller's hint", () => {
  assert.throws(
    () => BpfObjectHandle.open(fakeNative(-E.ENOENT), '/nope.o', 'bpfobj-test3', 'rebuild it'),
    (e: unknown) => {
      assert.ok(e instanceof AmbientError);
      assert.equal(e.code, 'BPF_OBJECT');
      assert.equal(e.message, 'cannot open /nope.o: ENOENT');
      assert.equal(e.hint, 'rebuild it');
      return true;
    },
  );
  assert.deepEqual(openHandlesOf('bpfobj-test3'), []);
});
