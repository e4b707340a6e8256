// Services and L4 authorization on the sandbox: a Service VIP spreads over
// endpoints on both nodes; AuthorizationPolicies ALLOW/DENY as Istio does, and
// a policy applied while a connection runs closes it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { sandboxUp, sandboxApply, setEnrollment, type SandboxState } from '../../tools/sandbox/index.js';
import { nettool, nettoolServer, startInPod } from '../../tools/sandbox/podproc.js';
import { sandboxView, until, tearDown } from '../helpers/sandbox.js';
import type { ConfigDump } from '../../src/agent/index.js';

let st: SandboxState;
const procs: ChildProcess[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-svc-'));

type Dump = Pick<ConfigDump, 'connections' | 'services' | 'policies' | 'workloads' | 'counters'>;
const { pod, dump } = sandboxView<Dump>(() => st);

async function apply(name: string, yaml: string): Promise<void> {
  const f = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(f, yaml);
  const r = await sandboxApply(f);
  assert.deepEqual(r.errors, [], `${name} applies cleanly`);
}

before(async () => {
  st = await sandboxUp({ nodes: 2, pods: 2, agents: true });
  for (const p of st.pods) {
    procs.push(await nettoolServer(p, 'serve', 8080, '--greet'));
    procs.push(await nettoolServer(p, 'serve', 8081));
  }
});

/** true when a greeting came back through whatever is in between */
async function reaches(from: string, to: string): Promise<boolean> {
  const r = await nettool(pod(from), 'send', pod(to).ip, 8080, 'ping');
  return r.code === 0 && r.stdout.startsWith(`hello from ${pod(to).ip}:8080`);
}

after(() => tearDown(procs, tmp));

test('a Service VIP spreads connections over ready endpoints on both nodes, keeping the service name', async () => {
  await apply(
    'svc',
    `
apiVersion: v1
kind: Service
metadata: { name: echo, namespace: ambient-demo }
spec:
  clusterIP: 10.96.0.10
  selector: { tier: echo }
  ports: [ { name: tcp-echo, port: 80, targetPort: 8080 } ]
`,
  );
  // one endpoint per address of n1-p1 and n2-p1 (two each on a dual-stack sandbox; the IPv4 VIP picks the IPv4 ones)
  const endpoints = [pod('n1-p1'), pod('n2-p1')].flatMap((p) => p.ips ?? [p.ip]).length;
  await until('service known on n1', async () => (await dump('n1')).services.find((s) => s.name === 'echo' && s.endpoints.length === endpoints));
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const r = await nettool(pod('n1-p1'), 'send', '10.96.0.10', 80, `svc-${i}`);
    assert.equal(r.code, 0, r.stderr);
    seen.add(/^hello from ([\d.]+):8080/.exec(r.stdout)![1]!);
  }
  assert.deepEqual([...seen].sort(), [pod('n1-p1').ip, pod('n2-p1').ip].sort(), 'both endpoints answered');
  const recs = (await dump('n1')).connections.filter((c) => c.service === 'ambient-demo/echo');
  assert.equal(recs.length, 6);
  assert.ok(
    recs.every((c) => c.dst === '10.96.0.10:80'),
    'records keep the VIP the client dialled',
  );
  assert.ok(
    recs.some((c) => c.endpoint === `${pod('n2-p1').ip}:8080` && c.via === 'hbone'),
    'the remote endpoint is reached over HBONE',
  );
});

test('ALLOW by principal across nodes: the named identity gets in, everything else is refused', async () => {
  await setEnrollment('n2-p2', true); // a second mesh identity (namespace plain, sa-n2-p2)
  await until('n2-p2 enrolled', async () => (await dump('n2')).workloads.find((w) => w.name === 'n2-p2' && w.state === 'enrolled'));
  await apply(
    'allow-n1-p1',
    `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-n1-p1, namespace: ambient-demo }
spec:
  selector: { matchLabels: { app: n2-p1 } }
  action: ALLOW
  rules:
  - from: [ { source: { principals: [ "cluster.local/ns/ambient-demo/sa/sa-n1-p1" ] } } ]
`,
  );
  await until('policy known on n2', async () => (await dump('n2')).policies.find((p) => p.name === 'allow-n1-p1'));
  assert.equal(await reaches('n1-p1', 'n2-p1'), true, 'the allowed principal, across nodes over HBONE');
  assert.equal(await reaches('n2-p2', 'n2-p1'), false, 'another mesh identity is denied (HBONE 401)');
  assert.equal(await reaches('n1-p2', 'n2-p1'), false, 'a plaintext client has no identity: denied');
  const d = await dump('n2');
  assert.ok((d.counters.policy_denied ?? 0) >= 1);
  assert.ok((d.counters.hbone_rejected_denied ?? 0) >= 1, 'the HBONE denial was a 401');
  const denied = d.connections.find((c) => c.src.startsWith(pod('n1-p2').ip) && c.state === 'failed');
  assert.match(denied?.reason ?? '', /denied by policy/);
  // and the client side saw the 401 as a failed tunnel
  const cl = (await dump('n2')).connections.find((c) => c.direction === 'outbound' && c.pod === 'plain/n2-p2' && c.dst.startsWith(pod('n2-p1').ip));
  assert.match(cl?.reason ?? '', /HBONE_DENIED 401/);
});

test('DENY by namespace beats everything else', async () => {
  await apply(
    'deny-plain',
    `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-plain, namespace: ambient-demo }
spec:
  selector: { matchLabels: { app: n1-p1 } }
  action: DENY
  rules:
  - from: [ { source: { namespaces: [ plain ] } } ]
`,
  );
  await until('policy known on n1', async () => (await dump('n1')).policies.find((p) => p.name === 'deny-plain'));
  assert.equal(await reaches('n2-p2', 'n1-p1'), false, 'namespace plain (mesh identity) is denied');
  assert.equal(await reaches('n2-p1', 'n1-p1'), true, 'namespace ambient-demo is not');
});

test('a policy applied while a long connection runs closes it within 1 s', async () => {
  const long = await startInPod(pod('n2-p1'), [
    process.execPath,
    '-e',
    `
    const s = require('net').connect(8081, '${pod('n1-p1').ip}', () => console.log('listening'));
    s.on('data', () => {});
    const t = setInterval(() => s.write('x'), 20);
    s.on('error', () => {});
    s.on('close', () => { clearInterval(t); console.log('closed ' + Date.now()); setTimeout(() => process.exit(0), 10); });
  `,
  ]);
  procs.push(long);
  let closedAt = 0;
  long.stdout!.on('data', (c: Buffer) => {
    const m = /closed (\d+)/.exec(c.toString());
    if (m) closedAt = Number(m[1]);
  });
  await until('tunnel open', async () => (await dump('n1')).connections.find((c) => c.state === 'open' && c.dst === `${pod('n1-p1').ip}:8081`));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(closedAt, 0, 'still open before the policy');
  const t0 = Date.now();
  await apply(
    'deny-all-to-n1-p1',
    `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-all-to-n1-p1, namespace: ambient-demo }
spec:
  selector: { matchLabels: { app: n1-p1 } }
  action: DENY
  rules: [ {} ]
`,
  );
  await until('the long connection closed', async () => closedAt > 0, 5000);
  const ms = closedAt - t0;
  assert.ok(ms <= 1000, `closed ${ms} ms after the policy was applied`);
  const d = await dump('n1');
  assert.ok((d.counters.policy_revoked ?? 0) >= 1);
  assert.ok(d.connections.some((c) => c.dst === `${pod('n1-p1').ip}:8081` && /denied by policy change/.test(c.reason ?? '')));
  assert.equal(await reaches('n2-p1', 'n1-p1'), false, 'new connections are denied too');
});

test('a pod relabelled to none leaves the mesh while running', async () => {
  await setEnrollment('n1-p1', false);
  await until('n1-p1 left the mesh', async () => (await dump('n1')).workloads.find((w) => w.name === 'n1-p1' && w.state === 'not-enrolled'));
  const before1 = (await dump('n1')).connections.length;
  // not captured any more, either way; the deny policies above no longer apply to it
  assert.equal(await reaches('n1-p1', 'n2-p2'), true);
  assert.equal(await reaches('n1-p2', 'n1-p1'), true);
  assert.equal((await dump('n1')).connections.length, before1, 'the agent on n1 carried none of it');
});
