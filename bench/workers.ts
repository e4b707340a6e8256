/**
 * Section 14 (issue 13, "Measure"): the data plane on worker threads, each
 * figure with `workers: 1` and `workers: 2` beside its baseline in the same
 * round, and `workers: 0` (the data plane on the main thread, as before the
 * workers) as the "before". One IPv4 sandbox, 2 nodes x 4 pods; n<i>-p1/p3
 * ambient, n<i>-p2/p4 plain. Per round, per variant (the agents restart only
 * when the variant changes; the order of variants alternates by round):
 *
 *   cps      new connections/s, cross node, 16 loops, 1-byte echo: mesh
 *            (n1-p1 -> n2-p1, HBONE) and direct (n1-p2 -> n2-p2); the agents'
 *            CPU per connection per side; each worker's share of them
 *   tput1/4  iperf3 cross node, 1 and 4 streams: mesh, and the nghttpx tunnel
 *            of the same shape (bench/hbone-tunnel.ts: our HBONE client code
 *            without capture, h2fwd, to nghttpx); client agent CPU per Gbit/s
 *            against h2fwd's
 *   rr       1 KiB round trips, cross node, client, server and agents pinned
 *            to one CPU: mesh and direct (added p50 = mesh - direct)
 *   scrape   rr p99 (not pinned), mesh, while both agents' /metrics are
 *            scraped back to back, against the same without scraping
 *   scale    capacity where the agent is the bottleneck: 64 loops of cps from
 *            two client processes in n1-p1 at once through n1's agent to n1-p3 on the same
 *            node (n1's agent carries both ends: client and server side)
 *   heap     live heap per idle connection: POST /debug/heap (a full GC in
 *            the main thread and in every worker) before and after 1000 held
 *            HBONE connections, both agents
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sandboxDown, sandboxUp, type SandboxNode, type SandboxPod } from '../tools/sandbox/index.js';
import { runInPod, NETTOOL } from '../tools/sandbox/podproc.js';
import { httpInNetns } from '../src/util/netns-http.js';
import {
  iperf,
  killAll,
  nettoolRr,
  procCpu,
  setAffinity,
  settleTcpMem,
  sleep,
  startProc,
  stopProc,
  toolFailed,
  waitNoSandbox,
  ALL_CPUS,
  CLK_TCK,
  HINT_OUTPUT,
  PIN_CPU,
  type Proc,
} from './lib.js';
import { startTunnel, checkTunnel, nextPort, IPERF_PORTS, type Tunnel } from './hbone-tunnel.js';
import { applyVariant, livePids, widenPorts } from './ipv6.js';
import type { WorkersResults, WorkersTrial, WorkersVariant } from './results.js';
import { fmt } from './stats.js';

const BENCH_DIST = path.dirname(fileURLToPath(import.meta.url));

export const WORKER_VARIANTS: WorkersVariant[] = [
  { name: 'workers 1', workers: 1 },
  { name: 'workers 2', workers: 2 },
  { name: 'main thread (workers 0)', workers: 0 },
];

const SERVER_PORTS = 61000;
let portSeq = 0;
const port = (): number => SERVER_PORTS + (portSeq++ % 4000);
const withFds = (argv: string[]): string[] => ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', ...argv];

interface Workers {
  index: number;
  served: number;
}

export async function workersBench(o: { quick: boolean }, stateDir: string, log: (s: string) => void): Promise<WorkersResults> {
  const seconds = o.quick ? 2 : 4;
  const rounds = o.quick ? 1 : 2;
  const idle = o.quick ? 300 : 1000;
  log(`\n[14] workers: 2 nodes x 4 pods, ${rounds} round(s) x ${WORKER_VARIANTS.length} variants, ${seconds} s per measurement, ${idle} idle connections`);
  await waitNoSandbox();
  const opts = { stateDir };
  const state = await sandboxUp({ nodes: 2, pods: 4, stateDir, ipFamily: 'ipv4', agentSettings: { workers: WORKER_VARIANTS[0]!.workers } });
  let tunnel: Tunnel | null = null;
  try {
    const pod = (n: string): SandboxPod => state.pods.find((p) => p.name === n)!;
    await widenPorts(state.pods, SERVER_PORTS);
    const [n1, n2] = [state.nodes[0]!, state.nodes[1]!];
    tunnel = await startTunnel(stateDir, pod('n1-p2'), pod('n2-p2'));
    let pids = livePids(stateDir);
    const trials: WorkersTrial[] = [];
    const agentCpu = (): number[] => pids.map((p) => (procCpu(p) ?? NaN) / CLK_TCK);

    const record = (t: WorkersTrial): void => {
      trials.push(t);
      const cpu = t.agentCpuS ? ` agents CPU ${t.agentCpuS.map((x) => fmt(x, 2)).join('/')} s` : '';
      log(
        `  ${t.round} ${t.variant.padEnd(24)} ${t.metric.padEnd(7)} ${t.path.padEnd(8)} ${fmt(t.value, t.metric === 'rr' || t.metric === 'scrape' ? 0 : 2)}${t.p99 !== null ? ` p99 ${fmt(t.p99, 0)}` : ''}${cpu}${t.failed ? ` — ${t.failed}` : ''}`,
      );
    };

    const cps = async (
      src: SandboxPod,
      dst: SandboxPod,
      conc: number,
      secs: number,
      extraSrc?: SandboxPod,
    ): Promise<{ rate: number; conns: number; failures: number }> => {
      const p = port();
      const server = startProc(dst, withFds([process.execPath, NETTOOL, 'serve', String(p)]));
      try {
        await server.waitFor(/listening/, 10_000);
        const run = (s: SandboxPod): ReturnType<typeof runInPod> =>
          runInPod(s, withFds([process.execPath, path.join(BENCH_DIST, 'cps.js'), dst.ip, String(p), String(secs), String(conc)]), {
            timeoutMs: secs * 1000 + 30_000,
          });
        const rs = await Promise.all([run(src), ...(extraSrc ? [run(extraSrc)] : [])]);
        let rate = 0;
        let conns = 0;
        let failures = 0;
        for (const r of rs) {
          try {
            const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { rate: number; conns: number; failures: number };
            rate += j.rate;
            conns += j.conns;
            failures += j.failures;
          } catch {
            throw toolFailed(`cps -> ${dst.name}: exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(-300)}`, HINT_OUTPUT);
          }
        }
        return { rate, conns, failures };
      } finally {
        await stopProc(server);
      }
    };

    const served = async (n: SandboxNode): Promise<Workers[]> => {
      const r = await httpInNetns(n.netnsPath, '127.0.0.1', 15000, '/workers');
      return (JSON.parse(r.body) as { workers: Workers[] }).workers;
    };
    const shares = (a: Workers[], b: Workers[]): number[] => b.map((w, i) => w.served - (a[i]?.served ?? 0));

    const heap = async (n: SandboxNode): Promise<number> => {
      const r = await httpInNetns(n.netnsPath, '127.0.0.1', 15000, '/debug/heap', 'POST', 30_000);
      const j = JSON.parse(r.body) as { heapUsed: number; workers: Array<{ heapUsed: number } | null> };
      return j.heapUsed + j.workers.reduce((s, w) => s + (w?.heapUsed ?? 0), 0);
    };

    const measure = async (v: WorkersVariant, round: number): Promise<void> => {
      const base = { variant: v.name, workers: v.workers, round };
      // cps, mesh and direct, CPU per connection, shares
      for (const path_ of ['mesh', 'direct'] as const) {
        await settleTcpMem();
        const [src, dst] = path_ === 'mesh' ? [pod('n1-p1'), pod('n2-p1')] : [pod('n1-p2'), pod('n2-p2')];
        const w0 = v.workers > 0 && path_ === 'mesh' ? await Promise.all([served(n1), served(n2)]) : null;
        const c0 = agentCpu();
        const r = await cps(src, dst, 16, seconds);
        const c1 = agentCpu();
        const w1 = w0 ? await Promise.all([served(n1), served(n2)]) : null;
        record({
          ...base,
          metric: 'cps',
          path: path_,
          value: r.rate,
          p99: null,
          ops: r.conns,
          agentCpuS: c1.map((x, i) => x - c0[i]!),
          shares: w0 && w1 ? [shares(w0[0]!, w1[0]!), shares(w0[1]!, w1[1]!)] : null,
          failed: r.failures ? `${r.failures} failed` : null,
        });
      }
      // bulk: mesh and the nghttpx tunnel, 1 and 4 streams
      for (const streams of [1, 4]) {
        for (const path_ of ['mesh', 'nghttpx'] as const) {
          await settleTcpMem();
          const c0 = agentCpu();
          const f0 = procCpu(tunnel!.pids.h2fwd!) ?? NaN;
          const t =
            path_ === 'mesh'
              ? await iperf(pod('n1-p1'), pod('n2-p1'), seconds, { port: port(), streams })
              : await iperf(pod('n1-p2'), pod('n2-p2'), seconds, { port: nextPort(IPERF_PORTS), streams, via: tunnel!.via });
          const c1 = agentCpu();
          const f1 = procCpu(tunnel!.pids.h2fwd!) ?? NaN;
          if (path_ === 'nghttpx') checkTunnel(tunnel!);
          record({
            ...base,
            metric: streams === 1 ? 'tput1' : 'tput4',
            path: path_,
            value: t.recvGbps,
            p99: null,
            ops: t.recvGbps * seconds,
            agentCpuS: path_ === 'mesh' ? c1.map((x, i) => x - c0[i]!) : [(f1 - f0) / CLK_TCK],
            shares: null,
            failed: t.failed,
          });
        }
      }
      // rr pinned: mesh and direct
      for (const pid of pids) await setAffinity(pid, String(PIN_CPU));
      try {
        for (const path_ of ['mesh', 'direct'] as const) {
          const [src, dst] = path_ === 'mesh' ? [pod('n1-p1'), pod('n2-p1')] : [pod('n1-p2'), pod('n2-p2')];
          const l = await nettoolRr(src, dst, seconds, PIN_CPU, { port: port() });
          record({ ...base, metric: 'rr', path: path_, value: l.p50, p99: l.p99, ops: l.samples, agentCpuS: null, shares: null, failed: null });
        }
      } finally {
        for (const pid of pids) await setAffinity(pid, ALL_CPUS());
      }
      // rr while /metrics is scraped back to back, and without
      for (const scraping of [false, true]) {
        let stop = false;
        let scrapes = 0;
        const loops = scraping
          ? [n1, n2].map(async (n) => {
              while (!stop) {
                await httpInNetns(n.netnsPath, '127.0.0.1', 15020, '/metrics').catch(() => undefined);
                scrapes++;
              }
            })
          : [];
        const l = await nettoolRr(pod('n1-p1'), pod('n2-p1'), seconds, null, { port: port() });
        stop = true;
        await Promise.all(loops);
        record({
          ...base,
          metric: 'scrape',
          path: scraping ? 'scraped' : 'quiet',
          value: l.p50,
          p99: l.p99,
          ops: scraping ? scrapes : 0,
          agentCpuS: null,
          shares: null,
          failed: null,
        });
      }
      // scaling: n1's agent carries both ends (two ambient clients on n1 -> ambient n1-p3)
      {
        await settleTcpMem();
        const w0 = v.workers > 0 ? await served(n1) : null;
        const c0 = agentCpu();
        const r = await cps(pod('n1-p1'), pod('n1-p3'), 32, seconds, pod('n1-p1'));
        const c1 = agentCpu();
        const w1 = w0 ? await served(n1) : null;
        record({
          ...base,
          metric: 'scale',
          path: 'same-node',
          value: r.rate,
          p99: null,
          ops: r.conns,
          agentCpuS: c1.map((x, i) => x - c0[i]!),
          shares: w0 && w1 ? [shares(w0, w1)] : null,
          failed: r.failures ? `${r.failures} failed` : null,
        });
      }
      // live heap per idle connection (both agents, main + workers, after a full GC each)
      {
        const p = port();
        const server = startProc(pod('n2-p1'), withFds([process.execPath, NETTOOL, 'serve', String(p)]));
        let holder: Proc | null = null;
        try {
          await server.waitFor(/listening/, 10_000);
          const h0 = [await heap(n1), await heap(n2)];
          holder = startProc(pod('n1-p1'), withFds([process.execPath, path.join(BENCH_DIST, 'hold.js'), pod('n2-p1').ip, String(p), String(idle)]));
          await holder.waitFor(/^ready \d+ \d+$/m, 60_000);
          await sleep(1000);
          const h1 = [await heap(n1), await heap(n2)];
          record({
            ...base,
            metric: 'heap',
            path: 'idle',
            value: (h1[0]! - h0[0]! + (h1[1]! - h0[1]!)) / 2 / idle,
            p99: null,
            ops: idle,
            agentCpuS: null,
            shares: null,
            failed: null,
            heapPerConn: [(h1[0]! - h0[0]!) / idle, (h1[1]! - h0[1]!) / idle],
          });
        } finally {
          await stopProc(holder);
          await stopProc(server);
        }
      }
    };

    let current = WORKER_VARIANTS[0]!;
    for (let round = 1; round <= rounds; round++) {
      const variants = round % 2 === 1 ? WORKER_VARIANTS : [...WORKER_VARIANTS].reverse();
      for (const v of variants) {
        if (v !== current) {
          pids = await applyVariant(state, { name: v.name, agentSettings: { workers: v.workers } }, stateDir, log);
          current = v;
        }
        await measure(v, round);
      }
    }
    return { quick: o.quick, seconds, rounds, idle, cpus: os.availableParallelism(), variants: WORKER_VARIANTS, trials };
  } finally {
    if (tunnel) for (const p of [tunnel.fwd, tunnel.ng, tunnel.proxy]) await stopProc(p);
    killAll();
    await sandboxDown(opts);
  }
}
