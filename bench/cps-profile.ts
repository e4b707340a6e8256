/**
 * Where an agent's CPU goes per new connection (bench/RESULTS.md §14): both
 * agents run with JIT symbols for perf (`--perf-basic-prof-only-functions`),
 * `bench/cps.js` opens HBONE connections across nodes while `perf record -g`
 * samples each agent (every thread: main, workers, libuv pool, the addon's
 * netns threads, and the kernel on their behalf); the report shows the CPU by
 * thread and the hottest symbols. `selfTimes` also reads V8 .cpuprofile files.
 *
 *   node dist/bench/cps-profile.js [--workers N] [--seconds S] [--top K]
 *
 * Needs root and no other sandbox; leaves none behind.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sandboxDown, sandboxUp, startAgent, stopAgent, waitAgentReady, type SandboxPod } from '../tools/sandbox/index.js';
import { NETTOOL, runInPod } from '../tools/sandbox/podproc.js';
import { execFileP, killAll, startProc, stopProc, waitNoSandbox } from './lib.js';

const BENCH_DIST = path.dirname(fileURLToPath(import.meta.url));
const STATE_DIR = '/run/ambientd-sandbox-profile';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Self time (µs) by "function (file:line)" and by category. */
export function selfTimes(p: Profile): { total: number; byFn: Map<string, number>; byCat: Map<string, number> } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const byFn = new Map<string, number>();
  const byCat = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    const dt = p.timeDeltas[i] ?? 0;
    if (!n) continue;
    const f = n.callFrame;
    const file = f.url ? f.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/').replace(/^node:/, 'node:') : '';
    const key = `${f.functionName || '(anonymous)'} ${file ? `(${file}:${f.lineNumber + 1})` : ''}`.trim();
    byFn.set(key, (byFn.get(key) ?? 0) + dt);
    byCat.set(category(f.functionName, f.url), (byCat.get(category(f.functionName, f.url)) ?? 0) + dt);
    total += dt;
  }
  return { total, byFn, byCat };
}

function category(fn: string, url: string): string {
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)') return 'native / V8 (program)';
  if (url.includes('/dist/src/proxy/hbone')) return 'ambientd HBONE';
  if (url.includes('/dist/src/proxy')) return 'ambientd proxy';
  if (url.includes('/dist/src/workers')) return 'ambientd worker events';
  if (url.includes('/dist/src/datapath')) return 'ambientd datapath (dial)';
  if (url.includes('/dist/src')) return 'ambientd other';
  if (url.startsWith('node:internal/http2') || url.includes('http2')) return 'node http2';
  if (url.startsWith('node:internal/tls') || url.startsWith('node:_tls') || url.includes('tls')) return 'node tls';
  if (url.startsWith('node:net') || url.startsWith('node:internal/stream_base') || url.includes('streams')) return 'node net/streams';
  if (url.startsWith('node:')) return 'node other';
  if (fn) return `native: ${fn}`;
  return 'other';
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (k: string, d: number): number => {
    const i = args.indexOf(k);
    return i >= 0 ? Number(args[i + 1]) : d;
  };
  const workers = opt('--workers', 1);
  const seconds = opt('--seconds', 5);
  const top = opt('--top', 25);
  await waitNoSandbox();
  const profDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-prof-'));
  const state = await sandboxUp({ nodes: 2, pods: 2, stateDir: STATE_DIR, ipFamily: 'ipv4', agentSettings: { workers } });
  let conns = 0;
  const pids: Record<string, number> = {};
  try {
    const pod = (n: string): SandboxPod => state.pods.find((p) => p.name === n)!;
    for (const n of state.nodes) {
      await stopAgent(n.name, 'SIGTERM', { stateDir: STATE_DIR });
      // JIT code named for perf (/tmp/perf-<pid>.map)
      pids[n.name] = await startAgent(n.name, { stateDir: STATE_DIR, env: { NODE_OPTIONS: '--perf-basic-prof-only-functions' } });
      await waitAgentReady(n.name, 30_000, { stateDir: STATE_DIR });
    }
    const server = startProc(pod('n2-p1'), [process.execPath, NETTOOL, 'serve', '7300']);
    await server.waitFor(/listening/, 10_000);
    await runInPod(pod('n1-p1'), [process.execPath, path.join(BENCH_DIST, 'cps.js'), pod('n2-p1').ip, '7300', '1', '16']);
    const rec = Object.entries(pids).map(([node, pid]) =>
      execFileP('perf', ['record', '-q', '-F', '997', '-g', '-p', String(pid), '-o', path.join(profDir, `${node}.data`), '--', 'sleep', String(seconds)]),
    );
    const r = await runInPod(pod('n1-p1'), [process.execPath, path.join(BENCH_DIST, 'cps.js'), pod('n2-p1').ip, '7300', String(seconds), '16'], {
      timeoutMs: seconds * 1000 + 30_000,
    });
    await Promise.all(rec);
    conns = (JSON.parse(r.stdout.trim().split('\n').pop()!) as { conns: number }).conns;
    await stopProc(server);
  } finally {
    killAll();
    await sandboxDown({ stateDir: STATE_DIR });
  }
  console.log(`workers ${workers}: ${conns} connections in ${seconds} s, profiled at 997 Hz`);
  for (const node of Object.keys(pids)) {
    const data = path.join(profDir, `${node}.data`);
    // by thread, then the hottest symbols (self time), kernel included
    const byThread = await execFileP('perf', ['report', '-i', data, '--no-children', '--sort', 'comm', '--stdio', '-q'], { maxBuffer: 64 << 20 });
    const bySym = await execFileP(
      'perf',
      ['report', '-i', data, '--no-children', '--sort', 'comm,dso,sym', '--stdio', '-q', '-g', 'none', '--percent-limit', '0.7'],
      {
        maxBuffer: 64 << 20,
      },
    );
    const samples = await execFileP('perf', ['report', '-i', data, '--stdio', '--header-only'], { maxBuffer: 16 << 20 }).catch(() => ({ stdout: '' }));
    const n = /sample_freq.*|# Samples: (\S+)/.exec(samples.stdout)?.[1] ?? '?';
    console.log(`\n${node} (agent pid ${pids[node]}): samples ${n}`);
    console.log('  by thread:');
    for (const l of byThread.stdout
      .split('\n')
      .filter((x) => x.trim())
      .slice(0, 8))
      console.log(`  ${l.trim()}`);
    console.log('  hottest (self):');
    for (const l of bySym.stdout
      .split('\n')
      .filter((x) => x.trim() && !x.startsWith('#'))
      .slice(0, top))
      console.log(`  ${l.trim().replace(/\s+/g, ' ')}`);
  }
  console.log(`\nperf data: ${profDir}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
