/**
 * The sandbox's state file (<stateDir>/state.json: read, updated under an
 * in-process lock, looked up by node and pod) and the machine-wide lock that
 * lets one process at a time own the sandbox.
 */
import fs from 'node:fs';
import { isProcessAlive, usage, writeFileAtomic } from './helpers.js';
import { SandboxError, SandboxNotFoundError, type SandboxNode, type SandboxPathOptions, type SandboxPod, type SandboxState } from './model.js';
import { resolvePaths, stateFilePath } from './plan.js';

// ---------------------------------------------------------------------------
// State file
// ---------------------------------------------------------------------------

// In-process serialisation of state.json read-modify-write cycles.
let stateLock: Promise<unknown> = Promise.resolve();
export function withStateLock<T>(fn: () => Promise<T>): Promise<T> {
  const p = stateLock.then(fn, fn);
  stateLock = p.catch(() => undefined);
  return p;
}

export function readStateFile(stateDir: string): SandboxState | null {
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

export function loadState(opts: SandboxPathOptions = {}): SandboxState {
  const { stateDir } = resolvePaths(opts);
  const state = readStateFile(stateDir);
  if (!state) throw new SandboxNotFoundError(stateDir);
  return state;
}

export async function writeState(state: SandboxState): Promise<void> {
  const out = { ...state, nodes: state.nodes.map(({ agentRunning: _r, ...n }) => n) };
  if (out.controlPlane) {
    const { caRunning: _c, ...cp } = out.controlPlane;
    out.controlPlane = cp;
  }
  await writeFileAtomic(stateFilePath(state.stateDir), JSON.stringify(out, null, 2) + '\n');
}

export function updateState(opts: SandboxPathOptions, fn: (s: SandboxState) => void | Promise<void>): Promise<SandboxState> {
  return withStateLock(async () => {
    const state = loadState(opts);
    await fn(state);
    await writeState(state);
    return state;
  });
}

export function findNode(state: SandboxState, node: string): SandboxNode {
  const n = state.nodes.find((x) => x.name === node || x.netns === node);
  if (!n) throw usage(`sandbox: unknown node "${node}" (nodes: ${state.nodes.map((x) => x.name).join(', ')})`, 'see `ambientd sandbox status`');
  return n;
}

export function findPod(state: SandboxState, pod: string): SandboxPod {
  const p = state.pods.find((x) => x.name === pod || x.netns === pod);
  if (!p) {
    const names = state.pods.map((x) => x.name);
    const shown = names.length > 12 ? `${names.slice(0, 12).join(', ')}, ...` : names.join(', ');
    throw usage(`sandbox: unknown pod "${pod}" (pods: ${shown})`, 'see `ambientd sandbox status`; pods are named n<node>-p<pod>, e.g. n1-p1');
  }
  return p;
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
      try {
        pid = Number(fs.readFileSync(SANDBOX_LOCK, 'utf8').trim());
      } catch {
        /* vanished: retry */
      }
      if (pid === process.pid) return true;
      if (Number.isInteger(pid) && pid > 0 && isProcessAlive(pid)) return false;
      fs.rmSync(SANDBOX_LOCK, { force: true }); // stale (or empty while being written: the retry decides)
    }
  }
  return false;
}

export async function waitForSandboxLock(timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  let told = false;
  while (!tryTakeLock()) {
    const holder = lockHolder();
    if (Date.now() > end)
      throw new SandboxError(
        `another process (pid ${holder ?? '?'}) holds the sandbox`,
        `wait for it to finish or stop it; then retry (lock: ${SANDBOX_LOCK})`,
      );
    if (!told) {
      process.stderr.write(`ambientd sandbox: waiting for pid ${holder ?? '?'}, which holds the sandbox...\n`);
      told = true;
    }
    await new Promise((r) => setTimeout(r, 250 + Math.random() * 250));
  }
}

export function releaseSandboxLock(): void {
  try {
    if (Number(fs.readFileSync(SANDBOX_LOCK, 'utf8').trim()) === process.pid) fs.rmSync(SANDBOX_LOCK, { force: true });
  } catch {
    /* none */
  }
}
