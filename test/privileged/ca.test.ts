// The sandbox's cluster CA (issue 15), for real: `ambientd ca` runs as its own
// process in the control-plane netns and no node holds a signing key.
//   - the attack: n1's token (and everything in n1's state dir) asking for the
//     identity of a pod that runs only on n2 is refused, counted, gets nothing;
//     no file a node can read holds a private key of the CA;
//   - bad node tokens (expired, wrong audience, missing): the node's new
//     identities are refused and counted, their traffic never opens;
//   - CA down: established identities keep working, a pod enrolled meanwhile
//     gets no certificate and fails closed (nothing in clear on the wire),
//     the agent retries with back-off; CA back: the pod works, no restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import {
  askCaAsNode,
  caMetrics,
  nodeKeyLeaks,
  mintNodeToken,
  nodeCaFiles,
  sandboxStatus,
  sandboxUp,
  setEnrollment,
  startCa,
  stopCa,
  type CaAttempt,
  type SandboxState,
} from '../../tools/sandbox/index.js';
import { nettool, nettoolServer } from '../../tools/sandbox/podproc.js';
import { captureNodeLink, readTcpPackets } from '../../tools/sandbox/pcap.js';
import { sandboxView, until, tearDown } from '../helpers/sandbox.js';
import { generateSandboxKey, mintSandboxToken } from '../../src/ca/auth-sandbox.js';
import type { ConfigDump } from '../../src/agent/index.js';

let st: SandboxState;
const procs: ChildProcess[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-ca-'));

type Dump = Pick<ConfigDump, 'connections' | 'certificates' | 'counters'>;
const { pod, dump } = sandboxView<Dump>(() => st);
const id = (p: string): string => `spiffe://cluster.local/ns/${pod(p).namespace}/sa/${pod(p).serviceAccount}`;
const cp = () => st.controlPlane!;

/** A counter of the CA's /metrics (0 when absent). */
async function caCount(result: string, code: string): Promise<number> {
  const m = new RegExp(`^ambientd_ca_requests_total\\{result="${result}",code="${code}"\\} (\\d+)`, 'm').exec(await caMetrics());
  return m ? Number(m[1]) : 0;
}

/** Asks the CA from inside node n's netns with tokenFile: what root on that node can do. */
const askCa = (n: string, tokenFile: string, ids: string[]): Promise<Record<string, CaAttempt>> => askCaAsNode(n, ids, { tokenFile });

/** Every file under dir (recursively), skipping sockets and the like. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

const certOf = (d: Dump, ident: string) => d.certificates.find((c) => c.id === ident);

before(async () => {
  st = await sandboxUp({ nodes: 2, pods: 2, agents: true });
  assert.ok(st.controlPlane, 'the sandbox runs the cluster CA by default');
  for (const p of st.pods) procs.push(await nettoolServer(p, 'serve', 8080, '--greet'));
});

after(() => tearDown(procs, tmp));

test('no node holds a signing key: agent configs point at the CA, no private key of the CA in any node dir', async () => {
  const caKey = fs.readFileSync(path.join(cp().caDir, 'ca-key.pem'), 'utf8');
  const caKeyBody = caKey.replace(/-----[^-]+-----|\s/g, '');
  const tokenKey = fs.readFileSync(cp().tokenKey, 'utf8').replace(/-----[^-]+-----|\s/g, '');
  assert.match(caKey, /BEGIN (EC )?PRIVATE KEY/, 'the CA key exists, in the control-plane dir');
  for (const n of st.nodes) {
    const cfg = fs.readFileSync(n.config, 'utf8');
    assert.match(cfg, new RegExp(`caAddress: ${cp().address.replace(/\./g, '\\.')}`));
    assert.doesNotMatch(cfg, /caDir/, `${n.name}'s agent.yaml names no CA directory`);
    const files = [...filesUnder(path.dirname(n.config)), ...filesUnder(st.meshDir)];
    assert.ok(files.some((f) => f.endsWith('/ca/token')) && files.some((f) => f.endsWith('/ca/root-cert.pem')), 'the node has its token and the root');
    for (const f of files) {
      const text = fs.readFileSync(f, 'latin1');
      assert.doesNotMatch(text, /PRIVATE KEY/, `${f} holds no private key`);
      assert.ok(!text.replace(/\s/g, '').includes(caKeyBody), `${f} does not hold the CA key`);
      assert.ok(!text.replace(/\s/g, '').includes(tokenKey), `${f} does not hold the token signing key`);
    }
    // and the agent process was given no key on its command line or in its environment
    const proc = `${fs.readFileSync(`/proc/${n.agentPid}/cmdline`, 'latin1')}\n${fs.readFileSync(`/proc/${n.agentPid}/environ`, 'latin1')}`;
    assert.doesNotMatch(proc, /PRIVATE KEY|ca-key\.pem/);
  }
  assert.deepEqual(nodeKeyLeaks(st), [], 'the sandbox helper (the demo uses it) agrees');
  // the CA was started with the public half of the token key only
  const caCmd = fs.readFileSync(`/proc/${cp().caPid}/cmdline`, 'latin1').split('\0');
  assert.ok(caCmd.includes(cp().tokenPublicKey) && !caCmd.includes(cp().tokenKey));
});

test('the attack: with n1’s node token, the identity of a pod that runs only on n2 is refused (CA_NODE_DENIED), counted, no certificate', async () => {
  const before = await caCount('refused', 'CA_NODE_DENIED');
  const token = nodeCaFiles(st.stateDir, 'n1').token;
  const r = await askCa('n1', token, [id('n2-p1'), id('n1-p1')]);
  const denied = r[id('n2-p1')]!;
  assert.equal(denied.ok, false);
  assert.equal(denied.grpc, 7, 'PERMISSION_DENIED');
  assert.equal(denied.server, 'CA_NODE_DENIED');
  assert.equal(denied.serial, undefined, 'no certificate came back');
  // the same token does get n1's own pod: the refusal is node authorization, not a broken token
  assert.equal(r[id('n1-p1')]!.ok, true, JSON.stringify(r[id('n1-p1')]));
  assert.equal(await caCount('refused', 'CA_NODE_DENIED'), before + 1, 'counted in the CA /metrics');

  // a token n1 mints itself (it has no sandbox key: a key of its own) claiming node n2: not authenticated
  const forged = path.join(tmp, 'forged-token');
  fs.writeFileSync(
    forged,
    mintSandboxToken(generateSandboxKey().privateKeyPem, { namespace: 'ambientd-system', serviceAccount: 'ambientd', node: 'n2', audience: 'istio-ca' }),
  );
  const beforeInvalid = await caCount('refused', 'CA_AUTH_INVALID');
  const f = (await askCa('n1', forged, [id('n2-p1')]))[id('n2-p1')]!;
  assert.equal(f.ok, false);
  assert.equal(f.grpc, 16, 'UNAUTHENTICATED');
  assert.equal(f.server, 'CA_AUTH_INVALID');
  assert.equal(await caCount('refused', 'CA_AUTH_INVALID'), beforeInvalid + 1);
});

test('a bad node token (expired, wrong audience, missing): the node’s new identities are refused and counted, their traffic never opens', async () => {
  const tokenFile = nodeCaFiles(st.stateDir, 'n1').token;
  const good = fs.readFileSync(tokenFile, 'utf8');
  const ident = id('n1-p2');
  const cases: Array<{ name: string; write: () => Promise<void>; ca: string | null; lastError: RegExp }> = [
    {
      name: 'expired',
      write: async () => fs.writeFileSync(tokenFile, await mintNodeToken(cp(), 'n1', { now: Date.now() - 48 * 3_600_000, lifetimeMs: 3_600_000 })),
      ca: 'CA_AUTH_EXPIRED',
      lastError: /CA_AUTH_EXPIRED|expired/,
    },
    {
      name: 'wrong audience',
      write: async () => fs.writeFileSync(tokenFile, await mintNodeToken(cp(), 'n1', { audience: 'not-the-ca' })),
      ca: 'CA_AUTH_AUDIENCE',
      lastError: /audience/,
    },
    { name: 'missing', write: async () => fs.rmSync(tokenFile), ca: null, lastError: /caTokenFile/ },
  ];
  try {
    for (const c of cases) {
      await c.write();
      const caBefore = c.ca ? await caCount('refused', c.ca) : 0;
      const failedBefore = (await dump('n1')).counters.certificate_issue_failed ?? 0;
      await setEnrollment('n1-p2', true);
      const cert = await until(`${c.name}: the agent counted the refusal of ${ident}`, async () => {
        const d = await dump('n1');
        const x = certOf(d, ident);
        return x && x.failedAttempts >= 1 && (d.counters.certificate_issue_failed ?? 0) > failedBefore ? x : undefined;
      });
      assert.equal(cert.serial, null, `${c.name}: no certificate`);
      assert.match(cert.lastError ?? '', c.lastError);
      if (c.ca) assert.ok((await caCount('refused', c.ca)) > caBefore, `${c.name}: the CA counted ${c.ca}`);
      // the pod's traffic: refused, in both directions
      const out = await nettool(pod('n1-p2'), 'send', pod('n2-p1').ip, 8080, 'x');
      assert.notEqual(out.code, 0, `${c.name}: n1-p2 -> n2-p1 must not open: ${out.stdout}`);
      const inb = await nettool(pod('n2-p1'), 'send', pod('n1-p2').ip, 8080, 'x');
      assert.notEqual(inb.code, 0, `${c.name}: n2-p1 -> n1-p2 must not open: ${inb.stdout}`);
      assert.doesNotMatch(inb.stdout, /hello from/);
      await setEnrollment('n1-p2', false);
      await until(`${c.name}: ${ident} forgotten after unenroll`, async () => !certOf(await dump('n1'), ident));
    }
  } finally {
    fs.writeFileSync(tokenFile, good, { mode: 0o600 });
  }
  // a good token again: the same pod works
  await setEnrollment('n1-p2', true);
  await until('n1-p2 has its certificate', async () => certOf(await dump('n1'), ident)?.serial, 20_000);
  const ok = await nettool(pod('n1-p2'), 'send', pod('n2-p1').ip, 8080, 'hi');
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /hello from/);
  await setEnrollment('n1-p2', false);
});

test('CA down: valid certificates keep serving; a pod enrolled meanwhile fails closed and is retried with back-off; CA back: it works without an agent restart', async () => {
  const agents = st.nodes.map((n) => n.agentPid);
  const first = await nettool(pod('n1-p1'), 'send', pod('n2-p1').ip, 8080, 'before');
  assert.equal(first.code, 0, first.stderr);

  await stopCa();
  st = sandboxStatus();
  assert.equal(cp().caPid, null);

  // established identities: bytes still arrive over HBONE, the peer identity is checked
  const marker = `CA-DOWN-${crypto.randomBytes(6).toString('hex')}`;
  const still = await nettool(pod('n1-p1'), 'send', pod('n2-p1').ip, 8080, marker);
  assert.equal(still.code, 0, still.stderr);
  assert.ok(still.stdout.includes(marker), 'the echo came back');
  const rec = await until('the outbound record', async () =>
    (await dump('n1')).connections.find((c) => c.dst === `${pod('n2-p1').ip}:8080` && c.direction === 'outbound' && c.bytesSent >= marker.length),
  );
  assert.equal(rec.via, 'hbone');
  assert.equal(rec.peerIdentity, id('n2-p1'));

  // a pod enrolled while the CA is down: no certificate, its traffic refused, nothing in clear
  const ident = id('n2-p2');
  await setEnrollment('n2-p2', true);
  await until(
    'two failed issuances of n2-p2 (retried with back-off)',
    async () => {
      const d = await dump('n2');
      return (certOf(d, ident)?.failedAttempts ?? 0) >= 2 && (d.counters.certificate_issue_failed ?? 0) >= 2;
    },
    20_000,
  );
  const pcap = path.join(tmp, 'ca-down.pcap');
  const cap = await captureNodeLink(pcap, 'n2');
  procs.push({ kill: cap.kill } as unknown as ChildProcess);
  const secret = `PLAINTEXT-${crypto.randomBytes(6).toString('hex')}`;
  const out = await nettool(pod('n2-p2'), 'send', pod('n1-p1').ip, 8080, secret);
  assert.notEqual(out.code, 0, `n2-p2 -> n1-p1 must not open while n2-p2 has no certificate: ${out.stdout}`);
  assert.ok(!out.stdout.includes(secret));
  const inb = await nettool(pod('n1-p1'), 'send', pod('n2-p2').ip, 8080, secret);
  assert.notEqual(inb.code, 0, `n1-p1 -> n2-p2 must not open: ${inb.stdout}`);
  await new Promise((r) => setTimeout(r, 300));
  await cap.stop();
  const pkts = readTcpPackets(pcap);
  assert.ok(!pkts.some((p) => p.payload.includes(secret)), 'the payload never crossed the wire in clear');
  assert.ok(!pkts.some((p) => p.dport === 8080 || p.sport === 8080), 'nothing reached port 8080 directly');
  const d = await dump('n2');
  const pending = certOf(d, ident)!;
  assert.equal(pending.serial, null);
  assert.ok(pending.nextRenewal, 'a retry is scheduled');

  // the CA is back: the pod gets its certificate from the background retry and works
  await startCa();
  st = sandboxStatus();
  await until('n2-p2 got its certificate', async () => certOf(await dump('n2'), ident)?.serial, 45_000);
  const after = await nettool(pod('n2-p2'), 'send', pod('n1-p1').ip, 8080, 'after');
  assert.equal(after.code, 0, after.stderr);
  assert.match(after.stdout, /hello from/);
  const rec2 = await until('the new pod’s record', async () =>
    (await dump('n2')).connections.find((c) => c.src.startsWith(pod('n2-p2').ip) && c.via === 'hbone' && c.direction === 'outbound'),
  );
  assert.equal(rec2.peerIdentity, id('n1-p1'));
  assert.deepEqual(
    sandboxStatus().nodes.map((n) => n.agentPid),
    agents,
    'no agent was restarted',
  );
});
