/** Finding a local pod's netns and cgroup from /proc (k8s-sandbox.ts), on a fake /proc tree. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findPodSandbox, PodSandboxFinder, podUidFromCgroupSegment } from '../../../src/discovery/kubernetes.js';

test('findPodSandbox finds the pod cgroup (systemd and cgroupfs forms) and a non-host netns in a fake /proc', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-proc-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const proc = path.join(dir, 'proc');
  const cg = path.join(dir, 'cgroup');
  const HOST = 'net:[4026531840]';
  const mkproc = (pid: number, cgroup: string, netns: string, cmd = 'app'): void => {
    const d = path.join(proc, String(pid));
    fs.mkdirSync(path.join(d, 'ns'), { recursive: true });
    fs.writeFileSync(path.join(d, 'cgroup'), cgroup);
    fs.writeFileSync(path.join(d, 'cmdline'), `${cmd}\0--flag\0`);
    fs.symlinkSync(netns, path.join(d, 'ns', 'net')); // like the kernel's magic links: readlink gives "net:[inode]"
  };
  const sysd = '3f9c2a1e-7b4d-4c8e-9a51-2d6f0e8b1c47';
  const sysdDir = `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${sysd.replace(/-/g, '_')}.slice`;
  const cgfs = 'e4b7d0a9-2c5f-4a18-8e3b-6f9c1d4a7b02';
  const cgfsDir = `/kubepods/burstable/pod${cgfs}`;
  const hostnet = '0d3e6f9a-4b7c-4e1d-a2f5-8c9b0a1d2e3f';
  const guaranteed = 'c7e2f9a4-1d6b-4b8e-93c5-0a4d8f2e6b71';
  const guarDir = `/kubepods.slice/kubepods-pod${guaranteed.replace(/-/g, '_')}.slice`;

  mkproc(1, '0::/init.scope\n', HOST, '/sbin/init');
  mkproc(57, '0::/system.slice/containerd.service\n', HOST, '/usr/bin/containerd');
  // the app container first (lower pid than pause would be unusual, but must not matter), then pause
  mkproc(880, `0::${sysdDir}/cri-containerd-7d1c0f.scope\n`, 'net:[4026532301]', '/usr/local/bin/web');
  mkproc(901, `0::${sysdDir}/cri-containerd-a3b9e2.scope\n`, 'net:[4026532301]', '/pause');
  mkproc(1200, `12:pids:${cgfsDir}/deadbeef\n0::${cgfsDir}/4c5d6e7f\n`, 'net:[4026532410]');
  mkproc(1300, `0::/kubepods/besteffort/pod${hostnet}/abcdef\n`, HOST, '/usr/local/bin/kube-proxy');
  mkproc(1400, `0::${guarDir}/cri-containerd-ffff.scope\n`, 'net:[4026532555]', '/pause');
  // a process whose cgroup v1 line mentions a pod but has no v2 line: ignored
  mkproc(1500, `4:memory:/kubepods/pod99999999-9999-4999-8999-999999999999/x\n`, 'net:[4026532999]');
  for (const d of [sysdDir, cgfsDir, `/kubepods/besteffort/pod${hostnet}`, guarDir]) fs.mkdirSync(path.join(cg, d), { recursive: true });

  const o = { procRoot: proc, cgroupRoot: cg };
  assert.deepEqual(findPodSandbox(sysd, o), { netns: path.join(proc, '901', 'ns', 'net'), cgroup: path.join(cg, sysdDir) }, 'systemd form; pause preferred');
  assert.deepEqual(findPodSandbox(cgfs, o), { netns: path.join(proc, '1200', 'ns', 'net'), cgroup: path.join(cg, cgfsDir) }, 'cgroupfs form');
  assert.deepEqual(
    findPodSandbox(guaranteed, o),
    { netns: path.join(proc, '1400', 'ns', 'net'), cgroup: path.join(cg, guarDir) },
    'guaranteed QoS (no qos level)',
  );
  assert.deepEqual(findPodSandbox(hostnet, o), { netns: null, cgroup: path.join(cg, `/kubepods/besteffort/pod${hostnet}`) }, 'host netns is never returned');
  assert.equal(findPodSandbox('99999999-9999-4999-8999-999999999999', o), null, 'cgroup v1 only: not found');
  assert.equal(findPodSandbox('12345678-1234-4234-8234-123456789abc', o), null, 'unknown pod');
  assert.equal(findPodSandbox('../../etc', o), null, 'not a UID');
  // the cgroup directory is missing under cgroupRoot (cgroup namespace mismatch): netns only
  fs.rmSync(path.join(cg, cgfsDir), { recursive: true });
  assert.deepEqual(findPodSandbox(cgfs, o), { netns: path.join(proc, '1200', 'ns', 'net'), cgroup: null });
  assert.equal(findPodSandbox(sysd, { procRoot: path.join(dir, 'nope'), cgroupRoot: cg }), null);

  // segment names
  assert.equal(podUidFromCgroupSegment(`kubepods-burstable-pod${sysd.replace(/-/g, '_')}.slice`), sysd);
  assert.equal(podUidFromCgroupSegment(`pod${sysd}`), sysd);
  assert.equal(podUidFromCgroupSegment(`pod${sysd.replace(/-/g, '_')}`), null, 'underscores only in the systemd .slice form');
  assert.equal(podUidFromCgroupSegment(`kubepods-pod${sysd}.slice`), null);
  assert.equal(podUidFromCgroupSegment(`cri-containerd-${sysd}.scope`), null);

  // the finder: one scan serves lookups for maxAgeMs; a new pod is seen once the scan is older
  const finder = new PodSandboxFinder({ procRoot: proc, cgroupRoot: cg, maxAgeMs: 60_000 });
  assert.equal(finder.find(sysd)!.netns, path.join(proc, '901', 'ns', 'net'));
  const late = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
  mkproc(2000, `0::/kubepods/besteffort/pod${late}/c1\n`, 'net:[4026532777]', '/pause');
  assert.equal(finder.find(late), null, 'cached scan');
  const fresh = new PodSandboxFinder({ procRoot: proc, cgroupRoot: cg, maxAgeMs: -1 });
  assert.equal(fresh.find(sysd)!.netns, path.join(proc, '901', 'ns', 'net'));
  assert.equal(fresh.find(late.toUpperCase())!.netns, path.join(proc, '2000', 'ns', 'net'), 'rescanned');
});
