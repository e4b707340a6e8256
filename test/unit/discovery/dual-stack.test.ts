// Dual-stack and IPv6-only workloads in the control plane (issue 14, part 1):
// canonical addresses of both families, a pod's podIPs (one of each family),
// Services' ipFamilies/clusterIPs, EndpointSlices of both families, endpoint
// choice by the VIP's family, IPv6 ipBlocks/notIpBlocks, the IPv6 kubelet
// probe address, and clear errors for IPv6 in the wrong form. Objects are the
// recorded ones of test/fixtures/k8s, changed where a case needs it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mapEndpointSlice, mapPod, mapService, mergeEndpoints } from '../../../src/discovery/kubernetes.js';
import { MeshIndex, emptySnapshot, podIps } from '../../../src/discovery/model.js';
import { badIpReason, canonicalIp, ipFamily } from '../../../src/util/address.js';
import { formatHostPort, readHostPort } from '../../../src/util/hostport.js';
import { chooseEndpoint } from '../../../src/proxy/services.js';
import { PROBE_SNAT_IPS, socketsToReset, TCP } from '../../../src/capture/plan.js';
import { AmbientError } from '../../../src/util/errors.js';
import { clone, fixture } from './fake-k8s-api.js';
import { allowRule } from '../policy/helpers.js';
import { parsePod, parseWorkloads, resolveEndpoints } from '../../../src/discovery/workloads.js';
import { planSandbox, renderWorkloads } from '../../../tools/sandbox/plan.js';

test('canonical addresses: IPv6 compressed lower case, v4-mapped is IPv4, zones and brackets refused with a reason', () => {
  assert.equal(canonicalIp('FD00:0:0:0:0:0:0:0001'), 'fd00::1');
  assert.equal(canonicalIp('fd00:10:244:2:0:0:0:14'), 'fd00:10:244:2::14');
  assert.equal(canonicalIp('::ffff:10.1.2.3'), '10.1.2.3', 'v4-mapped is IPv4 on the wire');
  assert.equal(canonicalIp('::FFFF:0a01:0203'), '10.1.2.3');
  assert.equal(canonicalIp('10.0.0.1'), '10.0.0.1');
  assert.equal(canonicalIp('fe80::1%eth0'), null);
  assert.equal(ipFamily('fd00::1'), 6);
  assert.equal(ipFamily('10.0.0.1'), 4);
  assert.match(badIpReason('[fd00::1]')!, /brackets/);
  assert.match(badIpReason('[fd00::1]:80')!, /brackets/);
  assert.match(badIpReason('fe80::1%eth0')!, /zone/);
  assert.match(badIpReason('10.0.0.1:80')!, /has a port/);
  assert.equal(badIpReason('fd00::1::2'), 'is not an IP address');
  assert.equal(badIpReason('010.0.0.1'), 'is not an IP address');
  assert.equal(badIpReason('fd00::1'), null);
});

test('ip:port: IPv6 in brackets, read back canonical; the wrong forms get ADDRESS_INVALID saying what is wrong', () => {
  assert.deepEqual(readHostPort('[FD00::0001]:8080', 'target'), { ip: 'fd00::1', port: 8080 });
  assert.deepEqual(readHostPort('[::ffff:10.0.0.1]:80', 'target'), { ip: '10.0.0.1', port: 80 });
  assert.equal(formatHostPort(readHostPort('[fd00:10:244:2::14]:15008', 'x')), '[fd00:10:244:2::14]:15008');
  const cases: Array<[string, RegExp]> = [
    ['fd00::1:80', /IPv6 without brackets: write "\[fd00::1\]:port"/],
    ['fd00::1', /IPv6 without brackets/],
    ['[fd00::1]', /has no port/],
    ['[fd00::1]80', /not ":port"/],
    ['[10.0.0.1]:80', /brackets are only for IPv6/],
    ['[fe80::1%eth0]:80', /zone/],
    ['10.0.0.1', /has no port/],
    ['10.0.0.1:70000', /not a port/],
    ['[fd00::1]:70000', /not ":port"/],
  ];
  for (const [text, why] of cases) {
    assert.throws(
      () => readHostPort(text, 'target'),
      (e: unknown) => e instanceof AmbientError && e.code === 'ADDRESS_INVALID' && why.test(e.message) && e.hint.includes('[fd00::1]:80'),
      text,
    );
  }
});

test('pods: every podIP enrolled (dual-stack and IPv6-only), canonical; two of one family is a clear error', () => {
  const db = fixture('pods')[2]!; // db-0: 10.244.2.20 + fd00:10:244:2::14
  const m = mapPod(db);
  assert.ok('pod' in m);
  assert.deepEqual(podIps(m.pod), ['10.244.2.20', 'fd00:10:244:2::14']);

  // IPv6-only: podIP and podIPs of one IPv6 address, written long-hand by some CNI
  const v6only = clone(db);
  v6only.status.podIP = 'FD00:10:244:2:0:0:0:15';
  v6only.status.podIPs = [{ ip: 'fd00:10:244:2::15' }];
  const m6 = mapPod(v6only);
  assert.ok('pod' in m6);
  assert.equal(m6.pod.ip, 'fd00:10:244:2::15');
  assert.deepEqual(m6.pod.ips, ['fd00:10:244:2::15'], 'one address: the long-hand and the short form are the same');
  const snap = emptySnapshot();
  snap.pods.set('ambient-demo/db-0', m6.pod);
  assert.equal(new MeshIndex(snap).podByIp.get('fd00:10:244:2::15')?.name, 'db-0', 'indexed by the form sockets report');

  // IPv6 first (an IPv6-primary dual-stack cluster)
  const v6first = clone(db);
  v6first.status.podIP = 'fd00:10:244:2::14';
  v6first.status.podIPs = [{ ip: 'fd00:10:244:2::14' }, { ip: '10.244.2.20' }];
  const mf = mapPod(v6first);
  assert.ok('pod' in mf);
  assert.deepEqual(mf.pod.ips, ['fd00:10:244:2::14', '10.244.2.20']);

  const twoV6 = clone(db);
  twoV6.status.podIPs = [{ ip: '10.244.2.20' }, { ip: 'fd00:10:244:2::14' }, { ip: 'fd00:10:244:2::99' }];
  assert.throws(() => mapPod(twoV6), /^FieldError: status\.podIPs\[2\]\.ip: fd00:10:244:2::99 is a second IPv6 address \(already fd00:10:244:2::14\)/);
  const twoV4 = clone(db);
  twoV4.status.podIPs = [{ ip: '10.244.2.20' }, { ip: '10.244.2.21' }];
  assert.throws(() => mapPod(twoV4), /status\.podIPs\[1\]\.ip: 10\.244\.2\.21 is a second IPv4 address/);
  const zoned = clone(db);
  zoned.status.podIPs = [{ ip: '10.244.2.20' }, { ip: 'fe80::1%eth0' }];
  assert.throws(() => mapPod(zoned), /status\.podIPs\[1\]\.ip: "fe80::1%eth0" has a zone/);
});

test('services: dual-stack clusterIPs follow ipFamilies; IPv6-only; a second VIP of one family or a family mismatch is an error', () => {
  const svcs = fixture('services');
  const dual = svcs.find((s) => Array.isArray(s.spec.clusterIPs) && s.spec.clusterIPs.length === 2)!;
  assert.ok(dual, 'the recorded objects hold a dual-stack Service');
  const md = mapService(dual);
  assert.deepEqual(md.vips.map(ipFamily).sort(), [4, 6]);
  const snap = emptySnapshot();
  snap.services.set(`${md.namespace}/${md.name}`, md);
  const idx = new MeshIndex(snap);
  for (const vip of md.vips) assert.ok(idx.serviceByVip.has(formatHostPort({ ip: vip, port: md.ports[0]!.port })), `${vip} indexed`);

  const v6 = clone(svcs[1]!);
  v6.spec.clusterIP = 'FD00:10:96::0:2A1F';
  v6.spec.clusterIPs = ['FD00:10:96::0:2A1F'];
  v6.spec.ipFamilies = ['IPv6'];
  assert.deepEqual(mapService(v6).vips, ['fd00:10:96::2a1f']);

  const mismatch = clone(v6);
  mismatch.spec.ipFamilies = ['IPv4'];
  assert.throws(() => mapService(mismatch), /spec\.clusterIPs\[0\]: fd00:10:96::2a1f is IPv6, but spec\.ipFamilies\[0\] is IPv4/);
  const two = clone(v6);
  two.spec.clusterIPs = ['fd00:10:96::1', 'fd00:10:96::2'];
  two.spec.ipFamilies = ['IPv6', 'IPv4'];
  assert.throws(() => mapService(two), /spec\.clusterIPs\[1\]: fd00:10:96::2 is a second IPv6 cluster IP/);
  const fams = clone(v6);
  fams.spec.ipFamilies = ['IPv6', 'IPv6'];
  assert.throws(() => mapService(fams), /spec\.ipFamilies: .*at most one of each family/);
  const badFam = clone(v6);
  badFam.spec.ipFamilies = ['IPv5'];
  assert.throws(() => mapService(badFam), /spec\.ipFamilies\[0\]: must be one of IPv4, IPv6/);
});

test('EndpointSlices of both families merge into one Service; each VIP picks endpoints of its own family', () => {
  const v4 = clone(fixture('endpointslices')[0]!);
  const v6 = clone(v4);
  v6.metadata.name = `${v4.metadata.name}-v6`;
  v6.addressType = 'IPv6';
  v6.endpoints = [{ addresses: ['FD00:10:244:1:0:0:0:A'], conditions: { ready: true } }];
  const eps = mergeEndpoints([mapEndpointSlice(v4), mapEndpointSlice(v6)]);
  assert.ok(
    eps.some((e) => e.ip === 'fd00:10:244:1::a'),
    'canonical IPv6 endpoint',
  );
  assert.ok(eps.some((e) => ipFamily(e.ip) === 4));
  const wrong = clone(v6);
  wrong.endpoints = [{ addresses: ['10.244.1.10'] }];
  assert.throws(() => mapEndpointSlice(wrong), /endpoints\[0\]\.addresses\[0\]: 10\.244\.1\.10 is not an IPv6 address/);

  const svc = {
    name: 's',
    namespace: 'n',
    hostname: 's.n.svc.cluster.local',
    vips: ['10.96.0.9', 'fd00:10:96::9'],
    ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' as const }],
    endpoints: [
      { ip: '10.244.1.10', ready: true },
      { ip: 'fd00:10:244:1::a', ready: true },
      { ip: '10.244.1.11', ready: true },
    ],
  };
  for (let n = 0; n < 4; n++) {
    assert.equal(ipFamily(chooseEndpoint(svc, svc.ports[0]!, n, 6)!.ip), 6);
    assert.equal(ipFamily(chooseEndpoint(svc, svc.ports[0]!, n, 4)!.ip), 4);
  }
  assert.equal(
    chooseEndpoint({ ...svc, endpoints: svc.endpoints.filter((e) => ipFamily(e.ip) === 4) }, svc.ports[0]!, 0, 6),
    null,
    'no endpoint of the family',
  );
});

test('policy: IPv6 ipBlocks/notIpBlocks; a v4 peer never matches a v6 block and vice versa; v4-mapped peers are IPv4', () => {
  const from = (source: Record<string, unknown>, srcIp: string) => allowRule({ from: [{ source }] }, { srcIp });
  assert.equal(from({ ipBlocks: ['fd00:10:244::/48'] }, 'fd00:10:244:2::14'), true);
  assert.equal(from({ ipBlocks: ['fd00:10:244::/48'] }, '10.244.2.20'), false, 'v4 peer, v6 block');
  assert.equal(from({ ipBlocks: ['10.244.0.0/16'] }, 'fd00:10:244:2::14'), false, 'v6 peer, v4 block');
  assert.equal(from({ ipBlocks: ['::/0'] }, '10.244.2.20'), false, '::/0 is every IPv6 address, no IPv4 one');
  assert.equal(from({ ipBlocks: ['0.0.0.0/0'] }, 'fd00::1'), false);
  assert.equal(from({ ipBlocks: ['10.244.0.0/16'] }, '::ffff:10.244.2.20'), true, 'v4-mapped peer normalised to IPv4');
  assert.equal(from({ ipBlocks: ['::ffff:0:0/96'] }, '10.244.2.20'), true, 'a v4-mapped block is the IPv4 block');
  assert.equal(from({ notIpBlocks: ['fd00:10:244:2::/64'] }, 'fd00:10:244:2::14'), false);
  assert.equal(from({ notIpBlocks: ['fd00:10:244:2::/64'] }, 'fd00:10:244:3::1'), true);
  assert.equal(from({ notIpBlocks: ['fd00::/8'] }, '10.0.0.1'), true, 'a v4 peer is never in a v6 block');
  assert.equal(from({ ipBlocks: ['FD00:10:244:2:0:0:0:14'] }, 'fd00:10:244:2::14'), true, 'any text form of one address');
});

test('kubelet probes: the IPv6 probe address (ztunnel fd16:9254:7127:1337:ffff:ffff:ffff:ffff) is exempt like 169.254.7.127', () => {
  assert.deepEqual([...PROBE_SNAT_IPS], ['169.254.7.127', 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff']);
  const sock = (dst: string) => ({
    family: 6 as const,
    src: 'fd00::5',
    sport: 8080,
    dst,
    dport: 40000,
    state: TCP.ESTABLISHED,
    mark: 0,
    cookie: 1n,
    uid: 0,
    inode: 1n,
  });
  const stale = socketsToReset([sock('fd16:9254:7127:1337:ffff:ffff:ffff:ffff'), sock('fd00::9'), sock('fd00::5')], {
    ips: ['10.0.0.5', 'fd00::5'],
    marks: [0x539],
    exempt: [...PROBE_SNAT_IPS],
  });
  assert.deepEqual(
    stale.map((s) => s.dst),
    ['fd00::9'],
    'only the foreign IPv6 peer is reset: the probe and the pod itself are kept',
  );
});

test('workload file: a compact pod lists every address in `ips`; errors name the compact field; the sandbox plan writes them per --ip-family', () => {
  const p = parsePod({ name: 'a', namespace: 'x', ip: '10.0.0.1', ips: ['10.0.0.1', 'FD00::1'], netns: 'a', cgroup: '/cg/a' }, '/sys/fs/cgroup');
  assert.deepEqual(p.ips, ['10.0.0.1', 'fd00::1']);
  assert.throws(
    () => parsePod({ name: 'a', namespace: 'x', ip: '10.0.0.1', ips: ['10.0.0.1', '10.0.0.2'] }, null),
    /^FieldError: ips\[1\]\.ip: 10\.0\.0\.2 is a second IPv4 address/,
  );
  assert.throws(() => parsePod({ name: 'a', namespace: 'x', ip: '10.0.0.1', ips: 'fd00::1' }, null), /^FieldError: ips: must be a list/);

  const plan = (ipFamily?: 'ipv4' | 'ipv6' | 'dual') => planSandbox({ nodes: 2, pods: 2, stateDir: '/tmp/x', ...(ipFamily ? { ipFamily } : {}) });
  const v4 = plan();
  assert.equal(v4.ipFamily, undefined, 'ipv4 is the default');
  assert.equal(v4.pods[0]!.ips, undefined);
  assert.equal(v4.nodes[0]!.ip6, undefined);
  const dual = plan('dual');
  assert.deepEqual(dual.pods[0]!.ips, ['10.244.1.2', 'fd00:10:244:1::2']);
  assert.equal(dual.nodes[1]!.ip6, 'fd00:10:100::2');
  const six = plan('ipv6');
  assert.equal(six.pods[3]!.ip, 'fd00:10:244:2::3');
  assert.deepEqual(six.pods[3]!.ips, ['fd00:10:244:2::3']);
  // what the agents read back
  const snap = parseWorkloads(JSON.parse(renderWorkloads(dual)), { cgroupRoot: '/sys/fs/cgroup' });
  assert.deepEqual(snap.errors, []);
  assert.deepEqual(snap.pods.get('ambient-demo/n1-p1')!.ips, ['10.244.1.2', 'fd00:10:244:1::2']);
  assert.throws(() => planSandbox({ ipFamily: 'ipv5' as 'ipv4' }), /ip-family must be one of ipv4, ipv6, dual/);
});

test('sandbox plan: AMBIENTD_SANDBOX_IP_FAMILY picks the family of a sandbox that names none (make test-dual); an explicit ipFamily wins', (t) => {
  const saved = process.env.AMBIENTD_SANDBOX_IP_FAMILY;
  t.after(() => {
    if (saved === undefined) delete process.env.AMBIENTD_SANDBOX_IP_FAMILY;
    else process.env.AMBIENTD_SANDBOX_IP_FAMILY = saved;
  });
  const opts = { nodes: 1, pods: 1, stateDir: '/tmp/x' };
  process.env.AMBIENTD_SANDBOX_IP_FAMILY = 'dual';
  const dual = planSandbox(opts);
  assert.equal(dual.ipFamily, 'dual');
  assert.deepEqual(dual.pods[0]!.ips, ['10.244.1.2', 'fd00:10:244:1::2']);
  assert.equal(dual.nodes[0]!.ip6, 'fd00:10:100::1');
  assert.equal(planSandbox({ ...opts, ipFamily: 'ipv4' }).ipFamily, undefined, 'the explicit family wins over the variable');
  process.env.AMBIENTD_SANDBOX_IP_FAMILY = 'ipv6';
  assert.deepEqual(planSandbox(opts).pods[0]!.ips, ['fd00:10:244:1::2']);
  process.env.AMBIENTD_SANDBOX_IP_FAMILY = 'v6';
  assert.throws(() => planSandbox(opts), /ip-family must be one of ipv4, ipv6, dual, got "v6" \(from AMBIENTD_SANDBOX_IP_FAMILY\)/);
  process.env.AMBIENTD_SANDBOX_IP_FAMILY = '';
  assert.equal(planSandbox(opts).ipFamily, undefined, 'empty: ipv4');
  assert.equal(planSandbox(opts).pods[0]!.ip, '10.244.1.2');
});

test('workload file: a selector Service has each dual-stack pod as an endpoint in both families', () => {
  const snap = emptySnapshot();
  const pod = parsePod({ name: 'a', namespace: 'x', ip: '10.0.0.1', ips: ['10.0.0.1', 'fd00::1'], labels: { app: 'a' } }, null);
  snap.pods.set('x/a', pod);
  snap.services.set('x/s', {
    name: 's',
    namespace: 'x',
    hostname: 's.x.svc.cluster.local',
    vips: ['10.96.0.1', 'fd00:96::1'],
    ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
    selector: { app: 'a' },
    endpoints: [],
  });
  resolveEndpoints(snap);
  assert.deepEqual(
    snap.services.get('x/s')!.endpoints.map((e) => e.ip),
    ['10.0.0.1', 'fd00::1'],
  );
});
