/** The CA's pod index: identities by node, from a WorkloadSource's snapshots. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { NodePodIndex } from '../../../src/ca/pod-index.js';
import type { WorkloadSource, WorkloadSourceEvents } from '../../../src/discovery/source.js';
import { emptySnapshot, type MeshSnapshot } from '../../../src/discovery/model.js';
import { id, PODS, snapshotOf, TD } from './harness.js';

test('pod index: identities by spec.nodeName; pods without a node are on none', () => {
  const idx = new NodePodIndex(TD);
  assert.equal(idx.synced, false);
  idx.update(snapshotOf([...PODS, { namespace: 'ambient-demo', name: 'local', serviceAccount: 'db', node: null }]));
  assert.equal(idx.synced, true);
  assert.deepEqual(idx.podsWith('node-a', id('ambient-demo', 'web')), ['ambient-demo/web-a']);
  assert.deepEqual(idx.podsWith('node-a', id('ambient-demo', 'db')), []);
  assert.deepEqual(idx.nodesOf(id('ambient-demo', 'db')), ['node-b']);
  assert.deepEqual(idx.nodesOf(id('ambient-demo', 'web')), ['node-a', 'node-b']);
  assert.equal(idx.pod('ambient-demo', 'local')?.node, null);
  assert.equal(idx.nodes, 2);
  // another trust domain: other identities
  assert.deepEqual(idx.podsWith('node-a', id('ambient-demo', 'web', 'other.td')), []);
});

test('pod index: follows a source (current snapshot, then each update) until unsubscribed', () => {
  const src = new EventEmitter<WorkloadSourceEvents>() as EventEmitter<WorkloadSourceEvents> & { current: MeshSnapshot };
  src.current = snapshotOf(PODS);
  const idx = new NodePodIndex(TD);
  const stop = idx.follow(src as unknown as WorkloadSource);
  assert.equal(idx.version, 1);
  assert.deepEqual(idx.nodesOf(id('plain', 'client')), ['node-a']);
  src.emit('update', snapshotOf(PODS.filter((p) => p.name !== 'client')));
  assert.deepEqual(idx.nodesOf(id('plain', 'client')), []);
  stop();
  src.emit('update', emptySnapshot());
  assert.equal(idx.version, 2);
  assert.equal(idx.nodes, 2);
});
