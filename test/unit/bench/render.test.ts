import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderResults, sectionSummary } from '../../../bench/render/index.js';
import { restartMarkdown } from '../../../bench/render/restart.js';
import { fromJson, toJson, SECTIONS, type BenchResults } from '../../../bench/results.js';
import { isAmbientError } from '../../../src/util/errors.js';
import { committedLifecycle, committedRun, lifecycle, restart, startLog } from './fixture.js';

/** test/unit/bench/golden (tests run from dist/test/unit/bench) */
const GOLDEN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'test', 'unit', 'bench', 'golden');
const golden = (name: string): string => fs.readFileSync(path.join(GOLDEN, name), 'utf8');
const lines = (md: string): string[] => md.split('\n');

test('bench render: the header and "How to read" of the committed full run, byte for byte', () => {
  const md = renderResults(committedRun());
  assert.equal(md.slice(0, md.indexOf('## 1. ')), golden('header.md'));
});

test('bench render: sections 8-10 of the committed full run, byte for byte', () => {
  const md = renderResults(committedRun());
  assert.equal(md.slice(md.indexOf('## 8. ')), golden('sections-8-10.md'));
});

test("bench render: section 11 as the pre-renderer code wrote it (but the soak table's two rows)", () => {
  const md = renderResults({ ...committedRun(), lifecycle: committedLifecycle() });
  const notSoakRow = (l: string): boolean => !/^\| n[12] \| \d/.test(l);
  const got = lines(md.slice(md.indexOf('## 11. '))).filter(notSoakRow);
  const want = lines(golden('section-11.md')).filter(notSoakRow);
  assert.equal(lines(golden('section-11.md')).length - want.length, 2);
  assert.deepEqual(got, want);
});

test('bench render: JSON round trip renders the same markdown (NaN survives)', () => {
  const r: BenchResults = { ...committedRun(), lifecycle: lifecycle() };
  const text = toJson(r);
  assert.doesNotThrow(() => JSON.parse(text), 'plain JSON');
  assert.match(text, /"NaN"/);
  const back = fromJson(text);
  assert.ok(Number.isNaN(back.lifecycle!.detection.partitionMs.server[0]));
  assert.equal(renderResults(back), renderResults(r));
});

test('bench render: fromJson refuses what is not a results file, with a typed error', () => {
  for (const bad of ['{}', '{"version": 2, "run": {}}', 'null']) {
    assert.throws(
      () => fromJson(bad),
      (e: unknown) => isAmbientError(e) && e.code === 'TOOL_FAILED' && e.hint.length > 0,
      bad,
    );
  }
});

test('bench render: sections appear only when measured, numbered 1-11 in order', () => {
  const full = renderResults({ ...committedRun(), lifecycle: lifecycle() });
  const heads = lines(full)
    .filter((l) => /^## \d+\./.test(l))
    .map((l) => Number(/^## (\d+)\./.exec(l)![1]));
  assert.deepEqual(heads, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  const { sameNode: _s, enroll: _e, hbone: _h, restart: _r, ...rest } = committedRun();
  const partial = renderResults({ ...rest, run: { ...rest.run, sections: ['policy', 'observability'], partial: true } });
  assert.deepEqual(
    lines(partial).filter((l) => l.startsWith('## ')),
    [
      '## How to read',
      '## 8. Connection set-up latency vs number of AuthorizationPolicies',
      '## 9. Cost of observability: agent CPU per request, /metrics scrape under 1000 connections',
    ],
  );
  assert.ok(lines(partial).includes('- sections: policy, observability (a partial run: `--only`)'));
  assert.ok(!partial.includes('same-node (sections 1-2)') && !partial.includes('cross-node (sections 4-7)') && !partial.includes('; nghttpx 1.52.0'));
  assert.ok(lines(partial).includes('- node v20.20.2; iperf3 3.12; sockperf 3.7-no.git'));
});

test('bench render: quick runs say so', () => {
  const r = committedRun();
  const md = renderResults({ ...r, run: { ...r.run, quick: true }, restart: { ...restart(), quick: true } });
  assert.ok(lines(md).includes('> **Quick smoke run** (~1 s per measurement, 10 pods): the figures are not representative.'));
  assert.match(md, /Section run time 73 s\. \*\*Quick run\*\*: 1 round each, 8 s of load, 20 pods in \(b\)\./);
  assert.match(md, /\*\*Quick run: 200 pods instead of 200, 1 round\.\*\*/);
});

test('bench render: sections 1-3 key lines', () => {
  const md = lines(renderResults(committedRun()));
  assert.ok(md.includes('## 1. Same-node throughput (iperf3, 1 stream, 5 s)'));
  assert.ok(
    md.includes(
      '| path | Gbit/s (mean) | per block (direct of the block) | runs completed | × direct | sender Gbit/s | machine CPU % | agent % of a core | peak kernel TCP mem MiB |',
    ),
  );
  // agent+sockmap against the direct figure of its own block
  assert.ok(md.includes('| agent+sockmap | 4.72 | 4.72 (13.58) | 1/1 | 0.35 | 6.79 | 93 | 93 | 1297 |'));
  assert.ok(md.some((l) => l.startsWith('| agent (no accel) | 4.72 | 4.72* (14.80) | 0/1 (Cannot allocate memory after 3 s) | 0.32 |')));
  assert.ok(
    md.some((l) =>
      l.startsWith('\\* **1 of 4 iperf3 runs broke off**: agent (no accel) block 2: `unable to write to stream socket: Cannot allocate memory` after 3 s'),
    ),
  );
  assert.ok(md.some((l) => l.startsWith('With sockmap the sender writes 2.1 Gbit/s more than arrives')));
  assert.ok(md.some((l) => l.includes('(`net.ipv4.tcp_mem` here: 287898 / 383867 / 575796 pages)')));
  assert.ok(md.includes('## 2. 1 KB request/response latency (`sockperf ping-pong --tcp -m 1024 --full-rtt`, 5 s)'));
  assert.ok(md.includes('### Client, server and agent pinned to CPU 0 (`taskset`)'));
  assert.ok(md.includes('| agent+sockmap | 34.0 | 74.5 | +17.5 | +52.8 | 2.06 | 34.0/74.5 (16.5/21.7) | 38 |'));
  assert.ok(md.includes('## 3. Enrollment latency (1 node × 100 pods, 4 pods enrolled one at a time)'));
  assert.ok(md.includes('| first redirected connect - t0 (prober) | 3/4 | 22.6 | 26.4 | 26.4 | 26.4 |'));
  assert.ok(md.includes('Target p99 <= 100 ms (first redirected connect): **NOT met** (p99 26.4 ms; 1 pods never redirected within 5 s).'));
  assert.ok(md.includes('| n1-p8 | - | 2.0 | - | - | 3.8 | 0 |'));
});

test('bench render: sections 4-7 key lines', () => {
  const md = lines(renderResults(committedRun()));
  assert.ok(md.includes('## 4. Cross-node throughput (iperf3, 1 and 4 streams, 5 s)'));
  assert.ok(md.includes('| HBONE (2 agents) | 1 | 2.47 | 2.47 | 0.20 | 0.65 | 2.48 | 82 | agent n1 69, agent n2 60 |'));
  assert.ok(md.some((l) => l.startsWith('connections the tool opened (2 of 5 throughput/latency measurements were HBONE ones')));
  assert.ok(md.includes("Target: HBONE throughput >= the nghttpx tunnel's: **NOT met** (HBONE / tunnel × 0.65 averaged over streams and blocks)."));
  assert.ok(md.includes('Every path is CPU-bound on this 2-CPU machine: the client and server, the kernel'));
  assert.ok(md.includes('(`perf` was not available or failed: no per-category breakdown.)'));
  assert.ok(md.includes('| HBONE (2 agents) | 129.8 | 329.3 | +107.2 | +274.5 | 5.74 | 129.8/329.3 (22.6/54.8) | agent n1 29, agent n2 29 |'));
  assert.ok(md.includes('| HBONE (2 agents) | 782 | 0.08 | 3916 (0) | 18.04 / 68.95 | 77 | agent n1 51, agent n2 60 | 3916 / 3916 |'));
  assert.ok(md.includes('CPU per HBONE connection (% of a core / conn/s): client-side agent 652 µs, server-side agent 767 µs; the machine was 77% busy.'));
  assert.ok(md.includes('## 7. Agent memory per idle HBONE connection (1000 connections)'));
  assert.ok(md.includes('| client side (n1) | 115.1 | 128.9 | 14.13 | **NOT met** |'));
  assert.ok(md.includes('| server side (n2) | 126.3 | 128.8 | 2.56 | met |'));
  assert.ok(md.includes('Target: <= 4 KiB per idle connection (ztunnel: ≈3.8 KB): **NOT met**.'));
});

test('bench render: section 10 lists what went wrong, in the order it happened', () => {
  const r = restart();
  const [run1] = r.handover.runs;
  const n1 = run1!.restarts[0]!;
  n1.error = {
    message: 'agent n1 not ready within 60000 ms',
    handoverSocket: '/run/x/n1/handover.sock',
    socketExistedBefore: false,
    previousPid: 41,
    logTail: ['{"msg":"a"}', '{"msg":"b"}'],
  };
  n1.readyMs = null;
  n1.log = startLog({ problems: ['{"level":"error","msg":"EADDRINUSE"}'] });
  const n2 = run1!.restarts[1]!;
  n2.oldGoneAfterMs = null;
  n2.socketMissing = { path: '/run/x/n2/handover.sock', oldPid: 50, newPid: 51, logTail: ['{"msg":"c"}'] };
  r.startup.steps[0] = {
    round: 1,
    kind: 'hand-over',
    readyMs: NaN,
    stopMs: null,
    log: startLog(),
    failure: { message: 'boom', handoverSocket: '/run/x/n1/handover.sock', socketExistedBefore: true, previousPid: 7, logTail: [] },
  };
  const md = restartMarkdown(r).join('\n');
  const anomalies = lines(md.slice(md.indexOf('**Anomalies and warnings'))).filter((l) => l.startsWith('- '));
  // per node: the failed restart, then what each node's log and exit say; (b) after (a)
  assert.deepEqual(
    anomalies.map((l) => l.slice(0, 60)),
    [
      "- round 1 hand-over: `restartAgent('n1', {handover: true})` ",
      '- round 1 hand-over, n1 agent.log: `{"level":"error","msg":"',
      '- round 1 hand-over: the old agent of n2 (pid 100) was still',
      '- round 1 hand-over: after the restart of n2 (old pid 50 gon',
      '- round 1 hand-over: `restartAgent` failed: boom. Its log si',
    ],
  );
  assert.match(
    md,
    /failed: agent n1 not ready within 60000 ms — the hand-over socket \/run\/x\/n1\/handover.sock did not exist before this restart although agent pid 41 was running\. Its log since the restart \(without access-log lines\):\n\n {2}```\n {2}\{"msg":"a"\}\n {2}\{"msg":"b"\}\n {2}```\n\n {2}The bench then stopped pid 41 and started a fresh agent\./,
  );
  assert.match(
    md,
    /the old agent of n2 \(pid 100\) was still running 75 s after the restart \(drainTimeout 60s\); see \/run\/ambientd-sandbox-bench\/n2\/agent.log/,
  );
  assert.match(md, /this round has no hand-over figure\./);
  // the failed restart is in no table and no median
  assert.ok(md.includes('| 1 | hand-over | 1st | 0 / 2000 | - | 0 | - | 43 | n1 2.0–2.6 s, n2 2.6–3.0 s | **failed** / 409 |'));
  assert.ok(md.includes('| (1) restart with hand-over: `restartAgent` readyMs | 515, 512 | 512 | 1.25 |'));
  assert.match(md, /\*\*Target: 0 refused at 200\/s with hand-over: met\*\*/);
});

test('bench render: section 11 (lifecycle)', () => {
  const md = lines(renderResults({ ...committedRun(), lifecycle: lifecycle() }));
  assert.ok(md.includes('## 11. Nothing leaks, nothing balloons: detection, a non-reading app, liveness cost, soak'));
  assert.ok(md.includes('| client-side agent (n1) | 15 | 30 | 30 |'));
  assert.ok(md.includes('| client (n1: PING timeout, app reset) | 7800 | 7800 | 1.30 |'));
  assert.ok(md.includes('| 10 | 10 | 256 | 100.0 -> 103.3 | **+3.3** | 20.5 | 1 -> 80 |'));
  assert.ok(md.includes('| 30s (default) | 1000 | 0.50 | 0.60 |'));
  assert.ok(
    md.some(
      (l) =>
        l.startsWith('60 s: 200 new connections/s n1-p1 -> n2-p1 (`nettool rate`: 12000 attempted, 0 failed), 100 held connections') &&
        l.includes('(1: 60 s: n2 (ready in 500 ms)); drainTimeout 2 min.') &&
        l.endsWith('Slopes by least squares after the first 20 s.'),
    ),
  );
  // fds of n1 grow 1 per 10 s = 6 per minute; n2's RSS 1 MiB per minute; a missing heap sample is skipped
  assert.ok(md.includes('| n1 | 42–45 | 6.000 | 100.0–100.0 | 0.000 | 20.0–20.0 | 0.000 |'));
  assert.ok(md.includes('| n2 | 50–50 | 0.000 | 110.3–110.8 | 1.000 | 21.0–21.0 | 0.000 |'));
});

const caRun = (): NonNullable<BenchResults['ca']> => ({
  quick: false,
  issuance: { sequentialMs: [10, 20, 30, 40], concurrency: 16, concurrentCerts: 600, concurrentSeconds: 10, errors: 0, caMeanMs: 5.5, caIssued: 904 },
  firstConnection: [
    { ca: 'cluster', samplesMs: [40, 60, null] },
    { ca: 'embedded', samplesMs: [20, 30, 25] },
  ],
  startup: [
    { ca: 'cluster', pods: 100, ambientPods: 50, readyMs: 1500, allCertsMs: 2500 },
    { ca: 'embedded', pods: 100, ambientPods: 50, readyMs: 1200, allCertsMs: null },
  ],
});

test('bench render: section 12 (the cluster CA)', () => {
  const md = lines(renderResults({ ...committedRun(), ca: caRun() }));
  assert.ok(md.some((l) => l.startsWith('## 12. The cluster CA')));
  assert.ok(md.includes('| one request after another (ms, client side) | 4 | 20.0 | 40.0 | 40.0 | 40.0 |'), md.join('\n'));
  assert.ok(md.some((l) => l.includes('600 certificates in 10.0 s = **60.0 certificates/s**')));
  assert.ok(md.some((l) => l.includes('mean over all 904 issued requests') && l.endsWith(': 5.5 ms.')));
  assert.ok(md.includes('| cluster | 2/3 | 40 | 60 | 40, 60, - |'));
  assert.ok(md.includes('| embedded | 100 (50) | 1200 | - |'));
});

/** Section 13: two rounds; IPv6 is 1.0x / 1.2x the IPv4 figure (mesh 1-stream throughput: 0.8x in round 1, 0.9x in round 2). */
const ipv6Run = (): NonNullable<BenchResults['ipv6']> => {
  const trials: NonNullable<BenchResults['ipv6']>['trials'] = [];
  for (const round of [1, 2])
    for (const path of ['same-node direct', 'same-node mesh', 'cross-node direct', 'cross-node mesh'] as const)
      for (const metric of ['tput1', 'tput4', 'rr', 'cps'] as const)
        for (const family of ['ipv4', 'ipv6'] as const) {
          const mesh = path.endsWith('mesh');
          const base = metric === 'rr' ? 100 : metric === 'cps' ? 1000 : 2;
          const k = family === 'ipv4' ? 1 : mesh && metric === 'tput1' && path.startsWith('cross') ? (round === 1 ? 0.8 : 0.9) : metric === 'rr' ? 1.2 : 1;
          trials.push({
            variant: 'default',
            path,
            metric,
            round,
            family,
            value: base * k,
            p99: metric === 'rr' ? 1000 : null,
            ops: metric === 'rr' ? 10_000 : metric === 'cps' ? 2000 : (base * k * 1e9 * 2) / 8,
            agentCpuS: mesh ? (path.startsWith('cross') ? { n1: 0.6, n2: 0.4 } : { n1: 1 }) : null,
            machineBusyPct: 100,
            failed: null,
            verify: null,
          });
        }
  const pods = { src: 'a', dst: 'b' };
  return {
    quick: false,
    seconds: 2,
    rounds: 2,
    cpsConcurrency: 16,
    rrCount: 10_000,
    pinCpu: 0,
    cpus: 2,
    pods: { 'same-node direct': pods, 'same-node mesh': pods, 'cross-node direct': pods, 'cross-node mesh': pods },
    variants: [{ name: 'default', agentSettings: {} }],
    upMs: 1000,
    trials,
  };
};

test('bench render: section 13 (IPv6 against IPv4): per-round ratios, mesh ÷ direct, agent CPU per unit', () => {
  const md = lines(renderResults({ ...committedRun(), ipv6: ipv6Run() }));
  assert.ok(md.some((l) => l.startsWith('## 13. IPv6 against IPv4 through the mesh')));
  // 2 Gbit/s for 2 s with 1 CPU s: 50 % of a core / 2 Gbit/s = 25 % of a core per Gbit/s (v4); v6 moved 0.8 and 0.9 of it
  assert.ok(
    md.includes(
      '| cross-node mesh | 1 stream, Gbit/s | 2.00 | 1.70 | **0.85** | 0.80–0.90 | **0.85** | 25.0 / 29.5 % core per Gbit/s (n1 15.0 / 17.7, n2 10.0 / 11.8) |',
    ),
    md.join('\n'),
  );
  assert.ok(md.includes('| same-node direct | 1 KiB rr p50, µs | 100 | 120 | **1.20** | 1.20 |  |  |'));
  assert.ok(md.includes('| same-node mesh | 1 KiB rr p50, µs | 100 | 120 | **1.20** | 1.20 | 1.00 | 100 / 100 µs per round trip |'));
  assert.ok(
    md.includes('| cross-node mesh | new connections/s | 1000 | 1000 | 1.00 | 1.00 | 1.00 | 500 / 500 µs per connection (n1 300 / 300, n2 200 / 200) |'),
  );
});

test('bench render: section 13 with two variants: the first ÷ the second per mesh path, measure and family, from the same rounds', () => {
  const one = ipv6Run();
  const slower = one.trials.map((t) => ({ ...t, variant: 'client-address', value: t.metric === 'cps' ? t.value * 0.9 : t.value }));
  const r = {
    ...one,
    variants: [
      { name: 'client-address', agentSettings: { clientAddress: 'preserve' } },
      { name: 'pod-address', agentSettings: { clientAddress: 'pod' } },
    ],
    trials: [...slower, ...one.trials.map((t) => ({ ...t, variant: 'pod-address' }))],
  };
  const md = lines(renderResults({ ...committedRun(), ipv6: r }));
  assert.ok(
    md.some((l) => l.startsWith('### client-address ÷ pod-address')),
    md.join('\n'),
  );
  assert.ok(md.includes('| cross-node mesh | new connections/s | ipv6 | 900 | 1000 | 0.90 | 0.90 |'), md.join('\n'));
  assert.ok(md.includes('| same-node mesh | 1 stream, Gbit/s | ipv4 | 2.00 | 2.00 | 1.00 | 1.00 |'));
  assert.ok(!md.some((l) => l.includes('| same-node direct |') && l.includes('| ipv4 |')), 'direct paths do not depend on agent settings');
});

/** Section 14: two rounds of three variants, figures chosen so every ratio is known. */
const workersRun = (): NonNullable<BenchResults['workers']> => {
  const variants = [
    { name: 'workers 1', workers: 1 },
    { name: 'workers 2', workers: 2 },
    { name: 'main thread (workers 0)', workers: 0 },
  ];
  const trials: NonNullable<BenchResults['workers']>['trials'] = [];
  for (const round of [1, 2])
    for (const v of variants) {
      const k = v.workers === 2 ? 2 : 1;
      const t = (
        metric: NonNullable<BenchResults['workers']>['trials'][number]['metric'],
        path: string,
        value: number,
        extra: Partial<NonNullable<BenchResults['workers']>['trials'][number]> = {},
      ) =>
        trials.push({
          variant: v.name,
          workers: v.workers,
          round,
          metric,
          path,
          value,
          p99: null,
          ops: 1,
          agentCpuS: null,
          shares: null,
          failed: null,
          ...extra,
        });
      t('cps', 'mesh', 1000 * k, {
        ops: 4000 * k,
        agentCpuS: [0.4 * k, 0.8 * k],
        shares:
          v.workers === 2
            ? [
                [2200, 1800],
                [4000, 0],
              ]
            : null,
      });
      t('cps', 'direct', 4000);
      t('tput1', 'mesh', 2, { ops: 8, agentCpuS: [4, 4] });
      t('tput1', 'nghttpx', 2, { ops: 8, agentCpuS: [2] });
      t('tput4', 'mesh', 3);
      t('tput4', 'nghttpx', 2);
      t('rr', 'mesh', 200, { p99: 400 });
      t('rr', 'direct', 100, { p99: 200 });
      t('scrape', 'quiet', 300, { p99: 1000 });
      t('scrape', 'scraped', 300, { p99: 1200 });
      t('scale', 'same-node', 500 * k);
      t('heap', 'idle', 3000, { heapPerConn: [2048, 4096] });
    }
  return { quick: false, seconds: 4, rounds: 2, idle: 1000, cpus: 2, variants, trials };
};

test('bench render 14: each figure beside its baseline per variant, the goals met or missed', () => {
  const md = lines(renderResults({ ...committedRun(), workers: workersRun() }));
  assert.ok(
    md.some((l) => l.startsWith('## 14. The data plane on worker threads')),
    md.join('\n'),
  );
  assert.ok(
    md.includes(
      '| new HBONE connections/s (16 loops, 1-byte echo), mesh / direct | 1000 / 4000 = **0.25×** | 2000 / 4000 = **0.50×** | 1000 / 4000 = **0.25×** | ≥ 0.5× |',
    ),
    md.join('\n'),
  );
  assert.ok(md.includes('| agent CPU per new connection, client side / server side | 100 / 200 µs | 100 / 200 µs | 100 / 200 µs | ≤ 150 µs |'));
  assert.ok(md.includes('| client agent CPU per Gbit/s ÷ h2fwd (1 stream) | **2.00×** | **2.00×** | **2.00×** | ≤ 1.1× |'));
  assert.ok(
    md.includes(
      '| 1 KiB round trip p50, pinned: mesh / direct (added) | 200 / 100 µs (**+100 µs**) | 200 / 100 µs (**+100 µs**) | 200 / 100 µs (**+100 µs**) | ≤ 120 µs added |',
    ),
  );
  assert.ok(
    md.includes(
      "| largest deviation of a worker's share from the mean (cps): client side (per connection) / server side (inbound HBONE, per session) | — | 10% / 100% | — | ±20% |",
    ),
    md.join('\n'),
  );
  assert.ok(md.includes('| per-worker share within ±20% (connections the kernel spreads: the client side) | — | met |'));
  assert.ok(md.includes('Scaling, where the agent is the bottleneck: **2.00×** with 2 workers against 1 (goal ≥ 1.6×: met).'));
  assert.ok(md.includes('| connections/s ≥ 0.5× direct | **missed** | met |'));
  assert.ok(md.includes('| live heap ≤ 4 KiB per idle connection | met | met |'));
});

test('bench render: the stdout summary of each section', () => {
  const r: BenchResults = { ...committedRun(), lifecycle: lifecycle(), ca: caRun(), ipv6: ipv6Run(), workers: workersRun() };
  for (const s of SECTIONS) assert.ok(sectionSummary(r, s).length > 0, s);
  const sameNode = sectionSummary(r, 'same-node').join('\n');
  assert.match(sameNode, /^agent\+sockmap +4\.72 +4\.72 \(13\.58\)/m);
  assert.match(sectionSummary(r, 'enroll').join('\n'), /target p99 <= 100 ms: NOT met; without the first 2 \(cold\) enrollments: p99 13\.8 ms/);
  assert.match(sectionSummary(r, 'hbone').join('\n'), /targets: HBONE throughput >= nghttpx tunnel: NOT met \(× 0\.65 on average\)/);
  assert.match(sectionSummary(r, 'policy')[0]!, /^## Connection set-up latency/);
  assert.deepEqual(sectionSummary({ version: 1, run: r.run }, 'policy'), []);
});
