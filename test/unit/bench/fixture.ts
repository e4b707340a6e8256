// Over 500 lines on purpose: recorded data only (a whole benchmark run, figure by figure), no logic.
/**
 * Recorded benchmark results, written by hand, for the renderer's tests.
 *
 * committedRun() holds the figures of the full run of 2026-11-22 (commit
 * 9099012) whose bench/RESULTS.md was rendered by the pre-renderer code: its
 * header and sections 8-10 are in golden/, and the renderer must reproduce
 * them byte for byte. Where that markdown shows rounded figures, the raw ones
 * here are chosen to round the same way (e.g. 9709.4 µs prints 9709 and makes
 * the ratio 1.22). Sections 1-7 and 11 hold small made-up data.
 */
import type {
  BenchResults,
  HandoverWindowResults,
  ModeRun,
  NodeRestart,
  RateJson,
  RestartResults,
  StartLog,
  StartStep,
  StartupResults,
} from '../../../bench/results.js';

export const startLog = (over: Partial<StartLog> = {}): StartLog => ({
  spawnToLoadedMs: null,
  loadedToReadyMs: null,
  spawnToReadyMs: null,
  enrolled: null,
  podsAdopted: 0,
  podsAttached: 0,
  socketsTaken: null,
  socketsRejected: null,
  drained: null,
  problems: [],
  failedConns: [],
  ...over,
});

const rate = (failed: number, errors: Record<string, number>, windowMs: number, firstFailureMs: number | null, maxConnectMs: number): RateJson => ({
  attempted: 2000,
  ok: 2000 - failed,
  failed,
  errors,
  firstFailureMs,
  windowMs,
  maxConnectMs,
  seconds: 10,
});

function restartOf(
  node: 'n1' | 'n2',
  atMs: number,
  doneMs: number,
  readyMs: number,
  drained: [number, number],
  socketsTaken: number | null,
  over: Partial<StartLog> = {},
): NodeRestart {
  return {
    node,
    oldPid: 100,
    newPid: 200,
    readyMs,
    atMs,
    doneMs,
    oldGoneAfterMs: 100,
    logFile: `/run/ambientd-sandbox-bench/${node}/agent.log`,
    log: startLog({
      socketsTaken,
      socketsRejected: socketsTaken === null ? null : 0,
      drained: { ms: drained[0], connectionsAtStart: drained[1], closedAtDeadline: 0 },
      ...over,
    }),
    error: null,
    socketMissing: null,
  };
}

const failedConns = (n: number): Array<Record<string, unknown>> =>
  Array.from({ length: n }, () => ({
    time: '2026-11-22T17:02:00.000Z',
    direction: 'outbound',
    via: 'hbone',
    src: '10.0.1.2:40000',
    dst: '10.0.2.2:7000',
    reason: 'HBONE_CONNECT',
    durationMs: 1,
  }));

function handoverRuns(): ModeRun[] {
  const ho = (
    round: number,
    order: 1 | 2,
    slowest: number,
    r: [number, number],
    d: [[number, number], [number, number]],
    times: [number, number, number],
    hold: [number, number],
  ): ModeRun => ({
    round,
    mode: 'hand-over',
    order,
    rate: rate(0, {}, 0, null, slowest),
    rateRaw: '',
    rateExit: 0,
    hold: { rounds: hold[0], error: null, maxRttMs: hold[1] },
    holdRaw: '',
    holdExit: 0,
    restarts: [restartOf('n1', times[0], times[1], r[0], d[0], 6), restartOf('n2', times[1], times[2], r[1], d[1], 6)],
  });
  const stt = (
    round: number,
    order: 1 | 2,
    refused: number,
    reset: number,
    windowMs: number,
    first: number,
    slowest: number,
    r: [number, number],
    d: [[number, number], [number, number]],
    n2Problems: string[] = [],
  ): ModeRun => ({
    round,
    mode: 'stop-then-start',
    order,
    rate: rate(refused + reset, { ECONNREFUSED: refused, ECONNRESET: reset }, windowMs, first, slowest),
    rateRaw: '',
    rateExit: 0,
    hold: null,
    holdRaw: '',
    holdExit: null,
    restarts: [
      restartOf('n1', 2000, 2500, r[0], d[0], null, { failedConns: failedConns(reset) }),
      restartOf('n2', 2500, 3000, r[1], d[1], null, { problems: n2Problems }),
    ],
  });
  return [
    ho(
      1,
      1,
      43,
      [618, 409],
      [
        [7600, 1],
        [7100, 3],
      ],
      [2000, 2600, 3000],
      [191, 18],
    ),
    stt(
      1,
      2,
      95,
      109,
      1022,
      1904,
      43,
      [511, 513],
      [
        [100, 1],
        [100, 1],
      ],
      ['{"level":"warn","time":"2026-11-22T17:01:00.000Z","msg":"HBONE request rejected"}'],
    ),
    stt(
      2,
      1,
      73,
      91,
      913,
      1926,
      40,
      [460, 513],
      [
        [0, 0],
        [100, 2],
      ],
    ),
    ho(
      2,
      2,
      40,
      [513, 518],
      [
        [7700, 2],
        [7100, 4],
      ],
      [2000, 2500, 3100],
      [193, 16],
    ),
    ho(
      3,
      1,
      71,
      [407, 518],
      [
        [7700, 1],
        [7300, 3],
      ],
      [2000, 2400, 2900],
      [193, 21],
    ),
    stt(
      3,
      2,
      91,
      92,
      969,
      1920,
      48,
      [516, 515],
      [
        [100, 1],
        [100, 3],
      ],
    ),
  ];
}

export function handoverWindow(): HandoverWindowResults {
  return {
    rate: 200,
    drainTimeoutS: 60,
    echoPort: 7000,
    loadSeconds: 10,
    rounds: 3,
    controlSeconds: 3,
    upMs: 643,
    control: { attempted: 600, ok: 600, failed: 0, errors: {}, firstFailureMs: null, windowMs: 0, maxConnectMs: 47, seconds: 3 },
    controlRaw: '',
    runs: handoverRuns(),
  };
}

export function startup(): StartupResults {
  const log = (kind: string, spawnToReadyMs: number, adopted: boolean): StartLog => {
    const [loaded, ready] = ({ 'hand-over': [363, 136], 'no-hand-over': [333, 143], warm: [250, 132], cold: [232, 130] } as Record<string, [number, number]>)[
      kind
    ]!;
    return startLog({
      spawnToLoadedMs: loaded,
      loadedToReadyMs: ready,
      spawnToReadyMs,
      enrolled: 100,
      podsAdopted: adopted ? 100 : 0,
      podsAttached: adopted ? 0 : 100,
      socketsTaken: kind === 'hand-over' ? 303 : null,
      socketsRejected: kind === 'hand-over' ? 0 : null,
    });
  };
  const steps: StartStep[] = [];
  const ho = [723, 515, 512];
  const nho = [
    [568, 476],
    [567, 501],
    [461, 354],
  ];
  const warm = [
    [53, 512],
    [53, 410],
    [52, 410],
  ];
  const cold = [409, 411, 412];
  for (let i = 0; i < 3; i++) {
    const round = i + 1;
    const all: StartStep[] = [
      { round, kind: 'hand-over', readyMs: ho[i]!, stopMs: null, log: log('hand-over', 486, true), oldPid: 100, oldGoneAfterMs: 0, socketMissing: null },
      { round, kind: 'no-hand-over', readyMs: nho[i]![0]!, stopMs: null, log: log('no-hand-over', nho[i]![1]!, true) },
      { round, kind: 'warm', readyMs: warm[i]![1]!, stopMs: warm[i]![0]!, log: log('warm', 382, true) },
      { round, kind: 'cold', readyMs: cold[i]!, stopMs: 60, log: log('cold', 369, false), pinsRemoved: 100 },
    ];
    // the order rotates by one step from round to round
    for (let k = 0; k < 4; k++) steps.push(all[(k + i) % 4]!);
  }
  return { totalPods: 200, enrolledPods: 100, rounds: 3, upMs: 1133, steps };
}

export function restart(): RestartResults {
  return { quick: false, seconds: 73.2, handover: handoverWindow(), startup: startup() };
}

export function committedRun(): BenchResults {
  return {
    version: 1,
    run: {
      date: '2026-11-22T16:54:33.050Z',
      elapsedS: 509.7,
      quick: false,
      command: 'node dist/bench/run.js',
      sections: ['same-node', 'enroll', 'hbone', 'policy', 'observability', 'restart'],
      partial: false,
      tree: { commit: '9099012 sandbox test: the agent config carries handoverSocket and drainTimeout', dirtyFiles: 0 },
      machine: { kernel: '6.18.44-fc-v669', cpus: 2, cpuModel: 'AMD EPYC', memoryBytes: 24 * 2 ** 30 },
      versions: { node: 'v20.20.2', iperf3: '3.12', sockperf: '3.7-no.git', perf: '6.1.192' },
      background: { busyPct: 1.2, hogs: [] },
    },
    sameNode: {
      seconds: 5,
      blocks: ['sockmap', 'none', 'none', 'sockmap'],
      pinCpu: 0,
      tcpMemLimits: '287898 / 383867 / 575796',
      tput: [
        {
          path: 'direct',
          block: 1,
          recvGbps: 13.58,
          sentGbps: 13.58,
          failed: null,
          failedAfterS: null,
          captured: null,
          machineBusyPct: 65,
          agentCorePct: null,
          peakTcpMem: 9 << 20,
        },
        {
          path: 'agent+sockmap',
          block: 1,
          recvGbps: 4.72,
          sentGbps: 6.79,
          failed: null,
          failedAfterS: null,
          captured: 1,
          machineBusyPct: 93,
          agentCorePct: 93,
          peakTcpMem: 1297 << 20,
        },
        {
          path: 'agent (no accel)',
          block: 2,
          recvGbps: 4.72,
          sentGbps: 5.41,
          failed: 'unable to write to stream socket: Cannot allocate memory',
          failedAfterS: 3,
          captured: 1,
          machineBusyPct: 65,
          agentCorePct: 96,
          peakTcpMem: 10 << 20,
        },
        {
          path: 'direct',
          block: 2,
          recvGbps: 14.8,
          sentGbps: 14.8,
          failed: null,
          failedAfterS: null,
          captured: null,
          machineBusyPct: 65,
          agentCorePct: null,
          peakTcpMem: 9 << 20,
        },
      ],
      lat: [
        {
          path: 'direct',
          block: 1,
          tool: 'sockperf',
          pinned: true,
          p50: 16.5,
          p99: 21.7,
          avg: 17,
          samples: 100000,
          captured: null,
          machineBusyPct: 50,
          agentCorePct: null,
        },
        {
          path: 'agent+sockmap',
          block: 1,
          tool: 'sockperf',
          pinned: true,
          p50: 34.0,
          p99: 74.5,
          avg: 35,
          samples: 60000,
          captured: 1,
          machineBusyPct: 50,
          agentCorePct: 38,
        },
        {
          path: 'direct',
          block: 1,
          tool: 'sockperf',
          pinned: false,
          p50: 68.1,
          p99: 111.0,
          avg: 70,
          samples: 30000,
          captured: null,
          machineBusyPct: 50,
          agentCorePct: null,
        },
        {
          path: 'agent+sockmap',
          block: 1,
          tool: 'sockperf',
          pinned: false,
          p50: 103.1,
          p99: 186.4,
          avg: 110,
          samples: 20000,
          captured: 1,
          machineBusyPct: 50,
          agentCorePct: 35,
        },
      ],
    },
    enroll: {
      totalPods: 100,
      unroutable: { ip: '10.250.0.1', port: 80 },
      upMs: 1034,
      initialEnrollMs: 139,
      initialEnrolled: 50,
      fileBytes: 32 * 1024,
      yamlParseMs: 0.1,
      pods: [
        { pod: 'n1-p2', latencyMs: 26.4, writeMs: 12.5, renamedMs: 6.8, agentDoneMs: 25, agentMs: 3.77, attempts: 20 },
        { pod: 'n1-p4', latencyMs: 22.6, writeMs: 3.3, renamedMs: 1.9, agentDoneMs: 23, agentMs: 8.95, attempts: 17 },
        { pod: 'n1-p6', latencyMs: 13.8, writeMs: 8.7, renamedMs: 5.5, agentDoneMs: 11, agentMs: 1.46, attempts: 14 },
        { pod: 'n1-p8', latencyMs: null, writeMs: 3.8, renamedMs: 2.0, agentDoneMs: null, agentMs: null, attempts: 0 },
      ],
    },
    hbone: {
      options: { quick: false, seconds: 5, blocks: 2, cpsSeconds: 5, cpsConcurrency: 16, idleConns: 1000 },
      cpus: 2,
      pinCpu: 0,
      tput: [
        { path: 'direct', block: 1, streams: 1, recvGbps: 12.43, sentGbps: 12.43, failed: null, machineBusyPct: 68, cores: {}, verify: null },
        {
          path: 'hbone',
          block: 1,
          streams: 1,
          recvGbps: 2.47,
          sentGbps: 2.48,
          failed: null,
          machineBusyPct: 82,
          cores: { 'agent n1': 69, 'agent n2': 60 },
          verify: { outboundHbone: 2, outboundOther: 0, inboundHbone: 2, streamsOpened: 2, tunnelsOpened: 2 },
        },
        {
          path: 'nghttpx',
          block: 1,
          streams: 1,
          recvGbps: 3.82,
          sentGbps: 3.86,
          failed: null,
          machineBusyPct: 87,
          cores: { h2fwd: 67, nghttpx: 48, 'connect-proxy': 30 },
          verify: null,
        },
      ],
      lat: [
        { path: 'direct', block: 1, pinned: true, tool: 'sockperf', p50: 22.6, p99: 54.8, samples: 100000, machineBusyPct: 50, cores: {}, verify: null },
        {
          path: 'hbone',
          block: 1,
          pinned: true,
          tool: 'sockperf',
          p50: 129.8,
          p99: 329.3,
          samples: 20000,
          machineBusyPct: 50,
          cores: { 'agent n1': 29, 'agent n2': 29 },
          verify: { outboundHbone: 1, outboundOther: 0, inboundHbone: 1, streamsOpened: 1, tunnelsOpened: 1 },
        },
      ],
      cps: [
        { path: 'direct', block: 1, conns: 49194, failures: 0, errors: {}, rate: 9838, p50ms: 1.35, p99ms: 4.81, machineBusyPct: 85, cores: {}, verify: null },
        {
          path: 'hbone',
          block: 1,
          conns: 3916,
          failures: 0,
          errors: {},
          rate: 782,
          p50ms: 18.04,
          p99ms: 68.95,
          machineBusyPct: 77,
          cores: { 'agent n1': 51, 'agent n2': 60 },
          verify: { outboundHbone: 500, outboundOther: 0, inboundHbone: 500, streamsOpened: 3916, tunnelsOpened: 3916 },
        },
      ],
      rss: {
        conns: 1000,
        openMs: 877,
        client: { before: 115.1 * 1024, after: 128.9 * 1024 },
        server: { before: 126.3 * 1024, after: 128.8 * 1024 },
        openViaHbone: 1000,
        openInboundHbone: 1000,
        clientSessions: 10,
        clientActiveStreams: 1000,
        serverEstablished: 10,
        serverActiveStreams: 1000,
        tcpMemBefore: 0,
        tcpMemAfter: 0,
      },
      info: { nghttpx: '1.52.0', agentPids: [30053, 30052], tunnelPids: { h2fwd: 1, nghttpx: 2, 'connect-proxy': 3 }, tool: 'sockperf', upMs: 676 },
    },
    policy: {
      connections: 400,
      warmup: 30,
      otherNamespaces: 500,
      rows: [
        { policies: 0, p50Us: 3179, p90Us: 4922, p99Us: 7991, compileMs: null },
        { policies: 102, p50Us: 2565, p90Us: 4874, p99Us: 8982, compileMs: 9.2 },
        { policies: 10002, p50Us: 2254, p90Us: 3825, p99Us: 9709.4, compileMs: 519.6 },
      ],
    },
    observability: {
      cpu: {
        requests: 20000,
        wallS: 5.1,
        rr: { n: 20000, p50Us: 213, p90Us: 300, p99Us: 500 },
        agents: [
          { node: 'n1', cpuS: 1.92 },
          { node: 'n2', cpuS: 1.96 },
        ],
      },
      latency: {
        requests: 10000,
        rounds: 2,
        idleConnections: 1000,
        metricsPort: 15020,
        pacedMs: 250,
        runs: [
          { round: 1, mode: 'no scrape', rr: { n: 10000, p50Us: 286, p90Us: 436, p99Us: 942.4 }, scrapes: null },
          { round: 1, mode: 'scraping 4/s', rr: { n: 10000, p50Us: 271, p90Us: 383, p99Us: 858 }, scrapes: 26 },
          { round: 1, mode: 'scraping', rr: { n: 10000, p50Us: 3453, p90Us: 5936, p99Us: 11789 }, scrapes: 6262 },
          { round: 2, mode: 'no scrape', rr: { n: 10000, p50Us: 242, p90Us: 345, p99Us: 541.4 }, scrapes: null },
          { round: 2, mode: 'scraping 4/s', rr: { n: 10000, p50Us: 225, p90Us: 301, p99Us: 592 }, scrapes: 20 },
          { round: 2, mode: 'scraping', rr: { n: 10000, p50Us: 3015, p90Us: 5863, p99Us: 10422 }, scrapes: 7784 },
        ],
        stressScrapes: { count: 14046, p50Ms: 4.3, p99Ms: 9.4, meanBytes: 13.9 * 1024, maxBytes: 14.0 * 1024 },
      },
    },
    restart: restart(),
  };
}

/** Section 11, made up: 3 death trials, 1 partition, 2 non-reading rounds, a 60 s soak. */
export function lifecycle(): NonNullable<BenchResults['lifecycle']> {
  return {
    quick: true,
    detection: {
      deathTrials: 3,
      deathMs: { n1: [12, 15, 30], n2: [20, 22, 25] },
      partitionTrials: 1,
      peerTimeoutMs: 6000,
      partitionMs: { client: [7800], server: [NaN] },
    },
    nonReading: {
      writeMiB: 8,
      warmupMiB: 32,
      targetMiB: 64,
      rows: [
        {
          connections: 10,
          serverStreams: 10,
          streamWindowBytes: 262144,
          rssBeforeMiB: 100,
          rssAfterMiB: 103.25,
          boundMiB: 20.5,
          tcpBeforeMiB: 1,
          tcpAfterMiB: 80,
        },
        {
          connections: 100,
          serverStreams: 100,
          streamWindowBytes: 262144,
          rssBeforeMiB: 101,
          rssAfterMiB: 131,
          boundMiB: 60,
          tcpBeforeMiB: 2,
          tcpAfterMiB: 800,
        },
      ],
    },
    liveness: {
      idleConnections: 1000,
      seconds: 10,
      rows: [
        { peerTimeout: '1h', isDefault: false, n1CpuPct: 0.1, n2CpuPct: 0.2 },
        { peerTimeout: '30s', isDefault: true, n1CpuPct: 0.5, n2CpuPct: 0.6 },
      ],
    },
    soak: {
      seconds: 60,
      rate: { attempted: 12000, failed: 0, errors: {} },
      restarts: [{ atS: 60, node: 'n2', readyMs: 500 }],
      drainTimeoutS: 120,
      warmupS: 20,
      nodes: ['n1', 'n2'],
      samples: [0, 10, 20, 30, 40, 50].flatMap((t) => [
        { t, node: 'n1', fds: 40 + t / 10, rssMiB: 100, heapMiB: 20, agents: 1 },
        { t, node: 'n2', fds: 50, rssMiB: 110 + t / 60, heapMiB: t === 30 ? null : 21, agents: 1 },
      ]),
    },
  };
}

/**
 * Section 11 of the full run of 2026-12-02 (main at 58c4c19, the
 * pre-renderer code), golden/section-11.md. The soak's samples are made up:
 * its two table rows (ranges, slopes) are not compared.
 */
export function committedLifecycle(): NonNullable<BenchResults['lifecycle']> {
  const twenty = (median: number, max: number): number[] => [
    ...Array.from({ length: 9 }, (_, i) => 20 + i),
    median,
    ...Array.from({ length: 9 }, (_, i) => median + 1 + i),
    max,
  ];
  return {
    quick: false,
    detection: {
      deathTrials: 20,
      deathMs: { n1: twenty(36, 71), n2: twenty(36, 91) },
      partitionTrials: 5,
      peerTimeoutMs: 6000,
      partitionMs: { client: [5400, 5450, 5474, 5500, 5567], server: [5450, 5480, 5502, 5550, 5612] },
    },
    nonReading: {
      writeMiB: 8,
      warmupMiB: 32,
      targetMiB: 64,
      rows: [
        {
          connections: 10,
          serverStreams: 10,
          streamWindowBytes: 1 << 20,
          rssBeforeMiB: 78.5,
          rssAfterMiB: 80.0,
          boundMiB: 32.8,
          tcpBeforeMiB: 0,
          tcpAfterMiB: 47,
        },
        {
          connections: 100,
          serverStreams: 100,
          streamWindowBytes: 256 << 10,
          rssBeforeMiB: 80.26,
          rssAfterMiB: 115.14,
          boundMiB: 39.8,
          tcpBeforeMiB: 0,
          tcpAfterMiB: 512,
        },
        {
          connections: 300,
          serverStreams: 300,
          streamWindowBytes: 64 << 10,
          rssBeforeMiB: 115.5,
          rssAfterMiB: 133.5,
          boundMiB: 55.4,
          tcpBeforeMiB: 1,
          tcpAfterMiB: 1426,
        },
      ],
    },
    liveness: {
      idleConnections: 10000,
      seconds: 30,
      rows: [
        { peerTimeout: '1h', isDefault: false, n1CpuPct: 0.53, n2CpuPct: 1.53 },
        { peerTimeout: '30s', isDefault: true, n1CpuPct: 0.53, n2CpuPct: 1.23 },
        { peerTimeout: '4s', isDefault: false, n1CpuPct: 1.0, n2CpuPct: 0.97 },
      ],
    },
    soak: {
      seconds: 600,
      rate: { attempted: 120000, failed: 2, errors: { ECONNRESET: 2 } },
      restarts: (
        [
          [65, 'n2', 3122],
          [128, 'n1', 2227],
          [190, 'n2', 1344],
          [243, 'n2', 1660],
          [305, 'n1', 1325],
          [366, 'n1', 819],
          [428, 'n1', 921],
          [489, 'n2', 913],
          [551, 'n1', 827],
        ] as const
      ).map(([atS, node, readyMs]) => ({ atS, node, readyMs })),
      drainTimeoutS: 120,
      warmupS: 120,
      nodes: ['n1', 'n2'],
      samples: [120, 130, 140].flatMap((t) => [
        { t, node: 'n1', fds: 150, rssMiB: 110, heapMiB: 13, agents: 1 },
        { t, node: 'n2', fds: 150, rssMiB: 110, heapMiB: 13, agents: 1 },
      ]),
    },
  };
}
