/** Section 11 (nothing leaks, nothing balloons): detection, a non-reading app, liveness cost, soak. */
import type { LifecycleResults } from '../results.js';
import { pct, slope } from '../stats.js';
import { table } from './md.js';

type SoakKey = 'fds' | 'rssMiB' | 'heapMiB';

function soakRows(s: LifecycleResults['soak']): string[][] {
  const warm = s.samples.filter((x) => x.t >= s.warmupS);
  return s.nodes.map((node) => {
    const ss = warm.filter((x) => x.node === node);
    const perMin = (k: SoakKey): string => slope(ss.filter((x) => x[k] !== null).map((x) => [x.t / 60, x[k] as number])).toFixed(3);
    const range = (k: SoakKey): string => {
      const v = ss.map((x) => x[k]).filter((x): x is number => x !== null);
      return `${Math.min(...v).toFixed(k === 'fds' ? 0 : 1)}–${Math.max(...v).toFixed(k === 'fds' ? 0 : 1)}`;
    };
    return [node, range('fds'), perMin('fds'), range('rssMiB'), perMin('rssMiB'), range('heapMiB'), perMin('heapMiB')];
  });
}

export function lifecycleMarkdown(r: LifecycleResults, heading = '##'): string[] {
  const { detection: d, nonReading: nr, liveness: lv, soak } = r;
  const pt = d.peerTimeoutMs / 1000;
  const rj = soak.rate;
  return [
    `${heading} Nothing leaks, nothing balloons: detection, a non-reading app, liveness cost, soak`,
    '',
    '### Detection',
    '',
    `A peer agent SIGKILLed mid-stream (${d.deathTrials} trials each way): time until the surviving side has no socket of the flow left in its pod.`,
    '',
    table(
      ['killed', 'survivor cleaned up p50 ms', 'p99 ms', 'max ms'],
      (['n1', 'n2'] as const).map((v) => [
        v === 'n1' ? 'client-side agent (n1)' : 'server-side agent (n2)',
        pct(d.deathMs[v], 50).toFixed(0),
        pct(d.deathMs[v], 99).toFixed(0),
        Math.max(...d.deathMs[v]).toFixed(0),
      ]),
    ),
    '',
    `A partition (the n2 link taken off the bridge: no FIN, no RST) with peerTimeout ${pt} s (${d.partitionTrials} trials): time until each side ended the flow.`,
    '',
    table(
      ['side', 'p50 ms', 'p99 ms', '÷ peerTimeout (p99)'],
      (['client', 'server'] as const).map((s) => [
        `${s} (${s === 'client' ? 'n1: PING timeout, app reset' : 'n2: PING timeout, app socket closed'})`,
        pct(d.partitionMs[s], 50).toFixed(0),
        pct(d.partitionMs[s], 99).toFixed(0),
        (pct(d.partitionMs[s], 99) / d.peerTimeoutMs).toFixed(2),
      ]),
    ),
    '',
    'With the default peerTimeout (30 s) the same checks fire at 7.5 s (PING), 15 s (PING timeout), 15 s + 3 × 5 s (keepalive): a partition is detected within about 30 s.',
    '',
    '### A non-reading app',
    '',
    `N connections from n1-p1, each writing ${nr.writeMiB} MiB, into an app on n2-p1 that never reads; after a ${nr.warmupMiB} MiB echo warm-up. The destination agent's RSS 5 s after the writers started; its stream window (config_dump \`resources.hbone.streamWindow\`); the documented bound (\`memoryBound\`, docs/ARCHITECTURE.md#limits); the machine's TCP memory (\`/proc/net/sockstat\` pages; most of it is the writing app's send buffer and the non-reading app's receive buffer, charged to their own cgroups, not the agent's).`,
    '',
    table(
      ['N', 'streams on n2', 'window KiB', 'n2 agent RSS MiB', 'growth MiB', 'bound MiB', 'TCP memory MiB'],
      nr.rows.map((x) => [
        String(x.connections),
        String(x.serverStreams),
        (x.streamWindowBytes / 1024).toFixed(0),
        `${x.rssBeforeMiB.toFixed(1)} -> ${x.rssAfterMiB.toFixed(1)}`,
        `**+${(x.rssAfterMiB - x.rssBeforeMiB).toFixed(1)}**`,
        x.boundMiB.toFixed(1),
        `${x.tcpBeforeMiB.toFixed(0)} -> ${x.tcpAfterMiB.toFixed(0)}`,
      ]),
    ),
    '',
    `Target: growth ≤ ${nr.targetMiB} MiB at 300 (before: +150 MB at 60, with 4 MiB windows).`,
    '',
    '### The cost of keepalive and PING',
    '',
    `${lv.idleConnections} idle HBONE connections n1-p1 -> n2-p1 (${Math.ceil(lv.idleConnections / 100)} sessions of 100 streams); each agent's CPU over ${lv.seconds} s (utime+stime). Keepalive probes are sent by the kernel; the agent's share is the PINGs, one per session every peerTimeout/4.`,
    '',
    table(
      ['peerTimeout', 'idle connections', 'n1 agent CPU %', 'n2 agent CPU %'],
      lv.rows.map((x) => [`${x.peerTimeout}${x.isDefault ? ' (default)' : ''}`, String(lv.idleConnections), x.n1CpuPct.toFixed(2), x.n2CpuPct.toFixed(2)]),
    ),
    '',
    '### Soak',
    '',
    `${soak.seconds} s: 200 new connections/s n1-p1 -> n2-p1 (\`nettool rate\`: ${rj.attempted ?? '?'} attempted, ${rj.failed ?? '?'} failed${rj.errors && Object.keys(rj.errors).length ? ` ${JSON.stringify(rj.errors)}` : ''}), 100 held connections (each lives 30–90 s, then is replaced), a random node's agent restarted with hand-over every minute (${soak.restarts.length}: ${soak.restarts.map((x) => `${x.atS} s: ${x.node} (ready in ${x.readyMs} ms)`).join('; ')}); drainTimeout ${soak.drainTimeoutS / 60} min. Every 10 s: the fds and RSS summed over every agent process of the node (the serving one and those still draining), and the serving agent's live heap after a forced GC (\`POST /debug/heap\`). Slopes by least squares after the first ${Math.round(soak.warmupS)} s.`,
    '',
    table(['node', 'fds (range)', 'fds / min', 'RSS MiB (range)', 'RSS MiB / min', 'live heap MiB (range)', 'heap MiB / min'], soakRows(soak)),
    '',
    "Target: slopes ≈ 0 after warm-up (a draining agent briefly adds its process to the node's sums; it exits once its held connections end).",
    '',
  ];
}
