/**
 * ambientd benchmarks, all in one run (needs root, a built tree, iperf3,
 * sockperf and nghttpx; perf optional; `make bench` builds first):
 *
 *   node dist/bench/run.js [--quick] [--only SECTION[,SECTION...]] [--out FILE] [--soak-seconds N]
 *
 *   sections: same-node (1-2, bench/same-node.ts), enroll (3, bench/enroll.ts),
 *             hbone (4-7, bench/hbone.ts), policy (8, bench/policy-setup.ts),
 *             observability (9, bench/observability.ts), restart (10, bench/restart.ts),
 *             lifecycle (11, bench/lifecycle.ts), ca (12, bench/ca.ts), ipv6 (13, bench/ipv6.ts),
 *             workers (14, bench/workers.ts)
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
 *   8. connection set-up latency with 0, 100 and 10 000 AuthorizationPolicies
 *   9. agent CPU per 1000 requests, /metrics scrape cost under 1000 connections
 *   10. agent restarts: refused connections at 200 new connections/s during a
 *      rolling restart with hand-over vs stop-then-start, and the agent's
 *      start-up time to ready with 100 enrolled pods (hand-over, no hand-over,
 *      warm and cold start)
 *   11. nothing leaks, nothing balloons: detection time after a peer agent's
 *      death and after a partition, a non-reading app (10/100/300 connections x
 *      8 MiB), the CPU cost of keepalive and PING with 10 000 idle connections,
 *      and a soak (200 new connections/s, 100 held, an agent restart every
 *      minute) with the slopes of fds, RSS and live heap
 *   12. the cluster CA in its own process: issuance p50/p99 and certificates/s,
 *      enrollment -> first HBONE connection and the start-up of a node with 100
 *      pods, each with the cluster CA and with the embedded one
 *   13. IPv6 against IPv4 in one dual-stack sandbox: throughput (1 and 4
 *      streams), 1 KB latency p50/p99 and connections/s, same node and cross
 *      node, through the mesh and direct, the families alternating; the
 *      IPv6/IPv4 ratios and the agents' CPU per family
 *   14. the data plane on worker threads, with workers 1 and 2 and on the main
 *      thread (workers 0), each beside its baseline in the same round:
 *      connections/s and CPU per connection, bulk against the nghttpx tunnel,
 *      CPU per Gbit/s against h2fwd, added 1 KiB latency, latency while
 *      /metrics is scraped, scaling where the agent is the bottleneck, live
 *      heap per idle connection, each worker's share
 *
 * Each section returns its figures as data (bench/results.ts); once all have
 * run, the renderer (bench/render/) writes them as markdown to
 * bench/RESULTS.md and the data itself to bench/RESULTS.json (--quick: ~1 s
 * per measurement, 10 pods, written to $TMPDIR/ambientd-bench-RESULTS.quick.md
 * unless --out; --only: to $TMPDIR/ambientd-bench-RESULTS.<sections>.md unless
 * --out; the JSON always next to the markdown). `node dist/bench/render.js
 * FILE.json` renders a run again. Progress and a summary of each section go to
 * stdout. See bench/README.md for what each figure means.
 *
 * The run refuses to start while another sandbox (netns ambs-*) exists: it
 * waits for it to go away instead of tearing it down. It always removes its
 * own sandbox and kills every process it started, also on failure or Ctrl-C.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SANDBOX_DIR_NAME, SANDBOX_LOCK, DEFAULT_CGROUP_ROOT, DEFAULT_BPFFS_ROOT, sandboxDown } from '../tools/sandbox/index.js';
import { isAmbientError } from '../src/util/errors.js';
import { execFileP, now, killAll, backgroundLoad, sandboxNetns, getLatencyTool, setLatencyTool, cpuModel, toolVersion, toolFailed } from './lib.js';
export { parseSockperf } from './lib.js';
import { jsonPathFor, parseArgs } from './options.js';
import { RESULTS_VERSION, SECTIONS, toJson, type BenchResults, type RunInfo, type Section } from './results.js';
import { backgroundText, renderResults, sectionSummary } from './render/index.js';
import { sameNodeBench } from './same-node.js';
import { enrollmentBench } from './enroll.js';
import { hboneBenchmarks } from './hbone.js';
import { policySetupBench } from './policy-setup.js';
import { observabilityBench } from './observability.js';
import { restartBench } from './restart.js';
import { lifecycleBench } from './lifecycle.js';
import { caBench } from './ca.js';
import { ipv6Bench } from './ipv6.js';
import { workersBench } from './workers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const STATE_DIR = '/run/ambientd-sandbox-bench';
const OPTS = { stateDir: STATE_DIR };

async function main(): Promise<void> {
  const parsed = parseArgs(process.argv.slice(2), ROOT);
  if (!parsed.ok) {
    (parsed.exitCode === 0 ? process.stdout : process.stderr).write(parsed.message);
    process.exit(parsed.exitCode);
  }
  const o = parsed.options;
  if (process.getuid?.() !== 0) throw toolFailed('the benchmarks need root (network namespaces, cgroups, BPF)', 'run as root: sudo node dist/bench/run.js');
  for (const f of [path.join(ROOT, 'dist', 'bench', 'prober.js'), path.join(ROOT, 'dist', 'src', 'cli.js'), path.join(ROOT, 'bpf', 'ambient.bpf.o')]) {
    if (!fs.existsSync(f)) throw toolFailed(`${f} is missing`, 'run `make build` (or `make bench`, which builds first)');
  }
  const command = ['node', 'dist/bench/run.js', ...process.argv.slice(2)].join(' ');
  const started = new Date();
  const tree = await gitTree(); // what dist/ was presumably built from: taken now, the tree may move during the run
  const tStart = now();
  const log = (s: string): void => void process.stdout.write(s + '\n');
  log(`ambientd benchmarks (${o.quick ? 'quick smoke run' : 'full run'}): ${command}`);
  const background = await backgroundLoad();
  const hogs = backgroundText(background);
  log(`background load before the run: ${background.busyPct.toFixed(0)}% of the machine${hogs.length ? ` (${hogs.join('; ')})` : ''}`);
  const versions: RunInfo['versions'] = {
    node: process.version,
    iperf3: await toolVersion('iperf3', ['--version']),
    sockperf: await toolVersion('sockperf', ['--version']),
    perf: await toolVersion('perf', ['--version']),
  };
  if (versions.sockperf === 'not found' && getLatencyTool() === 'sockperf') {
    log('sockperf not found: latency figures come from `nettool rr` (Node.js on both ends) instead');
    setLatencyTool('nettool');
  }

  const results: BenchResults = {
    version: RESULTS_VERSION,
    run: {
      date: started.toISOString(),
      elapsedS: NaN,
      quick: o.quick,
      command,
      sections: [...o.sections],
      partial: o.sections.size < SECTIONS.length,
      tree,
      machine: { kernel: os.release(), cpus: os.availableParallelism(), cpuModel: cpuModel(), memoryBytes: os.totalmem() },
      versions,
      background,
    },
  };
  const measure: Record<Section, () => Promise<void>> = {
    'same-node': async () => void (results.sameNode = await sameNodeBench(o, STATE_DIR, log)),
    enroll: async () => void (results.enroll = await enrollmentBench(o, STATE_DIR, log)),
    hbone: async () => void (results.hbone = await hboneBenchmarks(o.hbone, STATE_DIR, log)),
    policy: async () => void (results.policy = await policySetupBench({ quick: o.quick })),
    observability: async () => void (results.observability = await observabilityBench({ quick: o.quick })),
    restart: async () => void (results.restart = await restartBench({ quick: o.quick, stateDir: STATE_DIR, log })),
    lifecycle: async () => void (results.lifecycle = await lifecycleBench({ quick: o.quick, ...(o.soakSeconds ? { soakSeconds: o.soakSeconds } : {}) })),
    ca: async () => void (results.ca = await caBench({ quick: o.quick }, STATE_DIR, log)),
    ipv6: async () => void (results.ipv6 = await ipv6Bench({ quick: o.quick }, STATE_DIR, log)),
    workers: async () => void (results.workers = await workersBench({ quick: o.quick }, STATE_DIR, log)),
  };
  try {
    // in the order of SECTIONS (the report's), whatever the order of --only
    for (const sec of SECTIONS.filter((s) => o.sections.has(s))) {
      await measure[sec]();
      // Sections 1-7 leave their sandbox (and the machine-wide lock) up; the
      // others remove theirs themselves (a sandboxDown() here would wait for
      // whoever took the lock since).
      if (sec === 'same-node' || sec === 'enroll' || sec === 'hbone') {
        killAll();
        await sandboxDown(OPTS);
      }
      for (const line of sectionSummary(results, sec)) log(line);
    }
  } finally {
    killAll();
    await cleanUp(log);
  }
  const elapsed = (now() - tStart) / 1000;
  results.run.elapsedS = elapsed;

  const json = jsonPathFor(o.out);
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(json, toJson(results));
  fs.writeFileSync(o.out, renderResults(results));
  const rel = (f: string): string => path.relative(process.cwd(), f) || f;
  log(`\nwrote ${rel(o.out)} and ${rel(json)} (${elapsed.toFixed(0)} s)`);
}

/** Removes the sandbox and says whether the machine is clean. */
async function cleanUp(log: (s: string) => void): Promise<void> {
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
  else if (other !== null && !fs.existsSync(STATE_DIR))
    log(`sandbox removed; another process (pid ${other}) took the sandbox lock right after and now owns: ${left.join(', ')}`);
  else log(`WARNING: left behind: ${left.join(', ')}`);
}

/** The commit measured, and how many files under src/, bpf/, native/ differed from it. */
async function gitTree(): Promise<RunInfo['tree']> {
  try {
    const { stdout: head } = await execFileP('git', ['-C', ROOT, 'log', '-1', '--format=%h %s']);
    const { stdout: st } = await execFileP('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'bpf', 'native']);
    return { commit: head.trim().slice(0, 100), dirtyFiles: st.split('\n').filter(Boolean).length };
  } catch {
    return { commit: null, dirtyFiles: 0 };
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
  process.stderr.write(`bench failed: ${isAmbientError(e) ? `${e.describe()}\n` : ''}${e.stack ?? e.message}\n`);
  killAll();
  await sandboxDown(OPTS).catch(() => undefined);
  process.exit(1);
});
