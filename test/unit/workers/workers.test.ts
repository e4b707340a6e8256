/** The control thread's arithmetic of the data-plane workers: how many (auto), their share of the limits, summed figures. */
import test from 'node:test';
import assert from 'node:assert/strict';
import { autoWorkers, cgroupCpuLimit, type CpuFacts } from '../../../src/workers/cpus.js';
import { addStats, splitLimits } from '../../../src/workers/protocol.js';
import { DEFAULT_LIMITS } from '../../../src/proxy/limits.js';

function facts(procCgroup: string, files: Record<string, string>, cpus = 16): CpuFacts {
  return { procCgroup, read: (f) => files[f] ?? null, cpus };
}

test('auto: the cgroup v2 CPU limit, rounded up, of the agent cgroup or its nearest ancestor', () => {
  const f = facts('0::/kubepods/pod1/ambientd\n', {
    '/sys/fs/cgroup/kubepods/pod1/cpu.max': '250000 100000\n',
    '/sys/fs/cgroup/kubepods/pod1/ambientd/cpu.max': 'max 100000\n',
  });
  assert.equal(cgroupCpuLimit(f, '/sys/fs/cgroup'), 2.5);
  assert.deepEqual(autoWorkers(f, '/sys/fs/cgroup'), { workers: 3, from: 'cgroup' });
});

test('auto: a fractional limit still gets one worker; never more workers than CPUs', () => {
  assert.deepEqual(autoWorkers(facts('0::/a\n', { '/cg/a/cpu.max': '20000 100000' }), '/cg'), { workers: 1, from: 'cgroup' });
  assert.deepEqual(autoWorkers(facts('0::/a\n', { '/cg/a/cpu.max': '6400000 100000' }, 4), '/cg'), { workers: 4, from: 'cgroup' });
});

test('auto: cgroup v1 quota/period (a hybrid host), else the CPUs', () => {
  const v1 = facts('4:cpu,cpuacct:/kubepods/x\n0::/user.slice\n', {
    '/sys/fs/cgroup/cpu,cpuacct/kubepods/x/cpu.cfs_quota_us': '150000\n',
    '/sys/fs/cgroup/cpu,cpuacct/kubepods/x/cpu.cfs_period_us': '100000\n',
  });
  assert.deepEqual(autoWorkers(v1, '/sys/fs/cgroup/unified'), { workers: 2, from: 'cgroup' });
  // no limit anywhere (quota -1, cpu.max max): the CPUs
  const none = facts('4:cpu,cpuacct:/\n0::/\n', { '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '-1', '/u/cpu.max': 'max 100000' }, 2);
  assert.deepEqual(autoWorkers(none, '/u'), { workers: 2, from: 'cpus' });
  // nothing readable at all: still at least one
  assert.deepEqual(autoWorkers(facts('', {}, 0), '/u'), { workers: 1, from: 'cpus' });
});

test("a worker's share of the node-wide limits: N shares hold what one agent would, per-stream figures unchanged", () => {
  assert.deepEqual(splitLimits(DEFAULT_LIMITS, 1), { ...DEFAULT_LIMITS });
  const two = splitLimits(DEFAULT_LIMITS, 2);
  assert.equal(two.receiveBuffer * 2, DEFAULT_LIMITS.receiveBuffer);
  assert.equal(two.maxPendingDials * 2, DEFAULT_LIMITS.maxPendingDials);
  assert.equal(two.maxHandshakes * 2, DEFAULT_LIMITS.maxHandshakes);
  assert.equal(two.maxSessionsPerPeer * 2, DEFAULT_LIMITS.maxSessionsPerPeer);
  assert.equal(two.streamWindow, DEFAULT_LIMITS.streamWindow);
  assert.equal(two.maxStreamsPerSession, DEFAULT_LIMITS.maxStreamsPerSession);
  // never below a floor: 1 of each, one stream's minimum window
  const many = splitLimits({ ...DEFAULT_LIMITS, maxHandshakes: 3, receiveBuffer: 100_000 }, 64);
  assert.equal(many.maxHandshakes, 1);
  assert.equal(many.receiveBuffer, DEFAULT_LIMITS.minStreamWindow);
});

test('figures of several workers are summed leaf by leaf (nested, absent on one side)', () => {
  const a = { connections: { open: 1, accepted: 5 }, rejections: { denied: 1 } };
  const b = { connections: { open: 2, accepted: 1 }, rejections: { limit_handshakes: 3 }, extra: 'x' };
  assert.deepEqual(addStats(a, b), { connections: { open: 3, accepted: 6 }, rejections: { denied: 1, limit_handshakes: 3 }, extra: 'x' });
});
