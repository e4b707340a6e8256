import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MeshIndex, emptySnapshot, type ServiceInfo } from '../../../src/discovery/model.js';

const svc = (endpoints: ServiceInfo['endpoints'], targetPort: number | string = 8080): { s: ServiceInfo; port: ServiceInfo['ports'][number] } => {
  const port = { name: 'http', port: 80, targetPort, protocol: 'TCP' as const };
  return { s: { name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vips: ['10.96.0.10'], ports: [port], endpoints }, port };
};

test('the mesh index finds services by VIP:port (TCP only) and pods by every IP', () => {
  const snap = emptySnapshot();
  const { s } = svc([]);
  s.ports.push({ port: 53, targetPort: 53, protocol: 'UDP' });
  snap.services.set('shop/web', s);
  snap.pods.set('shop/a', {
    name: 'a',
    namespace: 'shop',
    serviceAccount: 'sa',
    node: null,
    ip: '10.0.0.1',
    ips: ['10.0.0.1', 'fd00::1'],
    netns: null,
    cgroup: null,
    labels: {},
  });
  const idx = new MeshIndex(snap);
  assert.equal(idx.serviceByVip.get('10.96.0.10:80')?.service.name, 'web');
  assert.equal(idx.serviceByVip.has('10.96.0.10:53'), false);
  assert.equal(idx.podByIp.get('fd00::1')?.name, 'a');
  assert.deepEqual(
    idx.podsByIdentity.get('spiffe://cluster.local/ns/shop/sa/sa')?.map((p) => p.name),
    ['a'],
  );
});
