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
 *   node dist/bench/lifecycle.js [--quick] [--soak-seconds N]   -> prints a markdown section
 */
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { restartAgent, sandboxDown, sandboxStatus, sandboxUp, startAgent, stopAgent, waitAgentReady, type SandboxState } from '../src/sandbox/topology.js';
import { NETTOOL, runInPod, startInPod } from '../src/sandbox/podproc.js';
import { httpInNetns } from '../src/util/netns-http.js';
import { DEFAULT_LIMITS, memoryBound } from '../src/proxy/limits.js';
import { CLK_TCK, PAGE, pct, procCpu } from './lib.js';

type Pod = SandboxState['pods'][number];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const withFds = (argv: string[]): string[] => ['sh', '-c', 'ulimit -n "$(ulimit -Hn)"; exec "$@"', 'sh', ...argv];

function flowSockets(netns: string, port: number): number {
  const out = spawnSync('ip', ['netns', 'exec', netns, 'ss', '-tanH'], { encoding: 'utf8' }).stdout;
  return out.split('\n').filter((l) => l.trim() && !/^(LISTEN|TIME-WAIT)/.test(l) && l.trim().split(/\s+/).slice(3, 5).some((a) => a.endsWith(`:${port}`))).length;
}
const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const fds = (pid: number): number => { try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch { return 0; } };
const tcpMemMiB = (): number => Number(/TCP:.* mem (\d+)/.exec(fs.readFileSync('/proc/net/sockstat', 'utf8'))?.[1] ?? 0) * PAGE / 2 ** 20;
const agentPid = (n: string): number => sandboxStatus().nodes.find((x) => x.name === n)!.agentPid!;

/** Every agent process of a node (the serving one and any still draining). */
function agentPids(node: SandboxState['nodes'][number]): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv.includes('agent') && argv.includes(node.config) && !argv[0]!.endsWith('sh')) out.push(Number(d));
    } catch { /* gone */ }
  }
  return out;
}

/** A process in `pod` holding one connection to host:port; resolves with when it ended. */
async function hold(pod: Pod, host: string, port: number): Promise<{ proc: ChildProcess; ended: Promise<number> }> {
  const proc = await startInPod(pod, [process.execPath, '-e', `
    const s = require('net').connect(${port}, '${host}', () => process.stdout.write('listening\\n'));
    s.on('data', () => {}); s.on('error', () => process.exit(3)); s.on('close', () => process.exit(4));
    setInterval(() => s.write('t'), 50);
  `]);
  return { proc, ended: new Promise((r) => proc.on('exit', () => r(Date.now()))) };
}

function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  const num = points.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0);
  const den = points.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
  return den === 0 ? NaN : num / den;
}

export async function lifecycleBench(opts: { quick?: boolean; soakSeconds?: number } = {}): Promise<string> {
  const quick = opts.quick ?? false;
  const deathTrials = quick ? 3 : 20;
  const partitionTrials = quick ? 1 : 5;
  const idleN = quick ? 1000 : 10_000;
  const soakSeconds = opts.soakSeconds ?? (quick ? 60 : 600);
  const lines: string[] = ['## Nothing leaks, nothing balloons: detection, a non-reading app, liveness cost, soak', ''];
  const procs: ChildProcess[] = [];
  const kill = (): void => { for (const p of procs.splice(0)) p.kill('SIGKILL'); };
  let st: SandboxState | null = null;
  const pod = (x: string): Pod => st!.pods.find((p) => p.name === x)!;
  try {
    // (a) + (b) + (c), peerTimeout 6 s
    st = await sandboxUp({ nodes: 2, pods: 3, agents: true, agentSettings: { peerTimeout: '6s' } });
    for (const p of st.pods) procs.push(await startInPod(p, withFds([process.execPath, NETTOOL, 'serve', '8080'])));
    const a = pod('n1-p1');
    const b = pod('n2-p1');
    const death: Record<'n1' | 'n2', number[]> = { n1: [], n2: [] };
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
    lines.push('### Detection', '',
      `A peer agent SIGKILLed mid-stream (${deathTrials} trials each way): time until the surviving side has no socket of the flow left in its pod.`, '',
      '| killed | survivor cleaned up p50 ms | p99 ms | max ms |', '|---|---|---|---|',
      ...(['n1', 'n2'] as const).map((v) => `| ${v === 'n1' ? 'client-side agent (n1)' : 'server-side agent (n2)'} | ${pct(death[v], 50).toFixed(0)} | ${pct(death[v], 99).toFixed(0)} | ${Math.max(...death[v]).toFixed(0)} |`), '');
    const part: { client: number[]; server: number[] } = { client: [], server: [] };
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
    lines.push(`A partition (the n2 link taken off the bridge: no FIN, no RST) with peerTimeout 6 s (${partitionTrials} trials): time until each side ended the flow.`, '',
      '| side | p50 ms | p99 ms | ÷ peerTimeout (p99) |', '|---|---|---|---|',
      ...(['client', 'server'] as const).map((s) => `| ${s} (${s === 'client' ? 'n1: PING timeout, app reset' : 'n2: PING timeout, app socket closed'}) | ${pct(part[s], 50).toFixed(0)} | ${pct(part[s], 99).toFixed(0)} | ${(pct(part[s], 99) / 6000).toFixed(2)} |`),
      '', 'With the default peerTimeout (30 s) the same checks fire at 7.5 s (PING), 15 s (PING timeout), 15 s + 3 × 5 s (keepalive): a partition is detected within about 30 s.', '');

    // (c) non-reading app
    const n2 = st.nodes[1]!;
    await runInPod(a, [process.execPath, NETTOOL, 'echo', b.ip, '8080', String(32 * 1024 * 1024)], { timeoutMs: 60_000 }); // warm-up
    const rows: string[] = [];
    for (const [round, n] of (quick ? [10, 100] : [10, 100, 300]).entries()) {
      // a fresh non-reading app per round: killing the last one resets its
      // connections (unread data), so the previous round's streams are gone
      const port = 9300 + round;
      const noread = await startInPod(b, withFds([process.execPath, '-e', `
        const socks = []; require('net').createServer((s) => { s.pause(); socks.push(s); }).listen(${port}, '0.0.0.0', () => console.log('listening'));
      `]));
      procs.push(noread);
      await sleep(2000);
      const rss0 = rssMiB(agentPid('n2'));
      const tcp0 = tcpMemMiB();
      const writer = await startInPod(a, withFds([process.execPath, '-e', `
        const net = require('net'); const buf = Buffer.alloc(1 << 20, 97); let opened = 0;
        for (let i = 0; i < ${n}; i++) { const s = net.connect(${port}, '${b.ip}', () => { if (++opened === ${n}) console.log('listening'); let left = 8; const w = () => { while (left > 0) { left--; if (!s.write(buf)) { s.once('drain', w); return; } } }; w(); }); s.on('error', () => {}); }
      `]), 30_000);
      await sleep(5000);
      const rss = rssMiB(agentPid('n2'));
      const tcp = tcpMemMiB();
      const d = JSON.parse((await httpInNetns(n2.netnsPath, '127.0.0.1', 15000, '/config_dump')).body) as { resources: { hbone: { streamWindow: number; serverStreams: number } } };
      writer.kill('SIGKILL');
      noread.kill('SIGKILL');
      const bound = memoryBound(DEFAULT_LIMITS, { streams: n, connections: n }) / 2 ** 20;
      rows.push(`| ${n} | ${d.resources.hbone.serverStreams} | ${(d.resources.hbone.streamWindow / 1024).toFixed(0)} | ${rss0.toFixed(1)} -> ${rss.toFixed(1)} | **+${(rss - rss0).toFixed(1)}** | ${bound.toFixed(1)} | ${tcp0.toFixed(0)} -> ${tcp.toFixed(0)} |`);
      await sleep(3000);
    }
    lines.push('### A non-reading app', '',
      `N connections from n1-p1, each writing 8 MiB, into an app on n2-p1 that never reads; after a 32 MiB echo warm-up. The destination agent's RSS 5 s after the writers started; its stream window (config_dump \`resources.hbone.streamWindow\`); the documented bound (\`memoryBound\`, docs/ARCHITECTURE.md#limits); the machine's TCP memory (\`/proc/net/sockstat\` pages; most of it is the writing app's send buffer and the non-reading app's receive buffer, charged to their own cgroups, not the agent's).`, '',
      '| N | streams on n2 | window KiB | n2 agent RSS MiB | growth MiB | bound MiB | TCP memory MiB |', '|---|---|---|---|---|---|---|', ...rows, '',
      'Target: growth ≤ 64 MiB at 300 (before: +150 MB at 60, with 4 MiB windows).', '');
    kill();
    await sandboxDown();

    // (d) liveness cost with idle connections
    const cost: string[] = [];
    for (const peerTimeout of ['1h', '30s', '4s']) {
      st = await sandboxUp({ nodes: 2, pods: 2, agents: true, agentSettings: { peerTimeout } });
      procs.push(await startInPod(pod('n2-p1'), withFds([process.execPath, NETTOOL, 'serve', '8080'])));
      const holder = await startInPod(pod('n1-p1'), withFds([process.execPath, '-e', `
        const net = require('net'); const n = ${idleN}; let open = 0; const socks = [];
        const one = () => new Promise((res) => { const s = net.connect(8080, '${pod('n2-p1').ip}', () => { s.write('x'); }); s.once('data', () => { socks.push(s); res(); }); s.on('error', () => res()); });
        (async () => { for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, one)); console.log('listening', socks.length); })();
        setInterval(() => {}, 1 << 30);
      `]), 300_000);
      procs.push(holder);
      await sleep(5000);
      const pids = [agentPid('n1'), agentPid('n2')];
      const c0 = pids.map((p) => procCpu(p) ?? 0);
      const t0 = Date.now();
      await sleep(quick ? 10_000 : 30_000);
      const secs = (Date.now() - t0) / 1000;
      const c1 = pids.map((p) => procCpu(p) ?? 0);
      const pctCpu = c1.map((c, i) => ((c - c0[i]!) / CLK_TCK / secs) * 100);
      cost.push(`| ${peerTimeout}${peerTimeout === '30s' ? ' (default)' : ''} | ${idleN} | ${pctCpu[0]!.toFixed(2)} | ${pctCpu[1]!.toFixed(2)} |`);
      kill();
      await sandboxDown();
    }
    lines.push('### The cost of keepalive and PING', '',
      `${idleN} idle HBONE connections n1-p1 -> n2-p1 (${Math.ceil(idleN / 100)} sessions of 100 streams); each agent's CPU over ${quick ? 10 : 30} s (utime+stime). Keepalive probes are sent by the kernel; the agent's share is the PINGs, one per session every peerTimeout/4.`, '',
      '| peerTimeout | idle connections | n1 agent CPU % | n2 agent CPU % |', '|---|---|---|---|', ...cost, '');

    // (e) soak
    st = await sandboxUp({ nodes: 2, pods: 2, agents: true, drainTimeout: '2m' });
    for (const p of st.pods) procs.push(await startInPod(p, withFds([process.execPath, NETTOOL, 'serve', '8080'])));
    const src = pod('n1-p1');
    const dst = pod('n2-p1');
    const rate = runInPod(src, withFds([process.execPath, NETTOOL, 'rate', dst.ip, '8080', '200', String(soakSeconds)]), { timeoutMs: (soakSeconds + 120) * 1000 });
    const held = await startInPod(src, withFds([process.execPath, '-e', `
      const net = require('net');
      const one = () => { const s = net.connect(8080, '${dst.ip}'); s.on('data', () => {}); s.on('error', () => {}); const t = setInterval(() => s.write('k'), 1000);
        setTimeout(() => { clearInterval(t); s.end(); one(); }, 30000 + Math.random() * 60000); };
      for (let i = 0; i < 100; i++) one(); console.log('listening');
      setInterval(() => {}, 1 << 30);
    `]));
    procs.push(held);
    const samples: Array<{ t: number; node: string; fds: number; rssMiB: number; heapMiB: number | null; agents: number }> = [];
    const t0 = Date.now();
    let nextRestart = t0 + 60_000;
    const restarts: string[] = [];
    while (Date.now() - t0 < soakSeconds * 1000) {
      for (const n of st.nodes) {
        const pids = agentPids(n);
        let heap: number | null = null;
        try {
          heap = (JSON.parse((await httpInNetns(n.netnsPath, '127.0.0.1', 15000, '/debug/heap', 'POST')).body) as { heapUsed: number }).heapUsed / 2 ** 20;
        } catch { /* restarting */ }
        samples.push({ t: (Date.now() - t0) / 1000, node: n.name, fds: pids.reduce((x, p) => x + fds(p), 0), rssMiB: pids.reduce((x, p) => x + rssMiB(p), 0), heapMiB: heap, agents: pids.length });
      }
      if (Date.now() >= nextRestart) {
        const victim = st.nodes[Math.floor(Math.random() * st.nodes.length)]!.name;
        const r = await restartAgent(victim);
        restarts.push(`${Math.round((Date.now() - t0) / 1000)} s: ${victim} (ready in ${r.readyMs} ms)`);
        nextRestart += 60_000;
      }
      await sleep(10_000);
    }
    const rr = await rate;
    const rj = JSON.parse(rr.stdout.trim().split('\n').pop() || '{}') as { attempted?: number; failed?: number; errors?: Record<string, number> };
    const warm = samples.filter((s) => s.t >= Math.min(120, soakSeconds / 3));
    const soakRows = st.nodes.map((n) => {
      const ss = warm.filter((s) => s.node === n.name);
      const perMin = (k: 'fds' | 'rssMiB' | 'heapMiB'): string => {
        const pts = ss.filter((s) => s[k] !== null).map((s) => [s.t / 60, s[k] as number] as [number, number]);
        return slope(pts).toFixed(3);
      };
      const range = (k: 'fds' | 'rssMiB' | 'heapMiB'): string => {
        const v = ss.map((s) => s[k]).filter((x): x is number => x !== null);
        return `${Math.min(...v).toFixed(k === 'fds' ? 0 : 1)}–${Math.max(...v).toFixed(k === 'fds' ? 0 : 1)}`;
      };
      return `| ${n.name} | ${range('fds')} | ${perMin('fds')} | ${range('rssMiB')} | ${perMin('rssMiB')} | ${range('heapMiB')} | ${perMin('heapMiB')} |`;
    });
    lines.push('### Soak', '',
      `${soakSeconds} s: 200 new connections/s n1-p1 -> n2-p1 (\`nettool rate\`: ${rj.attempted ?? '?'} attempted, ${rj.failed ?? '?'} failed${rj.errors && Object.keys(rj.errors).length ? ` ${JSON.stringify(rj.errors)}` : ''}), 100 held connections (each lives 30–90 s, then is replaced), a random node's agent restarted with hand-over every minute (${restarts.length}: ${restarts.join('; ')}); drainTimeout 2 min. Every 10 s: the fds and RSS summed over every agent process of the node (the serving one and those still draining), and the serving agent's live heap after a forced GC (\`POST /debug/heap\`). Slopes by least squares after the first ${Math.min(120, Math.round(soakSeconds / 3))} s.`, '',
      '| node | fds (range) | fds / min | RSS MiB (range) | RSS MiB / min | live heap MiB (range) | heap MiB / min |', '|---|---|---|---|---|---|---|', ...soakRows, '',
      'Target: slopes ≈ 0 after warm-up (a draining agent briefly adds its process to the node\'s sums; it exits once its held connections end).', '');
  } finally {
    kill();
    await sandboxDown();
  }
  return lines.join('\n');
}

if (process.argv[1] && process.argv[1].endsWith('lifecycle.js')) {
  const i = process.argv.indexOf('--soak-seconds');
  lifecycleBench({ quick: process.argv.includes('--quick'), ...(i > 0 ? { soakSeconds: Number(process.argv[i + 1]) } : {}) })
    .then((s) => process.stdout.write(s + '\n'), (e) => { process.stderr.write(`${(e as Error).stack}\n`); process.exit(1); });
}
