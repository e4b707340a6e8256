/**
 * The sandbox's names, fixed paths and limits, the shapes of its state
 * (state.json, workloads.json, agent.yaml) and of its operations' options and
 * results, and its errors. No code that touches the system.
 */
import path from 'node:path';
import type { StdioOptions } from 'node:child_process';
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

// The control plane (the cluster CA in its own netns; see control-plane.ts).
export const CONTROL_PLANE_NETNS = `${NETNS_PREFIX}cp`;
export const CONTROL_PLANE_IP = '10.100.0.254';
export const CA_PORT = 15012;
export const CA_METRICS_PORT = 15014;
/** the audience of node tokens (Istio's CA audience) */
export const CA_TOKEN_AUDIENCE = 'istio-ca';
/** the ServiceAccount node tokens are for (the CA's default trusted node account) */
export const AGENT_NAMESPACE = 'ambientd-system';
export const AGENT_SERVICE_ACCOUNT = 'ambientd';
/** node tokens live this long (a sandbox lives for hours at most) */
export const NODE_TOKEN_LIFETIME_MS = 7 * 24 * 3_600_000;

/** Where the CA runs and what it holds (state.json "controlPlane"; absent: the embedded per-node CA). */
export interface SandboxControlPlane {
  /** <stateDir>/control-plane, 0700: the CA key and the token signing key live only here */
  dir: string;
  /** the CA material (Istio plug-in layout, with ca-key.pem) */
  caDir: string;
  /** the sandbox token signing key (Ed25519, private): mints node tokens */
  tokenKey: string;
  /** its public half: the only key the CA gets */
  tokenPublicKey: string;
  netns: string;
  netnsPath: string;
  ip: string;
  /** what agents dial: <ip>:15012 */
  address: string;
  metricsPort: number;
  cgroup: string;
  log: string;
  caPid: number | null;
  /** only filled in by sandboxStatus(): is caPid alive? */
  caRunning?: boolean;
}

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
  /**
   * the pods' address families (see SANDBOX_IP_FAMILIES); default
   * $AMBIENTD_SANDBOX_IP_FAMILY, else ipv4. The privileged suite passes on ipv4
   * and on dual (`make test-dual`, container.test.js left out); the 6.1 VM run uses dual
   */
  ipFamily?: SandboxIpFamily;
  /** how long to wait for another live process's sandbox (see SANDBOX_LOCK); default 15 min */
  lockTimeoutMs?: number;
  /**
   * where certificates come from: 'cluster' (default): the cluster CA runs as
   * its own process in the control-plane netns and no node holds a CA key;
   * 'embedded': the quick mode, every agent signs with one shared CA directory
   */
  ca?: 'cluster' | 'embedded';
}

export interface SandboxDownOptions extends SandboxPathOptions {
  /** how long to wait for another live process's sandbox; default 15 min */
  lockTimeoutMs?: number;
  /** time agents get to exit after SIGTERM before SIGKILL; default 2000 */
  graceMs?: number;
}

/**
 * The pods' address families: ipv4 (10.244.<node>.<pod+1>), ipv6
 * (fd00:10:244:<node>::<pod+1> only) or dual (both, IPv4 first). With IPv6
 * the node fabric carries both families (fd00:10:100::<node>).
 */
export const SANDBOX_IP_FAMILIES = ['ipv4', 'ipv6', 'dual'] as const;
export type SandboxIpFamily = (typeof SANDBOX_IP_FAMILIES)[number];
/** The link-local gateway of the pods' IPv6 default route (each node's vp<j> holds it). */
export const POD_GATEWAY_IP6 = 'fe80::1';

export interface SandboxNode {
  name: string;
  /** netns name (`ip netns exec <netns>`) */
  netns: string;
  /** /run/netns/<netns> */
  netnsPath: string;
  ip: string;
  /** the node's IPv6 fabric address (ipFamily ipv6/dual) */
  ip6?: string;
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
  /** the primary address (IPv6 in an ipv6 sandbox) */
  ip: string;
  /** every address, ip first (absent: [ip]) */
  ips?: string[];
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
  /** absent: ipv4 */
  ipFamily?: SandboxIpFamily;
  namespaces: WorkloadNamespace[];
  nodes: SandboxNode[];
  pods: SandboxPod[];
  /** the cluster CA (absent: --ca embedded, each agent signs with <stateDir>/ca) */
  controlPlane?: SandboxControlPlane;
}

/** One pod entry of workloads.json (the format src/discovery/workloads.ts reads). */
export interface WorkloadPod {
  name: string;
  namespace: string;
  serviceAccount: string;
  node: string;
  ip: string;
  ips?: string[];
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
  /** --ca embedded: one CA directory for every node (all agents share one trust root and its key) */
  caDir?: string;
  /** the cluster CA (default): its address, the trust bundle and this node's token; no key */
  caAddress?: string;
  caRootCert?: string;
  caTokenFile?: string;
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
  /**
   * Run the agent from this container image (podman, the way the DaemonSet runs it:
   * docs/IMAGE.md) instead of the checkout's dist/. Default: $AMBIENTD_SANDBOX_IMAGE; unset or
   * empty: the checkout.
   */
  image?: string;
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
  constructor(
    message: string,
    readonly logTail: string,
  ) {
    super(
      `${message}${logTail ? `\n--- last lines of agent.log ---\n${logTail}` : ''}`,
      'read the agent log; fix and restart the agent (or `ambientd sandbox down && ambientd sandbox up`)',
    );
    this.name = 'SandboxAgentError';
  }
}
