/**
 * The running sandbox: its status, `sandbox apply -f` (more mesh objects for
 * every agent) and enrollment of a pod (its dataplane-mode label).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { isProcessAlive, writeFileAtomic } from './helpers.js';
import { DATAPLANE_MODE_LABEL, SandboxError, type SandboxPathOptions, type SandboxPod, type SandboxState } from './model.js';
import { effectiveAmbient, renderWorkloads } from './plan.js';
import { findPod, loadState, updateState } from './state.js';

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
    throw new SandboxError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'pass an existing YAML or JSON file', {
      code: 'USAGE',
    });
  }
  const { parseWorkloads } = await import('../../src/discovery/workloads.js');
  let errors: Array<{ entry: string; message: string }>;
  try {
    const docs = YAML.parseAllDocuments(text).map((d) => {
      if (d.errors.length)
        throw new SandboxError(`not valid YAML: ${d.errors[0]!.message.split('\n')[0]}`, 'fix the file; nothing was applied', { code: 'USAGE' });
      return d.toJS();
    });
    errors = parseWorkloads(docs, { file }, undefined, true).errors;
  } catch (e) {
    throw new SandboxError(`${file}: ${(e as Error).message}`, 'fix the file; nothing was applied', { code: 'USAGE' });
  }
  const dest = path.join(
    state.meshDir,
    `50-applied-${path
      .basename(file)
      .replace(/[^A-Za-z0-9_.-]/g, '_')
      .replace(/\.(json|ya?ml)$/, '')}.yaml`,
  );
  await writeFileAtomic(dest, text);
  return { path: dest, errors };
}

/** The current sandbox; throws SandboxNotFoundError (hint: run `ambientd sandbox up`) if there is none. */
export function sandboxStatus(opts: SandboxPathOptions = {}): SandboxState {
  const state = loadState(opts);
  for (const n of state.nodes) n.agentRunning = n.agentPid !== null && isProcessAlive(n.agentPid);
  if (state.controlPlane) state.controlPlane.caRunning = state.controlPlane.caPid !== null && isProcessAlive(state.controlPlane.caPid);
  return state;
}

/** Human-readable status table. */
export function formatSandboxStatus(state: SandboxState): string {
  const table = (rows: string[][]) => {
    const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    return rows
      .map((r) =>
        r
          .map((cell, c) => cell.padEnd(w[c]!))
          .join('  ')
          .trimEnd(),
      )
      .join('\n');
  };
  const nodes = table([
    ['NODE', 'IP', 'NETNS', 'AGENT', 'CONFIG'],
    ...state.nodes.map((n) => [
      n.name,
      n.ip,
      n.netns,
      n.agentPid === null ? 'not started' : `pid ${n.agentPid}${n.agentRunning === false ? ' (exited)' : ''}`,
      n.config,
    ]),
  ]);
  const pods = table([
    ['POD', 'NODE', 'NAMESPACE', 'IP', 'AMBIENT', 'SERVICE ACCOUNT'],
    ...state.pods.map((p) => [p.name, p.node, p.namespace, p.ip, p.ambient ? 'yes' : 'no', p.serviceAccount]),
  ]);
  const cp = state.controlPlane;
  const ca = cp
    ? `CA: ambientd ca at ${cp.address} (netns ${cp.netns}), ${cp.caPid === null ? 'not running' : `pid ${cp.caPid}${cp.caRunning === false ? ' (exited)' : ''}`}, keys in ${cp.dir}`
    : 'CA: embedded (shared CA directory)';
  return `${ca}\n\n${nodes}\n\n${pods}\n\nworkloads: ${state.workloads}\n`;
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
