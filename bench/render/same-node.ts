/** Sections 1-2 (same-node throughput and latency): tables, prose, stdout summary. */
import { PATHS, type Lat, type PathName, type SameNodeResults, type Tput } from '../results.js';
import { fmt, mean, signed } from '../stats.js';
import { table, textTable } from './md.js';

const HEAD = {
  tput: [
    'path',
    'Gbit/s (mean)',
    'per block (direct of the block)',
    'runs completed',
    '× direct',
    'sender Gbit/s',
    'machine CPU %',
    'agent % of a core',
    'peak kernel TCP mem MiB',
  ],
  lat: ['path', 'p50 µs', 'p99 µs', 'added p50 µs', 'added p99 µs', 'p50 × direct', 'per block p50/p99 (direct of the block)', 'agent % of a core'],
};

/** The direct-path figure of the same block (measured seconds apart). */
function partner<T extends { path: PathName; block: number }>(xs: T[], x: T): T | undefined {
  return xs.find((d) => d.path === 'direct' && d.block === x.block);
}
const by = <T extends { path: PathName }>(xs: T[], p: PathName): T[] => xs.filter((x) => x.path === p);

function tputRows(tput: Tput[]): string[][] {
  return PATHS.map((p) => {
    const xs = by(tput, p);
    // × direct: mean over blocks of (agent / direct of the same block)
    const ratios = xs.map((x) => x.recvGbps / (partner(tput, x)?.recvGbps ?? NaN));
    const failed = xs.filter((x) => x.failed);
    return [
      p,
      fmt(mean(xs.map((x) => x.recvGbps)), 2),
      xs.map((x) => `${fmt(x.recvGbps, 2)}${x.failed ? '*' : ''}${p === 'direct' ? '' : ` (${fmt(partner(tput, x)?.recvGbps, 2)})`}`).join(', '),
      failed.length === 0
        ? `${xs.length}/${xs.length}`
        : `${xs.length - failed.length}/${xs.length} (${[...new Set(failed.map((x) => x.failed!.replace(/^.*: /, '')))].join(', ')} after ${failed.map((x) => fmt(x.failedAfterS, 0)).join(', ')} s)`,
      p === 'direct' ? '1.00' : fmt(mean(ratios), 2),
      fmt(mean(xs.map((x) => x.sentGbps)), 2),
      fmt(mean(xs.map((x) => x.machineBusyPct)), 0),
      p === 'direct' ? '-' : fmt(mean(xs.map((x) => x.agentCorePct ?? NaN)), 0),
      fmt(Math.max(...xs.map((x) => x.peakTcpMem)) / 2 ** 20, 0),
    ];
  });
}

/** partner() looks for the direct figure within the same subset (pinned or not). */
function latRows(sub: Lat[]): string[][] {
  return PATHS.map((p) => {
    const xs = by(sub, p);
    const add50 = xs.map((x) => x.p50 - (partner(sub, x)?.p50 ?? NaN));
    const add99 = xs.map((x) => x.p99 - (partner(sub, x)?.p99 ?? NaN));
    const ratio = xs.map((x) => x.p50 / (partner(sub, x)?.p50 ?? NaN));
    return [
      p,
      fmt(mean(xs.map((x) => x.p50))),
      fmt(mean(xs.map((x) => x.p99))),
      p === 'direct' ? '-' : signed(mean(add50)),
      p === 'direct' ? '-' : signed(mean(add99)),
      p === 'direct' ? '1.00' : fmt(mean(ratio), 2),
      xs
        .map((x) => `${x.p50.toFixed(1)}/${x.p99.toFixed(1)}${p === 'direct' ? '' : ` (${fmt(partner(sub, x)?.p50)}/${fmt(partner(sub, x)?.p99)})`}`)
        .join(', '),
      p === 'direct' ? '-' : fmt(mean(xs.map((x) => x.agentCorePct ?? NaN)), 0),
    ];
  });
}

const toolName = (r: SameNodeResults): string => r.lat[0]?.tool ?? 'sockperf';

/** The line of the run header that says how sections 1-2 were measured. */
export function sameNodeHeaderLine(r: SameNodeResults): string {
  return `- same-node (sections 1-2): ${r.seconds} s per measurement, in ${r.blocks.length} blocks with the agent's acceleration set to ${r.blocks.join(', ')}; each block measures the direct path and the agent path back to back (alternating which goes first), and "× direct" / "added" compare each agent figure with the direct figure of its own block, then average over blocks`;
}

export function sameNodeText(r: SameNodeResults): string[] {
  return [
    '\nThroughput (iperf3, 1 stream, same node; Gbit/s the receiver got)',
    textTable(HEAD.tput, tputRows(r.tput)),
    `\n1 KB request/response round trip (${toolName(r)}, TCP), client, server and agent pinned to CPU ${r.pinCpu}`,
    textTable(HEAD.lat, latRows(r.lat.filter((x) => x.pinned))),
    `\n1 KB request/response round trip (${toolName(r)}, TCP), not pinned`,
    textTable(HEAD.lat, latRows(r.lat.filter((x) => !x.pinned))),
  ];
}

export function sameNodeMarkdown(r: SameNodeResults): string[] {
  const { tput, lat } = r;
  const md: string[] = [
    `## 1. Same-node throughput (iperf3, 1 stream, ${r.seconds} s)`,
    '',
    'Gbit/s is what the receiving iperf3 got (`end.sum_received`); "sender',
    'Gbit/s" is what the sending iperf3 could write — higher than received when',
    'bytes pile up in between. "peak kernel TCP mem" is the highest TCP',
    'memory of the whole machine (`/proc/net/sockstat`) during the run.',
    '',
    table(HEAD.tput, tputRows(tput)),
    '',
  ];
  const failedRuns = tput.filter((t) => t.failed);
  if (failedRuns.length) {
    md.push(
      `\\* **${failedRuns.length} of ${tput.length} iperf3 runs broke off**: ${failedRuns.map((t) => `${t.path} block ${t.block}: \`${t.failed}\` after ${fmt(t.failedAfterS, 0)} s (peak kernel TCP memory ${(t.peakTcpMem / 2 ** 20).toFixed(0)} MiB)`).join('; ')}.`,
      'For those, Gbit/s is what the receiver reported for the whole seconds before the error (its own JSON report), "sender" likewise.',
      '',
    );
  }
  const sm = tput.filter((t) => t.path === 'agent+sockmap');
  const buffered = mean(sm.map((t) => t.sentGbps - t.recvGbps));
  if (sm.length && buffered > 0.3) {
    md.push(
      `With sockmap the sender writes ${buffered.toFixed(1)} Gbit/s more than arrives: sk_msg redirection`,
      "into the agent's socket is not bounded by that socket's receive buffer (the",
      'kernel only charges it against the machine-wide `tcp_mem`), so when the agent',
      'reads slower than the app writes, the backlog grows in kernel memory',
      '(see the peak TCP memory column) instead of pushing back on the sender —',
      `until TCP memory runs out and the app's send() fails with ENOMEM (\`net.ipv4.tcp_mem\` here: ${r.tcpMemLimits} pages).`,
      '',
    );
  }
  md.push(
    `## 2. 1 KB request/response latency (${lat[0]?.tool === 'nettool' ? '`nettool rr`' : '`sockperf ping-pong --tcp -m 1024 --full-rtt`'}, ${r.seconds} s)`,
    '',
    'Round-trip time of one 1024-byte message and its echo on one connection,',
    'percentiles over every round trip of the run (µs); "added" is the',
    'difference to the direct path measured in the same block, averaged over blocks.',
    '',
    `### Client, server and agent pinned to CPU ${r.pinCpu} (\`taskset\`)`,
    '',
    'No cross-CPU wake-ups: the CPU work (system calls, TCP/veth processing,',
    "context switches, the agent's relay) of one round trip on each path; the",
    'stable figure on a VM.',
    '',
    table(HEAD.lat, latRows(lat.filter((x) => x.pinned))),
    '',
    '### Not pinned (wherever the scheduler puts them)',
    '',
    'Includes waking idle vCPUs on the other CPU (tens of µs on this VM, and it',
    'depends on where the scheduler places each process): noisy, but closer',
    'to what an app sees here.',
    '',
    table(HEAD.lat, latRows(lat.filter((x) => !x.pinned))),
    '',
  );
  return md;
}
