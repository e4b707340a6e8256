/**
 * Commands inside the sandbox: in a pod (its cgroup, then its netns) or in a
 * node's netns, passed through, captured or in the background.
 */
import { execa } from 'execa';
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { shellQuote, usage } from './helpers.js';
import {
  SandboxError,
  type ExecCaptureOptions,
  type ExecInPodOptions,
  type ExecResult,
  type SandboxNode,
  type SandboxPod,
  type SpawnInPodOptions,
} from './model.js';
import { findNode, findPod, loadState } from './state.js';

function podCommand(p: SandboxPod, argv: string[]): [string, string[]] {
  if (argv.length === 0) throw usage('sandbox exec: no command given', 'usage: ambientd sandbox exec <pod> -- <command> [args...]');
  const script = `echo $$ > ${shellQuote(path.join(p.cgroup, 'cgroup.procs'))} && exec ip netns exec ${shellQuote(p.netns)} "$@"`;
  return ['sh', ['-c', script, 'sh', ...argv]];
}

function nodeCommand(n: SandboxNode, argv: string[]): [string, string[]] {
  if (argv.length === 0) throw usage('sandbox exec: no command given', 'usage: ambientd sandbox exec <node> -- <command> [args...]');
  return ['nsenter', [`--net=${n.netnsPath}`, '--', ...argv]];
}

function exitCodeOf(r: { exitCode?: number; signal?: string | null | undefined }): number {
  if (typeof r.exitCode === 'number') return r.exitCode;
  if (r.signal) return 128 + (os.constants.signals[r.signal as NodeJS.Signals] ?? 0);
  return 1;
}

async function capture(cmd: string, args: string[], o: ExecCaptureOptions): Promise<ExecResult> {
  const r = await execa(cmd, args, {
    input: o.input,
    stdin: o.input === undefined ? 'ignore' : undefined,
    reject: false,
    timeout: o.timeoutMs,
    stripFinalNewline: false,
    env: o.env,
  });
  if ((r as { code?: string }).code === 'ENOENT') throw new SandboxError(`cannot run ${cmd}: not found`, `install ${cmd}`);
  return { exitCode: exitCodeOf(r), signal: r.signal ?? null, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), timedOut: r.timedOut };
}

/**
 * Runs argv inside a pod (its cgroup, then its netns via `ip netns exec`),
 * passing stdin/stdout/stderr through. Resolves to the exit code
 * (128+signal if the command was killed).
 */
export async function execInPod(pod: string, argv: string[], opts: ExecInPodOptions = {}): Promise<number> {
  const p = findPod(loadState(opts), pod);
  const [cmd, args] = podCommand(p, argv);
  const out = opts.stdio ?? 'inherit';
  const r = await execa(cmd, args, {
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: out }),
    stdout: out,
    stderr: out,
    reject: false,
    env: opts.env,
  });
  return exitCodeOf(r);
}

/** Like execInPod but captures stdout/stderr (stdin from opts.input, else none). */
export async function execInPodCapture(pod: string, argv: string[], opts: ExecCaptureOptions = {}): Promise<ExecResult> {
  const p = findPod(loadState(opts), pod);
  const [cmd, args] = podCommand(p, argv);
  return capture(cmd, args, opts);
}

/** Starts argv inside a pod in the background (e.g. a test server). Default stdio: pipe. */
export function spawnInPod(pod: string, argv: string[], opts: SpawnInPodOptions = {}): ChildProcess {
  const p = findPod(loadState(opts), pod);
  const [cmd, args] = podCommand(p, argv);
  return spawn(cmd, args, { stdio: opts.stdio ?? 'pipe', env: opts.env ? { ...process.env, ...opts.env } : process.env });
}

/**
 * Runs argv in a node's netns (nsenter --net: only the network namespace
 * changes, so /sys/fs/bpf and the cgroup mount stay visible) and captures output.
 */
export async function execInNode(node: string, argv: string[], opts: ExecCaptureOptions = {}): Promise<ExecResult> {
  const n = findNode(loadState(opts), node);
  const [cmd, args] = nodeCommand(n, argv);
  return capture(cmd, args, opts);
}
