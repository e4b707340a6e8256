// The agent's container as the DaemonSet runs it (AMBIENTD_SANDBOX_IMAGE, `make test-image`,
// docs/IMAGE.md). Start-up checks: leaving out each capability, each mount, or the step into the
// host cgroup namespace makes the agent exit (78) before it changes anything, naming what is
// missing and the deploy/ambientd.yaml line; with everything (and the ConfigMap's own
// cgroupRoot on this hybrid host) it is ready. `podman kill` of the agent's container: the
// pod's traffic is refused both ways (fail closed), and a new container takes over.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  containerAgentCommand,
  containersConf,
  sandboxHostPaths,
  sandboxUp,
  startAgent,
  waitAgentReady,
  type ContainerAgentOptions,
  type SandboxState,
} from '../../tools/sandbox/index.js';
import { nettool, nettoolServer } from '../../tools/sandbox/podproc.js';
import { manifestLine, MANIFEST_ITEMS, PREFLIGHT_EXIT_CODE, type ManifestItemName } from '../../src/agent/preflight.js';
import { tearDown, until } from '../helpers/sandbox.js';
import { ROOT } from '../helpers/paths.js';

const IMAGE = process.env.AMBIENTD_SANDBOX_IMAGE;
const skip = IMAGE ? false : 'AMBIENTD_SANDBOX_IMAGE is unset: these tests run the agent from the image (make test-image)';

let st: SandboxState;
const procs: ChildProcess[] = [];
const podman = (...args: string[]): ReturnType<typeof spawnSync> =>
  spawnSync('podman', args, { encoding: 'utf8', env: { ...process.env, CONTAINERS_CONF: containersConf() } });

before(async () => {
  if (!IMAGE) return;
  st = await sandboxUp({ nodes: 2, pods: 2, agents: false });
  for (const p of st.pods) procs.push(await nettoolServer(p, 'serve', 8080, '--greet'));
});

after(async () => {
  if (!IMAGE) return;
  await tearDown(procs);
  const left = podman('ps', '-a', '--filter', 'name=ambientd-preflight-', '-q').stdout as string;
  assert.equal(left.trim(), '', 'no preflight container left');
});

interface Run {
  code: number | null;
  output: string;
  ready: boolean;
}

/**
 * One container run of n1's agent with a variation; certificates from the sandbox's cluster CA
 * (caAddress, as the manifest), the hand-over socket on the manifest's path (/run/ambientd: a
 * scratch hostPath here). Waits for the
 * exit, or for readiness (then stops it).
 */
async function runAgent(opts: ContainerAgentOptions): Promise<Run> {
  const n = st.nodes[0]!;
  fs.rmSync(n.readyFile, { force: true });
  const name = `ambientd-preflight-${Date.now()}`;
  const agentArgs = ['--handover-socket', '/run/ambientd/handover.sock', ...(opts.agentArgs ?? [])];
  const [cmd, ...args] = containerAgentCommand(
    n,
    ROOT,
    IMAGE!,
    { AMBIENTD_SANDBOX_NODE: n.name, AMBIENTD_READY_FILE: n.readyFile },
    { ...opts, name, agentArgs },
  );
  const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  try {
    const first = await Promise.race([
      exited.then((code) => ({ code })),
      until('ready or exited', () => fs.existsSync(n.readyFile), 60_000).then(() => ({ code: undefined })),
    ]);
    if (first.code !== undefined) return { code: first.code, output, ready: false };
    podman('stop', '-t', '20', name);
    const code = await exited;
    // the next runs start from a node the agent never touched
    spawnSync(process.execPath, [`${ROOT}/dist/src/cli.js`, 'cleanup', '--bpffs', n.bpffsDir]);
    fs.rmSync(n.bpffsDir, { recursive: true, force: true });
    return { code, output, ready: true };
  } finally {
    podman('rm', '-f', name);
    fs.rmSync(n.readyFile, { force: true });
  }
}

/** n1 has changed nothing: no pins in its bpffs dir, no listeners in its enrolled pod. */
function untouched(): void {
  const n = st.nodes[0]!;
  const pins = fs.existsSync(n.bpffsDir) ? fs.readdirSync(n.bpffsDir) : [];
  assert.deepEqual(pins, [], `nothing pinned under ${n.bpffsDir}`);
}

function assertRefusedToStart(r: Run, items: ManifestItemName[], what: RegExp): void {
  assert.equal(r.code, PREFLIGHT_EXIT_CODE, `exit ${r.code}: ${r.output}`);
  assert.equal(r.ready, false);
  assert.match(r.output, /ambientd: the agent is missing what it needs to start/);
  assert.match(r.output, what, r.output);
  for (const item of items) assert.ok(r.output.includes(manifestLine(item)), `names ${manifestLine(item)}:\n${r.output}`);
  untouched();
}

test('with exactly the manifest (and its cgroupRoot: /sys/fs/cgroup on this hybrid host) the agent in the container is ready', { skip }, async () => {
  const r = await runAgent({ agentArgs: ['--cgroup-root', '/sys/fs/cgroup'] });
  assert.equal(r.ready, true, r.output);
  assert.match(r.output, /cgroupRoot \/sys\/fs\/cgroup is a hybrid layout: cgroup v2 is at \/sys\/fs\/cgroup\/unified, used instead/);
  // certificates from the cluster CA as the manifest says: no CA key anywhere the container could write
  const nodeDir = path.dirname(st.nodes[0]!.config);
  assert.ok(!fs.existsSync(sandboxHostPaths(st.nodes[0]!).ca + '/ca-key.pem'), 'no built-in CA key');
  assert.deepEqual(
    fs.readdirSync(nodeDir, { recursive: true }).filter((f) => String(f).endsWith('ca-key.pem')),
    [],
    `no CA key under ${nodeDir}`,
  );
});

for (const cap of ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE'] as const) {
  // SYS_ADMIN and SYS_PTRACE: nsenter fails first; the entrypoint lets the agent say why
  const items: ManifestItemName[] = cap === 'SYS_ADMIN' || cap === 'SYS_PTRACE' ? [cap, 'hostCgroupns'] : [cap];
  test(`without capability ${cap} the agent exits before starting, naming CAP_${cap} and the manifest line`, { skip }, async () => {
    const r = await runAgent({ dropCapabilities: [cap] });
    assertRefusedToStart(r, items, new RegExp(`PREFLIGHT_CAPABILITY_MISSING: capability CAP_${cap} is not in the agent's effective set`));
  });
}

const MOUNTS: Array<[ManifestItemName, RegExp]> = [
  ['bpffs', /PREFLIGHT_MOUNT_MISSING: \/sys\/fs\/bpf .* is not on a bpffs/],
  // the container's own /sys/fs/cgroup: here without unified/, elsewhere a cgroup2 mount without the agent's host path
  [
    'cgroup',
    /PREFLIGHT_MOUNT_MISSING: (cgroupRoot \/sys\/fs\/cgroup\/unified is not a cgroup v2 mount|\/sys\/fs\/cgroup\/unified is not the host's cgroup v2 hierarchy)/,
  ],
  ['netns', /PREFLIGHT_MOUNT_MISSING: \/run\/netns is not a directory/],
  // podman's own writable /run tmpfs: the socket would not be shared with the next agent's container
  [
    'run',
    /PREFLIGHT_MOUNT_MISSING: the hand-over socket's directory \/run\/ambientd is in the container's own file system, not a directory mounted from the host/,
  ],
  // client-address preservation (the default) sets tcp_fwmark_accept in pod netns; the container's /proc/sys is read-only
  ['hostProc', /PREFLIGHT_MOUNT_MISSING: the host's procfs is not mounted at \/host\/proc/],
];
for (const [item, what] of MOUNTS) {
  const spec = MANIFEST_ITEMS[item];
  const volume = spec.kind === 'mount' ? spec.volume : item;
  test(`without the ${volume} mount the agent exits before starting, naming it and the manifest's volume`, { skip }, async () => {
    const r = await runAgent({ dropVolumes: [volume] });
    assertRefusedToStart(r, [item], what);
  });
}

test("in the container's private cgroup namespace (no enter-host-cgroupns) the agent exits, naming the manifest's command", { skip }, async () => {
  const r = await runAgent({ noHostCgroupns: true });
  assertRefusedToStart(r, ['hostCgroupns'], /PREFLIGHT_CGROUP_NAMESPACE: the agent runs in a private cgroup namespace/);
});

test(
  'in a pid namespace of its own (no hostPID) the agent exits, naming template.spec.hostPID (and the cgroup namespace it could not enter)',
  { skip },
  async () => {
    const r = await runAgent({ noHostPid: true });
    assertRefusedToStart(r, ['hostPID', 'hostCgroupns'], /PREFLIGHT_PID_NAMESPACE: the agent is pid 1/);
  },
);

/** A greeting from `to` came back to `from`. */
async function reaches(from: string, to: string): Promise<{ ok: boolean; detail: string }> {
  const a = st.pods.find((p) => p.name === from)!;
  const b = st.pods.find((p) => p.name === to)!;
  const r = await nettool(a, 'send', b.ip, 8080, 'ping');
  return { ok: r.code === 0 && r.stdout.startsWith(`hello from ${b.ip}:8080`), detail: `exit ${r.code} ${r.stdout}${r.stderr}`.trim() };
}

test(
  '`podman kill` of the agent container: its pod is refused both ways (fail closed), other pods unaffected; a new container takes over',
  { skip },
  async () => {
    await startAgent('n1');
    await startAgent('n2');
    await waitAgentReady('n1');
    await waitAgentReady('n2');
    assert.ok((await reaches('n1-p1', 'n2-p1')).ok, 'ambient -> ambient across the nodes');
    const list = (): string[] =>
      (podman('ps', '-q', '--filter', `label=ambientd-sandbox=${st.stateDir}`, '--filter', 'name=ambientd-sandbox-n1-').stdout as string)
        .split('\n')
        .filter(Boolean);
    const [id] = list();
    assert.ok(id, 'the n1 agent runs in a container');
    const k = podman('kill', id);
    assert.equal(k.status, 0, String(k.stderr));
    await until('container gone', () => list().length === 0, 20_000);
    try {
      for (const [from, to, why] of [
        ['n1-p1', 'n2-p1', 'out of the enrolled pod'],
        ['n2-p1', 'n1-p1', 'into the enrolled pod over HBONE'],
        ['n2-p2', 'n1-p1', 'into the enrolled pod in plaintext from outside the mesh'],
      ] as const) {
        const r = await reaches(from, to);
        assert.equal(r.ok, false, `${from} -> ${to} (${why}) must be refused with the agent gone: ${r.detail}`);
      }
      assert.match((await reaches('n1-p1', 'n2-p1')).detail, /ECONNREFUSED/, 'refused, not timed out');
      assert.ok((await reaches('n1-p2', 'n2-p2')).ok, 'pods outside the mesh are unaffected');
    } finally {
      await startAgent('n1');
      await waitAgentReady('n1');
    }
    assert.equal(list().length, 1, 'a new container');
    assert.ok((await reaches('n1-p1', 'n2-p1')).ok, 'out of the pod again');
    assert.ok((await reaches('n2-p1', 'n1-p1')).ok, 'into the pod again');
  },
);
