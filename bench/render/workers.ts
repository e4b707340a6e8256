/**
 * Section 14 (bench/workers.ts): every figure of issue 13 per variant
 * (workers 1, workers 2, the main thread), each beside its baseline of the
 * same rounds, and the goal it is held to.
 */
import type { WorkersResults, WorkersTrial } from '../results.js';
import { fmt } from '../stats.js';

const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

export interface WorkersRow {
  variant: string;
  workers: number;
  cpsMesh: number;
  cpsDirect: number;
  cpsRatio: number;
  /** agent CPU µs per connection, client side (n1) and server side (n2) */
  cpuPerConnUs: [number, number];
  tput1: number;
  tput4: number;
  nghttpx1: number;
  nghttpx4: number;
  /** client agent CPU s per Gbit ÷ h2fwd's, 1 stream */
  cpuPerGbitRatio: number;
  rrMesh: number;
  rrDirect: number;
  addedP50: number;
  p99Quiet: number;
  p99Scraped: number;
  scale: number;
  /** live heap bytes per idle connection [n1, n2] */
  heapPerConn: [number, number];
  /**
   * the largest deviation of a worker's share from the mean share in the cps
   * runs: [client side (n1: each connection picked by the kernel), server
   * side (n2: inbound HBONE, picked per session)]; null without workers
   */
  shareDeviation: [number | null, number | null];
}

export function workersRows(r: WorkersResults): WorkersRow[] {
  return r.variants.map((v) => {
    const of = (metric: WorkersTrial['metric'], path: string): WorkersTrial[] =>
      r.trials.filter((t) => t.variant === v.name && t.metric === metric && t.path === path);
    const val = (metric: WorkersTrial['metric'], path: string): number => mean(of(metric, path).map((t) => t.value));
    const p99 = (metric: WorkersTrial['metric'], path: string): number => mean(of(metric, path).map((t) => t.p99 ?? NaN));
    const cps = of('cps', 'mesh');
    const perConn = (side: number): number => mean(cps.map((t) => ((t.agentCpuS?.[side] ?? NaN) / t.ops) * 1e6));
    const perGbit = (ts: WorkersTrial[]): number => mean(ts.map((t) => (t.agentCpuS?.[0] ?? NaN) / t.ops));
    const dev = (side: number): number | null => {
      const ds: number[] = [];
      for (const t of cps) {
        const node = t.shares?.[side];
        const m = node ? mean(node) : 0;
        if (node && node.length > 1 && m > 0) ds.push(Math.max(...node.map((x) => Math.abs(x - m) / m)));
      }
      return ds.length ? Math.max(...ds) : null;
    };
    const heap = of('heap', 'idle');
    return {
      variant: v.name,
      workers: v.workers,
      cpsMesh: val('cps', 'mesh'),
      cpsDirect: val('cps', 'direct'),
      cpsRatio: val('cps', 'mesh') / val('cps', 'direct'),
      cpuPerConnUs: [perConn(0), perConn(1)],
      tput1: val('tput1', 'mesh'),
      tput4: val('tput4', 'mesh'),
      nghttpx1: val('tput1', 'nghttpx'),
      nghttpx4: val('tput4', 'nghttpx'),
      cpuPerGbitRatio: perGbit(of('tput1', 'mesh')) / perGbit(of('tput1', 'nghttpx')),
      rrMesh: val('rr', 'mesh'),
      rrDirect: val('rr', 'direct'),
      addedP50: val('rr', 'mesh') - val('rr', 'direct'),
      p99Quiet: p99('scrape', 'quiet'),
      p99Scraped: p99('scrape', 'scraped'),
      scale: val('scale', 'same-node'),
      heapPerConn: [mean(heap.map((t) => t.heapPerConn?.[0] ?? NaN)), mean(heap.map((t) => t.heapPerConn?.[1] ?? NaN))],
      shareDeviation: [dev(0), dev(1)],
    };
  });
}

const verdict = (ok: boolean): string => (ok ? 'met' : '**missed**');

export function workersMarkdown(r: WorkersResults, heading = '## 14.'): string[] {
  const rows = workersRows(r);
  const w1 = rows.find((x) => x.workers === 1);
  const w2 = rows.find((x) => x.workers === 2);
  const out = [
    `${heading} The data plane on worker threads (2 nodes × 4 pods, IPv4; ${r.rounds} round(s), ${r.seconds} s per measurement, variants in alternating order; ${r.cpus} vCPUs shared by agents and load)`,
    '',
    'Every figure of a column comes from the same rounds as its baseline. "main thread" is `workers: 0`: the data plane on the main thread, as before the workers (the before of this change).',
    '',
    '| figure | ' + rows.map((x) => x.variant).join(' | ') + ' | goal |',
    '|---|' + rows.map(() => '---|').join('') + '---|',
  ];
  const line = (name: string, f: (x: WorkersRow) => string, goal: string): void => void out.push(`| ${name} | ${rows.map(f).join(' | ')} | ${goal} |`);
  line(
    'new HBONE connections/s (16 loops, 1-byte echo), mesh / direct',
    (x) => `${fmt(x.cpsMesh, 0)} / ${fmt(x.cpsDirect, 0)} = **${fmt(x.cpsRatio, 2)}×**`,
    '≥ 0.5×',
  );
  line('agent CPU per new connection, client side / server side', (x) => `${fmt(x.cpuPerConnUs[0], 0)} / ${fmt(x.cpuPerConnUs[1], 0)} µs`, '≤ 150 µs');
  line(
    'cross-node bulk, 1 stream: mesh / nghttpx tunnel',
    (x) => `${fmt(x.tput1, 2)} / ${fmt(x.nghttpx1, 2)} = **${fmt(x.tput1 / x.nghttpx1, 2)}×**`,
    '≥ 1.0×',
  );
  line(
    'cross-node bulk, 4 streams: mesh / nghttpx tunnel',
    (x) => `${fmt(x.tput4, 2)} / ${fmt(x.nghttpx4, 2)} = **${fmt(x.tput4 / x.nghttpx4, 2)}×**`,
    '≥ 1.0×',
  );
  line('client agent CPU per Gbit/s ÷ h2fwd (1 stream)', (x) => `**${fmt(x.cpuPerGbitRatio, 2)}×**`, '≤ 1.1×');
  line(
    '1 KiB round trip p50, pinned: mesh / direct (added)',
    (x) => `${fmt(x.rrMesh, 0)} / ${fmt(x.rrDirect, 0)} µs (**+${fmt(x.addedP50, 0)} µs**)`,
    '≤ 120 µs added',
  );
  line(
    'rr p99 (not pinned) while /metrics is scraped back to back ÷ not scraping',
    (x) => `${fmt(x.p99Scraped, 0)} / ${fmt(x.p99Quiet, 0)} µs = **${fmt(x.p99Scraped / x.p99Quiet, 2)}×**`,
    '≤ 1.5×',
  );
  line(
    'live heap per idle connection (after a full GC), client / server agent',
    (x) => `${fmt(x.heapPerConn[0] / 1024, 2)} / ${fmt(x.heapPerConn[1] / 1024, 2)} KiB`,
    '≤ 4 KiB',
  );
  line('capacity with one agent carrying both ends (connections/s)', (x) => fmt(x.scale, 0), '2 workers ÷ 1 ≥ 1.6×');
  const pctOf = (d: number | null): string => (d === null ? '—' : `${fmt(d * 100, 0)}%`);
  line(
    "largest deviation of a worker's share from the mean (cps): client side (per connection) / server side (inbound HBONE, per session)",
    (x) => (x.shareDeviation[0] === null && x.shareDeviation[1] === null ? '—' : `${pctOf(x.shareDeviation[0])} / ${pctOf(x.shareDeviation[1])}`),
    '±20%',
  );
  out.push('');
  if (w1 && w2) {
    const scaling = w2.scale / w1.scale;
    out.push(
      `Scaling, where the agent is the bottleneck: **${fmt(scaling, 2)}×** with 2 workers against 1 (goal ≥ 1.6×: ${verdict(scaling >= 1.6)}).`,
      '',
      '| goal | workers 1 | workers 2 |',
      '|---|---|---|',
      `| connections/s ≥ 0.5× direct | ${verdict(w1.cpsRatio >= 0.5)} | ${verdict(w2.cpsRatio >= 0.5)} |`,
      `| CPU per connection ≤ 150 µs per side | ${verdict(Math.max(...w1.cpuPerConnUs) <= 150)} | ${verdict(Math.max(...w2.cpuPerConnUs) <= 150)} |`,
      `| bulk ≥ 1.0× nghttpx, 1 and 4 streams | ${verdict(w1.tput1 >= w1.nghttpx1 && w1.tput4 >= w1.nghttpx4)} | ${verdict(w2.tput1 >= w2.nghttpx1 && w2.tput4 >= w2.nghttpx4)} |`,
      `| CPU per Gbit/s ≤ 1.1× h2fwd | ${verdict(w1.cpuPerGbitRatio <= 1.1)} | ${verdict(w2.cpuPerGbitRatio <= 1.1)} |`,
      `| added p50 ≤ 120 µs | ${verdict(w1.addedP50 <= 120)} | ${verdict(w2.addedP50 <= 120)} |`,
      `| scrape p99 ≤ 1.5× | ${verdict(w1.p99Scraped / w1.p99Quiet <= 1.5)} | ${verdict(w2.p99Scraped / w2.p99Quiet <= 1.5)} |`,
      `| live heap ≤ 4 KiB per idle connection | ${verdict(Math.max(...w1.heapPerConn) <= 4096)} | ${verdict(Math.max(...w2.heapPerConn) <= 4096)} |`,
      `| per-worker share within ±20% (connections the kernel spreads: the client side) | — | ${w2.shareDeviation[0] === null ? '—' : verdict(w2.shareDeviation[0] <= 0.2)} |`,
      '',
    );
  }
  const failed = r.trials.filter((t) => t.failed);
  if (failed.length) out.push(`Failures during the run: ${failed.map((t) => `${t.variant} ${t.metric} ${t.path}: ${t.failed}`).join('; ')}`, '');
  return out;
}

export function workersText(r: WorkersResults): string[] {
  return workersRows(r).map(
    (x) =>
      `  ${x.variant.padEnd(24)} cps ${fmt(x.cpsRatio, 2)}x direct, CPU/conn ${fmt(x.cpuPerConnUs[0], 0)}/${fmt(x.cpuPerConnUs[1], 0)} µs, bulk ${fmt(x.tput1 / x.nghttpx1, 2)}x/${fmt(x.tput4 / x.nghttpx4, 2)}x nghttpx, +${fmt(x.addedP50, 0)} µs p50, scrape p99 ${fmt(x.p99Scraped / x.p99Quiet, 2)}x, heap ${fmt(x.heapPerConn[0] / 1024, 2)}/${fmt(x.heapPerConn[1] / 1024, 2)} KiB/conn, scale ${fmt(x.scale, 0)}/s`,
  );
}
