// Invalid AuthorizationPolicies: field-path errors and fail-safe effects;
// what describe() and stats() report.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuthorizationPolicy, AuthorizationPolicySpec } from '../../../src/discovery/model.js';
import { compilePolicies, validatePolicy, checkPolicy } from '../../../src/policy/engine.js';
import { pol, ADMIN, run, ALLOW_ALL } from './helpers.js';

// ---------------------------------------------------------------------------
// validation

test('validatePolicy: field-path errors', () => {
  const table: Array<[string, unknown, RegExp]> = [
    [
      'bad CIDR',
      { rules: [{ from: [{ source: { principals: ['a'] } }, { source: { ipBlocks: ['10.0.0.0/8', '10.0.0.1', '10.0.0.0/33'] } }] }] },
      /^spec\.rules\[0\]\.from\[1\]\.source\.ipBlocks\[2\]: "10\.0\.0\.0\/33" is not a CIDR$/,
    ],
    [
      'bad IP',
      { rules: [{ from: [{ source: { notIpBlocks: ['10.0.0.256'] } }] }] },
      /^spec\.rules\[0\]\.from\[0\]\.source\.notIpBlocks\[0\]: "10\.0\.0\.256" is not an IP address$/,
    ],
    ['AUDIT', { action: 'AUDIT', rules: [{}] }, /^spec\.action: "AUDIT" is not supported at L4 \(ALLOW or DENY\)$/],
    ['CUSTOM', { action: 'CUSTOM', provider: { name: 'x' }, rules: [{}] }, /^spec\.action: "CUSTOM" is not supported at L4/],
    ['unknown action', { action: 'deny', rules: [{}] }, /^spec\.action: "deny" is not an action/],
    ['provider without CUSTOM', { action: 'DENY', provider: { name: 'x' }, rules: [{}] }, /^spec\.provider: only allowed with action CUSTOM$/],
    ['unknown spec field', { rule: [] }, /^spec\.rule: unknown field \(did you mean "rules"\?\)$/],
    [
      'unknown source field',
      { rules: [{ from: [{ source: { principal: ['x'] } }] }] },
      /^spec\.rules\[0\]\.from\[0\]\.source\.principal: unknown field \(did you mean "principals"\?\)$/,
    ],
    ['unknown operation field', { rules: [{ to: [{ operation: { port: ['80'] } }] }] }, /^spec\.rules\[0\]\.to\[0\]\.operation\.port: unknown field/],
    ['unknown rule field', { rules: [{ form: [] }] }, /^spec\.rules\[0\]\.form: unknown field$/],
    [
      'unknown when key',
      { rules: [{ when: [{ key: 'source.ipp', values: ['1.2.3.4'] }] }] },
      /^spec\.rules\[0\]\.when\[0\]\.key: unknown attribute "source\.ipp"$/,
    ],
    ['destination.labels', { rules: [{ when: [{ key: 'destination.labels[app]', values: ['x'] }] }] }, /replaced by the workload selector/],
    ['bad map key', { rules: [{ when: [{ key: 'request.headers[]', values: ['x'] }] }] }, /^spec\.rules\[0\]\.when\[0\]\.key: bad key/],
    ['when without values', { rules: [{ when: [{ key: 'source.ip' }] }] }, /^spec\.rules\[0\]\.when\[0\]: at least one of values or notValues/],
    [
      'when bad IP',
      { rules: [{ when: [{ key: 'destination.ip', notValues: ['nope'] }] }] },
      /^spec\.rules\[0\]\.when\[0\]\.notValues\[0\]: "nope" is not an IP address$/,
    ],
    ['port 0', { rules: [{ to: [{ operation: { ports: ['0'] } }] }] }, /^spec\.rules\[0\]\.to\[0\]\.operation\.ports\[0\]: "0" is not a port \(1\.\.65535\)$/],
    ['port 65536', { rules: [{ to: [{ operation: { notPorts: ['65536'] } }] }] }, /notPorts\[0\]: "65536" is not a port/],
    ['port name', { rules: [{ to: [{ operation: { ports: ['http'] } }] }] }, /"http" is not a port/],
    ['port as number', { rules: [{ to: [{ operation: { ports: [80] } }] }] }, /^spec\.rules\[0\]\.to\[0\]\.operation\.ports\[0\]: must be a string, got 80$/],
    ['when port', { rules: [{ when: [{ key: 'destination.port', values: ['99999'] }] }] }, /when\[0\]\.values\[0\]: "99999" is not a port/],
    [
      'principal with * in the middle',
      { rules: [{ from: [{ source: { principals: ['cluster.local/ns/*/sa/x'] } }] }] },
      /^spec\.rules\[0\]\.from\[0\]\.source\.principals\[0\]: "cluster\.local\/ns\/\*\/sa\/x" has a '\*' in the middle/,
    ],
    ['two stars', { rules: [{ from: [{ source: { notNamespaces: ['*a*'] } }] }] }, /notNamespaces\[0\]: "\*a\*" has more than one '\*'/],
    ['empty value', { rules: [{ from: [{ source: { namespaces: [''] } }] }] }, /namespaces\[0\]: empty value is not allowed/],
    ['SA wildcard', { rules: [{ from: [{ source: { serviceAccounts: ['ns/*'] } }] }] }, /serviceAccounts\[0\]: "ns\/\*": wildcards are not allowed/],
    ['SA shape', { rules: [{ from: [{ source: { serviceAccounts: ['a/b/c'] } }] }] }, /"a\/b\/c" is not "serviceAccount" or "namespace\/serviceAccount"/],
    [
      'SA with principals',
      { rules: [{ from: [{ source: { serviceAccounts: ['a/b'], principals: ['x'] } }] }] },
      /^spec\.rules\[0\]\.from\[0\]\.source: cannot set serviceAccounts with namespaces or principals$/,
    ],
    ['empty source', { rules: [{ from: [{ source: {} }] }] }, /^spec\.rules\[0\]\.from\[0\]\.source: must not be empty$/],
    ['missing source', { rules: [{ from: [{}] }] }, /^spec\.rules\[0\]\.from\[0\]\.source: required$/],
    ['empty from', { rules: [{ from: [] }] }, /^spec\.rules\[0\]\.from: must not be empty/],
    ['empty operation', { rules: [{ to: [{ operation: {} }] }] }, /^spec\.rules\[0\]\.to\[0\]\.operation: must not be empty$/],
    ['list not a list', { rules: [{ from: [{ source: { namespaces: 'client' } }] }] }, /namespaces: must be a list of strings, got "client"/],
    ['rules not a list', { rules: {} }, /^spec\.rules: must be a list/],
    ['selector wildcard', { selector: { matchLabels: { app: '*' } } }, /^spec\.selector\.matchLabels\["app"\]: "\*": wildcard is not supported in selector$/],
    ['selector value type', { selector: { matchLabels: { app: 1 } } }, /^spec\.selector\.matchLabels\["app"\]: must be a string, got 1$/],
    [
      'selector + targetRefs',
      { selector: { matchLabels: { app: 'a' } }, targetRefs: [{ kind: 'Service', name: 'a' }] },
      /^spec\.targetRefs: only one of targetRefs or selector/,
    ],
    ['trust domain with /', { rules: [{ from: [{ source: { trustDomains: ['a/b'] } }] }] }, /trustDomains\[0\]: "a\/b": a trust domain must not contain '\/'/],
  ];
  for (const [name, spec, re] of table) {
    const errs = validatePolicy(pol('app', 'p', spec));
    assert.ok(
      errs.some((e) => re.test(e)),
      `${name}: ${JSON.stringify(errs)} should contain ${re}`,
    );
  }
  assert.deepEqual(validatePolicy({ name: '', namespace: 'app', spec: {} }), ['name: must be a non-empty string, got ""']);
  assert.deepEqual(validatePolicy({ name: 'x', namespace: 'app', spec: null as unknown as AuthorizationPolicySpec }), ['spec: must be a mapping, got null']);
  // valid policies: no errors
  const valid: unknown[] = [
    {},
    { action: 'DENY', rules: [{}] },
    {
      selector: { matchLabels: { 'app.kubernetes.io/name': 'web' } },
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/a/sa/b', '*', 'x*', '*x'] } }] }],
    },
    {
      rules: [
        {
          from: [{ source: { ipBlocks: ['2001:db8::/32', '::1', '10.0.0.0/8'], notRemoteIpBlocks: ['1.2.3.4'] } }],
          to: [{ operation: { ports: ['1', '65535'], methods: ['GET'] } }],
          when: [{ key: 'request.headers[x-a]', values: ['b'] }],
        },
      ],
    },
    { rules: [{ from: [{ source: { serviceAccounts: ['a', 'ns/b'], ipBlocks: ['1.2.3.4'] } }] }] },
    { rules: [{ from: [{ source: { principals: null, namespaces: ['a'] } }] }] },
    { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], rules: [{ to: [{ operation: { paths: ['/x'] } }] }] },
  ];
  for (const spec of valid) assert.deepEqual(validatePolicy(pol('app', 'p', spec)), [], JSON.stringify(spec));
  // a waypoint policy: one warning (not enforced at L4), none about its HTTP rules
  assert.deepEqual(checkPolicy(pol('app', 'p', valid[6])).warnings, ['spec.targetRefs: the policy targets a waypoint (targetRefs); not enforced at L4']);
});

test('invalid policies fail safe: ALLOW allows nothing, DENY denies everything it selects', () => {
  const badAllow = pol('app', 'bad-allow', {
    selector: { matchLabels: { app: 'web' } },
    rules: [{ from: [{ source: { namespaces: ['client'], ipBlocks: ['10.0.0.0/33'] } }] }],
  });
  const goodAllow = pol('app', 'good-allow', { rules: [{ from: [{ source: { namespaces: ['ops'] } }] }] });
  const badDeny = pol('app', 'bad-deny', { action: 'DENY', selector: { matchLabels: { app: 'db' } }, rules: [{ to: [{ operation: { ports: ['http'] } }] }] });
  run([
    { name: 'invalid ALLOW: allows nothing even where its rule would match', policies: [badAllow], allow: false, reason: 'no-allow-match' },
    {
      name: 'invalid ALLOW still only selects its workloads',
      policies: [badAllow],
      conn: { labels: { app: 'api' } },
      allow: true,
      reason: 'no-allow-policies',
    },
    { name: 'invalid ALLOW + valid ALLOW that matches', policies: [badAllow, goodAllow], conn: { principal: ADMIN }, allow: true, policy: 'app/good-allow' },
    {
      name: 'invalid DENY denies all it selects',
      policies: [badDeny, pol('app', 'a', ALLOW_ALL)],
      conn: { labels: { app: 'db' }, port: 5432 },
      allow: false,
      reason: 'deny-match',
      policy: 'app/bad-deny',
      rule: null,
    },
    { name: 'invalid DENY: other workloads untouched', policies: [badDeny], conn: { labels: { app: 'web' } }, allow: true },
    { name: 'invalid DENY in another namespace', policies: [badDeny], conn: { ns: 'other', labels: { app: 'db' } }, allow: true },
    {
      name: 'unrecognised action: treated as an invalid DENY',
      policies: [pol('app', 'typo', { action: 'DENYY', rules: [{ from: [{ source: { namespaces: ['nobody'] } }] }] })],
      allow: false,
      policy: 'app/typo',
    },
    {
      name: 'mis-cased "allow": an invalid ALLOW (allows nothing; another ALLOW may still match)',
      policies: [pol('app', 'lower', { action: 'allow', rules: [{}] }), pol('app', 'ok', { rules: [{ from: [{ source: { namespaces: ['client'] } }] }] })],
      allow: true,
      policy: 'app/ok',
    },
    {
      name: 'mis-cased "allow" alone',
      policies: [pol('app', 'lower', { action: 'allow', rules: [{}] })],
      allow: false,
      reason: 'no-allow-match',
    },
    {
      name: 'invalid selector: whole namespace',
      policies: [pol('app', 'badsel', { action: 'DENY', selector: { matchLabels: { app: 7 } }, rules: [{ to: [{ operation: { ports: ['1'] } }] }] })],
      conn: { labels: { app: 'zzz' } },
      allow: false,
      policy: 'app/badsel',
    },
    {
      name: 'AUDIT is not enforced',
      policies: [pol('app', 'audit', { action: 'AUDIT', rules: [{}] })],
      allow: true,
      reason: 'no-allow-policies',
    },
    {
      name: 'CUSTOM is not enforced',
      policies: [pol('app', 'ext', { action: 'CUSTOM', provider: { name: 'x' }, rules: [{}] })],
      allow: true,
      reason: 'no-allow-policies',
    },
    {
      name: 'invalid DENY with an unknown field',
      policies: [pol('app', 'unk', { action: 'DENY', rules: [{ from: [{ source: { namespace: ['x'] } }] }] })],
      allow: false,
    },
    {
      name: 'invalid DENY in the root namespace denies mesh-wide',
      policies: [pol('istio-system', 'bad', { action: 'DENY', rules: [{ when: [{ key: 'source.ip', values: ['300.1.1.1'] }] }] })],
      allow: false,
    },
  ]);
  const idx = compilePolicies([
    badAllow,
    goodAllow,
    badDeny,
    pol('app', 'audit', { action: 'AUDIT' }),
    { name: 'orphan', namespace: '', spec: { action: 'DENY', rules: [{}] } } as AuthorizationPolicy,
  ]);
  const desc = Object.fromEntries(idx.describe().map((d) => [d.policy, d]));
  assert.equal(desc['app/bad-allow']!.status, 'invalid-allow-nothing');
  assert.deepEqual(desc['app/bad-allow']!.errors, ['spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/33" is not a CIDR']);
  assert.equal(desc['app/bad-deny']!.status, 'invalid-deny-all');
  assert.deepEqual(desc['app/bad-deny']!.selector, { app: 'db' });
  assert.equal(desc['app/good-allow']!.status, 'enforced');
  assert.equal(desc['app/audit']!.status, 'ignored');
  assert.equal(desc['/orphan']!.status, 'ignored');
  assert.deepEqual(idx.stats(), {
    policies: 5,
    enforced: 1,
    invalid: 4,
    failSafe: 2,
    ignored: 2,
    allow: 2,
    deny: 1,
    byNamespace: { app: 4, '': 1 },
    withWarnings: 0,
  });
});

test('describe() and stats()', () => {
  const idx = compilePolicies([
    pol('istio-system', 'strict', { action: 'DENY', rules: [{ from: [{ source: { notPrincipals: ['*'] } }] }] }),
    pol('istio-system', 'db', { selector: { matchLabels: { app: 'db' } }, rules: [{ to: [{ operation: { methods: ['GET'] } }] }, {}] }),
    pol('app', 'allow-web', { selector: { matchLabels: { app: 'web' } }, rules: [{ from: [{ source: { namespaces: ['client'] } }] }] }),
    pol('app', 'ns', { action: 'DENY', rules: [{ to: [{ operation: { ports: ['22'] } }] }] }),
  ]);
  const d = idx.describe();
  assert.deepEqual(
    d.map((x) => [x.policy, x.scope, x.status, x.rules, x.enforcedRules]),
    [
      ['app/allow-web', 'workload-selector', 'enforced', 1, 1],
      ['app/ns', 'namespace', 'enforced', 1, 1],
      ['istio-system/db', 'global-selector', 'enforced', 2, 1],
      ['istio-system/strict', 'global', 'enforced', 1, 1],
    ],
  );
  assert.equal(d[2]!.warnings.length, 1);
  assert.deepEqual(idx.stats(), {
    policies: 4,
    enforced: 4,
    invalid: 0,
    failSafe: 0,
    ignored: 0,
    allow: 2,
    deny: 2,
    byNamespace: { app: 2, 'istio-system': 2 },
    withWarnings: 1,
  });
  // stats() and describe() are copies
  idx.stats().byNamespace.app = 99;
  idx.describe()[0]!.errors.push('x');
  assert.equal(idx.stats().byNamespace.app, 2);
  assert.deepEqual(idx.describe()[0]!.errors, []);
});
