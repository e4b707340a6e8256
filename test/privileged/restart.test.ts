// Restarts that drop nothing: a new agent takes the listening sockets of the
// running one over the hand-over socket (SCM_RIGHTS), the old one drains its
// established connections; SIGTERM without a successor drains within the
// deadline and refuses new connections (fail closed); a broken or foreign
// hand-over peer never takes the running agent down.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  sandboxUp,
  startAgent,
  restartAgent,
  waitAgentReady,
  isProcessAlive,
  sandboxStatus,
  setEnrollment,
  type SandboxState,
} from '../../tools/sandbox/index.js';
import { nettool, nettoolServer, runInPod, startInPod } from '../../tools/sandbox/podproc.js';
import { podSockets, sandboxView, until, tearDown } from '../helpers/sandbox.js';
import { ROOT } from '../helpers/paths.js';
import { httpInNetns } from '../../src/util/netns-http.js';
import { captureNodeLink, readTcpPackets } from '../../tools/sandbox/pcap.js';
import { errnoName, loadNative } from '../../src/datapath/native.js';
import { requestHandover } from '../../src/lifecycle/handover.js';
import type { ConfigDump } from '../../src/agent/index.js';

let st: SandboxState;
const procs: ChildProcess[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-restart-'));

type Dump = Pick<ConfigDump, 'pid' | 'workloads' | 'datapath' | 'connections' | 'counters' | 'handover'>;
const { pod, node, dump } = sandboxView<Dump>(() => st);
const agentPid = (n: string): number => sandboxStatus().nodes.find((x) => x.name === n)!.agentPid!;
const handoverSocket = (n: string): string => path.join(path.dirname(node(n).config), 'handover.sock');
const FAKE_AGENT = path.join(ROOT, 'dist', 'test', 'helpers', 'fake-agent', 'cli.js');

/** Runs the fake agent (test/helpers/fake-agent) to completion. */
function fakeAgent(args: string[], input = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [FAKE_AGENT, 'agent', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('exit', (code) => resolve({ code, stdout, stderr }));
    c.stdin.end(input);
  });
}

/** What the agents of both nodes logged that explains a lost connection (warnings, errors, drains, resets), for failure messages. */
function notableAgentLines(): string {
  return ['n1', 'n2']
    .map((n) => {
      let text = '';
      try {
        text = fs.readFileSync(node(n).log, 'utf8');
      } catch {
        return `${n}: (no agent log)`;
      }
      const lines = text.split('\n').filter((l) => /warn|error|drain|reset|exit|goaway|starting agent/i.test(l));
      return `--- ${n} agent log (notable lines, last 40):\n${lines.slice(-40).join('\n')}`;
    })
    .join('\n');
}

const LINK_PROG: Record<string, string> = {
  sk_lookup: 'amb_sk_lookup',
  sockops: 'amb_sockops',
  getpeername4: 'amb_getpeername4',
  getpeername6: 'amb_getpeername6',
  connect4: 'amb_connect4',
  connect6: 'amb_connect6',
  bind4: 'amb_bind4',
  bind6: 'amb_bind6',
};

/** Every pinned link of a pod runs the given agent's program (by id). */
function assertLinksRun(podName: string, programs: NonNullable<Dump['datapath']>['programs']): void {
  const native = loadNative();
  const p = pod(podName);
  const dir = path.join(node(p.node).bpffsDir, 'pods', `${p.namespace}_${p.name}`);
  const links = fs.readdirSync(dir);
  assert.ok(links.includes('connect4') && links.includes('connect6') && links.includes('sk_lookup'), `links of ${podName}: ${links.join(', ')}`);
  for (const l of links) {
    const fd = native.objGet(path.join(dir, l));
    assert.ok(fd >= 0, l);
    const li = native.linkInfo(fd);
    native.closeFd(fd);
    assert.ok(typeof li !== 'number', l);
    // sk_lookup: the loopback-aware variant where the kernel took it (client-address preservation)
    const name = l === 'sk_lookup' && programs['amb_sk_lookup_lo'] ? 'amb_sk_lookup_lo' : LINK_PROG[l]!;
    assert.equal(li.progId, programs[name]!.id, `${podName} ${l} runs the new agent's ${name}`);
  }
}

before(async () => {
  st = await sandboxUp({ nodes: 2, pods: 2, agents: true, drainTimeout: '60s' });
  procs.push(await startInPod(pod('n2-p1'), ['iperf3', '-s', '--forceflush', '-p', '5201']));
  procs.push(await nettoolServer(pod('n2-p1'), 'serve', 7000));
  procs.push(await nettoolServer(pod('n1-p1'), 'serve', 7000));
});

after(() => tearDown(procs, tmp));

test('rolling restart of both agents under load: the stream, the held connections and 200 new connections/s lose nothing, nothing in clear', async () => {
  const a = pod('n1-p1');
  const b = pod('n2-p1');
  const plain = pod('n1-p2'); // not enrolled: its traffic reaches n2-p1 in plaintext, captured by n2's inbound listener
  const oldPids = { n1: agentPid('n1'), n2: agentPid('n2') };

  const pcap = path.join(tmp, 'link.pcap');
  const td = await captureNodeLink(pcap, 'n1', 200);
  procs.push({ kill: td.kill } as unknown as ChildProcess);

  const iperf = runInPod(a, ['iperf3', '-c', b.ip, '-p', '5201', '-t', '14', '-J'], { timeoutMs: 60_000 });
  const hold = nettool(a, 'hold', b.ip, 7000, 14);
  const holdSameNode = nettool(pod('n1-p1'), 'hold', a.ip, 7000, 14); // own pod IP: inbound capture on n1
  const holdPlain = nettool(plain, 'hold', b.ip, 7000, 14);
  const rate = nettool(a, 'rate', b.ip, 7000, 200, 12);
  await new Promise((r) => setTimeout(r, 2500));

  const r1 = await restartAgent('n1');
  const r2 = await restartAgent('n2');
  assert.equal(r1.oldPid, oldPids.n1);
  assert.equal(r2.oldPid, oldPids.n2);

  const [ip, h, hs, hp, rt] = await Promise.all([iperf, hold, holdSameNode, holdPlain, rate]);
  assert.equal(ip.code, 0, `iperf3: ${ip.stdout.slice(-500)} ${ip.stderr}`);
  const j = JSON.parse(ip.stdout) as { error?: string; end: { sum_received: { bytes: number; seconds: number } } };
  assert.equal(j.error, undefined, `iperf3 reported an error (its connections were cut):\n${notableAgentLines()}`);
  assert.ok(j.end.sum_received.seconds >= 13, `the stream ran its 14 s (${j.end.sum_received.seconds} s)`);
  assert.ok(j.end.sum_received.bytes > 100 * 1024 * 1024, `bytes arrived (${j.end.sum_received.bytes})`);
  for (const [name, r] of [
    ['HBONE hold', h],
    ['inbound plaintext hold', hp],
    ['own-pod hold', hs],
  ] as const) {
    assert.equal(r.code, 0, `${name}: ${r.stdout} ${r.stderr}`);
    const x = JSON.parse(r.stdout) as { rounds: number; error: string | null };
    assert.equal(x.error, null, `${name}\n${notableAgentLines()}`);
    assert.ok(x.rounds > 100, `${name}: ${x.rounds} round trips over 14 s`);
  }
  const rr = JSON.parse(rt.stdout) as { attempted: number; ok: number; failed: number; errors: Record<string, number>; windowMs: number };
  assert.equal(rr.failed, 0, `no new connection failed during the restarts: ${rt.stdout}\n${notableAgentLines()}`);
  assert.equal(rr.ok, 2400);

  // the old agents drained and exited by themselves once their connections ended
  await until('old agents exited', () => !isProcessAlive(oldPids.n1) && !isProcessAlive(oldPids.n2), 20_000);
  // and left the hand-over socket to the new agents (the next restart needs it)
  for (const n of ['n1', 'n2']) assert.ok(fs.statSync(handoverSocket(n)).isSocket(), `${n}: hand-over socket in place`);

  // the new agents took every listening socket over (1 enrolled pod x 3 per family + readiness, metrics, admin)
  for (const [n, old] of [
    ['n1', oldPids.n1],
    ['n2', oldPids.n2],
  ] as const) {
    const d = await dump(n);
    assert.equal(d.pid, agentPid(n));
    assert.equal(d.handover.from, old);
    assert.equal(d.handover.adopted, podSockets(pod(`${n}-p1`)) + 3);
    assert.deepEqual(d.handover.rejected, []);
    assert.equal(d.counters.handover_adopted, 1);
    // the adopted pinned links now run this agent's programs (bpf_link_update), same code
    assertLinksRun(`${n}-p1`, d.datapath!.programs);
    assert.equal(d.datapath!.adoptedLinks.upgraded, 0);
  }
  // the stream was carried to its end by the old agents, which reported it to their successors:
  // the new n1 agent's Istio metrics hold its bytes (Prometheus scrapes the new agent now)
  const metrics = (await httpInNetns(node('n1').netnsPath, '127.0.0.1', 15020, '/metrics')).body;
  const sentToB = metrics
    .split('\n')
    .filter(
      (l) =>
        l.startsWith('istio_tcp_sent_bytes_total{') &&
        l.includes('reporter="source"') &&
        l.includes('source_workload="n1-p1"') &&
        l.includes('destination_workload="n2-p1"'),
    )
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
  assert.ok(sentToB >= j.end.sum_received.bytes, `n1's new agent counts the drained stream: ${sentToB} >= ${j.end.sum_received.bytes} bytes`);
  assert.ok((await dump('n1')).handover.recordsImported >= 3, 'records of the drained connections reached the new agent');
  // new connections after the restart went through the new n1 agent
  const after = (await dump('n1')).connections.filter((c) => c.dst === `${b.ip}:7000` && c.via === 'hbone');
  assert.ok(after.length > 100, `the new agent carried the later connections (${after.length})`);

  await new Promise((r) => setTimeout(r, 300));
  await td.stop();
  const pkts = readTcpPackets(pcap).filter((p) => (p.src === a.ip && p.dst === b.ip) || (p.src === b.ip && p.dst === a.ip));
  assert.ok(pkts.length > 1000, `captured the pods' traffic (${pkts.length} packets)`);
  assert.ok(
    pkts.every((p) => p.sport === 15008 || p.dport === 15008),
    `between the enrolled pods, every packet is on 15008; not: ${JSON.stringify(
      pkts
        .filter((p) => p.sport !== 15008 && p.dport !== 15008)
        .slice(0, 5)
        .map((p) => ({ src: `${p.src}:${p.sport}`, dst: `${p.dst}:${p.dport}`, bytes: p.payload.length })),
    )}`,
  );
  assert.equal(Buffer.concat(pkts.map((p) => p.payload)).indexOf('round '), -1, 'no application bytes in clear');
});

test('SIGTERM without a successor: new connections are refused at once, the established one finishes, then the agent exits', async () => {
  const a = pod('n1-p1');
  const b = pod('n2-p1');
  const pid = agentPid('n1');
  const hold = nettool(a, 'hold', b.ip, 7000, 3);
  await new Promise((r) => setTimeout(r, 800));
  process.kill(pid, 'SIGTERM');
  await until('draining', async () => (await nettool(a, 'probe', b.ip, 7000)).code === 1, 5000);
  const probe = await nettool(a, 'probe', b.ip, 7000);
  assert.equal(probe.stdout.trim(), 'ECONNREFUSED', 'fail closed: refused, not sent around the mesh');
  assert.ok(isProcessAlive(pid), 'still serving its established connection');
  const h = await hold;
  assert.equal(h.code, 0, h.stdout);
  await until('agent exited after its last connection', () => !isProcessAlive(pid), 10_000);
  await startAgent('n1');
  await waitAgentReady('n1');
  assert.equal((await nettool(a, 'probe', b.ip, 7000)).code, 0);
});

test('SIGTERM: a connection still open at drainTimeout is reset and the agent exits', async () => {
  const cfgFile = node('n1').config;
  const orig = fs.readFileSync(cfgFile, 'utf8');
  try {
    fs.writeFileSync(cfgFile, YAML.stringify({ ...YAML.parse(orig), drainTimeout: '1500ms' }));
    await restartAgent('n1');
    const pid = agentPid('n1');
    const hold = nettool(pod('n1-p1'), 'hold', pod('n2-p1').ip, 7000, 30);
    await new Promise((r) => setTimeout(r, 800));
    const t0 = Date.now();
    process.kill(pid, 'SIGTERM');
    const h = await hold;
    await until('agent exited', () => !isProcessAlive(pid), 10_000);
    const ms = Date.now() - t0;
    assert.equal(h.code, 1, 'the held connection was cut');
    assert.ok(ms >= 1400 && ms < 8000, `exited after the 1.5 s deadline (${ms} ms)`);
  } finally {
    fs.writeFileSync(cfgFile, orig);
    if (!isProcessAlive(agentPid('n1'))) await startAgent('n1');
    await waitAgentReady('n1');
  }
});

test('a broken or foreign hand-over peer never takes the running agent down', async () => {
  const native = loadNative();
  const sock = handoverSocket('n1');
  const pid = agentPid('n1');
  const a = pod('n1-p1');
  const b = pod('n2-p1');

  // a process that is not an agent (this test runner) is refused before it says anything
  const rejectedBefore = (await dump('n1')).counters.handover_peer_rejected ?? 0;
  const g = native.unixConnect(sock, 2000);
  assert.ok(g >= 0);
  native.sendFds(g, Buffer.from('GET / HTTP/1.1\r\n\r\n'), [], 1000);
  const eof = native.recvFds(g, 64, 2000);
  assert.ok(
    typeof eof === 'number' ? errnoName(eof) === 'ECONNRESET' : eof.data.length === 0,
    `closed without an answer (${typeof eof === 'number' ? errnoName(eof) : eof.data.toString()})`,
  );
  native.closeFd(g);
  await until('refusal counted', async () => ((await dump('n1')).counters.handover_peer_rejected ?? 0) > rejectedBefore);
  // garbage from an agent process: closed
  assert.deepEqual(JSON.parse((await fakeAgent(['raw', sock, 'n1', 'GET / HTTP/1.1'])).stdout), { closed: true });
  // an unknown protocol version is refused with a reason
  const v = JSON.parse((await fakeAgent(['raw', sock, 'n1', 'HELLO 99 $PID n1'])).stdout) as { frame: { error: string } };
  assert.match(v.frame.error, /version 99 not supported/);

  // connection records that are not JSON or not records are counted and dropped
  const importedBefore = (await dump('n1')).handover.recordsImported;
  const invalidBefore = (await dump('n1')).counters.handover_record_invalid ?? 0;
  const versionBefore = (await dump('n1')).counters.handover_record_unknown_version ?? 0;
  const rec = await fakeAgent(['records', sock, 'n1', '{not json', '{"id":1,"state":"open"}']);
  assert.equal(rec.code, 0, rec.stderr);
  await until('bad records counted', async () => ((await dump('n1')).counters.handover_record_invalid ?? 0) >= invalidBefore + 2);
  // the second has no record format version (what an agent from before versioned records sends): counted as such too
  assert.equal((await dump('n1')).counters.handover_record_unknown_version ?? 0, versionBefore + 1);
  assert.equal((await dump('n1')).handover.recordsImported, importedBefore);

  // a successor for another node is refused
  const other = await fakeAgent(['take', sock, 'n2'], 'abort\n');
  assert.match(other.stdout, /serves node n1, not n2/);
  // a successor that takes the sockets but never adopts them (crashes): the old one serves on
  const succ = spawn(process.execPath, [FAKE_AGENT, 'agent', 'take', sock, 'n1'], { stdio: ['pipe', 'pipe', 'inherit'] });
  procs.push(succ);
  const line = await new Promise<string>((r) => succ.stdout!.once('data', (c: Buffer) => r(c.toString())));
  const got = JSON.parse(line) as { size: number; fromPid: number };
  assert.equal(got.size, podSockets(pod('n1-p1')) + 3, "the enrolled pod n1-p1 x 3 per family x workers + the node's 3");
  assert.equal(got.fromPid, pid);
  // while a successor holds the sockets the old agent enrolls nothing (both would bind the new pod's ports)...
  const state = async (): Promise<string | undefined> => (await dump('n1')).workloads.find((w) => w.name === 'n1-p2')?.state;
  await setEnrollment('n1-p2', true);
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(await state(), 'not-enrolled', 'no enrollment during a hand-over');
  succ.stdin!.write('abort\n');
  await until('old agent noticed', async () => ((await dump('n1')).counters.handover_aborted ?? 0) >= 1);
  // ...and catches up once it is aborted
  await until('n1-p2 enrolled after the abort', async () => (await state()) === 'enrolled');
  await setEnrollment('n1-p2', false);
  await until('n1-p2 unenrolled', async () => (await state()) === 'not-enrolled');
  const ok = await nettool(a, 'send', b.ip, 7000, 'still here');
  assert.equal(ok.stdout, 'still here');
  assert.equal(agentPid('n1'), pid);
  assert.ok(isProcessAlive(pid));

  // no agent on a stale socket file: a fresh start, no error
  const stale = path.join(tmp, 'stale.sock');
  fs.writeFileSync(stale, '');
  assert.equal(requestHandover(native, stale, 'n1'), null);
  assert.equal(requestHandover(native, path.join(tmp, 'absent.sock'), 'n1'), null);

  // and real restarts still work afterwards, each leaving the socket to its successor
  for (let i = 0; i < 5; i++) {
    const r = await restartAgent('n1');
    await until('old exited', () => !isProcessAlive(r.oldPid!), 10_000);
    assert.ok(fs.statSync(sock).isSocket(), `restart ${i + 1}: hand-over socket in place`);
  }
  assert.equal((await nettool(a, 'send', b.ip, 7000, 'again')).stdout, 'again');
});

test('upgrade: a new agent with other BPF code swaps it into the pinned links while 200 connections/s flow', async () => {
  // the "new version": the same source built at -O1 (other instructions, so other program tags)
  // (in the node's state directory: an agent run from the image, AMBIENTD_SANDBOX_IMAGE, sees that, not /tmp)
  const variant = path.join(path.dirname(node('n1').config), 'ambient-O1.bpf.o');
  const arch = `/usr/include/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
  const cc = spawn('clang', ['-g', '-O1', '-target', 'bpf', '-Wall', `-I${arch}`, '-c', path.join(ROOT, 'bpf', 'ambient.bpf.c'), '-o', variant], {
    stdio: 'inherit',
  });
  assert.equal(await new Promise((r) => cc.on('exit', r)), 0, 'clang -O1');
  const cfgFile = node('n1').config;
  const orig = fs.readFileSync(cfgFile, 'utf8');
  const before = await dump('n1');
  try {
    fs.writeFileSync(cfgFile, YAML.stringify({ ...YAML.parse(orig), bpfObject: variant }));
    const a = pod('n1-p1');
    const b = pod('n2-p1');
    const rate = nettool(a, 'rate', b.ip, 7000, 200, 6);
    await new Promise((r) => setTimeout(r, 1500));
    const r = await restartAgent('n1');
    const rr = await rate;
    assert.equal(rr.code, 0, `no connection failed during the upgrade: ${rr.stdout}`);
    const d = await dump('n1');
    assert.equal(d.pid, r.newPid);
    const changed = Object.keys(d.datapath!.programs).filter((k) => d.datapath!.programs[k]!.tag !== before.datapath!.programs[k]?.tag);
    assert.ok(changed.length > 0, 'the -O1 build has other program tags');
    assert.ok(d.datapath!.adoptedLinks.upgraded > 0, `links moved to the new code: ${JSON.stringify(d.datapath!.adoptedLinks)}`);
    assertLinksRun('n1-p1', d.datapath!.programs);
    assert.equal((await nettool(a, 'send', b.ip, 7000, 'after upgrade')).stdout, 'after upgrade');
  } finally {
    // back to the tree's build (and its programs in the links)
    fs.writeFileSync(cfgFile, orig);
    await restartAgent('n1');
  }
});
