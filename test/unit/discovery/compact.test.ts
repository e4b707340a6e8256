/**
 * The compact form keeps its meaning now that it goes through the Kubernetes
 * mapper: compact pods are running and Ready unless they say `ready: false`,
 * errors name the compact fields.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compactPod, renameField } from '../../../src/discovery/compact.js';
import { mapPod } from '../../../src/discovery/k8s-mapping.js';
import { parseWorkloads, resolveEndpoints } from '../../../src/discovery/workloads.js';

test('a compact pod is a running, scheduled, Ready v1 Pod whose netns/cgroup are annotations', () => {
  assert.deepEqual(
    compactPod({ name: 'a', namespace: 'x', serviceAccount: 'sa', node: 'n1', ip: '10.0.0.1', netns: 'a', cgroup: '/cg/a', labels: { app: 'a' } }),
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'a', namespace: 'x', labels: { app: 'a' }, annotations: { 'ambientd.io/netns': 'a', 'ambientd.io/cgroup': '/cg/a' } },
      spec: { serviceAccountName: 'sa', nodeName: 'n1' },
      status: { phase: 'Running', podIP: '10.0.0.1', podIPs: [{ ip: '10.0.0.1' }], conditions: [{ type: 'Ready', status: 'True' }] },
    },
  );
  const m = mapPod(compactPod({ name: 'a', namespace: 'x', ip: '10.0.0.1', ready: false }), { nodeOptional: true });
  assert.ok('pod' in m);
  assert.deepEqual([m.pod.ready, m.pod.node, m.pod.serviceAccount], [false, null, 'default']);
});

test('compact pods stay ready, so selector Services keep routing; `ready: false` takes a pod out of its endpoints', () => {
  const s = parseWorkloads({
    namespaces: [{ name: 'shop' }],
    pods: [
      { name: 'a', namespace: 'shop', ip: '10.0.0.1', labels: { app: 'web' } },
      { name: 'b', namespace: 'shop', ip: '10.0.0.2', labels: { app: 'web' }, ready: false },
    ],
  });
  s.services.set('shop/web', {
    name: 'web',
    namespace: 'shop',
    hostname: 'web.shop.svc.cluster.local',
    vips: ['10.96.0.1'],
    ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
    selector: { app: 'web' },
    endpoints: [],
  });
  resolveEndpoints(s);
  assert.deepEqual(s.errors, []);
  assert.equal(s.pods.get('shop/a')!.ready, true);
  assert.deepEqual(
    s.services.get('shop/web')!.endpoints.map((e) => [e.ip, e.ready]),
    [
      ['10.0.0.1', true],
      ['10.0.0.2', false],
    ],
  );
});

test('compact errors name the compact fields, not the object fields they became', () => {
  const s = parseWorkloads({
    namespaces: [{ name: 'a.b' }, { name: 'ok', labels: { x: 1 } }],
    pods: [
      { name: 'a', namespace: 'x' },
      { name: 'b', namespace: 'x', ip: 7 },
      { name: 'c', namespace: 'x', ip: '10.0.0.3', serviceAccount: 'Bad_SA' },
      { name: 'd', namespace: 'x', ip: '10.0.0.4', node: 'N1' },
      { name: 'e', namespace: 'x', ip: '10.0.0.5', netns: 5 },
      { name: 'f', namespace: 'x', ip: '10.0.0.6', cgroup: 'relative' },
      { name: 'g', namespace: 'x', ip: '10.0.0.7', ready: 'yes' },
      { name: 'h', namespace: 'x', ip: '10.0.0.8', labels: { app: 1 } },
      'nope',
    ],
  });
  assert.deepEqual(
    s.errors.map((e) => `${e.entry}: ${e.message}`),
    [
      'namespaces[0] (a.b): name: "a.b" is not a DNS-1123 label (lower-case letters, digits and "-", starting and ending with a letter or digit, at most 63 characters)',
      'namespaces[1] (ok): labels.x: must be a string, got 1',
      'pods[0] (x/a): ip: missing',
      'pods[1] (x/b): ip: 7 is not an IP address',
      'pods[2] (x/c): serviceAccount: "Bad_SA" is not a DNS-1123 subdomain (DNS-1123 labels joined by ".", at most 253 characters)',
      'pods[3] (x/d): node: "N1" is not a DNS-1123 subdomain (DNS-1123 labels joined by ".", at most 253 characters)',
      'pods[4] (x/e): netns: must be a string, got 5',
      'pods[5] (x/f): cgroup: must be an absolute path, got "relative"',
      'pods[6] (x/g): ready: must be true or false, got "yes"',
      'pods[7] (x/h): labels.app: must be a string, got 1',
      'pods[8]: (entry): must be an object, got "nope"',
    ],
  );
  assert.equal(renameField('status.podIPs[0].ip'), 'ip');
  assert.equal(renameField('spec.containers'), 'spec.containers');
});
