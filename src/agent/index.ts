/** The agent: its composition root and what its readers share (config_dump, phases, pod states). */
export { Agent, ownCgroup, type AgentInputs } from './agent.js';
export type { ConfigDump, WorkloadDump, ServiceDump, DatapathDump } from './config-dump.js';
export type { AgentPhase } from './phase.js';
export type { PodState } from './status.js';
