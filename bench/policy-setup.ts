/**
 * Connection set-up latency through the mesh with 0, 100 and 10 000
 * AuthorizationPolicies loaded (ratio to 0). Client n1-p1 -> echo server in
 * n2-p1 over HBONE; the destination agent evaluates policy on every CONNECT.
 * Two policies always select n2-p1 (an ALLOW for n1-p1's principal and a
 * DENY that does not match), the rest live in other namespaces.
 *
 *   node dist/bench/policy-setup.js [--quick]   -> prints a markdown section
 */
import fs from 'node:fs';
import path from 'node:path';
import { sandboxDown, sandboxUp, type SandboxState } from '../src/sandbox/topology.js';
import { nettoolServer, runInPod } from '../src/sandbox/podproc.js';
import { getJsonInNetns } from '../src/util/netns-http.js';

const HERE = path.dirname(new URL(import.meta.url).pathname);

function policies(extra: number): unknown {
  const items: unknown[] = [
    { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'allow-client', namespace: 'ambient-demo' },
      spec: { selector: { matchLabels: { app: 'n2-p1' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/ambient-demo/sa/sa-n1-p1'] } }], to: [{ operation: { ports: ['8081'] } }] }] } },
    { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-other', namespace: 'ambient-demo' },
      spec: { selector: { matchLabels: { app: 'n2-p1' } }, action: 'DENY', rules: [{ from: [{ source: { namespaces: ['nobody'] } }] }] } },
  ];
  for (let i = 0; i < extra; i++) {
    items.push({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: `p-${i}`, namespace: `bench-${i % 500}` },
      spec: { selector: { matchLabels: { app: `app-${i}` } }, action: i % 3 === 0 ? 'DENY' : 'ALLOW', rules: [{ from: [{ source: { principals: [`cluster.local/ns/bench-${i % 500}/sa/sa-${i}`], ipBlocks: ['10.0.0.0/8'] } }], to: [{ operation: { ports: ['80', '8080'] } }] }] } });
  }
  return { apiVersion: 'v1', kind: 'List', items };
}

export async function policySetupBench(opts: { quick?: boolean } = {}): Promise<string> {
  const n = opts.quick ? 100 : 400;
  let st: SandboxState | null = null;
  const procs: Array<{ kill: (s?: NodeJS.Signals) => boolean }> = [];
  const rows: Array<{ policies: number; p50: number; p90: number; p99: number; compileMs: number | null }> = [];
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
        if (Date.now() - t0 > 120_000) throw new Error(`agent did not load ${want} policies`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const log = fs.readFileSync(n2.log, 'utf8').split('\n').filter((l) => l.includes('"policies compiled"')).pop();
      const compileMs = log ? Number(JSON.parse(log).ms) : null;
      const r = await runInPod(pod('n1-p1'), [process.execPath, path.join(HERE, 'setup-client.js'), pod('n2-p1').ip, '8081', String(n), '30'], { timeoutMs: 120_000 });
      if (r.code !== 0) throw new Error(`client failed: ${r.stderr}`);
      const j = JSON.parse(r.stdout) as { p50_us: number; p90_us: number; p99_us: number };
      rows.push({ policies: want, p50: j.p50_us, p90: j.p90_us, p99: j.p99_us, compileMs });
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await sandboxDown();
  }
  const base = rows[0]!;
  const lines = [
    '## Connection set-up latency vs number of AuthorizationPolicies',
    '',
    `Client n1-p1 -> echo server in n2-p1 over HBONE (pooled h2 session), ${n} sequential connections after 30 warm-up ones; set-up = connect() until the first echoed byte. Two policies select the destination (an ALLOW that matches, a DENY that does not); the others are in 500 other namespaces. "compile" is the agent's own log of compiling the index after the change.`,
    '',
    '| policies loaded | p50 µs | p90 µs | p99 µs | p50 × (0 policies) | p99 × (0 policies) | compile ms |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.policies} | ${r.p50.toFixed(0)} | ${r.p90.toFixed(0)} | ${r.p99.toFixed(0)} | ${(r.p50 / base.p50).toFixed(2)} | ${(r.p99 / base.p99).toFixed(2)} | ${r.compileMs?.toFixed(1) ?? '-'} |`),
    '',
  ];
  return lines.join('\n');
}

if (process.argv[1] && process.argv[1].endsWith('policy-setup.js')) {
  policySetupBench({ quick: process.argv.includes('--quick') }).then((s) => process.stdout.write(s + '\n'), (e) => { process.stderr.write(`${(e as Error).stack}\n`); process.exit(1); });
}
