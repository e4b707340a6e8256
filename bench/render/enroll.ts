/** Section 3 (enrollment latency): tables, prose, stdout summary. */
import type { EnrollResults } from '../results.js';
import { fmt, pct } from '../stats.js';
import { table, textTable } from './md.js';

const HEAD = ['measure (ms)', 'n', 'p50', 'p90', 'p99', 'max'];
/** The first enrollments after the agent started (both processes still cold), left out of the "warm" figure. */
const WARMUP_SKIP = 2;
const TARGET_P99_MS = 100;

interface Summary {
  rows: string[][];
  ok: number[];
  p99: number;
  target: boolean;
  warm: number[];
  slowest: string;
}

function summarize(r: EnrollResults): Summary {
  const enroll = r.pods;
  const ok = enroll.filter((x) => x.latencyMs !== null).map((x) => x.latencyMs!);
  const renamed = enroll.filter((x) => x.renamedMs !== null).map((x) => x.renamedMs!);
  const agentShare = enroll.filter((x) => x.renamedMs !== null && x.latencyMs !== null).map((x) => x.latencyMs! - x.renamedMs!);
  const agentMs = enroll.filter((x) => x.agentMs !== null).map((x) => x.agentMs!);
  const writes = enroll.map((x) => x.writeMs);
  const row = (label: string, xs: number[], d = 1): string[] => [
    label,
    `${xs.length}/${enroll.length}`,
    fmt(pct(xs, 50), d),
    fmt(pct(xs, 90), d),
    fmt(pct(xs, 99), d),
    fmt(pct(xs, 100), d),
  ];
  const p99 = pct(ok, 99);
  return {
    rows: [
      row('first redirected connect - t0 (prober)', ok),
      row('  of which: t0 -> workloads.json replaced (the writer)', renamed),
      row('  of which: file replaced -> first redirected connect (agent)', agentShare),
      row('agent enroll() alone ("ms" of its "pod enrolled" log line)', agentMs, 2),
      row('setEnrollment() call (incl. state.json)', writes),
    ],
    ok,
    p99,
    target: ok.length === enroll.length && p99 <= TARGET_P99_MS,
    warm: enroll
      .slice(WARMUP_SKIP)
      .filter((x) => x.latencyMs !== null)
      .map((x) => x.latencyMs!),
    slowest: enroll
      .map((x, i) => ({ ...x, order: i + 1 }))
      .filter((x) => x.latencyMs !== null)
      .sort((a, b) => b.latencyMs! - a.latencyMs!)
      .slice(0, 3)
      .map(
        (x) =>
          `${x.pod} ${fmt(x.latencyMs)} ms (enrolled #${x.order}; writer ${fmt(x.renamedMs)} ms, agent ${fmt(x.renamedMs === null ? null : x.latencyMs! - x.renamedMs)} ms)`,
      )
      .join(', '),
  };
}

export function enrollText(r: EnrollResults): string[] {
  const s = summarize(r);
  return [
    `\nEnrollment (${r.pods.length} pods, sandbox of ${r.totalPods})`,
    textTable(HEAD, s.rows),
    `target p99 <= ${TARGET_P99_MS} ms: ${s.target ? 'met' : 'NOT met'}; without the first ${WARMUP_SKIP} (cold) enrollments: p99 ${fmt(pct(s.warm, 99))} ms`,
    `slowest: ${s.slowest}`,
  ];
}

export function enrollMarkdown(r: EnrollResults): string[] {
  const s = summarize(r);
  const enroll = r.pods;
  return [
    `## 3. Enrollment latency (1 node × ${r.totalPods} pods, ${enroll.length} pods enrolled one at a time)`,
    '',
    `The ${r.initialEnrolled ?? 50} ambient pods are enrolled when the agent starts (agent log: ${fmt(r.initialEnrollMs, 0)} ms from "datapath loaded" to "agent ready"; \`sandboxUp\` of the ${r.totalPods} pods with the agent ready: ${fmt(r.upMs, 0)} ms).`,
    'Then, for each plain pod in turn: a prober (`bench/prober.ts`) starts in',
    `the pod and connects to ${r.unroutable.ip}:${r.unroutable.port} (no route) every ~1 ms; t0 is taken`,
    'right before `setEnrollment(pod, true)` rewrites the workload file; the',
    'figure is the time of the first connect that succeeds, i.e. that the',
    "pod's new connect4 hook sent to the agent's listener. Resolution ~1 ms",
    '(the probe cadence). Percentiles are nearest-rank (with 50 pods, p99 is',
    'the maximum).',
    '',
    table(HEAD, s.rows),
    '',
    'Each row has its own percentiles: the parts do not add up to the total.',
    `Slowest: ${s.slowest}. Without the first ${WARMUP_SKIP} enrollments after the agent started (both processes still cold): p50 ${fmt(pct(s.warm, 50))}, p99 ${fmt(pct(s.warm, 99))} ms over ${s.warm.length} pods.`,
    '',
    `The agent's share (file replaced -> first redirected connect) is inotify, a 2 ms coalescing timer, re-reading and parsing the whole workload file, the reconcile, and enroll() itself (listeners in the pod netns, map entries, 3 BPF links). For scale: parsing this ${(r.fileBytes / 1024).toFixed(0)} KiB workloads.json (${r.totalPods} pods) the way the agent does (\`parseDocument\`, \`yaml\` package) takes ${fmt(r.yamlParseMs)} ms (median of 15 warm runs in the benchmark process); the writer side (\`setEnrollment\`) renders the whole file as YAML too.`,
    '',
    `Target p99 <= ${TARGET_P99_MS} ms (first redirected connect): **${s.target ? 'met' : 'NOT met'}** (p99 ${fmt(s.p99)} ms${s.ok.length < enroll.length ? `; ${enroll.length - s.ok.length} pods never redirected within 5 s` : ''}).`,
    '',
    '<details><summary>per pod (ms)</summary>',
    '',
    table(
      [
        'pod',
        'first redirected connect - t0',
        'workloads.json replaced - t0',
        '"pod enrolled" log time - t0 (1 ms res.)',
        'agent enroll()',
        'setEnrollment()',
        'probe attempts',
      ],
      enroll.map((x) => [x.pod, fmt(x.latencyMs), fmt(x.renamedMs), fmt(x.agentDoneMs, 0), fmt(x.agentMs, 2), fmt(x.writeMs), String(x.attempts)]),
    ),
    '',
    '</details>',
    '',
  ];
}
