// The agent's start-up checks (src/agent/preflight.ts) with injected probes: each missing
// capability, mount and the private cgroup namespace is one typed error naming it and the
// manifest line; a hybrid host's cgroup v2 at <root>/unified is found.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BPF_FS_MAGIC,
  CAPABILITY_BITS,
  CGROUP2_SUPER_MAGIC,
  PROC_SUPER_MAGIC,
  describePreflight,
  manifestLine,
  preflight,
  PreflightError,
  requiredCapabilities,
  type PreflightProbes,
  type PreflightSettings,
} from '../../../src/agent/preflight.js';
import { isAmbientError } from '../../../src/util/errors.js';

const ALL_CAPS = Object.values(CAPABILITY_BITS).reduce((m, b) => m | (1n << BigInt(b)), 0n);
const settings: PreflightSettings = {
  cgroupRoot: '/sys/fs/cgroup',
  bpffsDir: '/sys/fs/bpf/ambientd',
  caDir: '/var/lib/ambientd/ca',
  handoverSocket: '/run/ambientd/handover.sock',
  agentCgroup: null,
};

/** A node as the DaemonSet sees it (pure cgroup v2, every mount, host cgroup namespace), with overrides. */
function probes(o: Partial<PreflightProbes> & { fs?: Record<string, number>; dirs?: string[]; files?: Record<string, string> } = {}): PreflightProbes {
  const fsTypes: Record<string, number> = { '/sys/fs/bpf': BPF_FS_MAGIC, '/sys/fs/cgroup': CGROUP2_SUPER_MAGIC, '/host/proc': PROC_SUPER_MAGIC, ...o.fs };
  const dirs = new Set(o.dirs ?? ['/sys/fs/bpf', '/sys/fs/cgroup', '/sys/fs/cgroup/kubepods/ambientd', '/run/netns', '/var/lib/ambientd/ca', '/run/ambientd']);
  const files: Record<string, string> = { '/proc/self/cgroup': '0::/kubepods/ambientd\n', '/proc/1/cgroup': '0::/init.scope\n', ...o.files };
  return {
    effectiveCapabilities: () => ALL_CAPS,
    lastCapability: () => 40,
    kernelRelease: () => '6.1.0-13-amd64',
    fsType: (p) => fsTypes[p] ?? (dirs.has(p) ? 0xef53 : null),
    isDirectory: (p) => dirs.has(p) || p === '/',
    writableError: () => null,
    read: (p) => files[p] ?? null,
    readLink: (p) => (p === '/proc/self/ns/cgroup' || p === '/proc/1/ns/cgroup' ? 'cgroup:[4026531835]' : null),
    cgroupnsEntryError: () => null,
    pid: () => 4242,
    inContainer: () => true,
    // the ca and run hostPaths are bind mounts (their root is the host directory)
    mountRoot: (p) => (p === settings.caDir || p === '/run/ambientd' ? p : '/'),
    ...o,
  };
}

test('a node with everything the manifest grants passes', () => {
  const r = preflight(settings, probes());
  assert.deepEqual(r.errors, []);
  assert.equal(r.cgroupRoot, '/sys/fs/cgroup');
});

test('each missing capability is named with its manifest line', () => {
  for (const cap of ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE'] as const) {
    const r = preflight(settings, probes({ effectiveCapabilities: () => ALL_CAPS & ~(1n << BigInt(CAPABILITY_BITS[cap])) }));
    assert.equal(r.errors.length, 1, cap);
    const e = r.errors[0]!;
    assert.ok(e instanceof PreflightError && isAmbientError(e));
    assert.equal(e.code, 'PREFLIGHT_CAPABILITY_MISSING');
    assert.match(e.message, new RegExp(`CAP_${cap} is not in the agent's effective set`));
    assert.ok(e.hint.endsWith(`deploy/ambientd.yaml: DaemonSet ambientd, container ambientd, securityContext.capabilities.add: ${cap}`), e.hint);
  }
});

test('SYS_RESOURCE is needed only before 5.11 (memlock-charged maps), BPF only where the kernel has it', () => {
  assert.deepEqual(requiredCapabilities({ lastCapability: () => 40, kernelRelease: () => '6.18.44' }), ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE']);
  assert.deepEqual(requiredCapabilities({ lastCapability: () => 40, kernelRelease: () => '5.10.0-28' }), [
    'BPF',
    'NET_ADMIN',
    'SYS_ADMIN',
    'SYS_PTRACE',
    'SYS_RESOURCE',
  ]);
  assert.deepEqual(requiredCapabilities({ lastCapability: () => 37, kernelRelease: () => '5.4.0' }), ['NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE', 'SYS_RESOURCE']);
  const r = preflight(settings, probes({ kernelRelease: () => '5.10.0', effectiveCapabilities: () => ALL_CAPS & ~(1n << 24n) }));
  assert.deepEqual(
    r.errors.map((e) => e.item),
    ['SYS_RESOURCE'],
  );
});

test('each missing mount is named with its volume and mountPath', () => {
  const cases: Array<[string, Parameters<typeof probes>[0], string, RegExp]> = [
    ['bpffs', { fs: { '/sys/fs/bpf': 0x62656572 } }, 'bpffs', /\/sys\/fs\/bpf .* is not on a bpffs \(f_type 0x62656572\)/],
    [
      'netns',
      { dirs: ['/sys/fs/bpf', '/sys/fs/cgroup', '/sys/fs/cgroup/kubepods/ambientd', '/var/lib/ambientd/ca', '/run/ambientd'] },
      'netns',
      /\/run\/netns is not a directory/,
    ],
    [
      'ca (built-in CA, no caAddress)',
      { writableError: (p) => (p === settings.caDir ? 'EROFS' : null) },
      'ca',
      /caDir \/var\/lib\/ambientd\/ca is not writable \(EROFS\)/,
    ],
    ['run', { writableError: (p) => (p === '/run/ambientd' ? 'EROFS' : null) }, 'run', /directory \/run\/ambientd is not writable \(EROFS\)/],
    // no host procfs at /host/proc (an empty directory of the container's): client addresses could not be preserved
    ['host-proc', { fs: { '/host/proc': 0xef53 } }, 'hostProc', /the host's procfs is not mounted at \/host\/proc/],
    // a writable /run of the container's own (podman's tmpfs): the socket would not be shared with the next agent
    [
      'run (own tmpfs)',
      { mountRoot: (p) => (p === settings.caDir ? p : '/') },
      'run',
      /\/run\/ambientd is in the container's own file system, not a directory mounted from the host/,
    ],
    // the container's own cgroup view (cgroup2, but the agent's host path is not in it)
    [
      'cgroup',
      { dirs: ['/sys/fs/bpf', '/sys/fs/cgroup', '/run/netns', '/var/lib/ambientd/ca', '/run/ambientd'] },
      'cgroup',
      /not the host's cgroup v2 hierarchy: the agent's own cgroup \/kubepods\/ambientd/,
    ],
  ];
  for (const [what, o, item, message] of cases) {
    const r = preflight(settings, probes(o));
    assert.deepEqual(
      r.errors.map((e) => e.item),
      [item],
      what,
    );
    assert.equal(r.errors[0]!.code, 'PREFLIGHT_MOUNT_MISSING');
    assert.match(r.errors[0]!.message, message);
    assert.ok(r.errors[0]!.hint.endsWith(manifestLine(item as 'bpffs')), r.errors[0]!.hint);
    // the built-in CA's directory is not in the manifest (its agents use the cluster CA): the hint names caAddress
    const volume = item === 'hostProc' ? 'host-proc' : item;
    if (item !== 'ca') assert.match(r.errors[0]!.hint, new RegExp(`volumeMounts: \\{name: ${volume}, mountPath: `));
  }
  // apps that see their pod's own address need no host procfs
  assert.deepEqual(preflight({ ...settings, clientAddress: 'pod' }, probes({ fs: { '/host/proc': 0xef53 } })).errors, []);
});

test('outside a container (the checkout, the sandbox) the state directories need only be writable', () => {
  assert.deepEqual(preflight(settings, probes({ inContainer: () => false, mountRoot: () => '/' })).errors, []);
});

test('a hybrid host: cgroup v2 at <cgroupRoot>/unified is used, with a note; no cgroup v2 at all is an error naming cgroupRoot', () => {
  const hybrid = probes({
    fs: { '/sys/fs/cgroup': 0x01021994, '/sys/fs/cgroup/unified': CGROUP2_SUPER_MAGIC },
    dirs: [
      '/sys/fs/bpf',
      '/sys/fs/cgroup',
      '/sys/fs/cgroup/unified',
      '/sys/fs/cgroup/unified/kubepods/ambientd',
      '/run/netns',
      '/var/lib/ambientd/ca',
      '/run/ambientd',
    ],
  });
  const r = preflight(settings, hybrid);
  assert.deepEqual(r.errors, []);
  assert.equal(r.cgroupRoot, '/sys/fs/cgroup/unified');
  assert.match(r.notes[0]!, /hybrid layout: cgroup v2 is at \/sys\/fs\/cgroup\/unified/);
  const v1 = preflight(settings, probes({ fs: { '/sys/fs/cgroup': 0x01021994 } }));
  assert.deepEqual(
    v1.errors.map((e) => [e.code, e.item]),
    [['PREFLIGHT_MOUNT_MISSING', 'cgroupRoot']],
  );
  assert.ok(v1.errors[0]!.hint.endsWith('deploy/ambientd.yaml: ConfigMap ambientd-config, agent.yaml: cgroupRoot: /sys/fs/cgroup'));
});

test('a private cgroup namespace: by namespace inode, by pid 1 outside it when /proc/1/ns is closed, or as the entrypoint reports', () => {
  const command = 'command: [/opt/ambientd/bin/enter-host-cgroupns, /proc/1/ns/cgroup, node, /opt/ambientd/dist/src/cli.js]';
  const byInode = preflight(settings, probes({ readLink: (p) => (p === '/proc/self/ns/cgroup' ? 'cgroup:[4026532000]' : 'cgroup:[4026531835]') }));
  const byPath = preflight(settings, probes({ readLink: () => null, files: { '/proc/1/cgroup': '0::/../../..\n', '/proc/self/cgroup': '0::/\n' } }));
  const byEntry = preflight(
    settings,
    probes({ cgroupnsEntryError: () => 'nsenter --cgroup=/proc/1/ns/cgroup: nsenter: reassociate to namespace ns/cgroup failed: Operation not permitted' }),
  );
  for (const [r, why] of [
    [byInode, /cgroup:\[4026532000\] is not that of pid 1/],
    [byPath, /pid 1's cgroup reads \/\.\.\/\.\.\/\.\. from here/],
    [byEntry, /could not enter the host cgroup namespace \(nsenter/],
  ] as const) {
    assert.deepEqual(
      r.errors.map((e) => e.code),
      ['PREFLIGHT_CGROUP_NAMESPACE'],
    );
    assert.match(r.errors[0]!.message, why);
    assert.ok(r.errors[0]!.hint.endsWith(command), r.errors[0]!.hint);
  }
});

test('a pid namespace of its own (no hostPID): the agent is pid 1, named with the pod spec line', () => {
  const r = preflight(settings, probes({ pid: () => 1 }));
  assert.deepEqual(
    r.errors.map((e) => [e.code, e.item]),
    [['PREFLIGHT_PID_NAMESPACE', 'hostPID']],
  );
  assert.ok(r.errors[0]!.hint.endsWith('deploy/ambientd.yaml: DaemonSet ambientd, template.spec.hostPID: true'), r.errors[0]!.hint);
});

test('several failures are reported together, each on its own line', () => {
  const r = preflight(
    settings,
    probes({ effectiveCapabilities: () => ALL_CAPS & ~(1n << 12n), fs: { '/sys/fs/bpf': 0x62656572 }, writableError: () => 'EROFS' }),
  );
  assert.deepEqual(
    r.errors.map((e) => e.item),
    ['NET_ADMIN', 'bpffs', 'ca', 'run'],
  );
  const text = describePreflight(r.errors);
  assert.match(text, /^the agent is missing what it needs to start \(4 start-up checks failed; nothing was changed\):\n/);
  assert.equal(text.match(/^ {2}PREFLIGHT_/gm)?.length, 4);
});

test('with caAddress (the manifest: the cluster CA) no CA directory is needed: an unwritable caDir is not an error', () => {
  const p = probes({ writableError: (d) => (d === settings.caDir ? 'EROFS' : null) });
  assert.deepEqual(
    preflight({ ...settings, caAddress: 'ambientd-ca.ambientd-system.svc:15012' }, p).errors.map((e) => e.message),
    [],
  );
  const builtIn = preflight(settings, p).errors;
  assert.equal(builtIn.length, 1);
  assert.ok(
    builtIn[0]!.hint.endsWith('deploy/ambientd.yaml: ConfigMap ambientd-config, agent.yaml: caAddress: ambientd-ca.ambientd-system.svc:15012'),
    builtIn[0]!.hint,
  );
});
