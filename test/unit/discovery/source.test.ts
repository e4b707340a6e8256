/**
 * Both workload sources are WorkloadSources: kind, current, lastError,
 * start/stop, status() (what config_dump shows), events; errors are
 * AmbientErrors of the Discovery family.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { kubeConfigAt } from './fake-k8s-api.js';
import { KubernetesApiError, KubernetesSource, mapEndpointSlice, mapService } from '../../../src/discovery/kubernetes.js';
import { WorkloadFileSource } from '../../../src/discovery/workloads.js';
import type { WorkloadSource } from '../../../src/discovery/source.js';
import type { MeshSnapshot } from '../../../src/discovery/model.js';
import { AmbientError } from '../../../src/util/errors.js';
import { Logger } from '../../../src/util/log.js';

const quiet = new Logger('test', 'error', () => {});

function kubeConfig(server = 'http://127.0.0.1:9'): KubeConfig {
  return kubeConfigAt(server, 't');
}

test('the file source is a WorkloadSource: start() resolves with the first snapshot in force, status() shows the file and the last error', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-src-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'w.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      namespaces: [{ name: 'shop' }],
      pods: [
        { name: 'a', namespace: 'shop', ip: '10.0.0.1' },
        { name: 'b', namespace: 'shop' },
      ],
    }),
  );
  const src: WorkloadSource = new WorkloadFileSource(file, null);
  const updates: MeshSnapshot[] = [];
  const invalid: AmbientError[] = [];
  src.on('update', (s) => updates.push(s));
  src.on('invalid', (e) => invalid.push(e));
  assert.equal(src.kind, 'file');
  await src.start();
  t.after(() => src.stop());
  assert.equal(updates.length, 1);
  assert.equal(src.current.pods.size, 1);
  assert.deepEqual(src.status(), { kind: 'file', file, entryErrors: [{ entry: 'pods[1] (shop/b)', message: 'ip: missing' }], lastError: null });

  fs.writeFileSync(file, '{');
  (src as WorkloadFileSource).reload();
  assert.equal(invalid.length, 1);
  assert.equal(src.lastError?.code, 'WORKLOADS_INVALID');
  assert.equal((src.status().lastError as { code: string }).code, 'WORKLOADS_INVALID');
  src.stop();
  fs.writeFileSync(file, JSON.stringify({ pods: [] }));
  (src as WorkloadFileSource).reload();
  assert.equal(updates.length, 1, 'no event after stop()');
});

test('the Kubernetes source is a WorkloadSource: status() shows the reflectors; its errors are AmbientErrors', async () => {
  assert.throws(
    () => new KubernetesSource({ nodeName: '', kubeConfig: kubeConfig() }),
    (e: unknown) => e instanceof AmbientError && e.code === 'K8S_CONFIG' && e.hint.length > 0,
  );
  const src: WorkloadSource = new KubernetesSource({ nodeName: 'node-a', kubeConfig: kubeConfig(), log: quiet });
  assert.equal(src.kind, 'kubernetes');
  assert.equal(src.lastError, null);
  const st = src.status() as { kind: string; node: string; synced: boolean; resources: Record<string, { lists: number; resourceVersion: string | null }> };
  assert.deepEqual([st.kind, st.node, st.synced], ['kubernetes', 'node-a', false]);
  assert.deepEqual(Object.keys(st.resources).sort(), ['authorizationpolicies', 'endpointslices', 'namespaces', 'pods', 'services']);
  assert.equal(st.resources.pods!.resourceVersion, null);
  const started = src.start();
  src.stop();
  await assert.rejects(started, (e: unknown) => e instanceof AmbientError && e.code === 'K8S_API' && /stopped before the initial list/.test(e.message));
});

test('KubernetesApiError is an AmbientError (K8S_API) that keeps its path, status and reason', () => {
  const e = new KubernetesApiError('Pod: list /api/v1/pods: HTTP 403 Forbidden', '/api/v1/pods', 403, 'Forbidden');
  assert.ok(e instanceof AmbientError);
  assert.deepEqual([e.name, e.code, e.path, e.statusCode, e.reason], ['KubernetesApiError', 'K8S_API', '/api/v1/pods', 403, 'Forbidden']);
  assert.match(e.hint, /rbac/i);
});

test('mapper details: EndpointSlice apiVersion; a Service needs ports unless headless or ExternalName', () => {
  const slice = { apiVersion: 'discovery.k8s.io/v1beta1', kind: 'EndpointSlice', metadata: { name: 's', namespace: 'x' }, addressType: 'IPv4', endpoints: [] };
  assert.throws(() => mapEndpointSlice(slice), /^FieldError: apiVersion: must be one of discovery\.k8s\.io\/v1, got "discovery\.k8s\.io\/v1beta1"$/);
  const svc = (spec: Record<string, unknown>) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'x' }, spec });
  assert.throws(() => mapService(svc({ clusterIP: '10.96.0.1' })), /spec\.ports: must list at least one port/);
  assert.deepEqual(mapService(svc({ clusterIP: 'None' })).ports, []);
  assert.deepEqual(mapService(svc({ type: 'ExternalName', externalName: 'db.example.org' })).vips, []);
});
