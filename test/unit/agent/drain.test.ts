// Drain, snapshot queue and certificate prefetch, each alone with fakes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { drainAgent, type Clock, type RecordSink } from '../../../src/agent/drain.js';
import { SnapshotQueue } from '../../../src/agent/snapshots.js';
import { AgentLifecycle } from '../../../src/agent/phase.js';
import { CertificatePrefetch } from '../../../src/agent/prefetch.js';
import { emptySnapshot, type MeshSnapshot } from '../../../src/discovery/model.js';
import type { TrackedConnection } from '../../../src/proxy/connections.js';
import { AmbientError } from '../../../src/util/errors.js';
import { Logger } from '../../../src/util/log.js';

class Tracker extends EventEmitter {
  open = 0;
  openCount(): number {
    return this.open;
  }
}

function drainWorld(o: { open: number; successor: boolean }) {
  const steps: string[] = [];
  const tracker = new Tracker();
  tracker.open = o.open;
  let t = 0;
  const clock: Clock = {
    now: () => t,
    sleep: async (ms) => {
      t += ms;
      await Promise.resolve();
    },
  };
  const sent: TrackedConnection[] = [];
  const sink: RecordSink = {
    send: (r) => {
      sent.push(r);
    },
    end: async () => ({ sent: sent.length, lost: 0 }),
  };
  const counts: string[] = [];
  const run = drainAgent(
    {
      drainTimeoutMs: 1000,
      successor: o.successor ? { socket: '/run/x.sock', node: 'n1' } : null,
      settle: async () => {
        steps.push('settle');
      },
      stopAccepting: () => steps.push('stopAccepting'),
      closeNodeServers: () => steps.push('closeNodeServers'),
      tracker,
      mesh: null,
      count: (r) => counts.push(r),
      log: new Logger('test', 'off'),
      clock,
      records: () => sink,
      stop: async () => {
        steps.push('stop');
      },
    },
    'test',
  );
  return { run, steps, tracker, sent, counts, now: () => t };
}

test('drain with nothing open: stop accepting, then stop at once', async () => {
  const w = drainWorld({ open: 0, successor: false });
  await w.run;
  assert.deepEqual(w.steps, ['settle', 'stopAccepting', 'stop']);
  assert.equal(w.now(), 0);
});

test('drain after a hand-over: node ports close, closing connections go to the successor, the deadline ends it', async () => {
  const w = drainWorld({ open: 2, successor: true });
  await Promise.resolve();
  w.tracker.emit('close', { id: 1 } as TrackedConnection);
  await w.run;
  assert.deepEqual(w.steps, ['settle', 'stopAccepting', 'closeNodeServers', 'stop']);
  assert.deepEqual(
    w.sent.map((r) => r.id),
    [1],
  );
  assert.ok(w.now() >= 1000, 'waited until the deadline');
  assert.deepEqual(w.counts, ['drain_deadline_closed']);
  assert.equal(w.tracker.listenerCount('close'), 0, 'no longer forwarding');
});

test('snapshots: only the newest applies; enrollment waits during a hand-over and runs when it is aborted; nothing once stopping', async () => {
  const lc = new AgentLifecycle();
  const applied: MeshSnapshot[] = [];
  const reconciled: MeshSnapshot[] = [];
  const q = new SnapshotQueue({
    lifecycle: lc,
    applyModel: (s) => applied.push(s),
    reconcile: async (s) => {
      reconciled.push(s);
    },
    onError: () => undefined,
  });
  const [a, b, c, d] = [emptySnapshot(), emptySnapshot(), emptySnapshot(), emptySnapshot()];
  q.schedule(a);
  q.schedule(b);
  await q.settle();
  assert.deepEqual([applied, reconciled], [[b], [b]], 'a was superseded before it ran');
  assert.ok(q.scheduled(b) && !q.scheduled(a));
  lc.moveTo('running');
  lc.moveTo('handing-over');
  q.schedule(c);
  await q.settle();
  assert.deepEqual([applied.length, reconciled.length], [2, 1], 'model applied, enrollment deferred');
  lc.moveTo('running');
  q.resume(d);
  await q.settle();
  assert.equal(reconciled.at(-1), c, 'the deferred snapshot, not the current one');
  lc.moveTo('stopping');
  q.schedule(d);
  await q.settle();
  assert.equal(applied.length, 3, 'nothing once stopping');
});

test('snapshots: a reconcile that throws is reported and the queue goes on', async () => {
  const lc = new AgentLifecycle();
  const errors: unknown[] = [];
  let n = 0;
  const q = new SnapshotQueue({
    lifecycle: lc,
    applyModel: () => undefined,
    reconcile: async () => {
      if (n++ === 0) throw new AmbientError('AGENT_INTERNAL', 'boom', 'test');
    },
    onError: (e) => errors.push(e),
  });
  q.schedule(emptySnapshot());
  await q.settle();
  q.schedule(emptySnapshot());
  await q.settle();
  assert.equal(errors.length, 1);
  assert.equal(n, 2);
});

test('prefetch: one at a time, known ones skipped, a departed identity never issued', async () => {
  const issued: string[] = [];
  const held = new Set(['a', 'b', 'c']);
  const p = new CertificatePrefetch({
    identities: () => ({
      peek: (id: string) => (id === 'known' ? ({} as never) : undefined),
      get: async (id: string) => {
        issued.push(id);
        return {} as never;
      },
    }),
    wanted: (id) => held.has(id),
    active: () => true,
    gapMs: 1,
  });
  p.request('a');
  p.request('b');
  p.request('a');
  p.request('known');
  p.request('c');
  held.delete('c');
  await sleep(50);
  assert.deepEqual(issued, ['a', 'b']);
  assert.equal(p.pending, 0);
});
