// Client-address preservation (issue 14): an app in an enrolled pod sees its
// real client's address, for inbound HBONE (same node and across nodes) and
// inbound plaintext, over IPv4 and IPv6, on a dual-stack sandbox (2 nodes x 3
// pods; n<i>-p1 and n<i>-p3 are ambient, n<i>-p2 is not). Every server greets
// with the peer it saw ("hello from <me> to <peer>:<port>"). The agent's
// transparent socket and the pod's return path (fwmark rule + local route in
// the pod's netns, tcp_fwmark_accept) are checked as the kernel shows them,
// and removed when the pod leaves the mesh. The sandbox is removed even on
// failure.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { sandboxUp, setEnrollment, type SandboxState } from '../../tools/sandbox/index.js';
import { nettoolServer, runInPod } from '../../tools/sandbox/podproc.js';
import { sandboxView, tearDown, until } from '../helpers/sandbox.js';
import { formatHostPort } from '../../src/util/hostport.js';
import type { ConfigDump } from '../../src/agent/index.js';

type Dump = Pick<ConfigDump, 'workloads' | 'connections' | 'counters'>;
type Pod = SandboxState['pods'][number];

let st: SandboxState;
const servers: ChildProcess[] = [];
const { pod, dump } = sandboxView<Dump>(() => st);

const addr = (p: Pod, family: 4 | 6): string => (p.ips ?? [p.ip]).find((a) => a.includes(':') === (family === 6))!;

/**
 * Connects from `from` to `to`:8090 over `family`, reads the greeting; returns
 * the client's own address as its socket has it and the peer the server saw.
 */
async function whoAmI(from: Pod, to: Pod, family: 4 | 6): Promise<{ mine: string; seen: string }> {
  const host = addr(to, family);
  const r = await runInPod(from, [
    process.execPath,
    '-e',
    `const net = require('net');
     const s = net.connect(8090, ${JSON.stringify(host)});
     let got = '';
     const timer = setTimeout(() => { console.error('no greeting'); process.exit(3); }, 15000);
     s.on('data', (d) => { got += d; if (got.includes('\\n')) { console.log(JSON.stringify({ ip: s.localAddress, port: s.localPort, got })); clearTimeout(timer); s.destroy(); } });
     s.on('error', (e) => { console.error(e.message); process.exit(2); });`,
  ]);
  assert.equal(r.code, 0, `${from.name} -> ${formatHostPort({ ip: host, port: 8090 })}: ${r.stderr}`);
  const o = JSON.parse(r.stdout.trim()) as { ip: string; port: number; got: string };
  const m = /^hello from \S+ to (\S+)\n/.exec(o.got);
  assert.ok(m, `greeting: ${o.got}`);
  return { mine: formatHostPort({ ip: o.ip.replace(/^::ffff:/, ''), port: o.port }), seen: m[1]! };
}

function ipIn(netnsPath: string, args: string[]): string {
  const r = spawnSync('nsenter', [`--net=${netnsPath}`, '--', ...args], { encoding: 'utf8' });
  // a routing table nobody ever filled does not exist: nothing in it
  if (r.status !== 0 && /FIB table does not exist/.test(r.stderr)) return '';
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** The pod's return path as the kernel shows it. */
function returnPath(p: Pod): { accept: string; rules4: string; rules6: string; routes4: string; routes6: string } {
  return {
    accept: ipIn(p.netnsPath, ['cat', '/proc/sys/net/ipv4/tcp_fwmark_accept', '/proc/sys/net/ipv4/fwmark_reflect', '/proc/sys/net/ipv6/fwmark_reflect'])
      .trim()
      .split('\n')
      .join(' '),
    rules4: ipIn(p.netnsPath, ['ip', '-4', 'rule', 'show', 'fwmark', '0x4d3']).trim(),
    rules6: ipIn(p.netnsPath, ['ip', '-6', 'rule', 'show', 'fwmark', '0x4d3']).trim(),
    routes4: ipIn(p.netnsPath, ['ip', '-4', 'route', 'show', 'table', '133']).trim(),
    routes6: ipIn(p.netnsPath, ['ip', '-6', 'route', 'show', 'table', '133']).trim(),
  };
}

before(async () => {
  st = await sandboxUp({ nodes: 2, pods: 3, agents: true, ipFamily: 'dual' });
  for (const p of st.pods) servers.push(await nettoolServer(p, 'serve', 8090, '--greet', '--peer-port'));
});
after(() => tearDown(servers));

for (const family of [4, 6] as const) {
  test(`IPv${family}: across nodes over HBONE, the app sees its client's own address and port`, async () => {
    const c = await whoAmI(pod('n1-p1'), pod('n2-p1'), family);
    assert.equal(c.seen, c.mine, 'the server saw exactly the socket the client connected from');
    assert.ok(c.seen.includes(addr(pod('n1-p1'), family)), c.seen);
    const rec = await until('HBONE record on n2', async () =>
      (await dump('n2')).connections.find((x) => x.via === 'inbound-hbone' && x.dst === formatHostPort({ ip: addr(pod('n2-p1'), family), port: 8090 })),
    );
    assert.ok(rec.src.startsWith(family === 6 ? `[${addr(pod('n1-p1'), 6)}]:` : `${addr(pod('n1-p1'), 4)}:`), `policy source is the TCP peer: ${rec.src}`);
  });

  test(`IPv${family}: on the same node over HBONE, the app sees its client's own address and port`, async () => {
    const c = await whoAmI(pod('n1-p1'), pod('n1-p3'), family);
    assert.equal(c.seen, c.mine);
  });

  test(`IPv${family}: inbound plaintext from outside the mesh, the app sees the client's address (not the pod's own)`, async () => {
    const client = pod('n2-p2');
    const c = await whoAmI(client, pod('n1-p1'), family);
    const ip = addr(client, family);
    assert.ok(c.seen.startsWith(family === 6 ? `[${ip}]:` : `${ip}:`), `seen ${c.seen}, client ${c.mine}`);
    assert.ok(!c.seen.includes(addr(pod('n1-p1'), family)), 'not the pod talking to itself');
    const d = await dump('n1');
    assert.ok(
      d.connections.some((x) => x.via === 'inbound-plaintext' && x.src === c.mine),
      'it went through the agent (a plaintext inbound record with the client as source)',
    );
  });
}

test("the return path is in the pod's netns while it is enrolled, in both families, and gone when it leaves the mesh", async () => {
  const p = pod('n1-p3');
  const on = returnPath(p);
  assert.equal(on.accept, '1 1 1', 'tcp_fwmark_accept, and fwmark_reflect of both families (kernel RSTs go back over lo too)');
  assert.match(on.rules4, /fwmark 0x4d3 lookup 133/);
  assert.match(on.rules6, /fwmark 0x4d3 lookup 133/);
  assert.equal(on.rules4.split('\n').length, 1, 'one rule, not one per enrollment');
  assert.match(on.routes4, /^local default dev lo/);
  assert.match(on.routes6, /^local default dev lo/);
  assert.equal(returnPath(pod('n1-p2')).rules4, '', 'a pod outside the mesh has none');
  const w = (await dump('n1')).workloads.find((x) => x.name === 'n1-p3');
  assert.equal(w?.clientAddress, 'client', 'config_dump says its app sees its clients');
  await setEnrollment('n1-p3', false);
  const off = await until('return path removed', () => {
    const r = returnPath(p);
    // the rules and routes go first, then the sysctl: wait for all of it
    return r.rules4 === '' && r.rules6 === '' && r.routes4 === '' && r.routes6 === '' && r.accept === '0 0 0' ? r : undefined;
  });
  assert.equal(off.accept, '0 0 0', 'the sysctls back to their defaults');
  // unenrolled: the app is reached directly, and sees the client as it is
  const c = await whoAmI(pod('n1-p1'), p, 4);
  assert.ok(c.seen.startsWith(`${addr(pod('n1-p1'), 4)}:`));
  await setEnrollment('n1-p3', true);
  await until('return path back', () => (returnPath(p).rules4 !== '' ? true : undefined));
  const again = await whoAmI(pod('n1-p1'), p, 6);
  assert.equal(again.seen, again.mine, 'preserved again once re-enrolled');
});
