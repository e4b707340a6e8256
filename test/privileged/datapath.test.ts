// The eBPF datapath on real network namespaces: a sandbox of 2 nodes x 2 pods
// with one agent per node. n<i>-p1 are ambient (namespace ambient-demo),
// n<i>-p2 are not (namespace plain). Every test asserts what happened on the
// wire or in the agent's records; the sandbox is removed even on failure.
// With AMBIENTD_SANDBOX_IP_FAMILY=dual (`make test-dual`, and the 6.1 VM run,
// test/vm/kernel-6.1.test.ts) the pods are dual-stack: every test below runs
// on their IPv4 addresses as on an IPv4 sandbox, and the IPv6 tests run too
// (on an IPv4 sandbox they are skipped: test/privileged/dual-stack.test.ts
// covers IPv6 there).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { sandboxUp, setEnrollment, startAgent, stopAgent, waitAgentReady, TIME_SCALE, type SandboxState } from '../../tools/sandbox/index.js';
import { nettool, nettoolServer, runInPod, startInPod, NETTOOL } from '../../tools/sandbox/podproc.js';
import { checkIpv6InboundPlaintext, sandboxView, until, tearDown } from '../helpers/sandbox.js';
import { CLI } from '../helpers/paths.js';
import type { ConfigDump } from '../../src/agent/index.js';

let st: SandboxState;
const servers: ChildProcess[] = [];

type Dump = Pick<ConfigDump, 'workloads' | 'connections' | 'workloadSource' | 'counters' | 'datapath'>;

const { pod, node, dump } = sandboxView<Dump>(() => st);

/** The IPv6 tests run on a dual-stack sandbox (AMBIENTD_SANDBOX_IP_FAMILY=dual). */
const DUAL = process.env.AMBIENTD_SANDBOX_IP_FAMILY === 'dual';
const SKIP_V6 = !DUAL && 'IPv4 sandbox: AMBIENTD_SANDBOX_IP_FAMILY=dual runs it (make test-dual, make test-vm); dual-stack.test.js covers IPv6 here';
const v6 = (p: SandboxState['pods'][number]): string => {
  const a = (p.ips ?? [p.ip]).find((x) => x.includes(':'));
  assert.ok(a, `${p.name} has an IPv6 address (ipFamily ${st.ipFamily ?? 'ipv4'})`);
  return a;
};

before(async () => {
  st = await sandboxUp({ nodes: 2, pods: 2, agents: true });
  for (const p of st.pods) {
    servers.push(await nettoolServer(p, 'serve', 8080, '--greet'));
    servers.push(await nettoolServer(p, 'sink', 9000));
  }
});

after(() => tearDown(servers));

test('ambient pod -> pod on another node: bytes arrive and the agent records the original destination', async () => {
  const r = await nettool(pod('n1-p1'), 'send', pod('n2-p1').ip, 8080, 'ping-across');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^hello from ${pod('n2-p1').ip.replace(/\./g, '\\.')}:8080`));
  assert.match(r.stdout, /ping-across$/);
  const d = await dump('n1');
  const c = d.connections.find((x) => x.direction === 'outbound' && x.dst === `${pod('n2-p1').ip}:8080` && x.state === 'closed');
  assert.ok(c, `outbound record on n1: ${JSON.stringify(d.connections)}`);
  assert.equal(c.pod, 'ambient-demo/n1-p1');
  assert.equal(c.src.split(':')[0], pod('n1-p1').ip);
  assert.equal(c.bytesSent, 'ping-across'.length);
  assert.equal(c.bytesReceived, r.stdout.length);
  // the destination is ambient too: its agent captured it inbound on its plaintext port
  const d2 = await dump('n2');
  assert.ok(
    d2.connections.some((x) => x.direction === 'inbound' && x.dst === `${pod('n2-p1').ip}:8080` && x.src.startsWith(pod('n1-p1').ip)),
    'inbound record on n2',
  );
});

test('a captured app sees the destination it dialled as its peer (getpeername4), not the agent', async () => {
  const dst = pod('n2-p2');
  const r = await runInPod(pod('n1-p1'), [
    process.execPath,
    '-e',
    `
    const s = require('net').connect(8080, '${dst.ip}', () => { console.log(s.remoteAddress + ':' + s.remotePort); s.destroy(); });
  `,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), `${dst.ip}:8080`);
});

test('ambient pod -> non-ambient pod on the same node: captured outbound, 1 MB intact', async () => {
  const r = await nettool(pod('n1-p1'), 'blob', pod('n1-p2').ip, 9000, 1_000_000);
  assert.equal(r.code, 0, r.stderr);
  const [sent, received] = r.stdout
    .trim()
    .split('\n')
    .map((l) => l.split(' ').slice(1).join(' '));
  assert.equal(received, sent, 'the sink saw exactly the bytes sent');
  const d = await dump('n1');
  const c = d.connections.find((x) => x.dst === `${pod('n1-p2').ip}:9000`);
  assert.ok(c);
  assert.equal(c.bytesSent, 1_000_000);
  assert.equal(c.direction, 'outbound');
});

test('non-ambient pod -> non-ambient pod is never captured', async () => {
  const before1 = (await dump('n1')).connections.length;
  const before2 = (await dump('n2')).connections.length;
  const r = await nettool(pod('n1-p2'), 'send', pod('n2-p2').ip, 8080, 'plain');
  assert.equal(r.code, 0, r.stderr);
  // the server saw the client's own address: nothing in between
  assert.match(r.stdout, new RegExp(`to ${pod('n1-p2').ip.replace(/\./g, '\\.')}\\n`));
  assert.equal((await dump('n1')).connections.length, before1);
  assert.equal((await dump('n2')).connections.length, before2);
});

test('inbound from a non-ambient pod to an ambient pod is captured on the plaintext port with the original port', async () => {
  const r = await nettool(pod('n2-p2'), 'send', pod('n1-p1').ip, 9000, 'x'.repeat(777));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^777 /);
  const d = await dump('n1');
  const c = d.connections.find((x) => x.direction === 'inbound' && x.src.startsWith(`${pod('n2-p2').ip}:`) && x.dst === `${pod('n1-p1').ip}:9000`);
  assert.ok(c, JSON.stringify(d.connections));
  assert.equal(c.via, 'inbound-plaintext');
  assert.equal(c.bytesSent, 777);
  const w = d.workloads.find((x) => x.name === 'n1-p1')!;
  assert.ok(Number(w.redirect!.capturedIn) >= 1);
  assert.ok(Number(w.redirect!.capturedOut) >= 2);
});

test(
  "IPv6 (dual-stack pods): an ambient pod's connect6 to a pod outside the mesh is captured: the bytes arrive through the agent, whose record has the original IPv6 destination, and the app sees that destination as its peer (getpeername6)",
  { skip: SKIP_V6 },
  async () => {
    assert.equal(st.ipFamily, 'dual');
    const src = pod('n1-p1');
    const dst = pod('n2-p2');
    const r = await nettool(src, 'send', v6(dst), 8080, 'ping-v6');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello from [${v6(dst)}]:8080 to ${v6(src)}\nping-v6`);
    const d = await dump('n1');
    const c = d.connections.find((x) => x.direction === 'outbound' && x.dst === `[${v6(dst)}]:8080` && x.state === 'closed');
    assert.ok(c, `outbound IPv6 record on n1: ${JSON.stringify(d.connections)}`);
    assert.equal(c.pod, 'ambient-demo/n1-p1');
    assert.ok(c.src.startsWith(`[${v6(src)}]:`), c.src);
    assert.equal(c.bytesSent, 'ping-v6'.length);
    const peer = await runInPod(src, [
      process.execPath,
      '-e',
      `const s = require('net').connect(8080, '${v6(dst)}', () => { console.log(s.remoteAddress + ' ' + s.remotePort); s.destroy(); });`,
    ]);
    assert.equal(peer.code, 0, peer.stderr);
    assert.equal(peer.stdout.trim(), `${v6(dst)} 8080`);
  },
);

test(
  "IPv6 (dual-stack pods): inbound from outside the mesh is steered by sk_lookup to the agent's IPv6 listener (15006) with the original port",
  { skip: SKIP_V6 },
  async () => {
    const before = Number((await dump('n1')).workloads.find((x) => x.name === 'n1-p1')!.redirect!.capturedIn);
    await checkIpv6InboundPlaintext(
      (text) => nettool(pod('n2-p2'), 'send', v6(pod('n1-p1')), 9000, text),
      () => dump('n1'),
      { v6: v6(pod('n2-p2')) },
      { name: 'n1-p1', v6: v6(pod('n1-p1')) },
      before,
    );
  },
);

test(
  'IPv6 (dual-stack pods): a pod whose workload entry has only its IPv4 address is refused at connect() for IPv6 (EPERM, counted out_ipv6), never passed around the mesh; with the address back it is captured again',
  { skip: SKIP_V6 },
  async () => {
    const file = st.workloads;
    const good = fs.readFileSync(file, 'utf8');
    const a = pod('n1-p1');
    const refusedV6 = async (): Promise<number> => Number((await dump('n1')).datapath?.refused?.out_ipv6 ?? 0);
    try {
      const doc = JSON.parse(good) as { pods: Array<Record<string, unknown>> };
      const entry = doc.pods.find((p) => p.name === 'n1-p1')!;
      entry.ip = a.ip;
      delete entry.ips;
      fs.writeFileSync(file + '.tmp', JSON.stringify(doc));
      fs.renameSync(file + '.tmp', file);
      await until('n1-p1 known with its IPv4 address only', async () => {
        const w = (await dump('n1')).workloads.find((x) => x.name === 'n1-p1');
        return w?.state === 'enrolled' && w.ips.length === 1 && w.ips[0] === a.ip;
      });
      const n0 = await refusedV6();
      const r = await nettool(a, 'probe', v6(pod('n2-p2')), 8080);
      assert.equal(r.code, 1);
      assert.equal(r.stdout.trim(), 'EPERM', 'native IPv6 out of a pod the mesh knows no IPv6 address of: refused at connect()');
      assert.equal(await refusedV6(), n0 + 1, 'counted: out_ipv6');
      const r4 = await nettool(a, 'send', pod('n2-p2').ip, 8080, 'v4-still');
      assert.equal(r4.code, 0, r4.stderr);
      assert.match(r4.stdout, /v4-still$/);
    } finally {
      fs.writeFileSync(file + '.tmp', good);
      fs.renameSync(file + '.tmp', file);
    }
    await until('n1-p1 known with both addresses again', async () => (await dump('n1')).workloads.find((x) => x.name === 'n1-p1')?.ips.length === 2);
    const again = await until('IPv6 captured again', async () => {
      const x = await nettool(a, 'send', v6(pod('n2-p2')), 8080, 'v6-back');
      return x.code === 0 && x;
    });
    assert.match(again.stdout, /v6-back$/);
    assert.ok((await dump('n1')).connections.some((c) => c.dst === `[${v6(pod('n2-p2'))}]:8080` && c.bytesSent === 'v6-back'.length));
  },
);

test('traffic from the node itself (kubelet probes) is not captured', async () => {
  const n1 = node('n1');
  const out = execFileSync('nsenter', [`--net=${n1.netnsPath}`, '--', process.execPath, NETTOOL, 'send', pod('n1-p1').ip, '8080', 'probe'], {
    encoding: 'utf8',
  });
  assert.match(out, new RegExp(`to ${n1.ip.replace(/\./g, '\\.')}\\n`), 'the app saw the node address directly');
  const d = await dump('n1');
  assert.ok(!d.connections.some((x) => x.src.startsWith(`${n1.ip}:`)));
  assert.ok(Number(d.workloads.find((x) => x.name === 'n1-p1')!.redirect!.bypassIn) >= 1);
});

test('bpftool shows the pinned maps with field names', () => {
  const dir = `${node('n1').bpffsDir}/maps`;
  // bpftool -j prints raw bytes plus, thanks to BTF, a "formatted" view with field names
  // per-pod state is keyed by the pod's cgroup id (its datapath identity), the IP only names its owner
  const cg = fs.statSync(pod('n1-p1').cgroup, { bigint: true }).ino;
  const stats = (
    JSON.parse(execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', `${dir}/amb_pod_stats`], { encoding: 'utf8' })) as Array<{
      formatted: { key: number; value: Record<string, number> };
    }>
  ).map((x) => x.formatted);
  const e = stats.find((x) => BigInt(x.key) === cg);
  assert.ok(e, 'n1-p1 has counters');
  for (const f of ['captured_out', 'refused_out', 'denied_out', 'captured_in', 'hbone_in', 'refused_in', 'denied_in', 'bypass_in'])
    assert.equal(typeof e.value[f], 'number', f);
  const pods = (
    JSON.parse(execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', `${dir}/amb_pods`], { encoding: 'utf8' })) as Array<{
      formatted: { key: { addr: number[] }; value: { cgroup_id: number; flags: number } };
    }>
  ).map((x) => x.formatted);
  const owner = pods.find((x) => x.key.addr.slice(0, 4).join('.') === pod('n1-p1').ip);
  assert.ok(owner, 'n1-p1 owns its IP');
  assert.equal(BigInt(owner.value.cgroup_id), cg, 'amb_pods names the owning pod by cgroup id');
  const text = execFileSync('bpftool', ['map', 'dump', 'pinned', `${dir}/amb_pods`], { encoding: 'utf8' });
  assert.match(text, /"cgroup_id": \d+/);
  assert.match(text, /"exempt_src": \{/);
  const counters = execFileSync('bpftool', ['map', 'dump', 'pinned', `${dir}/amb_counters`], { encoding: 'utf8' });
  assert.match(counters, /"key": 7/, 'the refusal counters by reason are readable too');
});

/** A process in the pod holding one connection open (writes a tick every 20 ms); resolves once connected. */
async function holdFrom(
  p: ReturnType<typeof pod>,
  ip: string,
  port: number,
): Promise<{ proc: ChildProcess; exit: Promise<{ code: number | null; out: string }> }> {
  const proc = await startInPod(p, [
    process.execPath,
    '-e',
    `
    const s = require('net').connect(${port}, '${ip}', () => { process.stdout.write('listening\\n'); });
    let n = 0; s.on('data', (d) => { n += d.length; });
    s.on('error', (e) => { console.log('error', e.code); process.exit(3); });
    const t = setInterval(() => s.write('tick\\n'), 20);
    process.on('SIGTERM', () => { clearInterval(t); s.end(); s.on('close', () => { console.log('got', n); process.exit(0); }); });
  `,
  ]);
  let out = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  const exit = new Promise<{ code: number | null; out: string }>((r) => proc.on('exit', (code) => r({ code, out })));
  return { proc, exit };
}

test('enroll and unenroll while traffic runs: a connection opened before enrollment is reset, one opened while enrolled survives unenroll, new ones follow the label', async () => {
  const p2 = pod('n1-p2');
  const target = pod('n2-p2');
  // a long-lived connection from the plain pod, opened outside the mesh, before enrollment
  const before = await holdFrom(p2, target.ip, 8080);
  let during: Awaited<ReturnType<typeof holdFrom>> | null = null;
  try {
    const t0 = Date.now();
    await setEnrollment('n1-p2', true);
    await until('n1-p2 enrolled', async () => (await dump('n1')).workloads.find((w) => w.name === 'n1-p2' && w.state === 'enrolled'));
    // nothing that predates enrollment stays outside the mesh
    // (scaled: under the 6.1 VM's TCG emulation the reset app needs longer to report and exit)
    const reset = await Promise.race([before.exit, new Promise<null>((r) => setTimeout(() => r(null), 3000 * TIME_SCALE))]);
    assert.ok(reset, 'the pre-enrollment connection was reset at enrollment');
    assert.equal(reset.code, 3, reset.out);
    assert.match(reset.out, /error (ECONNABORTED|ECONNRESET)/);
    const w = (await dump('n1')).workloads.find((x) => x.name === 'n1-p2') as { preexistingReset?: number };
    assert.equal(w.preexistingReset, 1, 'config_dump counts it');
    const r = await nettool(p2, 'send', target.ip, 8080, 'after-enroll');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(
      (await dump('n1')).connections.some((c) => c.pod === 'plain/n1-p2' && c.dst === `${target.ip}:8080`),
      `captured after enroll (${Date.now() - t0} ms)`,
    );
    // a captured connection held through the unenroll
    during = await holdFrom(p2, target.ip, 8080);

    await setEnrollment('n1-p2', false);
    await until('n1-p2 unenrolled', async () => (await dump('n1')).workloads.find((w) => w.name === 'n1-p2' && w.state === 'not-enrolled'));
    const n = (await dump('n1')).connections.length;
    const r2 = await nettool(p2, 'send', target.ip, 8080, 'after-unenroll');
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal((await dump('n1')).connections.length, n, 'not captured after unenroll');
    assert.equal(fs.existsSync(`${node('n1').bpffsDir}/pods/plain_n1-p2`), false, 'its links are gone');
  } finally {
    before.proc.kill('SIGKILL');
    during?.proc.kill('SIGTERM');
    // a failure above must not leave n1-p2 (outside the mesh in the tests below) enrolled (after a pass: no change)
    await setEnrollment('n1-p2', false);
  }
  const end = await during!.exit;
  assert.equal(end.code, 0, `the connection opened while enrolled stayed up through the unenroll: ${end.out}`);
});

test('a malformed workload entry is named, the others are still served, the last good state is kept', async () => {
  const file = st.workloads;
  const good = fs.readFileSync(file, 'utf8');
  try {
    const doc = JSON.parse(good) as { pods: Array<Record<string, unknown>> };
    const idx = doc.pods.findIndex((p) => p.name === 'n1-p1');
    doc.pods[idx]!.ip = 'not-an-ip';
    doc.pods.push({ name: 'Bad_Name', namespace: 'plain', ip: '10.244.1.99' });
    fs.writeFileSync(file + '.tmp', JSON.stringify(doc));
    fs.renameSync(file + '.tmp', file);
    const d = await until('entry errors reported', async () => {
      const x = await dump('n1');
      return x.workloadSource.entryErrors.length >= 2 && x;
    });
    const e0 = d.workloadSource.entryErrors.find((e) => e.entry.includes('ambient-demo/n1-p1'));
    assert.ok(e0, JSON.stringify(d.workloadSource.entryErrors));
    assert.match(e0.message, /\bip: "not-an-ip" is not an IP address/);
    assert.ok(d.workloadSource.entryErrors.some((e) => /\bname: "Bad_Name" is not a DNS-1123 subdomain/.test(e.message)));
    assert.ok(d.counters.workload_entry_invalid! >= 2);
    // n1-p1 keeps its last good version and stays enrolled; traffic still captured
    assert.equal(d.workloads.find((w) => w.name === 'n1-p1')!.state, 'enrolled');
    const r = await nettool(pod('n1-p1'), 'send', pod('n2-p2').ip, 8080, 'still-served');
    assert.equal(r.code, 0);
    assert.ok((await dump('n1')).connections.some((c) => c.pod === 'ambient-demo/n1-p1' && c.dst === `${pod('n2-p2').ip}:8080`));
  } finally {
    fs.writeFileSync(file + '.tmp', good);
    fs.renameSync(file + '.tmp', file);
  }
  await until('errors cleared', async () => (await dump('n1')).workloadSource.entryErrors.length === 0);
});

test('agent killed (SIGKILL): ambient pods fail closed, others unaffected; a new agent adopts the pinned state', async () => {
  await stopAgent('n1', 'SIGKILL');
  const out = await nettool(pod('n1-p1'), 'probe', pod('n2-p2').ip, 8080);
  assert.equal(out.code, 1);
  assert.equal(out.stdout.trim(), 'ECONNREFUSED', 'outbound from the ambient pod is refused, not sent around the agent');
  const inb = await nettool(pod('n2-p2'), 'probe', pod('n1-p1').ip, 8080);
  assert.equal(inb.stdout.trim(), 'ECONNREFUSED', 'inbound to the ambient pod is refused');
  const plain = await nettool(pod('n1-p2'), 'send', pod('n2-p2').ip, 8080, 'unaffected');
  assert.equal(plain.code, 0, 'non-ambient pod unaffected');
  if (DUAL) {
    // dual-stack pods: IPv6 fails closed both ways too, and the pod outside the mesh keeps its IPv6
    const out6 = await nettool(pod('n1-p1'), 'probe', v6(pod('n2-p2')), 8080);
    assert.equal(out6.code, 1);
    assert.equal(out6.stdout.trim(), 'ECONNREFUSED', 'IPv6 outbound from the ambient pod is refused, not sent around the agent');
    const in6 = await nettool(pod('n2-p2'), 'probe', v6(pod('n1-p1')), 8080);
    assert.equal(in6.stdout.trim(), 'ECONNREFUSED', 'IPv6 inbound to the ambient pod is refused');
    const plain6 = await nettool(pod('n1-p2'), 'send', v6(pod('n2-p2')), 8080, 'unaffected');
    assert.equal(plain6.code, 0, 'non-ambient pod unaffected over IPv6');
    assert.ok(plain6.stdout.includes(`to ${v6(pod('n1-p2'))}\n`), 'and not captured');
  }
  const stats = JSON.parse(
    execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', `${node('n1').bpffsDir}/maps/amb_pod_stats`], { encoding: 'utf8' }),
  ) as Array<{ formatted: { value: Record<string, number> } }>;
  assert.ok(
    stats.some((s) => s.formatted.value.refused_out! >= 1 && s.formatted.value.refused_in! >= 1),
    'refusals counted in BPF',
  );

  await startAgent('n1');
  await waitAgentReady('n1');
  const again = await nettool(pod('n1-p1'), 'send', pod('n2-p2').ip, 8080, 'back');
  assert.equal(again.code, 0, again.stderr);
  assert.ok((await dump('n1')).connections.some((c) => c.dst === `${pod('n2-p2').ip}:8080`));
});

test('a kernel without a needed feature: start-up fails with an error naming it', () => {
  const r = spawnSync(
    'nsenter',
    [
      `--net=${node('n2').netnsPath}`,
      '--',
      process.execPath,
      CLI,
      'agent',
      '--config',
      node('n2').config,
      '--admin-port',
      '15999',
      '--bpffs',
      '/sys/fs/bpf/ambientd-sandbox/featuretest',
    ],
    {
      encoding: 'utf8',
      env: { ...process.env, AMBIENTD_DISABLE_FEATURES: 'sk_lookup' },
      timeout: 20_000 * TIME_SCALE,
    },
  );
  assert.equal(r.status, 1, `status ${r.status} (signal ${r.signal}, ${r.error?.message ?? 'no spawn error'}): ${r.stderr}`);
  assert.match(r.stderr, /KERNEL_FEATURE_MISSING/);
  assert.match(r.stderr, /program type sk_lookup \(Linux 5\.9\+\)/);
  assert.match(r.stderr, /hint: /);
  assert.equal(fs.existsSync('/sys/fs/bpf/ambientd-sandbox/featuretest/maps'), false, 'nothing was loaded');
});

test('`ambientd --help` and `agent --help` describe the commands', () => {
  const h = execFileSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
  for (const c of ['agent', 'sandbox up', 'sandbox exec', 'demo', 'inspect', 'cleanup']) assert.ok(h.includes(c), c);
  const a = execFileSync(process.execPath, [CLI, 'agent', '--help'], { encoding: 'utf8' });
  assert.match(a, /--workloads PATH/);
  const bad = spawnSync(process.execPath, [CLI, 'agent', '--bogus'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /USAGE: .*--bogus/);
});
