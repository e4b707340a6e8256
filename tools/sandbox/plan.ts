/**
 * The sandbox plan (pure): where everything goes, which nodes and pods exist
 * with which addresses and labels, and the files the agents read
 * (workloads.json, agent.yaml), computed without touching the system.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { DATAPLANE_MODE_LABEL, enrolledByLabels } from '../../src/discovery/model.js';
import { usage } from './helpers.js';
import {
  AGENT_READY_FILE,
  AMBIENT_NAMESPACE,
  CA_METRICS_PORT,
  CA_PORT,
  CONTROL_PLANE_IP,
  CONTROL_PLANE_NETNS,
  DEFAULT_BPFFS_ROOT,
  DEFAULT_CGROUP_ROOT,
  DEFAULT_STATE_DIR,
  MAX_NODES,
  MAX_PODS,
  NETNS_PREFIX,
  NETNS_RUN_DIR,
  PLAIN_NAMESPACE,
  SANDBOX_DIR_NAME,
  SANDBOX_IP_FAMILIES,
  type SandboxAgentConfig,
  type SandboxIpFamily,
  type SandboxControlPlane,
  type SandboxNode,
  type SandboxPathOptions,
  type SandboxPod,
  type SandboxState,
  type SandboxUpOptions,
  type WorkloadNamespace,
  type WorkloadsDocument,
} from './model.js';

export interface ResolvedPaths {
  stateDir: string;
  cgroupRoot: string;
  bpffsRoot: string;
}

export function resolvePaths(opts: SandboxPathOptions = {}): ResolvedPaths {
  return {
    stateDir: path.resolve(opts.stateDir ?? DEFAULT_STATE_DIR),
    cgroupRoot: path.resolve(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT),
    bpffsRoot: path.resolve(opts.bpffsRoot ?? DEFAULT_BPFFS_ROOT),
  };
}

/** Repo root: three levels above this compiled file (dist/tools/sandbox/plan.js), or $AMBIENTD_REPO_ROOT. */
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
  // AMBIENTD_SANDBOX_IP_FAMILY=dual: every sandbox that does not name its family (the whole
  // privileged suite, `make test-dual`) on dual-stack pods
  const family: string = opts.ipFamily ?? (process.env.AMBIENTD_SANDBOX_IP_FAMILY || 'ipv4');
  if (!(SANDBOX_IP_FAMILIES as readonly string[]).includes(family))
    throw usage(
      `sandbox: ip-family must be one of ${SANDBOX_IP_FAMILIES.join(', ')}, got ${JSON.stringify(family)}${opts.ipFamily === undefined ? ' (from AMBIENTD_SANDBOX_IP_FAMILY)' : ''}`,
      'pass --ip-family ipv4, ipv6 or dual',
    );
  const ipFamily = family as SandboxIpFamily;
  // AMBIENTD_SANDBOX_CA=embedded: the whole suite (tests, demo, benchmarks) on the embedded CA, for comparison
  const caMode = opts.ca ?? (process.env.AMBIENTD_SANDBOX_CA || undefined);
  if (caMode !== undefined && caMode !== 'cluster' && caMode !== 'embedded')
    throw usage(
      `sandbox: --ca must be cluster or embedded, got ${JSON.stringify(caMode)}`,
      'cluster (default): the CA runs in its own netns; embedded: every agent signs',
    );
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
      ...(ipFamily !== 'ipv4' ? { ip6: `fd00:10:100::${i}` } : {}),
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
      const v4 = `10.244.${i}.${j + 1}`;
      const v6 = `fd00:10:244:${i}::${(j + 1).toString(16)}`;
      const ips = ipFamily === 'ipv4' ? [v4] : ipFamily === 'ipv6' ? [v6] : [v4, v6];
      pods.push({
        name: pod,
        node: name,
        namespace,
        serviceAccount: `sa-${pod}`,
        ip: ips[0]!,
        ...(ipFamily !== 'ipv4' ? { ips } : {}),
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
    ...(ipFamily !== 'ipv4' ? { ipFamily } : {}),
    namespaces,
    nodes,
    pods,
    ...(caMode === 'embedded' ? {} : { controlPlane: planControlPlane(stateDir, cgroupRoot) }),
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
      ...(p.ips ? { ips: [...p.ips] } : {}),
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
    ...(state.controlPlane
      ? (() => {
          const f = nodeCaFiles(state.stateDir, node.name);
          return { caAddress: state.controlPlane.address, caRootCert: f.rootCert, caTokenFile: f.token };
        })()
      : { caDir: path.join(state.stateDir, 'ca') }),
    handoverSocket: path.join(path.dirname(node.config), 'handover.sock'),
    drainTimeout: state.drainTimeout ?? '5s',
    ...(state.handoverTimeout ? { handoverTimeout: state.handoverTimeout } : {}),
    // AMBIENTD_SANDBOX_WORKERS=N|auto: the privileged suite with that many data-plane workers (make test runs 2 and 1)
    ...workersFromEnv(),
    ...(state.agentSettings ?? {}),
  };
}

function workersFromEnv(): { workers?: number | 'auto' } {
  const w = process.env.AMBIENTD_SANDBOX_WORKERS;
  if (w === undefined || w === '') return {};
  return { workers: w === 'auto' ? 'auto' : Number(w) };
}

export function renderAgentConfig(state: SandboxState, node: SandboxNode, logLevel = 'info'): string {
  return YAML.stringify(agentConfigFor(state, node, logLevel), { lineWidth: 0 });
}

/** The control plane's plan (pure). */
export function planControlPlane(stateDir: string, cgroupRoot: string): SandboxControlPlane {
  const dir = path.join(stateDir, 'control-plane');
  return {
    dir,
    caDir: path.join(dir, 'ca'),
    tokenKey: path.join(dir, 'node-token-signing-key.pem'),
    tokenPublicKey: path.join(dir, 'node-token-signing-key.pub.pem'),
    netns: CONTROL_PLANE_NETNS,
    netnsPath: path.join(NETNS_RUN_DIR, CONTROL_PLANE_NETNS),
    ip: CONTROL_PLANE_IP,
    address: `${CONTROL_PLANE_IP}:${CA_PORT}`,
    metricsPort: CA_METRICS_PORT,
    cgroup: path.join(cgroupRoot, SANDBOX_DIR_NAME, 'control-plane'),
    log: path.join(dir, 'ca.log'),
    caPid: null,
  };
}

/** What a node's agent gets from the control plane: the trust bundle and its own token (public, per node). */
export function nodeCaFiles(stateDir: string, node: string): { dir: string; rootCert: string; token: string } {
  const dir = path.join(stateDir, node, 'ca');
  return { dir, rootCert: path.join(dir, 'root-cert.pem'), token: path.join(dir, 'token') };
}
