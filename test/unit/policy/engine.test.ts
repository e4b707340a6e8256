// The policy engine: evaluation order, attributes, scope, HTTP-only
// attributes, the trust domain, scale (src/policy/engine.ts, ip.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuthorizationPolicy } from '../../../src/discovery/model.js';
import { compilePolicies, validatePolicy, checkPolicy, type PolicyIndex } from '../../../src/policy/engine.js';
import { parseCidr, parseIp, IpSet } from '../../../src/policy/ip.js';
import { pol, CURL, ADMIN, conn, run, allowRule, denyRule, ALLOW_ALL, type ConnOpts } from './helpers.js';

// ---------------------------------------------------------------------------
// evaluation order

test('evaluation order: DENY beats ALLOW; no ALLOW means allow; ALLOW without a match denies', () => {
  run([
    { name: 'no policies', policies: [], allow: true, reason: 'no-allow-policies', policy: null, rule: null },
    {
      name: 'only a non-matching DENY',
      policies: [pol('app', 'd', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['evil'] } }] }] })],
      allow: true,
      reason: 'no-allow-policies',
    },
    {
      name: 'DENY beats a matching ALLOW',
      policies: [pol('app', 'a', ALLOW_ALL), pol('app', 'd', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['client'] } }] }] })],
      allow: false,
      reason: 'deny-match',
      policy: 'app/d',
      rule: 0,
    },
    {
      name: 'ALLOW present, no match',
      policies: [pol('app', 'a', { rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] })],
      allow: false,
      reason: 'no-allow-match',
      policy: null,
      rule: null,
    },
    {
      name: 'ALLOW matches its second rule (action defaults to ALLOW)',
      policies: [pol('app', 'a', { rules: [{ from: [{ source: { namespaces: ['ops'] } }] }, { to: [{ operation: { ports: ['8080'] } }] }] })],
      allow: true,
      reason: 'allow-match',
      policy: 'app/a',
      rule: 1,
    },
    {
      name: 'one of several ALLOW policies matching is enough',
      policies: [
        pol('app', 'a1', { rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] }),
        pol('app', 'a2', { rules: [{ from: [{ source: { namespaces: ['client'] } }] }] }),
      ],
      allow: true,
      policy: 'app/a2',
    },
    {
      name: 'a DENY that does not match, an ALLOW that does',
      policies: [pol('app', 'd', { action: 'DENY', rules: [{ to: [{ operation: { ports: ['22'] } }] }] }), pol('app', 'a', ALLOW_ALL)],
      allow: true,
      reason: 'allow-match',
      policy: 'app/a',
    },
  ]);
});

test('empty rules: ALLOW with none allows nothing, DENY with none denies nothing, [{}] matches everything', () => {
  run([
    { name: 'ALLOW, spec {}', policies: [pol('app', 'a', {})], allow: false, reason: 'no-allow-match' },
    { name: 'ALLOW, rules []', policies: [pol('app', 'a', { action: 'ALLOW', rules: [] })], allow: false, reason: 'no-allow-match' },
    { name: 'DENY, no rules', policies: [pol('app', 'd', { action: 'DENY' })], allow: true, reason: 'no-allow-policies' },
    { name: 'DENY, rules []', policies: [pol('app', 'd', { action: 'DENY', rules: [] })], allow: true, reason: 'no-allow-policies' },
    { name: 'DENY no rules + ALLOW all', policies: [pol('app', 'd', { action: 'DENY' }), pol('app', 'a', ALLOW_ALL)], allow: true, reason: 'allow-match' },
    { name: 'ALLOW [{}]', policies: [pol('app', 'a', ALLOW_ALL)], allow: true, reason: 'allow-match', rule: 0 },
    { name: 'ALLOW [{}] plaintext', policies: [pol('app', 'a', ALLOW_ALL)], conn: { principal: null }, allow: true },
    { name: 'DENY [{}]', policies: [pol('app', 'd', { action: 'DENY', rules: [{}] })], allow: false, reason: 'deny-match', rule: 0 },
    { name: 'ALLOW rule with when: []', policies: [pol('app', 'a', { rules: [{ when: [] }] })], allow: true },
  ]);
  // warnings, not errors
  const c = checkPolicy(pol('app', 'd', { action: 'DENY' }));
  assert.deepEqual(c.errors, []);
  assert.match(c.warnings[0]!, /^spec\.rules: DENY policy without rules never matches/);
});

// ---------------------------------------------------------------------------
// attributes

test('string matching: exact, prefix, suffix, presence', () => {
  const p = (v: string) => ({ from: [{ source: { principals: [v] } }] });
  const table: Array<[string, string | null, boolean]> = [
    ['cluster.local/ns/client/sa/curl', CURL, true],
    ['cluster.local/ns/client/sa/cur', CURL, false],
    ['cluster.local/ns/client/*', CURL, true],
    ['cluster.local/ns/other/*', CURL, false],
    ['*/sa/curl', CURL, true],
    ['*/sa/admin', CURL, false],
    ['*', CURL, true],
    ['*', null, false],
    ['*/sa/curl', null, false],
    // the principal may be given without the scheme, too
    ['cluster.local/ns/client/sa/curl', 'cluster.local/ns/client/sa/curl', true],
  ];
  for (const [value, principal, want] of table) assert.equal(allowRule(p(value), { principal }), want, `principals ${value} vs ${principal}`);
  const n = (v: string) => ({ from: [{ source: { namespaces: [v] } }] });
  assert.equal(allowRule(n('client'), {}), true);
  assert.equal(allowRule(n('cli*'), {}), true);
  assert.equal(allowRule(n('*ent'), {}), true);
  assert.equal(allowRule(n('*'), {}), true);
  assert.equal(allowRule(n('ops'), {}), false);
  assert.equal(allowRule(n('*'), { principal: null }), false);
  // several values are OR'd
  assert.equal(allowRule({ from: [{ source: { namespaces: ['ops', 'client'] } }] }, {}), true);
});

test('every attribute and its not-form', () => {
  type Row = [string, unknown, ConnOpts, boolean];
  const src = (s: Record<string, unknown>) => ({ from: [{ source: s }] });
  const op = (o: Record<string, unknown>) => ({ to: [{ operation: o }] });
  const when = (key: string, values?: string[], notValues?: string[]) => ({
    when: [{ key, ...(values ? { values } : {}), ...(notValues ? { notValues } : {}) }],
  });
  const rows: Row[] = [
    ['principals', src({ principals: ['cluster.local/ns/ops/sa/admin'] }), { principal: ADMIN }, true],
    ['principals miss', src({ principals: ['cluster.local/ns/ops/sa/admin'] }), {}, false],
    ['notPrincipals', src({ notPrincipals: ['cluster.local/ns/ops/sa/admin'] }), {}, true],
    ['notPrincipals miss', src({ notPrincipals: ['cluster.local/ns/ops/sa/admin'] }), { principal: ADMIN }, false],
    ['namespaces', src({ namespaces: ['ops'] }), { principal: ADMIN }, true],
    ['notNamespaces', src({ notNamespaces: ['ops'] }), {}, true],
    ['notNamespaces miss', src({ notNamespaces: ['ops'] }), { principal: ADMIN }, false],
    ['serviceAccounts ns/sa', src({ serviceAccounts: ['client/curl'] }), {}, true],
    ['serviceAccounts ns/sa miss', src({ serviceAccounts: ['client/other'] }), {}, false],
    ['serviceAccounts bare = policy namespace', src({ serviceAccounts: ['web'] }), { principal: 'spiffe://cluster.local/ns/app/sa/web' }, true],
    ['serviceAccounts bare is not the peer namespace', src({ serviceAccounts: ['curl'] }), {}, false],
    ['notServiceAccounts', src({ notServiceAccounts: ['client/curl'] }), { principal: ADMIN }, true],
    ['notServiceAccounts miss', src({ notServiceAccounts: ['client/curl'] }), {}, false],
    ['trustDomains', src({ trustDomains: ['cluster.local'] }), {}, true],
    ['trustDomains miss', src({ trustDomains: ['other.org'] }), {}, false],
    ['notTrustDomains', src({ notTrustDomains: ['other.org'] }), {}, true],
    ['notTrustDomains miss', src({ notTrustDomains: ['*.local'] }), {}, false],
    ['ipBlocks', src({ ipBlocks: ['10.0.2.0/24'] }), {}, true],
    ['ipBlocks miss', src({ ipBlocks: ['10.0.3.0/24'] }), {}, false],
    ['ipBlocks single IP', src({ ipBlocks: ['10.0.2.2'] }), {}, true],
    ['notIpBlocks', src({ notIpBlocks: ['10.0.3.0/24'] }), {}, true],
    ['notIpBlocks miss', src({ notIpBlocks: ['10.0.0.0/16'] }), {}, false],
    ['remoteIpBlocks (source IP)', src({ remoteIpBlocks: ['10.0.2.0/24'] }), {}, true],
    ['remoteIpBlocks miss', src({ remoteIpBlocks: ['10.9.0.0/16'] }), {}, false],
    ['notRemoteIpBlocks', src({ notRemoteIpBlocks: ['10.9.0.0/16'] }), {}, true],
    ['notRemoteIpBlocks miss', src({ notRemoteIpBlocks: ['10.0.2.0/24'] }), {}, false],
    ['ports', op({ ports: ['80', '8080'] }), {}, true],
    ['ports miss', op({ ports: ['80'] }), {}, false],
    ['notPorts', op({ notPorts: ['80'] }), {}, true],
    ['notPorts miss', op({ notPorts: ['8080'] }), {}, false],
    ['when source.ip', when('source.ip', ['10.0.2.0/24']), {}, true],
    ['when source.ip notValues', when('source.ip', undefined, ['10.0.2.0/24']), {}, false],
    ['when remote.ip', when('remote.ip', ['10.0.2.2']), {}, true],
    ['when source.namespace', when('source.namespace', ['client']), {}, true],
    ['when source.namespace notValues', when('source.namespace', undefined, ['client']), {}, false],
    ['when source.principal', when('source.principal', ['cluster.local/ns/client/*']), {}, true],
    ['when source.principal notValues', when('source.principal', undefined, ['*']), { principal: null }, true],
    ['when source.serviceAccount', when('source.serviceAccount', ['client/curl']), {}, true],
    ['when source.trustDomain', when('source.trustDomain', ['cluster.local']), {}, true],
    ['when destination.ip', when('destination.ip', ['10.0.1.0/24']), {}, true],
    ['when destination.ip miss', when('destination.ip', ['10.0.9.0/24']), {}, false],
    ['when destination.ip notValues', when('destination.ip', undefined, ['10.0.9.0/24']), {}, true],
    ['when destination.port', when('destination.port', ['8080']), {}, true],
    ['when destination.port notValues', when('destination.port', undefined, ['8080']), {}, false],
    ['when values and notValues together', when('destination.port', ['8080', '9090'], ['8080']), {}, false],
  ];
  for (const [name, rule, c, want] of rows) {
    assert.deepEqual(validatePolicy(pol('app', 'p', { rules: [rule] })), [], `${name}: valid`);
    assert.equal(allowRule(rule, c), want, `ALLOW ${name}`);
    // the same rule in a DENY policy denies exactly what the ALLOW allowed
    assert.equal(denyRule(rule, c), want, `DENY ${name}`);
  }
});

test('AND and OR: fields in an entry AND, entries OR, from/to/when AND, rules OR', () => {
  const rule = {
    from: [{ source: { namespaces: ['client'], ipBlocks: ['10.0.2.0/24'] } }, { source: { principals: ['cluster.local/ns/ops/sa/admin'] } }],
    to: [{ operation: { ports: ['8080'] } }, { operation: { ports: ['9090'] } }],
    when: [
      { key: 'destination.ip', values: ['10.0.1.1'] },
      { key: 'source.ip', notValues: ['10.0.2.66'] },
    ],
  };
  assert.equal(allowRule(rule, {}), true);
  assert.equal(allowRule(rule, { srcIp: '10.0.3.3' }), false, 'namespace ok but IP not (AND within an entry)');
  assert.equal(allowRule(rule, { srcIp: '10.0.3.3', principal: ADMIN }), true, 'second from entry (OR)');
  assert.equal(allowRule(rule, { port: 9090 }), true, 'second to entry');
  assert.equal(allowRule(rule, { port: 22 }), false, 'to fails');
  assert.equal(allowRule(rule, { dstIp: '10.0.1.2' }), false, 'first when fails');
  assert.equal(allowRule(rule, { srcIp: '10.0.2.66' }), false, 'second when fails');
  // rules OR'd
  const idx = compilePolicies([pol('app', 'p', { rules: [{ to: [{ operation: { ports: ['1'] } }] }, { to: [{ operation: { ports: ['8080'] } }] }] })]);
  assert.equal(idx.evaluate(conn()).rule, 1);
});

test('CIDRs: IPv4, IPv6, IPv4-mapped, host bits, /0', () => {
  const ip = (blocks: string[], srcIp: string) => allowRule({ from: [{ source: { ipBlocks: blocks } }] }, { srcIp });
  assert.equal(ip(['10.0.0.0/8'], '10.255.255.255'), true);
  assert.equal(ip(['10.0.0.0/8'], '11.0.0.0'), false);
  assert.equal(ip(['10.1.2.3/8'], '10.9.9.9'), true, 'host bits are masked, as Go netip does');
  assert.equal(ip(['0.0.0.0/0'], '203.0.113.9'), true);
  assert.equal(ip(['0.0.0.0/0'], '2001:db8::1'), false, 'an IPv4 block never holds an IPv6 address');
  assert.equal(ip(['2001:db8::/32'], '2001:db8:ffff::1'), true);
  assert.equal(ip(['2001:db8::/32'], '2001:db9::1'), false);
  assert.equal(ip(['::/0'], '::1'), true);
  assert.equal(ip(['fd00::1'], 'fd00:0:0::1'), true);
  assert.equal(ip(['10.0.0.0/8'], '::ffff:10.1.2.3'), true, 'a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d');
  assert.equal(ip(['::ffff:10.0.0.0/104'], '10.1.2.3'), true, 'an IPv4-mapped block is the IPv4 block');
  assert.equal(ip(['192.168.0.0/16', '10.0.0.0/8', '10.1.0.0/16', '172.16.0.0/12'], '10.1.9.9'), true, 'overlapping blocks merge');
  assert.equal(ip(['192.168.0.0/16', '10.0.0.0/8', '172.16.0.0/12'], '172.32.0.1'), false);
  assert.equal(allowRule({ when: [{ key: 'destination.ip', values: ['fe80::/10'] }] }, { dstIp: 'fe80::1%eth0' }), true, 'zone ignored');

  assert.deepEqual(parseIp('1.2.3.4'), { v4: true, n: 0x01020304 });
  assert.deepEqual(parseIp('::ffff:0102:0304'), { v4: true, n: 0x01020304 });
  assert.deepEqual(parseIp('1::'), { v4: false, n: 1n << 112n });
  assert.deepEqual(parseIp('1:2:3:4:5:6:1.2.3.4'), { v4: false, n: 0x0001000200030004000500060102_0304n });
  for (const bad of ['010.0.0.1', '1.2.3', '1::2::3', '10.0.0.256', '', 'x']) assert.equal(parseIp(bad), null, bad);
  for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/08', '::/129', 'fe80::1%eth0/64', '10.0.0.0/-1', '10.0.0.0/8/8'])
    assert.equal(parseCidr(bad), null, bad);
  const set = new IpSet(['10.0.0.0/24', '10.0.1.0/24', '10.0.3.0/24'].map((c) => parseCidr(c)!));
  assert.equal(set.size, 2, 'adjacent blocks merge');
  assert.equal(set.has(parseIp('10.0.1.255')!), true);
  assert.equal(set.has(parseIp('10.0.2.0')!), false);
});

test('plaintext source (no identity) against identity attributes', () => {
  const pt: ConnOpts = { principal: null, srcNamespace: 'client', srcSa: 'curl' };
  const src = (s: Record<string, unknown>) => ({ from: [{ source: s }] });
  assert.equal(allowRule(src({ principals: ['*'] }), pt), false, 'principals never match plaintext');
  assert.equal(allowRule(src({ notPrincipals: ['*'] }), pt), true, 'notPrincipals always matches plaintext');
  assert.equal(allowRule(src({ notPrincipals: ['cluster.local/ns/client/sa/curl'] }), pt), true);
  assert.equal(allowRule(src({ namespaces: ['client'] }), pt), false, 'the caller-known namespace is ignored without an identity');
  assert.equal(allowRule(src({ notNamespaces: ['client'] }), pt), true);
  assert.equal(allowRule(src({ serviceAccounts: ['client/curl'] }), pt), false);
  assert.equal(allowRule(src({ notServiceAccounts: ['client/curl'] }), pt), true);
  assert.equal(allowRule(src({ trustDomains: ['*'] }), pt), false);
  assert.equal(allowRule(src({ ipBlocks: ['10.0.2.2'] }), pt), true, 'IP attributes do not need an identity');
  // the STRICT-mTLS idiom: DENY notPrincipals ["*"] denies plaintext, lets mTLS through
  const strict = compilePolicies([pol('istio-system', 'strict', { action: 'DENY', rules: [{ from: [{ source: { notPrincipals: ['*'] } }] }] })]);
  assert.deepEqual(strict.evaluate(conn(pt)), { allow: false, policy: 'istio-system/strict', rule: 0, reason: 'deny-match' });
  assert.equal(strict.evaluate(conn()).allow, true);
  // empty-string principal = no identity
  assert.equal(strict.evaluate(conn({ principal: '' })).allow, false);
  // a non-Kubernetes SPIFFE id: namespace / service account come from the caller's fields
  assert.equal(allowRule(src({ namespaces: ['legacy'] }), { principal: 'spiffe://cluster.local/vm/box1', srcNamespace: 'legacy' }), true);
  assert.equal(allowRule(src({ principals: ['cluster.local/vm/*'] }), { principal: 'spiffe://cluster.local/vm/box1' }), true);
  // the principal wins over the caller's fields when it is of the Kubernetes form
  assert.equal(allowRule(src({ namespaces: ['client'] }), { srcNamespace: 'ops' }), true);
});

// ---------------------------------------------------------------------------
// scope

test('scope: namespace, selector, root namespace (with and without selector)', () => {
  const denyAll = (ns: string, name: string, selector?: Record<string, string>) =>
    pol(ns, name, { action: 'DENY', rules: [{}], ...(selector ? { selector: { matchLabels: selector } } : {}) });
  const policies = [
    denyAll('app', 'web-only', { app: 'web' }),
    denyAll('app', 'web-v2', { app: 'web', version: 'v2' }),
    denyAll('other', 'ns-wide'),
    denyAll('istio-system', 'root-db', { app: 'db' }),
  ];
  const idx = compilePolicies(policies);
  const d = (ns: string, labels: Record<string, string>) => idx.evaluate(conn({ ns, labels }));
  assert.deepEqual(d('app', { app: 'web' }), { allow: false, policy: 'app/web-only', rule: 0, reason: 'deny-match' });
  assert.equal(d('app', { app: 'api' }).allow, true, 'selector does not match');
  assert.equal(d('app', {}).allow, true);
  assert.deepEqual(idx.policiesFor('app', { app: 'web', version: 'v2', x: 'y' }).deny, ['app/web-only', 'app/web-v2']);
  assert.deepEqual(idx.policiesFor('app', { app: 'web', version: 'v1' }).deny, ['app/web-only']);
  assert.equal(d('other', { app: 'api' }).policy, 'other/ns-wide', 'selector-less: whole namespace');
  assert.equal(d('third', { app: 'web' }).allow, true, 'policies of other namespaces do not apply');
  assert.equal(d('third', { app: 'db' }).policy, 'istio-system/root-db', 'root selector: any namespace');
  assert.equal(d('istio-system', { app: 'db' }).policy, 'istio-system/root-db');
  assert.equal(d('app', { app: 'dbx' }).allow, true);

  const root = compilePolicies([denyAll('istio-system', 'mesh-wide')]);
  for (const ns of ['app', 'other', 'istio-system']) assert.equal(root.evaluate(conn({ ns })).policy, 'istio-system/mesh-wide', ns);
  // a different root namespace
  const custom = compilePolicies([denyAll('istio-system', 'not-root'), denyAll('mesh-root', 'mesh-wide')], { rootNamespace: 'mesh-root' });
  assert.equal(custom.evaluate(conn()).policy, 'mesh-root/mesh-wide');
  assert.equal(custom.evaluate(conn({ ns: 'istio-system' })).policy, 'istio-system/not-root');

  // an ALLOW with a selector only makes the workloads it selects default-deny
  const allowWeb = compilePolicies([pol('app', 'a', { selector: { matchLabels: { app: 'web' } }, rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] })]);
  assert.equal(allowWeb.evaluate(conn({ labels: { app: 'web' } })).reason, 'no-allow-match');
  assert.equal(allowWeb.evaluate(conn({ labels: { app: 'api' } })).reason, 'no-allow-policies');
  // a selector without labels: whole namespace (fail-safe), with a warning
  const empty = compilePolicies([pol('app', 'e', { action: 'DENY', selector: {}, rules: [{}] })]);
  assert.equal(empty.evaluate(conn({ labels: { app: 'anything' } })).allow, false);
  assert.match(empty.describe()[0]!.warnings[0]!, /selector without labels/);
  // targetRefs policies are for waypoints
  const tr = compilePolicies([pol('app', 'wp', { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], action: 'DENY', rules: [{}] })]);
  assert.equal(tr.evaluate(conn()).allow, true);
  assert.equal(tr.describe()[0]!.status, 'ignored');
});

test('selector index: many selector policies in one namespace, found by any of their labels', () => {
  const policies: AuthorizationPolicy[] = [];
  for (let i = 0; i < 300; i++) policies.push(pol('app', `p${i}`, { action: 'DENY', selector: { matchLabels: { team: 'a', app: `svc${i}` } }, rules: [{}] }));
  policies.push(pol('app', 'team-b', { action: 'DENY', selector: { matchLabels: { team: 'b' } }, rules: [{}] }));
  const idx = compilePolicies(policies);
  assert.equal(idx.evaluate(conn({ labels: { app: 'svc17', team: 'a' } })).policy, 'app/p17');
  assert.equal(idx.evaluate(conn({ labels: { app: 'svc17', team: 'c' } })).allow, true);
  assert.equal(idx.evaluate(conn({ labels: { team: 'a' } })).allow, true);
  assert.equal(idx.evaluate(conn({ labels: { team: 'b', app: 'svc3' } })).policy, 'app/team-b');
  assert.deepEqual(idx.policiesFor('app', { app: 'svc3', team: 'a' }).deny, ['app/p3']);
});

// ---------------------------------------------------------------------------
// HTTP-only attributes

test('HTTP-only attributes: an ALLOW rule with them never matches; a DENY rule drops them', () => {
  const methods = { to: [{ operation: { methods: ['GET'] } }] };
  run([
    { name: 'ALLOW with methods only', policies: [pol('app', 'a', { rules: [methods] })], allow: false, reason: 'no-allow-match' },
    {
      name: 'ALLOW with methods next to L4 fields still never matches',
      policies: [pol('app', 'a', { rules: [{ from: [{ source: { namespaces: ['client'] } }], to: [{ operation: { ports: ['8080'], methods: ['GET'] } }] }] })],
      allow: false,
      reason: 'no-allow-match',
    },
    {
      name: 'ALLOW: other L4 rules of the policy still work',
      policies: [pol('app', 'a', { rules: [methods, { from: [{ source: { namespaces: ['client'] } }] }] })],
      allow: true,
      rule: 1,
    },
    { name: 'ALLOW with requestPrincipals', policies: [pol('app', 'a', { rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] })], allow: false },
    {
      name: 'ALLOW with a request.headers condition',
      policies: [pol('app', 'a', { rules: [{ when: [{ key: 'request.headers[x-a]', values: ['1'] }] }] })],
      allow: false,
    },
    {
      name: 'ALLOW with connection.sni (no SNI in HBONE)',
      policies: [pol('app', 'a', { rules: [{ when: [{ key: 'connection.sni', values: ['x'] }] }] })],
      allow: false,
    },
    {
      name: 'DENY from namespace + methods: denies that namespace on any method',
      policies: [pol('app', 'd', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['client'] } }], to: [{ operation: { methods: ['POST'] } }] }] })],
      allow: false,
      reason: 'deny-match',
      rule: 0,
    },
    {
      name: '... and not the other namespaces',
      policies: [pol('app', 'd', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['client'] } }], to: [{ operation: { methods: ['POST'] } }] }] })],
      conn: { principal: ADMIN },
      allow: true,
    },
    {
      name: 'DENY port + path: the port still applies (match)',
      policies: [pol('app', 'd', { action: 'DENY', rules: [{ to: [{ operation: { ports: ['8080'], paths: ['/admin'] } }] }] })],
      allow: false,
    },
    {
      name: 'DENY port + path: the port still applies (no match)',
      policies: [pol('app', 'd', { action: 'DENY', rules: [{ to: [{ operation: { ports: ['9090'], paths: ['/admin'] } }] }] })],
      allow: true,
    },
    {
      name: 'DENY with only HTTP attributes: nothing left of the rule, it matches everything (fail closed)',
      policies: [pol('app', 'd', { action: 'DENY', rules: [{ from: [{ source: { notRequestPrincipals: ['*'] } }] }] })],
      allow: false,
      rule: 0,
    },
    {
      name: 'DENY: an HTTP condition is dropped, the L4 condition stays',
      policies: [
        pol('app', 'd', {
          action: 'DENY',
          rules: [
            {
              when: [
                { key: 'request.auth.claims[iss]', values: ['x'] },
                { key: 'destination.port', values: ['9090'] },
              ],
            },
          ],
        }),
      ],
      allow: true,
    },
    {
      name: 'DENY: an emptied from entry matches any source',
      policies: [
        pol('app', 'd', {
          action: 'DENY',
          rules: [{ from: [{ source: { namespaces: ['ops'] } }, { source: { requestPrincipals: ['x/y'] } }], to: [{ operation: { ports: ['8080'] } }] }],
        }),
      ],
      allow: false,
    },
  ]);
  // remoteIpBlocks as ztunnel reads them (HTTP-only), when asked to
  const rip = { from: [{ source: { remoteIpBlocks: ['10.0.2.0/24'] } }] };
  assert.equal(allowRule(rip, {}), true);
  assert.equal(allowRule(rip, {}, { remoteIpBlocks: 'http-only' }), false);
  assert.equal(
    denyRule({ from: [{ source: { remoteIpBlocks: ['10.9.0.0/16'] } }] }, {}, { remoteIpBlocks: 'http-only' }),
    true,
    'dropped from a DENY: matches everything',
  );
  const w = checkPolicy(pol('app', 'a', { rules: [methods] })).warnings;
  assert.equal(w.length, 1);
  assert.match(w[0]!, /^spec\.rules\[0\]\.to\[0\]\.operation\.methods: an HTTP-only attribute cannot be checked at L4; ALLOW rule 0 never matches/);
  assert.match(checkPolicy(pol('app', 'd', { action: 'DENY', rules: [methods] })).warnings[0]!, /dropped from DENY rule 0/);
});

// ---------------------------------------------------------------------------
// trust domain

test('trust domain: "cluster.local" in a principal means the mesh trust domain', () => {
  const opts = { trustDomain: 'example.org' };
  const rule = { from: [{ source: { principals: ['cluster.local/ns/client/sa/curl'] } }] };
  assert.equal(allowRule(rule, { principal: 'spiffe://example.org/ns/client/sa/curl' }, opts), true);
  assert.equal(allowRule(rule, { principal: 'spiffe://cluster.local/ns/client/sa/curl' }, opts), false);
  assert.equal(
    allowRule({ from: [{ source: { principals: ['other.org/ns/client/sa/curl'] } }] }, { principal: 'spiffe://example.org/ns/client/sa/curl' }, opts),
    false,
  );
  assert.equal(allowRule({ from: [{ source: { principals: ['*/ns/client/sa/curl'] } }] }, { principal: 'spiffe://example.org/ns/client/sa/curl' }, opts), true);
  assert.equal(
    allowRule(
      { when: [{ key: 'source.principal', values: ['cluster.local/ns/client/sa/curl'] }] },
      { principal: 'spiffe://example.org/ns/client/sa/curl' },
      opts,
    ),
    true,
  );
});

// ---------------------------------------------------------------------------
// scale

test('10 000 policies over many namespaces: same decisions as an index of the 2 that apply', () => {
  const mine = [
    pol('team-x', 'allow-client', {
      selector: { matchLabels: { app: 'web' } },
      rules: [{ from: [{ source: { namespaces: ['client'] } }], to: [{ operation: { ports: ['8080'] } }] }],
    }),
    pol('team-x', 'deny-ssh', { action: 'DENY', rules: [{ to: [{ operation: { ports: ['22'] } }] }] }),
  ];
  const noise: AuthorizationPolicy[] = [];
  for (let i = 0; i < 10_000; i++) {
    const ns = `ns-${i % 1000}`;
    noise.push(
      i % 3 === 0
        ? pol(ns, `deny-${i}`, { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: [`10.${i % 250}.0.0/16`] } }] }] })
        : pol(ns, `allow-${i}`, {
            selector: { matchLabels: { app: 'web', shard: String(i) } },
            rules: [{ from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/*`] } }] }],
          }),
    );
  }
  const small = compilePolicies(mine);
  const big = compilePolicies([...noise, ...mine]);
  assert.equal(big.stats().policies, 10_002);
  const conns: ConnOpts[] = [
    { ns: 'team-x', labels: { app: 'web' } },
    { ns: 'team-x', labels: { app: 'web' }, port: 22 },
    { ns: 'team-x', labels: { app: 'web' }, port: 9090 },
    { ns: 'team-x', labels: { app: 'web' }, principal: ADMIN },
    { ns: 'team-x', labels: { app: 'api' } },
    { ns: 'team-x', labels: { app: 'web' }, principal: null },
  ];
  for (const c of conns) assert.deepEqual(big.evaluate(conn(c)), small.evaluate(conn(c)), JSON.stringify(c));
  assert.deepEqual(big.policiesFor('team-x', { app: 'web', shard: '1' }), { deny: ['team-x/deny-ssh'], allow: ['team-x/allow-client'] });
  // and the noise is live where it applies
  assert.equal(big.evaluate(conn({ ns: 'ns-1', labels: { app: 'web', shard: '1' }, principal: 'spiffe://cluster.local/ns/ns-1/sa/x' })).policy, 'ns-1/allow-1');
  assert.equal(big.evaluate(conn({ ns: 'ns-3', labels: {}, srcIp: '10.3.1.1' })).policy, 'ns-3/deny-3');

  // timing, printed only (bench/policy-eval.ts has the numbers that matter)
  const c = conn({ ns: 'team-x', labels: { app: 'web', version: 'v1', 'pod-template-hash': 'abc' } });
  const time = (idx: PolicyIndex): number => {
    const n = 20_000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) idx.evaluate(c);
    return Number(process.hrtime.bigint() - t0) / n;
  };
  let tSmall = Infinity;
  let tBig = Infinity;
  for (let round = 0; round < 5; round++) {
    tSmall = Math.min(tSmall, time(small));
    tBig = Math.min(tBig, time(big));
  }
  console.log(`evaluate: ${tSmall.toFixed(0)} ns with 2 policies, ${tBig.toFixed(0)} ns with 10 002 (the workload's namespace has 2)`);
});
