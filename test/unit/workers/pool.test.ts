// The control thread's side of the workers, with a stand-in worker script
// (fake-worker.ts): connection events are replayed into the agent's tracker
// exactly once, a worker that dies takes its open connections with it
// (counted) and is replaced, a worker that stops answering is ended and
// replaced, and the figures are summed over workers.
import test from 'node:test';
import assert from 'node:assert/strict';
import { WorkerPool, type WorkerPoolDeps } from '../../../src/workers/pool.js';
import { ConnectionTracker, type TrackedConnection } from '../../../src/proxy/connections.js';
import { DEFAULT_LIMITS } from '../../../src/proxy/limits.js';
import { livenessParams } from '../../../src/proxy/liveness.js';
import { Logger } from '../../../src/util/log.js';
import type { NativeAddon } from '../../../src/datapath/native-api.js';

const SCRIPT = new URL('./fake-worker.js', import.meta.url);

function pool(mode: string, extra: Partial<WorkerPoolDeps> = {}) {
  const tracker = new ConnectionTracker();
  const counts = new Map<string, number>();
  const closed: TrackedConnection[] = [];
  tracker.on('close', (r: TrackedConnection) => closed.push(r));
  const p = new WorkerPool({
    count: 1,
    init: {
      mark: 0x539,
      clientAddressMark: null,
      ports: { outbound: 15001, inbound: 15006, hbone: 15008 },
      nodePorts: [],
      trustDomain: 'cluster.local',
      rootNamespace: 'istio-system',
      limits: { ...DEFAULT_LIMITS },
      liveness: livenessParams(),
      logLevel: 'off',
      origDstMapFd: null,
      mode,
    } as unknown as WorkerPoolDeps['init'],
    native: { dupFd: () => -9, closeFd: () => 0 } as unknown as NativeAddon,
    log: new Logger('test', 'off'),
    tracker,
    identities: () => null,
    countEvent: (r, n) => counts.set(r, (counts.get(r) ?? 0) + n),
    socketOptions: () => ({}),
    script: SCRIPT,
    ...extra,
  });
  return { p, tracker, counts, closed };
}

async function until<T>(what: string, f: () => T | undefined | false, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a worker's connection events reach the agent's tracker once, bytes and outcome included; its counters too", async () => {
  const { p, tracker, counts, closed } = pool('events');
  try {
    await p.start();
    await until('events replayed', () => closed.length === 1 && tracker.openCount() === 1);
    assert.equal(closed[0]!.bytesSent, 10);
    assert.equal(closed[0]!.bytesReceived, 20);
    assert.deepEqual(closed[0]!.outcome, { kind: 'closed' });
    assert.equal(closed[0]!.pod, 'shop/web');
    assert.equal(counts.get('policy_denied'), 2);
    assert.deepEqual(
      p.info().map((w) => ({ served: w.served, open: w.open })),
      [{ served: 2, open: 1 }],
    );
    // figures on demand, summed; sockets from the batch
    await p.refresh();
    assert.deepEqual(p.openSockets(), { source: 2, destination: 0 });
    assert.equal(p.windows.window, 65536);
    assert.equal((p.stats().pools['shop/web'] as unknown as { sessions: number }).sessions, 1);
  } finally {
    await p.terminate();
  }
});

test('a worker that dies: its open connections end (reset by the agent) and are counted, and it is replaced', async () => {
  const { p, tracker, counts, closed } = pool('events');
  try {
    await p.start();
    await until('events replayed', () => tracker.openCount() === 1);
    const before = p.info()[0]!.threadId;
    assert.equal(p.kill(0), true);
    await until('its connection ended', () => closed.length === 2);
    assert.deepEqual(closed[1]!.outcome, { kind: 'reset', by: 'server' });
    assert.equal(counts.get('worker_died'), 1);
    assert.equal(counts.get('worker_connections_lost'), 1);
    const w = await until('replaced', () => {
      const x = p.info()[0]!;
      return x.running && x.threadId !== before ? x : undefined;
    });
    assert.equal(w.restarts, 1);
    assert.equal(p.kill(7), false, 'no such worker');
  } finally {
    await p.terminate();
  }
});

test('a worker that stops answering is ended and replaced (the watchdog), counted', async () => {
  const { p, counts } = pool('stuck', { refreshMs: 50, stuckMs: 300 });
  try {
    await p.start();
    await until('replaced', () => (p.info()[0]!.restarts >= 1 ? true : undefined), 5000);
    assert.ok((counts.get('worker_stuck') ?? 0) >= 1);
    assert.ok((counts.get('worker_died') ?? 0) >= 1);
  } finally {
    await p.terminate();
  }
});

test('a worker that cannot serve its socket of a group is replaced (a socket nobody accepts on would hold connections), counted', async () => {
  const dups: number[] = [];
  const { p, counts } = pool('nolisten', { native: { dupFd: (fd: number) => (dups.push(fd), 100 + dups.length), closeFd: () => 0 } as unknown as NativeAddon });
  try {
    await p.start();
    const pod = { key: 'shop/web', info: {} as never, identity: 'spiffe://cluster.local/ns/shop/sa/web', cgroupId: null, clientAddress: false };
    const g = await p.serve([7], 'hbone', pod, '10.0.0.5', 15008);
    await until('replaced', () => (p.info()[0]!.restarts >= 1 ? true : undefined), 5000);
    assert.ok((counts.get('worker_listen_failed') ?? 0) >= 1);
    // the replacement was given a new dup of the kept socket
    await until('re-served', () => (dups.length >= 2 ? true : undefined), 5000);
    assert.deepEqual([...new Set(dups)], [7]);
    g.close();
  } finally {
    await p.terminate();
  }
});

test('after terminate(), nothing is restarted and a kill is refused', async () => {
  const { p, counts } = pool('events');
  await p.start();
  await p.terminate();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(p.info()[0]!.running, false);
  assert.equal(counts.get('worker_died'), undefined, 'stopping is not dying');
  assert.equal(p.kill(0), false);
});
