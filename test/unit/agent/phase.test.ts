// The agent's one lifecycle state: legal transitions only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentLifecycle, canMove, type AgentPhase } from '../../../src/agent/phase.js';
import { isAmbientError } from '../../../src/util/errors.js';

const ALL: AgentPhase[] = ['starting', 'running', 'handing-over', 'draining', 'stopping', 'stopped'];

test('the legal transitions, and only those', () => {
  const legal = new Set([
    'starting>running',
    'starting>draining',
    'starting>stopping',
    'running>handing-over',
    'running>draining',
    'running>stopping',
    'handing-over>running',
    'handing-over>draining',
    'handing-over>stopping',
    'draining>stopping',
    'stopping>stopped',
  ]);
  for (const from of ALL) for (const to of ALL) assert.equal(canMove(from, to), legal.has(`${from}>${to}`), `${from} -> ${to}`);
});

test('a lifecycle starts in starting and emits each transition', () => {
  const lc = new AgentLifecycle();
  const seen: string[] = [];
  lc.on('phase', (to, from) => seen.push(`${from}>${to}`));
  assert.equal(lc.phase, 'starting');
  assert.ok(lc.enrolling);
  lc.moveTo('running');
  lc.moveTo('handing-over');
  assert.ok(!lc.enrolling, 'no enrollment while a successor takes the sockets');
  lc.moveTo('running');
  lc.moveTo('draining');
  assert.ok(!lc.enrolling && !lc.stopped);
  lc.moveTo('stopping');
  assert.ok(lc.stopped);
  lc.moveTo('stopped');
  assert.deepEqual(seen, ['starting>running', 'running>handing-over', 'handing-over>running', 'running>draining', 'draining>stopping', 'stopping>stopped']);
});

test('an illegal transition throws AGENT_PHASE and changes nothing; tryMoveTo says no', () => {
  const lc = new AgentLifecycle();
  lc.moveTo('running');
  lc.moveTo('draining');
  assert.throws(
    () => lc.moveTo('running'),
    (e: unknown) => isAmbientError(e) && e.code === 'AGENT_PHASE' && /draining -> running/.test(e.message),
  );
  assert.equal(lc.phase, 'draining');
  assert.equal(lc.tryMoveTo('handing-over'), false, 'a successor arriving while we drain is refused');
  assert.equal(lc.phase, 'draining');
  assert.throws(() => lc.moveTo('draining'), /draining -> draining/, 'no self-transition');
  lc.moveTo('stopping');
  lc.moveTo('stopped');
  for (const to of ALL) assert.equal(lc.tryMoveTo(to), false, `stopped is final (${to})`);
});
