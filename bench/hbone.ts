/**
 * Cross-node benchmarks (sections 4-7 of bench/RESULTS.md), measured; run by
 * bench/run.ts (`--only hbone` runs them alone):
 *
 *   4. bulk throughput, iperf3 with 1 and 4 streams
 *   5. 1 KB request/response latency (sockperf ping-pong), pinned and not
 *   6. connections per second (connect, 1 byte, echo, close)
 *   7. agent memory (VmRSS) per idle tunnelled connection (bench/hbone-idle.ts)
 *
 * Sandbox: 2 nodes x 2 pods. n<i>-p1 are ambient (enrolled), n<i>-p2 plain.
 * Three paths from node n1 to node n2, measured back to back in each block:
 *
 *   direct   n1-p2 -> n2-p2                 plain pods, the kernel alone
 *   hbone    n1-p1 -> n2-p1                 captured by the n1 agent, HTTP/2
 *                                           CONNECT over mTLS 1.3 to n2-p1:15008,
 *                                           terminated by the n2 agent
 *   nghttpx  n1-p2 -> n2-p2 through a tunnel of the same shape (bench/hbone-tunnel.ts)
 *
 * Every HBONE measurement is checked against both agents' /config_dump
 * (bench/hbone-agents.ts). Returns HboneResults; bench/render/hbone.ts writes
 * the report.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sandboxUp, sandboxStatus, type SandboxPod } from '../tools/sandbox/index.js';
import { runInPod, NETTOOL } from '../tools/sandbox/podproc.js';
import {
  execFileP,
  sleep,
  startProc,
  stopProc,
  settleTcpMem,
  waitNoSandbox,
  iperf,
  latency,
  PIN_CPU,
  ALL_CPUS,
  setAffinity,
  startProcSampler,
  toolFailed,
  HINT_OUTPUT,
  type Via,
} from './lib.js';
import { perfProfile } from './perf.js';
import { checkTunnel, nextPort, startTunnel, IPERF_PORTS, SOCKPERF_PORTS } from './hbone-tunnel.js';
import { hboneCounters, verifyHbone } from './hbone-agents.js';
import { idleRss } from './hbone-idle.js';
import type { Cores, HboneOptions, HboneResults, LatencyTool, XCps, XLat, XPath, XTput } from './results.js';
import { fmt } from './stats.js';

const BENCH_DIST = path.dirname(fileURLToPath(import.meta.url));
const ECHO_PORT = 7001;
const LABEL: Record<XPath, string> = { direct: 'direct', hbone: 'HBONE (2 agents)', nghttpx: 'nghttpx tunnel' };

function coresText(c: Cores): string {
  const e = Object.entries(c);
  return e.length ? `; ${e.map(([k, v]) => `${k} ${v === null ? '-' : v.toFixed(0)}%`).join(', ')} of a core` : '';
}

export async function hboneBenchmarks(o: HboneOptions, stateDir: string, log: (s: string) => void): Promise<HboneResults> {
  log(
    `\n[4-7] cross-node: sandbox 2 nodes x 2 pods, ${o.blocks} block(s) of direct / HBONE / nghttpx tunnel, ${o.seconds} s per measurement; connection rate ${o.cpsSeconds} s; ${o.idleConns} idle connections`,
  );
  await waitNoSandbox();
  const tUp = performance.now();
  const state = await sandboxUp({ nodes: 2, pods: 2, stateDir });
  const upMs = performance.now() - tUp;
  const pod = (n: string): SandboxPod => state.pods.find((p) => p.name === n)!;
  const [a1, p1, a2, p2] = [pod('n1-p1'), pod('n1-p2'), pod('n2-p1'), pod('n2-p2')];
  if (!a1.ambient || !a2.ambient || p1.ambient || p2.ambient)
    throw toolFailed(
      'unexpected sandbox layout: n<i>-p1 should be ambient, n<i>-p2 plain',
      'the bench follows the sandbox layout of tools/sandbox/plan.ts; update it there or here',
    );
  const [n1, n2] = [state.nodes[0]!, state.nodes[1]!];
  const st = sandboxStatus({ stateDir });
  const agentPids: [number, number] = [st.nodes[0]!.agentPid!, st.nodes[1]!.agentPid!];
  const agents = { 'agent n1': agentPids[0], 'agent n2': agentPids[1] };

  // Connection-rate runs leave tens of thousands of TIME_WAIT sockets (the
  // closing side keeps one for 60 s): give every pod the whole port range and
  // let connect() reuse TIME_WAIT ports, so no path is limited by its own port
  // space (the default 28k ports fill up within seconds at ~4000 conn/s).
  for (const p of [a1, p1, a2, p2]) {
    await execFileP('ip', ['netns', 'exec', p.netns, 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);
  }
  const tunnel = await startTunnel(stateDir, p1, p2);
  const nghttpxVersion = /nghttp2\/(\S+)/.exec((await runInPod(p2, ['nghttpx', '--version'])).stdout)?.[1] ?? '?';
  const route: Record<XPath, [SandboxPod, SandboxPod, Via | undefined]> = {
    direct: [p1, p2, undefined],
    hbone: [a1, a2, undefined],
    nghttpx: [p1, p2, tunnel.via],
  };
  const procsOf = (pth: XPath | 'direct'): Record<string, number> => (pth === 'hbone' ? agents : pth === 'nghttpx' ? tunnel.pids : {});

  const tput: XTput[] = [];
  const lat: XLat[] = [];
  const cps: XCps[] = [];
  let tool: LatencyTool = 'sockperf';

  const measureTput = async (pth: XPath, block: number, streams: number, profile = false): Promise<void> => {
    const [src, dst, via] = route[pth];
    await settleTcpMem();
    const port = nextPort(IPERF_PORTS);
    const c0 = pth === 'hbone' ? await hboneCounters(n1, n2) : null;
    const s = startProcSampler(procsOf(pth));
    // perf over the middle of the run (after the server start and the first second)
    const pf = profile ? sleep(1500).then(() => perfProfile(procsOf(pth), o.seconds - 2.5, stateDir)) : null;
    const t = await iperf(src, dst, o.seconds, { port, streams, ...(via ? { via } : {}) });
    const m = s.stop();
    const perf = pf ? await pf : undefined;
    // iperf3 opens a control connection besides its data streams
    const verify = c0 ? await verifyHbone(n1, n2, `${dst.ip}:${port}`, c0, streams + 1) : null;
    if (pth === 'nghttpx') checkTunnel(tunnel);
    tput.push({
      path: pth,
      block,
      streams,
      recvGbps: t.recvGbps,
      sentGbps: t.sentGbps,
      failed: t.failed,
      machineBusyPct: m.machineBusyPct,
      cores: m.cores,
      verify,
      ...(perf !== undefined ? { perf } : {}),
    });
    log(
      `  ${block} ${LABEL[pth].padEnd(17)} iperf3 -P ${streams}  ${t.recvGbps.toFixed(2)} Gbit/s received (${t.sentGbps.toFixed(2)} sent)${coresText(m.cores)}${t.failed ? ` — FAILED: ${t.failed}` : ''}`,
    );
  };
  const measureLat = async (pth: XPath, block: number, pinned: boolean): Promise<void> => {
    const [src, dst, via] = route[pth];
    await settleTcpMem();
    const port = nextPort(SOCKPERF_PORTS);
    const c0 = pth === 'hbone' ? await hboneCounters(n1, n2) : null;
    const s = startProcSampler(procsOf(pth));
    const l = await latency(src, dst, o.seconds, pinned ? PIN_CPU : null, { port, ...(via ? { via } : {}) });
    const m = s.stop();
    const verify = c0 ? await verifyHbone(n1, n2, `${dst.ip}:${port}`, c0, 1) : null;
    if (pth === 'nghttpx') checkTunnel(tunnel);
    tool = l.tool;
    lat.push({ path: pth, block, pinned, tool: l.tool, p50: l.p50, p99: l.p99, samples: l.samples, machineBusyPct: m.machineBusyPct, cores: m.cores, verify });
    log(
      `  ${block} ${LABEL[pth].padEnd(17)} ${l.tool} ${pinned ? `CPU ${PIN_CPU}` : 'any CPU'}  p50 ${l.p50.toFixed(1)} µs, p99 ${l.p99.toFixed(1)} µs (${l.samples} round trips)${coresText(m.cores)}`,
    );
  };
  const pinAll = async (cpus: string): Promise<void> => {
    for (const pid of [...agentPids, ...Object.values(tunnel.pids)]) await setAffinity(pid, cpus);
  };

  for (let block = 1; block <= o.blocks; block++) {
    // Alternate the order so that a drift in time favours no path.
    const order: XPath[] = block % 2 === 1 ? ['direct', 'hbone', 'nghttpx'] : ['nghttpx', 'hbone', 'direct'];
    const profile = (pth: XPath, streams: number): boolean => !o.quick && block === o.blocks && streams === 1 && pth !== 'direct';
    for (const streams of [1, 4]) for (const pth of order) await measureTput(pth, block, streams, profile(pth, streams));
    await pinAll(String(PIN_CPU));
    try {
      for (const pth of order) await measureLat(pth, block, true);
    } finally {
      await pinAll(ALL_CPUS());
    }
    for (const pth of order) await measureLat(pth, block, false);
  }

  // 6. connections per second: direct vs HBONE (echo server: nettool serve)
  for (const [pth, block] of [
    ['direct', 1],
    ['hbone', 1],
  ] as const) {
    const [src, dst] = route[pth];
    const server = startProc(dst, ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', process.execPath, NETTOOL, 'serve', String(ECHO_PORT)]);
    try {
      await server.waitFor(/listening/, 10_000);
      await settleTcpMem();
      const c0 = pth === 'hbone' ? await hboneCounters(n1, n2) : null;
      const s = startProcSampler(procsOf(pth));
      const pf = pth === 'hbone' && !o.quick ? sleep(1000).then(() => perfProfile(procsOf(pth), o.cpsSeconds - 2, stateDir)) : null;
      const r = await runInPod(
        src,
        [
          'sh',
          '-c',
          'ulimit -n "$(ulimit -Hn)" && exec "$@"',
          'sh',
          process.execPath,
          path.join(BENCH_DIST, 'cps.js'),
          dst.ip,
          String(ECHO_PORT),
          String(o.cpsSeconds),
          String(o.cpsConcurrency),
        ],
        { timeoutMs: o.cpsSeconds * 1000 + 30_000 },
      );
      const m = s.stop();
      const perf = pf ? await pf : undefined;
      let j: { conns: number; failures: number; errors: Record<string, number>; rate: number; p50_ms: number | null; p99_ms: number | null };
      try {
        j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
      } catch {
        throw toolFailed(`cps ${src.name} -> ${dst.name}: exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(-500)}`, HINT_OUTPUT);
      }
      await sleep(300); // let the last tunnels finish before counting
      const verify = c0 ? await verifyHbone(n1, n2, `${dst.ip}:${ECHO_PORT}`, c0, j.conns) : null;
      cps.push({
        path: pth,
        block,
        conns: j.conns,
        failures: j.failures,
        errors: j.errors,
        rate: j.rate,
        p50ms: j.p50_ms,
        p99ms: j.p99_ms,
        machineBusyPct: m.machineBusyPct,
        cores: m.cores,
        verify,
        ...(perf !== undefined ? { perf } : {}),
      });
      log(
        `  ${block} ${LABEL[pth].padEnd(17)} conn/s ${j.rate.toFixed(0)} (${j.conns} in ${o.cpsSeconds} s, ${o.cpsConcurrency} at a time, ${j.failures} failed), per connection p50 ${fmt(j.p50_ms, 2)} ms p99 ${fmt(j.p99_ms, 2)} ms${coresText(m.cores)}`,
      );
    } finally {
      await stopProc(server);
    }
  }

  // 7. agent RSS per idle tunnelled connection
  const rss = await idleRss(o, a1, a2, n1, n2, agentPids, log);

  await Promise.all([stopProc(tunnel.fwd), stopProc(tunnel.ng), stopProc(tunnel.proxy)]);
  return {
    options: o,
    cpus: os.availableParallelism(),
    pinCpu: PIN_CPU,
    tput,
    lat,
    cps,
    rss,
    info: { nghttpx: nghttpxVersion, agentPids, tunnelPids: tunnel.pids, tool, upMs },
  };
}
