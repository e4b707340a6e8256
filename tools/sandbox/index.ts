/**
 * The sandbox cluster (`ambientd sandbox ...`, the demo, the privileged tests
 * and the benchmarks): N "nodes" with P "pods" each, built on this one machine
 * out of network namespaces, veth pairs, a bridge and cgroup v2 directories,
 * plus the Kubernetes-like workload file and one agent config per node.
 *
 * Everything the sandbox creates carries a fixed prefix (netns `ambs-*`,
 * cgroup `<cgroupRoot>/ambientd-sandbox`, bpffs `<bpffsRoot>/ambientd-sandbox`)
 * so that `sandboxDown` can clean up after a crash without any state file.
 *
 * This module is the sandbox's public API; the parts:
 *   model.ts     names, paths, limits, state and option types, errors
 *   plan.ts      the plan (pure): nodes, pods, addresses, workloads.json, agent.yaml
 *   state.ts     state.json, and the machine-wide lock (one sandbox at a time)
 *   network.ts   namespaces, veth pairs, bridge, routes (the picture is there)
 *   up.ts        `up`;  status.ts  status, apply, enroll;  exec.ts  commands in pods and nodes
 *   agents.ts    start, stop, restart, wait for an agent;  teardown.ts  `down`
 *   control-plane.ts  the cluster CA in its own netns, node tokens (default; --ca embedded: none)
 *   helpers.ts   running ip/sysctl, bounded parallelism, atomic writes
 * podproc.ts (processes in pods, nettool) and pcap.ts (wire captures) are
 * imported directly by what uses them.
 */
export * from './model.js';
export { isProcessAlive, shellQuote } from './helpers.js';
export {
  agentConfigFor,
  defaultRepoRoot,
  effectiveAmbient,
  planSandbox,
  renderAgentConfig,
  renderWorkloads,
  stateFilePath,
  workloadsDocument,
} from './plan.js';
export { SANDBOX_LOCK } from './state.js';
export { sandboxUp } from './up.js';
export { formatSandboxStatus, sandboxApply, sandboxStatus, setEnrollment } from './status.js';
export { execInNode, execInPod, execInPodCapture, spawnInPod } from './exec.js';
export { agentCommand, agentEntrypoint, agentImage, restartAgent, startAgent, stopAgent, waitAgentReady, type RestartAgentOptions } from './agents.js';
export {
  containerAgentCommand,
  containerCliArgv,
  containersConf,
  manifestContainerRun,
  podmanRunFlags,
  sandboxHostPaths,
  type ContainerAgentOptions,
  type ContainerRun,
} from './container.js';
export { sandboxDown } from './teardown.js';
export {
  askCaAsNode,
  caCommand,
  caHttp,
  caMetrics,
  liveCaPid,
  nodeKeyLeaks,
  mintNodeToken,
  nodeCaFiles,
  startCa,
  stopCa,
  waitCaReady,
  type CaAttempt,
} from './control-plane.js';
