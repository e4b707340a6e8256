// Istio-standard metrics and per-pod readiness on the sandbox: real HBONE
// traffic n1-p1 -> n2-p1 is counted once by each agent with the exact Istio
// labels and byte counts; a policy denial shows response_flags DENY; the
// exposition passes `promtool check metrics`; a pod whose netns vanished is
// reported failed while the node stays ready.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { sandboxUp, sandboxApply, setEnrollment, type SandboxState } from '../../tools/sandbox/index.js';
import { nettool, nettoolServer } from '../../tools/sandbox/podproc.js';
import { sandboxView, until, tearDown } from '../helpers/sandbox.js';
import { httpInNetns } from '../../src/util/netns-http.js';
import type { ConfigDump } from '../../src/agent/index.js';

let st: SandboxState;
const procs: ChildProcess[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-metrics-'));

type Dump = Pick<ConfigDump, 'policies' | 'workloads' | 'readiness'>;
const { pod, node, dump } = sandboxView<Dump>(() => st);
const id = (p: string): string => `spiffe://cluster.local/ns/${pod(p).namespace}/sa/${pod(p).serviceAccount}`;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, line);
    const labels: Record<string, string> = {};
    if (m[2]) for (const lm of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]!] = lm[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(n: string, p = '/metrics'): Promise<{ text: string; samples: Sample[] }> {
  const r = await httpInNetns(node(n).netnsPath, '127.0.0.1', 15020, p);
  assert.equal(r.status, 200, r.body.slice(0, 200));
  return { text: r.body, samples: parse(r.body) };
}

const series = (s: Sample[], name: string, match: Record<string, string>): Sample[] =>
  s.filter((x) => x.name === name && Object.entries(match).every(([k, v]) => x.labels[k] === v));

before(async () => {
  // n1-p3 (ambient) is the pod whose netns the readiness test removes
  st = await sandboxUp({ nodes: 2, pods: 3, agents: true });
  for (const p of st.pods.filter((x) => x.name.endsWith('-p1'))) {
    procs.push(await nettoolServer(p, 'serve', 8080, '--greet'));
    procs.push(await nettoolServer(p, 'serve', 8081));
  }
});

after(() => tearDown(procs, tmp));

const side = (p: string): Record<string, string> => ({
  workload: p,
  canonical_service: p,
  canonical_revision: 'latest',
  workload_namespace: pod(p).namespace,
  principal: id(p),
  app: p,
  version: 'unknown',
  cluster: 'Kubernetes',
});
function flowLabels(reporter: 'source' | 'destination'): Record<string, string> {
  const l: Record<string, string> = { reporter };
  for (const [k, v] of Object.entries(side('n1-p1'))) l[`source_${k}`] = v;
  for (const [k, v] of Object.entries(side('n2-p1'))) l[`destination_${k}`] = v;
  return {
    ...l,
    destination_service: 'unknown',
    destination_service_name: 'unknown',
    destination_service_namespace: 'unknown',
    request_protocol: 'tcp',
    response_flags: '-',
    connection_security_policy: 'mutual_tls',
  };
}

test('HBONE n1-p1 -> n2-p1: counted once by each agent, exact Istio labels, exact app bytes', async () => {
  const N = 123_457;
  const r = await nettool(pod('n1-p1'), 'echo', pod('n2-p1').ip, 8081, N);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  for (const [n, reporter] of [
    ['n1', 'source'],
    ['n2', 'destination'],
  ] as const) {
    const want = flowLabels(reporter);
    const s = await until(`${n} counted the close`, async () => {
      const x = (await scrape(n)).samples;
      return series(x, 'istio_tcp_connections_closed_total', { reporter, source_workload: 'n1-p1', destination_workload: 'n2-p1' }).length ? x : undefined;
    });
    for (const name of [
      'istio_tcp_connections_opened_total',
      'istio_tcp_connections_closed_total',
      'istio_tcp_sent_bytes_total',
      'istio_tcp_received_bytes_total',
    ]) {
      const got = series(s, name, { source_workload: 'n1-p1', destination_workload: 'n2-p1' });
      assert.equal(got.length, 1, `${n} ${name}: one series (${JSON.stringify(got.map((g) => g.labels))})`);
      assert.deepEqual(got[0]!.labels, want, `${n} ${name} labels`);
    }
    const v = (name: string): number => series(s, name, want)[0]!.value;
    assert.equal(v('istio_tcp_connections_opened_total'), 1, `${n} opened`);
    assert.equal(v('istio_tcp_connections_closed_total'), 1, `${n} closed`);
    assert.equal(v('istio_tcp_sent_bytes_total'), N, `${n} sent bytes`);
    assert.equal(v('istio_tcp_received_bytes_total'), N, `${n} received bytes`);
    assert.equal(series(s, 'istio_tcp_connections_failed_total', { source_workload: 'n1-p1', destination_workload: 'n2-p1' }).length, 0);
    // the other reporter never shows up on this agent for this flow
    assert.equal(
      series(s, 'istio_tcp_connections_opened_total', {
        reporter: reporter === 'source' ? 'destination' : 'source',
        source_workload: 'n1-p1',
        destination_workload: 'n2-p1',
      }).length,
      0,
    );
    // agent health metrics
    assert.ok(series(s, 'ambientd_enrolled_pods', {})[0]!.value >= 1);
    assert.ok(
      series(s, 'ambientd_certificate_expiry_timestamp_seconds', { identity: id(reporter === 'source' ? 'n1-p1' : 'n2-p1') })[0]!.value > Date.now() / 1000,
    );
    assert.ok(
      series(s, 'ambientd_bpf_redirect_total', {
        pod: reporter === 'source' ? 'n1-p1' : 'n2-p1',
        counter: reporter === 'source' ? 'captured_out' : 'hbone_in',
      })[0]!.value >= 1,
    );
    assert.ok(series(s, 'process_resident_memory_bytes', {}).length === 1, 'default process metrics');
  }
  const alt = await scrape('n1', '/stats/prometheus');
  assert.match(alt.text, /# TYPE istio_tcp_connections_opened_total counter/);
});

test('a denied connection: response_flags DENY on both reporters, failed and denied counters', async () => {
  const f = path.join(tmp, 'deny.yaml');
  fs.writeFileSync(
    f,
    `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-8080, namespace: ambient-demo }
spec:
  selector: { matchLabels: { app: n2-p1 } }
  action: DENY
  rules: [{ to: [{ operation: { ports: ["8080"] } }] }]
`,
  );
  assert.deepEqual((await sandboxApply(f)).errors, []);
  await until('policy on n2', async () => (await dump('n2')).policies.some((p) => p.name === 'deny-8080'));
  const r = await nettool(pod('n1-p1'), 'send', pod('n2-p1').ip, 8080, 'ping');
  assert.ok(!r.stdout.startsWith('hello'), 'denied');
  const n1 = await until('n1 counted the denial', async () => {
    const s = (await scrape('n1')).samples;
    return series(s, 'istio_tcp_connections_failed_total', { reporter: 'source', response_flags: 'DENY', destination_workload: 'n2-p1' }).length
      ? s
      : undefined;
  });
  const f1 = series(n1, 'istio_tcp_connections_failed_total', { reporter: 'source', response_flags: 'DENY', destination_workload: 'n2-p1' })[0]!;
  assert.equal(f1.value, 1);
  assert.equal(f1.labels.source_principal, id('n1-p1'));
  assert.equal(series(n1, 'ambientd_denied_connections_total', { reason: 'denied_by_peer' })[0]?.value, 1);
  const n2 = await until('n2 counted the denial', async () => {
    const s = (await scrape('n2')).samples;
    return series(s, 'istio_tcp_connections_failed_total', { reporter: 'destination', response_flags: 'DENY', source_workload: 'n1-p1' }).length
      ? s
      : undefined;
  });
  const f2 = series(n2, 'istio_tcp_connections_failed_total', { reporter: 'destination', response_flags: 'DENY', source_workload: 'n1-p1' })[0]!;
  assert.equal(f2.value, 1);
  assert.equal(f2.labels.source_principal, id('n1-p1'));
  assert.equal(f2.labels.destination_principal, id('n2-p1'));
  assert.equal(f2.labels.connection_security_policy, 'mutual_tls');
  assert.equal(series(n2, 'ambientd_denied_connections_total', { reason: 'policy_hbone' })[0]?.value, 1);
  assert.ok((series(n2, 'ambientd_agent_events_total', { reason: 'policy_denied' })[0]?.value ?? 0) >= 1);
  fs.rmSync(path.join(st.meshDir, path.basename(f)), { force: true });
});

test('promtool check metrics passes on both agents; unknown paths 404, bad methods 405', async () => {
  for (const n of ['n1', 'n2']) {
    const { text } = await scrape(n);
    const p = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(p.error, undefined, 'promtool is installed (apt package prometheus)');
    assert.equal(p.status, 0, `promtool on ${n}: ${p.stdout}${p.stderr}`);
  }
  assert.equal((await httpInNetns(node('n1').netnsPath, '127.0.0.1', 15020, '/nope')).status, 404);
  assert.equal((await httpInNetns(node('n1').netnsPath, '127.0.0.1', 15020, '/metrics', 'POST')).status, 405);
  assert.equal((await httpInNetns(node('n1').netnsPath, '127.0.0.1', 15021, '/nope')).status, 404);
  assert.equal((await httpInNetns(node('n1').netnsPath, '127.0.0.1', 15021, '/healthz/ready', 'POST')).status, 405);
  // reachable on the node address too (0.0.0.0 like ztunnel)
  assert.equal((await httpInNetns(node('n2').netnsPath, node('n1').ip, 15021, '/healthz/ready')).status, 200);
});

test('readiness: 200 with all pods fine; a pod whose netns vanished is isolated (fails closed) and reported, the node stays ready', async () => {
  const ready = (q = ''): ReturnType<typeof httpInNetns> => httpInNetns(node('n1').netnsPath, '127.0.0.1', 15021, `/healthz/ready${q}`);
  const ok = await ready();
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'ready\n');
  assert.match((await ready('?verbose')).body, /pod ambient-demo\/n1-p3: enrolled/);

  const victim = pod('n1-p3');
  const del = spawnSync('ip', ['netns', 'del', victim.netns], { encoding: 'utf8' });
  assert.equal(del.status, 0, del.stderr);
  await setEnrollment('n1-p3', false);
  await until('n1-p3 unenrolled', async () => (await dump('n1')).workloads.find((w) => w.name === 'n1-p3')?.state === 'not-enrolled');
  await setEnrollment('n1-p3', true);
  await until('n1-p3 isolated', async () => (await dump('n1')).workloads.find((w) => w.name === 'n1-p3')?.state === 'isolated');

  const r = await ready();
  assert.equal(r.status, 200, `node stays ready: ${r.body}`);
  assert.equal(r.body, 'ready\n');
  const v = await ready('?verbose');
  assert.match(v.body, /pod ambient-demo\/n1-p3: isolated \(NETNS_UNAVAILABLE/);
  assert.match(v.body, /pod ambient-demo\/n1-p1: enrolled/);
  const j = JSON.parse((await ready('?format=json')).body) as { ready: boolean; pods: Array<{ pod: string; state: string; error?: { code: string } }> };
  assert.equal(j.ready, true);
  const p3 = j.pods.find((p) => p.pod === 'ambient-demo/n1-p3');
  assert.equal(p3?.state, 'isolated');
  assert.equal(p3?.error?.code, 'NETNS_UNAVAILABLE', 'the error is reported');
  const d = await dump('n1');
  assert.equal(d.readiness.ready, true);
  assert.equal(d.readiness.pods.find((p) => p.pod === 'ambient-demo/n1-p3')?.state, 'isolated');
  const s = (await scrape('n1')).samples;
  assert.equal(series(s, 'ambientd_pod_state', { pod: 'n1-p3', state: 'isolated' })[0]?.value, 1);
  assert.ok((series(s, 'ambientd_pod_enroll_failures_total', { reason: 'NETNS_UNAVAILABLE' })[0]?.value ?? 0) >= 1, 'counted by error code');
  assert.equal(series(s, 'ambientd_pod_state', { pod: 'n1-p1', state: 'enrolled' })[0]?.value, 1);
  // the other pods of the node still work
  const e = await nettool(pod('n1-p1'), 'send', pod('n2-p1').ip, 8081, 'still-here');
  assert.equal(e.code, 0, e.stderr);
});
