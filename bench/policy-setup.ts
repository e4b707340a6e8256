/**
 * Connection set-up latency through the mesh with 0, 100 and 10 000
 * AuthorizationPolicies loaded (ratio to 0). Client n1-p1 -> echo server in
 * n2-p1 over HBONE; the destination agent evaluates policy on every CONNECT.
 * Two policies always select n2-p1 (an ALLOW for n1-p1's principal and a
 * DENY that does not match), the rest live in other namespaces.
 *
 * Returns PolicyResults (bench/render/policy.ts writes section 8).
 *
 *   node dist/bench/policy-setup.js [--quick]   -> prints the markdown section
 */
import fs from 'node:fs';
import path from 'node:path';
import { sandboxDown, sandboxUp, type SandboxState } from '../tools/sandbox/index.js';
import { nettoolServer, runInPod } from '../tools/sandbox/podproc.js';
import { getJsonInNetns } from '../src/util/netns-http.js';
import { toolFailed, HINT_OUTPUT } from './lib.js';
import type { PolicyResults } from './results.js';
import { policyMarkdown } from './render/policy.js';

const HERE = path.dirname(new URL(import.meta.url).pathname);
/** set-up connections before the measured ones */
const WARMUP = 30;
/** the extra policies live in these many other namespaces */
const OTHER_NAMESPACES = 500;

function policies(extra: number): unknown {
  const items: unknown[] = [
    {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'allow-client', namespace: 'ambient-demo' },
      spec: {
        selector: { matchLabels: { app: 'n2-p1' } },
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/ambient-demo/sa/sa-n1-p1'] } }], to: [{ operation: { ports: ['8081'] } }] }],
      },
    },
    {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'deny-other', namespace: 'ambient-demo' },
      spec: { selector: { matchLabels: { app: 'n2-p1' } }, action: 'DENY', rules: [{ from: [{ source: { namespaces: ['nobody'] } }] }] },
    },
  ];
  for (let i = 0; i < extra; i++) {
    items.push({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: `p-${i}`, namespace: `bench-${i % OTHER_NAMESPACES}` },
      spec: {
        selector: { matchLabels: { app: `app-${i}` } },
        action: i % 3 === 0 ? 'DENY' : 'ALLOW',
        rules: [
          {
            from: [{ source: { principals: [`cluster.local/ns/bench-${i % OTHER_NAMESPACES}/sa/sa-${i}`], ipBlocks: ['10.0.0.0/8'] } }],
            to: [{ operation: { ports: ['80', '8080'] } }],
          },
        ],
      },
    });
  }
  return { apiVersion: 'v1', kind: 'List', items };
}

export async function policySetupBench(opts: { quick?: boolean } = {}): Promise<PolicyResults> {
  const n = opts.quick ? 100 : 400;
  let st: SandboxState | null = null;
  const procs: Array<{ kill: (s?: NodeJS.Signals) => boolean }> = [];
  const rows: PolicyResults['rows'] = [];
  try {
    st = await sandboxUp({ nodes: 2, pods: 2 });
    const pod = (x: string): SandboxState['pods'][number] => st!.pods.find((p) => p.name === x)!;
    const n2 = st.nodes.find((x) => x.name === 'n2')!;
    procs.push(await nettoolServer(pod('n2-p1'), 'serve', 8081));
    const file = path.join(st.meshDir, '60-bench-policies.json');
    for (const extra of [0, 100, 10_000]) {
      const doc = JSON.stringify(extra === 0 ? { apiVersion: 'v1', kind: 'List', items: [] } : policies(extra));
      fs.writeFileSync(file + '.tmp', doc);
      fs.renameSync(file + '.tmp', file);
      const want = extra === 0 ? 0 : extra + 2;
      const t0 = Date.now();
      for (;;) {
        const d = await getJsonInNetns<{ policyStats: { policies: number } }>(n2.netnsPath, '127.0.0.1', 15000, '/config_dump');
        if (d.policyStats.policies === want) break;
        if (Date.now() - t0 > 120_000)
          throw toolFailed(`agent of n2 did not load ${want} policies within 120 s`, `see its log ${n2.log} ("policies compiled" / policy errors)`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const log = fs
        .readFileSync(n2.log, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"policies compiled"'))
        .pop();
      const compileMs = log ? Number(JSON.parse(log).ms) : null;
      const r = await runInPod(pod('n1-p1'), [process.execPath, path.join(HERE, 'setup-client.js'), pod('n2-p1').ip, '8081', String(n), String(WARMUP)], {
        timeoutMs: 120_000,
      });
      if (r.code !== 0) throw toolFailed(`set-up client (bench/setup-client.ts) failed (exit ${r.code}): ${r.stderr.trim().slice(-500)}`, HINT_OUTPUT);
      const j = JSON.parse(r.stdout) as { p50_us: number; p90_us: number; p99_us: number };
      rows.push({ policies: want, p50Us: j.p50_us, p90Us: j.p90_us, p99Us: j.p99_us, compileMs });
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await sandboxDown();
  }
  return { connections: n, warmup: WARMUP, otherNamespaces: OTHER_NAMESPACES, rows };
}

if (process.argv[1] && process.argv[1].endsWith('policy-setup.js')) {
  policySetupBench({ quick: process.argv.includes('--quick') }).then(
    (r) => process.stdout.write(policyMarkdown(r).join('\n') + '\n'),
    (e) => {
      process.stderr.write(`${(e as Error).stack}\n`);
      process.exit(1);
    },
  );
}
