// Connection records received from the agent this one replaced (hand-over):
// only well-formed closed records are counted in the successor's metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionTracker, parseClosedRecord } from '../../../src/proxy/connections.js';

function closedRecord(): Record<string, unknown> {
  const t = new ConnectionTracker();
  const rec = t.begin({ pod: 'ambient-demo/n1-p1', direction: 'outbound', src: '10.244.1.2:40000', dst: '10.244.2.2:7000', via: 'hbone', peerIdentity: 'spiffe://cluster.local/ns/ambient-demo/sa/sa-n2-p1' });
  t.finish(rec, 'closed', 'eof', { sent: 1234, received: 56 });
  // what crosses the hand-over socket: JSON
  return JSON.parse(JSON.stringify(rec)) as Record<string, unknown>;
}

test('a closed record round-trips through JSON unchanged', () => {
  const raw = closedRecord();
  assert.deepEqual(parseClosedRecord(raw), raw);
});

test('anything else is refused: wrong types, open records, unknown via, absurd byte counts', () => {
  const bad: Array<[string, (r: Record<string, unknown>) => unknown]> = [
    ['not an object', () => 'x'],
    ['null', () => null],
    ['array', () => []],
    ['open record', (r) => ({ ...r, state: 'open' })],
    ['unknown via', (r) => ({ ...r, via: 'carrier-pigeon' })],
    ['unknown direction', (r) => ({ ...r, direction: 'sideways' })],
    ['negative bytes', (r) => ({ ...r, bytesSent: -1 })],
    ['fractional bytes', (r) => ({ ...r, bytesReceived: 1.5 })],
    ['bytes as string', (r) => ({ ...r, bytesSent: '1234' })],
    ['huge string', (r) => ({ ...r, pod: 'x'.repeat(5000) })],
    ['peer identity a number', (r) => ({ ...r, peerIdentity: 7 })],
    ['missing src', (r) => { const c = { ...r }; delete c.src; return c; }],
  ];
  for (const [what, make] of bad) assert.equal(parseClosedRecord(make(closedRecord())), null, what);
});
