import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseEndpoint } from '../../../src/proxy/services.js';
import type { ServiceInfo } from '../../../src/discovery/model.js';

const svc = (endpoints: ServiceInfo['endpoints'], targetPort: number | string = 8080): { s: ServiceInfo; port: ServiceInfo['ports'][number] } => {
  const port = { name: 'http', port: 80, targetPort, protocol: 'TCP' as const };
  return { s: { name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vips: ['10.96.0.10'], ports: [port], endpoints }, port };
};

test('round robin over ready endpoints only, with the target port', () => {
  const { s, port } = svc([
    { ip: '10.0.0.1', ready: true },
    { ip: '10.0.0.2', ready: false },
    { ip: '10.0.0.3', ready: true },
  ]);
  const picks = [0, 1, 2, 3].map((n) => chooseEndpoint(s, port, n));
  assert.deepEqual(picks, [
    { ip: '10.0.0.1', port: 8080 },
    { ip: '10.0.0.3', port: 8080 },
    { ip: '10.0.0.1', port: 8080 },
    { ip: '10.0.0.3', port: 8080 },
  ]);
});

test('no ready endpoint: null', () => {
  const { s, port } = svc([{ ip: '10.0.0.1', ready: false }]);
  assert.equal(chooseEndpoint(s, port, 0), null);
  assert.equal(chooseEndpoint(svc([]).s, port, 0), null);
});

test('a named target port resolves per endpoint; endpoints without it are skipped', () => {
  const { s, port } = svc(
    [
      { ip: '10.0.0.1', ready: true },
      { ip: '10.0.0.2', ready: true, ports: [{ name: 'web', port: 9090 }] },
    ],
    'web',
  );
  assert.deepEqual(chooseEndpoint(s, port, 0), { ip: '10.0.0.2', port: 9090 });
  assert.deepEqual(chooseEndpoint(s, port, 1), { ip: '10.0.0.2', port: 9090 });
});
