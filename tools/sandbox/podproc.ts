/**
 * Processes inside sandbox pods, for the demo, tests and benchmarks: a command
 * joins the pod's cgroup (so the pod's BPF hooks see its sockets) and network
 * namespace (nsenter --net: unlike `ip netns exec` it leaves /sys alone).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PodRef {
  name: string;
  netnsPath: string;
  cgroup: string;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const NETTOOL = path.join(ROOT, 'dist', 'tools', 'nettool', 'nettool.js');

/** argv that runs `argv` inside the pod. */
export function podArgv(pod: PodRef, argv: string[]): string[] {
  // sh -c SCRIPT $0=cgroup $1=netns $2...=argv
  return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && n="$1" && shift && exec nsenter --net="$n" -- "$@"', pod.cgroup, pod.netnsPath, ...argv];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command in the pod to completion and captures its output. */
export function runInPod(pod: PodRef, argv: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const [cmd, ...args] = podArgv(pod, argv);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      resolve({ code: code ?? (sig ? 128 : 1), stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Starts a long-running server in the pod; resolves once it printed "listening". */
export function startInPod(pod: PodRef, argv: string[], timeoutMs = 10_000): Promise<ChildProcess> {
  const [cmd, ...args] = podArgv(pod, argv);
  const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${argv.join(' ')} in ${pod.name}: not listening after ${timeoutMs} ms: ${out}`));
    }, timeoutMs);
    const onData = (c: Buffer): void => {
      out += c.toString();
      if (out.includes('listening')) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        child.stdout!.resume();
        resolve(child);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${argv.join(' ')} in ${pod.name} exited (${code}): ${out}`));
    });
  });
}

/** nettool inside a pod. */
export function nettool(pod: PodRef, ...args: Array<string | number>): Promise<RunResult> {
  return runInPod(pod, [process.execPath, NETTOOL, ...args.map(String)]);
}

export function nettoolServer(pod: PodRef, ...args: Array<string | number>): Promise<ChildProcess> {
  return startInPod(pod, [process.execPath, NETTOOL, ...args.map(String)]);
}
