// Shared pieces of the privileged sandbox tests.
import { getJsonInNetns } from '../../src/util/netns-http.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { sandboxDown, TIME_SCALE, type SandboxState } from '../../tools/sandbox/index.js';

/** Polls fn until it returns something truthy (or throws after timeoutMs). */
export async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 8000): Promise<T> {
  // AMBIENTD_TIME_SCALE: slower machines (the qemu VM under emulation) wait longer
  const end = Date.now() + timeoutMs * TIME_SCALE;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * The agent's listening sockets in one enrolled pod: 15001, 15006 and 15008 for each of the pod's
 * address families (3 on an IPv4 sandbox, 6 on a dual-stack one: AMBIENTD_SANDBOX_IP_FAMILY=dual).
 */
export function podListeners(p: Pick<SandboxState['pods'][number], 'ip' | 'ips'>): number {
  return 3 * (p.ips ?? [p.ip]).length;
}

/** Lookups into a sandbox state, and an agent's /config_dump. */
export function sandboxView<D>(state: () => SandboxState): {
  pod: (n: string) => SandboxState['pods'][number];
  node: (n: string) => SandboxState['nodes'][number];
  dump: (n: string) => Promise<D>;
} {
  const pod = (n: string): SandboxState['pods'][number] => {
    const p = state().pods.find((x) => x.name === n);
    if (!p) throw new Error(`no pod ${n} in the sandbox`);
    return p;
  };
  const node = (n: string): SandboxState['nodes'][number] => {
    const x = state().nodes.find((y) => y.name === n);
    if (!x) throw new Error(`no node ${n} in the sandbox`);
    return x;
  };
  const dump = (n: string): Promise<D> => getJsonInNetns<D>(node(n).netnsPath, '127.0.0.1', 15000, '/config_dump');
  return { pod, node, dump };
}

/** after(): kills what a test file started, removes its temp dir, tears the sandbox down and checks nothing was left. */
export async function tearDown(procs: Array<{ kill: (sig?: NodeJS.Signals) => unknown }>, tmp?: string): Promise<void> {
  for (const p of procs) p.kill('SIGKILL');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  const r = await sandboxDown();
  assert.deepEqual(r.leftovers, [], 'sandbox down left nothing behind');
}
