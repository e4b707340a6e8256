// `ambientd cleanup` leaves a node as it was before the agent ran: no pins,
// no BPF links on pod cgroups or netns, no listeners in pods, no ip rules;
// and it is safe to run twice.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  agentImage,
  containerCliArgv,
  containersConf,
  sandboxUp,
  startAgent,
  stopAgent,
  waitAgentReady,
  type SandboxState,
} from '../../tools/sandbox/index.js';
import { tearDown } from '../helpers/sandbox.js';
import { nettool, nettoolServer } from '../../tools/sandbox/podproc.js';
import { CLI } from '../helpers/paths.js';
import type { ChildProcess, SpawnSyncReturns } from 'node:child_process';

let st: SandboxState;
const procs: ChildProcess[] = [];

/** What the agent could leave behind on the node, as comparable text. */
function nodeState(): Record<string, unknown> {
  const n1 = st.nodes[0]!;
  const ourProgs = new Set(
    (JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as Array<{ id: number; name?: string }>)
      .filter((p) => p.name?.startsWith('amb_'))
      .map((p) => p.id),
  );
  const links = (JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ prog_id: number; type: string }>)
    .filter((l) => ourProgs.has(l.prog_id))
    .map((l) => l.type)
    .sort();
  const cgroupAttach = Object.fromEntries(st.pods.map((p) => [p.name, execFileSync('bpftool', ['cgroup', 'show', p.cgroup], { encoding: 'utf8' }).trim()]));
  const listeners = Object.fromEntries(
    st.pods.map((p) => [
      p.name,
      execFileSync('ip', ['netns', 'exec', p.netns, 'ss', '-Hltn'], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => /:1500[168]\b/.test(l)).length,
    ]),
  );
  // both families' rules and each pod's tcp_fwmark_accept (the client-address return path)
  const rules = st.pods
    .map((p) =>
      ['-4', '-6']
        .map((f) => execFileSync('ip', [f, '-n', p.netns, 'rule', 'show'], { encoding: 'utf8' }))
        .concat(
          execFileSync(
            'ip',
            ['netns', 'exec', p.netns, 'cat', '/proc/sys/net/ipv4/tcp_fwmark_accept', '/proc/sys/net/ipv4/fwmark_reflect', '/proc/sys/net/ipv6/fwmark_reflect'],
            { encoding: 'utf8' },
          ),
        )
        .join(''),
    )
    .join('\n');
  const pins = fs.existsSync(n1.bpffsDir) ? fs.readdirSync(n1.bpffsDir, { recursive: true }).map(String).sort() : [];
  return { links, cgroupAttach, listeners, rules, pins };
}

before(async () => {
  st = await sandboxUp({ nodes: 1, pods: 2, agents: false });
  for (const p of st.pods) procs.push(await nettoolServer(p, 'serve', 8080, '--greet'));
});

after(() => tearDown(procs));

test('cleanup after the agent ran leaves the node exactly as before; twice is safe', async () => {
  const baseline = nodeState();
  await startAgent('n1');
  await waitAgentReady('n1');
  const during = nodeState();
  assert.ok((during.links as string[]).length >= 3, `the agent attached links: ${JSON.stringify(during.links)}`);
  assert.ok((during.pins as string[]).length > 0);
  assert.notDeepEqual(during, baseline);

  // the agent stops; its pinned redirection stays (fail closed) ...
  await stopAgent('n1', 'SIGTERM');
  const refused = await nettool(st.pods[0]!, 'probe', st.pods[1]!.ip, 8080);
  assert.equal(refused.stdout.trim(), 'ECONNREFUSED', 'fail closed while no agent runs');

  // ... until cleanup removes it
  const bpffs = st.nodes[0]!.bpffsDir;
  const r1 = runCleanup(bpffs);
  assert.equal(r1.status, 0, r1.stderr);
  assert.match(r1.stdout, /removed [1-9]\d* links/);
  const afterState = nodeState();
  assert.deepEqual(afterState, { ...baseline, pins: [] }, 'nothing of the agent is left');
  const r2 = runCleanup(bpffs);
  assert.equal(r2.status, 0, r2.stderr);
  assert.match(r2.stdout, /removed 0 links and 0 pins/);
  const ok = await nettool(st.pods[0]!, 'send', st.pods[1]!.ip, 8080, 'direct');
  assert.equal(ok.code, 0, 'the pod talks directly again');
  assert.match(ok.stdout, new RegExp(`to ${st.pods[0]!.ip.replace(/\./g, '\\.')}\\n`), 'no agent in between');
});

/**
 * `ambientd cleanup --bpffs DIR`: from the checkout, or with AMBIENTD_SANDBOX_IMAGE from the image
 * the way deploy/uninstall.yaml runs it (its capabilities, host network, read-only root and
 * mounts, read from the manifest by containerCliArgv). Its /run/ambientd hostPath is a scratch
 * directory: this cleanup names no hand-over socket there.
 */
function runCleanup(bpffs: string): SpawnSyncReturns<string> {
  const image = agentImage({});
  if (!image) return spawnSync(process.execPath, [CLI, 'cleanup', '--bpffs', bpffs], { encoding: 'utf8' });
  const run = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-cleanup-run-'));
  try {
    const [cmd, ...args] = containerCliArgv(image, ['cleanup', '--bpffs', bpffs], { hostPaths: { run } });
    return spawnSync(cmd!, args, { encoding: 'utf8', env: { ...process.env, CONTAINERS_CONF: containersConf() } });
  } finally {
    fs.rmSync(run, { recursive: true, force: true });
  }
}
