// Caps and bounded flow control (src/proxy/limits.ts), liveness timing
// (src/proxy/liveness.ts); their settings: test/unit/config/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type * as http2 from 'node:http2';
import { DEFAULT_LIMITS, KeyedLimiter, Limiter, WindowBudget, memoryBound } from '../../../src/proxy/limits.js';
import { keepPinging, livenessParams } from '../../../src/proxy/liveness.js';

class FakeSession extends EventEmitter {
  destroyed = false;
  closed = false;
  sent: number[] = [];
  acks: Array<() => void> = [];
  destroyedWith: [Error | undefined, number | undefined] | null = null;
  settings(s: { initialWindowSize: number }, cb: () => void): void {
    this.sent.push(s.initialWindowSize);
    this.acks.push(cb);
  }
  destroy(err?: Error, code?: number): void {
    this.destroyed = true;
    this.destroyedWith = [err, code];
    this.emit('close');
  }
}
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('WindowBudget: the receive budget split over open streams, a power of two between floor and ceiling', async () => {
  const w = new WindowBudget({ receiveBuffer: 32 << 20, streamWindow: 1 << 20, minStreamWindow: 64 << 10 });
  assert.equal(w.window, 1 << 20, 'no stream: the ceiling');
  const s = new FakeSession();
  w.add(s as unknown as http2.Http2Session);
  for (let i = 0; i < 100; i++) w.streamOpened();
  assert.equal(w.window, 256 << 10, '32 MiB / 100 streams -> 256 KiB (pow2 floor of 327 KiB)');
  assert.equal(s.sent.at(-1), 256 << 10, 'shrinking is sent at once');
  for (let i = 0; i < 400; i++) w.streamOpened();
  assert.equal(w.window, 64 << 10, 'never below the floor');
  for (let i = 0; i < 499; i++) w.streamClosed();
  assert.equal(w.window, 64 << 10, 'growing waits for the end of the turn');
  await tick();
  assert.equal(w.window, 1 << 20);
  assert.equal(s.sent.at(-1), 1 << 20);
  assert.ok(w.changes >= 3);
});

test('WindowBudget: a peer that does not acknowledge SETTINGS in time loses its session', async () => {
  const w = new WindowBudget({ receiveBuffer: 1 << 20, streamWindow: 1 << 20, minStreamWindow: 16 << 10 }, 50);
  const good = new FakeSession();
  const bad = new FakeSession();
  w.add(good as unknown as http2.Http2Session);
  w.add(bad as unknown as http2.Http2Session);
  for (let i = 0; i < 8; i++) w.streamOpened();
  for (const cb of good.acks) cb();
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(good.destroyed, false);
  assert.equal(bad.destroyed, true);
  assert.equal(bad.destroyedWith?.[1], 4, 'SETTINGS_TIMEOUT');
  assert.equal(w.settingsTimeouts, 1);
  assert.equal(w.sessionCount, 1, 'a closed session is forgotten');
});

test('Limiter: a slot, a bounded wait, then refusals (counted)', async () => {
  const l = new Limiter('dials', 2, 1);
  assert.equal(await l.acquire(100), true);
  assert.equal(await l.acquire(100), true);
  const waiting = l.acquire(1000);
  assert.equal(l.waiting, 1);
  assert.equal(await l.acquire(100), false, 'the queue is full');
  l.release();
  assert.equal(await waiting, true, 'a released slot goes to the waiter');
  assert.equal(l.inUse, 2);
  assert.equal(await l.acquire(30), false, 'a wait that times out is refused');
  assert.equal(l.hits, 2);
  assert.equal(l.tryAcquire(), false);
  l.release();
  l.release();
  assert.equal(l.inUse, 0);
  const k = new KeyedLimiter('peer', 1);
  assert.equal(k.tryAcquire('a'), true);
  assert.equal(k.tryAcquire('a'), false);
  assert.equal(k.tryAcquire('b'), true);
  k.release('a');
  assert.equal(k.tryAcquire('a'), true);
  assert.equal(k.hits, 1);
});

test('memoryBound: the documented formula', () => {
  assert.equal(memoryBound(DEFAULT_LIMITS, { streams: 0, connections: 0 }), 32 << 20);
  assert.equal(memoryBound(DEFAULT_LIMITS, { streams: 300, connections: 300 }), (32 << 20) + 300 * (64 << 10) + 300 * (16 << 10));
  assert.equal(memoryBound(DEFAULT_LIMITS, { streams: 1000, connections: 0 }), 1000 * (64 << 10) * 2, 'past the budget, the floor rules');
});

test('liveness: everything within about peerTimeout', () => {
  const p = livenessParams(30_000);
  assert.deepEqual([p.pingIntervalMs, p.pingTimeoutMs], [7500, 15000]);
  assert.deepEqual(p.tcp, { keepIdleMs: 15000, keepIntervalMs: 5000, keepCount: 3, userTimeoutMs: 30000 });
  assert.ok(p.pingIntervalMs + p.pingTimeoutMs + p.pingIntervalMs <= 30_000, 'a dead session is found within T');
  assert.ok(p.tcp.keepIdleMs + p.tcp.keepIntervalMs * p.tcp.keepCount <= 30_000, 'a dead plain connection too');
  const fast = livenessParams(4000);
  assert.deepEqual(fast.tcp, { keepIdleMs: 2000, keepIntervalMs: 1000, keepCount: 3, userTimeoutMs: 4000 });
});

test('keepPinging: an unanswered PING destroys the session; an answered one does not', async () => {
  class Pinged extends EventEmitter {
    destroyed = false;
    err: Error | undefined;
    constructor(private readonly answer: boolean) {
      super();
    }
    ping(cb: (e: Error | null) => void): boolean {
      if (this.answer) setImmediate(() => cb(null));
      return true;
    }
    destroy(e?: Error): void {
      this.destroyed = true;
      this.err = e;
      this.emit('close');
    }
  }
  const mk = (answer: boolean): Pinged => new Pinged(answer);
  const alive = mk(true);
  const dead = mk(false);
  let timeouts = 0;
  keepPinging(alive, { pingIntervalMs: 20, pingTimeoutMs: 50 });
  keepPinging(dead, { pingIntervalMs: 20, pingTimeoutMs: 50 }, () => timeouts++);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(alive.destroyed, false);
  assert.equal(dead.destroyed, true);
  assert.match(dead.err!.message, /PING/);
  assert.equal(timeouts, 1);
  alive.emit('close');
});
