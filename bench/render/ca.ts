/** Section 12 (the cluster CA): tables and prose. */
import type { CaResults } from '../results.js';
import { fmt, pct } from '../stats.js';
import { table } from './md.js';

const ok = (xs: Array<number | null>): number[] => xs.filter((x): x is number => x !== null);

export function caMarkdown(r: CaResults, heading = '## 12.'): string[] {
  const md: string[] = [`${heading} The cluster CA (\`ambientd ca\` in its own process and netns; no node holds a signing key)`, ''];
  const i = r.issuance;
  if (i) {
    const s = i.sequentialMs;
    md.push(
      "Issuance, from node n1's netns to the CA at 10.100.0.254:15012 over the fabric: per request what an agent does for a new identity",
      '(ECDSA P-256 key, CSR, CreateCertificate over gRPC+TLS with the node token, node authorization, signing, chain check against the root).',
      '',
      table(
        ['measure', 'n', 'p50', 'p90', 'p99', 'max'],
        [['one request after another (ms, client side)', String(s.length), fmt(pct(s, 50)), fmt(pct(s, 90)), fmt(pct(s, 99)), fmt(pct(s, 100))]],
      ),
      '',
      `${i.concurrency} concurrent callers: ${i.concurrentCerts} certificates in ${fmt(i.concurrentSeconds)} s = **${fmt(i.concurrentCerts / i.concurrentSeconds)} certificates/s** (client and CA on the same 2-core machine; ${i.errors} errors).`,
      `The CA's own handling time (its \`ambientd_ca_request_duration_seconds\`), mean over all ${i.caIssued ?? '-'} issued requests, the concurrent ones included (they queue in its event loop): ${fmt(i.caMeanMs, 1)} ms.`,
      '',
    );
  }
  if (r.firstConnection.length) {
    md.push(
      'Enrollment -> first HBONE connection: a plain pod of n1 loops connections (one per 10 ms) to an ambient pod of n2 and is enrolled;',
      'the figure is the end of its first outbound HBONE connection (agent record) minus the enrollment write. Same run, both CAs.',
      '',
      table(
        ['CA', 'pods', 'p50 (ms)', 'max (ms)', 'samples (ms)'],
        r.firstConnection.map((f) => {
          const x = ok(f.samplesMs);
          return [f.ca, `${x.length}/${f.samplesMs.length}`, fmt(pct(x, 50), 0), fmt(pct(x, 100), 0), f.samplesMs.map((v) => fmt(v, 0)).join(', ')];
        }),
      ),
      '',
    );
  }
  if (r.startup.length) {
    md.push(
      'Start-up of a node: the agent started with every pod already there; ready (with the cluster CA: only once a certificate can be had),',
      "and every ambient pod's certificate held (issued one at a time in the background by the prefetch).",
      '',
      table(
        ['CA', 'pods (ambient)', 'agent ready (ms)', 'all certificates held (ms)'],
        r.startup.map((s) => [s.ca, `${s.pods} (${s.ambientPods})`, fmt(s.readyMs, 0), fmt(s.allCertsMs, 0)]),
      ),
      '',
    );
  }
  return md;
}
