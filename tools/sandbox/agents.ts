/**
 * The agents of the sandbox nodes: start (detached, in the node's agent
 * cgroup and netns), stop, restart the way a DaemonSet rolling update does,
 * and wait for readiness.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { isProcessAlive, shellQuote, sleep, tailFile, usage, waitDead } from './helpers.js';
import { SANDBOX_DIR_NAME, SandboxAgentError, SandboxError, TIME_SCALE, type SandboxNode, type SandboxPathOptions, type StartAgentOptions } from './model.js';
import { defaultRepoRoot } from './plan.js';
import { findNode, loadState, updateState } from './state.js';
import { containerAgentCommand } from './container.js';

export { containerAgentCommand, containerCliArgv, containersConf } from './container.js';

/** The agent entry point: <repoRoot>/dist/src/cli.js. */
export function agentEntrypoint(repoRoot: string): string {
  return path.join(repoRoot, 'dist', 'src', 'cli.js');
}

/** The image startAgent runs the agent from, or undefined for the checkout. */
export function agentImage(opts: StartAgentOptions): string | undefined {
  const image = opts.image ?? process.env.AMBIENTD_SANDBOX_IMAGE;
  return image ? image : undefined;
}

/** The shell command startAgent runs (exported for docs and tests). */
export function agentCommand(node: SandboxNode, repoRoot: string, launcher: 'nsenter' | 'ip-netns-exec' = 'nsenter'): string[] {
  const enter = launcher === 'nsenter' ? `nsenter ${shellQuote(`--net=${node.netnsPath}`)} --` : `ip netns exec ${shellQuote(node.netns)}`;
  const script = `echo $$ > ${shellQuote(path.join(node.cgroup, 'cgroup.procs'))} && exec ${enter} ${shellQuote(process.execPath)} ${shellQuote(agentEntrypoint(repoRoot))} agent --config ${shellQuote(node.config)}`;
  return ['sh', '-c', script];
}

/** The node's agent pid if that agent is running (and really ours: not a reused pid), else null. */
export function liveAgentPid(n: SandboxNode): number | null {
  return n.agentPid !== null && isProcessAlive(n.agentPid) && isSandboxProcess(n.agentPid, n.config) ? n.agentPid : null;
}

/** True if pid looks like one of our processes (guards against pid reuse after a crash). */
function isSandboxProcess(pid: number, hint?: string): boolean {
  try {
    if (fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(`/${SANDBOX_DIR_NAME}/`)) return true;
    if (
      hint &&
      fs
        .readFileSync(`/proc/${pid}/cmdline`, 'utf8')
        .split('\0')
        .some((a) => a.includes(hint))
    )
      return true;
  } catch {
    /* gone */
  }
  return false;
}

/**
 * Spawns the agent of a node, detached, logging (appending) to
 * <stateDir>/n<i>/agent.log, inside the node's agent cgroup and netns.
 * Removes a stale agent.ready first; records the pid in state.json.
 */
export async function startAgent(node: string, opts: StartAgentOptions = {}): Promise<number> {
  const state = loadState(opts);
  const n = findNode(state, node);
  if (!opts.alongside && liveAgentPid(n) !== null) {
    throw usage(`sandbox: the agent of ${n.name} is already running (pid ${n.agentPid})`, `stop it first (stopAgent / kill ${n.agentPid})`);
  }
  const repoRoot = path.resolve(opts.repoRoot ?? state.repoRoot ?? defaultRepoRoot());
  const image = agentImage(opts);
  const entry = agentEntrypoint(repoRoot);
  if (!image && !fs.existsSync(entry)) throw new SandboxError(`agent entry point ${entry} does not exist`, 'build it first: `npm run build`');
  await fsp.rm(n.readyFile, { force: true });
  await fsp.mkdir(path.dirname(n.log), { recursive: true });
  const fd = fs.openSync(n.log, 'a');
  let child: ChildProcess;
  try {
    fs.writeSync(fd, `--- ambientd sandbox: starting agent of ${n.name} at ${new Date().toISOString()} ---\n`);
    const agentEnv: Record<string, string> = { AMBIENTD_SANDBOX_NODE: n.name, AMBIENTD_READY_FILE: n.readyFile, ...opts.env };
    if (image && process.env.AMBIENTD_TIME_SCALE) agentEnv.AMBIENTD_TIME_SCALE = process.env.AMBIENTD_TIME_SCALE;
    const [cmd, ...args] = image ? containerAgentCommand(n, repoRoot, image, agentEnv) : agentCommand(n, repoRoot, opts.launcher);
    child = spawn(cmd!, args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...agentEnv },
    });
  } finally {
    fs.closeSync(fd);
  }
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('error', (e) => reject(new SandboxError(`cannot start the agent of ${n.name}: ${e.message}`, 'check that sh and nsenter exist', { cause: e })));
    child.once('spawn', () => resolve(child.pid!));
  });
  child.unref();
  await updateState(opts, (s) => {
    findNode(s, n.name).agentPid = pid;
  });
  return pid;
}

/**
 * Sends signal to the node's agent and waits (up to timeoutMs, default 10 s)
 * for it to exit. Resolves true if no agent is running afterwards.
 */
export async function stopAgent(node: string, signal: NodeJS.Signals = 'SIGTERM', opts: SandboxPathOptions & { timeoutMs?: number } = {}): Promise<boolean> {
  const n = findNode(loadState(opts), node);
  const pid = liveAgentPid(n);
  if (pid === null) {
    await updateState(opts, (s) => void (findNode(s, n.name).agentPid = null));
    return true;
  }
  try {
    process.kill(pid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
  const alive = await waitDead([pid], opts.timeoutMs ?? 10_000);
  if (alive.length > 0) return false;
  await fsp.rm(n.readyFile, { force: true });
  await updateState(opts, (s) => void (findNode(s, n.name).agentPid = null));
  return true;
}

export interface RestartAgentOptions extends StartAgentOptions {
  /** true (default): the new agent starts while the old one runs and takes its sockets (DaemonSet maxSurge); false: SIGTERM, wait for the exit, then start (maxUnavailable) */
  handover?: boolean;
  readyTimeoutMs?: number;
}

/**
 * Restarts a node's agent the way a DaemonSet rolling update does. Resolves
 * once the new agent is ready (and, with hand-over, the old one was sent
 * SIGTERM: it drains its established connections and exits by itself).
 */
export async function restartAgent(node: string, opts: RestartAgentOptions = {}): Promise<{ oldPid: number | null; newPid: number; readyMs: number }> {
  const n = findNode(loadState(opts), node);
  const oldPid = liveAgentPid(n);
  const handover = opts.handover ?? true;
  const t0 = Date.now();
  if (oldPid !== null && !handover) {
    if (!(await stopAgent(node, 'SIGTERM', { ...opts, timeoutMs: 60_000 })))
      throw new SandboxError(`the agent of ${n.name} (pid ${oldPid}) did not exit`, 'kill it (`ambientd sandbox agent <node> kill`)');
  }
  let newPid = await startAgent(node, { ...opts, alongside: handover });
  await waitAgentReady(node, opts.readyTimeoutMs ?? 30_000 * TIME_SCALE, opts);
  const readyMs = Date.now() - t0;
  newPid = findNode(loadState(opts), node).agentPid ?? newPid; // from an image: the agent's, not podman's
  if (oldPid !== null && handover) {
    try {
      process.kill(oldPid, 'SIGTERM');
    } catch {
      /* already gone */
    }
  }
  return { oldPid, newPid, readyMs };
}

/** True if process pid started after process ref (both alive; /proc/<pid>/stat field 22). */
function startedAfter(pid: number, ref: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const start = (p: number): number => Number(fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]);
  try {
    return start(pid) >= start(ref);
  } catch {
    return false;
  }
}

/**
 * Waits until the agent writes <stateDir>/n<i>/agent.ready. Throws
 * SandboxAgentError (with the tail of agent.log) if the agent process dies
 * first or timeoutMs passes.
 */
export async function waitAgentReady(node: string, timeoutMs = 30_000 * TIME_SCALE, opts: SandboxPathOptions = {}): Promise<void> {
  const n = findNode(loadState(opts), node);
  if (n.agentPid === null) throw usage(`sandbox: the agent of ${n.name} was not started`, 'start it with startAgent / `ambientd sandbox up`');
  const deadline = Date.now() + timeoutMs;
  // the file holds the ready agent's pid (after a restart the old one may still run); from an
  // image, agentPid is podman's and the agent is another process, started after it
  let containerAgent: number | null = null;
  const ready = (): boolean => {
    try {
      const t = fs.readFileSync(n.readyFile, 'utf8').trim();
      if (t === '' || t === String(n.agentPid)) return true;
      if (startedAfter(Number(t), n.agentPid!)) containerAgent = Number(t);
      return containerAgent !== null;
    } catch {
      return false;
    }
  };
  for (;;) {
    if (ready()) {
      // from an image: from now on the state names the agent itself (signals, dumps, restarts),
      // not podman; podman exits when the agent does
      if (containerAgent !== null) await updateState(opts, (s) => void (findNode(s, n.name).agentPid = containerAgent));
      return;
    }
    if (!isProcessAlive(n.agentPid)) {
      // It may have written the file just before exiting.
      if (ready()) return;
      throw new SandboxAgentError(`the agent of ${n.name} (pid ${n.agentPid}) exited before becoming ready`, tailFile(n.log));
    }
    if (Date.now() >= deadline) {
      throw new SandboxAgentError(`the agent of ${n.name} (pid ${n.agentPid}) was not ready after ${timeoutMs} ms (no ${n.readyFile})`, tailFile(n.log));
    }
    await sleep(100);
  }
}
