import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { parseWorkloads, isEnrolled, WorkloadFileSource, type WorkloadSnapshot } from '../../../src/discovery/workloads.js';
import { AmbientError } from '../../../src/util/errors.js';

const NS = [{ name: 'ambient-demo', labels: { 'istio.io/dataplane-mode': 'ambient' } }, { name: 'plain' }];
const pod = (name: string, ns: string, ip: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  name,
  namespace: ns,
  serviceAccount: `sa-${name}`,
  node: 'n1',
  ip,
  netns: `/run/netns/${name}`,
  cgroup: `/cg/${name}`,
  ...extra,
});

test('enrollment follows the namespace label, and a pod label wins (ambient or none)', () => {
  const s = parseWorkloads({
    namespaces: NS,
    pods: [
      pod('a', 'ambient-demo', '10.0.0.1'),
      pod('b', 'plain', '10.0.0.2'),
      pod('c', 'plain', '10.0.0.3', { labels: { 'istio.io/dataplane-mode': 'ambient' } }),
      pod('d', 'ambient-demo', '10.0.0.4', { labels: { 'istio.io/dataplane-mode': 'none' } }),
    ],
  });
  assert.deepEqual(s.errors, []);
  const enrolled = [...s.pods.values()].filter((p) => isEnrolled(p, s.namespaces)).map((p) => p.name);
  assert.deepEqual(enrolled, ['a', 'c']);
});

test('a malformed entry is named, the others are served, and its last good version is kept', () => {
  const good = parseWorkloads({ namespaces: NS, pods: [pod('a', 'ambient-demo', '10.0.0.1'), pod('b', 'plain', '10.0.0.2')] });
  const next = parseWorkloads(
    {
      namespaces: NS,
      pods: [
        pod('a', 'ambient-demo', '10.0.0.999'),
        pod('b', 'plain', '10.0.0.2', { labels: { x: 'y' } }),
        { namespace: 'plain' },
        pod('e', 'plain', '10.0.0.5', { colour: 'red' }),
      ],
    },
    { previous: good },
  );
  assert.equal(next.errors.length, 3);
  assert.match(next.errors[0]!.entry, /^pods\[0\] \(ambient-demo\/a\)$/);
  assert.match(next.errors[0]!.message, /^ip: "10\.0\.0\.999" is not an IP address$/);
  assert.equal(next.errors[1]!.entry, 'pods[2]');
  assert.match(next.errors[1]!.message, /^name: must be a non-empty string, got undefined$/);
  assert.match(next.errors[2]!.message, /^colour: unknown field/);
  // a keeps its previous good version; b is updated; e (never good) is absent
  assert.equal(next.pods.get('ambient-demo/a')?.ip, '10.0.0.1');
  assert.deepEqual(next.pods.get('plain/b')?.labels, { x: 'y' });
  assert.equal(next.pods.has('plain/e'), false);
});

test('duplicate pod names are rejected per entry; two pods with one IP are both kept (the agent isolates them)', () => {
  const s = parseWorkloads({ pods: [pod('a', 'plain', '10.0.0.1'), pod('b', 'plain', '10.0.0.1'), pod('a', 'plain', '10.0.0.3')] });
  assert.deepEqual([...s.pods.keys()].sort(), ['plain/a', 'plain/b']);
  assert.equal(s.errors.length, 1);
  assert.match(s.errors[0]!.message, /duplicate pod "plain\/a"/);
});

test('relative netns/cgroup paths resolve against /run/netns and the cgroup root', () => {
  const s = parseWorkloads(
    { pods: [{ name: 'a', namespace: 'x', ip: '10.0.0.1', netns: 'pod-a', cgroup: 'kubepods/pod-a' }] },
    { cgroupRoot: '/sys/fs/cgroup' },
  );
  const p = s.pods.get('x/a')!;
  assert.equal(p.netns, '/run/netns/pod-a');
  assert.equal(p.cgroup, '/sys/fs/cgroup/kubepods/pod-a');
  assert.equal(p.serviceAccount, 'default');
});

test('a whole-file error keeps the last good state; a fixed file applies again', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-wl-'));
  try {
    const file = path.join(dir, 'workloads.yaml');
    fs.writeFileSync(file, YAML.stringify({ namespaces: NS, pods: [pod('a', 'ambient-demo', '10.0.0.1')] }));
    const src = new WorkloadFileSource(file, null);
    const errors: AmbientError[] = [];
    src.on('invalid', (e: AmbientError) => errors.push(e));
    let snap: WorkloadSnapshot = src.reload();
    assert.equal(snap.pods.size, 1);
    fs.writeFileSync(file, 'pods: [ {name: a, ');
    snap = src.reload();
    assert.equal(snap.pods.size, 1, 'last good state kept');
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.code, 'WORKLOADS_INVALID');
    assert.match(errors[0]!.message, /not valid YAML/);
    fs.writeFileSync(file, JSON.stringify({ pods: 'nope' }));
    src.reload();
    assert.match(errors[1]!.message, /"pods" must be a list/);
    fs.rmSync(file);
    src.reload();
    assert.equal(errors[2]!.code, 'WORKLOADS_UNREADABLE');
    fs.writeFileSync(file, YAML.stringify({ namespaces: NS, pods: [pod('a', 'ambient-demo', '10.0.0.1'), pod('b', 'plain', '10.0.0.2')] }));
    assert.equal(src.reload().pods.size, 2);
    assert.equal(src.lastError, null);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('Kubernetes-shaped objects in a YAML stream and a directory of files: pods, services with endpoints from the selector, policies', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-wl-'));
  try {
    fs.writeFileSync(
      path.join(dir, '10-pods.yaml'),
      `---
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  uid: 7d1c1e6e-0000-4000-8000-000000000001
  labels: { app: web }
  annotations: { ambientd.io/netns: /run/netns/web-1, ambientd.io/cgroup: pods/web-1 }
spec: { serviceAccountName: web, nodeName: n1 }
status: { podIP: 10.244.1.2, podIPs: [ { ip: 10.244.1.2 } ], conditions: [ { type: Ready, status: "True" } ] }
---
apiVersion: v1
kind: Pod
metadata: { name: web-2, namespace: shop, labels: { app: web } }
spec: { serviceAccountName: web, nodeName: n2 }
status: { podIP: 10.244.2.2, conditions: [ { type: Ready, status: "False" } ] }
`,
    );
    fs.writeFileSync(
      path.join(dir, '20-svc.json'),
      JSON.stringify({
        kind: 'List',
        items: [
          {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'web', namespace: 'shop' },
            spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
          },
          {
            apiVersion: 'security.istio.io/v1',
            kind: 'AuthorizationPolicy',
            metadata: { name: 'allow-web', namespace: 'shop' },
            spec: { action: 'ALLOW', rules: [{ from: [{ source: { namespaces: ['shop'] } }] }] },
          },
          { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x', namespace: 'shop' } },
          { apiVersion: 'v1', kind: 'Service', metadata: { name: 'broken', namespace: 'shop' }, spec: { clusterIP: '10.96.0.300', ports: [{ port: 80 }] } },
        ],
      }),
    );
    const src = new WorkloadFileSource(dir, '/sys/fs/cgroup');
    const s = src.reload();
    assert.equal(src.lastError, null);
    const p = s.pods.get('shop/web-1')!;
    assert.equal(p.serviceAccount, 'web');
    assert.equal(p.node, 'n1');
    assert.equal(p.netns, '/run/netns/web-1');
    assert.equal(p.cgroup, '/sys/fs/cgroup/pods/web-1');
    assert.equal(p.uid, '7d1c1e6e-0000-4000-8000-000000000001');
    assert.ok(isEnrolled(p, s.namespaces));
    const svc = s.services.get('shop/web')!;
    assert.deepEqual(svc.vips, ['10.96.0.10']);
    assert.equal(svc.hostname, 'web.shop.svc.cluster.local');
    assert.deepEqual(
      svc.endpoints.map((e) => [e.ip, e.ready]),
      [
        ['10.244.1.2', true],
        ['10.244.2.2', false],
      ],
    );
    assert.equal(s.policies.get('shop/allow-web')!.spec.action, 'ALLOW');
    assert.deepEqual(
      s.errors.map((e) => e.entry),
      ['ConfigMap shop/x', 'Service shop/broken'],
    );
    assert.match(s.errors[0]!.message, /kind "ConfigMap" is not supported/);
    assert.match(s.errors[1]!.message, /^spec\.clusterIP: "10\.96\.0\.300" is not an IP address$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
