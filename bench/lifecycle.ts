/**
 * Nothing leaks, nothing balloons (sandbox 2 nodes × 3 pods, n1-p1 -> n2-p1
 * over HBONE unless said otherwise):
 *
 *  (a) detection after a peer agent is SIGKILLed: time from the kill until the
 *      surviving node has no socket of the flow left in its pod (polled every
 *      5 ms), both directions;
 *  (b) detection after a partition (the n2 link taken off the fabric bridge:
 *      no FIN, no RST) with peerTimeout 6 s: time until each side's app saw
 *      its connection end;
 *  (c) a non-reading app: N connections × 8 MiB from n1-p1 into an app on n2
 *      that never reads (N = 10, 100, 300): the destination agent's RSS growth
 *      (after a warm-up), against the documented bound (memoryBound), and the
 *      machine's TCP memory (/proc/net/sockstat);
 *  (d) the cost of keepalive and PING: agent CPU over 30 s with 10 000 idle
 *      connections, at peerTimeout 30 s (the default) and 4 s, against 1 h
 *      (liveness practically off);
 *  (e) soak (--soak-seconds, 600 by default): 200 new connections/s, 100
 *      held connections (each lives 30-90 s, then is replaced), a random
 *      node's agent restarted (hand-over) every minute; every 10 s the fds and
 *      RSS of every agent process of each node, and the live heap of the
 *      serving agents after a forced GC (POST /debug/heap); slopes after a
 *      2-minute warm-up (target ≈ 0).
 *
 * Returns LifecycleResults (bench/render/lifecycle.ts writes section 11).
 *
 *   node dist/bench/lifecycle.js [--quick] [--soak-seconds N]   -> prints the markdown section
 */
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { restartAgent, sandboxDown, sandboxStatus, sandboxUp, startAgent, stopAgent, waitAgentReady, type SandboxState } from '../tools/sandbox/index.js';
import { NETTOOL, runInPod, startInPod } from '../tools/sandbox/podproc.js';
import { httpInNetns } from '../src/util/netns-http.js';
import { DEFAULT_LIMITS, memoryBound } from '../src/proxy/limits.js';
import { CLK_TCK, PAGE, procCpu } from './lib.js';
import type { LifecycleResults } from './results.js';
import type { ConfigDump } from '../src/agent/index.js';
import { lifecycleMarkdown } from './render/lifecycle.js';

type Pod = SandboxState['pods'][number];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const withFds = (argv: string[]): string[] => ['sh', '-c', 'ulimit -n "$(ulimit -Hn)"; exec "$@"', 'sh', ...argv];

function flowSockets(netns: string, port: number): number {
  const out = spawnSync('ip', ['netns', 'exec', netns, 'ss', '-tanH'], { encoding: 'utf8' }).stdout;
  return out.split('\n').filter(
    (l) =>
      l.trim() &&
      !/^(LISTEN|TIME-WAIT)/.test(l) &&
      l
        .trim()
        .split(/\s+/)
        .slice(3, 5)
        .some((a) => a.endsWith(`:${port}`)),
  ).length;
}
const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const fds = (pid: number): number => {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
};
const tcpMemMiB = (): number => (Number(/TCP:.* mem (\d+)/.exec(fs.readFileSync('/proc/net/sockstat', 'utf8'))?.[1] ?? 0) * PAGE) / 2 ** 20;
const agentPid = (n: string): number => sandboxStatus().nodes.find((x) => x.name === n)!.agentPid!;

/** Every agent process of a node (the serving one and any still draining). */
function agentPids(node: SandboxState['nodes'][number]): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv.includes('agent') && argv.includes(node.config) && !argv[0]!.endsWith('sh')) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** A process in `pod` holding one connection to host:port; resolves with when it ended. */
async function hold(pod: Pod, host: string, port: number): Promise<{ proc: ChildProcess; ended: Promise<number> }> {
  const proc = await startInPod(pod, [
    process.execPath,
    '-e',
    `
    const s = require('net').connect(${port}, '${host}', () => process.stdout.write('listening\\n'));
    s.on('data', () => {}); s.on('error', () => process.exit(3)); s.on('close', () => process.exit(4));
    setInterval(() => s.write('t'), 50);
  `,
  ]);
  return { proc, ended: new Promise((r) => proc.on('exit', () => r(Date.now()))) };
}

const PEER_TIMEOUT_MS = 6000;
const WRITE_MIB = 8;
const WARMUP_MIB = 32;

export async function lifecycleBench(opts: { quick?: boolean; soakSeconds?: number } = {}): Promise<LifecycleResults> {
  const quick = opts.quick ?? false;
  const deathTrials = quick ? 3 : 20;
  const partitionTrials = quick ? 1 : 5;
  const idleN = quick ? 1000 : 10_000;
  const livenessSeconds = quick ? 10 : 30;
  const soakSeconds = opts.soakSeconds ?? (quick ? 60 : 600);
  const drainTimeoutS = 120;
  const detection: LifecycleResults['detection'] = {
    deathTrials,
    deathMs: { n1: [], n2: [] },
    partitionTrials,
    peerTimeoutMs: PEER_TIMEOUT_MS,
    partitionMs: { client: [], server: [] },
  };
  const nonReading: LifecycleResults['nonReading'] = { writeMiB: WRITE_MIB, warmupMiB: WARMUP_MIB, targetMiB: 64, rows: [] };
  const liveness: LifecycleResults['liveness'] = { idleConnections: idleN, seconds: livenessSeconds, rows: [] };
  let soak: LifecycleResults['soak'] | null = null;
  const procs: ChildProcess[] = [];
  const kill = (): void => {
    for (const p of procs.splice(0)) p.kill('SIGKILL');
  };
  let st: SandboxState | null = null;
  const pod = (x: string): Pod => st!.pods.find((p) => p.name === x)!;
  try {
    // (a) + (b) + (c), peerTimeout 6 s
    st = await sandboxUp({ nodes: 2, pods: 3, agents: true, agentSettings: { peerTimeout: `${PEER_TIMEOUT_MS / 1000}s` } });
    for (const p of st.pods) procs.push(await startInPod(p, withFds([process.execPath, NETTOOL, 'serve', '8080'])));
    const a = pod('n1-p1');
    const b = pod('n2-p1');
    const death = detection.deathMs;
    for (let i = 0; i < deathTrials; i++) {
      for (const victim of ['n1', 'n2'] as const) {
        const survivor = victim === 'n1' ? b : a;
        const h = await hold(a, b.ip, 8080);
        procs.push(h.proc);
        await sleep(300);
        const t0 = Date.now();
        process.kill(agentPid(victim), 'SIGKILL');
        while (flowSockets(survivor.netns, 8080) > 0 && Date.now() - t0 < 10_000) await sleep(5);
        death[victim].push(Date.now() - t0);
        h.proc.kill('SIGKILL');
        await stopAgent(victim, 'SIGKILL');
        await startAgent(victim);
        await waitAgentReady(victim);
      }
    }
    const part = detection.partitionMs;
    for (let i = 0; i < partitionTrials; i++) {
      const h = await hold(a, b.ip, 8080);
      procs.push(h.proc);
      await sleep(500);
      spawnSync('ip', ['-n', 'ambs-fabric', 'link', 'set', 'dev', 'n2', 'nomaster']);
      const t0 = Date.now();
      const clientEnd = await Promise.race([h.ended, sleep(30_000).then(() => NaN)]);
      while (flowSockets(b.netns, 8080) > 0 && Date.now() - t0 < 30_000) await sleep(20);
      part.client.push(clientEnd - t0);
      part.server.push(Date.now() - t0);
      spawnSync('ip', ['-n', 'ambs-fabric', 'link', 'set', 'dev', 'n2', 'master', 'br0']);
      await sleep(1000);
    }

    // (c) non-reading app
    const n2 = st.nodes[1]!;
    await runInPod(a, [process.execPath, NETTOOL, 'echo', b.ip, '8080', String(WARMUP_MIB * 1024 * 1024)], { timeoutMs: 60_000 }); // warm-up
    for (const [round, n] of (quick ? [10, 100] : [10, 100, 300]).entries()) {
      // a fresh non-reading app per round: killing the last one resets its
      // connections (unread data), so the previous round's streams are gone
      const port = 9300 + round;
      const noread = await startInPod(
        b,
        withFds([
          process.execPath,
          '-e',
          `
        const socks = []; require('net').createServer((s) => { s.pause(); socks.push(s); }).listen(${port}, '0.0.0.0', () => console.log('listening'));
      `,
        ]),
      );
      procs.push(noread);
      await sleep(2000);
      const rss0 = rssMiB(agentPid('n2'));
      const tcp0 = tcpMemMiB();
      const writer = await startInPod(
        a,
        withFds([
          process.execPath,
          '-e',
          `
        const net = require('net'); const buf = Buffer.alloc(1 << 20, 97); let opened = 0;
        for (let i = 0; i < ${n}; i++) { const s = net.connect(${port}, '${b.ip}', () => { if (++opened === ${n}) console.log('listening'); let left = ${WRITE_MIB}; const w = () => { while (left > 0) { left--; if (!s.write(buf)) { s.once('drain', w); return; } } }; w(); }); s.on('error', () => {}); }
      `,
        ]),
        30_000,
      );
      await sleep(5000);
      const rss = rssMiB(agentPid('n2'));
      const tcp = tcpMemMiB();
      const d = JSON.parse((await httpInNetns(n2.netnsPath, '127.0.0.1', 15000, '/config_dump')).body) as Pick<ConfigDump, 'resources'>;
      writer.kill('SIGKILL');
      noread.kill('SIGKILL');
      const bound = memoryBound(DEFAULT_LIMITS, { streams: n, connections: n }) / 2 ** 20;
      nonReading.rows.push({
        connections: n,
        serverStreams: d.resources.hbone.serverStreams,
        streamWindowBytes: d.resources.hbone.streamWindow ?? 0,
        rssBeforeMiB: rss0,
        rssAfterMiB: rss,
        boundMiB: bound,
        tcpBeforeMiB: tcp0,
        tcpAfterMiB: tcp,
      });
      await sleep(3000);
    }
    kill();
    await sandboxDown();

    // (d) liveness cost with idle connections
    for (const peerTimeout of ['1h', '30s', '4s']) {
      st = await sandboxUp({ nodes: 2, pods: 2, agents: true, agentSettings: { peerTimeout } });
      procs.push(await startInPod(pod('n2-p1'), withFds([process.execPath, NETTOOL, 'serve', '8080'])));
      const holder = await startInPod(
        pod('n1-p1'),
        withFds([
          process.execPath,
          '-e',
          `
        const net = require('net'); const n = ${idleN}; let open = 0; const socks = [];
        const one = () => new Promise((res) => { const s = net.connect(8080, '${pod('n2-p1').ip}', () => { s.write('x'); }); s.once('data', () => { socks.push(s); res(); }); s.on('error', () => res()); });
        (async () => { for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, one)); console.log('listening', socks.length); })();
        setInterval(() => {}, 1 << 30);
      `,
        ]),
        300_000,
      );
      procs.push(holder);
      await sleep(5000);
      const pids = [agentPid('n1'), agentPid('n2')];
      const c0 = pids.map((p) => procCpu(p) ?? 0);
      const t0 = Date.now();
      await sleep(livenessSeconds * 1000);
      const secs = (Date.now() - t0) / 1000;
      const c1 = pids.map((p) => procCpu(p) ?? 0);
      const pctCpu = c1.map((c, i) => ((c - c0[i]!) / CLK_TCK / secs) * 100);
      liveness.rows.push({ peerTimeout, isDefault: peerTimeout === '30s', n1CpuPct: pctCpu[0]!, n2CpuPct: pctCpu[1]! });
      kill();
      await sandboxDown();
    }

    // (e) soak
    st = await sandboxUp({ nodes: 2, pods: 2, agents: true, drainTimeout: `${drainTimeoutS}s` });
    for (const p of st.pods) procs.push(await startInPod(p, withFds([process.execPath, NETTOOL, 'serve', '8080'])));
    const src = pod('n1-p1');
    const dst = pod('n2-p1');
    const rate = runInPod(src, withFds([process.execPath, NETTOOL, 'rate', dst.ip, '8080', '200', String(soakSeconds)]), {
      timeoutMs: (soakSeconds + 120) * 1000,
    });
    const held = await startInPod(
      src,
      withFds([
        process.execPath,
        '-e',
        `
      const net = require('net');
      const one = () => { const s = net.connect(8080, '${dst.ip}'); s.on('data', () => {}); s.on('error', () => {}); const t = setInterval(() => s.write('k'), 1000);
        setTimeout(() => { clearInterval(t); s.end(); one(); }, 30000 + Math.random() * 60000); };
      for (let i = 0; i < 100; i++) one(); console.log('listening');
      setInterval(() => {}, 1 << 30);
    `,
      ]),
    );
    procs.push(held);
    const samples: LifecycleResults['soak']['samples'] = [];
    const t0 = Date.now();
    let nextRestart = t0 + 60_000;
    const restarts: LifecycleResults['soak']['restarts'] = [];
    while (Date.now() - t0 < soakSeconds * 1000) {
      for (const n of st.nodes) {
        const pids = agentPids(n);
        let heap: number | null = null;
        try {
          heap = (JSON.parse((await httpInNetns(n.netnsPath, '127.0.0.1', 15000, '/debug/heap', 'POST')).body) as { heapUsed: number }).heapUsed / 2 ** 20;
        } catch {
          /* restarting */
        }
        samples.push({
          t: (Date.now() - t0) / 1000,
          node: n.name,
          fds: pids.reduce((x, p) => x + fds(p), 0),
          rssMiB: pids.reduce((x, p) => x + rssMiB(p), 0),
          heapMiB: heap,
          agents: pids.length,
        });
      }
      if (Date.now() >= nextRestart) {
        const victim = st.nodes[Math.floor(Math.random() * st.nodes.length)]!.name;
        const r = await restartAgent(victim);
        restarts.push({ atS: Math.round((Date.now() - t0) / 1000), node: victim, readyMs: r.readyMs });
        nextRestart += 60_000;
      }
      await sleep(10_000);
    }
    const rr = await rate;
    const rj = JSON.parse(rr.stdout.trim().split('\n').pop() || '{}') as LifecycleResults['soak']['rate'];
    soak = {
      seconds: soakSeconds,
      rate: { attempted: rj.attempted, failed: rj.failed, errors: rj.errors },
      restarts,
      drainTimeoutS,
      warmupS: Math.min(120, soakSeconds / 3),
      nodes: st.nodes.map((n) => n.name),
      samples,
    };
  } finally {
    kill();
    await sandboxDown();
  }
  return { quick, detection, nonReading, liveness, soak: soak! };
}

if (process.argv[1] && process.argv[1].endsWith('lifecycle.js')) {
  const i = process.argv.indexOf('--soak-seconds');
  lifecycleBench({ quick: process.argv.includes('--quick'), ...(i > 0 ? { soakSeconds: Number(process.argv[i + 1]) } : {}) }).then(
    (r) => process.stdout.write(lifecycleMarkdown(r).join('\n') + '\n'),
    (e) => {
      process.stderr.write(`${(e as Error).stack}\n`);
      process.exit(1);
    },
  );
}
