/** Section 8 (connection set-up latency vs number of AuthorizationPolicies). */
import type { PolicyResults } from '../results.js';
import { table } from './md.js';

export function policyMarkdown(r: PolicyResults, heading = '##'): string[] {
  const base = r.rows[0];
  return [
    `${heading} Connection set-up latency vs number of AuthorizationPolicies`,
    '',
    `Client n1-p1 -> echo server in n2-p1 over HBONE (pooled h2 session), ${r.connections} sequential connections after ${r.warmup} warm-up ones; set-up = connect() until the first echoed byte. Two policies select the destination (an ALLOW that matches, a DENY that does not); the others are in ${r.otherNamespaces} other namespaces. "compile" is the agent's own log of compiling the index after the change.`,
    '',
    table(
      ['policies loaded', 'p50 µs', 'p90 µs', 'p99 µs', 'p50 × (0 policies)', 'p99 × (0 policies)', 'compile ms'],
      r.rows.map((x) => [
        String(x.policies),
        x.p50Us.toFixed(0),
        x.p90Us.toFixed(0),
        x.p99Us.toFixed(0),
        (x.p50Us / (base?.p50Us ?? NaN)).toFixed(2),
        (x.p99Us / (base?.p99Us ?? NaN)).toFixed(2),
        x.compileMs?.toFixed(1) ?? '-',
      ]),
    ),
    '',
  ];
}
