// The sandbox's container runs (AMBIENTD_SANDBOX_IMAGE, docs/IMAGE.md) agree with
// deploy/ambientd.yaml: the same capabilities, host pid, read-only root, the
// hostPath mounts the agent uses, and the same command after nsenter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { containerAgentCommand, DAEMONSET_CAPABILITIES } from '../../tools/sandbox/agents.js';
import type { SandboxNode } from '../../tools/sandbox/model.js';
import { ROOT } from '../helpers/paths.js';

interface Container {
  command: string[];
  args: string[];
  securityContext: { readOnlyRootFilesystem: boolean; capabilities: { drop: string[]; add: string[] } };
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean; mountPropagation?: string }>;
}
interface DaemonSetSpec {
  hostPID: boolean;
  containers: Container[];
  volumes: Array<{ name: string; hostPath?: { path: string } }>;
}

function daemonSet(): DaemonSetSpec {
  for (const d of parseAllDocuments(fs.readFileSync(path.join(ROOT, 'deploy', 'ambientd.yaml'), 'utf8'))) {
    const o = d.toJS() as { kind?: string; spec?: { template: { spec: DaemonSetSpec } } } | null;
    if (o?.kind === 'DaemonSet') return o.spec!.template.spec;
  }
  throw new Error('no DaemonSet in deploy/ambientd.yaml');
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

test('the sandbox runs the image with the DaemonSet capabilities, host pid, read-only root, its hostPath mounts and command', () => {
  const spec = daemonSet();
  const c = spec.containers[0]!;
  assert.deepEqual([...DAEMONSET_CAPABILITIES].sort(), [...c.securityContext.capabilities.add].sort());
  const script = containerAgentCommand(node, ROOT, 'localhost/ambientd:0.1.0', { AMBIENTD_SANDBOX_NODE: 'n1' })[2]!;
  // no argument in this fixture has a space or needs quotes: the script's words are the argv
  const words = script.split(' ');
  const has = (...seq: string[]): boolean => words.some((_, i) => seq.every((w, j) => words[i + j] === w));
  assert.ok(has('--cap-drop=all', `--cap-add=${DAEMONSET_CAPABILITIES.join(',')}`), script);
  assert.equal(spec.hostPID, true);
  assert.ok(has('--pid=host'), script);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.ok(has('--read-only'), script);
  assert.ok(has('--cgroupns=private'), script);
  // the hostPaths the agent uses in the sandbox (the CA and hand-over socket live in the state dir there)
  const hostPaths = new Map(spec.volumes.filter((v) => v.hostPath).map((v) => [v.name, v.hostPath!.path]));
  let checked = 0;
  for (const m of c.volumeMounts) {
    const host = hostPaths.get(m.name);
    if (!host || !['/sys/fs/bpf', '/sys/fs/cgroup', '/run/netns'].includes(host)) continue;
    checked++;
    const opts = [m.readOnly ? 'ro' : '', m.mountPropagation === 'HostToContainer' ? 'rslave' : ''].filter(Boolean).join(',');
    assert.ok(has('-v', `${host}:${m.mountPath}${opts ? `:${opts}` : ''}`), `${m.name}: ${host} -> ${m.mountPath} ${opts} in ${script}`);
  }
  assert.equal(checked, 3, 'bpffs, cgroup and netns mounts compared');
  // the manifest's command, with nsenter's target the launching shell instead of /proc/1 (docs/IMAGE.md)
  assert.deepEqual(c.command, ['nsenter', '--cgroup=/proc/1/ns/cgroup', '--', 'node', '/opt/ambientd/dist/src/cli.js']);
  assert.ok(
    has(
      '--entrypoint',
      'nsenter',
      'localhost/ambientd:0.1.0',
      '--cgroup=/proc/$$/ns/cgroup',
      '--',
      'node',
      '/opt/ambientd/dist/src/cli.js',
      'agent',
      '--config',
      node.config,
    ),
    script,
  );
});
