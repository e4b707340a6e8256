// Over 500 lines on purpose: only declarations, the JSON contract of every bench section between the measuring code and bench/render/; kept in one file so the recorded format has a single definition.
/**
 * What a benchmark run measured, as plain JSON data: the numbers and the
 * conditions they were taken under (counts, seconds, versions, what was
 * skipped). The measuring code (bench/run.ts and the section modules) fills
 * it in; bench/render/ turns it into bench/RESULTS.md; bench/run.ts writes it
 * next to the markdown as JSON, and `node dist/bench/render.js FILE.json`
 * renders it again without measuring.
 *
 * Every section carries what its text needs (the machine's CPU count, the
 * pinned CPU, ...), so a section renders on its own. Derived figures (means,
 * ratios, percentiles, targets met) are the renderer's: they are not stored,
 * except where the samples are many (section 9's thousands of scrape
 * durations are stored as their percentiles).
 * A figure that could not be taken is null; an incidental NaN survives the
 * JSON round trip through toJson / fromJson.
 *
 * One file on purpose, although it is over 500 lines: it is the schema of
 * RESULTS.json, types and their field comments and nothing else (plus the
 * JSON round trip); split by section it would be read in eight places.
 */

import { AmbientError } from '../src/util/errors.js';

export const RESULTS_VERSION = 1;

export const SECTIONS = ['same-node', 'enroll', 'hbone', 'policy', 'observability', 'restart', 'lifecycle', 'ca', 'ipv6', 'workers'] as const;
export type Section = (typeof SECTIONS)[number];

export interface BenchResults {
  version: typeof RESULTS_VERSION;
  run: RunInfo;
  /** sections 1-2 */
  sameNode?: SameNodeResults;
  /** section 3 */
  enroll?: EnrollResults;
  /** sections 4-7 */
  hbone?: HboneResults;
  /** section 8 */
  policy?: PolicyResults;
  /** section 9 */
  observability?: ObservabilityResults;
  /** section 10 */
  restart?: RestartResults;
  /** section 11 */
  lifecycle?: LifecycleResults;
  /** section 12 */
  ca?: CaResults;
  /** section 13 */
  ipv6?: Ipv6Results;
  /** section 14 */
  workers?: WorkersResults;
}

// ---------------------------------------------------------------------------
// section 14: the data plane on worker threads (bench/workers.ts)
// ---------------------------------------------------------------------------

export interface WorkersVariant {
  name: string;
  /** the agents' `workers` setting (0: the data plane on the main thread) */
  workers: number;
}

/**
 * cps: connections/s (path mesh | direct); tput1/tput4: Gbit/s (mesh | nghttpx);
 * rr: 1 KiB round trip p50 µs, pinned (mesh | direct); scrape: rr p50/p99 µs not
 * pinned (quiet | scraped); scale: connections/s through one agent carrying both
 * ends (same-node); heap: live heap bytes per idle connection, mean of both agents (idle).
 */
export type WorkersMetric = 'cps' | 'tput1' | 'tput4' | 'rr' | 'scrape' | 'scale' | 'heap';

export interface WorkersTrial {
  variant: string;
  workers: number;
  round: number;
  metric: WorkersMetric;
  path: string;
  value: number;
  p99: number | null;
  /** connections (cps, scale), Gbit (tput: rate x seconds), samples (rr), scrapes (scrape), connections held (heap) */
  ops: number;
  /** CPU seconds during the measurement: [n1 agent, n2 agent] on mesh paths; [h2fwd] on nghttpx */
  agentCpuS: number[] | null;
  /** connections each worker took during it: per node, per worker */
  shares: number[][] | null;
  failed: string | null;
  /** heap: bytes per idle connection, [n1 agent, n2 agent] */
  heapPerConn?: number[];
}

export interface WorkersResults {
  quick: boolean;
  seconds: number;
  rounds: number;
  idle: number;
  cpus: number;
  variants: WorkersVariant[];
  trials: WorkersTrial[];
}

// ---------------------------------------------------------------------------
// section 13: IPv6 against IPv4 (bench/ipv6.ts)
// ---------------------------------------------------------------------------

export type IpFamilyName = 'ipv4' | 'ipv6';
/** mesh: ambient -> ambient over HBONE (same node: through the node's one agent; cross node: two agents); direct: plain -> plain */
export type V6Path = 'same-node direct' | 'same-node mesh' | 'cross-node direct' | 'cross-node mesh';
/** tput1/tput4: iperf3 -P 1/4, Gbit/s received; rr: nettool rr 1 KiB round trips, µs; cps: bench/cps.ts, connections/s */
export type V6Metric = 'tput1' | 'tput4' | 'rr' | 'cps';

/** One A/B setting of the agents (every agent.yaml); the first is what the sandbox starts with. */
export interface V6Variant {
  name: string;
  agentSettings: Record<string, unknown>;
}

export interface Ipv6Trial {
  /** V6Variant.name */
  variant: string;
  path: V6Path;
  metric: V6Metric;
  /** 1-based; within a round the two families run back to back, the first alternating from round to round */
  round: number;
  family: IpFamilyName;
  /** tput: Gbit/s received; rr: p50 µs; cps: connections/s */
  value: number;
  /** rr: p99 µs; else null */
  p99: number | null;
  /** work done: tput: bytes received; rr: round trips; cps: connections */
  ops: number;
  /** CPU seconds (utime+stime) of each agent on the path over the measurement, by node (same node: n1; cross node: n1 the client side, n2 the server side); null on direct paths */
  agentCpuS: Record<string, number> | null;
  machineBusyPct: number;
  /** the tool's error when the measurement broke off or had failures (cps: failed connections) */
  failed: string | null;
  /** mesh paths: what the agents' /config_dump said */
  verify: Verify | null;
}

export interface Ipv6Results {
  quick: boolean;
  /** seconds per measurement */
  seconds: number;
  rounds: number;
  cpsConcurrency: number;
  /** round trips per rr measurement */
  rrCount: number;
  /** client, server and agents pinned to this CPU during rr */
  pinCpu: number;
  cpus: number;
  /** src -> dst pod of each path */
  pods: Record<V6Path, { src: string; dst: string }>;
  variants: V6Variant[];
  /** sandbox up, agents ready, ms */
  upMs: number;
  trials: Ipv6Trial[];
}

// ---------------------------------------------------------------------------
// section 12: the cluster CA
// ---------------------------------------------------------------------------

/** cluster: `ambientd ca` in its own process and netns (the sandbox default); embedded: each agent signs */
export type CaMode = 'cluster' | 'embedded';

export interface CaResults {
  quick: boolean;
  /** from node n1's netns, a new key + CSR + CreateCertificate + chain check per request (bench/ca-client.ts) */
  issuance: {
    /** one request after another, ms each */
    sequentialMs: number[];
    concurrency: number;
    /** certificates issued by `concurrency` callers in `concurrentSeconds` */
    concurrentCerts: number;
    concurrentSeconds: number;
    errors: number;
    /** the CA's own handling time (ambientd_ca_request_duration_seconds sum / count, issued), ms */
    caMeanMs: number | null;
    caIssued: number | null;
  } | null;
  /** a plain pod of n1 enrolled while it loops connections to an ambient pod of n2: enrollment -> end of its first HBONE connection, ms (null: none in 30 s) */
  firstConnection: Array<{ ca: CaMode; samplesMs: Array<number | null> }>;
  /** 1 node, `pods` pods (half ambient): agent start -> ready, and -> every ambient pod's certificate held, ms */
  startup: Array<{ ca: CaMode; pods: number; ambientPods: number; readyMs: number; allCertsMs: number | null }>;
}

// ---------------------------------------------------------------------------
// the run
// ---------------------------------------------------------------------------

export interface RunInfo {
  /** ISO time the run started */
  date: string;
  elapsedS: number;
  quick: boolean;
  /** as typed, e.g. `node dist/bench/run.js --quick --only policy` */
  command: string;
  /** the sections run, in the order asked for */
  sections: Section[];
  /** --only left some out */
  partial: boolean;
  /** the commit measured ("%h %s", null without git) and how many files under src/, bpf/, native/ differed from it */
  tree: { commit: string | null; dirtyFiles: number };
  machine: { kernel: string; cpus: number; cpuModel: string; memoryBytes: number };
  versions: { node: string; iperf3: string; sockperf: string; perf: string };
  /** CPU use in the second before the run */
  background: BackgroundLoad;
}

export interface BackgroundLoad {
  busyPct: number;
  /** processes that used >= 10% of a core */
  hogs: Array<{ pid: number; command: string; corePct: number }>;
}

// ---------------------------------------------------------------------------
// sections 1-2: same-node throughput and latency
// ---------------------------------------------------------------------------

export type PathName = 'direct' | 'agent+sockmap' | 'agent (no accel)';
export const PATHS: PathName[] = ['direct', 'agent+sockmap', 'agent (no accel)'];
export type LatencyTool = 'sockperf' | 'nettool';

export interface SameNodeResults {
  /** seconds per measurement */
  seconds: number;
  /** the agent's acceleration in each block; a block measures direct and agent path back to back */
  blocks: Array<'sockmap' | 'none'>;
  /** the CPU the pinned latency runs use */
  pinCpu: number;
  /** net.ipv4.tcp_mem, "min / pressure / max" pages */
  tcpMemLimits: string;
  tput: Tput[];
  lat: Lat[];
}

export interface Tput {
  path: PathName;
  /** the block it was measured in (1-based) */
  block: number;
  /** end-to-end goodput: bytes the receiving iperf3 got */
  recvGbps: number;
  /** what the sending iperf3 managed to write (more than recv when something buffers in between) */
  sentGbps: number;
  /** iperf3's error when the test broke off (the rates are then those of the whole seconds before) */
  failed: string | null;
  failedAfterS: number | null;
  /** connections the agent captured from the source pod during the run (null: direct path) */
  captured: number | null;
  machineBusyPct: number;
  agentCorePct: number | null;
  /** bytes, the whole machine */
  peakTcpMem: number;
}

export interface Lat {
  path: PathName;
  block: number;
  tool: LatencyTool;
  /** client, server and agent pinned to one CPU (no cross-CPU wake-ups) */
  pinned: boolean;
  /** µs */
  p50: number;
  p99: number;
  avg: number | null;
  samples: number;
  captured: number | null;
  machineBusyPct: number;
  agentCorePct: number | null;
}

// ---------------------------------------------------------------------------
// section 3: enrollment latency
// ---------------------------------------------------------------------------

export interface EnrollResults {
  totalPods: number;
  /** where the prober connects (no route) */
  unroutable: { ip: string; port: number };
  /** sandboxUp() with the agent ready, ms */
  upMs: number;
  /** agent start: "datapath loaded" -> "agent ready" log lines (enrolls the ambient pods), ms */
  initialEnrollMs: number | null;
  initialEnrolled: number | null;
  /** size of workloads.json and the median time to parse it as the agent does (parseDocument), in the bench process */
  fileBytes: number;
  yamlParseMs: number;
  /** one per pod, in the order they were enrolled */
  pods: Enroll[];
}

export interface Enroll {
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

// ---------------------------------------------------------------------------
// sections 4-7: cross-node (HBONE)
// ---------------------------------------------------------------------------

export type XPath = 'direct' | 'hbone' | 'nghttpx';
export const XPATHS: XPath[] = ['direct', 'hbone', 'nghttpx'];

export interface HboneOptions {
  quick: boolean;
  /** seconds per throughput / latency measurement */
  seconds: number;
  /** blocks of throughput + latency (each measures the three paths back to back) */
  blocks: number;
  cpsSeconds: number;
  cpsConcurrency: number;
  idleConns: number;
}

/** CPU of the processes between client and server (% of one core), by name. */
export type Cores = Record<string, number | null>;

export interface HboneResults {
  options: HboneOptions;
  /** CPUs of the machine, the CPU of the pinned runs */
  cpus: number;
  pinCpu: number;
  tput: XTput[];
  lat: XLat[];
  cps: XCps[];
  rss: XRss | null;
  info: {
    nghttpx: string;
    agentPids: [number, number];
    tunnelPids: Record<string, number>;
    tool: LatencyTool;
    /** sandboxUp of 2 nodes x 2 pods with both agents ready, ms */
    upMs: number;
  };
}

export interface XTput {
  path: XPath;
  block: number;
  streams: number;
  recvGbps: number;
  sentGbps: number;
  failed: string | null;
  machineBusyPct: number;
  cores: Cores;
  verify: Verify | null;
  /** perf samples of the relaying processes during the middle of the run (last block, 1 stream) */
  perf?: PerfProfile | null;
}

export interface XLat {
  path: XPath;
  block: number;
  pinned: boolean;
  tool: LatencyTool;
  p50: number;
  p99: number;
  samples: number;
  machineBusyPct: number;
  cores: Cores;
  verify: Verify | null;
}

export interface XCps {
  path: 'direct' | 'hbone';
  block: number;
  conns: number;
  failures: number;
  errors: Record<string, number>;
  rate: number;
  p50ms: number | null;
  p99ms: number | null;
  machineBusyPct: number;
  cores: Cores;
  verify: Verify | null;
  perf?: PerfProfile | null;
}

export interface XRss {
  conns: number;
  /** the holder opening every connection, ms */
  openMs: number;
  /** VmRSS KiB of each agent before / with the idle connections */
  client: { before: number; after: number };
  server: { before: number; after: number };
  /** from /config_dump once the connections were up */
  openViaHbone: number;
  openInboundHbone: number;
  clientSessions: number | null;
  clientActiveStreams: number | null;
  serverEstablished: number | null;
  serverActiveStreams: number | null;
  /** kernel TCP memory of the machine (sockstat), before/after, KiB: not part of RSS */
  tcpMemBefore: number;
  tcpMemAfter: number;
}

/** What the agents' /config_dump says about one measurement through HBONE. */
export interface Verify {
  /** n1: outbound connection records via 'hbone' to the destination ip:port */
  outboundHbone: number;
  /** n1: records to that ip:port carried any other way (should be 0) */
  outboundOther: number;
  /** n2: inbound records via 'inbound-hbone' to that ip:port */
  inboundHbone: number;
  /** n1 pool: streams opened during the measurement */
  streamsOpened: number;
  /** n2 server: tunnels opened during the measurement */
  tunnelsOpened: number;
}

export const PERF_CATEGORIES = ['kernel', 'TLS crypto', 'HTTP/2 (nghttp2)', 'V8 GC', 'JS + V8 + libuv', 'libc (memcpy, malloc)', 'other'] as const;
export type PerfCategory = (typeof PERF_CATEGORIES)[number];

export interface PerfProfile {
  /** per process name: % of one core in each category (and 'total') */
  byProc: Record<string, Record<PerfCategory | 'total', number>>;
  /** per process name: the heaviest symbols, % of one core */
  top: Record<string, Array<{ sym: string; dso: string; pct: number }>>;
  seconds: number;
}

// ---------------------------------------------------------------------------
// section 8: connection set-up latency vs number of AuthorizationPolicies
// ---------------------------------------------------------------------------

export interface PolicyResults {
  /** sequential connections measured per row, after `warmup` ones */
  connections: number;
  warmup: number;
  /** namespaces the extra policies are spread over */
  otherNamespaces: number;
  rows: Array<{
    /** policies the destination agent had loaded */
    policies: number;
    p50Us: number;
    p90Us: number;
    p99Us: number;
    /** the agent's "policies compiled" log line after the change, ms */
    compileMs: number | null;
  }>;
}

// ---------------------------------------------------------------------------
// section 9: cost of observability
// ---------------------------------------------------------------------------

export interface RrStats {
  n: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
}

export interface ObservabilityResults {
  cpu: {
    /** 1 KiB round trips of the measured `nettool rr` */
    requests: number;
    wallS: number;
    rr: RrStats;
    /** utime+stime of each agent over the run, s */
    agents: Array<{ node: string; cpuS: number }>;
  };
  latency: {
    requests: number;
    rounds: number;
    idleConnections: number;
    metricsPort: number;
    /** period of the paced scrapes, ms */
    pacedMs: number;
    runs: Array<{ round: number; mode: 'no scrape' | 'scraping 4/s' | 'scraping'; rr: RrStats; scrapes: number | null }>;
    /** every scrape of the back-to-back ("scraping") runs */
    stressScrapes: { count: number; p50Ms: number; p99Ms: number; meanBytes: number; maxBytes: number };
  };
}

// ---------------------------------------------------------------------------
// section 10: agent restarts
// ---------------------------------------------------------------------------

export type RestartMode = 'hand-over' | 'stop-then-start';
export const RESTART_MODES: RestartMode[] = ['hand-over', 'stop-then-start'];

export interface RestartResults {
  quick: boolean;
  /** run time of the whole section */
  seconds: number;
  handover: HandoverWindowResults;
  startup: StartupResults;
}

/** `nettool rate` output */
export interface RateJson {
  attempted: number;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  firstFailureMs: number | null;
  windowMs: number;
  maxConnectMs: number;
  seconds: number;
}
/** `nettool hold` output */
export interface HoldJson {
  rounds: number;
  error: string | null;
  maxRttMs: number;
}

/** What one agent start logged (agent.log from its "starting agent" marker on). */
export interface StartLog {
  /** marker (written by startAgent right before the spawn) -> "datapath loaded", ms (1 ms resolution) */
  spawnToLoadedMs: number | null;
  /** "datapath loaded" -> "agent ready", ms */
  loadedToReadyMs: number | null;
  /** marker -> "agent ready", ms */
  spawnToReadyMs: number | null;
  enrolled: number | null;
  /** "pod enrolled" lines: links found pinned (adopted) / attached anew */
  podsAdopted: number;
  podsAttached: number;
  /** "took over the listening sockets": sockets adopted / rejected */
  socketsTaken: number | null;
  socketsRejected: number | null;
  /** the draining agent's "drained" line */
  drained: { ms: number; connectionsAtStart: number; closedAtDeadline: number } | null;
  /** warn/error lines, as logged (cut at 400 characters) */
  problems: string[];
  /** access-log records of failed connections, the fields that matter */
  failedConns: Array<Record<string, unknown>>;
}

/** A restartAgent() call that threw; the bench then stopped the old agent and started a fresh one. */
export interface RestartFailure {
  message: string;
  /** the node's hand-over socket, and whether it existed before the call */
  handoverSocket: string;
  socketExistedBefore: boolean;
  /** the agent running before the call */
  previousPid: number | null;
  /** agent.log since the call, without access-log lines */
  logTail: string[];
}

/** After a hand-over restart the node's hand-over socket was gone (the next hand-over cannot work). */
export interface SocketMissing {
  path: string;
  oldPid: number | null;
  newPid: number | null;
  logTail: string[];
}

export interface HandoverWindowResults {
  /** new connections per second */
  rate: number;
  drainTimeoutS: number;
  echoPort: number;
  /** seconds of load per run */
  loadSeconds: number;
  rounds: number;
  controlSeconds: number;
  /** sandboxUp from holding the lock, ms */
  upMs: number;
  /** the same load without a restart */
  control: RateJson | null;
  controlRaw: string;
  /** in the order run */
  runs: ModeRun[];
}

export interface ModeRun {
  round: number;
  mode: RestartMode;
  order: 1 | 2;
  rate: RateJson | null;
  rateRaw: string;
  rateExit: number;
  hold: HoldJson | null;
  holdRaw: string;
  holdExit: number | null;
  /** n1's, then n2's */
  restarts: NodeRestart[];
}

export interface NodeRestart {
  node: string;
  oldPid: number | null;
  newPid: number | null;
  /** restartAgent's readyMs: call -> the new agent's ready file seen (100 ms polling); null: it failed */
  readyMs: number | null;
  /** call / return, ms after launching the load */
  atMs: number;
  doneMs: number;
  /** the old agent was gone this many ms after restartAgent returned (hand-over: it drains after the return); null: still there at the timeout */
  oldGoneAfterMs: number | null;
  /** the node's agent.log */
  logFile: string;
  log: StartLog;
  error: RestartFailure | null;
  socketMissing: SocketMissing | null;
}

export type StartKind = 'hand-over' | 'no-hand-over' | 'warm' | 'cold';

export interface StartupResults {
  totalPods: number;
  enrolledPods: number;
  rounds: number;
  /** sandboxUp from holding the lock, ms */
  upMs: number;
  /** in the order run; a failed hand-over restart has `failure` and no figures */
  steps: StartStep[];
}

export interface StartStep {
  round: number;
  kind: StartKind;
  /** restartAgent readyMs (hand-over, no-hand-over) or startAgent + waitAgentReady (warm, cold) */
  readyMs: number;
  /** warm: stopAgent (SIGTERM -> exit); cold: stopAgent + removing the pins */
  stopMs: number | null;
  log: StartLog;
  /** cold: pod pin directories removed */
  pinsRemoved?: number;
  /** hand-over: the old agent's pid and when it was gone, ms after restartAgent returned (null: not within 30 s) */
  oldPid?: number | null;
  oldGoneAfterMs?: number | null;
  socketMissing?: SocketMissing | null;
  failure?: RestartFailure;
}

// ---------------------------------------------------------------------------
// section 11: nothing leaks, nothing balloons
// ---------------------------------------------------------------------------

export interface LifecycleResults {
  quick: boolean;
  detection: {
    /** per direction */
    deathTrials: number;
    /** survivor's sockets of the flow gone after the peer agent's SIGKILL, ms */
    deathMs: { n1: number[]; n2: number[] };
    partitionTrials: number;
    peerTimeoutMs: number;
    /** each side's end of the flow after the partition, ms (NaN: not within 30 s) */
    partitionMs: { client: number[]; server: number[] };
  };
  nonReading: {
    /** MiB each connection writes */
    writeMiB: number;
    warmupMiB: number;
    /** growth target at the largest N, MiB */
    targetMiB: number;
    rows: Array<{
      connections: number;
      /** config_dump resources.hbone of the destination agent */
      serverStreams: number;
      streamWindowBytes: number;
      rssBeforeMiB: number;
      rssAfterMiB: number;
      /** memoryBound(DEFAULT_LIMITS, N streams, N connections) */
      boundMiB: number;
      tcpBeforeMiB: number;
      tcpAfterMiB: number;
    }>;
  };
  liveness: {
    idleConnections: number;
    seconds: number;
    rows: Array<{ peerTimeout: string; isDefault: boolean; n1CpuPct: number; n2CpuPct: number }>;
  };
  soak: {
    seconds: number;
    rate: { attempted?: number; failed?: number; errors?: Record<string, number> };
    restarts: Array<{ atS: number; node: string; readyMs: number }>;
    drainTimeoutS: number;
    /** slopes only from here on, s */
    warmupS: number;
    nodes: string[];
    /** every 10 s per node: fds and RSS summed over its agent processes, the serving agent's live heap */
    samples: Array<{ t: number; node: string; fds: number; rssMiB: number; heapMiB: number | null; agents: number }>;
  };
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/** JSON text of the results; NaN and ±Infinity become strings (JSON has none), fromJson turns them back. */
export function toJson(r: BenchResults): string {
  return JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2) + '\n';
}

export function fromJson(text: string): BenchResults {
  const r = JSON.parse(text, (_k, v: unknown) => (v === 'NaN' || v === 'Infinity' || v === '-Infinity' ? Number(v) : v)) as BenchResults;
  if (r === null || typeof r !== 'object' || r.version !== RESULTS_VERSION || typeof r.run !== 'object') {
    throw new AmbientError(
      'TOOL_FAILED',
      `not a benchmark results file of version ${RESULTS_VERSION}`,
      'give the .json file bench/run.js wrote next to its markdown report (RESULTS.json beside RESULTS.md)',
    );
  }
  return r;
}
