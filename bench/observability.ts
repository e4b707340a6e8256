/**
 * Cost of observability in the agent, sandbox 2 nodes × 2 pods, client n1-p1
 * -> `nettool serve` in n2-p1 over HBONE (both agents on the path):
 *
 *  (a) agent CPU per 1000 requests: `nettool rr` does N round trips of a
 *      1 KiB request and its 1 KiB echo on one connection; both agents'
 *      utime+stime (/proc/<pid>/stat) before/after, in CPU seconds per 1000
 *      requests (every request is a connection record update, no new
 *      connection: this is the per-byte relay cost, metrics included).
 *  (b) a /metrics scrape with 1000 active connections: 1000 idle connections
 *      n1-p1 -> n2-p1 are held open, then the 1 KiB rr latency (p50/p99) is
 *      measured without scraping and while this process scrapes both agents'
 *      /metrics back to back (sequentially, for the whole rr run); target:
 *      p99 with scraping <= 1.10 × without. Also the scrape duration p50/p99
 *      and the response size.
 *
 * Returns ObservabilityResults (bench/render/observability.ts writes section 9).
 *
 *   node dist/bench/observability.js [--quick]   -> prints the markdown section
 */
import type { ChildProcess } from 'node:child_process';
import { sandboxDown, sandboxUp, type SandboxState } from '../tools/sandbox/index.js';
import { NETTOOL, runInPod, startInPod } from '../tools/sandbox/podproc.js';
import { httpInNetns } from '../src/util/netns-http.js';
import { CLK_TCK, procCpu, toolFailed, HINT_OUTPUT } from './lib.js';
import type { ObservabilityResults, RrStats } from './results.js';
import { mean, pct } from './stats.js';
import { observabilityMarkdown } from './render/observability.js';

const ECHO_PORT = 8081;
const METRICS_PORT = 15020;
const IDLE_CONNECTIONS = 1000;

type Pod = SandboxState['pods'][number];
type Node = SandboxState['nodes'][number];

/** sh -c wrapper raising the fd limit before exec'ing argv */
const withFds = (argv: string[]): string[] => ['sh', '-c', 'ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"', 'sh', ...argv];

/** Opens N connections to HOST:PORT (each echoes 1 byte first), prints "listening <n> <ms>" when all are open, then idles. */
const HOLDER = `
const net = require('node:net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const socks = []; let next = 0; const t0 = Date.now();
const open = () => new Promise((res, rej) => {
  const s = net.connect({ host, port });
  s.once('error', rej);
  s.once('connect', () => s.write('x'));
  s.once('data', () => { s.off('error', rej); s.on('error', () => {}); socks.push(s); res(); });
});
const worker = async () => { while (next < n) { next++; await open(); } };
Promise.all(Array.from({ length: Math.min(50, n) }, worker)).then(
  () => process.stdout.write('listening ' + socks.length + ' ' + (Date.now() - t0) + '\\n'),
  (e) => { process.stderr.write('failed after ' + socks.length + ': ' + e.message + '\\n'); process.exit(1); });
setInterval(() => {}, 1 << 30);
`;

async function rr(src: Pod, dst: Pod, n: number): Promise<RrStats> {
  const r = await runInPod(src, [process.execPath, NETTOOL, 'rr', dst.ip, String(ECHO_PORT), String(n), '1024'], { timeoutMs: 600_000 });
  if (r.code !== 0) throw toolFailed(`nettool rr failed (${r.code}): ${r.stderr.trim().slice(-500)}`, HINT_OUTPUT);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { n: number; p50_us: number; p90_us: number; p99_us: number };
  return { n: j.n, p50Us: j.p50_us, p90Us: j.p90_us, p99Us: j.p99_us };
}

function agentCpuS(node: Node): number {
  if (node.agentPid === null) throw toolFailed(`no agent pid for ${node.name}`, 'the sandbox started no agent for this node: see its agent.log');
  const j = procCpu(node.agentPid);
  if (j === null) throw toolFailed(`agent of ${node.name} (pid ${node.agentPid}) is gone`, `the agent died during the measurement: see ${node.log}`);
  return j / CLK_TCK;
}

const PACED_MS = 250;

interface ScrapeStats {
  count: number;
  ms: number[];
  bytes: number[];
}

/**
 * Scrapes every node's /metrics, one after the other, until `stop` resolves;
 * with `everyMs`, one round of scrapes per period (paced), else back to back.
 */
async function scrapeLoop(nodes: Node[], stop: Promise<unknown>, everyMs = 0): Promise<ScrapeStats> {
  let done = false;
  void stop.finally(() => (done = true));
  const st: ScrapeStats = { count: 0, ms: [], bytes: [] };
  while (!done) {
    if (everyMs > 0 && st.count > 0) {
      const until = performance.now() + everyMs;
      while (!done && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
      if (done) break;
    }
    for (const n of nodes) {
      const t0 = performance.now();
      const r = await httpInNetns(n.netnsPath, '127.0.0.1', METRICS_PORT, '/metrics');
      if (r.status !== 200)
        throw toolFailed(`${n.name} /metrics: HTTP ${r.status}`, `the agent's metrics endpoint (port ${METRICS_PORT}) failed: see ${n.log}`);
      st.ms.push(performance.now() - t0);
      st.bytes.push(Buffer.byteLength(r.body));
      st.count++;
    }
  }
  return st;
}

export async function observabilityBench(opts: { quick?: boolean } = {}): Promise<ObservabilityResults> {
  const cpuRequests = opts.quick ? 2_000 : 20_000;
  const latRequests = opts.quick ? 2_000 : 10_000;
  const rounds = opts.quick ? 1 : 2;
  let st: SandboxState | null = null;
  const procs: ChildProcess[] = [];
  const cpuRows: Array<{ agent: string; cpuS: number }> = [];
  let cpuWall = 0;
  let cpuRr: RrStats | null = null;
  const latRows: Array<{ round: number; mode: 'no scrape' | 'scraping' | 'scraping 4/s'; r: RrStats; scrape: ScrapeStats | null }> = [];
  try {
    st = await sandboxUp({ nodes: 2, pods: 2 });
    const pod = (x: string): Pod => st!.pods.find((p) => p.name === x)!;
    const n1p1 = pod('n1-p1');
    const n2p1 = pod('n2-p1');
    const nodes = st.nodes;
    procs.push(await startInPod(n2p1, withFds([process.execPath, NETTOOL, 'serve', String(ECHO_PORT)])));

    // (a) CPU per 1000 requests
    await rr(n1p1, n2p1, 200); // warm-up: HBONE pool, JIT
    const before = nodes.map(agentCpuS);
    const t0 = performance.now();
    cpuRr = await rr(n1p1, n2p1, cpuRequests);
    cpuWall = (performance.now() - t0) / 1000;
    const after = nodes.map(agentCpuS);
    nodes.forEach((n, i) => cpuRows.push({ agent: n.name, cpuS: after[i]! - before[i]! }));

    // (b) 1000 idle connections, then latency with and without scraping
    const holder = await startInPod(n1p1, withFds([process.execPath, '-e', HOLDER, n2p1.ip, String(ECHO_PORT), String(IDLE_CONNECTIONS)]), 120_000);
    procs.push(holder);
    await new Promise((r) => setTimeout(r, 2000));
    await rr(n1p1, n2p1, 200); // warm-up
    await scrapeLoop(nodes, new Promise((r) => setTimeout(r, 1000))); // warm the scrape path
    for (let round = 1; round <= rounds; round++) {
      latRows.push({ round, mode: 'no scrape', r: await rr(n1p1, n2p1, latRequests), scrape: null });
      const paced = rr(n1p1, n2p1, latRequests);
      const [rp, scrapeP] = await Promise.all([
        paced,
        scrapeLoop(
          nodes,
          paced.catch(() => null),
          PACED_MS,
        ),
      ]);
      latRows.push({ round, mode: 'scraping 4/s', r: rp, scrape: scrapeP });
      const run = rr(n1p1, n2p1, latRequests);
      const [r, scrape] = await Promise.all([
        run,
        scrapeLoop(
          nodes,
          run.catch(() => null),
        ),
      ]);
      latRows.push({ round, mode: 'scraping', r, scrape });
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await sandboxDown();
  }

  const stress = latRows.filter((r) => r.mode === 'scraping');
  const allMs = stress.flatMap((r) => r.scrape!.ms);
  const allBytes = stress.flatMap((r) => r.scrape!.bytes);
  return {
    cpu: { requests: cpuRequests, wallS: cpuWall, rr: cpuRr!, agents: cpuRows.map((r) => ({ node: r.agent, cpuS: r.cpuS })) },
    latency: {
      requests: latRequests,
      rounds,
      idleConnections: IDLE_CONNECTIONS,
      metricsPort: METRICS_PORT,
      pacedMs: PACED_MS,
      runs: latRows.map((r) => ({ round: r.round, mode: r.mode, rr: r.r, scrapes: r.scrape ? r.scrape.count : null })),
      stressScrapes: {
        count: stress.reduce((a, r) => a + r.scrape!.count, 0),
        p50Ms: pct(allMs, 50),
        p99Ms: pct(allMs, 99),
        meanBytes: mean(allBytes),
        maxBytes: Math.max(...allBytes),
      },
    },
  };
}

if (process.argv[1] && process.argv[1].endsWith('observability.js')) {
  observabilityBench({ quick: process.argv.includes('--quick') }).then(
    (r) => process.stdout.write(observabilityMarkdown(r).join('\n') + '\n'),
    (e) => {
      process.stderr.write(`${(e as Error).stack}\n`);
      process.exit(1);
    },
  );
}
