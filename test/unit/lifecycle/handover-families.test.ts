// A dual-stack pod hands over one listener per role and family: the new agent
// takes each by its family, never one family's socket for the other (which
// would be rejected and leave the pod's other family unserved).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Inherited, type HandoverEntry } from '../../../src/lifecycle/handover.js';
import type { NativeAddon } from '../../../src/datapath/native-api.js';

test('hand-over of a dual-stack pod: each role is taken once per family, IPv4 entries as older agents send them', () => {
  const bound = new Map<number, { ip: string; port: number }>();
  const closed: number[] = [];
  const native = {
    socketInfo: (fd: number) => ({ family: 4 as const, type: 1, listening: true, ...bound.get(fd)!, netnsInode: 7n }),
    closeFd: (fd: number) => closed.push(fd),
  } as unknown as NativeAddon;
  const entries: Array<{ entry: HandoverEntry; fd: number }> = [];
  let fd = 10;
  for (const [ip, port, role] of [
    ['10.0.0.5', 15001, 'outbound'],
    ['127.0.0.1', 15006, 'inbound'],
    ['10.0.0.5', 15008, 'hbone'],
    ['fd00::5', 15001, 'outbound'],
    ['::1', 15006, 'inbound'],
    ['fd00::5', 15008, 'hbone'],
  ] as const) {
    bound.set(fd, { ip, port });
    entries.push({ entry: { kind: 'pod', role, key: 'shop/web', ip, port, netnsInode: '7' }, fd: fd++ });
  }
  const inh = new Inherited(native, -1, 1234, entries);
  assert.equal(inh.size, 6, 'no entry shadows another');
  assert.equal(inh.take('pod', 'outbound', { ip: 'fd00::5', port: 15001, key: 'shop/web', netnsInode: 7n }), 13);
  assert.equal(inh.take('pod', 'outbound', { ip: '10.0.0.5', port: 15001, key: 'shop/web', netnsInode: 7n }), 10);
  assert.equal(inh.take('pod', 'inbound', { ip: '::1', port: 15006, key: 'shop/web', netnsInode: 7n }), 14);
  assert.equal(inh.take('pod', 'hbone', { ip: '10.0.0.5', port: 15008, key: 'shop/web', netnsInode: 7n }), 12);
  assert.deepEqual(inh.rejected, []);
  assert.deepEqual(closed, []);
});

test("hand-over from an agent with workers: every socket of a listener's SO_REUSEPORT group is taken, a bad one rejected and closed, none lost", () => {
  const bound = new Map<number, { ip: string; port: number; listening?: boolean }>();
  const closed: number[] = [];
  const native = {
    socketInfo: (fd: number) => ({ family: 4 as const, type: 1, listening: bound.get(fd)!.listening ?? true, ...bound.get(fd)!, netnsInode: 7n }),
    closeFd: (fd: number) => closed.push(fd),
  } as unknown as NativeAddon;
  const entries: Array<{ entry: HandoverEntry; fd: number }> = [];
  // three workers' sockets of the outbound listener (one no longer listening), two of HBONE
  for (const [fd, port, role, listening] of [
    [20, 15001, 'outbound', true],
    [21, 15001, 'outbound', false],
    [22, 15001, 'outbound', true],
    [30, 15008, 'hbone', true],
    [31, 15008, 'hbone', true],
  ] as const) {
    bound.set(fd, { ip: '10.0.0.5', port, listening });
    entries.push({ entry: { kind: 'pod', role, key: 'shop/web', ip: '10.0.0.5', port, netnsInode: '7' }, fd });
  }
  const inh = new Inherited(native, -1, 1234, entries);
  assert.equal(inh.size, 5, 'sockets of one listener do not shadow each other (each would leak)');
  const want = { ip: '10.0.0.5', port: 15001, key: 'shop/web', netnsInode: 7n };
  assert.deepEqual(inh.takeAll('pod', 'outbound', want), [20, 22]);
  assert.deepEqual(closed, [21], 'the socket that is not listening is closed, not served');
  assert.equal(inh.rejected.length, 1);
  assert.deepEqual(inh.takeAll('pod', 'outbound', want), [], 'taken once');
  // take(): one of them; the rest stay until closeRest
  assert.equal(inh.take('pod', 'hbone', { ...want, port: 15008 }), 30);
  assert.equal(inh.size, 1);
  assert.equal(inh.closeRest().length, 1);
  assert.deepEqual(closed, [21, 31]);
});
