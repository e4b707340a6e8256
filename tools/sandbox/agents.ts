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

/** The agent entry point: <repoRoot>/dist/src/cli.js. */
export function agentEntrypoint(repoRoot: string): string {
  return path.join(repoRoot, 'dist', 'src', 'cli.js');
}

/** The capabilities deploy/ambientd.yaml adds (it drops ALL first). */
export const DAEMONSET_CAPABILITIES = ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE', 'SYS_RESOURCE'] as const;

/** A hard rlimit of this process from /proc/self/limits ('unlimited' as Infinity). */
function hardLimit(name: string): number {
  const line = fs
    .readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name));
  const v = line?.slice(26).trim().split(/\s+/)[1];
  return v === undefined || v === 'unlimited' ? Infinity : Number(v);
}

/**
 * The shell command that runs a node's agent from a container image the way
 * the DaemonSet does (docs/IMAGE.md): the manifest's capabilities (not
 * privileged), host pid, a private cgroup namespace left with nsenter, a
 * read-only root, the hostPath mounts. The node's netns instead of the host
 * network, the sandbox state directory mounted at its own path (agent.yaml,
 * workloads, CA, hand-over socket), and nsenter's target is the launching
 * shell (in the host cgroup namespace) rather than /proc/1, whose namespaces
 * this development machine's init does not let even root open. podman runs in
 * the foreground (signals are passed on); the container is removed on exit.
 */
export function containerAgentCommand(node: SandboxNode, repoRoot: string, image: string, env: Record<string, string>): string[] {
  const stateDir = path.dirname(path.dirname(node.config));
  // CAP_SYS_RESOURCE may be missing from the host's bounding set: no rlimit above the host's;
  // rootful podman lowers its own nproc to 32768 (scripts/image/lib.sh)
  const nofile = hardLimit('Max open files');
  const nproc = Math.min(hardLimit('Max processes'), 32768);
  const conf = containersConf();
  const args = [
    'podman',
    'run',
    '--rm',
    '--name',
    `ambientd-sandbox-${node.name}-${Date.now()}`,
    '--label',
    `ambientd-sandbox=${stateDir}`,
    `--network=ns:${node.netnsPath}`,
    '--pid=host',
    '--cgroupns=private',
    '--read-only',
    ...(Number.isFinite(nofile) ? [`--ulimit=nofile=${nofile}:${nofile}`] : []),
    `--ulimit=nproc=${nproc}:${nproc}`,
    '--cap-drop=all',
    `--cap-add=${DAEMONSET_CAPABILITIES.join(',')}`,
    '-v',
    '/sys/fs/bpf:/sys/fs/bpf',
    '-v',
    '/sys/fs/cgroup:/sys/fs/cgroup',
    '-v',
    '/run/netns:/run/netns:ro,rslave',
    '-v',
    `${stateDir}:${stateDir}`,
    '--tmpfs',
    '/tmp:size=16m',
    ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    '--entrypoint',
    'nsenter',
    image,
    '--cgroup=/proc/$$/ns/cgroup',
    '--',
    'node',
    '/opt/ambientd/dist/src/cli.js',
    'agent',
    '--config',
    node.config,
  ].map((a) => (a === '--cgroup=/proc/$$/ns/cgroup' ? a : shellQuote(a)));
  const script = `echo $$ > ${shellQuote(path.join(node.cgroup, 'cgroup.procs'))} && CONTAINERS_CONF=${shellQuote(conf)} exec ${args.join(' ')}`;
  return ['sh', '-c', script];
}

/** The repository's podman settings (scripts/image/containers.conf: runc, cgroupfs), unless CONTAINERS_CONF is set. */
export function containersConf(): string {
  return process.env.CONTAINERS_CONF ?? path.resolve(import.meta.dirname, '..', '..', '..', 'scripts', 'image', 'containers.conf');
}

/**
 * argv of a one-off `podman run` of the image's CLI with host network and pid
 * and the given capabilities and bind mounts (host path = container path), as
 * the uninstall DaemonSet runs `ambientd cleanup`. Run it with
 * env CONTAINERS_CONF=containersConf().
 */
export function containerCliArgv(image: string, caps: readonly string[], mounts: readonly string[], cliArgs: readonly string[]): string[] {
  const nofile = hardLimit('Max open files');
  const nproc = Math.min(hardLimit('Max processes'), 32768);
  return [
    'podman',
    'run',
    '--rm',
    '--network=host',
    '--pid=host',
    '--read-only',
    '--tmpfs',
    '/tmp:size=1m',
    ...(Number.isFinite(nofile) ? [`--ulimit=nofile=${nofile}:${nofile}`] : []),
    `--ulimit=nproc=${nproc}:${nproc}`,
    '--cap-drop=all',
    `--cap-add=${caps.join(',')}`,
    ...mounts.flatMap((m) => ['-v', `${m}:${m}`]),
    '--entrypoint',
    'node',
    image,
    '/opt/ambientd/dist/src/cli.js',
    ...cliArgs,
  ];
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
