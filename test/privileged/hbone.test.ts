// HBONE between two sandbox nodes: ambient n1-p1 <-> ambient n2-p1 go through
// an HTTP/2 CONNECT tunnel over mutual TLS 1.3 between the two agents. Checks
// bytes, identities, what is on the wire, bad input on 15008, and certificate
// rotation under a live connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { sandboxUp, startAgent, stopAgent, waitAgentReady, type SandboxState } from '../../tools/sandbox/index.js';
import { nettool, nettoolServer, runInPod, startInPod } from '../../tools/sandbox/podproc.js';
import { sandboxView, until, tearDown } from '../helpers/sandbox.js';
import { CertificateAuthority } from '../../src/identity/ca.js';
import { readTcpPackets, hasTls13ServerHello, captureNodeLink } from '../../tools/sandbox/pcap.js';
import { ROOT } from '../helpers/paths.js';
import type { ConfigDump } from '../../src/agent/index.js';

let st: SandboxState;
const procs: ChildProcess[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-hbone-'));

type Dump = Pick<ConfigDump, 'connections' | 'certificates' | 'counters'>;
const { pod, node, dump } = sandboxView<Dump>(() => st);
const id = (p: string): string => `spiffe://cluster.local/ns/${pod(p).namespace}/sa/${pod(p).serviceAccount}`;
const normSerial = (s: string | null | undefined): string => (s ?? '').replace(/:/g, '').replace(/^0+/, '').toLowerCase();

before(async () => {
  st = await sandboxUp({ nodes: 2, pods: 2, agents: true });
  for (const p of st.pods) {
    procs.push(await nettoolServer(p, 'serve', 8080, '--greet'));
    procs.push(await nettoolServer(p, 'serve', 8081));
    procs.push(await nettoolServer(p, 'sink', 9000));
  }
});

after(() => tearDown(procs, tmp));

test('on the wire between the nodes: only TLS 1.3 on port 15008, none of the payload in clear', async () => {
  const pcap = path.join(tmp, 'link.pcap');
  // the link node n1 <-> the fabric bridge: every byte between the two nodes crosses it
  const dump1 = await captureNodeLink(pcap, 'n1');
  procs.push({ kill: dump1.kill } as unknown as ChildProcess);
  const marker = `AMBIENTD-SECRET-${crypto.randomBytes(6).toString('hex')}`;
  const r = await nettool(pod('n1-p1'), 'send', pod('n2-p1').ip, 8080, marker.repeat(50));
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.includes(marker), 'the echo came back through the tunnel');
  await new Promise((res) => setTimeout(res, 300));
  await dump1.stop();

  const a = pod('n1-p1').ip;
  const b = pod('n2-p1').ip;
  const pkts = readTcpPackets(pcap).filter((p) => (p.src === a && p.dst === b) || (p.src === b && p.dst === a));
  assert.ok(pkts.length > 5, `captured the pods' traffic (${pkts.length} packets; tcpdump: ${dump1.stderr()})`);
  assert.ok(
    pkts.every((p) => p.sport === 15008 || p.dport === 15008),
    'every packet between the pods is on port 15008',
  );
  assert.ok(!pkts.some((p) => p.dport === 8080 || p.sport === 8080), 'nothing reached port 8080 in the clear');
  const toServer = Buffer.concat(pkts.filter((p) => p.dst === b).map((p) => p.payload));
  const toClient = Buffer.concat(pkts.filter((p) => p.dst === a).map((p) => p.payload));
  assert.equal(toServer.indexOf(marker), -1, 'payload not visible client -> server');
  assert.equal(toClient.indexOf(marker), -1, 'payload not visible server -> client');
  assert.equal(toServer[0], 0x16, 'the client opened with a TLS handshake record');
  assert.ok(hasTls13ServerHello(toClient), 'the server chose TLS 1.3');
});

test('ambient -> ambient across nodes: 8 MiB echoed intact both ways, over HBONE, with both identities', async () => {
  const r = await nettool(pod('n1-p1'), 'echo', pod('n2-p1').ip, 8081, 8 * 1024 * 1024);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^ok 8388608 /);
  const out = (await dump('n1')).connections.find((c) => c.dst === `${pod('n2-p1').ip}:8081` && c.direction === 'outbound');
  assert.ok(out);
  assert.equal(out.via, 'hbone');
  assert.equal(out.peerIdentity, id('n2-p1'), 'client side verified the server identity');
  assert.equal(out.bytesSent, 8 * 1024 * 1024);
  assert.equal(out.bytesReceived, 8 * 1024 * 1024);
  const inb = await until('inbound record closed', async () =>
    (await dump('n2')).connections.find((c) => c.dst === `${pod('n2-p1').ip}:8081` && c.via === 'inbound-hbone' && c.state === 'closed'),
  );
  assert.equal(inb.peerIdentity, id('n1-p1'), 'the server-side agent saw the client SPIFFE id');
  assert.equal(inb.src.split(':')[0], pod('n1-p1').ip, 'original source from the Forwarded header');
  assert.equal(inb.bytesSent, 8 * 1024 * 1024);
});

test('a server-speaks-first protocol works through the tunnel', async () => {
  const r = await runInPod(pod('n1-p1'), [
    process.execPath,
    '-e',
    `
    const s = require('net').connect(8080, '${pod('n2-p1').ip}');
    s.once('data', (d) => { console.log(d.toString().trim()); s.destroy(); });
  `,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^hello from ${pod('n2-p1').ip.replace(/\./g, '\\.')}:8080`));
});

test('half-close: the client ends its side and still reads the whole answer', async () => {
  const r = await nettool(pod('n1-p1'), 'blob', pod('n2-p1').ip, 9000, 3_000_000);
  assert.equal(r.code, 0, r.stderr);
  const [sent, received] = r.stdout
    .trim()
    .split('\n')
    .map((l) => l.split(' ').slice(1).join(' '));
  assert.equal(received, sent);
});

test('ambient -> non-ambient stays plaintext passthrough; non-ambient -> ambient arrives on 15006', async () => {
  const r = await nettool(pod('n1-p1'), 'send', pod('n2-p2').ip, 8080, 'x');
  assert.equal(r.code, 0);
  assert.ok((await dump('n1')).connections.some((c) => c.dst === `${pod('n2-p2').ip}:8080` && c.via === 'passthrough'));
  const r2 = await nettool(pod('n2-p2'), 'send', pod('n1-p1').ip, 8080, 'y');
  assert.equal(r2.code, 0);
  const c = (await dump('n1')).connections.find((x) => x.src.startsWith(pod('n2-p2').ip) && x.via === 'inbound-plaintext');
  assert.ok(c);
  assert.equal(c.peerIdentity, null, 'no peer identity on plaintext');
});

test('bad input on 15008 is refused, counted, and the agent keeps serving', async () => {
  const foreign = await CertificateAuthority.createInMemory({ trustDomain: 'evil.local' });
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const issued = await foreign.issue({
    spiffeId: 'spiffe://evil.local/ns/ambient-demo/sa/sa-n1-p1',
    publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string,
  });
  fs.writeFileSync(path.join(tmp, 'key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  fs.writeFileSync(path.join(tmp, 'cert.pem'), issued.chainPem);
  const client = path.join(ROOT, 'dist', 'test', 'helpers', 'bad-hbone-client.js');
  const target = pod('n2-p1').ip;
  const runBad = async (mode: string): Promise<{ outcome: string; status?: number; reason?: string }> => {
    const r = await runInPod(pod('n2-p2'), [process.execPath, client, mode, target, '15008', tmp], { timeoutMs: 20_000 });
    return JSON.parse(r.stdout.trim().split('\n')[0]!);
  };
  const before = (await dump('n2')).counters;
  for (const mode of ['garbage', 'truncated-hello', 'no-client-cert', 'foreign-cert']) {
    const o = await runBad(mode);
    assert.notEqual(o.outcome, 'response', `${mode}: no tunnel was opened (${JSON.stringify(o)})`);
    assert.notEqual(o.outcome, 'timeout', `${mode}: refused promptly`);
  }
  const c = await until('rejections counted', async () => {
    const x = (await dump('n2')).counters;
    const rejected = Object.entries(x)
      .filter(([k]) => k.startsWith('hbone_rejected_'))
      .reduce((n, [k, v]) => n + v - (before[k] ?? 0), 0);
    return rejected >= 4 && x;
  });
  assert.ok((c.hbone_rejected_no_client_cert ?? 0) > (before.hbone_rejected_no_client_cert ?? 0), JSON.stringify(c));
  assert.ok(
    (c.hbone_rejected_bad_trust_domain ?? 0) + (c.hbone_rejected_untrusted_cert ?? 0) >
      (before.hbone_rejected_bad_trust_domain ?? 0) + (before.hbone_rejected_untrusted_cert ?? 0),
    JSON.stringify(c),
  );
  // still serving
  const r = await nettool(pod('n1-p1'), 'send', target, 8081, 'after-bad-input');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'after-bad-input');
});

test('certificate rotation under a live connection: new connections get the new certificate, the old one is not cut', async () => {
  // restart both agents with 4 s certificates (renewed every 2 s)
  for (const n of ['n1', 'n2']) {
    const cfg = node(n).config;
    fs.writeFileSync(cfg, fs.readFileSync(cfg, 'utf8').replace(/^certLifetime:.*\n/m, '') + 'certLifetime: 4s\n');
    await stopAgent(n, 'SIGTERM');
    await startAgent(n);
    await waitAgentReady(n);
  }
  const src = pod('n1-p1');
  const dst = pod('n2-p1');
  const long = await startInPod(src, [
    process.execPath,
    '-e',
    `
    const s = require('net').connect(8081, '${dst.ip}', () => console.log('listening'));
    let n = 0; s.on('data', (d) => { n += d.length; });
    setInterval(() => { s.write('x'.repeat(100)); console.log('echoed ' + n); }, 100);
    s.on('close', () => { console.log('closed'); process.exit(3); });
  `,
  ]);
  procs.push(long);
  let lastEchoed = 0;
  let closed = false;
  long.stdout!.on('data', (c: Buffer) => {
    for (const l of c.toString().split('\n')) {
      const m = /^echoed (\d+)/.exec(l);
      if (m) lastEchoed = Number(m[1]);
      if (l === 'closed') closed = true;
    }
  });
  const first = await until('tunnel open with a certificate', async () => {
    const d = await dump('n2');
    return d.connections.find((c) => c.via === 'inbound-hbone' && c.state === 'open' && c.dst === `${dst.ip}:8081`);
  });
  const s1 = normSerial(first.peerCertSerial);
  assert.ok(s1.length > 0);
  await until(
    'n1-p1 certificate renewed',
    async () => {
      const c = (await dump('n1')).certificates.find((x) => x.id === id('n1-p1'));
      return c && normSerial(c.serial) !== s1;
    },
    10_000,
  );
  // past the first certificate's notAfter
  await new Promise((r) => setTimeout(r, 4500));
  const s2 = normSerial((await dump('n1')).certificates.find((x) => x.id === id('n1-p1'))!.serial);
  const echoedBefore = lastEchoed;
  const r = await nettool(src, 'send', dst.ip, 8080, 'new-connection');
  assert.equal(r.code, 0, r.stderr);
  const fresh = await until('new tunnel recorded', async () => {
    const d = await dump('n2');
    return d.connections.filter((c) => c.via === 'inbound-hbone' && c.dst === `${dst.ip}:8080`).pop();
  });
  assert.notEqual(normSerial(fresh.peerCertSerial), s1, 'the new connection was not made with the first certificate');
  assert.ok(s2 !== s1);
  await new Promise((res) => setTimeout(res, 500));
  assert.equal(closed, false, 'the long connection was not cut');
  assert.ok(lastEchoed > echoedBefore, `the long connection still carries bytes after rotation (${echoedBefore} -> ${lastEchoed})`);
  const still = (await dump('n2')).connections.find((c) => c.id === first.id);
  assert.equal(still?.state, 'open');
  long.kill('SIGKILL');
});
