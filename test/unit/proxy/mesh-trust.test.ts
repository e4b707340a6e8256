// What the outbound listener forwards, and as whom: only a connection whose
// original-destination entry is this pod's (cgroup id) and fresh (made when
// the app's connection was established) is forwarded; anything else is reset
// and counted, never forwarded as the pod. And the HBONE Forwarded header is
// parsed only as a claim: bounded, addresses only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { MeshProxy, type MeshDeps, type MeshPod } from '../../../src/proxy/mesh.js';
import { forwardedFor } from '../../../src/proxy/forwarded.js';
import { ConnectionTracker } from '../../../src/proxy/connections.js';
import { MeshIndex, emptySnapshot, type PodInfo } from '../../../src/discovery/model.js';
import { Logger } from '../../../src/util/log.js';
import type { OriginalDst } from '../../../src/datapath/datapath.js';

const info: PodInfo = { name: 'a', namespace: 'ns', serviceAccount: 'sa', node: null, ip: '127.0.0.1', netns: '/nonexistent', cgroup: null, labels: {} };
const pod: MeshPod = { key: 'ns/a', info, identity: 'spiffe://cluster.local/ns/ns/sa/sa', cgroupId: 42n };

function proxy(orig: OriginalDst | null): { mesh: MeshProxy; counts: string[]; tracker: ConnectionTracker } {
  const counts: string[] = [];
  const tracker = new ConnectionTracker();
  const deps = {
    native: {} as MeshDeps['native'],
    mark: 0x539,
    ports: { outbound: 15001, inbound: 15006, hbone: 15008 },
    trustDomain: 'cluster.local',
    log: new Logger('test', 'off'),
    tracker,
    count: (r: string) => counts.push(r),
    identities: {} as MeshDeps['identities'],
    originalDst: () => orig,
    index: () => new MeshIndex(emptySnapshot()),
    localPodByIp: () => null,
    authorize: () => ({ allow: true, policy: null, reason: '' }),
  } satisfies MeshDeps;
  return { mesh: new MeshProxy(deps), counts, tracker };
}

/** Hands the server side of a fresh loopback connection to onOutbound; resolves with how the client saw it end. */
async function outbound(mesh: MeshProxy): Promise<string> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const c = net.connect(port, '127.0.0.1');
  const ended = new Promise<string>((r) => {
    c.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
    c.on('close', () => r('closed'));
  });
  mesh.onOutbound(pod, await accepted);
  const how = await ended;
  srv.close();
  return how;
}

const now = (): bigint => process.hrtime.bigint();
const entry = (o: Partial<OriginalDst>): OriginalDst => ({ dst: { ip: '10.0.0.9', port: 80 }, cookie: 1n, cgroupId: 42n, createdNs: now(), ...o });

test('no original-destination entry: reset, counted, nothing recorded', async () => {
  const { mesh, counts, tracker } = proxy(null);
  assert.equal(await outbound(mesh), 'ECONNRESET');
  assert.deepEqual(counts, ['original_dst_unknown']);
  assert.equal(tracker.list().length, 0, 'never forwarded');
  await mesh.close({ force: true });
});

test('an entry of another pod (cgroup id): reset, counted, never forwarded as this pod', async () => {
  const { mesh, counts, tracker } = proxy(entry({ cgroupId: 7n }));
  assert.equal(await outbound(mesh), 'ECONNRESET');
  assert.deepEqual(counts, ['original_dst_foreign']);
  assert.equal(tracker.list().length, 0);
  await mesh.close({ force: true });
});

test("an entry too old to be this connection's: reset, counted", async () => {
  const { mesh, counts, tracker } = proxy(entry({ createdNs: now() - 120_000_000_000n }));
  assert.equal(await outbound(mesh), 'ECONNRESET');
  assert.deepEqual(counts, ['original_dst_stale']);
  assert.equal(tracker.list().length, 0);
  await mesh.close({ force: true });
});

test('a destination of a family the pod does not have: reset, counted, recorded with ENETUNREACH, never dialled from another address', async () => {
  const { mesh, counts, tracker } = proxy(entry({ dst: { ip: 'fd00::9', port: 80 } }));
  assert.equal(await outbound(mesh), 'ECONNRESET');
  assert.deepEqual(counts, ['family_unavailable', 'upstream_connect_failed']);
  const recs = tracker.list();
  assert.equal(recs.length, 1);
  assert.deepEqual(recs[0]!.dst, { ip: 'fd00::9', port: 80 });
  assert.deepEqual(recs[0]!.outcome, { kind: 'upstream_failed', errno: 'ENETUNREACH' });
  await mesh.close({ force: true });
});

test('Forwarded is parsed as a bounded claim: addresses (and ports) only', () => {
  assert.equal(forwardedFor('for="10.99.1.1:4242"'), '10.99.1.1:4242');
  assert.equal(forwardedFor('for=10.99.1.1'), '10.99.1.1');
  assert.equal(forwardedFor('for="[fd00::1]:80"'), '[fd00::1]:80');
  assert.equal(forwardedFor('for="evil.example:80"'), null);
  assert.equal(forwardedFor('for="10.0.0.1:99999"'), null);
  assert.equal(forwardedFor(`for="${'1'.repeat(300)}"`), null);
  assert.equal(forwardedFor('by=10.0.0.1'), null);
});
