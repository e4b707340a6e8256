/**
 * Section 13 (issue 14, "Measure"): IPv6 against IPv4 through the mesh, in
 * one run. One dual-stack sandbox, 2 nodes x 4 pods (every pod has
 * 10.244.<n>.<p> and fd00:10:244:<n>::<p>); n<i>-p1/p3 are ambient, n<i>-p2/p4
 * plain. Four paths:
 *
 *   same-node direct   n1-p2 -> n1-p4   plain pods, the kernel alone
 *   same-node mesh     n1-p1 -> n1-p3   HBONE through n1's agent (outbound, then its own 15008)
 *   cross-node direct  n1-p2 -> n2-p2   plain pods, the kernel alone
 *   cross-node mesh    n1-p1 -> n2-p1   HBONE between the n1 and n2 agents
 *
 * For each path and each family: bulk throughput (iperf3, 1 and 4 streams),
 * 1 KiB request/response latency p50/p99 (`nettool rr`, client, server and
 * agents pinned to one CPU: sockperf 3.7 has no IPv6) and new connections/s
 * (bench/cps.ts). The two families of one (path, measure) run back to back,
 * the first alternating from round to round (v4 v6, v6 v4, ...), so each
 * round gives one IPv6/IPv4 ratio taken seconds apart; the direct paths give
 * the kernel's own ratio in the same run. The agents' CPU time is sampled on
 * every mesh measurement (CPU per unit of work, per family), and every mesh
 * measurement is checked against the agents' /config_dump (it really went
 * over HBONE).
 *
 * A/B dimensions besides the family: VARIANTS, agent settings written into
 * every agent.yaml (the sandbox's agentSettings); each round measures every
 * variant, restarting the agents only when the variant changes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  renderAgentConfig,
  sandboxDown,
  sandboxStatus,
  sandboxUp,
  startAgent,
  stopAgent,
  waitAgentReady,
  type SandboxNode,
  type SandboxPod,
  type SandboxState,
} from '../tools/sandbox/index.js';
import { runInPod, NETTOOL } from '../tools/sandbox/podproc.js';
import { formatHostPort } from '../src/util/hostport.js';
import {
  execFileP,
  iperf,
  killAll,
  nettoolRr,
  procCpu,
  cpuTimes,
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
} from './lib.js';
import { hboneCounters, verifyHbone } from './hbone-agents.js';
import type { IpFamilyName, Ipv6Results, Ipv6Trial, V6Metric, V6Path, V6Variant, Verify } from './results.js';
import { fmt } from './stats.js';

const BENCH_DIST = path.dirname(fileURLToPath(import.meta.url));

/**
 * The agent settings compared besides the family (first: what the sandbox
 * starts with). Add an entry (e.g. a setting on and off) to measure both in
 * the same run, interleaved round by round.
 */
export const VARIANTS: V6Variant[] = [
  // issue 14: the cost of client-address preservation, the default, against the pod's own address as source
  { name: 'client-address', agentSettings: { clientAddress: 'preserve' } },
  { name: 'pod-address', agentSettings: { clientAddress: 'pod' } },
];

export const PATHS: V6Path[] = ['same-node direct', 'same-node mesh', 'cross-node direct', 'cross-node mesh'];
export const METRICS: V6Metric[] = ['tput1', 'tput4', 'rr', 'cps'];
const FAMILIES: IpFamilyName[] = ['ipv4', 'ipv6'];
const CPS_CONCURRENCY = 16;

const ROUTES: Record<V6Path, { src: string; dst: string }> = {
  'same-node direct': { src: 'n1-p2', dst: 'n1-p4' },
  'same-node mesh': { src: 'n1-p1', dst: 'n1-p3' },
  'cross-node direct': { src: 'n1-p2', dst: 'n2-p2' },
  'cross-node mesh': { src: 'n1-p1', dst: 'n2-p1' },
};

/** The pod's address of that family (a dual-stack sandbox gives every pod both). */
export function addrOf(p: SandboxPod, family: IpFamilyName): string {
  const a = (p.ips ?? [p.ip]).find((x) => x.includes(':') === (family === 'ipv6'));
  if (!a) throw toolFailed(`${p.name} has no ${family} address (${(p.ips ?? [p.ip]).join(', ')})`, 'the sandbox must be up with ipFamily dual');
  return a;
}

/** The families in the order of a round: v4 first in odd rounds, v6 first in even ones. */
export const familyOrder = (round: number): IpFamilyName[] => (round % 2 === 1 ? FAMILIES : [...FAMILIES].reverse());

let portSeq = 0;
/** Server ports: above the pods' ephemeral range. */
const SERVER_PORTS = 61000;
/** A fresh server port per measurement, so each one's connection records are its own. */
const nextPort = (): number => SERVER_PORTS + (portSeq++ % 4000);

/** CPU seconds (utime+stime) so far of each agent, by node. */
const agentCpuS = (agents: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(agents).map(([node, pid]) => [node, (procCpu(pid) ?? NaN) / CLK_TCK]));

export async function ipv6Bench(o: { quick: boolean }, stateDir: string, log: (s: string) => void): Promise<Ipv6Results> {
  const seconds = o.quick ? 1 : 2;
  const rounds = o.quick ? 1 : 3;
  const rrCount = Math.max(1000, seconds * 5000);
  log(
    `\n[13] IPv6 vs IPv4: dual-stack sandbox 2 nodes x 4 pods, ${rounds} round(s) x ${VARIANTS.length} variant(s) x ${PATHS.length} paths x ${METRICS.length} measures x 2 families, ${seconds} s each`,
  );
  await waitNoSandbox();
  const opts = { stateDir };
  const t0 = performance.now();
  const state = await sandboxUp({ nodes: 2, pods: 4, stateDir, ipFamily: 'dual', agentSettings: VARIANTS[0]!.agentSettings });
  const upMs = performance.now() - t0;
  try {
    const pod = (n: string): SandboxPod => state.pods.find((p) => p.name === n)!;
    for (const r of Object.values(ROUTES)) {
      const want = r.src.endsWith('p1') || r.src.endsWith('p3');
      if (pod(r.src).ambient !== want || pod(r.dst).ambient !== want)
        throw toolFailed(
          `unexpected sandbox layout: ${r.src} and ${r.dst} should be ${want ? 'ambient' : 'plain'}`,
          'the bench follows the sandbox layout of tools/sandbox/plan.ts (odd pods ambient); update it there or here',
        );
    }
    // cps leaves tens of thousands of TIME_WAIT sockets: a wide port range and
    // TIME_WAIT reuse in every pod (both sysctls apply to IPv6 too). The
    // servers listen above the range (SERVER_PORTS), where no client socket
    // (the apps', the agents' upstream ones) can hold their port.
    await widenPorts(state.pods, SERVER_PORTS);
    const [n1, n2] = [state.nodes[0]!, state.nodes[1]!];
    const nodesOf = (pth: V6Path): [SandboxNode, SandboxNode] | null => (pth === 'same-node mesh' ? [n1, n1] : pth === 'cross-node mesh' ? [n1, n2] : null);
    let agentPids = livePids(stateDir);
    const agentsOf = (pth: V6Path): Record<string, number> =>
      pth === 'same-node mesh' ? { n1: agentPids[0]! } : pth === 'cross-node mesh' ? { n1: agentPids[0]!, n2: agentPids[1]! } : {};

    const trials: Ipv6Trial[] = [];
    const measure = async (variant: string, pth: V6Path, metric: V6Metric, round: number, family: IpFamilyName): Promise<void> => {
      const src = pod(ROUTES[pth].src);
      const dst = pod(ROUTES[pth].dst);
      const host = addrOf(dst, family);
      const via = (_d: SandboxPod, port: number): { host: string; port: number } => ({ host, port });
      const port = nextPort();
      const nodes = nodesOf(pth);
      await settleTcpMem();
      const c0 = nodes ? await hboneCounters(nodes[0], nodes[1]) : null;
      const agents = agentsOf(pth);
      const cpu0 = agentCpuS(agents);
      const [b0, w0] = cpuTimes();
      let value: number;
      let p99: number | null = null;
      let ops: number;
      let failed: string | null = null;
      let conns: number;
      if (metric === 'tput1' || metric === 'tput4') {
        const streams = metric === 'tput1' ? 1 : 4;
        const t = await iperf(src, dst, seconds, { port, streams, via });
        value = t.recvGbps;
        ops = (t.recvGbps * 1e9 * seconds) / 8;
        failed = t.failed;
        conns = streams + 1; // iperf3's control connection besides the data streams
      } else if (metric === 'rr') {
        const l = await nettoolRr(src, dst, seconds, PIN_CPU, { port, via });
        value = l.p50;
        p99 = l.p99;
        ops = l.samples;
        conns = 1;
      } else {
        const j = await cps(src, dst, host, port, seconds);
        value = j.rate;
        ops = j.conns;
        failed = j.failures ? `${j.failures} failed: ${JSON.stringify(j.errors)}` : null;
        conns = j.conns;
      }
      const [b1, w1] = cpuTimes();
      const cpu1 = agentCpuS(agents);
      const cpuS = Object.keys(agents).length ? Object.fromEntries(Object.entries(cpu1).map(([node, s1]) => [node, s1 - cpu0[node]!])) : null;
      let verify: Verify | null = null;
      if (nodes && c0) {
        if (metric === 'cps') await sleep(300); // the last tunnels close
        // Same node: one agent keeps both ends' records in its one list of the
        // last 1000 closed connections (src/proxy/connections.ts), ~500 each
        // after a cps run: ask the records for fewer, the counters for all.
        const sameAgent = nodes[0] === nodes[1];
        verify = await verifyHbone(nodes[0], nodes[1], formatHostPort({ ip: host, port }), c0, sameAgent ? Math.min(conns, 250) : conns);
        if (verify.streamsOpened < conns || verify.tunnelsOpened < conns)
          throw toolFailed(
            `${pth} ${metric} ${family}: ${conns} connections, but the agents opened ${verify.streamsOpened} HBONE streams / ${verify.tunnelsOpened} tunnels`,
            "the figure would not be an HBONE one: check the agents' logs and /config_dump",
          );
      }
      trials.push({
        variant,
        path: pth,
        metric,
        round,
        family,
        value,
        p99,
        ops,
        agentCpuS: cpuS,
        machineBusyPct: w1 > w0 ? (100 * (b1 - b0)) / (w1 - w0) : 0,
        failed,
        verify,
      });
      const unit = metric === 'rr' ? `p50 ${fmt(value)} µs p99 ${fmt(p99)} µs` : metric === 'cps' ? `${fmt(value, 0)} conn/s` : `${fmt(value, 2)} Gbit/s`;
      log(
        `  ${round} ${variant} ${pth.padEnd(17)} ${metric.padEnd(5)} ${family}  ${unit}${
          cpuS !== null
            ? `, agents ${Object.entries(cpuS)
                .map(([node, x]) => `${node} ${fmt(x, 2)}`)
                .join(' ')} CPU s`
            : ''
        }${failed ? ` — ${failed}` : ''}`,
      );
    };

    /** A cps run: the echo server in dst, bench/cps.js in src. */
    const cps = async (
      src: SandboxPod,
      dst: SandboxPod,
      host: string,
      port: number,
      secs: number,
    ): Promise<{ conns: number; failures: number; errors: Record<string, number>; rate: number }> => {
      const ulimit = ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', process.execPath];
      const server = startProc(dst, [...ulimit, NETTOOL, 'serve', String(port)]);
      try {
        await server.waitFor(/listening/, 10_000);
        const r = await runInPod(src, [...ulimit, path.join(BENCH_DIST, 'cps.js'), host, String(port), String(secs), String(CPS_CONCURRENCY)], {
          timeoutMs: secs * 1000 + 30_000,
        });
        try {
          return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { conns: number; failures: number; errors: Record<string, number>; rate: number };
        } catch {
          throw toolFailed(`cps ${src.name} -> ${host}: exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(-500)}`, HINT_OUTPUT);
        }
      } finally {
        await stopProc(server);
      }
    };

    let current = VARIANTS[0]!;
    for (let round = 1; round <= rounds; round++) {
      const variants = round % 2 === 1 ? VARIANTS : [...VARIANTS].reverse();
      for (const v of variants) {
        if (v !== current) {
          agentPids = await applyVariant(state, v, stateDir, log);
          current = v;
        }
        for (const metric of METRICS) {
          // rr: client and server are pinned by nettoolRr, the agents here
          if (metric === 'rr') for (const pid of agentPids) await setAffinity(pid, String(PIN_CPU));
          try {
            for (const pth of PATHS) for (const fam of familyOrder(round)) await measure(v.name, pth, metric, round, fam);
          } finally {
            if (metric === 'rr') for (const pid of agentPids) await setAffinity(pid, ALL_CPUS());
          }
        }
      }
    }
    return {
      quick: o.quick,
      seconds,
      rounds,
      cpsConcurrency: CPS_CONCURRENCY,
      rrCount,
      pinCpu: PIN_CPU,
      cpus: os.availableParallelism(),
      pods: ROUTES,
      variants: VARIANTS,
      upMs,
      trials,
    };
  } finally {
    killAll();
    await sandboxDown(opts);
  }
}

/**
 * cps leaves tens of thousands of TIME_WAIT sockets: a wide port range and
 * TIME_WAIT reuse in every pod (both sysctls apply to IPv6 too), below
 * `serverPorts`, where the servers listen.
 */
export async function widenPorts(pods: SandboxPod[], serverPorts: number): Promise<void> {
  for (const p of pods)
    await execFileP('ip', ['netns', 'exec', p.netns, 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1', `net.ipv4.ip_local_port_range=1024 ${serverPorts - 1}`]);
}

/** The agents' pids, by node order. */
export function livePids(stateDir: string): number[] {
  const st = sandboxStatus({ stateDir });
  return st.nodes.map((n) => {
    if (!n.agentPid) throw toolFailed(`no agent runs on ${n.name}`, `see ${n.log}`);
    return n.agentPid;
  });
}

/** Writes the variant's settings into every agent.yaml and restarts the agents; returns their new pids. */
export async function applyVariant(
  state: SandboxState,
  v: Pick<V6Variant, 'name' | 'agentSettings'>,
  stateDir: string,
  log: (s: string) => void,
): Promise<number[]> {
  log(`  agents: ${v.name} ${JSON.stringify(v.agentSettings)}`);
  for (const node of state.nodes) {
    fs.writeFileSync(node.config, renderAgentConfig({ ...state, agentSettings: v.agentSettings }, node));
    if (!(await stopAgent(node.name, 'SIGTERM', { stateDir }))) throw toolFailed(`the agent of ${node.name} did not stop`, `see ${node.log}`);
    await startAgent(node.name, { stateDir });
    await waitAgentReady(node.name, 30_000, { stateDir });
  }
  return livePids(stateDir);
}
