// Pure decisions of capture and hand-over trust: IP conflicts, retry
// back-off, which sockets predate capture, who is an agent peer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conflictingIps, retryDelayMs, socketsToReset, LIVE_STATES, TCP } from '../../../src/capture/plan.js';
import { isAgentCommand, verifyAgentPeer } from '../../../src/lifecycle/peer.js';
import type { TcpSocketInfo } from '../../../src/datapath/native-api.js';

test('conflictingIps: the addresses more than one pod claims', () => {
  assert.deepEqual([...conflictingIps([{ ips: ['10.0.0.1'] }, { ips: ['10.0.0.2', '10.0.0.1'] }, { ips: ['10.0.0.3', '10.0.0.3'] }])], ['10.0.0.1']);
  assert.equal(conflictingIps([]).size, 0);
});

test('retry back-off: 1 s doubling, at most 30 s', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7, 50].map((n) => retryDelayMs(n)),
    [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000],
  );
});

const sock = (o: Partial<TcpSocketInfo>): TcpSocketInfo => ({
  family: 4,
  state: TCP.ESTABLISHED,
  src: '10.0.0.5',
  sport: 40000,
  dst: '10.0.9.9',
  dport: 80,
  mark: 0,
  cookie: 1n,
  uid: 0,
  inode: 1n,
  ...o,
});

test("socketsToReset: live connections to the outside that are not the agent's nor exempt", () => {
  const pod = { ips: ['10.0.0.5'], marks: [0x539, 0x4d3], exempt: ['10.100.0.1', '169.254.7.127'] };
  const socks = [
    sock({ cookie: 1n }), // app -> outside: reset
    sock({ cookie: 2n, family: 6, src: '::ffff:10.0.0.5', dst: '::ffff:10.0.9.9' }), // dual-stack, same: reset
    sock({ cookie: 3n, state: TCP.SYN_SENT }), // connecting: reset
    sock({ cookie: 4n, state: TCP.LISTEN, dst: '0.0.0.0', dport: 0 }), // listener: kept
    sock({ cookie: 5n, state: TCP.TIME_WAIT }), // no data left: kept
    sock({ cookie: 6n, mark: 0x539 }), // the agent's own: kept
    sock({ cookie: 12n, mark: 0x4d3, dst: '10.0.9.9' }), // an app socket the agent reached from its client's address: kept
    sock({ cookie: 13n, mark: 0x4d4, dst: '10.0.9.9' }), // another mark is not the agent's: reset
    sock({ cookie: 7n, dst: '10.0.0.5', dport: 15001 }), // in-pod (captured app side): kept
    sock({ cookie: 8n, dst: '127.0.0.1' }), // loopback: kept
    sock({ cookie: 9n, dst: '10.100.0.1' }), // from the node (kubelet): kept
    sock({ cookie: 10n, family: 6, dst: '::1' }), // loopback v6: kept
    sock({ cookie: 11n, family: 6, dst: 'fd00::9' }), // native IPv6 out: reset
  ];
  assert.deepEqual(
    socketsToReset(socks, pod).map((s) => s.cookie),
    [1n, 2n, 3n, 13n, 11n],
  );
  assert.equal(LIVE_STATES & (1 << TCP.LISTEN), 0);
  assert.ok(LIVE_STATES & (1 << TCP.CLOSE_WAIT));
});

test('isAgentCommand: `... cli.js agent` or `ambientd agent`, nothing else', () => {
  assert.equal(isAgentCommand(['/usr/bin/node', '/app/dist/src/cli.js', 'agent', '--config', 'x']), true);
  assert.equal(isAgentCommand(['ambientd', 'agent']), true);
  assert.equal(isAgentCommand(['/usr/bin/node', '/app/dist/src/cli.js', 'sandbox', 'up']), false);
  assert.equal(isAgentCommand(['python3', '-c', 'agent']), false);
  assert.equal(isAgentCommand(['agent']), false);
});

test("verifyAgentPeer: the kernel's pid and uid, a live agent process", () => {
  // this test process is not an agent
  assert.match(verifyAgentPeer({ pid: process.pid, uid: process.getuid!(), gid: 0 })!, /not an ambientd agent/);
  assert.match(verifyAgentPeer({ pid: process.pid, uid: process.getuid!(), gid: 0 }, process.pid + 1)!, /says pid .* but the kernel says/);
  assert.match(verifyAgentPeer({ pid: process.pid, uid: 12345, gid: 0 })!, /uid 12345/);
  assert.match(verifyAgentPeer({ pid: 0, uid: 0, gid: 0 })!, /pid unknown/);
  assert.match(verifyAgentPeer({ pid: 2 ** 22 + 17, uid: 0, gid: 0 })!, /gone or unreadable/);
});
