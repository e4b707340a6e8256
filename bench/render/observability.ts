/** Section 9 (cost of observability: agent CPU per request, /metrics scrape under load). */
import type { ObservabilityResults } from '../results.js';
import { mean } from '../stats.js';
import { table } from './md.js';

export function observabilityMarkdown(r: ObservabilityResults, heading = '##'): string[] {
  const { cpu, latency: l } = r;
  const total = cpu.agents.reduce((a, x) => a + x.cpuS, 0);
  const per1k = (s: number): string => ((s / cpu.requests) * 1000).toFixed(3);
  const base = l.runs.filter((x) => x.mode === 'no scrape');
  const scr = l.runs.filter((x) => x.mode === 'scraping');
  const paced = l.runs.filter((x) => x.mode === 'scraping 4/s');
  const pacedRatio =
    paced.reduce((a, x) => a + x.rr.p99Us, 0) /
    Math.max(
      1,
      base.reduce((a, x) => a + x.rr.p99Us, 0),
    );
  const p99Ratio = mean(scr.map((x) => x.rr.p99Us)) / mean(base.map((x) => x.rr.p99Us));
  const p50Ratio = mean(scr.map((x) => x.rr.p50Us)) / mean(base.map((x) => x.rr.p50Us));
  const s = l.stressScrapes;
  return [
    `${heading} Cost of observability: agent CPU per request, /metrics scrape under ${l.idleConnections} connections`,
    '',
    `Sandbox 2 nodes × 2 pods; client n1-p1 -> \`nettool serve\` in n2-p1 over HBONE (both agents on the path). CPU = utime+stime of each agent (\`/proc/<pid>/stat\`) around \`nettool rr\` of ${cpu.requests} round trips of 1 KiB + 1 KiB echo on one connection (${cpu.wallS.toFixed(1)} s, p50 ${cpu.rr.p50Us.toFixed(0)} µs; resolution 10 ms of CPU).`,
    '',
    table(
      ['agent', 'CPU s', 'CPU s per 1000 requests'],
      [
        ...cpu.agents.map((x) => [`${x.node} (${x.node === 'n1' ? 'client side' : 'server side'})`, x.cpuS.toFixed(2), per1k(x.cpuS)]),
        ['total', total.toFixed(2), per1k(total)],
      ],
    ),
    '',
    `With ${l.idleConnections} idle connections n1-p1 -> n2-p1 held open: \`nettool rr\` ${l.requests} × 1 KiB round trips, without scraping, then while this process scrapes both agents' \`/metrics\` (port ${l.metricsPort}) every ${l.pacedMs} ms, then back to back without pause (stress); ${l.rounds} round(s).`,
    '',
    table(
      ['round', 'mode', 'p50 µs', 'p90 µs', 'p99 µs', 'scrapes'],
      l.runs.map((x) => [
        String(x.round),
        x.mode,
        x.rr.p50Us.toFixed(0),
        x.rr.p90Us.toFixed(0),
        x.rr.p99Us.toFixed(0),
        x.scrapes === null ? '-' : String(x.scrapes),
      ]),
    ),
    '',
    `- p99 while scraping each agent ${1000 / l.pacedMs} times a second (${(15_000 / l.pacedMs).toFixed(0)}× Prometheus' default 15 s interval) / not scraping: **${pacedRatio.toFixed(2)}×** (target ≤ 1.10: ${pacedRatio <= 1.1 ? 'met' : 'NOT met'})`,
    `- stress, scraping back to back without pause: p99 ${p99Ratio.toFixed(2)}×, p50 ${p50Ratio.toFixed(2)}× (each scrape costs the agent a few ms of its single thread; at that rate it is busy scraping most of the time)`,
    `- scrape duration (both agents, ${s.count} scrapes): p50 ${s.p50Ms.toFixed(1)} ms, p99 ${s.p99Ms.toFixed(1)} ms; response ${(s.meanBytes / 1024).toFixed(1)} KiB (max ${(s.maxBytes / 1024).toFixed(1)} KiB)`,
    '',
  ];
}
