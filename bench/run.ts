/**
 * ambientd benchmarks, all in one run (needs root, a built tree, iperf3,
 * sockperf and nghttpx; perf optional; `make bench` builds first):
 *
 *   node dist/bench/run.js [--quick] [--only SECTION[,SECTION...]] [--out FILE]
 *
 *   sections: same-node (1-2), enroll (3), hbone (4-7, bench/hbone.ts), policy (8, bench/policy-setup.ts),
 *             observability (9, bench/observability.ts), restart (10, bench/restart.ts),
 *             lifecycle (11, bench/lifecycle.ts)
 *
 *   1. same-node throughput (iperf3, 1 stream): direct plain->plain pod, and
 *      ambient->plain through the agent with acceleration=sockmap and =none
 *   2. 1 KB request/response latency (sockperf ping-pong, TCP) on the same 3 paths,
 *      with client, server and agent pinned to one CPU and unpinned
 *   3. enrollment latency: 1 node x 100 pods, each plain pod enrolled one by one
 *      while a prober in the pod waits for its first redirected connect
 *   4-7. cross-node (2 nodes): throughput (iperf3, 1 and 4 streams) and 1 KB
 *      latency over direct / HBONE through both agents / an nghttpx HTTP/2
 *      CONNECT tunnel, HBONE connections per second, agent memory per idle
 *      HBONE connection
 *   10. agent restarts: refused connections at 200 new connections/s during a
 *      rolling restart with hand-over vs stop-then-start, and the agent's
 *      start-up time to ready with 100 enrolled pods (hand-over, no hand-over,
 *      warm and cold start)
 *   11. nothing leaks, nothing balloons: detection time after a peer agent's
 *      death and after a partition, a non-reading app (10/100/300 connections x
 *      8 MiB), the CPU cost of keepalive and PING with 10 000 idle connections,
 *      and a soak (200 new connections/s, 100 held, an agent restart every
 *      minute) with the slopes of fds, RSS and live heap
 *
 * Figures go to stdout and to bench/RESULTS.md (--quick: ~1 s per measurement,
 * 10 pods, written to $TMPDIR/ambientd-bench-RESULTS.quick.md unless --out;
 * --only: to $TMPDIR/ambientd-bench-RESULTS.<sections>.md unless --out).
 * See bench/README.md for what each figure means.
 *
 * The run refuses to start while another sandbox (netns ambs-*) exists: it
 * waits for it to go away instead of tearing it down. It always removes its
 * own sandbox and kills every process it started, also on failure or Ctrl-C.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  SANDBOX_DIR_NAME,
  SANDBOX_LOCK,
  DEFAULT_CGROUP_ROOT,
  DEFAULT_BPFFS_ROOT,
  sandboxUp,
  sandboxDown,
  sandboxStatus,
  setEnrollment,
  startAgent,
  stopAgent,
  waitAgentReady,
  type SandboxPod,
  type SandboxNode,
} from '../src/sandbox/topology.js';
import { parseDocument } from '../src/config/config.js';
import {
  execFileP, sleep, now, startProc, stopProc, killAll, backgroundLoad, startSampler, settleTcpMem, tcpMemLimits,
  sandboxNetns, waitNoSandbox, parseJson, capturedOut, iperf, latency, getLatencyTool, setLatencyTool,
  PIN_CPU, setAffinity, pct, mean, fmt, signed, table, textTable, cpuModel, toolVersion,
} from './lib.js';
export { parseSockperf } from './lib.js';
import { hboneBenchmarks, hboneReport, type HboneOptions, type HboneResults } from './hbone.js';
import { policySetupBench } from './policy-setup.js';
import { observabilityBench } from './observability.js';
import { restartBench } from './restart.js';
import { lifecycleBench } from './lifecycle.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PROBER = path.join(ROOT, 'dist', 'bench', 'prober.js');
const STATE_DIR = '/run/ambientd-sandbox-bench';
const OPTS = { stateDir: STATE_DIR };
/** An address with no route anywhere in the sandbox (see bench/prober.ts). */
const UNROUTABLE = { ip: '10.250.0.1', port: 80 };

// ---------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------

interface Options {
  quick: boolean;
  out: string;
  /** seconds per throughput / latency measurement */
  seconds: number;
  /**
   * One block per entry: the agent runs with that acceleration, and the block
   * measures the direct path and the agent path back to back, so each agent
   * figure has a direct figure taken seconds apart to be compared with.
   */
  blocks: Array<'sockmap' | 'none'>;
  /** plain pods enrolled in the enrollment benchmark */
  enrollPods: number;
  /** length of the soak (section 11), when not the default */
  soakSeconds?: number | undefined;
  /** which sections run (--only) */
  sections: Set<Section>;
  /** cross-node sections 4-7 (bench/hbone.ts) */
  hbone: HboneOptions;
}

const SECTIONS = ['same-node', 'enroll', 'hbone', 'policy', 'observability', 'restart', 'lifecycle'] as const;
type Section = (typeof SECTIONS)[number];
const USAGE = `usage: node dist/bench/run.js [--quick] [--only SECTION[,SECTION...]] [--out FILE] [--soak-seconds N]
  sections: same-node (1-2: same-node throughput and latency), enroll (3: enrollment latency),
            hbone (4-7: cross-node throughput, latency, connections/s, memory per idle connection),
            policy (8: connection set-up latency with 0, 100, 10 000 AuthorizationPolicies),
            observability (9: agent CPU per 1000 requests, /metrics scrape cost under 1000 connections),
            restart (10: refused connections at 200/s during agent restarts with/without hand-over,
                     start-up time to ready with 100 enrolled pods),
            lifecycle (11: detection after peer death and partition, a non-reading app, keepalive/PING
                       CPU with 10 000 idle connections, 10-minute soak; --soak-seconds N to change it)
`;

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const outIdx = argv.indexOf('--out');
  const onlyIdx = argv.indexOf('--only');
  const soakIdx = argv.indexOf('--soak-seconds');
  for (const [i, a] of argv.entries()) {
    if (a === '--quick' || a === '--out' || a === '--only' || a === '--soak-seconds' || [outIdx, onlyIdx, soakIdx].some((x) => x >= 0 && i === x + 1)) continue;
    if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    process.stderr.write(`bench: unknown argument ${a}\n${USAGE}`);
    process.exit(2);
  }
  for (const [idx, what] of [[outIdx, 'a file name'], [onlyIdx, 'a list of sections'], [soakIdx, 'a number of seconds']] as const) {
    if (idx >= 0 && (!argv[idx + 1] || argv[idx + 1]!.startsWith('--'))) {
      process.stderr.write(`bench: ${argv[idx]} needs ${what}\n${USAGE}`);
      process.exit(2);
    }
  }
  const soakSeconds = soakIdx >= 0 ? Number(argv[soakIdx + 1]) : undefined;
  if (soakSeconds !== undefined && !(Number.isInteger(soakSeconds) && soakSeconds >= 30)) {
    process.stderr.write(`bench: --soak-seconds needs a whole number of seconds >= 30, got ${argv[soakIdx + 1]}\n${USAGE}`);
    process.exit(2);
  }
  const sections = new Set<Section>();
  for (const name of onlyIdx >= 0 ? argv[onlyIdx + 1]!.split(',') : SECTIONS) {
    const sec = name === 'cross-node' ? 'hbone' : name;
    if (!(SECTIONS as readonly string[]).includes(sec)) {
      process.stderr.write(`bench: unknown section ${name}\n${USAGE}`);
      process.exit(2);
    }
    sections.add(sec as Section);
  }
  const partial = sections.size < SECTIONS.length;
  // Only a full run replaces bench/RESULTS.md unless --out says otherwise.
  const out = outIdx >= 0
    ? path.resolve(argv[outIdx + 1]!)
    : quick || partial
      ? path.join(os.tmpdir(), `ambientd-bench-RESULTS${quick ? '.quick' : ''}${partial ? `.${[...sections].join('+')}` : ''}.md`)
      : path.join(ROOT, 'bench', 'RESULTS.md');
  return quick
    ? {
        soakSeconds, quick, out, seconds: 1, blocks: ['sockmap', 'none'], enrollPods: 10, sections,
        hbone: { quick, stateDir: STATE_DIR, seconds: 1, blocks: 1, cpsSeconds: 1, cpsConcurrency: 16, idleConns: 200 },
      }
    : {
        soakSeconds, quick, out, seconds: 5, blocks: ['sockmap', 'none', 'none', 'sockmap'], enrollPods: 50, sections,
        hbone: { quick, stateDir: STATE_DIR, seconds: 5, blocks: 2, cpsSeconds: 5, cpsConcurrency: 16, idleConns: 1000 },
      };
}

/** Sets `acceleration:` in the node's agent.yaml and restarts its agent. */
async function setAcceleration(node: SandboxNode, accel: 'sockmap' | 'none'): Promise<number> {
  const text = fs.readFileSync(node.config, 'utf8');
  if (!/^acceleration: .*$/m.test(text)) throw new Error(`${node.config} has no acceleration: line`);
  fs.writeFileSync(node.config, text.replace(/^acceleration: .*$/m, `acceleration: ${accel}`));
  if (!(await stopAgent(node.name, 'SIGTERM', OPTS))) throw new Error(`the agent of ${node.name} did not stop`);
  const logSize = fs.existsSync(node.log) ? fs.statSync(node.log).size : 0;
  const pid = await startAgent(node.name, OPTS);
  await waitAgentReady(node.name, 30_000, OPTS);
  // Check what the datapath really runs (sockmap needs the sk_msg program type).
  const fresh = fs.readFileSync(node.log, 'utf8').slice(logSize);
  const line = fresh.split('\n').map(parseJson).find((j) => j?.msg === 'datapath loaded');
  const effective = line?.acceleration;
  if (effective !== accel) throw new Error(`asked the agent of ${node.name} for acceleration=${accel}, its datapath runs ${String(effective)}`);
  return pid;
}

// ---------------------------------------------------------------------------
// 1. throughput (iperf3) and 2. latency (sockperf)
// ---------------------------------------------------------------------------

type PathName = 'direct' | 'agent+sockmap' | 'agent (no accel)';
const PATHS: PathName[] = ['direct', 'agent+sockmap', 'agent (no accel)'];

interface Tput {
  path: PathName;
  /** the block it was measured in (see Options.blocks) */
  block: number;
  /** end-to-end goodput: bytes the receiving iperf3 got */
  recvGbps: number;
  /** what the sending iperf3 managed to write (more than recv when something buffers in between) */
  sentGbps: number;
  failed: string | null;
  failedAfterS: number | null;
  captured: number | null;
  machineBusyPct: number;
  agentCorePct: number | null;
  peakTcpMem: number;
}

interface Lat {
  path: PathName;
  /** the block it was measured in (see Options.blocks) */
  block: number;
  tool: 'sockperf' | 'nettool';
  /** client, server and agent pinned to one CPU (no cross-CPU wake-ups) */
  pinned: boolean;
  p50: number;
  p99: number;
  avg: number | null;
  samples: number;
  captured: number | null;
  machineBusyPct: number;
  agentCorePct: number | null;
}


async function pathBenchmarks(o: Options, log: (s: string) => void): Promise<{ tput: Tput[]; lat: Lat[] }> {
  log(`\n[1+2] throughput and latency: sandbox 1 node x 4 pods, ${o.blocks.length} blocks (${o.blocks.join(', ')}), ${o.seconds} s per measurement`);
  await waitNoSandbox();
  const state = await sandboxUp({ nodes: 1, pods: 4, stateDir: STATE_DIR });
  const node = state.nodes[0]!;
  const pod = (n: string): SandboxPod => state.pods.find((p) => p.name === n)!;
  const [p1, p2, p4] = [pod('n1-p1'), pod('n1-p2'), pod('n1-p4')];
  if (!p1.ambient || p2.ambient || p4.ambient) throw new Error('unexpected sandbox layout: n1-p1 should be ambient, n1-p2 and n1-p4 plain');
  const route: Record<PathName, [SandboxPod, SandboxPod]> = {
    direct: [p2, p4],
    'agent+sockmap': [p1, p2],
    'agent (no accel)': [p1, p2],
  };
  // What the sandbox wrote into agent.yaml (agentConfigFor: `none` today). Read
  // it rather than assume it: a block only restarts the agent when the mode
  // changes, so a wrong guess here would measure block 1 in the other mode.
  const initial = /^acceleration: *(\S+)/m.exec(fs.readFileSync(node.config, 'utf8'))?.[1];
  let accel: 'sockmap' | 'none' | undefined = initial === 'sockmap' || initial === 'none' ? initial : undefined;
  let agentPid = sandboxStatus(OPTS).nodes[0]!.agentPid;
  const tput: Tput[] = [];
  const lat: Lat[] = [];

  const measureTput = async (pth: PathName, block: number): Promise<void> => {
    const [src, dst] = route[pth];
    const viaAgent = pth !== 'direct';
    await settleTcpMem();
    const c0 = viaAgent ? await capturedOut(node, src.name) : 0;
    const s = startSampler(agentPid);
    const t = await iperf(src, dst, o.seconds);
    const m = s.stop();
    const captured = viaAgent ? (await capturedOut(node, src.name)) - c0 : null;
    if (viaAgent && !captured) throw new Error(`${pth}: the agent captured no connection from ${src.name}: the path did not go through the agent`);
    tput.push({ path: pth, block, ...t, captured, ...m });
    log(`  ${String(block)} ${pth.padEnd(17)} iperf3    ${t.recvGbps.toFixed(2)} Gbit/s received (${t.sentGbps.toFixed(2)} sent), peak TCP mem ${(m.peakTcpMem / 2 ** 20).toFixed(0)} MiB, agent ${m.agentCorePct === null ? '-' : m.agentCorePct.toFixed(0) + '%'} of a core${t.failed ? ` — FAILED after ${fmt(t.failedAfterS, 0)} s: ${t.failed}` : ''}`);
  };
  const measureLat = async (pth: PathName, block: number, pinned: boolean): Promise<void> => {
    const [src, dst] = route[pth];
    const viaAgent = pth !== 'direct';
    await settleTcpMem();
    const c0 = viaAgent ? await capturedOut(node, src.name) : 0;
    const s = startSampler(agentPid);
    const l = await latency(src, dst, o.seconds, pinned ? PIN_CPU : null);
    const m = s.stop();
    const captured = viaAgent ? (await capturedOut(node, src.name)) - c0 : null;
    if (viaAgent && !captured) throw new Error(`${pth}: the agent captured no connection from ${src.name}: the path did not go through the agent`);
    lat.push({ path: pth, block, ...l, pinned, captured, machineBusyPct: m.machineBusyPct, agentCorePct: m.agentCorePct });
    log(`  ${String(block)} ${pth.padEnd(17)} ${l.tool.padEnd(9)} ${pinned ? `CPU ${PIN_CPU}` : 'any CPU'} p50 ${l.p50.toFixed(1)} µs, p99 ${l.p99.toFixed(1)} µs (${l.samples} round trips)`);
  };

  for (const [k, want] of o.blocks.entries()) {
    const block = k + 1;
    if (want !== accel) {
      agentPid = await setAcceleration(node, want);
      accel = want;
    }
    const agentPath: PathName = want === 'sockmap' ? 'agent+sockmap' : 'agent (no accel)';
    // Alternate which of the pair goes first, so a drift in time favours neither.
    const pair: PathName[] = block % 2 === 1 ? ['direct', agentPath] : [agentPath, 'direct'];
    for (const pth of pair) await measureTput(pth, block);
    await setAffinity(agentPid, String(PIN_CPU));
    try {
      for (const pth of pair) await measureLat(pth, block, true);
    } finally {
      await setAffinity(agentPid, `0-${os.availableParallelism() - 1}`);
    }
    for (const pth of pair) await measureLat(pth, block, false);
  }
  return { tput, lat };
}

// ---------------------------------------------------------------------------
// 3. enrollment latency
// ---------------------------------------------------------------------------

interface Enroll {
  pod: string;
  /** t(first redirected connect) - t0, ms; null if none within the timeout */
  latencyMs: number | null;
  /** setEnrollment() duration (state.json read, workloads.json + state.json written), ms */
  writeMs: number;
  /** workloads.json replaced (inotify, seen from here) - t0, ms */
  renamedMs: number | null;
  /** agent log timestamp of "pod enrolled" - t0, ms (1 ms resolution) */
  agentDoneMs: number | null;
  /** the agent's own figure ("ms" of the "pod enrolled" line: listeners + maps + links) */
  agentMs: number | null;
  attempts: number;
}

interface EnrollInfo {
  results: Enroll[];
  totalPods: number;
  /** sandboxUp() with the agent ready, ms */
  upMs: number;
  /** agent start: "datapath loaded" -> "agent ready" log lines (enrolls the ambient pods), ms */
  initialEnrollMs: number | null;
  initialEnrolled: number | null;
  /** size of workloads.json and the median time to parse it as the agent does (parseDocument), here */
  fileBytes: number;
  yamlParseMs: number;
}

async function enrollmentBenchmark(o: Options, log: (s: string) => void): Promise<EnrollInfo> {
  const totalPods = 100;
  log(`\n[3] enrollment latency: sandbox 1 node x ${totalPods} pods, enrolling ${o.enrollPods} plain pods one at a time`);
  await waitNoSandbox();
  const tUp = now();
  const state = await sandboxUp({ nodes: 1, pods: totalPods, stateDir: STATE_DIR });
  const upMs = now() - tUp;
  const node = state.nodes[0]!;
  // When does workloads.json get replaced? (setEnrollment renames a temp file over it.)
  let renamedAt: number | null = null;
  const watcher = fs.watch(path.dirname(state.workloads), (_ev, name) => {
    if (name === path.basename(state.workloads) && renamedAt === null) renamedAt = now();
  });
  const plain = state.pods.filter((p) => !p.ambient).slice(0, o.enrollPods);
  if (plain.length < o.enrollPods) throw new Error(`only ${plain.length} plain pods`);
  const t0s = new Map<string, number>();
  const results: Enroll[] = [];
  for (const pod of plain) {
    const prober = startProc(pod, [process.execPath, PROBER, UNROUTABLE.ip, String(UNROUTABLE.port), '1']);
    try {
      const ready = await prober.waitFor(/^(ready|early) /m, 10_000);
      if (/^early /m.test(ready)) throw new Error(`${pod.name}: a connect to ${UNROUTABLE.ip}:${UNROUTABLE.port} succeeded before enrollment (is the pod already enrolled?)`);
      renamedAt = null;
      const t0 = now();
      t0s.set(pod.name, t0);
      await setEnrollment(pod.name, true, OPTS);
      const writeMs = now() - t0;
      let latencyMs: number | null = null;
      let attempts = 0;
      try {
        const out = await prober.waitFor(/^ok [0-9.]+ [0-9.]+ \d+ \d+$/m, 5000);
        const m = /^ok ([0-9.]+) ([0-9.]+) (\d+) (\d+)$/m.exec(out)!;
        latencyMs = Number(m[1]) - t0;
        attempts = Number(m[3]);
      } catch (e) {
        log(`  ${pod.name}: ${(e as Error).message.split('\n')[0]}`);
      }
      const renamed: number | null = renamedAt;
      results.push({ pod: pod.name, latencyMs, writeMs, renamedMs: renamed === null ? null : renamed - t0, agentDoneMs: null, agentMs: null, attempts });
    } finally {
      await stopProc(prober);
    }
  }
  watcher.close();
  // The agent's side, from its log ("pod enrolled" lines carry "ms").
  await sleep(100);
  const lines = fs.readFileSync(node.log, 'utf8').split('\n').map(parseJson);
  const loaded = lines.find((j) => j?.msg === 'datapath loaded');
  const readyLine = lines.find((j) => j?.msg === 'agent ready');
  const initialEnrollMs = typeof loaded?.time === 'string' && typeof readyLine?.time === 'string' ? Date.parse(readyLine.time) - Date.parse(loaded.time) : null;
  const initialEnrolled = typeof readyLine?.enrolled === 'number' ? readyLine.enrolled : null;
  for (const j of lines) {
    if (j?.msg !== 'pod enrolled' || typeof j.pod !== 'string') continue;
    const name = j.pod.split('/').pop()!;
    const r = results.find((x) => x.pod === name);
    const t0 = t0s.get(name);
    if (!r || t0 === undefined) continue;
    r.agentMs = typeof j.ms === 'number' ? j.ms : null;
    r.agentDoneMs = typeof j.time === 'string' ? Date.parse(j.time) - t0 : null;
  }
  const ok = results.filter((r) => r.latencyMs !== null).map((r) => r.latencyMs!);
  log(`  ${ok.length}/${results.length} pods redirected; p50 ${fmt(pct(ok, 50))} ms, p99 ${fmt(pct(ok, 99))} ms, max ${fmt(pct(ok, 100))} ms`);
  // What re-reading the workload file costs (the agent parses all of it on every change).
  const text = fs.readFileSync(state.workloads, 'utf8');
  const parses: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t = now();
    parseDocument(text, state.workloads, 'WORKLOADS_INVALID');
    if (i >= 5) parses.push(now() - t); // the first ones warm the JIT up
  }
  return { results, totalPods, upMs, initialEnrollMs, initialEnrolled, fileBytes: Buffer.byteLength(text), yamlParseMs: pct(parses, 50) };
}


interface Summary {
  tputRows: string[][];
  /** client, server and agent on one CPU */
  latPinnedRows: string[][];
  /** wherever the scheduler puts them */
  latFreeRows: string[][];
  enrollRows: string[][];
  head: { tput: string[]; lat: string[]; enroll: string[] };
}

/** The direct-path figure of the same block (measured seconds apart). */
function partner<T extends { path: PathName; block: number }>(xs: T[], x: T): T | undefined {
  return xs.find((d) => d.path === 'direct' && d.block === x.block);
}

function summarize(tput: Tput[], lat: Lat[], enroll: Enroll[]): Summary {
  const by = <T extends { path: PathName }>(xs: T[], p: PathName) => xs.filter((x) => x.path === p);
  const tputRows = PATHS.map((p) => {
    const xs = by(tput, p);
    // × direct: mean over blocks of (agent / direct of the same block)
    const ratios = xs.map((x) => x.recvGbps / (partner(tput, x)?.recvGbps ?? NaN));
    const failed = xs.filter((x) => x.failed);
    return [
      p,
      fmt(mean(xs.map((x) => x.recvGbps)), 2),
      xs.map((x) => `${fmt(x.recvGbps, 2)}${x.failed ? '*' : ''}${p === 'direct' ? '' : ` (${fmt(partner(tput, x)?.recvGbps, 2)})`}`).join(', '),
      failed.length === 0 ? `${xs.length}/${xs.length}` : `${xs.length - failed.length}/${xs.length} (${[...new Set(failed.map((x) => x.failed!.replace(/^.*: /, '')))].join(', ')} after ${failed.map((x) => fmt(x.failedAfterS, 0)).join(', ')} s)`,
      p === 'direct' ? '1.00' : fmt(mean(ratios), 2),
      fmt(mean(xs.map((x) => x.sentGbps)), 2),
      fmt(mean(xs.map((x) => x.machineBusyPct)), 0),
      p === 'direct' ? '-' : fmt(mean(xs.map((x) => x.agentCorePct ?? NaN)), 0),
      fmt(Math.max(...xs.map((x) => x.peakTcpMem)) / 2 ** 20, 0),
    ];
  });
  const latRows = (sub: Lat[]): string[][] => PATHS.map((p) => {
    const lat = sub; // partner() looks for the direct figure within the same subset
    const xs = by(lat, p);
    const add50 = xs.map((x) => x.p50 - (partner(lat, x)?.p50 ?? NaN));
    const add99 = xs.map((x) => x.p99 - (partner(lat, x)?.p99 ?? NaN));
    const ratio = xs.map((x) => x.p50 / (partner(lat, x)?.p50 ?? NaN));
    return [
      p,
      fmt(mean(xs.map((x) => x.p50))),
      fmt(mean(xs.map((x) => x.p99))),
      p === 'direct' ? '-' : signed(mean(add50)),
      p === 'direct' ? '-' : signed(mean(add99)),
      p === 'direct' ? '1.00' : fmt(mean(ratio), 2),
      xs.map((x) => `${x.p50.toFixed(1)}/${x.p99.toFixed(1)}${p === 'direct' ? '' : ` (${fmt(partner(lat, x)?.p50)}/${fmt(partner(lat, x)?.p99)})`}`).join(', '),
      p === 'direct' ? '-' : fmt(mean(xs.map((x) => x.agentCorePct ?? NaN)), 0),
    ];
  });
  const latPinnedRows = latRows(lat.filter((x) => x.pinned));
  const latFreeRows = latRows(lat.filter((x) => !x.pinned));
  const ok = enroll.filter((r) => r.latencyMs !== null).map((r) => r.latencyMs!);
  const renamed = enroll.filter((r) => r.renamedMs !== null).map((r) => r.renamedMs!);
  const agentShare = enroll.filter((r) => r.renamedMs !== null && r.latencyMs !== null).map((r) => r.latencyMs! - r.renamedMs!);
  const agentMs = enroll.filter((r) => r.agentMs !== null).map((r) => r.agentMs!);
  const writes = enroll.map((r) => r.writeMs);
  const enrollRows = [
    ['first redirected connect - t0 (prober)', `${ok.length}/${enroll.length}`, fmt(pct(ok, 50)), fmt(pct(ok, 90)), fmt(pct(ok, 99)), fmt(pct(ok, 100))],
    ['  of which: t0 -> workloads.json replaced (the writer)', `${renamed.length}/${enroll.length}`, fmt(pct(renamed, 50)), fmt(pct(renamed, 90)), fmt(pct(renamed, 99)), fmt(pct(renamed, 100))],
    ['  of which: file replaced -> first redirected connect (agent)', `${agentShare.length}/${enroll.length}`, fmt(pct(agentShare, 50)), fmt(pct(agentShare, 90)), fmt(pct(agentShare, 99)), fmt(pct(agentShare, 100))],
    ['agent enroll() alone ("ms" of its "pod enrolled" log line)', `${agentMs.length}/${enroll.length}`, fmt(pct(agentMs, 50), 2), fmt(pct(agentMs, 90), 2), fmt(pct(agentMs, 99), 2), fmt(pct(agentMs, 100), 2)],
    ['setEnrollment() call (incl. state.json)', `${writes.length}/${enroll.length}`, fmt(pct(writes, 50)), fmt(pct(writes, 90)), fmt(pct(writes, 99)), fmt(pct(writes, 100))],
  ];
  return {
    tputRows, latPinnedRows, latFreeRows, enrollRows,
    head: {
      tput: ['path', 'Gbit/s (mean)', 'per block (direct of the block)', 'runs completed', '× direct', 'sender Gbit/s', 'machine CPU %', 'agent % of a core', 'peak kernel TCP mem MiB'],
      lat: ['path', 'p50 µs', 'p99 µs', 'added p50 µs', 'added p99 µs', 'p50 × direct', 'per block p50/p99 (direct of the block)', 'agent % of a core'],
      enroll: ['measure (ms)', 'n', 'p50', 'p90', 'p99', 'max'],
    },
  };
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the benchmarks need root (network namespaces, cgroups, BPF)');
  for (const f of [PROBER, path.join(ROOT, 'dist', 'src', 'cli.js'), path.join(ROOT, 'bpf', 'ambient.bpf.o')]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: run \`make build\``);
  }
  const command = ['node', 'dist/bench/run.js', ...process.argv.slice(2)].join(' ');
  const started = new Date();
  const tree = await gitTree(); // what dist/ was presumably built from: taken now, the tree may move during the run
  const tStart = now();
  const log = (s: string): void => void process.stdout.write(s + '\n');
  log(`ambientd benchmarks (${o.quick ? 'quick smoke run' : 'full run'}): ${command}`);
  const bg = await backgroundLoad();
  log(`background load before the run: ${bg.busyPct.toFixed(0)}% of the machine${bg.hogs.length ? ` (${bg.hogs.join('; ')})` : ''}`);
  const versions = {
    iperf3: await toolVersion('iperf3', ['--version']),
    sockperf: await toolVersion('sockperf', ['--version']),
    perf: await toolVersion('perf', ['--version']),
  };
  if (versions.sockperf === 'not found' && getLatencyTool() === 'sockperf') {
    log('sockperf not found: latency figures come from `nettool rr` (Node.js on both ends) instead');
    setLatencyTool('nettool');
  }

  let tput: Tput[] = [];
  let lat: Lat[] = [];
  let enroll: Enroll[] = [];
  let enrollInfo: EnrollInfo = { results: [], totalPods: 0, upMs: NaN, initialEnrollMs: null, initialEnrolled: null, fileBytes: 0, yamlParseMs: NaN };
  const run = (sec: Section): boolean => o.sections.has(sec);
  let hb: HboneResults | null = null;
  let policyMd: string | null = null;
  let obsMd: string | null = null;
  let restartMd: string | null = null;
  let lifecycleMd: string | null = null;
  try {
    if (run('same-node')) {
      ({ tput, lat } = await pathBenchmarks(o, log));
      killAll();
      await sandboxDown(OPTS);
    }
    if (run('enroll')) {
      const e = await enrollmentBenchmark(o, log);
      enroll = e.results;
      enrollInfo = e;
      killAll();
      await sandboxDown(OPTS);
    }
    if (run('hbone')) hb = await hboneBenchmarks(o.hbone, log);
    if (run('policy')) {
      policyMd = await policySetupBench({ quick: o.quick });
      log(policyMd);
    }
    if (run('observability')) {
      obsMd = await observabilityBench({ quick: o.quick });
      log(obsMd);
    }
    if (run('restart')) {
      restartMd = await restartBench({ quick: o.quick, stateDir: STATE_DIR, log });
      log(restartMd);
    }
    if (run('lifecycle')) {
      lifecycleMd = await lifecycleBench({ quick: o.quick, ...(o.soakSeconds ? { soakSeconds: o.soakSeconds } : {}) });
      log(lifecycleMd);
    }
  } finally {
    killAll();
    const report = await sandboxDown(OPTS).catch((e: Error) => ({ leftovers: [e.message] }));
    if (report.leftovers.length) log(`WARNING: sandbox cleanup left: ${report.leftovers.join('; ')}`);
    const left = [
      ...(await sandboxNetns()).map((n) => `netns ${n}`),
      ...[path.join(DEFAULT_CGROUP_ROOT, SANDBOX_DIR_NAME), path.join(DEFAULT_BPFFS_ROOT, SANDBOX_DIR_NAME), STATE_DIR].filter((d) => fs.existsSync(d)),
    ];
    // sandboxDown() released the machine-wide lock: a process that was waiting
    // for it may already be building its own sandbox (same ambs-* names).
    const other = sandboxLockHolder();
    if (!left.length) log('sandbox removed; machine clean (no ambs-* netns, no sandbox cgroup/bpffs/state dirs)');
    else if (other !== null && !fs.existsSync(STATE_DIR)) log(`sandbox removed; another process (pid ${other}) took the sandbox lock right after and now owns: ${left.join(', ')}`);
    else log(`WARNING: left behind: ${left.join(', ')}`);
  }
  const elapsed = (now() - tStart) / 1000;

  const s = summarize(tput, lat, enroll);
  const enrollOk = enroll.filter((r) => r.latencyMs !== null).map((r) => r.latencyMs!);
  const p99 = pct(enrollOk, 99);
  const target = enrollOk.length === enroll.length && p99 <= 100;
  const sm = tput.filter((t) => t.path === 'agent+sockmap');
  const WARMUP_SKIP = 2;
  const warm = enroll.slice(WARMUP_SKIP).filter((r) => r.latencyMs !== null).map((r) => r.latencyMs!);
  const slowest = enroll.map((r, i) => ({ ...r, order: i + 1 })).filter((r) => r.latencyMs !== null)
    .sort((a, b) => b.latencyMs! - a.latencyMs!).slice(0, 3)
    .map((r) => `${r.pod} ${fmt(r.latencyMs)} ms (enrolled #${r.order}; writer ${fmt(r.renamedMs)} ms, agent ${fmt(r.renamedMs === null ? null : r.latencyMs! - r.renamedMs)} ms)`).join(', ');
  const buffered = mean(sm.map((t) => t.sentGbps - t.recvGbps));

  // stdout
  if (run('same-node')) {
    log('\nThroughput (iperf3, 1 stream, same node; Gbit/s the receiver got)');
    log(textTable(s.head.tput, s.tputRows));
    log(`\n1 KB request/response round trip (${lat[0]?.tool ?? 'sockperf'}, TCP), client, server and agent pinned to CPU ${PIN_CPU}`);
    log(textTable(s.head.lat, s.latPinnedRows));
    log(`\n1 KB request/response round trip (${lat[0]?.tool ?? 'sockperf'}, TCP), not pinned`);
    log(textTable(s.head.lat, s.latFreeRows));
  }
  if (run('enroll')) {
    log(`\nEnrollment (${enroll.length} pods, sandbox of ${enrollInfo.totalPods})`);
    log(textTable(s.head.enroll, s.enrollRows));
    log(`target p99 <= 100 ms: ${target ? 'met' : 'NOT met'}; without the first ${WARMUP_SKIP} (cold) enrollments: p99 ${fmt(pct(warm, 99))} ms`);
    log(`slowest: ${slowest}`);
  }
  const hbRep = hb ? hboneReport(hb, o.hbone) : null;
  if (hbRep) for (const t of hbRep.text) log(t);

  // RESULTS.md
  const md: string[] = [];
  md.push('# ambientd benchmark results', '');
  if (o.quick) md.push('> **Quick smoke run** (~1 s per measurement, 10 pods): the figures are not representative.', '');
  md.push(
    `- date: ${started.toISOString()} (run took ${elapsed.toFixed(0)} s)`,
    `- kernel: \`${os.release()}\`; CPUs: ${os.availableParallelism()} × ${cpuModel()}; memory ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
    `- node ${process.version}; iperf3 ${versions.iperf3}; sockperf ${versions.sockperf}${hb ? `; nghttpx ${hb.info.nghttpx}; perf ${versions.perf}` : ''}`,
    `- command: \`${command}\` (as root, from the repository root; \`make bench\` builds first and runs the same)`,
    `- background load in the second before the run: ${bg.busyPct.toFixed(0)}% of the machine${bg.hogs.length ? ` — ${bg.hogs.join('; ')}` : ''}`,
    `- tree at the start of the run: ${tree}`,
    ...(run('same-node') ? [`- same-node (sections 1-2): ${o.seconds} s per measurement, in ${o.blocks.length} blocks with the agent's acceleration set to ${o.blocks.join(', ')}; each block measures the direct path and the agent path back to back (alternating which goes first), and "× direct" / "added" compare each agent figure with the direct figure of its own block, then average over blocks`] : []),
    `- sections: ${[...o.sections].join(', ')}${o.sections.size < SECTIONS.length ? ' (a partial run: `--only`)' : ''}`,
    ...(hb ? [`- cross-node (sections 4-7): ${o.hbone.seconds} s per throughput/latency measurement, ${o.hbone.blocks} block(s) of direct / HBONE / nghttpx tunnel; ${o.hbone.cpsSeconds} s of connections per second per path; ${o.hbone.idleConns} idle connections; nghttpx ${hb.info.nghttpx}; sandbox of 2 nodes × 2 pods up with both agents ready in ${fmt(hb.info.upMs, 0)} ms`] : []),
    '',
    '## How to read',
    '',
    'Everything runs on one small, shared, noisy machine: absolute numbers move by',
    'tens of percent from run to run, **the ratios to the direct path measured',
    'seconds apart in the same block are the point**. In sections 1-2 every path is same-node pod -> node -> pod over veth',
    'pairs; "through the agent" adds, inside the source pod, the connect4',
    'redirect to the agent\'s listener (15001), the agent\'s relay (Node.js, one',
    'extra TCP connection from the pod to the destination) and, with',
    '`acceleration: sockmap`, sk_msg redirection of the app<->agent bytes instead',
    'of the loopback TCP stack. The destination pod is not enrolled (no inbound',
    'capture), so this is the cost of one capture + relay hop. "machine CPU %" is',
    `the share of all ${os.availableParallelism()} CPUs busy during the measurement (including the background load above);`,
    '"agent % of a core" is the agent process alone. See `bench/README.md`.',
    '',
    'Latency on a VM depends on where the processes run: waking a process on the',
    'other, idle vCPU costs tens of µs, so the unpinned direct round trip jumps',
    'between ~17 and ~80 µs p50 from one run to the next, and every extra process',
    'hop (app -> agent -> server and back) may pay it again. Section 2 therefore',
    'also pins client, server and agent to one CPU: that table is the stable one.',
    '',
    'Sections 4-7 are cross-node (node n1 -> node n2 over the fabric bridge, two',
    'agents) and compare HBONE with the kernel alone and with an nghttpx HTTP/2',
    'CONNECT tunnel of the same shape, all measured back to back in the same',
    'blocks; section 4 says what the tunnel is made of and section "What limits',
    'the throughput" where the CPU goes.',
    '',
  );
  if (run('same-node')) {
    md.push(
      `## 1. Same-node throughput (iperf3, 1 stream, ${o.seconds} s)`,
      '',
      'Gbit/s is what the receiving iperf3 got (`end.sum_received`); "sender',
      'Gbit/s" is what the sending iperf3 could write — higher than received when',
      'bytes pile up in between. "peak kernel TCP mem" is the highest TCP',
      'memory of the whole machine (`/proc/net/sockstat`) during the run.',
      '',
      table(s.head.tput, s.tputRows),
      '',
    );
    const failedRuns = tput.filter((t) => t.failed);
    if (failedRuns.length) {
      md.push(
        `\\* **${failedRuns.length} of ${tput.length} iperf3 runs broke off**: ${failedRuns.map((t) => `${t.path} block ${t.block}: \`${t.failed}\` after ${fmt(t.failedAfterS, 0)} s (peak kernel TCP memory ${(t.peakTcpMem / 2 ** 20).toFixed(0)} MiB)`).join('; ')}.`,
        'For those, Gbit/s is what the receiver reported for the whole seconds before the error (its own JSON report), "sender" likewise.',
        '',
      );
    }
    if (sm.length && buffered > 0.3) {
      md.push(
        `With sockmap the sender writes ${buffered.toFixed(1)} Gbit/s more than arrives: sk_msg redirection`,
        'into the agent\'s socket is not bounded by that socket\'s receive buffer (the',
        'kernel only charges it against the machine-wide `tcp_mem`), so when the agent',
        'reads slower than the app writes, the backlog grows in kernel memory',
        '(see the peak TCP memory column) instead of pushing back on the sender —',
        `until TCP memory runs out and the app's send() fails with ENOMEM (\`net.ipv4.tcp_mem\` here: ${tcpMemLimits()} pages).`,
        '',
      );
    }
    md.push(
      `## 2. 1 KB request/response latency (${lat[0]?.tool === 'nettool' ? '`nettool rr`' : '`sockperf ping-pong --tcp -m 1024 --full-rtt`'}, ${o.seconds} s)`,
      '',
      'Round-trip time of one 1024-byte message and its echo on one connection,',
      'percentiles over every round trip of the run (µs); "added" is the',
      'difference to the direct path measured in the same block, averaged over blocks.',
      '',
      `### Client, server and agent pinned to CPU ${PIN_CPU} (\`taskset\`)`,
      '',
      'No cross-CPU wake-ups: the CPU work (system calls, TCP/veth processing,',
      'context switches, the agent\'s relay) of one round trip on each path; the',
      'stable figure on a VM.',
      '',
      table(s.head.lat, s.latPinnedRows),
      '',
      '### Not pinned (wherever the scheduler puts them)',
      '',
      'Includes waking idle vCPUs on the other CPU (tens of µs on this VM, and it',
      'depends on where the scheduler places each process): noisy, but closer',
      'to what an app sees here.',
      '',
      table(s.head.lat, s.latFreeRows),
      '',
    );
  }
  if (run('enroll')) {
    md.push(
      `## 3. Enrollment latency (1 node × ${enrollInfo.totalPods} pods, ${enroll.length} pods enrolled one at a time)`,
      '',
      `The ${enrollInfo.initialEnrolled ?? 50} ambient pods are enrolled when the agent starts (agent log: ${fmt(enrollInfo.initialEnrollMs, 0)} ms from "datapath loaded" to "agent ready"; \`sandboxUp\` of the ${enrollInfo.totalPods} pods with the agent ready: ${fmt(enrollInfo.upMs, 0)} ms).`,
      'Then, for each plain pod in turn: a prober (`bench/prober.ts`) starts in',
      `the pod and connects to ${UNROUTABLE.ip}:${UNROUTABLE.port} (no route) every ~1 ms; t0 is taken`,
      'right before `setEnrollment(pod, true)` rewrites the workload file; the',
      'figure is the time of the first connect that succeeds, i.e. that the',
      'pod\'s new connect4 hook sent to the agent\'s listener. Resolution ~1 ms',
      '(the probe cadence). Percentiles are nearest-rank (with 50 pods, p99 is',
      'the maximum).',
      '',
      table(s.head.enroll, s.enrollRows),
      '',
      'Each row has its own percentiles: the parts do not add up to the total.',
      `Slowest: ${slowest}. Without the first ${WARMUP_SKIP} enrollments after the agent started (both processes still cold): p50 ${fmt(pct(warm, 50))}, p99 ${fmt(pct(warm, 99))} ms over ${warm.length} pods.`,
      '',
      `The agent's share (file replaced -> first redirected connect) is inotify, a 2 ms coalescing timer, re-reading and parsing the whole workload file, the reconcile, and enroll() itself (listeners in the pod netns, map entries, 3 BPF links). For scale: parsing this ${(enrollInfo.fileBytes / 1024).toFixed(0)} KiB workloads.json (${enrollInfo.totalPods} pods) the way the agent does (\`parseDocument\`, \`yaml\` package) takes ${fmt(enrollInfo.yamlParseMs)} ms (median of 15 warm runs in the benchmark process); the writer side (\`setEnrollment\`) renders the whole file as YAML too.`,
      '',
      `Target p99 <= 100 ms (first redirected connect): **${target ? 'met' : 'NOT met'}** (p99 ${fmt(p99)} ms${enrollOk.length < enroll.length ? `; ${enroll.length - enrollOk.length} pods never redirected within 5 s` : ''}).`,
      '',
      '<details><summary>per pod (ms)</summary>',
      '',
      table(['pod', 'first redirected connect - t0', 'workloads.json replaced - t0', '"pod enrolled" log time - t0 (1 ms res.)', 'agent enroll()', 'setEnrollment()', 'probe attempts'],
        enroll.map((r) => [r.pod, fmt(r.latencyMs), fmt(r.renamedMs), fmt(r.agentDoneMs, 0), fmt(r.agentMs, 2), fmt(r.writeMs), String(r.attempts)])),
      '',
      '</details>',
      '',
    );
  }
  if (hbRep) md.push(...hbRep.md);
  if (policyMd) md.push('', policyMd.replace(/^## /, '## 8. '));
  if (obsMd) md.push('', obsMd.replace(/^## /, '## 9. '));
  if (restartMd) md.push('', restartMd.replace(/^## /, '## 10. '));
  if (lifecycleMd) md.push('', lifecycleMd.replace(/^## /, '## 11. '));
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, md.join('\n'));
  log(`\nwrote ${path.relative(process.cwd(), o.out) || o.out} (${elapsed.toFixed(0)} s)`);
}

/** The commit measured, and whether the work tree differed from it. */
async function gitTree(): Promise<string> {
  try {
    const { stdout: head } = await execFileP('git', ['-C', ROOT, 'log', '-1', '--format=%h %s']);
    const { stdout: st } = await execFileP('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'bpf', 'native']);
    const dirty = st.split('\n').filter(Boolean).length;
    return `\`${head.trim().slice(0, 100)}\`${dirty ? ` + uncommitted changes in ${dirty} file(s) under src/, bpf/, native/` : ''}`;
  } catch {
    return 'unknown (no git)';
  }
}

/** pid of a live process other than us holding the sandbox lock, if any. */
function sandboxLockHolder(): number | null {
  try {
    const pid = Number(fs.readFileSync(SANDBOX_LOCK, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return null;
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

let cleaning = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (cleaning) return;
    cleaning = true;
    process.stderr.write(`\nbench: ${sig}: cleaning up...\n`);
    killAll();
    sandboxDown(OPTS).finally(() => process.exit(130));
  });
}

main().catch(async (e: Error) => {
  process.stderr.write(`bench failed: ${e.stack ?? e.message}\n`);
  killAll();
  await sandboxDown(OPTS).catch(() => undefined);
  process.exit(1);
});
