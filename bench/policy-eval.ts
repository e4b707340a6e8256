/**
 * Micro-benchmark of L4 policy evaluation (src/policy/engine.ts): ns per
 * evaluate() for a workload whose namespace holds 2 policies, with 0, 100 and
 * 10 000 other policies spread over other namespaces (plus, as a worst case,
 * 1 000 selector policies in the workload's own namespace that don't select it).
 *
 *   node dist/bench/policy-eval.js [--iterations N]
 *
 * No privileges, no sandbox; a few seconds.
 */
import { parseArgs } from 'node:util';
import type { AuthorizationPolicy, AuthorizationPolicySpec } from '../src/discovery/model.js';
import { compilePolicies, type ConnectionAttributes, type PolicyIndex } from '../src/policy/engine.js';

const { values } = parseArgs({ options: { iterations: { type: 'string', default: '200000' } } });
const N = Number(values.iterations);

const pol = (namespace: string, name: string, spec: unknown): AuthorizationPolicy => ({ namespace, name, spec: spec as AuthorizationPolicySpec });

const MINE = [
  pol('team-x', 'allow-client', {
    selector: { matchLabels: { app: 'web' } },
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/client/sa/curl', 'cluster.local/ns/ops/*'] } }], to: [{ operation: { ports: ['8080'] } }] }],
  }),
  pol('team-x', 'deny-ssh', {
    action: 'DENY',
    rules: [{ to: [{ operation: { ports: ['22'] } }] }, { from: [{ source: { ipBlocks: ['192.168.0.0/16', '2001:db8::/32'] } }] }],
  }),
];

function noise(n: number): AuthorizationPolicy[] {
  const out: AuthorizationPolicy[] = [];
  for (let i = 0; i < n; i++) {
    const ns = `ns-${i % Math.max(1, Math.floor(n / 10))}`;
    out.push(
      i % 3 === 0
        ? pol(ns, `deny-${i}`, { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: [`10.${i % 250}.0.0/16`] } }] }] })
        : pol(ns, `allow-${i}`, {
            selector: { matchLabels: { app: 'web', shard: String(i) } },
            rules: [{ from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/*`] } }] }],
          }),
    );
  }
  return out;
}

function sameNamespaceNoise(n: number): AuthorizationPolicy[] {
  const out: AuthorizationPolicy[] = [];
  for (let i = 0; i < n; i++) out.push(pol('team-x', `sel-${i}`, { selector: { matchLabels: { app: 'web', shard: String(i) } }, rules: [{}] }));
  return out;
}

const conns: Array<[string, ConnectionAttributes]> = [
  [
    'allow-match (mTLS)',
    {
      dst: { namespace: 'team-x', labels: { app: 'web', version: 'v1', 'pod-template-hash': '7d9c8b' }, ip: '10.0.1.1', port: 8080 },
      src: { ip: '10.0.2.2', principal: 'spiffe://cluster.local/ns/client/sa/curl', namespace: null, serviceAccount: null },
    },
  ],
  [
    'no-allow-match (plaintext)',
    {
      dst: { namespace: 'team-x', labels: { app: 'web', version: 'v1', 'pod-template-hash': '7d9c8b' }, ip: '10.0.1.1', port: 8080 },
      src: { ip: '10.0.2.2', principal: null, namespace: null, serviceAccount: null },
    },
  ],
  [
    'deny-match (port 22)',
    {
      dst: { namespace: 'team-x', labels: { app: 'web', version: 'v1', 'pod-template-hash': '7d9c8b' }, ip: '10.0.1.1', port: 22 },
      src: { ip: '10.0.2.2', principal: 'spiffe://cluster.local/ns/client/sa/curl', namespace: null, serviceAccount: null },
    },
  ],
];

function nsPerEval(idx: PolicyIndex, c: ConnectionAttributes): number {
  let sink = 0;
  for (let i = 0; i < Math.min(N, 20000); i++) sink += idx.evaluate(c).allow ? 1 : 0;
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) sink += idx.evaluate(c).allow ? 1 : 0;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / N);
  }
  if (sink < 0) console.log(sink);
  return best;
}

const setups: Array<[string, AuthorizationPolicy[]]> = [
  ['0 other', []],
  ['100 other', noise(100)],
  ['10 000 other', noise(10_000)],
  ['10 000 other + 1 000 same-ns selectors', [...noise(10_000), ...sameNamespaceNoise(1000)]],
];

console.log(`policy evaluation, ns/evaluate (best of 5 × ${N}); the workload's namespace has 2 policies that apply`);
console.log(['policies'.padEnd(40), 'compile ms'.padStart(10), ...conns.map(([n]) => n.padStart(28))].join(' '));
for (const [name, extra] of setups) {
  const t0 = process.hrtime.bigint();
  const idx = compilePolicies([...extra, ...MINE]);
  const compileMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const cells = conns.map(([, c]) => nsPerEval(idx, c).toFixed(0).padStart(28));
  console.log([name.padEnd(40), compileMs.toFixed(1).padStart(10), ...cells].join(' '));
}
