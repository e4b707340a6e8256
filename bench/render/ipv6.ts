/** Section 13 (IPv6 against IPv4 through the mesh): the table of ratios and the agents' CPU per family. */
import type { IpFamilyName, Ipv6Results, Ipv6Trial, V6Metric, V6Path } from '../results.js';
import { fmt, mean } from '../stats.js';
import { table, textTable } from './md.js';

/** A ratio further than this from 1.0 is flagged (issue 14: "the ratio should be ≈ 1.0"). */
export const V6_TOLERANCE = 0.1;

type Row = { measure: string; metric: V6Metric; pick: (t: Ipv6Trial) => number | null; higherIsBetter: boolean };
const ROWS: Row[] = [
  { measure: '1 stream, Gbit/s', metric: 'tput1', pick: (t) => t.value, higherIsBetter: true },
  { measure: '4 streams, Gbit/s', metric: 'tput4', pick: (t) => t.value, higherIsBetter: true },
  { measure: '1 KiB rr p50, µs', metric: 'rr', pick: (t) => t.value, higherIsBetter: false },
  { measure: '1 KiB rr p99, µs', metric: 'rr', pick: (t) => t.p99, higherIsBetter: false },
  { measure: 'new connections/s', metric: 'cps', pick: (t) => t.value, higherIsBetter: true },
];

/** The agents' CPU per unit of work of one trial: tput % of a core per Gbit/s; rr µs per round trip; cps µs per connection. */
export function cpuPerUnit(t: Ipv6Trial, node?: string): number | null {
  if (t.agentCpuS === null || !(t.ops > 0)) return null;
  const cpuS = node === undefined ? Object.values(t.agentCpuS).reduce((x, y) => x + y, 0) : t.agentCpuS[node];
  if (cpuS === undefined) return null;
  if (t.metric === 'tput1' || t.metric === 'tput4') return (100 * cpuS * 1e9) / (8 * t.ops);
  return (cpuS * 1e6) / t.ops;
}
const CPU_UNIT: Record<V6Metric, string> = { tput1: '% core per Gbit/s', tput4: '% core per Gbit/s', rr: 'µs per round trip', cps: 'µs per connection' };

export interface V6Row {
  variant: string;
  path: V6Path;
  measure: string;
  metric: V6Metric;
  v4: number;
  v6: number;
  /** IPv6 / IPv4 of each round (the two taken back to back) */
  perRound: number[];
  ratio: number;
  /** mesh rows: this ratio / the direct path's ratio on the same kind of path (same or cross node) */
  vsDirect: number | null;
  /** the agents' CPU per unit of work (mean over rounds), all agents of the path and (cross node) each side; not on p99 rows */
  cpu: { total: Record<IpFamilyName, number | null>; byNode: Record<string, Record<IpFamilyName, number | null>> } | null;
  cpuUnit: string;
}

/** The rows of section 13, derived from the trials. */
export function ipv6Rows(r: Ipv6Results): V6Row[] {
  const rows: V6Row[] = [];
  const paths: V6Path[] = ['same-node direct', 'same-node mesh', 'cross-node direct', 'cross-node mesh'];
  for (const v of r.variants) {
    for (const pth of paths) {
      for (const row of ROWS) {
        const of = (fam: IpFamilyName): Ipv6Trial[] =>
          r.trials.filter((t) => t.variant === v.name && t.path === pth && t.metric === row.metric && t.family === fam);
        const val = (t: Ipv6Trial | undefined): number => (t ? (row.pick(t) ?? NaN) : NaN);
        const rounds = [...new Set(r.trials.filter((t) => t.variant === v.name).map((t) => t.round))].sort((a, b) => a - b);
        const perRound = rounds
          .map((k) => val(of('ipv6').find((t) => t.round === k)) / val(of('ipv4').find((t) => t.round === k)))
          .filter((x) => Number.isFinite(x));
        const cpuMean = (fam: IpFamilyName, node?: string): number | null => {
          const xs = of(fam)
            .map((t) => cpuPerUnit(t, node))
            .filter((x): x is number => x !== null);
          return xs.length ? mean(xs) : null;
        };
        const nodes = [...new Set(of('ipv4').flatMap((t) => Object.keys(t.agentCpuS ?? {})))].sort();
        const firstOfMetric = ROWS.find((x) => x.metric === row.metric) === row;
        rows.push({
          variant: v.name,
          path: pth,
          measure: row.measure,
          metric: row.metric,
          v4: mean(of('ipv4').map(val)),
          v6: mean(of('ipv6').map(val)),
          perRound,
          ratio: mean(perRound),
          vsDirect: null,
          cpu:
            pth.endsWith('mesh') && firstOfMetric
              ? {
                  total: { ipv4: cpuMean('ipv4'), ipv6: cpuMean('ipv6') },
                  byNode: Object.fromEntries(nodes.length > 1 ? nodes.map((n) => [n, { ipv4: cpuMean('ipv4', n), ipv6: cpuMean('ipv6', n) }]) : []),
                }
              : null,
          cpuUnit: CPU_UNIT[row.metric],
        });
      }
    }
  }
  for (const row of rows) {
    if (!row.path.endsWith('mesh')) continue;
    const direct = rows.find((x) => x.variant === row.variant && x.measure === row.measure && x.path === row.path.replace('mesh', 'direct'));
    row.vsDirect = direct ? row.ratio / direct.ratio : null;
  }
  return rows;
}

const off = (x: number | null): boolean => x !== null && Number.isFinite(x) && Math.abs(x - 1) > V6_TOLERANCE;
const ratioText = (x: number | null, md: boolean): string => (x === null ? '' : off(x) && md ? `**${fmt(x, 2)}**` : fmt(x, 2));
const spread = (xs: number[]): string => {
  if (!xs.length) return '-';
  const [lo, hi] = [fmt(Math.min(...xs), 2), fmt(Math.max(...xs), 2)];
  return lo === hi ? lo : `${lo}–${hi}`;
};
const valueText = (row: V6Row, x: number): string => fmt(x, row.metric === 'cps' || row.metric === 'rr' ? 0 : 2);
function cpuText(row: V6Row): string {
  if (!row.cpu) return '';
  const d = row.metric === 'rr' || row.metric === 'cps' ? 0 : 1;
  const pair = (x: Record<IpFamilyName, number | null>): string => `${fmt(x.ipv4, d)} / ${fmt(x.ipv6, d)}`;
  const sides = Object.entries(row.cpu.byNode).map(([n, x]) => `${n} ${pair(x)}`);
  return `${pair(row.cpu.total)} ${row.cpuUnit}${sides.length ? ` (${sides.join(', ')})` : ''}`;
}

function cells(rows: V6Row[], md: boolean): string[][] {
  return rows.map((row) => [
    row.path,
    row.measure,
    valueText(row, row.v4),
    valueText(row, row.v6),
    ratioText(row.ratio, md),
    spread(row.perRound),
    ratioText(row.vsDirect, md),
    cpuText(row),
  ]);
}
const HEAD = ['path', 'measure', 'IPv4', 'IPv6', 'IPv6 ÷ IPv4', 'per round (min–max)', 'mesh ÷ direct', "agents' CPU IPv4 / IPv6"];

/** One mesh measurement of one family under the first variant ÷ the same under the second (taken in the same rounds). */
export interface VariantRow {
  path: V6Path;
  measure: string;
  family: IpFamilyName;
  a: number;
  b: number;
  perRound: number[];
  ratio: number;
}

/** With two or more variants: the first ÷ the second, per mesh path, measure and family (e.g. the cost of a setting). */
export function variantRows(r: Ipv6Results): VariantRow[] {
  if (r.variants.length < 2) return [];
  const [va, vb] = [r.variants[0]!.name, r.variants[1]!.name];
  const rows: VariantRow[] = [];
  const rounds = [...new Set(r.trials.map((t) => t.round))].sort((x, y) => x - y);
  for (const pth of ['same-node mesh', 'cross-node mesh'] as V6Path[]) {
    for (const row of ROWS) {
      for (const family of ['ipv4', 'ipv6'] as IpFamilyName[]) {
        const of = (v: string): Ipv6Trial[] => r.trials.filter((t) => t.variant === v && t.path === pth && t.metric === row.metric && t.family === family);
        const val = (t: Ipv6Trial | undefined): number => (t ? (row.pick(t) ?? NaN) : NaN);
        const perRound = rounds.map((k) => val(of(va).find((t) => t.round === k)) / val(of(vb).find((t) => t.round === k))).filter((x) => Number.isFinite(x));
        rows.push({ path: pth, measure: row.measure, family, a: mean(of(va).map(val)), b: mean(of(vb).map(val)), perRound, ratio: mean(perRound) });
      }
    }
  }
  return rows;
}

function variantCells(rows: VariantRow[]): string[][] {
  return rows.map((x) => {
    const d = x.measure.includes('Gbit') ? 2 : 0;
    return [x.path, x.measure, x.family, fmt(x.a, d), fmt(x.b, d), fmt(x.ratio, 2), spread(x.perRound)];
  });
}
const variantHead = (r: Ipv6Results): string[] => {
  const [a, b] = [r.variants[0]!.name, r.variants[1]!.name];
  return ['path', 'measure', 'family', a, b, `${a} ÷ ${b}`, 'per round (min–max)'];
};

/** The rows whose IPv6/IPv4 ratio is outside 1 ± V6_TOLERANCE. */
export const ipv6Outliers = (r: Ipv6Results): V6Row[] => ipv6Rows(r).filter((x) => off(x.ratio));

export function ipv6Markdown(r: Ipv6Results, heading = '## 13.'): string[] {
  const md: string[] = [
    `${heading} IPv6 against IPv4 through the mesh (dual-stack sandbox, 2 nodes × 4 pods; ${r.rounds} round(s), ${r.seconds} s per measurement)`,
    '',
    'Every pod has both `10.244.<node>.<pod>` and `fd00:10:244:<node>::<pod>`; the same pods are measured over each family, ' +
      `the two families of a (path, measure) back to back, the first alternating from round to round (v4 v6, v6 v4, ...). ` +
      '"IPv6 ÷ IPv4" is the mean of the per-round ratios (for latency a ratio > 1 means IPv6 is slower); ' +
      '"mesh ÷ direct" divides a mesh ratio by the direct (kernel alone) ratio of the same kind of path, i.e. what the agents add to any family difference. ' +
      `Ratios outside 1 ± ${V6_TOLERANCE} are in bold.`,
    '',
    `Paths: same-node direct ${r.pods['same-node direct'].src} -> ${r.pods['same-node direct'].dst} and cross-node direct ${r.pods['cross-node direct'].src} -> ${r.pods['cross-node direct'].dst} (plain pods, the kernel alone); ` +
      `same-node mesh ${r.pods['same-node mesh'].src} -> ${r.pods['same-node mesh'].dst} (HBONE through n1's agent, client and server side in one process) and ` +
      `cross-node mesh ${r.pods['cross-node mesh'].src} -> ${r.pods['cross-node mesh'].dst} (HBONE between the n1 and n2 agents); every mesh measurement was checked against the agents' \`/config_dump\` (HBONE records, streams and tunnels opened). ` +
      `Throughput: \`iperf3 -t ${r.seconds}\` (-P 1 and -P 4), Gbit/s received. Latency: \`nettool rr\` (Node.js on both ends: sockperf 3.7 has no IPv6), ${r.rrCount} round trips of 1 KiB on one connection, ` +
      `client, server and agents pinned to CPU ${r.pinCpu}. Connections/s: \`bench/cps.ts\`, ${r.cpsConcurrency} loops of connect, 1 byte echoed, close, for ${r.seconds} s. ` +
      `Agents' CPU: utime+stime of the agents on the path per unit of work, mean over rounds (same node: n1's agent, both ends; cross node: both, and in brackets each side: n1 the client side, n2 the server side). ${r.cpus} shared vCPUs.`,
    '',
  ];
  const rows = ipv6Rows(r);
  for (const v of r.variants) {
    if (r.variants.length > 1) md.push(`### Agents: ${v.name} (\`${JSON.stringify(v.agentSettings)}\`)`, '');
    md.push(
      table(
        HEAD,
        cells(
          rows.filter((x) => x.variant === v.name),
          true,
        ),
      ),
      '',
    );
  }
  const vr = variantRows(r);
  if (vr.length) {
    md.push(
      `### ${r.variants[0]!.name} ÷ ${r.variants[1]!.name} (the same rounds; for latency a ratio > 1 means ${r.variants[0]!.name} is slower)`,
      '',
      table(variantHead(r), variantCells(vr)),
      '',
    );
  }
  const failed = r.trials.filter((t) => t.failed);
  if (failed.length) {
    md.push('Measurements with errors:', '');
    for (const t of failed) md.push(`- round ${t.round} ${t.variant} ${t.path} ${t.metric} ${t.family}: ${t.failed}`);
    md.push('');
  }
  return md;
}

/** The compact stdout summary. */
export function ipv6Text(r: Ipv6Results): string[] {
  const rows = ipv6Rows(r);
  const out: string[] = [];
  for (const v of r.variants) {
    out.push(`\nIPv6 vs IPv4 (${v.name}${Object.keys(v.agentSettings).length ? ` ${JSON.stringify(v.agentSettings)}` : ''}):`);
    out.push(
      textTable(
        HEAD,
        cells(
          rows.filter((x) => x.variant === v.name),
          false,
        ),
      ),
    );
  }
  const vr = variantRows(r);
  if (vr.length) out.push(`\n${r.variants[0]!.name} ÷ ${r.variants[1]!.name}:`, textTable(variantHead(r), variantCells(vr)));
  const o = ipv6Outliers(r);
  out.push(
    o.length
      ? `outside 1 ± ${V6_TOLERANCE}: ${o.map((x) => `${x.variant} ${x.path} ${x.measure} ${fmt(x.ratio, 2)}${x.vsDirect !== null ? ` (÷ direct ${fmt(x.vsDirect, 2)})` : ''}`).join('; ')}`
      : `every IPv6/IPv4 ratio within 1 ± ${V6_TOLERANCE}`,
  );
  return out;
}
