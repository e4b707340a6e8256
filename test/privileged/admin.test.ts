// Observability on the sandbox (1 node x 2 pods, agent running):
// `inspect maps -o json` equals bpftool's "formatted" dump; the admin endpoint
// rejects bad input without changing anything and is not reachable from pods;
// a closed connection leaves one access-log JSON line in the agent log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { sandboxUp, type SandboxState } from '../../tools/sandbox/index.js';
import { nettool, nettoolServer, runInPod } from '../../tools/sandbox/podproc.js';
import { sandboxView, until, tearDown } from '../helpers/sandbox.js';
import { httpInNetns } from '../../src/util/netns-http.js';
import { loadNative } from '../../src/datapath/native.js';
import type { ConfigDump } from '../../src/agent/index.js';
import { CLI } from '../helpers/paths.js';

let st: SandboxState;
const procs: ChildProcess[] = [];
type Dump = Pick<ConfigDump, 'connections'>;
const { pod, node, dump } = sandboxView<Dump>(() => st);

before(async () => {
  st = await sandboxUp({ nodes: 1, pods: 2, agents: true });
  for (const p of st.pods) procs.push(await nettoolServer(p, 'serve', 8081));
});

after(() => tearDown(procs));

const admin = (p: string, method = 'GET') => httpInNetns(node('n1').netnsPath, '127.0.0.1', 15000, p, method);
const canon = (xs: unknown[]): string[] => xs.map((x) => JSON.stringify(x)).sort();

test('inspect maps -o json equals bpftool -j map dump "formatted" for the BTF maps', async () => {
  // a little traffic so amb_pod_stats has non-zero counters
  assert.equal((await nettool(pod('n1-p1'), 'send', pod('n1-p2').ip, 8081, 'x')).code, 0);
  await new Promise((r) => setTimeout(r, 200));
  const r = spawnSync(process.execPath, [CLI, 'inspect', 'maps', '-o', 'json', '--node', 'n1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const ours = JSON.parse(r.stdout) as Record<string, { pin: string; bpftool: string; entries: unknown[] }>;
  for (const name of ['amb_pods', 'amb_pod_stats', 'amb_config', 'amb_pod_by_cgroup']) {
    const m = ours[name];
    assert.ok(m, `${name} in the output`);
    assert.equal(m.pin, `${node('n1').bpffsDir}/maps/${name}`);
    assert.equal(m.bpftool, `bpftool map dump pinned ${m.pin}`);
    const b = spawnSync('bpftool', ['-j', 'map', 'dump', 'pinned', m.pin], { encoding: 'utf8' });
    assert.equal(b.status, 0, b.stderr);
    const theirs = (JSON.parse(b.stdout) as Array<{ formatted: unknown }>).map((e) => e.formatted);
    assert.ok(theirs.length > 0, `${name} has entries`);
    assert.deepEqual(canon(m.entries), canon(theirs), name);
  }
  // the table names the bpftool command next to each map
  const t = spawnSync(process.execPath, [CLI, 'inspect', 'maps', '--node', 'n1'], { encoding: 'utf8' });
  assert.equal(t.status, 0, t.stderr);
  assert.ok(t.stdout.includes(`$ bpftool map dump pinned ${node('n1').bpffsDir}/maps/amb_pods`));
  // a config_dump target through the CLI
  const w = spawnSync(process.execPath, [CLI, 'inspect', 'workloads', '--node', 'n1'], { encoding: 'utf8' });
  assert.equal(w.status, 0, w.stderr);
  assert.match(w.stdout, /^NAMESPACE\s+NAME\s+IP/);
  // the IP column lists every address of the pod (both families on a dual-stack sandbox)
  const ips = (pod('n1-p1').ips ?? [pod('n1-p1').ip]).join(',');
  assert.match(w.stdout, new RegExp(`n1-p1\\s+${ips.replace(/\./g, '\\.')}\\s+n1\\s+yes\\s+enrolled`));
});

/** Sends raw bytes to the admin port from inside the node netns; resolves to what came back. */
function rawAdmin(head: string, bodyBytes: number): Promise<string> {
  return new Promise((resolve) => {
    const fd = loadNative().socketInNetns(node('n1').netnsPath, { family: 4 });
    assert.ok(fd >= 0);
    const s = new net.Socket({ fd, readable: true, writable: true });
    let got = '';
    s.on('data', (c: Buffer) => (got += c.toString()));
    s.on('error', () => undefined); // the server resets once it answered 413
    s.on('close', () => resolve(got));
    s.connect({ host: '127.0.0.1', port: 15000 }, () => {
      s.write(head);
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      for (let n = 0; n < bodyBytes; n += chunk.length) s.write(chunk);
      s.end();
    });
  });
}

test('admin bad input: 404, 405, 400 (level unchanged), 413 for 1 MiB; still serving', async () => {
  const unknown = await admin('/no/such/thing');
  assert.equal(unknown.status, 404);
  assert.ok(JSON.parse(unknown.body).endpoints.includes('/config_dump'));
  assert.equal((await admin('/quitquitquit')).status, 405, 'GET /quitquitquit does not stop the agent');
  const before = JSON.parse((await admin('/logging')).body).level;
  const bogus = await admin('/logging?level=bogus', 'POST');
  assert.equal(bogus.status, 400);
  assert.equal((await admin('/logging?level=', 'POST')).status, 400);
  assert.equal(JSON.parse((await admin('/logging')).body).level, before, 'the level did not change');
  const big = 1024 * 1024;
  const res = await rawAdmin(`POST /logging?level=debug HTTP/1.1\r\nHost: admin\r\nContent-Length: ${big}\r\n\r\n`, big);
  assert.match(res, /^HTTP\/1\.1 413 /, res.slice(0, 200));
  assert.equal(JSON.parse((await admin('/logging')).body).level, before, 'the oversized request changed nothing');
  assert.equal((await admin('/healthz/ready')).status, 200, 'the agent still serves');
  assert.equal((await admin('/config_dump')).status, 200);
});

test('the admin endpoint is not reachable from a pod (node IP or loopback)', async () => {
  const probe = `
    const net = require('net');
    const one = (host) => new Promise((res) => {
      const s = net.connect({ host, port: 15000 });
      let got = '';
      const t = setTimeout(() => { s.destroy(); res(host + ' timeout'); }, 3000);
      s.on('connect', () => s.write('GET /config_dump HTTP/1.0\\r\\n\\r\\n'));
      s.on('data', (c) => (got += c));
      s.on('error', (e) => { clearTimeout(t); res(host + ' error ' + e.code); });
      s.on('close', () => { clearTimeout(t); res(host + (got ? ' ANSWERED ' + got.split('\\r\\n')[0] : ' closed')); });
    });
    (async () => { for (const h of ['${node('n1').ip}', '127.0.0.1']) console.log(await one(h)); })();
  `;
  for (const p of ['n1-p1', 'n1-p2']) {
    const r = await runInPod(pod(p), [process.execPath, '-e', probe], { timeoutMs: 15_000 });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 2, r.stdout);
    for (const l of lines) assert.doesNotMatch(l, /ANSWERED/, `${p}: ${l}`);
    assert.match(lines[1]!, /127\.0\.0\.1 error ECONNREFUSED/, `${p}: nothing listens on the pod's loopback`);
  }
  assert.equal((await admin('/healthz/ready')).status, 200);
});

test('a closed connection leaves one access-log JSON line with src, dst, identities and bytes', async () => {
  const payload = 'hello-access-log';
  const r = await nettool(pod('n1-p1'), 'send', pod('n1-p2').ip, 8081, payload);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, payload);
  const dst = `${pod('n1-p2').ip}:8081`;
  const rec = await until('the connection closed in config_dump', async () =>
    (await dump('n1')).connections.filter((c) => c.dst === dst && c.state === 'closed' && c.bytesSent === payload.length).pop(),
  );
  const line = await until('the access-log line', () =>
    fs
      .readFileSync(node('n1').log, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((j) => j.scope === 'ambientd.access' && j.connectionId === rec.id),
  );
  assert.equal(line.level, 'info');
  assert.equal(line.msg, 'connection');
  assert.equal(line.direction, 'outbound');
  assert.equal(line.via, 'passthrough');
  assert.equal(line.src, rec.src);
  assert.equal(String(line.src).split(':')[0], pod('n1-p1').ip);
  assert.equal(line.dst, dst);
  assert.equal(line.endpoint, dst);
  assert.equal(line.srcWorkload, `${pod('n1-p1').namespace}/n1-p1`);
  assert.equal(line.dstWorkload, `${pod('n1-p2').namespace}/n1-p2`);
  assert.equal(line.srcPrincipal, `spiffe://cluster.local/ns/${pod('n1-p1').namespace}/sa/${pod('n1-p1').serviceAccount}`);
  assert.equal(line.dstPrincipal, null, 'plaintext passthrough: no verified server identity');
  assert.equal(line.bytesSent, payload.length);
  assert.equal(line.bytesReceived, payload.length);
  assert.equal(line.state, 'closed');
  assert.equal(typeof line.durationMs, 'number');
  assert.ok((line.durationMs as number) >= 0);
  assert.ok(line.reason);
});
