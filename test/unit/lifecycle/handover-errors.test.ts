// HandoverError is an AmbientError with a Lifecycle code, a hint and the
// low-level reason (errno name, EOF, EPROTO); an agent that does not answer
// is no error at all (a first start).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HandoverError, requestHandover } from '../../../src/lifecycle/handover.js';
import { AmbientError } from '../../../src/util/errors.js';
import type { NativeAddon } from '../../../src/datapath/native-api.js';

test('HandoverError: code, hint and reason', () => {
  const e = new HandoverError('HANDOVER_PROTOCOL', 'EPROTO', 'hand-over frame is not JSON');
  assert.ok(e instanceof AmbientError);
  assert.deepEqual([e.name, e.code, e.reason], ['HandoverError', 'HANDOVER_PROTOCOL', 'EPROTO']);
  assert.match(e.hint, /compatible versions/);
  assert.deepEqual(e.toJSON(), { code: 'HANDOVER_PROTOCOL', message: 'hand-over frame is not JSON', hint: e.hint, reason: 'EPROTO' });
});

test('requestHandover: nobody serving is a fresh start; a peer that is refused is HANDOVER_PEER', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-handover-'));
  try {
    const sock = path.join(dir, 'h.sock');
    const closed: number[] = [];
    const native = {
      unixConnect: () => -111, // ECONNREFUSED
      peerCred: () => ({ pid: 4242, uid: 1000, gid: 1000 }),
      closeFd: (fd: number) => {
        closed.push(fd);
      },
    } as unknown as NativeAddon;
    assert.equal(requestHandover(native, sock, 'n1'), null, 'no socket file');
    fs.writeFileSync(sock, '');
    assert.equal(requestHandover(native, sock, 'n1'), null, 'stale socket file');
    const answering = { ...native, unixConnect: () => 7 } as unknown as NativeAddon;
    assert.throws(
      () => requestHandover(answering, sock, 'n1', { verifyPeer: () => 'not an agent' }),
      (e: unknown) => e instanceof HandoverError && e.code === 'HANDOVER_PEER' && e.reason === 'EPERM' && /not an agent/.test(e.message),
    );
    assert.deepEqual(closed, [7], 'the connection is closed');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
