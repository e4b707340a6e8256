/**
 * The two workload sources map Kubernetes objects with one mapper: the same
 * objects give the same model whether they come from a workload file or from
 * the API server. One test per case where the sources used to disagree, each
 * run against BOTH: the file source on a temp file, the Kubernetes source on
 * the fake API server (fake-k8s-api.ts) listing the same objects.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KubernetesSource, WATCHED_RESOURCES } from '../../../src/discovery/kubernetes.js';
import { WorkloadFileSource } from '../../../src/discovery/workloads.js';
import type { MeshSnapshot } from '../../../src/discovery/model.js';
import { Logger } from '../../../src/util/log.js';
import { FakeApi, kubeConfigFor, type Obj } from './fake-k8s-api.js';

/** What the file source makes of the objects (a JSON array in a temp file). */
function fromFile(objects: Obj[]): MeshSnapshot {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-parity-'));
  try {
    const file = path.join(dir, 'objects.json');
    fs.writeFileSync(file, JSON.stringify(objects));
    const src = new WorkloadFileSource(file, null);
    const s = src.reload();
    assert.equal(src.lastError, null);
    return s;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** What the Kubernetes source makes of the same objects, listed by an API server (bare: without apiVersion/kind, as it lists built-in kinds). */
async function fromApi(objects: Obj[], opts: { bare?: boolean } = {}): Promise<MeshSnapshot> {
  const api = new FakeApi();
  for (const o of objects) {
    const { apiVersion: _a, kind: _k, ...bare } = o;
    api.seed(WATCHED_RESOURCES.find((r) => r.kind === o.kind)!.name, [opts.bare ? bare : o]);
  }
  await api.listen();
  const src = new KubernetesSource({
    kubeConfig: kubeConfigFor(api),
    nodeName: 'node-a',
    resolveLocalPod: () => null,
    log: new Logger('test', 'error', () => {}),
  });
  try {
    await src.start();
    return src.current;
  } finally {
    src.stop();
    await api.close();
  }
}

/** The model both sources agree on: the file's endpoints come from selectors, the API's from EndpointSlices, so they are left out. */
function model(s: MeshSnapshot): Obj {
  const sorted = <T>(m: Map<string, T>): Array<[string, T]> => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
  return {
    namespaces: sorted(s.namespaces),
    pods: sorted(s.pods),
    services: sorted(s.services).map(([k, v]) => [k, { ...v, endpoints: [] }]),
    policies: sorted(s.policies),
    errors: s.errors.map((e) => `${e.entry}: ${e.message}`).sort(),
  };
}

/** Both sources, and the assertion that they produced the same model. */
async function both(objects: Obj[]): Promise<Obj> {
  const file = model(fromFile(objects));
  const api = model(await fromApi(objects));
  assert.deepEqual(api, file, 'the file source and the Kubernetes source give the same model');
  return file;
}

const NS = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } };
const pod = (name: string, ip: string, status: Obj = {}, spec: Obj = {}): Obj => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', uid: `00000000-0000-4000-8000-${String(ip.split('.').at(-1)).padStart(12, '0')}`, labels: { app: 'web' } },
  spec: { serviceAccountName: 'web', nodeName: 'node-b', ...spec },
  status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], ...status },
});
const service = (name: string, ports: Obj[], apiVersion = 'v1'): Obj => ({
  apiVersion,
  kind: 'Service',
  metadata: { name, namespace: 'shop' },
  spec: { clusterIP: `10.96.0.${ports.length + name.length}`, selector: { app: 'web' }, ports },
});
const policy = (name: string, spec: Obj, apiVersion = 'security.istio.io/v1'): Obj => ({
  apiVersion,
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'shop' },
  spec,
});
const podOf = (m: Obj, key: string): Obj | undefined => (m.pods as Array<[string, Obj]>).find(([k]) => k === key)?.[1];

test('row 1: a pod without a Ready condition is not ready (Ready=True only); both sources', async () => {
  const m = await both([
    NS,
    pod('no-condition', '10.244.2.1'),
    pod('ready-false', '10.244.2.2', { conditions: [{ type: 'Ready', status: 'False' }] }),
    pod('ready-unknown', '10.244.2.3', { conditions: [{ type: 'Ready', status: 'Unknown' }] }),
    pod('ready-true', '10.244.2.4', {
      conditions: [
        { type: 'PodScheduled', status: 'True' },
        { type: 'Ready', status: 'True' },
      ],
    }),
  ]);
  assert.deepEqual(
    (m.pods as Array<[string, Obj]>).map(([k, p]) => [k, p.ready]),
    [
      ['shop/no-condition', false],
      ['shop/ready-false', false],
      ['shop/ready-true', true],
      ['shop/ready-unknown', false],
    ],
  );
  assert.deepEqual(m.errors, []);
});

test('row 2: hostNetwork pods and pods in phase Succeeded/Failed are not workloads (skipped, not errors); both sources', async () => {
  const ready = { conditions: [{ type: 'Ready', status: 'True' }] };
  const m = await both([
    NS,
    pod('web', '10.244.2.1', ready),
    pod('kube-proxy', '172.18.0.3', ready, { hostNetwork: true }),
    pod('job-done', '10.244.2.2', { phase: 'Succeeded' }),
    pod('job-failed', '10.244.2.3', { phase: 'Failed' }),
    pod('pending', '10.244.2.4', { phase: 'Pending', podIP: undefined, podIPs: undefined }),
  ]);
  assert.deepEqual(
    (m.pods as Array<[string, Obj]>).map(([k]) => k),
    ['shop/web'],
  );
  assert.deepEqual(m.errors, []);
});

test('row 3: targetPort "8080" (a string of digits) is rejected as Kubernetes does; a number and a port name are kept; both sources', async () => {
  const m = await both([
    NS,
    service('digits', [{ name: 'http', port: 80, targetPort: '8080' }]),
    service('number', [{ name: 'http', port: 80, targetPort: 8080 }]),
    service('named', [{ name: 'http', port: 80, targetPort: 'http-alt' }]),
  ]);
  assert.deepEqual(
    (m.services as Array<[string, Obj]>).map(([k, s]) => [k, s.ports[0].targetPort]),
    [
      ['shop/named', 'http-alt'],
      ['shop/number', 8080],
    ],
  );
  assert.deepEqual(m.errors, [
    'Service shop/digits: spec.ports[0].targetPort: "8080" is a string of digits: write the port as a number (8080), or a port name (which has at least one letter)',
  ]);
});

test("row 4: an AuthorizationPolicy's spec.targetRef is folded into spec.targetRefs; both sources", async () => {
  const ref = { kind: 'Service', group: '', name: 'web' };
  const m = await both([
    NS,
    policy('single', { targetRef: ref, action: 'DENY', rules: [{}] }),
    policy('both', { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }], targetRef: ref }),
  ]);
  const pols = Object.fromEntries(m.policies as Array<[string, Obj]>);
  assert.deepEqual(pols['shop/single'].spec, { targetRefs: [ref], action: 'DENY', rules: [{}] });
  assert.deepEqual(pols['shop/both'].spec.targetRefs, [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }, ref]);
  assert.equal('targetRef' in pols['shop/both'].spec, false);
});

test('row 5: apiVersion is checked for every kind (v1; discovery.k8s.io/v1; security.istio.io/v1 or v1beta1); both sources', async () => {
  const m = await both([
    { ...NS, apiVersion: 'v1beta1' },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'plain' } },
    { ...pod('web', '10.244.2.1'), apiVersion: 'apps/v1' },
    service('svc', [{ port: 80 }], 'networking.k8s.io/v1'),
    policy('beta', { action: 'ALLOW' }, 'security.istio.io/v1beta1'),
    policy('alpha', { action: 'ALLOW' }, 'security.istio.io/v1alpha1'),
  ]);
  assert.deepEqual(
    (m.namespaces as Array<[string, Obj]>).map(([k]) => k),
    ['plain'],
  );
  assert.deepEqual(m.pods, []);
  assert.deepEqual(m.services, []);
  assert.deepEqual(
    (m.policies as Array<[string, Obj]>).map(([k]) => k),
    ['shop/beta'],
  );
  assert.deepEqual(m.errors, [
    'AuthorizationPolicy shop/alpha: apiVersion: must be one of security.istio.io/v1, security.istio.io/v1beta1, got "security.istio.io/v1alpha1"',
    'Namespace shop: apiVersion: must be one of v1, got "v1beta1"',
    'Pod shop/web: apiVersion: must be one of v1, got "apps/v1"',
    'Service shop/svc: apiVersion: must be one of v1, got "networking.k8s.io/v1"',
  ]);
});

test('row 6: namespace names are DNS-1123 labels (no dots), for Namespaces and for the objects in them; both sources', async () => {
  const dotted = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'team.shop' } };
  const m = await both([NS, dotted, { ...pod('web', '10.244.2.1'), metadata: { name: 'web', namespace: 'team.shop' } }]);
  assert.deepEqual(
    (m.namespaces as Array<[string, Obj]>).map(([k]) => k),
    ['shop'],
  );
  assert.equal(podOf(m, 'team.shop/web'), undefined);
  assert.equal(m.errors.length, 2);
  assert.match(m.errors[0], /^Namespace team\.shop: metadata\.name: "team\.shop" is not a DNS-1123 label/);
  assert.match(m.errors[1], /^Pod team\.shop\/web: metadata\.namespace: "team\.shop" is not a DNS-1123 label/);
});

test('the API server leaves apiVersion/kind out of list items of built-in kinds: the Kubernetes source fills them in from what it listed', async () => {
  const objects = [NS, pod('web', '10.244.2.1', { conditions: [{ type: 'Ready', status: 'True' }] })];
  assert.deepEqual(model(await fromApi(objects, { bare: true })), model(fromFile(objects)));
});
