// The sandbox's container runs (AMBIENTD_SANDBOX_IMAGE, docs/IMAGE.md) are built from
// deploy/ambientd.yaml and deploy/uninstall.yaml (tools/sandbox/container.ts): the same
// capabilities, host pid/network, read-only root, hostPath and emptyDir mounts and command.
// A changed manifest changes the run (no drift), and the start-up checks' table of manifest
// lines (src/agent/preflight.ts) names only what the manifest really has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { containerAgentCommand, containerCliArgv, manifestContainerRun, sandboxHostPaths } from '../../tools/sandbox/container.js';
import type { SandboxNode } from '../../tools/sandbox/model.js';
import { MANIFEST_FILE, MANIFEST_ITEMS, manifestLine, type ManifestItemName } from '../../src/agent/preflight.js';
import { ROOT } from '../helpers/paths.js';

interface Container {
  name: string;
  command: string[];
  args: string[];
  securityContext: { readOnlyRootFilesystem: boolean; capabilities: { drop: string[]; add: string[] } };
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean; mountPropagation?: string }>;
}
interface PodSpec {
  hostPID?: boolean;
  hostNetwork?: boolean;
  containers: Container[];
  volumes: Array<{ name: string; hostPath?: { path: string }; emptyDir?: { sizeLimit?: string } }>;
}

function docs(file: string): Array<Record<string, unknown>> {
  return parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy', file), 'utf8')).map((d) => d.toJS() as Record<string, unknown>);
}
function podSpec(file: string): PodSpec {
  const ds = docs(file).find((o) => o.kind === 'DaemonSet') as { spec: { template: { spec: PodSpec } } };
  return ds.spec.template.spec;
}

const node: SandboxNode = {
  name: 'n1',
  netns: 'ambs-n1',
  netnsPath: '/run/netns/ambs-n1',
  ip: '10.100.0.1',
  agentPid: null,
  cgroup: '/sys/fs/cgroup/unified/ambientd-sandbox/n1/agent',
  config: '/run/ambientd-sandbox/n1/agent.yaml',
  bpffsDir: '/sys/fs/bpf/ambientd-sandbox/n1',
  log: '/run/ambientd-sandbox/n1/agent.log',
  readyFile: '/run/ambientd-sandbox/n1/agent.ready',
};

/** The words of the `exec podman ...` part (no argument in these fixtures needs quotes). */
function podmanWords(script: string): string[] {
  return script.slice(script.indexOf('exec podman ') + 'exec '.length).split(' ');
}
function has(words: string[], ...seq: string[]): boolean {
  return words.some((_, i) => seq.every((w, j) => words[i + j] === w));
}
/** The -v and --tmpfs values, in order. */
function mountsOf(words: string[]): string[] {
  return words.flatMap((w, i) => (w === '-v' || w === '--tmpfs' ? [`${w} ${words[i + 1]}`] : []));
}

test('the sandbox runs the agent image with exactly the DaemonSet container: capabilities, host pid, read-only root, every mount, its command', () => {
  const spec = podSpec('ambientd.yaml');
  const c = spec.containers[0]!;
  const script = containerAgentCommand(node, ROOT, 'localhost/ambientd:0.1.0', { AMBIENTD_SANDBOX_NODE: 'n1' })[2]!;
  const words = podmanWords(script);
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  assert.ok(has(words, '--cap-drop=all', `--cap-add=${c.securityContext.capabilities.add.join(',')}`), script);
  assert.equal(spec.hostPID, true);
  assert.ok(has(words, '--pid=host'), script);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.ok(has(words, '--read-only'), script);
  // kubelet gives a private cgroup namespace on cgroup v2; the entrypoint leaves it
  assert.ok(has(words, '--cgroupns=private'), script);
  assert.ok(!words.includes('--privileged'));
  // every hostPath and emptyDir of the manifest, the ca/run hostPaths as per-node scratch dirs, plus the state dir
  const scratch = sandboxHostPaths(node);
  const volumes = new Map(spec.volumes.map((v) => [v.name, v]));
  const expected: string[] = [];
  for (const m of c.volumeMounts) {
    const v = volumes.get(m.name)!;
    const opts = [m.readOnly ? 'ro' : '', m.mountPropagation === 'HostToContainer' ? 'rslave' : ''].filter(Boolean).join(',');
    if (v.hostPath) expected.push(`-v ${scratch[m.name as 'ca' | 'run'] ?? v.hostPath.path}:${m.mountPath}${opts ? `:${opts}` : ''}`);
    if (v.emptyDir) expected.push(`--tmpfs ${m.mountPath}:size=${v.emptyDir.sizeLimit!.replace('Mi', 'm')}`);
  }
  expected.push('-v /run/ambientd-sandbox:/run/ambientd-sandbox');
  assert.deepEqual(mountsOf(words), expected);
  assert.ok(
    expected.includes('-v /sys/fs/bpf:/sys/fs/bpf') && expected.includes('-v /run/netns:/run/netns:ro,rslave') && expected.includes('--tmpfs /tmp:size=16m'),
  );
  assert.ok(script.startsWith(`mkdir -p ${scratch.ca} ${scratch.run} && `), script);
  // the manifest's command with nsenter's target the launching shell instead of /proc/1 (docs/IMAGE.md); the sandbox's config
  const [entry, target, ...rest] = c.command;
  assert.equal(target, '/proc/1/ns/cgroup');
  assert.ok(has(words, '--entrypoint', entry!, 'localhost/ambientd:0.1.0', '/proc/$$/ns/cgroup', ...rest, c.args[0]!, '--config', node.config), script);
  assert.equal(words.at(-1), node.config);
});

test('the container tests leave out one capability, one mount or the host cgroup namespace, and nothing else', () => {
  const base = podmanWords(containerAgentCommand(node, ROOT, 'img', {}, { name: 'x' })[2]!);
  const noAdmin = podmanWords(containerAgentCommand(node, ROOT, 'img', {}, { name: 'x', dropCapabilities: ['SYS_ADMIN'] })[2]!);
  assert.deepEqual(
    noAdmin.filter((w) => !base.includes(w)),
    ['--cap-add=BPF,NET_ADMIN,SYS_PTRACE,SYS_RESOURCE'],
  );
  const noBpffs = podmanWords(containerAgentCommand(node, ROOT, 'img', {}, { name: 'x', dropVolumes: ['bpffs'] })[2]!);
  assert.deepEqual(
    mountsOf(base).filter((m) => !mountsOf(noBpffs).includes(m)),
    ['-v /sys/fs/bpf:/sys/fs/bpf'],
  );
  assert.equal(noBpffs.length, base.length - 2);
  const noNs = podmanWords(containerAgentCommand(node, ROOT, 'img', {}, { name: 'x', noHostCgroupns: true, agentArgs: ['--log-level', 'debug'] })[2]!);
  assert.ok(
    has(noNs, '--entrypoint', 'node', 'img', '/opt/ambientd/dist/src/cli.js', 'agent', '--config', node.config, '--log-level', 'debug'),
    noNs.join(' '),
  );
  assert.ok(!noNs.includes('/proc/$$/ns/cgroup'));
  const noPid = podmanWords(containerAgentCommand(node, ROOT, 'img', {}, { name: 'x', noHostPid: true })[2]!);
  assert.deepEqual(
    base.filter((w) => !noPid.includes(w)),
    ['--pid=host'],
  );
});

test('`ambientd cleanup` from the image runs as deploy/uninstall.yaml: its capabilities, host network, read-only root, mounts', () => {
  const spec = podSpec('uninstall.yaml');
  const c = spec.containers[0]!;
  const argv = containerCliArgv('img', ['cleanup', '--bpffs', '/sys/fs/bpf/x'], { hostPaths: { run: '/tmp/scratch' } });
  assert.deepEqual(argv.slice(0, 3), ['podman', 'run', '--rm']);
  assert.ok(has(argv, '--cap-drop=all', `--cap-add=${c.securityContext.capabilities.add.join(',')}`), argv.join(' '));
  assert.equal(spec.hostNetwork, true);
  assert.ok(argv.includes('--network=host'));
  assert.equal(argv.includes('--pid=host'), spec.hostPID === true);
  assert.ok(argv.includes('--read-only'));
  assert.deepEqual(mountsOf(argv), [
    '-v /sys/fs/bpf:/sys/fs/bpf',
    '-v /tmp/scratch:/run/ambientd',
    '--tmpfs /tmp:size=1m',
    // the pods' netns and the host's procfs: cleanup removes each enrolled pod's client-address return path
    '-v /run/netns:/run/netns:ro,rslave',
    '-v /proc:/host/proc',
  ]);
  assert.deepEqual(argv.slice(-6), ['node', 'img', '/opt/ambientd/dist/src/cli.js', 'cleanup', '--bpffs', '/sys/fs/bpf/x']);
});

test('a change in the manifest changes the container run (the two cannot drift apart)', (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-manifest-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  fs.mkdirSync(path.join(tmp, 'deploy'));
  const text = fs.readFileSync(path.join(ROOT, 'deploy', 'ambientd.yaml'), 'utf8');
  const changed = text.replace(/^(\s+)- SYS_PTRACE$/m, '').replace('mountPath: /run/netns', 'mountPath: /var/run/netns');
  assert.notEqual(changed, text);
  fs.writeFileSync(path.join(tmp, 'deploy', 'ambientd.yaml'), changed);
  const run = manifestContainerRun('ambientd.yaml', tmp);
  assert.ok(!run.capabilities.includes('SYS_PTRACE'));
  const words = podmanWords(containerAgentCommand(node, tmp, 'img', {})[2]!);
  assert.ok(words.some((w) => w.startsWith('--cap-add=') && !w.includes('SYS_PTRACE')));
  assert.ok(words.includes('/run/netns:/var/run/netns:ro,rslave'));
});

test("every manifest line the start-up checks name is in deploy/ambientd.yaml (src/agent/preflight.ts's table)", () => {
  const all = docs('ambientd.yaml');
  const spec = podSpec('ambientd.yaml');
  const c = spec.containers.find((x) => x.name === 'ambientd')!;
  const ds = all.find((o) => o.kind === 'DaemonSet') as { metadata: { name: string } };
  assert.equal(ds.metadata.name, 'ambientd');
  const cm = all.find((o) => o.kind === 'ConfigMap') as { metadata: { name: string }; data: Record<string, string> };
  assert.equal(cm.metadata.name, 'ambientd-config');
  const agentYaml = parse(cm.data['agent.yaml']!) as Record<string, unknown>;
  assert.equal(MANIFEST_FILE, 'deploy/ambientd.yaml');
  for (const name of Object.keys(MANIFEST_ITEMS) as ManifestItemName[]) {
    const item = MANIFEST_ITEMS[name];
    const line = manifestLine(name);
    assert.ok(line.startsWith('deploy/ambientd.yaml: '), line);
    switch (item.kind) {
      case 'capability':
        assert.ok(c.securityContext.capabilities.add.includes(item.capability), line);
        assert.ok(line.endsWith(`capabilities.add: ${item.capability}`), line);
        break;
      case 'mount': {
        const m = c.volumeMounts.find((v) => v.name === item.volume);
        assert.equal(m?.mountPath, item.mountPath, line);
        assert.equal(spec.volumes.find((v) => v.name === item.volume)?.hostPath?.path, item.hostPath, line);
        break;
      }
      case 'command':
        assert.deepEqual(c.command, item.command, line);
        break;
      case 'config':
        assert.equal(agentYaml[item.key], item.value, line);
        break;
      case 'podSpec':
        assert.equal((spec as unknown as Record<string, unknown>)[item.field], item.value, line);
        break;
    }
  }
});
