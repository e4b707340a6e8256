// IPv6 capture on real network namespaces (issue 14): a dual-stack sandbox
// (every pod has 10.244.<n>.<p> and fd00:10:244:<n>::<p>) and an IPv6-only
// one, 2 nodes x 2 pods each; n<i>-p1 are ambient, n<i>-p2 are not. Each
// family's outbound is captured with its original destination (the bytes
// arrive through the agent, whose record shows the IPv6 destination), inbound
// goes to the agent's 15006 or 15008 listener of that family, and with the
// agent SIGKILLed both families fail closed. Each sandbox is removed even on
// failure.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { restartAgent, sandboxApply, sandboxUp, startAgent, stopAgent, waitAgentReady, type SandboxState } from '../../tools/sandbox/index.js';
import { getJsonInNetns } from '../../src/util/netns-http.js';
import { nettool, nettoolServer, runInPod } from '../../tools/sandbox/podproc.js';
import { checkIpv6InboundPlaintext, sandboxView, sandboxWorkers, tearDown, until } from '../helpers/sandbox.js';
import { captureNodeLink, hasTls13ServerHello, readTcpPackets } from '../../tools/sandbox/pcap.js';
import { formatHostPort } from '../../src/util/hostport.js';
import type { ConfigDump } from '../../src/agent/index.js';

type Dump = Pick<ConfigDump, 'workloads' | 'connections' | 'counters' | 'services' | 'policies'>;
type Pod = SandboxState['pods'][number];

const v6 = (p: Pod): string => (p.ips ?? [p.ip]).find((a) => a.includes(':'))!;
const v4 = (p: Pod): string | undefined => (p.ips ?? [p.ip]).find((a) => !a.includes(':'));

/** The shared checks of one sandbox (dual or ipv6). */
function suite(family: 'dual' | 'ipv6'): void {
  let st: SandboxState;
  const servers: ChildProcess[] = [];
  const { pod, node, dump } = sandboxView<Dump>(() => st);

  before(async () => {
    st = await sandboxUp({ nodes: 2, pods: 2, agents: true, ipFamily: family });
    for (const p of st.pods) {
      servers.push(await nettoolServer(p, 'serve', 8080, '--greet'));
      servers.push(await nettoolServer(p, 'sink', 9000));
    }
  });
  after(() => tearDown(servers));

  test(`${family}: IPv6 outbound to a pod outside the mesh is captured: bytes arrive through the agent, whose record has the IPv6 destination`, async () => {
    const src = pod('n1-p1');
    const dst = pod('n2-p2');
    const r = await nettool(src, 'send', v6(dst), 8080, 'ping-v6');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello from ${formatHostPort({ ip: v6(dst), port: 8080 })} to ${v6(src)}\nping-v6`);
    const d = await dump('n1');
    const c = d.connections.find((x) => x.direction === 'outbound' && x.dst === `[${v6(dst)}]:8080` && x.state === 'closed');
    assert.ok(c, `outbound IPv6 record on n1: ${JSON.stringify(d.connections)}`);
    assert.equal(c.pod, 'ambient-demo/n1-p1');
    assert.equal(c.via, 'passthrough');
    assert.ok(c.src.startsWith(`[${v6(src)}]:`), c.src);
    assert.equal(c.bytesSent, 'ping-v6'.length);
    const w = d.workloads.find((x) => x.name === 'n1-p1')!;
    assert.ok(Number(w.redirect!.capturedOut) >= 1, 'counted captured_out in BPF');
  });

  test(`${family}: a captured AF_INET6 app sees the IPv6 destination it dialled as its peer (getpeername6)`, async () => {
    const dst = v6(pod('n2-p2'));
    const r = await runInPod(pod('n1-p1'), [
      process.execPath,
      '-e',
      `const s = require('net').connect(8080, '${dst}', () => { console.log(s.remoteAddress + ' ' + s.remotePort); s.destroy(); });`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `${dst} 8080`);
  });

  test(`${family}: IPv6 ambient -> ambient across nodes goes over HBONE on IPv6 ([addr]:port authority) and arrives on the destination's 15008`, async () => {
    const src = pod('n1-p1');
    const dst = pod('n2-p1');
    const r = await nettool(src, 'send', v6(dst), 8080, 'tunnelled-v6');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /tunnelled-v6$/);
    assert.ok(r.stdout.startsWith(`hello from [${v6(dst)}]:8080`), r.stdout);
    const out = (await dump('n1')).connections.find((x) => x.direction === 'outbound' && x.dst === `[${v6(dst)}]:8080` && x.state === 'closed');
    assert.ok(out, 'outbound record on n1');
    assert.equal(out.via, 'hbone');
    const inb = (await dump('n2')).connections.find((x) => x.direction === 'inbound' && x.dst === `[${v6(dst)}]:8080` && x.via === 'inbound-hbone');
    assert.ok(inb, `inbound HBONE record on n2: ${JSON.stringify((await dump('n2')).connections)}`);
    assert.ok(inb.src.startsWith(`[${v6(src)}]:`), `the policy source is the IPv6 TCP peer: ${inb.src}`);
    const w = (await dump('n2')).workloads.find((x) => x.name === 'n2-p1')!;
    assert.ok(Number(w.redirect!.hboneIn) >= 1, 'sk_lookup steered the IPv6 SYN to the HBONE listener');
  });

  test(`${family}: on the IPv6 wire between the nodes: only TLS on port 15008, none of the payload in clear`, async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-v6-'));
    const pcap = path.join(tmp, 'link.pcap');
    const td = await captureNodeLink(pcap, 'n1');
    try {
      const marker = `AMBIENTD-V6-SECRET-${crypto.randomBytes(6).toString('hex')}`;
      const r = await nettool(pod('n1-p1'), 'send', v6(pod('n2-p1')), 8080, marker.repeat(50));
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.includes(marker), 'the echo came back through the tunnel');
      await new Promise((res) => setTimeout(res, 300));
      await td.stop();
      const a = v6(pod('n1-p1'));
      const b = v6(pod('n2-p1'));
      const pkts = readTcpPackets(pcap).filter((p) => (p.src === a && p.dst === b) || (p.src === b && p.dst === a));
      assert.ok(pkts.length > 5, `captured the pods' IPv6 traffic (${pkts.length} packets; tcpdump: ${td.stderr()})`);
      assert.ok(
        pkts.every((p) => p.sport === 15008 || p.dport === 15008),
        'every packet between the pods is on port 15008',
      );
      const toServer = Buffer.concat(pkts.filter((p) => p.dst === b).map((p) => p.payload));
      const toClient = Buffer.concat(pkts.filter((p) => p.dst === a).map((p) => p.payload));
      assert.equal(toServer.indexOf(marker), -1, 'payload not visible client -> server');
      assert.equal(toClient.indexOf(marker), -1, 'payload not visible server -> client');
      // the session may be the pooled one of the test before (no handshake then): TLS records either way
      assert.ok(toServer.length > marker.length * 50, 'the payload crossed, encrypted');
      assert.ok([0x16, 0x17].includes(toServer[0]!), `TLS records client -> server (first byte ${toServer[0]})`);
      if (toServer[0] === 0x16) assert.ok(hasTls13ServerHello(toClient), 'a handshake on the wire chose TLS 1.3');
    } finally {
      td.kill();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  test(`${family}: IPv6 inbound from outside the mesh is captured on 15006 with the original port`, async () => {
    await checkIpv6InboundPlaintext(
      (text) => nettool(pod('n2-p2'), 'send', v6(pod('n1-p1')), 9000, text),
      () => dump('n1'),
      { v6: v6(pod('n2-p2')) },
      { name: 'n1-p1', v6: v6(pod('n1-p1')) },
      0,
    );
  });

  if (family === 'dual') {
    test('dual: a dual-stack Service: its IPv6 VIP goes to IPv6 endpoints over HBONE, the record keeps the VIP; an IPv6 ipBlocks DENY refuses IPv6 peers only', async () => {
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-v6svc-'));
      const apply = async (name: string, yaml: string): Promise<void> => {
        const f = path.join(tmp, `${name}.yaml`);
        fs.writeFileSync(f, yaml);
        assert.deepEqual((await sandboxApply(f)).errors, [], `${name} applies cleanly`);
      };
      try {
        await apply(
          'svc',
          `
apiVersion: v1
kind: Service
metadata: { name: echo6, namespace: ambient-demo }
spec:
  clusterIPs: [10.96.0.60, "fd00:10:96::60"]
  ipFamilies: [IPv4, IPv6]
  selector: { app: n2-p1 }
  ports: [ { name: tcp-echo, port: 80, targetPort: 8080 } ]
`,
        );
        await until('service known on n1', async () =>
          (await dump('n1')).services?.find((s) => s.name === 'echo6' && s.endpoints.some((e) => e.ip.includes(':'))),
        );
        const r = await nettool(pod('n1-p1'), 'send', 'fd00:10:96::60', 80, 'via-vip6');
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.stdout.startsWith(`hello from [${v6(pod('n2-p1'))}]:8080`), `an IPv6 endpoint answered the IPv6 VIP: ${r.stdout}`);
        const rec = (await dump('n1')).connections.find((c) => c.service === 'ambient-demo/echo6' && c.state === 'closed');
        assert.ok(rec);
        assert.equal(rec.dst, '[fd00:10:96::60]:80', 'the record keeps the VIP the client dialled');
        assert.equal(rec.endpoint, `[${v6(pod('n2-p1'))}]:8080`);
        assert.equal(rec.via, 'hbone');

        // n1-p2 (outside the mesh) reaches n2-p1 in plaintext, from its IPv6 or its IPv4 address
        await apply(
          'deny6',
          `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-node1-v6, namespace: ambient-demo }
spec:
  selector: { matchLabels: { app: n2-p1 } }
  action: DENY
  rules: [ { from: [ { source: { ipBlocks: ["${v6(pod('n1-p2'))}/128"] } } ] } ]
`,
        );
        await until('policy known on n2', async () => (await dump('n2')).policies?.some((p) => p.name === 'deny-node1-v6'));
        const denied = await nettool(pod('n1-p2'), 'send', v6(pod('n2-p1')), 8080, 'x');
        assert.ok(!(denied.code === 0 && denied.stdout.startsWith('hello')), `the IPv6 peer is denied: ${denied.stdout}`);
        const allowed = await nettool(pod('n1-p2'), 'send', v4(pod('n2-p1'))!, 8080, 'x');
        assert.equal(allowed.code, 0, allowed.stderr);
        assert.ok(allowed.stdout.startsWith(`hello from ${v4(pod('n2-p1'))}:8080`), 'the same pod over IPv4 never matches an IPv6 block');
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    });

    test('dual: IPv4 is captured as before, beside IPv6 (one set of listeners per family)', async () => {
      const r = await nettool(pod('n1-p1'), 'send', v4(pod('n2-p1'))!, 8080, 'ping-v4');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /ping-v4$/);
      const c = (await dump('n1')).connections.find((x) => x.direction === 'outbound' && x.dst === `${v4(pod('n2-p1'))}:8080` && x.state === 'closed');
      assert.ok(c);
      assert.equal(c.via, 'hbone');
    });
  } else {
    test('ipv6: an IPv6-only pod connecting to IPv4 is refused (a family it has no address of), never passed', async () => {
      const r = await nettool(pod('n1-p1'), 'probe', '10.100.0.2', 8080);
      assert.equal(r.code, 1);
      assert.equal(r.stdout.trim(), 'EPERM');
    });
  }

  test(`${family}: a restart hands every listener of both families over (none refused), and the new agent captures IPv6 at once`, async () => {
    const ambientPods = st.pods.filter((p) => p.node === 'n1' && p.ambient).length;
    // one socket per listener and data-plane worker
    const listeners = ambientPods * 3 * (family === 'dual' ? 2 : 1) * Math.max(1, sandboxWorkers());
    const r = await restartAgent('n1');
    const d = await getJsonInNetns<{ handover: { adopted: number; rejected: unknown[] } }>(node('n1').netnsPath, '127.0.0.1', 15000, '/config_dump');
    assert.equal(d.handover.adopted, listeners + 3, `the pod listeners of every family (${listeners}) and the node's 3 (pid ${r.oldPid} -> ${r.newPid})`);
    assert.deepEqual(d.handover.rejected, []);
    const again = await nettool(pod('n1-p1'), 'send', v6(pod('n2-p1')), 8080, 'after-restart');
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /after-restart$/);
  });

  test(`${family}: agent SIGKILLed: IPv6 (and IPv4) fail closed both ways, the pod outside the mesh is unaffected; a new agent captures again`, async () => {
    await stopAgent('n1', 'SIGKILL');
    try {
      const out6 = await nettool(pod('n1-p1'), 'probe', v6(pod('n2-p2')), 8080);
      assert.equal(out6.code, 1);
      assert.equal(out6.stdout.trim(), 'ECONNREFUSED', 'IPv6 outbound refused, not sent around the agent');
      const in6 = await nettool(pod('n2-p2'), 'probe', v6(pod('n1-p1')), 8080);
      assert.equal(in6.stdout.trim(), 'ECONNREFUSED', 'IPv6 inbound refused');
      if (family === 'dual') {
        const out4 = await nettool(pod('n1-p1'), 'probe', v4(pod('n2-p2'))!, 8080);
        assert.equal(out4.stdout.trim(), 'ECONNREFUSED', 'IPv4 outbound refused');
        const in4 = await nettool(pod('n2-p2'), 'probe', v4(pod('n1-p1'))!, 8080);
        assert.equal(in4.stdout.trim(), 'ECONNREFUSED', 'IPv4 inbound refused');
      }
      const plain = await nettool(pod('n1-p2'), 'send', v6(pod('n2-p2')), 8080, 'unaffected');
      assert.equal(plain.code, 0, 'the pod outside the mesh is unaffected');
      assert.ok(plain.stdout.includes(`to ${v6(pod('n1-p2'))}\n`), 'and not captured');
    } finally {
      await startAgent('n1');
      await waitAgentReady('n1');
    }
    const again = await nettool(pod('n1-p1'), 'send', v6(pod('n2-p2')), 8080, 'back');
    assert.equal(again.code, 0, again.stderr);
    assert.ok(
      (await dump('n1')).connections.some((c) => c.dst === `[${v6(pod('n2-p2'))}]:8080`),
      'the new agent captured it',
    );
  });
}

describe('dual-stack pods', () => suite('dual'));
describe('IPv6-only pods', () => suite('ipv6'));
