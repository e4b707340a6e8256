// Services and L4 authorization on the sandbox: a Service VIP spreads over
// endpoints on both nodes; AuthorizationPolicies ALLOW/DENY as Istio does, and
// a policy applied while a connection runs closes it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { sandboxUp, sandboxDown, sandboxApply, setEnrollment, type SandboxState } from '../../src/sandbox/topology.js';
import { nettool, nettoolServer, startInPod } from '../../src/sandbox/podproc.js';
import { getJsonInNetns } from '../../src/util/netns-http.js';
import type { ConnectionRecord } from '../../src/proxy/connections.js';

let st: SandboxState;
const procs: ChildProcess[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-svc-'));

interface Dump {
  connections: ConnectionRecord[];
  services: Array<{ name: string; vips: string[]; endpoints: Array<{ ip: string; ready: boolean }> }>;
  policies: Array<{ name: string; namespace: string }>;
  workloads: Array<{ name: string; state: string }>;
  counters: Record<string, number>;
}
const pod = (n: string): SandboxState['pods'][number] => st.pods.find((x) => x.name === n)!;
const node = (n: string): SandboxState['nodes'][number] => st.nodes.find((x) => x.name === n)!;
const dump = (n: string): Promise<Dump> => getJsonInNetns<Dump>(node(n).netnsPath, '127.0.0.1', 15000, '/config_dump');

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 8000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function apply(name: string, yaml: string): Promise<void> {
  const f = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(f, yaml);
  const r = await sandboxApply(f);
  assert.deepEqual(r.errors, [], `${name} applies cleanly`);
}

before(async () => {
  st = await sandboxUp({ nodes: 2, pods: 2, agents: true });
  for (const p of st.pods) procs.push(await nettoolServer(p, 'serve', 8080, '--greet'));
});

after(async () => {
  for (const p of procs) p.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
  const r = await sandboxDown();
  assert.deepEqual(r.leftovers, []);
});

test('a Service VIP spreads connections over ready endpoints on both nodes, keeping the service name', async () => {
  await apply('svc', `
apiVersion: v1
kind: Service
metadata: { name: echo, namespace: ambient-demo }
spec:
  clusterIP: 10.96.0.10
  selector: { tier: echo }
  ports: [ { name: tcp-echo, port: 80, targetPort: 8080 } ]
`);
  await until('service known on n1', async () => (await dump('n1')).services.find((s) => s.name === 'echo' && s.endpoints.length === 2));
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const r = await nettool(pod('n1-p1'), 'send', '10.96.0.10', 80, `svc-${i}`);
    assert.equal(r.code, 0, r.stderr);
    seen.add(/^hello from ([\d.]+):8080/.exec(r.stdout)![1]!);
  }
  assert.deepEqual([...seen].sort(), [pod('n1-p1').ip, pod('n2-p1').ip].sort(), 'both endpoints answered');
  const recs = (await dump('n1')).connections.filter((c) => c.service === 'ambient-demo/echo');
  assert.equal(recs.length, 6);
  assert.ok(recs.every((c) => c.dst === '10.96.0.10:80'), 'records keep the VIP the client dialled');
  assert.ok(recs.some((c) => c.endpoint === `${pod('n2-p1').ip}:8080` && c.via === 'hbone'), 'the remote endpoint is reached over HBONE');
});
