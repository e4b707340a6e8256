/** The mapper on recorded API objects (test/fixtures/k8s); the cases where the two sources used to differ are in parity.test.ts. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mapAuthorizationPolicy, mapEndpointSlice, mapPod, mapService } from '../../../src/discovery/kubernetes.js';
import { clone, fixture } from './fake-k8s-api.js';

test('mapping details: dual-stack pods, serviceAccount default, named targetPorts, slice conditions, targetRef folding', () => {
  const pod = clone(fixture('pods')[2]!); // db-0
  delete pod.spec.serviceAccountName;
  delete pod.spec.serviceAccount;
  const m = mapPod(pod);
  assert.ok('pod' in m);
  assert.equal(m.pod.serviceAccount, 'default');
  assert.deepEqual(m.pod.ips, ['10.244.2.20', 'fd00:10:244:2::14']);
  assert.deepEqual(mapPod(fixture('pods')[5]), { skip: 'hostNetwork' });
  assert.deepEqual(mapPod(fixture('pods')[6]), { skip: 'terminated' });
  assert.deepEqual(mapPod(fixture('pods')[7]), { skip: 'noIP' });
  const nonode = clone(fixture('pods')[0]!);
  delete nonode.spec.nodeName;
  assert.throws(() => mapPod(nonode), /^FieldError: spec\.nodeName: must be a non-empty string, got undefined$/);

  const svc = clone(fixture('services')[1]!);
  svc.spec.ports.push({ port: 81 }, { port: 82, targetPort: 8082 });
  svc.spec.type = 'ExternalName';
  const ms = mapService(svc, { clusterDomain: 'example.org' });
  assert.equal(ms.hostname, 'web.ambient-demo.svc.example.org');
  assert.deepEqual(ms.vips, [], 'ExternalName has no VIP');
  assert.deepEqual(ms.ports.slice(1), [
    { port: 81, targetPort: 81, protocol: 'TCP' },
    { port: 82, targetPort: 8082, protocol: 'TCP' },
  ]);
  // targetPort "8082" (a string of digits) is neither a number nor a port name: the API server rejects it (was read as 8082)
  svc.spec.ports[2].targetPort = '8082';
  assert.throws(() => mapService(svc), /^FieldError: spec\.ports\[2\]\.targetPort: "8082" is a string of digits/);

  const sl = clone(fixture('endpointslices')[0]!);
  delete sl.endpoints[0].conditions.ready;
  sl.endpoints.push({ addresses: ['172.18.0.9'], conditions: { ready: false, serving: true, terminating: true } });
  const info = mapEndpointSlice(sl);
  assert.deepEqual(
    info.endpoints.map((e) => [e.ip, e.ready]),
    [
      ['172.18.0.2', true],
      ['172.18.0.9', false],
    ],
    'nil ready means ready',
  );
  assert.equal(info.service, 'kubernetes');
  assert.deepEqual(mapEndpointSlice({ ...sl, addressType: 'FQDN', endpoints: [{ addresses: ['db.example.org'] }] }).endpoints, []);

  const pol = clone(fixture('authorizationpolicies')[0]!);
  delete pol.spec.selector;
  pol.spec.targetRef = { kind: 'Service', group: '', name: 'web' };
  assert.deepEqual(mapAuthorizationPolicy(pol).spec.targetRefs, [{ kind: 'Service', group: '', name: 'web' }]);
  const empty = clone(pol);
  delete empty.spec;
  assert.deepEqual(mapAuthorizationPolicy(empty).spec, {}, 'no spec = allow nothing, kept as the empty spec');
});
