/**
 * Privileged test of the sandbox cluster (needs root, cgroup v2, bpffs).
 * Builds 2 nodes x 2 pods without agents, checks connectivity, metadata,
 * enrollment, exec, agent start/ready/stop with a fake agent, and that down
 * removes everything (also after a simulated crash). Always cleans up.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { execa } from 'execa';
import { AmbientError } from '../../src/util/errors.js';
import {
  DEFAULT_CGROUP_ROOT,
  DEFAULT_STATE_DIR,
  SandboxAgentError,
  SandboxNotFoundError,
  execInNode,
  execInPod,
  execInPodCapture,
  planSandbox,
  renderWorkloads,
  sandboxDown,
  sandboxStatus,
  sandboxUp,
  setEnrollment,
  spawnInPod,
  startAgent,
  stopAgent,
  waitAgentReady,
  type SandboxState,
} from '../../tools/sandbox/index.js';

const STATE_DIR = '/run/ambientd-sandbox-test';
const CGROUP_ROOT = DEFAULT_CGROUP_ROOT;
const OPTS = { stateDir: STATE_DIR, cgroupRoot: CGROUP_ROOT };
const CG_BASE = path.join(CGROUP_ROOT, 'ambientd-sandbox');
const BPF_BASE = '/sys/fs/bpf/ambientd-sandbox';

const isRoot = process.getuid?.() === 0;

async function sandboxNetns(): Promise<string[]> {
  const { stdout } = await execa('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith('ambs-'))
    .sort();
}

const SERVER = `
const net = require('net');
const s = net.createServer((c) => { c.end(JSON.stringify({ from: c.remoteAddress, to: c.localAddress }) + '\\n'); });
s.listen(8080, '0.0.0.0', () => console.log('listening'));
`;
const CLIENT = `
const net = require('net');
const c = net.connect({ host: process.argv[1], port: 8080 });
c.setTimeout(5000);
let d = '';
c.on('data', (x) => { d += x; });
c.on('end', () => { process.stdout.write(d); process.exit(0); });
c.on('timeout', () => { console.error('timeout'); process.exit(2); });
c.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

function waitListening(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${what}: server not listening after 10 s (${err})`)), 10_000);
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr!.on('data', (d) => (err += d));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what}: server exited with ${code}: ${err}`));
    });
  });
}

/** A stand-in for dist/src/cli.js: honours the agent contract (readyFile from agent.yaml). */
const FAKE_AGENT = `
const fs = require('fs');
const os = require('os');
const path = require('path');
const cfgPath = process.argv[process.argv.indexOf('--config') + 1];
const cfg = {};
for (const l of fs.readFileSync(cfgPath, 'utf8').split('\\n')) { const m = /^(\\w+): (.*)$/.exec(l); if (m) cfg[m[1]] = m[2]; }
const mode = process.env.FAKE_AGENT_MODE || 'ok';
console.log('fake agent', mode, process.argv.slice(2).join(' '));
if (mode === 'crash') { console.error('boom: fake agent failure'); process.exit(3); }
if (mode === 'ok') {
  const addrs = Object.values(os.networkInterfaces()).flat().map((a) => a.address);
  const info = {
    pid: process.pid,
    addrs,
    cgroup: fs.readFileSync('/proc/self/cgroup', 'utf8'),
    seesBpffs: fs.existsSync(cfg.bpffsDir),
    seesCgroup: fs.existsSync(cfg.agentCgroup),
    readyEnv: process.env.AMBIENTD_READY_FILE,
  };
  fs.writeFileSync(cfg.readyFile + '.info', JSON.stringify(info));
  fs.writeFileSync(cfg.readyFile, process.pid + '\\n');
}
process.on('SIGTERM', () => { console.log('fake agent: SIGTERM'); fs.rmSync(cfg.readyFile, { force: true }); process.exit(0); });
setInterval(() => {}, 1000);
`;

test('sandbox cluster', { timeout: 180_000 }, async (t) => {
  // Privileged tests fail, never skip, without their privileges.
  assert.ok(isRoot, 'privileged tests must run as root');
  assert.ok(!fs.existsSync(path.join(DEFAULT_STATE_DIR, 'state.json')), `a sandbox is running (${DEFAULT_STATE_DIR}): run \`ambientd sandbox down\` first`);
  const children: ChildProcess[] = [];
  const fakeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'ambs-fake-repo-'));
  t.after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await sandboxDown(OPTS).catch((e) => console.error('cleanup failed:', e));
    fs.rmSync(fakeRoot, { recursive: true, force: true });
  });
  fs.mkdirSync(path.join(fakeRoot, 'dist', 'src'), { recursive: true });
  fs.writeFileSync(path.join(fakeRoot, 'package.json'), '{"type":"commonjs"}\n');
  fs.writeFileSync(path.join(fakeRoot, 'dist', 'src', 'cli.js'), FAKE_AGENT);

  await sandboxDown(OPTS); // start from a clean machine

  await t.test('plan and render are pure and follow the design', () => {
    // the IPv4 layout, named (AMBIENTD_SANDBOX_IP_FAMILY would change the default; the dual one: test/unit/discovery/dual-stack.test.ts)
    const s = planSandbox({ nodes: 2, pods: 3, stateDir: '/x', cgroupRoot: '/cg', bpffsRoot: '/bpf', ipFamily: 'ipv4' });
    assert.deepEqual(
      s.nodes.map((n) => [n.name, n.netns, n.ip, n.cgroup, n.config, n.bpffsDir]),
      [
        ['n1', 'ambs-n1', '10.100.0.1', '/cg/ambientd-sandbox/n1/agent', '/x/n1/agent.yaml', '/bpf/ambientd-sandbox/n1'],
        ['n2', 'ambs-n2', '10.100.0.2', '/cg/ambientd-sandbox/n2/agent', '/x/n2/agent.yaml', '/bpf/ambientd-sandbox/n2'],
      ],
    );
    const p = s.pods.find((x) => x.name === 'n2-p3')!;
    assert.equal(p.ip, '10.244.2.4');
    assert.equal(p.namespace, 'ambient-demo');
    assert.equal(p.serviceAccount, 'sa-n2-p3');
    assert.equal(p.cgroup, '/cg/ambientd-sandbox/n2/pods/n2-p3');
    const doc = YAML.parse(renderWorkloads(s));
    assert.deepEqual(doc.namespaces, [
      { name: 'ambient-demo', labels: { 'istio.io/dataplane-mode': 'ambient' } },
      { name: 'plain', labels: {} },
    ]);
    assert.deepEqual(doc.pods[0], {
      name: 'n1-p1',
      namespace: 'ambient-demo',
      serviceAccount: 'sa-n1-p1',
      node: 'n1',
      ip: '10.244.1.2',
      netns: '/run/netns/ambs-n1-p1',
      cgroup: '/cg/ambientd-sandbox/n1/pods/n1-p1',
      labels: { app: 'n1-p1', tier: 'echo' },
    });
  });

  await t.test('inputs are validated before anything is touched', async () => {
    await assert.rejects(sandboxUp({ ...OPTS, nodes: 0 }), /nodes must be an integer from 1 to 50/);
    await assert.rejects(sandboxUp({ ...OPTS, nodes: 51 }), /nodes must be an integer from 1 to 50/);
    await assert.rejects(sandboxUp({ ...OPTS, pods: 201 }), /pods must be an integer from 1 to 200/);
    await assert.rejects(sandboxUp({ ...OPTS, pods: 1.5 }), /pods must be an integer/);
    assert.deepEqual(await sandboxNetns(), []);
    assert.throws(
      () => sandboxStatus(OPTS),
      (e: unknown) => e instanceof SandboxNotFoundError && e instanceof AmbientError && e.code === 'SANDBOX_MISSING' && e.hint.includes('ambientd sandbox up'),
    );
  });

  let state!: SandboxState;
  await t.test('up builds 2 nodes x 2 pods', async () => {
    const t0 = Date.now();
    state = await sandboxUp({ ...OPTS, nodes: 2, pods: 2, agents: false });
    t.diagnostic(`up 2x2 took ${Date.now() - t0} ms`);
    // ambs-cp: the control plane (the cluster CA), on the fabric like the nodes
    assert.deepEqual(await sandboxNetns(), ['ambs-cp', 'ambs-fabric', 'ambs-n1', 'ambs-n1-p1', 'ambs-n1-p2', 'ambs-n2', 'ambs-n2-p1', 'ambs-n2-p2']);
    assert.ok(state.controlPlane && state.controlPlane.caPid !== null, 'the CA runs (also without agents)');
    const caPing = await execa('ip', [
      'netns',
      'exec',
      'ambs-n1',
      'curl',
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `http://${state.controlPlane.ip}:15014/healthz/ready`,
    ]);
    assert.equal(caPing.stdout, '200', 'a node reaches the CA over the fabric');
    for (const n of ['n1', 'n2']) {
      assert.ok(fs.statSync(path.join(CG_BASE, n, 'agent')).isDirectory());
      for (const j of [1, 2]) assert.ok(fs.statSync(path.join(CG_BASE, n, 'pods', `${n}-p${j}`)).isDirectory());
      assert.ok(fs.statSync(path.join(BPF_BASE, n)).isDirectory());
      const cfg = YAML.parse(fs.readFileSync(path.join(STATE_DIR, n, 'agent.yaml'), 'utf8'));
      assert.deepEqual(cfg, {
        node: n,
        nodeIP: `10.100.0.${n.slice(1)}`,
        cgroupRoot: CGROUP_ROOT,
        bpffsDir: path.join(BPF_BASE, n),
        workloads: path.join(STATE_DIR, 'mesh'),
        agentCgroup: path.join(CG_BASE, n, 'agent'),
        acceleration: 'none',
        logLevel: 'info',
        readyFile: path.join(STATE_DIR, n, 'agent.ready'),
        trustDomain: 'cluster.local',
        // the cluster CA: its address, the root and this node's own token; no CA key, no caDir
        caAddress: '10.100.0.254:15012',
        caRootCert: path.join(STATE_DIR, n, 'ca', 'root-cert.pem'),
        caTokenFile: path.join(STATE_DIR, n, 'ca', 'token'),
        handoverSocket: path.join(STATE_DIR, n, 'handover.sock'),
        drainTimeout: '5s',
        // AMBIENTD_SANDBOX_WORKERS (make test runs the suite with 2 and 1): written through
        ...(process.env.AMBIENTD_SANDBOX_WORKERS
          ? { workers: process.env.AMBIENTD_SANDBOX_WORKERS === 'auto' ? 'auto' : Number(process.env.AMBIENTD_SANDBOX_WORKERS) }
          : {}),
      });
    }
    // node and pod plumbing
    const route = await execa('ip', ['-n', 'ambs-n1', 'route', 'show']);
    assert.match(route.stdout, /10\.244\.2\.0\/24 via 10\.100\.0\.2 dev eth0/);
    assert.match(route.stdout, /10\.244\.1\.2 dev vp1/);
    const podRoute = await execa('ip', ['-n', 'ambs-n2-p2', 'route', 'show']);
    assert.match(podRoute.stdout, /default via 169\.254\.1\.1 dev eth0/);
    const sys = await execa('ip', [
      'netns',
      'exec',
      'ambs-n2',
      'sysctl',
      '-n',
      'net.ipv4.ip_forward',
      'net.ipv4.conf.vp2.proxy_arp',
      'net.ipv4.conf.all.rp_filter',
      'net.ipv4.neigh.vp2.proxy_delay',
    ]);
    assert.deepEqual(sys.stdout.split('\n'), ['1', '1', '0', '0']);
    const br = await execa('ip', ['-n', 'ambs-fabric', '-br', 'link', 'show', 'master', 'br0']);
    assert.match(br.stdout, /^n1@/m);
    assert.match(br.stdout, /^n2@/m);
  });

  await t.test('status lists nodes and pods with namespaces and enrollment', () => {
    const s = sandboxStatus(OPTS);
    assert.deepEqual(
      s.nodes.map((n) => ({ name: n.name, netns: n.netns, ip: n.ip, agentPid: n.agentPid })),
      [
        { name: 'n1', netns: 'ambs-n1', ip: '10.100.0.1', agentPid: null },
        { name: 'n2', netns: 'ambs-n2', ip: '10.100.0.2', agentPid: null },
      ],
    );
    assert.deepEqual(
      s.pods.map((p) => [p.name, p.node, p.namespace, p.serviceAccount, p.ip, p.ambient]),
      [
        ['n1-p1', 'n1', 'ambient-demo', 'sa-n1-p1', '10.244.1.2', true],
        ['n1-p2', 'n1', 'plain', 'sa-n1-p2', '10.244.1.3', false],
        ['n2-p1', 'n2', 'ambient-demo', 'sa-n2-p1', '10.244.2.2', true],
        ['n2-p2', 'n2', 'plain', 'sa-n2-p2', '10.244.2.3', false],
      ],
    );
    assert.deepEqual(s.pods, state.pods);
  });

  await t.test('TCP works pod->pod (same node, cross node) and node->pod', async () => {
    for (const pod of ['n1-p1', 'n1-p2', 'n2-p1']) {
      const c = spawnInPod(pod, [process.execPath, '-e', SERVER], OPTS);
      children.push(c);
      await waitListening(c, pod);
    }
    const connect = async (from: { pod?: string; node?: string }, to: string) => {
      const argv = [process.execPath, '-e', CLIENT, to];
      const r = from.pod
        ? await execInPodCapture(from.pod, argv, { ...OPTS, timeoutMs: 15_000 })
        : await execInNode(from.node!, argv, { ...OPTS, timeoutMs: 15_000 });
      assert.equal(r.exitCode, 0, `${JSON.stringify(from)} -> ${to}: ${r.stderr}`);
      return JSON.parse(r.stdout) as { from: string; to: string };
    };
    assert.deepEqual(await connect({ pod: 'n1-p1' }, '10.244.1.3'), { from: '10.244.1.2', to: '10.244.1.3' }, 'same node');
    assert.deepEqual(await connect({ pod: 'n1-p2' }, '10.244.2.2'), { from: '10.244.1.3', to: '10.244.2.2' }, 'cross node');
    assert.deepEqual(await connect({ pod: 'n2-p2' }, '10.244.1.2'), { from: '10.244.2.3', to: '10.244.1.2' }, 'cross node, reverse');
    assert.deepEqual(await connect({ node: 'n1' }, '10.244.1.2'), { from: '10.100.0.1', to: '10.244.1.2' }, 'node -> own pod');
    assert.deepEqual(await connect({ node: 'n2' }, '10.244.1.3'), { from: '10.100.0.2', to: '10.244.1.3' }, 'node -> remote pod');
    // bash /dev/tcp also works (pod -> pod)
    const r = await execInPodCapture('n2-p1', ['bash', '-c', 'exec 3<>/dev/tcp/10.244.1.2/8080 && cat <&3'], OPTS);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /"from":"10\.244\.2\.2"/);
  });

  await t.test('execInPod passes stdin, exit codes, cgroup and netns through', async () => {
    assert.equal(await execInPod('n1-p1', ['sh', '-c', 'exit 7'], { ...OPTS, stdio: 'ignore' }), 7);
    assert.equal(await execInPod('n1-p1', ['sh', '-c', 'read x; [ "$x" = ping ]'], { ...OPTS, stdio: 'ignore', input: 'ping\n' }), 0);
    assert.equal(await execInPod('n1-p1', ['sh', '-c', 'kill -TERM $$'], { ...OPTS, stdio: 'ignore' }), 128 + 15);
    const cat = await execInPodCapture('n1-p2', ['sh', '-c', 'cat; echo " err" >&2; exit 3'], { ...OPTS, input: 'hello' });
    assert.deepEqual([cat.exitCode, cat.stdout, cat.stderr], [3, 'hello', ' err\n']);
    const cg = await execInPodCapture('n2-p2', ['cat', '/proc/self/cgroup'], OPTS);
    assert.match(cg.stdout, /^0::\/ambientd-sandbox\/n2\/pods\/n2-p2$/m);
    const addr = await execInPodCapture('n2-p2', ['ip', '-4', '-br', 'addr', 'show', 'dev', 'eth0'], OPTS);
    assert.match(addr.stdout, /10\.244\.2\.3\/32/);
    await assert.rejects(execInPod('n9-p9', ['true'], OPTS), /unknown pod "n9-p9"/);
    await assert.rejects(execInPod('n1-p1', [], OPTS), /no command given/);
  });

  await t.test('enroll / unenroll rewrite the workload file atomically', async () => {
    const file = path.join(STATE_DIR, 'mesh', '00-workloads.json');
    const labelsOf = (name: string) =>
      (YAML.parse(fs.readFileSync(file, 'utf8')).pods as Array<{ name: string; labels: Record<string, string> }>).find((p) => p.name === name)!.labels;
    assert.deepEqual(labelsOf('n1-p2'), { app: 'n1-p2', tier: 'echo' });

    const enrolled = await setEnrollment('n1-p2', true, OPTS);
    assert.equal(enrolled.ambient, true);
    assert.deepEqual(labelsOf('n1-p2'), { app: 'n1-p2', tier: 'echo', 'istio.io/dataplane-mode': 'ambient' });

    const out = await setEnrollment('n1-p1', false, OPTS);
    assert.equal(out.ambient, false, 'label none opts out even in an ambient namespace');
    assert.deepEqual(labelsOf('n1-p1'), { app: 'n1-p1', tier: 'echo', 'istio.io/dataplane-mode': 'none' });

    assert.deepEqual(
      sandboxStatus(OPTS).pods.map((p) => [p.name, p.ambient]),
      [
        ['n1-p1', false],
        ['n1-p2', true],
        ['n2-p1', true],
        ['n2-p2', false],
      ],
    );
    await setEnrollment('n1-p1', true, OPTS);
    assert.equal(sandboxStatus(OPTS).pods[0]!.ambient, true);
    assert.deepEqual(
      fs.readdirSync(STATE_DIR).filter((f) => f.includes('.tmp')),
      [],
      'no temp files left',
    );
    await assert.rejects(setEnrollment('nope', true, OPTS), /unknown pod "nope"/);
  });

  await t.test('agents: start, ready contract, stop, crash reporting', async () => {
    const pid = await startAgent('n1', { ...OPTS, repoRoot: fakeRoot });
    assert.equal(sandboxStatus(OPTS).nodes[0]!.agentPid, pid);
    await waitAgentReady('n1', 10_000, OPTS);
    const info = JSON.parse(fs.readFileSync(path.join(STATE_DIR, 'n1', 'agent.ready.info'), 'utf8'));
    assert.equal(info.pid, pid, 'sh execs into nsenter which execs into node: one pid');
    assert.ok(info.addrs.includes('10.100.0.1'), 'agent runs in the node netns');
    assert.match(info.cgroup, /^0::\/ambientd-sandbox\/n1\/agent$/m);
    assert.ok(info.seesBpffs && info.seesCgroup, 'agent sees the host bpffs and cgroup2 mounts');
    assert.equal(info.readyEnv, path.join(STATE_DIR, 'n1', 'agent.ready'));
    await assert.rejects(startAgent('n1', { ...OPTS, repoRoot: fakeRoot }), /already running/);
    assert.equal(await stopAgent('n1', 'SIGTERM', OPTS), true);
    assert.equal(sandboxStatus(OPTS).nodes[0]!.agentPid, null);
    assert.ok(!fs.existsSync(path.join(STATE_DIR, 'n1', 'agent.ready')));
    assert.match(fs.readFileSync(path.join(STATE_DIR, 'n1', 'agent.log'), 'utf8'), /fake agent ok agent --config \S+n1\/agent\.yaml[\s\S]*SIGTERM/);

    await startAgent('n2', { ...OPTS, repoRoot: fakeRoot, env: { FAKE_AGENT_MODE: 'crash' } });
    await assert.rejects(
      waitAgentReady('n2', 10_000, OPTS),
      (e: unknown) => e instanceof SandboxAgentError && /exited before becoming ready/.test(e.message) && e.logTail.includes('boom: fake agent failure'),
    );

    await startAgent('n2', { ...OPTS, repoRoot: fakeRoot, env: { FAKE_AGENT_MODE: 'hang' } });
    await assert.rejects(waitAgentReady('n2', 500, OPTS), /not ready after 500 ms/);
    await assert.rejects(startAgent('n1', { ...OPTS, repoRoot: path.join(fakeRoot, 'nope') }), /does not exist/);
    // the hanging agent is left running: down must kill it
  });

  await t.test('down removes everything and is idempotent', async () => {
    const hanging = sandboxStatus(OPTS).nodes[1]!.agentPid!;
    assert.ok(hanging > 0);
    const report = await sandboxDown(OPTS);
    assert.deepEqual(report.leftovers, []);
    assert.ok(report.killed.includes(hanging));
    assert.throws(() => process.kill(hanging, 0), /ESRCH/);
    assert.deepEqual(await sandboxNetns(), []);
    assert.ok(!fs.existsSync(CG_BASE), 'cgroup dir removed');
    assert.ok(!fs.existsSync(BPF_BASE), 'bpffs dir removed');
    assert.ok(!fs.existsSync(STATE_DIR), 'state dir removed');
    // the test servers ran in pod cgroups: down killed them too
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? null : new Promise((r) => c.once('exit', r)))));
    const again = await sandboxDown(OPTS);
    assert.deepEqual(again, { killed: [], netns: [], cgroups: 0, ipRules: 0, leftovers: [] });
    assert.throws(() => sandboxStatus(OPTS), SandboxNotFoundError);
  });

  await t.test('down cleans up after a crash (no state file), 2x25 pods build fast', async () => {
    const t0 = Date.now();
    await sandboxUp({ ...OPTS, nodes: 2, pods: 25, agents: false });
    const ms = Date.now() - t0;
    t.diagnostic(`up 2x25 (50 pods) took ${ms} ms`);
    assert.ok(ms < 30_000, `building 50 pods took ${ms} ms`);
    assert.equal((await sandboxNetns()).length, 1 + 1 + 2 + 50);
    const r = await execInPodCapture('n2-p25', ['bash', '-c', 'exec 3<>/dev/tcp/10.244.1.26/9 || exit 9'], { ...OPTS, timeoutMs: 10_000 });
    assert.match(r.stderr, /Connection refused/, 'cross node reachability: RST from the far pod');
    // a stray process in a pod plus an ip rule with our mark, then "crash"
    const stray = spawnInPod('n1-p7', ['sleep', '1000'], { ...OPTS, stdio: 'ignore' });
    children.push(stray);
    await new Promise((res) => stray.once('spawn', res));
    // 'spawn' fires before the wrapper moved itself into the pod cgroup: wait for that
    const inPodCgroup = (): boolean => {
      try {
        return fs.readFileSync(`/proc/${stray.pid}/cgroup`, 'utf8').includes('/n1-p7');
      } catch {
        return false;
      }
    };
    for (const end = Date.now() + 5000; !inPodCgroup() && Date.now() < end;) await new Promise((res) => setTimeout(res, 10));
    assert.ok(inPodCgroup(), 'the stray process is in the pod cgroup');
    await execa('ip', ['rule', 'add', 'priority', '32001', 'fwmark', '0x539', 'lookup', '539']);
    fs.rmSync(path.join(STATE_DIR, 'state.json'));
    assert.throws(() => sandboxStatus(OPTS), SandboxNotFoundError);

    const report = await sandboxDown(OPTS);
    assert.deepEqual(report.leftovers, []);
    assert.equal(report.netns.length, 54);
    assert.equal(report.ipRules, 1);
    assert.ok(report.killed.includes(stray.pid!));
    assert.deepEqual(await sandboxNetns(), []);
    assert.ok(!fs.existsSync(CG_BASE));
    assert.ok(!fs.existsSync(BPF_BASE));
    assert.ok(!fs.existsSync(STATE_DIR));
    assert.doesNotMatch((await execa('ip', ['rule', 'show'])).stdout, /fwmark 0x539/);
  });
});
