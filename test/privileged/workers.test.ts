// The data plane on N worker threads (docs/WORKERS.md), on real pods with
// two workers per agent: the kernel spreads connections over every worker
// (each pod listener is an SO_REUSEPORT group), metrics stay exact across
// them, a policy change reaches every worker, a killed worker is replaced
// without the pod ever being uncaptured, and a restart hands over every
// worker's sockets. Each claim is attacked where it can break: the worker
// that holds connections is the one killed, the connections a policy must
// close are spread over both, the figures are compared to the bytes sent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { renderAgentConfig, restartAgent, sandboxApply, sandboxUp, type SandboxState } from '../../tools/sandbox/index.js';
import { nettoolServer, runInPod, type PodRef } from '../../tools/sandbox/podproc.js';
import { podListeners, sandboxView, tearDown, until } from '../helpers/sandbox.js';
import { holdTicking, type HeldConnection } from '../helpers/peers.js';
import { httpInNetns } from '../../src/util/netns-http.js';
import type { ConfigDump } from '../../src/agent/index.js';

let st: SandboxState;
const procs: ChildProcess[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-workers-'));
const WORKERS = 2;
const ECHO = 8090;

type Dump = Pick<ConfigDump, 'workloads' | 'connections' | 'counters' | 'handover' | 'workers' | 'policies'>;
const { pod, node, dump } = sandboxView<Dump>(() => st);

interface WorkerInfo {
  index: number;
  threadId: number | null;
  running: boolean;
  served: number;
  open: number;
  restarts: number;
  listeners: number;
}
async function workers(n: string): Promise<WorkerInfo[]> {
  const r = await httpInNetns(node(n).netnsPath, '127.0.0.1', 15000, '/workers');
  assert.equal(r.status, 200, r.body);
  return (JSON.parse(r.body) as { workers: WorkerInfo[] }).workers;
}
async function admin(n: string, method: string, p: string): Promise<{ status: number; body: string }> {
  return httpInNetns(node(n).netnsPath, '127.0.0.1', 15000, p, method);
}

/** Every sample of a metric whose labels include `labels`, summed (all label sets). */
async function metricSum(n: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const r = await httpInNetns(node(n).netnsPath, '127.0.0.1', 15020, '/metrics');
  let sum = 0;
  for (const line of r.body.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.split(' ').pop());
  }
  return sum;
}

/**
 * `count` connections from `from` to host:ECHO (an echo server), 8 at once:
 * connection i sends 100+i bytes, reads them back, closes. Returns the bytes
 * sent in all (each came back).
 */
async function echoBurst(from: PodRef, host: string, count: number): Promise<number> {
  const r = await runInPod(
    from,
    [
      process.execPath,
      '-e',
      `
      const net = require('net');
      let next = 0, done = 0, bytes = 0, failed = 0;
      function one() {
        if (next >= ${count}) return;
        const i = next++;
        const payload = Buffer.alloc(100 + i, 97 + (i % 26));
        let got = 0;
        const s = net.connect(${ECHO}, '${host}', () => s.write(payload));
        s.on('data', (c) => { got += c.length; if (got >= payload.length) s.end(); });
        s.setTimeout(5000, () => s.destroy(Object.assign(new Error('no echo in 5 s'), { code: 'TIMEOUT' })));
        s.on('error', (e) => { failed++; console.error('conn', i, e.code); });
        s.on('close', () => { if (got === payload.length) bytes += payload.length; else failed++; done++; if (done === ${count}) finish(); else one(); });
      }
      function finish() { console.log(JSON.stringify({ bytes, failed })); process.exit(failed ? 1 : 0); }
      for (let k = 0; k < 8; k++) one();
    `,
    ],
    { timeoutMs: 60_000 },
  );
  assert.equal(r.code, 0, `echo burst ${from.name} -> ${host}: ${r.stdout} ${r.stderr}`);
  return (JSON.parse(r.stdout.trim()) as { bytes: number }).bytes;
}

const holds: HeldConnection[] = [];
async function holdMany(from: PodRef, host: string, port: number, n: number): Promise<HeldConnection[]> {
  const out: HeldConnection[] = [];
  for (let i = 0; i < n; i++) out.push(await holdTicking(from, host, port, procs));
  holds.push(...out);
  return out;
}
const exited = (h: HeldConnection, ms: number): Promise<boolean> =>
  Promise.race([h.exit.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

before(async () => {
  st = await sandboxUp({ nodes: 2, pods: 2, agents: true, drainTimeout: '30s', agentSettings: { workers: WORKERS } });
  for (const p of st.pods) {
    procs.push(await nettoolServer(p, 'serve', 8080, '--greet'));
    procs.push(await nettoolServer(p, 'serve', ECHO));
  }
});

after(() => tearDown(procs, tmp));

test('each agent runs the configured workers, each serving its own socket of every listener of the enrolled pod', async () => {
  for (const n of ['n1', 'n2']) {
    const w = await workers(n);
    assert.equal(w.length, WORKERS);
    for (const x of w) {
      assert.equal(x.running, true);
      assert.equal(x.listeners, podListeners(pod(`${n}-p1`)), `worker ${x.index} of ${n} serves one socket of each listener`);
    }
    assert.equal(new Set(w.map((x) => x.threadId)).size, WORKERS, 'one thread each');
    assert.equal(await metricSum(n, 'ambientd_workers'), WORKERS);
    const d = await dump(n);
    assert.equal(d.workers!.workers, WORKERS);
    assert.equal(d.workers!.from, 'setting');
  }
});

test('connections spread over the workers (outbound and inbound plaintext), and the metrics are exact: opened, closed and bytes summed over workers', async () => {
  const a = pod('n1-p1'); // ambient
  const plain = pod('n2-p2'); // outside the mesh
  const before1 = await workers('n1');
  const m0 = {
    srcOpened: await metricSum('n1', 'istio_tcp_connections_opened_total', { reporter: 'source' }),
    srcClosed: await metricSum('n1', 'istio_tcp_connections_closed_total', { reporter: 'source' }),
    srcSent: await metricSum('n1', 'istio_tcp_sent_bytes_total', { reporter: 'source' }),
    srcRecv: await metricSum('n1', 'istio_tcp_received_bytes_total', { reporter: 'source' }),
    dstOpened: await metricSum('n1', 'istio_tcp_connections_opened_total', { reporter: 'destination' }),
    dstSent: await metricSum('n1', 'istio_tcp_sent_bytes_total', { reporter: 'destination' }),
  };
  const N = 40;
  // outbound: captured at n1-p1's connect(), passthrough to a pod outside the mesh
  const outBytes = await echoBurst(a, plain.ip, N);
  // inbound plaintext: steered by sk_lookup into n1-p1's 15006 group
  const inBytes = await echoBurst(plain, a.ip, N);
  const after1 = await until('every record reached the main thread', async () => {
    const w = await workers('n1');
    return w.reduce((s, x) => s + x.served, 0) - before1.reduce((s, x) => s + x.served, 0) >= 2 * N && w.every((x) => x.open === 0) ? w : undefined;
  });
  const served = after1.map((x, i) => x.served - before1[i]!.served);
  assert.equal(
    served.reduce((s, x) => s + x, 0),
    2 * N,
    `every connection was served exactly once: ${served.join(', ')}`,
  );
  for (const [i, s] of served.entries()) assert.ok(s > 0, `worker ${i} served none of ${2 * N}: ${served.join(', ')}`);
  const sum = async (name: string, reporter: string): Promise<number> => metricSum('n1', name, { reporter });
  assert.equal((await sum('istio_tcp_connections_opened_total', 'source')) - m0.srcOpened, N);
  assert.equal((await sum('istio_tcp_connections_closed_total', 'source')) - m0.srcClosed, N);
  assert.equal((await sum('istio_tcp_sent_bytes_total', 'source')) - m0.srcSent, outBytes);
  assert.equal((await sum('istio_tcp_received_bytes_total', 'source')) - m0.srcRecv, outBytes, 'echoed back');
  assert.equal((await sum('istio_tcp_connections_opened_total', 'destination')) - m0.dstOpened, N);
  assert.equal((await sum('istio_tcp_sent_bytes_total', 'destination')) - m0.dstSent, inBytes);
  assert.equal(
    await metricSum('n1', 'ambientd_worker_connections_total'),
    after1.reduce((s, x) => s + x.served, 0),
  );
});

test('a worker killed while it holds connections is replaced: its connections are lost and counted, the others live on, and the pod is never uncaptured', async () => {
  const a = pod('n1-p1');
  const plain = pod('n2-p2');
  const held = await holdMany(plain, a.ip, 8080, 12);
  const w0 = await until('both workers hold some', async () => {
    const w = await workers('n1');
    return w.reduce((s, x) => s + x.open, 0) === held.length && w.every((x) => x.open > 0) ? w : undefined;
  });
  const onVictim = w0[0]!.open;
  const d0 = await dump('n1');
  const lost0 = d0.counters.worker_connections_lost ?? 0;
  const r = await admin('n1', 'POST', '/workers/kill?index=0');
  assert.equal(r.status, 200, r.body);
  // at once, while worker 0 is being replaced: new connections are still captured (queued on its socket, kept by the main thread)
  const bytes = await echoBurst(plain, a.ip, 20);
  assert.ok(bytes > 0);
  const replaced = await until('worker 0 replaced', async () => {
    const w = await workers('n1');
    return w[0]!.running && w[0]!.restarts === 1 && w[0]!.threadId !== w0[0]!.threadId ? w : undefined;
  });
  assert.equal(replaced[1]!.restarts, 0);
  // exactly the victim's connections ended
  await new Promise((res) => setTimeout(res, 500));
  const ended = (await Promise.all(held.map((h) => exited(h, 50)))).filter(Boolean).length;
  assert.equal(ended, onVictim, `the ${onVictim} connections of worker 0 ended, the others live`);
  const d = await dump('n1');
  assert.equal((d.counters.worker_connections_lost ?? 0) - lost0, onVictim);
  assert.equal(d.counters.worker_died, 1);
  assert.equal(await metricSum('n1', 'ambientd_worker_restarts_total', { worker: '0' }), 1);
  // every one of the 20 went through the agent (a record each), none around it
  const recs = d.connections.filter((c) => c.dst === `${a.ip}:${ECHO}` && c.direction === 'inbound');
  assert.ok(recs.length >= 20, `records of the connections made during the replacement: ${recs.length}`);
  // the replacement serves its share again
  const s0 = replaced[0]!.served;
  await echoBurst(plain, a.ip, 20);
  const w2 = await workers('n1');
  assert.ok(w2[0]!.served > s0, `the new worker 0 serves: ${w2[0]!.served} vs ${s0}`);
  for (const h of held) h.proc.kill('SIGKILL');
});

test('a restart hands over every worker\u2019s socket of every listener; the connections the old agent holds live on; the new workers serve', async () => {
  const a = pod('n1-p1');
  const plain = pod('n2-p2');
  const held = await holdMany(plain, a.ip, 8080, 4);
  await until('held', async () => ((await workers('n1')).reduce((s, x) => s + x.open, 0) >= 4 ? true : undefined));
  await restartAgent('n1');
  const d = await dump('n1');
  assert.equal(
    d.handover.adopted,
    podListeners(a) * WORKERS + 3,
    `every socket of each group (${podListeners(a)} listeners x ${WORKERS} workers) and the 3 node ports`,
  );
  assert.deepEqual(d.handover.rejected, []);
  for (const h of held) assert.equal(await exited(h, 200), false, 'a connection held by the old agent lives on');
  const before1 = await workers('n1');
  await echoBurst(plain, a.ip, 30);
  const w = await workers('n1');
  for (const [i, x] of w.entries()) assert.ok(x.served - before1[i]!.served > 0, `new worker ${i} serves its inherited socket`);
  for (const h of held) h.proc.kill('SIGKILL');
});

test('restarts that change the worker count (2 -> 1 -> 0 -> 2): every socket of each group is carried and served, none closed or left unserved', async () => {
  const a = pod('n1-p1');
  const plain = pod('n2-p2');
  const n1 = st.nodes.find((x) => x.name === 'n1')!;
  try {
    for (const to of [1, 0, 2]) {
      fs.writeFileSync(n1.config, renderAgentConfig({ ...st, agentSettings: { workers: to } }, n1));
      await restartAgent('n1');
      const d = await dump('n1');
      // the group had 2 sockets from the start: each successor takes both, whatever its own count
      assert.equal(d.handover.adopted, podListeners(a) * WORKERS + 3, `-> workers ${to}`);
      assert.deepEqual(d.handover.rejected, []);
      assert.equal((await workers('n1')).length, to);
      // a socket nobody accepts on would hang about half of these (each echo has 5 s)
      assert.ok((await echoBurst(plain, a.ip, 40)) > 0, `-> workers ${to}: every connection served`);
      assert.ok((await echoBurst(a, plain.ip, 40)) > 0, `-> workers ${to}: outbound too`);
    }
  } finally {
    fs.writeFileSync(n1.config, renderAgentConfig({ ...st, agentSettings: { workers: WORKERS } }, n1));
  }
});

test('a policy change reaches every worker: live connections spread over both are all closed, each counted', async () => {
  const a = pod('n1-p1');
  const plain = pod('n2-p2');
  const held = await holdMany(plain, a.ip, 8080, 12);
  await until('both workers hold some', async () => {
    const w = await workers('n1');
    return w.reduce((s, x) => s + x.open, 0) === held.length && w.every((x) => x.open > 0) ? true : undefined;
  });
  const revoked0 = (await dump('n1')).counters.policy_revoked ?? 0;
  const f = path.join(tmp, 'deny.yaml');
  fs.writeFileSync(
    f,
    `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-plain-to-n1-p1, namespace: ambient-demo }
spec:
  selector: { matchLabels: { app: n1-p1 } }
  action: DENY
  rules: [ { from: [ { source: { ipBlocks: [ "${plain.ip}/32" ] } } ] } ]
`,
  );
  await sandboxApply(f);
  for (const h of held) assert.ok(await exited(h, 5000), 'closed by the policy change, whichever worker held it');
  await until('every revocation counted', async () => ((await dump('n1')).counters.policy_revoked ?? 0) - revoked0 === held.length || undefined);
  const w = await workers('n1');
  assert.ok(
    w.every((x) => x.open === 0),
    JSON.stringify(w),
  );
});
