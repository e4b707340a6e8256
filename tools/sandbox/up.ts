/**
 * `sandbox up`: checks the machine, takes the sandbox lock, tears down any
 * previous sandbox, writes the state, agent configs and workloads, builds the
 * network, starts the cluster CA in the control-plane netns (unless
 * --ca embedded) and one agent per node.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { startAgent, waitAgentReady } from './agents.js';
import { concurrency, isFsType, pool, writeFileAtomic } from './helpers.js';
import { SANDBOX_DIR_NAME, SandboxError, TIME_SCALE, type SandboxState, type SandboxUpOptions } from './model.js';
import { buildControlPlaneFiles, buildControlPlaneNetwork, startCa } from './control-plane.js';
import { buildNetwork, listSandboxNetns } from './network.js';
import { planSandbox, renderAgentConfig, renderWorkloads, resolvePaths, stateFilePath, type ResolvedPaths } from './plan.js';
import { releaseSandboxLock, waitForSandboxLock, writeState } from './state.js';
import { sandboxStatus } from './status.js';
import { teardown } from './teardown.js';

const CGROUP2_SUPER_MAGIC = 0x63677270;
const BPF_FS_MAGIC = 0xcafe4a11;

function preflight(p: ResolvedPaths): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new SandboxError('the sandbox needs root (it creates network namespaces and cgroups)', 'run it with sudo');
  }
  if (!isFsType(p.cgroupRoot, CGROUP2_SUPER_MAGIC)) {
    throw new SandboxError(
      `${p.cgroupRoot} is not a cgroup v2 mount`,
      'pass the cgroup2 mount point as cgroupRoot (see `mount -t cgroup2`), e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified',
    );
  }
  if (!isFsType(p.bpffsRoot, BPF_FS_MAGIC)) {
    throw new SandboxError(`${p.bpffsRoot} is not a bpffs mount`, 'mount it: `mount -t bpf bpf /sys/fs/bpf`');
  }
}

async function sandboxExists(p: ResolvedPaths): Promise<boolean> {
  return (
    fs.existsSync(stateFilePath(p.stateDir)) ||
    fs.existsSync(path.join(p.cgroupRoot, SANDBOX_DIR_NAME)) ||
    fs.existsSync(path.join(p.bpffsRoot, SANDBOX_DIR_NAME)) ||
    (await listSandboxNetns()).length > 0
  );
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
    if (state.controlPlane) {
      const trustDomain = String(state.agentSettings?.trustDomain ?? 'cluster.local');
      await buildControlPlaneFiles(state, state.controlPlane, trustDomain);
      await buildControlPlaneNetwork(state, state.controlPlane);
      await writeState(state);
      // the CA first: an agent is ready only once it can get certificates
      await startCa({ stateDir: state.stateDir });
    }
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
