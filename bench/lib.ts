// Over 500 lines on purpose: the shared measuring helpers (pod processes, CPU/memory sampling, iperf3/sockperf runs) every section imports.
/**
 * Helpers shared by the measuring code of the benchmarks: processes started
 * inside sandbox pods (tracked, killed at the end), CPU / memory sampling,
 * iperf3 and sockperf runs. perf profiles are in bench/perf.ts, statistics in
 * bench/stats.ts, tables and text in bench/render/.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { NETNS_PREFIX, SANDBOX_DIR_NAME, DEFAULT_CGROUP_ROOT, DEFAULT_BPFFS_ROOT, type SandboxPod, type SandboxNode } from '../tools/sandbox/index.js';
import { podArgv, runInPod, NETTOOL } from '../tools/sandbox/podproc.js';
import { getJsonInNetns } from '../src/util/netns-http.js';
import { AmbientError } from '../src/util/errors.js';
import type { BackgroundLoad, LatencyTool } from './results.js';
import type { ConfigDump } from '../src/agent/index.js';

/** A benchmark tool (iperf3, sockperf, a helper in a pod, the sandbox) did not do what the run needs. */
export const toolFailed = (message: string, hint: string, cause?: unknown): AmbientError =>
  new AmbientError('TOOL_FAILED', message, hint, cause === undefined ? {} : { cause });
/** The hint for a helper process that died or said nothing useful. */
export const HINT_OUTPUT = 'its output is in the message; rerun the section alone (--quick --only SECTION) to see whether it repeats';

export const execFileP = promisify(execFile);
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Epoch ms with sub-ms resolution; the prober uses the same clock. */
export const now = (): number => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------
// processes: everything started here is tracked and killed at the end
// ---------------------------------------------------------------------------

export const children = new Set<ChildProcess>();

export interface Proc {
  child: ChildProcess;
  /** stdout + stderr so far */
  output(): string;
  /** stdout alone */
  stdout(): string;
  /** resolves with the output once re matches it; rejects on exit or timeout */
  waitFor(re: RegExp, timeoutMs: number): Promise<string>;
  exited: Promise<number>;
}

/** Starts argv inside a pod in the background (cgroup + netns, like podproc.startInPod). */
export function startProc(pod: SandboxPod, argv: string[]): Proc {
  const [cmd, ...args] = podArgv(pod, argv);
  const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let stdout = '';
  const listeners = new Set<() => void>();
  const onData = (c: Buffer): void => {
    out += c.toString();
    for (const l of [...listeners]) l();
  };
  child.stdout!.on('data', (c: Buffer) => {
    stdout += c.toString();
    onData(c);
  });
  child.stderr!.on('data', onData);
  const exited = new Promise<number>((resolve) => {
    child.once('error', () => resolve(127));
    child.once('close', (code, sig) => {
      children.delete(child);
      resolve(code ?? (sig ? 128 : 1));
      for (const l of [...listeners]) l();
    });
  });
  const waitFor = (re: RegExp, timeoutMs: number): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (re.test(out)) {
          finish();
          resolve(out);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          finish();
          reject(
            toolFailed(
              `${argv.join(' ')} in ${pod.name} exited (${child.exitCode ?? child.signalCode}) before printing ${re}: ${out.trim().slice(-500)}`,
              HINT_OUTPUT,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          toolFailed(
            `${argv.join(' ')} in ${pod.name}: no ${re} after ${timeoutMs} ms: ${out.trim().slice(-500)}`,
            'the machine may be overloaded (see the background load in the report header); its output so far is in the message',
          ),
        );
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });
  return { child, output: () => out, stdout: () => stdout, waitFor, exited };
}

export async function stopProc(p: Proc | null | undefined): Promise<void> {
  if (!p) return;
  const c = p.child;
  if (c.exitCode === null && c.signalCode === null) {
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 1000);
    await p.exited;
    clearTimeout(t);
  }
}

export function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

/** Polls `ss` in the pod's netns until something listens on TCP port. */
export async function waitListening(pod: SandboxPod, port: number, proc: Proc, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { stdout } = await execFileP('nsenter', [`--net=${pod.netnsPath}`, '--', 'ss', '-Hltn', `sport = :${port}`]);
    if (stdout.trim() !== '') return;
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw toolFailed(
        `server in ${pod.name} exited before listening on ${port}: ${proc.output().trim().slice(-500)}`,
        'is the tool installed (scripts/install-deps.sh) and the port free? its output is in the message',
      );
    }
    if (Date.now() > deadline)
      throw toolFailed(`nothing listens on ${pod.name}:${port} after ${timeoutMs} ms: ${proc.output().trim().slice(-500)}`, HINT_OUTPUT);
    await sleep(30);
  }
}

// ---------------------------------------------------------------------------
// machine figures: CPU time, kernel TCP memory
// ---------------------------------------------------------------------------

export const CLK_TCK = 100;
export const PAGE = 4096;

/** [busy, total] jiffies of the whole machine. */
export function cpuTimes(): [number, number] {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return [total - idle, total];
}

/** utime+stime of a process in jiffies (null if gone). */
export function procCpu(pid: number): number | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

export function procComm(pid: number): string {
  try {
    return (
      fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ').slice(0, 60) || fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
    );
  } catch {
    return '?';
  }
}

export function tcpMemLimits(): string {
  try {
    return fs.readFileSync('/proc/sys/net/ipv4/tcp_mem', 'utf8').trim().split(/\s+/).join(' / ');
  } catch {
    return '?';
  }
}

/** Kernel memory held by TCP sockets (all namespaces), bytes. */
export function tcpMemBytes(): number {
  const m = /^TCP:.*\bmem (\d+)/m.exec(fs.readFileSync('/proc/net/sockstat', 'utf8'));
  return m ? Number(m[1]) * PAGE : 0;
}

/** CPU use of the machine and of its busiest processes over `ms`: the noise we run under. */
export async function backgroundLoad(ms = 1000): Promise<BackgroundLoad> {
  const pids = () =>
    fs
      .readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number);
  const before = new Map(pids().map((p) => [p, procCpu(p)]));
  const [b0, t0] = cpuTimes();
  await sleep(ms);
  const [b1, t1] = cpuTimes();
  const hogs: BackgroundLoad['hogs'] = [];
  for (const [pid, c0] of before) {
    const c1 = procCpu(pid);
    if (c0 === null || c1 === null || pid === process.pid) continue;
    const pct = ((c1 - c0) / CLK_TCK / (ms / 1000)) * 100;
    if (pct >= 10) hogs.push({ pid, command: procComm(pid), corePct: pct });
  }
  return { busyPct: t1 > t0 ? (100 * (b1 - b0)) / (t1 - t0) : 0, hogs };
}

export interface Sampler {
  stop(): { machineBusyPct: number; agentCorePct: number | null; peakTcpMem: number };
}

/** Samples machine CPU, the agent's CPU and peak kernel TCP memory during a measurement. */
export function startSampler(agentPid: number | null): Sampler {
  const [b0, t0] = cpuTimes();
  const a0 = agentPid !== null ? procCpu(agentPid) : null;
  const w0 = Date.now();
  let peak = tcpMemBytes();
  const timer = setInterval(() => (peak = Math.max(peak, tcpMemBytes())), 100);
  return {
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, tcpMemBytes());
      const [b1, t1] = cpuTimes();
      const a1 = agentPid !== null ? procCpu(agentPid) : null;
      const secs = (Date.now() - w0) / 1000;
      return {
        machineBusyPct: t1 > t0 ? (100 * (b1 - b0)) / (t1 - t0) : 0,
        agentCorePct: a0 !== null && a1 !== null && secs > 0 ? ((a1 - a0) / CLK_TCK / secs) * 100 : null,
        peakTcpMem: peak,
      };
    },
  };
}

/** Waits (up to timeoutMs) until kernel TCP memory is back near its idle level. */
export async function settleTcpMem(limitBytes = 32 << 20, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (tcpMemBytes() > limitBytes && Date.now() < deadline) await sleep(100);
}

// ---------------------------------------------------------------------------
// sandbox guards and agent control
// ---------------------------------------------------------------------------

export async function sandboxNetns(): Promise<string[]> {
  const { stdout } = await execFileP('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(NETNS_PREFIX));
}

/** Waits until no sandbox (ours or anyone's) exists; never tears down someone else's. */
export async function waitNoSandbox(maxWaitMs = 10 * 60_000): Promise<void> {
  const deadline = Date.now() + maxWaitMs;
  let said = false;
  for (;;) {
    const ns = await sandboxNetns();
    const busy =
      ns.length > 0 || fs.existsSync(path.join(DEFAULT_CGROUP_ROOT, SANDBOX_DIR_NAME)) || fs.existsSync(path.join(DEFAULT_BPFFS_ROOT, SANDBOX_DIR_NAME));
    if (!busy) return;
    if (Date.now() > deadline) {
      throw new AmbientError(
        'TOOL_FAILED',
        `another sandbox is still in use after ${maxWaitMs / 1000} s (netns: ${ns.slice(0, 5).join(', ') || 'none'}; cgroup/bpffs dirs ${SANDBOX_DIR_NAME}); not touching it`,
        'if it is a leftover (no test or bench is running), run `make sandbox-down`; else wait and run again',
      );
    }
    if (!said) {
      process.stdout.write(`another sandbox is in use (${ns.length} ambs-* netns); waiting for it to go away...\n`);
      said = true;
    }
    await sleep(5000);
  }
}

export function parseJson(l: string): Record<string, unknown> | null {
  try {
    return JSON.parse(l) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** Connections captured so far from a pod (amb_pod_stats capturedOut via /config_dump). */
export async function capturedOut(node: SandboxNode, pod: string): Promise<number> {
  const dump = await getJsonInNetns<Pick<ConfigDump, 'workloads'>>(node.netnsPath, '127.0.0.1', 15000, '/config_dump');
  const w = dump.workloads.find((x) => x.name === pod);
  return Number(w?.redirect?.capturedOut ?? 0);
}

let portSeq = 0;

/** Where a client reaches a server listening on `port` in the destination pod (default: the pod's IP, same port). */
export type Via = (dst: SandboxPod, port: number) => { host: string; port: number };
const directVia: Via = (dst, port) => ({ host: dst.ip, port });

export interface ServerOptions {
  /** server port (default: the next of a rotating range) */
  port?: number;
  /** client goes through e.g. a local tunnel entrance instead of dst.ip:port */
  via?: Via;
}

export interface IperfJson {
  error?: string;
  intervals?: Array<{ sum: { start: number; end: number; bytes: number } }>;
  end?: { sum_sent?: { bits_per_second: number }; sum_received?: { bits_per_second: number } };
}

export interface IperfResult {
  recvGbps: number;
  sentGbps: number;
  /** iperf3's error when the test broke off (then the rates are those of the whole seconds before) */
  failed: string | null;
  failedAfterS: number | null;
}

/** Rate over the whole-second intervals of an iperf3 JSON report (what is left when a test breaks off). */
export function intervalGbps(j: IperfJson | null): { gbps: number; seconds: number } {
  const iv = (j?.intervals ?? []).map((x) => x.sum).filter((x) => x.end > x.start);
  if (iv.length === 0) return { gbps: NaN, seconds: 0 };
  // iperf3 repeats the last interval when it fails mid-test
  const uniq = iv.filter((x, k) => k === 0 || x.start !== iv[k - 1]!.start);
  const bytes = uniq.reduce((a, x) => a + x.bytes, 0);
  const secs = uniq[uniq.length - 1]!.end - uniq[0]!.start;
  return { gbps: (bytes * 8) / secs / 1e9, seconds: secs };
}

/**
 * One iperf3 test. Both ends report JSON; if the test breaks off (e.g. the
 * sender gets ENOMEM), the figures come from the whole seconds each side
 * reported before that and `failed` says why.
 */
export async function iperf(src: SandboxPod, dst: SandboxPod, seconds: number, opts: ServerOptions & { streams?: number } = {}): Promise<IperfResult> {
  const port = opts.port ?? 5201 + (portSeq++ % 500);
  const to = (opts.via ?? directVia)(dst, port);
  const streams = opts.streams ?? 1;
  const server = startProc(dst, ['iperf3', '-s', '-1', '-J', '-p', String(port)]);
  try {
    await waitListening(dst, port, server);
    const r = await runInPod(
      src,
      ['iperf3', '-c', to.host, '-p', String(to.port), '-t', String(seconds), '-J', ...(streams > 1 ? ['-P', String(streams)] : [])],
      { timeoutMs: seconds * 1000 + 30_000 },
    );
    let j: IperfJson;
    try {
      j = JSON.parse(r.stdout) as IperfJson;
    } catch {
      throw toolFailed(
        `iperf3 ${src.name} -> ${dst.name}: exit ${r.code}, no JSON: ${(r.stdout + r.stderr).trim().slice(-500)}`,
        'is iperf3 installed (scripts/install-deps.sh)? its output is in the message',
      );
    }
    if (!j.error && j.end?.sum_received && j.end.sum_sent) {
      return { recvGbps: j.end.sum_received.bits_per_second / 1e9, sentGbps: j.end.sum_sent.bits_per_second / 1e9, failed: null, failedAfterS: null };
    }
    // Broken off: the server's own report has what arrived until then.
    await Promise.race([server.exited, sleep(5000)]);
    let sj: IperfJson | null = null;
    try {
      sj = JSON.parse(server.stdout()) as IperfJson;
    } catch {
      sj = null;
    }
    const sent = intervalGbps(j);
    return { recvGbps: intervalGbps(sj).gbps, sentGbps: sent.gbps, failed: j.error ?? 'no end summary', failedAfterS: sent.seconds };
  } finally {
    await stopProc(server);
  }
}

export const stripAnsi = (s: string): string => s.replace(/\x1b\[[0-9;]*m/g, '');

/** Parses sockperf ping-pong output (percentiles of the round-trip time with --full-rtt), µs. */
export function parseSockperf(text: string): { p50: number; p99: number; avg: number | null; samples: number } | null {
  const t = stripAnsi(text);
  const pct = (p: string): number | null => {
    const m = new RegExp(`percentile ${p.replace('.', '\\.')}\\s*=\\s*([0-9.]+)`).exec(t);
    return m ? Number(m[1]) : null;
  };
  const p50 = pct('50.000');
  const p99 = pct('99.000');
  if (p50 === null || p99 === null) return null;
  const avg = /avg-rtt=([0-9.]+)/.exec(t) ?? /avg-lat=([0-9.]+)/.exec(t);
  const n = /Total (\d+) observations/.exec(t);
  return { p50, p99, avg: avg ? Number(avg[1]) : null, samples: n ? Number(n[1]) : 0 };
}

let latencyTool: LatencyTool = process.env.AMBIENTD_BENCH_LATENCY_TOOL === 'nettool' ? 'nettool' : 'sockperf';
export const getLatencyTool = (): LatencyTool => latencyTool;
export const setLatencyTool = (t: LatencyTool): void => void (latencyTool = t);

/** argv run on one CPU (taskset) when cpu is not null. */
export const onCpu = (cpu: number | null, argv: string[]): string[] => (cpu === null ? argv : ['taskset', '-c', String(cpu), ...argv]);

export async function sockperf(
  src: SandboxPod,
  dst: SandboxPod,
  seconds: number,
  cpu: number | null,
  opts: ServerOptions = {},
): Promise<{ p50: number; p99: number; avg: number | null; samples: number }> {
  const port = opts.port ?? 11111 + (portSeq++ % 500);
  const to = (opts.via ?? directVia)(dst, port);
  const server = startProc(dst, onCpu(cpu, ['sockperf', 'server', '--tcp', '-i', '0.0.0.0', '-p', String(port)]));
  try {
    await waitListening(dst, port, server);
    const r = await runInPod(
      src,
      onCpu(cpu, ['sockperf', 'ping-pong', '--tcp', '-i', to.host, '-p', String(to.port), '-m', '1024', '-t', String(seconds), '--full-rtt']),
      { timeoutMs: seconds * 1000 + 30_000 },
    );
    const parsed = parseSockperf(r.stdout + '\n' + r.stderr);
    if (!parsed)
      throw toolFailed(
        `sockperf ${src.name} -> ${dst.name}: exit ${r.code}, no percentiles: ${stripAnsi(r.stdout + r.stderr)
          .trim()
          .slice(-500)}`,
        'AMBIENTD_BENCH_LATENCY_TOOL=nettool measures with nettool rr instead',
      );
    return parsed;
  } finally {
    await stopProc(server);
  }
}

/** Fallback: nettool rr (Node on both ends, so it measures Node as much as the path). */
export async function nettoolRr(
  src: SandboxPod,
  dst: SandboxPod,
  seconds: number,
  cpu: number | null,
  opts: ServerOptions = {},
): Promise<{ p50: number; p99: number; avg: number | null; samples: number }> {
  const port = opts.port ?? 12111 + (portSeq++ % 500);
  const to = (opts.via ?? directVia)(dst, port);
  const server = startProc(dst, onCpu(cpu, [process.execPath, NETTOOL, 'serve', String(port)]));
  try {
    await server.waitFor(/listening/, 10_000);
    const n = Math.max(1000, seconds * 5000);
    const r = await runInPod(src, onCpu(cpu, [process.execPath, NETTOOL, 'rr', to.host, String(to.port), String(n), '1024']), {
      timeoutMs: seconds * 1000 + 60_000,
    });
    const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { n?: number; p50_us?: number; p99_us?: number };
    if (typeof j.p50_us !== 'number' || typeof j.p99_us !== 'number')
      throw toolFailed(`nettool rr ${src.name} -> ${dst.name}: ${(r.stdout + r.stderr).trim().slice(-300)}`, HINT_OUTPUT);
    return { p50: j.p50_us, p99: j.p99_us, avg: null, samples: j.n ?? n };
  } finally {
    await stopProc(server);
  }
}

/** One tool for every path of a run (mixing them would make the columns incomparable). */
export async function latency(
  src: SandboxPod,
  dst: SandboxPod,
  seconds: number,
  cpu: number | null,
  opts: ServerOptions = {},
): Promise<{ tool: LatencyTool; p50: number; p99: number; avg: number | null; samples: number }> {
  if (latencyTool === 'nettool') return { tool: 'nettool', ...(await nettoolRr(src, dst, seconds, cpu, opts)) };
  try {
    return { tool: 'sockperf', ...(await sockperf(src, dst, seconds, cpu, opts)) };
  } catch (e) {
    process.stdout.write(`  sockperf failed (${(e as Error).message.split('\n')[0]}); retrying once\n`);
    return { tool: 'sockperf', ...(await sockperf(src, dst, seconds, cpu, opts)) };
  }
}

/** The CPU the pinned latency runs use (client, server and agent all on it). */
export const PIN_CPU = 0;

/** Sets the CPU affinity of every thread of pid (cpus: taskset -c list). */
export async function setAffinity(pid: number | null, cpus: string): Promise<void> {
  if (pid === null) return;
  await execFileP('taskset', ['-a', '-c', '-p', cpus, String(pid)]);
}

/** Every CPU of the machine, as a taskset list. */
export const ALL_CPUS = (): string => `0-${os.availableParallelism() - 1}`;

export function cpuModel(): string {
  return os.cpus()[0]?.model?.trim() ?? 'unknown';
}

export async function toolVersion(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await execFileP(cmd, args);
    return /\d+\.\d+[^\s)]*/.exec(stripAnsi(stdout + stderr))?.[0] ?? '?';
  } catch {
    return 'not found';
  }
}

/** CPU use (% of one core) of several processes and of the machine over a measurement. */
export interface ProcSampler {
  stop(): { machineBusyPct: number; cores: Record<string, number | null> };
}

export function startProcSampler(pids: Record<string, number | null | undefined>): ProcSampler {
  const [b0, t0] = cpuTimes();
  const c0 = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, p ? procCpu(p) : null]));
  const w0 = Date.now();
  return {
    stop() {
      const [b1, t1] = cpuTimes();
      const secs = (Date.now() - w0) / 1000;
      const cores: Record<string, number | null> = {};
      for (const [k, p] of Object.entries(pids)) {
        const a = c0[k];
        const b = p ? procCpu(p) : null;
        cores[k] = a !== null && a !== undefined && b !== null && secs > 0 ? ((b - a) / CLK_TCK / secs) * 100 : null;
      }
      return { machineBusyPct: t1 > t0 ? (100 * (b1 - b0)) / (t1 - t0) : 0, cores };
    },
  };
}

/** VmRSS of a process in KiB (NaN if gone). */
export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}
