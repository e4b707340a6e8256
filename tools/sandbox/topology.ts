/**
 * The sandbox cluster: N "nodes" with P "pods" each, built on this one machine
 * out of network namespaces, veth pairs, a bridge and cgroup v2 directories,
 * plus the Kubernetes-like workload file and one agent config per node.
 *
 * Everything the sandbox creates carries a fixed prefix (netns `ambs-*`,
 * cgroup `<cgroupRoot>/ambientd-sandbox`, bpffs `<bpffsRoot>/ambientd-sandbox`)
 * so that `sandboxDown` can clean up after a crash without any state file.
 *
 *   netns ambs-fabric: br0 ── n<i> ═══ eth0 (10.100.0.<i>/24) netns ambs-n<i>
 *   netns ambs-n<i>:   vp<j> ═══ eth0 (10.244.<i>.<j+1>/32) netns ambs-n<i>-p<j>
 *
 * Pods route everything via the link-local gateway 169.254.1.1, which the
 * node answers by proxy ARP on vp<j> (Calico style). For proxy ARP to answer,
 * the node needs *a* unicast route to 169.254.1.1 out of another device, so
 * each node also gets `169.254.1.1 dev lo scope link` (it carries no traffic).
 */
import { execa } from 'execa';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATAPLANE_MODE_LABEL, enrolledByLabels } from '../../src/discovery/model.js';
import YAML from 'yaml';
import { AmbientError } from '../../src/util/errors.js';

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

export const NETNS_PREFIX = 'ambs-';
export const FABRIC_NETNS = 'ambs-fabric';
export const FABRIC_BRIDGE = 'br0';
/** Directory name used under both the cgroup root and the bpffs root. */
export const SANDBOX_DIR_NAME = 'ambientd-sandbox';
export const DEFAULT_STATE_DIR = '/run/ambientd-sandbox';
export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup/unified';
export const DEFAULT_BPFFS_ROOT = '/sys/fs/bpf';
export const AMBIENT_NAMESPACE = 'ambient-demo';
export const PLAIN_NAMESPACE = 'plain';
export { DATAPLANE_MODE_LABEL } from '../../src/discovery/model.js';
/** The agent's socket mark (ztunnel's 0x539); `down` removes host ip rules using it. */
export const MESH_MARK = 0x539;
export const POD_GATEWAY_IP = '169.254.1.1';
export const MAX_NODES = 50;
export const MAX_PODS = 200;
export const NETNS_RUN_DIR = '/run/netns';
/** Name of the file the agent writes (in its config's directory) once it is ready. */
export const AGENT_READY_FILE = 'agent.ready';
/**
 * Multiplies the sandbox's default waits (agent readiness): AMBIENTD_TIME_SCALE,
 * e.g. 4 under emulation (scripts/vm/run.sh sets it in the qemu VM). Default 1.
 */
export const TIME_SCALE = Math.max(1, Number(process.env.AMBIENTD_TIME_SCALE) || 1);

const CGROUP2_SUPER_MAGIC = 0x63677270;
const BPF_FS_MAGIC = 0xcafe4a11;

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

export interface SandboxPathOptions {
  /** default /run/ambientd-sandbox */
  stateDir?: string;
  /** cgroup v2 mount; default /sys/fs/cgroup/unified */
  cgroupRoot?: string;
  /** bpffs mount; default /sys/fs/bpf (the sandbox uses <bpffsRoot>/ambientd-sandbox/n<i>) */
  bpffsRoot?: string;
}

export interface SandboxUpOptions extends SandboxPathOptions {
  /** 1..50, default 2 */
  nodes?: number;
  /** pods per node, 1..200, default 2 */
  pods?: number;
  /** start one agent per node (and wait until ready); default true */
  agents?: boolean;
  /** repository root holding dist/src/cli.js; default: three levels above dist/tools/sandbox */
  repoRoot?: string;
  /** timeout for each agent's readiness when agents is true; default 30000 */
  agentReadyTimeoutMs?: number;
  /** agent logLevel written to agent.yaml; default info */
  logLevel?: string;
  /** agent drainTimeout written to agent.yaml; default 5s */
  drainTimeout?: string;
  /** agent handoverTimeout written to agent.yaml; default: the agent's (10s) */
  handoverTimeout?: string;
  /** more agent settings written to every agent.yaml (e.g. { peerTimeout: '4s', limits: {...} }) */
  agentSettings?: Record<string, unknown>;
  /** how long to wait for another live process's sandbox (see SANDBOX_LOCK); default 15 min */
  lockTimeoutMs?: number;
}

export interface SandboxDownOptions extends SandboxPathOptions {
  /** how long to wait for another live process's sandbox; default 15 min */
  lockTimeoutMs?: number;
  /** time agents get to exit after SIGTERM before SIGKILL; default 2000 */
  graceMs?: number;
}

export interface SandboxNode {
  name: string;
  /** netns name (`ip netns exec <netns>`) */
  netns: string;
  /** /run/netns/<netns> */
  netnsPath: string;
  ip: string;
  agentPid: number | null;
  /** the agent's cgroup v2 directory */
  cgroup: string;
  /** agent config file (agent.yaml) */
  config: string;
  bpffsDir: string;
  log: string;
  readyFile: string;
  /** only filled in by sandboxStatus(): is agentPid alive? */
  agentRunning?: boolean;
}

export interface SandboxPod {
  name: string;
  node: string;
  namespace: string;
  serviceAccount: string;
  ip: string;
  /** netns name (`ip netns exec <netns>`) */
  netns: string;
  /** /run/netns/<netns> (what the workload file carries) */
  netnsPath: string;
  cgroup: string;
  labels: Record<string, string>;
  /** effective enrollment: pod label ambient/none wins, else namespace label */
  ambient: boolean;
}

export interface WorkloadNamespace {
  name: string;
  labels: Record<string, string>;
}

export interface SandboxState {
  version: 1;
  createdAt: string;
  stateDir: string;
  cgroupRoot: string;
  /** <bpffsRoot>/ambientd-sandbox */
  bpffsDir: string;
  /** <stateDir>/mesh/00-workloads.json (the pods and namespaces the sandbox made) */
  workloads: string;
  /** <stateDir>/mesh: every file in it is read by the agents (`sandbox apply -f` adds more) */
  meshDir: string;
  repoRoot: string;
  /** agents' drainTimeout (agent.yaml) */
  drainTimeout?: string;
  /** agents' handoverTimeout (agent.yaml), when set */
  handoverTimeout?: string;
  /** more settings of every agent.yaml */
  agentSettings?: Record<string, unknown>;
  namespaces: WorkloadNamespace[];
  nodes: SandboxNode[];
  pods: SandboxPod[];
}

/** One pod entry of workloads.json (the format src/discovery/workloads.ts reads). */
export interface WorkloadPod {
  name: string;
  namespace: string;
  serviceAccount: string;
  node: string;
  ip: string;
  netns: string;
  cgroup: string;
  labels: Record<string, string>;
}

export interface WorkloadsDocument {
  namespaces: WorkloadNamespace[];
  pods: WorkloadPod[];
}

/** Contents of <stateDir>/n<i>/agent.yaml (fields of src/config/config.ts). */
export interface SandboxAgentConfig {
  node: string;
  nodeIP: string;
  cgroupRoot: string;
  bpffsDir: string;
  workloads: string;
  agentCgroup: string;
  acceleration: 'none' | 'sockmap';
  logLevel: string;
  readyFile: string;
  trustDomain: string;
  /** one CA directory for every node: all agents share one trust root */
  caDir: string;
  /** <stateDir>/n<i>/handover.sock: a restarted agent takes the sockets of the running one */
  handoverSocket: string;
  drainTimeout: string;
  handoverTimeout?: string;
  [setting: string]: unknown;
}

export interface ExecResult {
  /** exit code; 128+signal number when killed by a signal */
  exitCode: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface ExecInPodOptions {
  stateDir?: string;
  /** 'inherit' (default) passes the terminal through; 'ignore' discards output */
  stdio?: 'inherit' | 'ignore';
  /** fed to stdin instead of inheriting it */
  input?: string | Buffer;
  env?: Record<string, string>;
}

export interface ExecCaptureOptions {
  stateDir?: string;
  input?: string | Buffer;
  timeoutMs?: number;
  env?: Record<string, string>;
}

export interface SpawnInPodOptions {
  stateDir?: string;
  stdio?: StdioOptions;
  env?: Record<string, string>;
}

export interface StartAgentOptions {
  stateDir?: string;
  repoRoot?: string;
  /** extra environment for the agent */
  env?: Record<string, string>;
  /**
   * How the agent enters the node netns. 'nsenter' (default) switches only the
   * network namespace, so the agent keeps seeing the host's cgroup2 and bpffs
   * mounts. 'ip-netns-exec' remounts /sys, which hides /sys/fs/cgroup/* and
   * /sys/fs/bpf from the agent.
   */
  launcher?: 'nsenter' | 'ip-netns-exec';
  /** start even though the node's agent runs (restartAgent: it hands over to the new one) */
  alongside?: boolean;
}

export interface SandboxDownReport {
  killed: number[];
  netns: string[];
  cgroups: number;
  ipRules: number;
  /** things that could not be removed (empty on success) */
  leftovers: string[];
}

/** No sandbox exists (no state file). */
export class SandboxNotFoundError extends AmbientError {
  constructor(stateDir: string) {
    super('SANDBOX_MISSING', `no sandbox found (no ${path.join(stateDir, 'state.json')})`, 'run `ambientd sandbox up`');
    this.name = 'SandboxNotFoundError';
  }
}

/** Bad input or a failed sandbox operation. */
export class SandboxError extends AmbientError {
  constructor(message: string, hint: string, opts: { cause?: unknown; code?: 'SANDBOX_INVALID' | 'USAGE' } = {}) {
    super(opts.code ?? 'SANDBOX_INVALID', message, hint, opts.cause !== undefined ? { cause: opts.cause } : {});
    this.name = 'SandboxError';
  }
}

/** An agent died or did not become ready; `logTail` holds the end of agent.log. */
export class SandboxAgentError extends SandboxError {
  constructor(message: string, readonly logTail: string) {
    super(`${message}${logTail ? `\n--- last lines of agent.log ---\n${logTail}` : ''}`, 'read the agent log; fix and restart the agent (or `ambientd sandbox down && ambientd sandbox up`)');
    this.name = 'SandboxAgentError';
  }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function usage(message: string, hint: string): SandboxError {
  return new SandboxError(message, hint, { code: 'USAGE' });
}

/** POSIX shell single-quoting. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_\/.:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function concurrency(): number {
  return Math.min(32, Math.max(4, os.availableParallelism() * 2));
}

/** Runs fn over items with a concurrency limit; waits for everything, then throws the first error. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
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

function chunk<T>(items: readonly T[], parts: number): T[][] {
  const size = Math.max(1, Math.ceil(items.length / parts));
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

async function run(cmd: string, args: string[], input?: string): Promise<string> {
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
    throw new SandboxError(`${cmd} ${args.join(' ')} failed (exit ${r.exitCode ?? r.signal}): ${detail}`, 'check the command output above; `ambientd sandbox down` cleans up a half-built sandbox');
  }
  return String(r.stdout ?? '');
}

/** `ip [globalArgs] -batch -` fed with lines. */
function ipBatch(lines: string[], globalArgs: string[] = []): Promise<string> {
  if (lines.length === 0) return Promise.resolve('');
  return run('ip', [...globalArgs, '-batch', '-'], lines.join('\n') + '\n');
}

function sysctlIn(netns: string, settings: Record<string, string | number>): Promise<string> {
  const kv = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  return run('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', ...kv]);
}

async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  await fsp.writeFile(tmp, data, { mode: 0o644 });
  try {
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

function isFsType(p: string, magic: number): boolean {
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

async function waitDead(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = pids.filter(isProcessAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(50);
    alive = alive.filter(isProcessAlive);
  }
  return alive;
}

function tailFile(file: string, lines = 30): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines - 1).join('\n').trimEnd();
  } catch {
    return '';
  }
}

// In-process serialisation of state.json read-modify-write cycles.
let stateLock: Promise<unknown> = Promise.resolve();
function withStateLock<T>(fn: () => Promise<T>): Promise<T> {
  const p = stateLock.then(fn, fn);
  stateLock = p.catch(() => undefined);
  return p;
}

// ---------------------------------------------------------------------------
// Paths, naming, plan (pure)
// ---------------------------------------------------------------------------

interface ResolvedPaths {
  stateDir: string;
  cgroupRoot: string;
  bpffsRoot: string;
}

function resolvePaths(opts: SandboxPathOptions = {}): ResolvedPaths {
  return {
    stateDir: path.resolve(opts.stateDir ?? DEFAULT_STATE_DIR),
    cgroupRoot: path.resolve(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT),
    bpffsRoot: path.resolve(opts.bpffsRoot ?? DEFAULT_BPFFS_ROOT),
  };
}

/** Repo root: three levels above this compiled file (dist/tools/sandbox/topology.js), or $AMBIENTD_REPO_ROOT. */
export function defaultRepoRoot(): string {
  return process.env.AMBIENTD_REPO_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export function stateFilePath(stateDir: string = DEFAULT_STATE_DIR): string {
  return path.join(stateDir, 'state.json');
}

/** Effective enrollment with ztunnel semantics: pod label ambient/none wins, else the namespace label. */
export function effectiveAmbient(podLabels: Record<string, string>, nsLabels: Record<string, string>): boolean {
  return enrolledByLabels(podLabels, nsLabels);
}

function checkCount(what: string, v: unknown, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw usage(`sandbox: ${what} must be an integer from 1 to ${max}, got ${JSON.stringify(v)}`, `pass --${what} between 1 and ${max}`);
  }
  return v;
}

/** Computes the complete sandbox description without touching the system. */
export function planSandbox(opts: SandboxUpOptions = {}): SandboxState {
  const nodeCount = checkCount('nodes', opts.nodes ?? 2, MAX_NODES);
  const podCount = checkCount('pods', opts.pods ?? 2, MAX_PODS);
  const { stateDir, cgroupRoot, bpffsRoot } = resolvePaths(opts);
  const cgBase = path.join(cgroupRoot, SANDBOX_DIR_NAME);
  const bpfBase = path.join(bpffsRoot, SANDBOX_DIR_NAME);
  const namespaces: WorkloadNamespace[] = [
    { name: AMBIENT_NAMESPACE, labels: { [DATAPLANE_MODE_LABEL]: 'ambient' } },
    { name: PLAIN_NAMESPACE, labels: {} },
  ];
  const nsLabels = new Map(namespaces.map((n) => [n.name, n.labels]));
  const nodes: SandboxNode[] = [];
  const pods: SandboxPod[] = [];
  for (let i = 1; i <= nodeCount; i++) {
    const name = `n${i}`;
    const dir = path.join(stateDir, name);
    nodes.push({
      name,
      netns: `${NETNS_PREFIX}${name}`,
      netnsPath: path.join(NETNS_RUN_DIR, `${NETNS_PREFIX}${name}`),
      ip: `10.100.0.${i}`,
      agentPid: null,
      cgroup: path.join(cgBase, name, 'agent'),
      config: path.join(dir, 'agent.yaml'),
      bpffsDir: path.join(bpfBase, name),
      log: path.join(dir, 'agent.log'),
      readyFile: path.join(dir, AGENT_READY_FILE),
    });
    for (let j = 1; j <= podCount; j++) {
      const pod = `${name}-p${j}`;
      const namespace = j % 2 === 1 ? AMBIENT_NAMESPACE : PLAIN_NAMESPACE;
      const labels = { app: pod, tier: 'echo' };
      pods.push({
        name: pod,
        node: name,
        namespace,
        serviceAccount: `sa-${pod}`,
        ip: `10.244.${i}.${j + 1}`,
        netns: `${NETNS_PREFIX}${pod}`,
        netnsPath: path.join(NETNS_RUN_DIR, `${NETNS_PREFIX}${pod}`),
        cgroup: path.join(cgBase, name, 'pods', pod),
        labels,
        ambient: effectiveAmbient(labels, nsLabels.get(namespace)!),
      });
    }
  }
  return {
    version: 1,
    createdAt: new Date().toISOString(),
    stateDir,
    cgroupRoot,
    bpffsDir: bpfBase,
    workloads: path.join(stateDir, 'mesh', '00-workloads.json'),
    meshDir: path.join(stateDir, 'mesh'),
    repoRoot: path.resolve(opts.repoRoot ?? defaultRepoRoot()),
    drainTimeout: opts.drainTimeout ?? '5s',
    ...(opts.handoverTimeout ? { handoverTimeout: opts.handoverTimeout } : {}),
    ...(opts.agentSettings ? { agentSettings: opts.agentSettings } : {}),
    namespaces,
    nodes,
    pods,
  };
}


export function workloadsDocument(state: SandboxState): WorkloadsDocument {
  return {
    namespaces: state.namespaces.map((n) => ({ name: n.name, labels: { ...n.labels } })),
    pods: state.pods.map((p) => ({
      name: p.name,
      namespace: p.namespace,
      serviceAccount: p.serviceAccount,
      node: p.node,
      ip: p.ip,
      netns: p.netnsPath,
      cgroup: p.cgroup,
      labels: { ...p.labels },
    })),
  };
}

/** workloads.json text for a state (JSON: the agent parses it in well under a millisecond). */
export function renderWorkloads(state: SandboxState): string {
  return JSON.stringify(workloadsDocument(state), null, 1) + '\n';
}

export function agentConfigFor(state: SandboxState, node: SandboxNode, logLevel = 'info'): SandboxAgentConfig {
  return {
    node: node.name,
    nodeIP: node.ip,
    cgroupRoot: state.cgroupRoot,
    bpffsDir: node.bpffsDir,
    workloads: state.meshDir,
    agentCgroup: node.cgroup,
    acceleration: 'none',
    logLevel,
    readyFile: node.readyFile,
    trustDomain: 'cluster.local',
    caDir: path.join(state.stateDir, 'ca'),
    handoverSocket: path.join(path.dirname(node.config), 'handover.sock'),
    drainTimeout: state.drainTimeout ?? '5s',
    ...(state.handoverTimeout ? { handoverTimeout: state.handoverTimeout } : {}),
    ...(state.agentSettings ?? {}),
  };
}

export function renderAgentConfig(state: SandboxState, node: SandboxNode, logLevel = 'info'): string {
  return YAML.stringify(agentConfigFor(state, node, logLevel), { lineWidth: 0 });
}

// ---------------------------------------------------------------------------
// State file
// ---------------------------------------------------------------------------

function readStateFile(stateDir: string): SandboxState | null {
  const file = stateFilePath(stateDir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new SandboxError(`cannot read ${file}: ${(e as Error).message}`, 'run as root', { cause: e });
  }
  let state: SandboxState;
  try {
    state = JSON.parse(text) as SandboxState;
  } catch (e) {
    throw new SandboxError(`${file} is not valid JSON: ${(e as Error).message}`, 'run `ambientd sandbox down` then `ambientd sandbox up`', { cause: e });
  }
  if (!state || !Array.isArray(state.nodes) || !Array.isArray(state.pods)) {
    throw new SandboxError(`${file} is not a sandbox state file`, 'run `ambientd sandbox down` then `ambientd sandbox up`');
  }
  return state;
}

function loadState(opts: SandboxPathOptions = {}): SandboxState {
  const { stateDir } = resolvePaths(opts);
  const state = readStateFile(stateDir);
  if (!state) throw new SandboxNotFoundError(stateDir);
  return state;
}

async function writeState(state: SandboxState): Promise<void> {
  const out = { ...state, nodes: state.nodes.map(({ agentRunning: _r, ...n }) => n) };
  await writeFileAtomic(stateFilePath(state.stateDir), JSON.stringify(out, null, 2) + '\n');
}

function updateState(opts: SandboxPathOptions, fn: (s: SandboxState) => void | Promise<void>): Promise<SandboxState> {
  return withStateLock(async () => {
    const state = loadState(opts);
    await fn(state);
    await writeState(state);
    return state;
  });
}

function findNode(state: SandboxState, node: string): SandboxNode {
  const n = state.nodes.find((x) => x.name === node || x.netns === node);
  if (!n) throw usage(`sandbox: unknown node "${node}" (nodes: ${state.nodes.map((x) => x.name).join(', ')})`, 'see `ambientd sandbox status`');
  return n;
}

function findPod(state: SandboxState, pod: string): SandboxPod {
  const p = state.pods.find((x) => x.name === pod || x.netns === pod);
  if (!p) {
    const names = state.pods.map((x) => x.name);
    const shown = names.length > 12 ? `${names.slice(0, 12).join(', ')}, ...` : names.join(', ');
    throw usage(`sandbox: unknown pod "${pod}" (pods: ${shown})`, 'see `ambientd sandbox status`; pods are named n<node>-p<pod>, e.g. n1-p1');
  }
  return p;
}

// ---------------------------------------------------------------------------
// up
// ---------------------------------------------------------------------------

function preflight(p: ResolvedPaths): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new SandboxError('the sandbox needs root (it creates network namespaces and cgroups)', 'run it with sudo');
  }
  if (!isFsType(p.cgroupRoot, CGROUP2_SUPER_MAGIC)) {
    throw new SandboxError(`${p.cgroupRoot} is not a cgroup v2 mount`, 'pass the cgroup2 mount point as cgroupRoot (see `mount -t cgroup2`), e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified');
  }
  if (!isFsType(p.bpffsRoot, BPF_FS_MAGIC)) {
    throw new SandboxError(`${p.bpffsRoot} is not a bpffs mount`, 'mount it: `mount -t bpf bpf /sys/fs/bpf`');
  }
}

async function listSandboxNetns(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']);
  const names = out.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n.startsWith(NETNS_PREFIX));
  // Also catch files left behind without a mount (crash during `netns add`).
  try {
    for (const f of fs.readdirSync(NETNS_RUN_DIR)) if (f.startsWith(NETNS_PREFIX) && !names.includes(f)) names.push(f);
  } catch {
    /* no /run/netns */
  }
  return names;
}

async function sandboxExists(p: ResolvedPaths): Promise<boolean> {
  return fs.existsSync(stateFilePath(p.stateDir))
    || fs.existsSync(path.join(p.cgroupRoot, SANDBOX_DIR_NAME))
    || fs.existsSync(path.join(p.bpffsRoot, SANDBOX_DIR_NAME))
    || (await listSandboxNetns()).length > 0;
}

async function buildNetwork(state: SandboxState): Promise<void> {
  const limit = concurrency();
  const podsOf = new Map(state.nodes.map((n) => [n.name, state.pods.filter((p) => p.node === n.name)]));

  // 1. namespaces. The first `netns add` alone: it may set up the /run/netns mount.
  await run('ip', ['netns', 'add', FABRIC_NETNS]);
  const rest = [...state.nodes.map((n) => n.netns), ...state.pods.map((p) => p.netns)];
  await pool(chunk(rest, limit), limit, async (names) => {
    await ipBatch(names.map((n) => `netns add ${n}`));
  });

  // 2. fabric bridge; node sysctls first so interfaces created later inherit rp_filter=0.
  await Promise.all([
    ipBatch(['link set lo up', `link add ${FABRIC_BRIDGE} type bridge`, `link set ${FABRIC_BRIDGE} up`], ['-n', FABRIC_NETNS]),
    pool(state.nodes, limit, async (n) => {
      await sysctlIn(n.netns, { 'net.ipv4.ip_forward': 1, 'net.ipv4.conf.all.rp_filter': 0, 'net.ipv4.conf.default.rp_filter': 0 });
    }),
  ]);

  // 3. veth pairs, created directly inside their namespaces (one batch per node).
  await pool(state.nodes, limit, async (n) => {
    const lines = [`link add eth0 netns ${n.netns} type veth peer name ${n.name} netns ${FABRIC_NETNS}`];
    podsOf.get(n.name)!.forEach((p, idx) => {
      lines.push(`link add eth0 netns ${p.netns} type veth peer name vp${idx + 1} netns ${n.netns}`);
    });
    await ipBatch(lines);
  });

  // 4. addresses, routes, links up, proxy ARP. This needs one `ip -n <ns>`
  // per namespace; spawning those from Node costs several ms each, so the
  // per-namespace steps are written as shell snippets and run by a few
  // `sh` processes in parallel (50 x 20 pods: ~2 s instead of ~8 s).
  const snippets: string[] = [];
  const step = (ns: string, lines: string[]) =>
    `ip -n ${ns} -batch - <<'AMBS_EOF' || { echo "sandbox: configuring netns ${ns} failed" >&2; exit 1; }\n${lines.join('\n')}\nAMBS_EOF\n`;
  snippets.push(step(FABRIC_NETNS, state.nodes.flatMap((n) => [`link set ${n.name} master ${FABRIC_BRIDGE}`, `link set ${n.name} up`])));
  for (const n of state.nodes) {
    const pods = podsOf.get(n.name)!;
    const lines = ['link set lo up', `addr add ${n.ip}/24 dev eth0`, 'link set eth0 up'];
    pods.forEach((p, idx) => lines.push(`link set vp${idx + 1} up`, `route add ${p.ip}/32 dev vp${idx + 1}`));
    lines.push(`route add ${POD_GATEWAY_IP}/32 dev lo scope link`);
    for (const other of state.nodes) {
      if (other !== n) lines.push(`route add 10.244.${other.name.slice(1)}.0/24 via ${other.ip} dev eth0`);
    }
    // proxy_delay=0: otherwise the kernel delays each proxy ARP reply by up to 0.8 s (Calico does the same).
    const proxyArp = pods.map((_p, idx) => `net.ipv4.conf.vp${idx + 1}.proxy_arp=1 net.ipv4.neigh.vp${idx + 1}.proxy_delay=0`).join(' ');
    snippets.push(step(n.netns, lines)
      + `ip netns exec ${n.netns} sysctl -q -w ${proxyArp} || { echo "sandbox: sysctl in netns ${n.netns} failed" >&2; exit 1; }\n`);
  }
  for (const p of state.pods) {
    snippets.push(step(p.netns, [
      'link set lo up',
      `addr add ${p.ip}/32 dev eth0`,
      'link set eth0 up',
      `route add ${POD_GATEWAY_IP} dev eth0 scope link`,
      `route add default via ${POD_GATEWAY_IP} dev eth0`,
    ]));
  }
  const k = Math.min(snippets.length, Math.max(2, Math.min(32, os.availableParallelism() * 2)));
  const scripts = Array.from({ length: k }, (_, i) => snippets.filter((_s, idx) => idx % k === i).join(''));
  await pool(scripts, scripts.length, async (script) => {
    await run('sh', ['-s'], script);
  });
}

async function buildDirs(state: SandboxState, logLevel: string): Promise<void> {
  const limit = concurrency();
  await fsp.mkdir(state.stateDir, { recursive: true, mode: 0o755 });
  await fsp.mkdir(state.meshDir, { recursive: true, mode: 0o755 });
  await pool(state.nodes, limit, async (n) => {
    await fsp.mkdir(n.cgroup, { recursive: true });
    await fsp.mkdir(n.bpffsDir, { recursive: true });
    await fsp.mkdir(path.dirname(n.config), { recursive: true });
    await writeFileAtomic(n.config, renderAgentConfig(state, n, logLevel));
  });
  await pool(state.pods, limit * 4, async (p) => {
    await fsp.mkdir(p.cgroup, { recursive: true });
  });
  await writeFileAtomic(state.workloads, renderWorkloads(state));
  await writeState(state);
}

/**
 * Builds the sandbox (tearing down any previous one first) and, unless
 * agents is false, starts one agent per node and waits until each is ready.
 */
export async function sandboxUp(opts: SandboxUpOptions = {}): Promise<SandboxState> {
  const state = planSandbox(opts); // validates nodes/pods first
  const paths = resolvePaths(opts);
  preflight(paths);
  await waitForSandboxLock(opts.lockTimeoutMs ?? 15 * 60_000);
  if (await sandboxExists(paths)) await teardown(paths, {});
  try {
    await buildDirs(state, opts.logLevel ?? 'info');
    await buildNetwork(state);
  } catch (e) {
    await teardown(paths, {}).catch(() => undefined);
    releaseSandboxLock();
    throw e;
  }
  if (opts.agents ?? true) {
    // A failing agent leaves the sandbox up so its log can be read.
    await Promise.all(state.nodes.map((n) => startAgent(n.name, { stateDir: state.stateDir, repoRoot: state.repoRoot })));
    await Promise.all(state.nodes.map((n) => waitAgentReady(n.name, opts.agentReadyTimeoutMs ?? 30_000 * TIME_SCALE, { stateDir: state.stateDir })));
  }
  return sandboxStatus(paths);
}

// ---------------------------------------------------------------------------
// One sandbox at a time per machine: names (ambs-*) are fixed, so a test or
// benchmark process that holds a sandbox owns SANDBOX_LOCK until its down();
// another sandboxUp() waits for it instead of tearing its sandbox down. A
// lock whose process is gone (a CLI `sandbox up` that exited, a crash) is free.
// ---------------------------------------------------------------------------

export const SANDBOX_LOCK = '/run/ambientd-sandbox.lock';

function lockHolder(): number | null {
  try {
    const pid = Number(fs.readFileSync(SANDBOX_LOCK, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && isProcessAlive(pid) ? pid : null;
  } catch {
    return null;
  }
}

/** Takes the lock atomically (O_EXCL); a lock of a dead process is taken over. */
function tryTakeLock(): boolean {
  for (let i = 0; i < 2; i++) {
    try {
      const fd = fs.openSync(SANDBOX_LOCK, 'wx');
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let pid = NaN;
      try { pid = Number(fs.readFileSync(SANDBOX_LOCK, 'utf8').trim()); } catch { /* vanished: retry */ }
      if (pid === process.pid) return true;
      if (Number.isInteger(pid) && pid > 0 && isProcessAlive(pid)) return false;
      fs.rmSync(SANDBOX_LOCK, { force: true }); // stale (or empty while being written: the retry decides)
    }
  }
  return false;
}

async function waitForSandboxLock(timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  let told = false;
  while (!tryTakeLock()) {
    const holder = lockHolder();
    if (Date.now() > end) throw new SandboxError(`another process (pid ${holder ?? '?'}) holds the sandbox`, `wait for it to finish or stop it; then retry (lock: ${SANDBOX_LOCK})`);
    if (!told) { process.stderr.write(`ambientd sandbox: waiting for pid ${holder ?? '?'}, which holds the sandbox...\n`); told = true; }
    await new Promise((r) => setTimeout(r, 250 + Math.random() * 250));
  }
}

function releaseSandboxLock(): void {
  try {
    if (Number(fs.readFileSync(SANDBOX_LOCK, 'utf8').trim()) === process.pid) fs.rmSync(SANDBOX_LOCK, { force: true });
  } catch { /* none */ }
}

// ---------------------------------------------------------------------------
// status / enrollment
// ---------------------------------------------------------------------------

/**
 * `sandbox apply -f FILE`: adds Kubernetes-shaped objects (Service,
 * AuthorizationPolicy, Namespace, Pod) to what every agent reads. The file is
 * checked first; entry errors are returned (and the agents report them too).
 * Applying a file with the same name again replaces it.
 */
export async function sandboxApply(file: string, opts: SandboxPathOptions = {}): Promise<{ path: string; errors: Array<{ entry: string; message: string }> }> {
  const state = loadState(opts);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    throw new SandboxError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'pass an existing YAML or JSON file', { code: 'USAGE' });
  }
  const { parseWorkloads } = await import('../../src/discovery/workloads.js');
  let errors: Array<{ entry: string; message: string }>;
  try {
    const docs = YAML.parseAllDocuments(text).map((d) => {
      if (d.errors.length) throw new Error(`not valid YAML: ${d.errors[0]!.message.split('\n')[0]}`);
      return d.toJS();
    });
    errors = parseWorkloads(docs, { file }, undefined, true).errors;
  } catch (e) {
    throw new SandboxError(`${file}: ${(e as Error).message}`, 'fix the file; nothing was applied', { code: 'USAGE' });
  }
  const dest = path.join(state.meshDir, `50-applied-${path.basename(file).replace(/[^A-Za-z0-9_.-]/g, '_').replace(/\.(json|ya?ml)$/, '')}.yaml`);
  await writeFileAtomic(dest, text);
  return { path: dest, errors };
}

/** The current sandbox; throws SandboxNotFoundError (hint: run `ambientd sandbox up`) if there is none. */
export function sandboxStatus(opts: SandboxPathOptions = {}): SandboxState {
  const state = loadState(opts);
  for (const n of state.nodes) n.agentRunning = n.agentPid !== null && isProcessAlive(n.agentPid);
  return state;
}

/** Human-readable status table. */
export function formatSandboxStatus(state: SandboxState): string {
  const table = (rows: string[][]) => {
    const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    return rows.map((r) => r.map((cell, c) => cell.padEnd(w[c]!)).join('  ').trimEnd()).join('\n');
  };
  const nodes = table([
    ['NODE', 'IP', 'NETNS', 'AGENT', 'CONFIG'],
    ...state.nodes.map((n) => [n.name, n.ip, n.netns, n.agentPid === null ? 'not started' : `pid ${n.agentPid}${n.agentRunning === false ? ' (exited)' : ''}`, n.config]),
  ]);
  const pods = table([
    ['POD', 'NODE', 'NAMESPACE', 'IP', 'AMBIENT', 'SERVICE ACCOUNT'],
    ...state.pods.map((p) => [p.name, p.node, p.namespace, p.ip, p.ambient ? 'yes' : 'no', p.serviceAccount]),
  ]);
  return `${nodes}\n\n${pods}\n\nworkloads: ${state.workloads}\n`;
}

/**
 * enroll (ambient=true: pod label istio.io/dataplane-mode=ambient) or unenroll
 * (ambient=false: label =none, which opts out even in an ambient namespace);
 * rewrites workloads.json and state.json atomically. Returns the updated pod.
 */
export async function setEnrollment(pod: string, ambient: boolean, opts: SandboxPathOptions = {}): Promise<SandboxPod> {
  let result: SandboxPod | null = null;
  await updateState(opts, async (state) => {
    const p = findPod(state, pod);
    p.labels = { ...p.labels, [DATAPLANE_MODE_LABEL]: ambient ? 'ambient' : 'none' };
    const ns = state.namespaces.find((n) => n.name === p.namespace);
    p.ambient = effectiveAmbient(p.labels, ns?.labels ?? {});
    await writeFileAtomic(state.workloads, renderWorkloads(state));
    result = p;
  });
  return result!;
}

// ---------------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// agents
// ---------------------------------------------------------------------------

/** The agent entry point: <repoRoot>/dist/src/cli.js. */
export function agentEntrypoint(repoRoot: string): string {
  return path.join(repoRoot, 'dist', 'src', 'cli.js');
}

/** The shell command startAgent runs (exported for docs and tests). */
export function agentCommand(node: SandboxNode, repoRoot: string, launcher: 'nsenter' | 'ip-netns-exec' = 'nsenter'): string[] {
  const enter = launcher === 'nsenter'
    ? `nsenter ${shellQuote(`--net=${node.netnsPath}`)} --`
    : `ip netns exec ${shellQuote(node.netns)}`;
  const script = `echo $$ > ${shellQuote(path.join(node.cgroup, 'cgroup.procs'))} && exec ${enter} ${shellQuote(process.execPath)} ${shellQuote(agentEntrypoint(repoRoot))} agent --config ${shellQuote(node.config)}`;
  return ['sh', '-c', script];
}

/** The node's agent pid if that agent is running (and really ours: not a reused pid), else null. */
function liveAgentPid(n: SandboxNode): number | null {
  return n.agentPid !== null && isProcessAlive(n.agentPid) && isSandboxProcess(n.agentPid, n.config) ? n.agentPid : null;
}

/** True if pid looks like one of our processes (guards against pid reuse after a crash). */
function isSandboxProcess(pid: number, hint?: string): boolean {
  try {
    if (fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(`/${SANDBOX_DIR_NAME}/`)) return true;
    if (hint && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((a) => a.includes(hint))) return true;
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
  const entry = agentEntrypoint(repoRoot);
  if (!fs.existsSync(entry)) throw new SandboxError(`agent entry point ${entry} does not exist`, 'build it first: `npm run build`');
  await fsp.rm(n.readyFile, { force: true });
  await fsp.mkdir(path.dirname(n.log), { recursive: true });
  const fd = fs.openSync(n.log, 'a');
  let child: ChildProcess;
  try {
    fs.writeSync(fd, `--- ambientd sandbox: starting agent of ${n.name} at ${new Date().toISOString()} ---\n`);
    const [cmd, ...args] = agentCommand(n, repoRoot, opts.launcher);
    child = spawn(cmd!, args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, AMBIENTD_SANDBOX_NODE: n.name, AMBIENTD_READY_FILE: n.readyFile, ...opts.env },
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
    if (!(await stopAgent(node, 'SIGTERM', { ...opts, timeoutMs: 60_000 }))) throw new SandboxError(`the agent of ${n.name} (pid ${oldPid}) did not exit`, 'kill it (`ambientd sandbox agent <node> kill`)');
  }
  const newPid = await startAgent(node, { ...opts, alongside: handover });
  await waitAgentReady(node, opts.readyTimeoutMs ?? 30_000 * TIME_SCALE, opts);
  const readyMs = Date.now() - t0;
  if (oldPid !== null && handover) {
    try {
      process.kill(oldPid, 'SIGTERM');
    } catch { /* already gone */ }
  }
  return { oldPid, newPid, readyMs };
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
  // the file holds the ready agent's pid (after a restart the old one may still run)
  const ready = (): boolean => {
    try {
      const t = fs.readFileSync(n.readyFile, 'utf8').trim();
      return t === '' || t === String(n.agentPid);
    } catch {
      return false;
    }
  };
  for (;;) {
    if (ready()) return;
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

// ---------------------------------------------------------------------------
// down
// ---------------------------------------------------------------------------

function cgroupProcs(dir: string, out: number[] = []): number[] {
  try {
    for (const l of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')) if (l.trim()) out.push(Number(l));
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) cgroupProcs(path.join(dir, e.name), out);
  } catch {
    /* vanished */
  }
  return out;
}

/** SIGKILLs everything in the cgroup tree and waits until it is empty. */
async function killCgroupTree(base: string, timeoutMs = 10_000): Promise<number[]> {
  if (!fs.existsSync(base)) return [];
  const self = new Set([process.pid, process.ppid]);
  const initial = cgroupProcs(base);
  if (initial.some((p) => self.has(p))) {
    throw new SandboxError(`refusing to tear down the sandbox from inside it (this process is in ${base})`, 'run `ambientd sandbox down` from the host');
  }
  const killed = new Set<number>();
  try {
    fs.writeFileSync(path.join(base, 'cgroup.kill'), '1'); // Linux >= 5.14
  } catch {
    /* fall back to the loop below */
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = cgroupProcs(base).filter((p) => !self.has(p));
    if (pids.length === 0) break;
    for (const pid of pids) {
      killed.add(pid);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    if (Date.now() > deadline) break;
    await sleep(50);
  }
  for (const p of initial) killed.add(p);
  return [...killed];
}

/** rmdir bottom-up; returns [removed count, leftovers]. */
async function removeCgroupTree(dir: string): Promise<[number, string[]]> {
  if (!fs.existsSync(dir)) return [0, []];
  let removed = 0;
  const left: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries: fs.Dirent[] = [];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    await Promise.all(entries.filter((e) => e.isDirectory()).map((e) => walk(path.join(d, e.name))));
    for (let attempt = 0; ; attempt++) {
      try {
        await fsp.rmdir(d);
        removed++;
        return;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return;
        if (code === 'EBUSY' && attempt < 40) {
          await sleep(50);
          continue;
        }
        left.push(`${d} (${code})`);
        return;
      }
    }
  };
  await walk(dir);
  return [removed, left];
}

async function removeMarkRules(): Promise<number> {
  let removed = 0;
  const mark = `0x${MESH_MARK.toString(16)}`;
  const re = new RegExp(`^(\\d+):.*\\bfwmark (${mark}(?:/0x[0-9a-f]+)?)(?=\\s|$)`, 'i');
  for (const fam of ['-4', '-6']) {
    for (let i = 0; i < 256; i++) {
      let out: string;
      try {
        out = await run('ip', [fam, 'rule', 'show']);
      } catch {
        break; // e.g. IPv6 disabled
      }
      const hit = out.split('\n').map((l) => re.exec(l.trim())).find((m) => m !== null);
      if (!hit) break;
      try {
        await run('ip', [fam, 'rule', 'del', 'priority', hit[1]!, 'fwmark', hit[2]!]);
        removed++;
      } catch {
        break;
      }
    }
  }
  return removed;
}

/**
 * Removes everything the sandbox may have created: agents and any process in
 * the sandbox cgroups, every `ambs-*` netns, the cgroup tree, the bpffs dir,
 * host ip rules with fwmark 0x539 and the state dir. Works without a state
 * file (after a crash) and is idempotent.
 */
export async function sandboxDown(opts: SandboxDownOptions = {}): Promise<SandboxDownReport> {
  const paths = resolvePaths(opts);
  // never tear down a sandbox another live process is using: wait for it
  await waitForSandboxLock(opts.lockTimeoutMs ?? 15 * 60_000);
  try {
    return await teardown(paths, opts);
  } finally {
    releaseSandboxLock();
  }
}

async function teardown(paths: ReturnType<typeof resolvePaths>, opts: SandboxDownOptions): Promise<SandboxDownReport> {
  let state: SandboxState | null = null;
  try {
    state = readStateFile(paths.stateDir);
  } catch {
    state = null; // corrupt state: clean up by prefix only
  }
  const cgBases = [...new Set([path.join(paths.cgroupRoot, SANDBOX_DIR_NAME), ...(state?.cgroupRoot ? [path.join(state.cgroupRoot, SANDBOX_DIR_NAME)] : [])])];
  const bpfDirs = [...new Set([path.join(paths.bpffsRoot, SANDBOX_DIR_NAME), ...(state?.bpffsDir ? [state.bpffsDir] : [])])];
  const report: SandboxDownReport = { killed: [], netns: [], cgroups: 0, ipRules: 0, leftovers: [] };

  // 1. agents from the state file: SIGTERM, grace period, then SIGKILL.
  const agents = (state?.nodes ?? [])
    .map(liveAgentPid)
    .filter((pid): pid is number => pid !== null);
  for (const pid of agents) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  for (const pid of await waitDead(agents, opts.graceMs ?? 2000)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  report.killed.push(...agents);
  if ((await waitDead(agents, 5000)).length > 0) report.leftovers.push(`agent processes ${agents.join(', ')}`);

  // 2. anything else in the sandbox cgroups.
  for (const base of cgBases) {
    for (const pid of await killCgroupTree(base)) if (!report.killed.includes(pid)) report.killed.push(pid);
    const left = cgroupProcs(base);
    if (left.length > 0) report.leftovers.push(`processes ${left.join(', ')} in ${base}`);
  }

  // 3. network namespaces.
  const names = await listSandboxNetns();
  if (names.length > 0) {
    await ipBatch(names.map((n) => `netns del ${n}`), ['-force']).catch(() => undefined);
    report.netns = names;
    const still = await listSandboxNetns();
    if (still.length > 0) report.leftovers.push(`netns ${still.join(', ')}`);
  }

  // 4. cgroup directories, bottom-up.
  for (const base of cgBases) {
    const [removed, left] = await removeCgroupTree(base);
    report.cgroups += removed;
    report.leftovers.push(...left);
  }

  // 5. bpffs pins.
  for (const dir of bpfDirs) {
    try {
      await fsp.rm(dir, { recursive: true, force: true });
    } catch (e) {
      report.leftovers.push(`${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }

  // 6. host ip rules with our mark.
  report.ipRules = await removeMarkRules();

  // 7. state dir.
  await fsp.rm(paths.stateDir, { recursive: true, force: true });
  return report;
}
