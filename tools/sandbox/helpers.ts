/**
 * Small helpers of the sandbox: running iproute2 and friends (errors as
 * SandboxError), bounded parallelism, atomic file writes, process liveness.
 */
import { execa } from 'execa';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import { SandboxError } from './model.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function usage(message: string, hint: string): SandboxError {
  return new SandboxError(message, hint, { code: 'USAGE' });
}

/** POSIX shell single-quoting. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_/.:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function concurrency(): number {
  return Math.min(32, Math.max(4, os.availableParallelism() * 2));
}

/** Runs fn over items with a concurrency limit; waits for everything, then throws the first error. */
export async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let firstError: unknown = null;
  const worker = async () => {
    while (next < items.length && firstError === null) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        if (firstError === null) firstError = e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (firstError !== null) throw firstError;
}

export function chunk<T>(items: readonly T[], parts: number): T[][] {
  const size = Math.max(1, Math.ceil(items.length / parts));
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export async function run(cmd: string, args: string[], input?: string): Promise<string> {
  let r;
  try {
    r = await execa(cmd, args, { input, reject: false, stripFinalNewline: false });
  } catch (e) {
    throw new SandboxError(`cannot run ${cmd}: ${(e as Error).message}`, `install ${cmd} (iproute2 / procps / util-linux)`, { cause: e });
  }
  if (r.failed) {
    const code = (r as { code?: string }).code;
    if (code === 'ENOENT') throw new SandboxError(`cannot run ${cmd}: not found`, `install ${cmd} (iproute2 / procps / util-linux)`);
    let detail = String(r.stderr ?? '').trim() || String(r.stdout ?? '').trim();
    // `ip -batch` reports "Command failed -:N": show the line that failed.
    const m = /Command failed -:(\d+)/.exec(detail);
    if (m && input !== undefined && cmd === 'ip') detail += ` [line ${m[1]}: ${input.split('\n')[Number(m[1]) - 1] ?? '?'}]`;
    throw new SandboxError(
      `${cmd} ${args.join(' ')} failed (exit ${r.exitCode ?? r.signal}): ${detail}`,
      'check the command output above; `ambientd sandbox down` cleans up a half-built sandbox',
    );
  }
  return String(r.stdout ?? '');
}

/** `ip [globalArgs] -batch -` fed with lines. */
export function ipBatch(lines: string[], globalArgs: string[] = []): Promise<string> {
  if (lines.length === 0) return Promise.resolve('');
  return run('ip', [...globalArgs, '-batch', '-'], lines.join('\n') + '\n');
}

export function sysctlIn(netns: string, settings: Record<string, string | number>): Promise<string> {
  const kv = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  return run('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', ...kv]);
}

export async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  await fsp.writeFile(tmp, data, { mode: 0o644 });
  try {
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

export function isFsType(p: string, magic: number): boolean {
  try {
    return Number(fs.statfsSync(p).type) === magic;
  } catch {
    return false;
  }
}

/** True if pid exists and is not a zombie. */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export async function waitDead(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = pids.filter(isProcessAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(50);
    alive = alive.filter(isProcessAlive);
  }
  return alive;
}

export function tailFile(file: string, lines = 30): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text
      .split('\n')
      .slice(-lines - 1)
      .join('\n')
      .trimEnd();
  } catch {
    return '';
  }
}
