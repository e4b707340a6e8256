// Shared pieces of the privileged sandbox tests.
import os from 'node:os';
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

/**
 * The data-plane workers of a sandbox's agents when the sandbox does not set
 * them: AMBIENTD_SANDBOX_WORKERS, else `auto` (the sandbox's agents have no
 * CPU limit: the CPUs).
 */
export function sandboxWorkers(): number {
  const w = process.env.AMBIENTD_SANDBOX_WORKERS;
  if (w === undefined || w === '' || w === 'auto') return Math.max(1, os.availableParallelism());
  return Number(w);
}

/** The agent's listening sockets in one enrolled pod: one per listener and worker (each worker has its socket of every SO_REUSEPORT group; none: one). */
export function podSockets(p: Pick<SandboxState['pods'][number], 'ip' | 'ips'>, workers = sandboxWorkers()): number {
  return podListeners(p) * Math.max(1, workers);
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

/** Netns inode of every thread of this process (a thread that exits meanwhile is skipped). */
export function threadNetnsInodes(): Set<bigint> {
  const out = new Set<bigint>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    // a thread that exits between the listing and the stat is in no netns any more
    const st = fs.statSync(`/proc/self/task/${tid}/ns/net`, { bigint: true, throwIfNoEntry: false });
    if (st) out.add(st.ino);
  }
  return out;
}

type InboundDump = {
  connections: Array<{ direction: string; src: string; dst: string; via: string; bytesSent: number }>;
  workloads: Array<{ name: string; redirect?: Record<string, string> }>;
};

/**
 * IPv6 inbound plaintext into an enrolled pod, checked: 321 bytes sent from `client` to a sink on
 * `[server]:9000` arrive, and `server`'s agent recorded it as inbound-plaintext from the client's
 * IPv6 address with the original port, its captured_in counter above `capturedBefore`.
 */
export async function checkIpv6InboundPlaintext(
  send: (text: string) => Promise<{ code: number | null; stdout: string; stderr: string }>,
  dump: () => Promise<InboundDump>,
  client: { v6: string },
  server: { name: string; v6: string },
  capturedBefore: number,
): Promise<void> {
  const r = await send('y'.repeat(321));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^321 /);
  const d = await dump();
  const c = d.connections.find((x) => x.direction === 'inbound' && x.src.startsWith(`[${client.v6}]:`) && x.dst === `[${server.v6}]:9000`);
  assert.ok(c, JSON.stringify(d.connections));
  assert.equal(c.via, 'inbound-plaintext');
  assert.equal(c.bytesSent, 321);
  assert.ok(Number(d.workloads.find((x) => x.name === server.name)!.redirect!.capturedIn) > capturedBefore, 'counted captured_in in BPF');
}
