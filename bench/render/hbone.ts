/** Sections 4-7 (cross-node: HBONE vs direct vs an nghttpx tunnel): tables, prose, stdout summary. */
import { PERF_CATEGORIES, XPATHS, type Cores, type HboneResults, type PerfProfile, type XLat, type XPath, type XTput } from '../results.js';
import { fmt, mean, signed } from '../stats.js';
import { plain, table, textTable, yes } from './md.js';

const LABEL: Record<XPath, string> = { direct: 'direct', hbone: 'HBONE (2 agents)', nghttpx: 'nghttpx tunnel' };

function partner<T extends { path: string; block: number }>(xs: T[], x: T, p: string, match: (a: T, b: T) => boolean = () => true): T | undefined {
  return xs.find((d) => d.path === p && d.block === x.block && match(d, x));
}
const ratio = (a: number, b: number | undefined): number => (b === undefined ? NaN : a / b);

const coreCell = (xs: Array<{ cores: Cores }>): string => {
  const names = [...new Set(xs.flatMap((x) => Object.keys(x.cores)))];
  return names.length ? names.map((n) => `${n} ${fmt(mean(xs.map((x) => x.cores[n] ?? NaN)), 0)}`).join(', ') : '-';
};

const COST_HEAD = ['path', 'streams', 'Gbit/s', '% of a core per Gbit/s, by process', 'all relays'];
/** "% of a core" per process, per Gbit/s moved, averaged over runs. */
function costRows(r: HboneResults): string[][] {
  const rows: string[][] = [];
  for (const streams of [1, 4]) {
    for (const p of ['hbone', 'nghttpx'] as const) {
      const xs = r.tput.filter((x) => x.path === p && x.streams === streams && x.recvGbps > 0);
      if (!xs.length) continue;
      const names = Object.keys(xs[0]!.cores);
      const per = (n: string): number => mean(xs.map((x) => (x.cores[n] ?? NaN) / x.recvGbps));
      const total = mean(xs.map((x) => names.reduce((a, n) => a + (x.cores[n] ?? 0), 0) / x.recvGbps));
      rows.push([LABEL[p], String(streams), fmt(mean(xs.map((x) => x.recvGbps)), 2), names.map((n) => `${n} ${fmt(per(n), 0)}`).join(', '), fmt(total, 0)]);
    }
  }
  return rows;
}

/** Client side vs client side, server side vs server side, per Gbit/s. */
function sideBySide(r: HboneResults): string[] {
  const per = (p: XPath, names: string[]): number =>
    mean(r.tput.filter((x) => x.path === p && x.recvGbps > 0).map((x) => names.reduce((a, n) => a + (x.cores[n] ?? NaN), 0) / x.recvGbps));
  const c = [per('hbone', ['agent n1']), per('nghttpx', ['h2fwd'])];
  const sv = [per('hbone', ['agent n2']), per('nghttpx', ['nghttpx']), per('nghttpx', ['connect-proxy'])];
  if (c.some(Number.isNaN) || sv.some(Number.isNaN)) return [];
  return [
    `Averaged over all runs: client side, the agent costs ${fmt(c[0], 0)} % of a core per Gbit/s where h2fwd, running the same HBONE client code (\`HbonePool\` + \`spliceStreamSocket\`), costs ${fmt(c[1], 0)}; server side, the agent costs ${fmt(sv[0], 0)} where nghttpx costs ${fmt(sv[1], 0)} (${fmt(sv[1]! + sv[2]!, 0)} with the extra connect-proxy relay).`,
    '',
  ];
}

const PERF_HEAD = ['run', 'process', 'perf: % of a core', ...PERF_CATEGORIES];
function perfRows(label: string, pf: PerfProfile | null | undefined): string[][] {
  if (!pf) return [];
  return Object.entries(pf.byProc).map(([proc, c]) => [label, proc, fmt(c.total, 0), ...PERF_CATEGORIES.map((k) => fmt(c[k], 0))]);
}
function perfTop(pf: PerfProfile | null | undefined): string[] {
  if (!pf) return [];
  return Object.entries(pf.top).map(
    ([proc, xs]) =>
      `- ${proc}: ${xs
        .slice(0, 6)
        .map((x) => `\`${x.sym.length > 60 ? x.sym.slice(0, 57) + '...' : x.sym}\` ${fmt(x.pct, 1)}`)
        .join(', ')}`,
  );
}

/** Targets of sections 4-7: met, not met, or null when not measured. */
interface HboneTargets {
  throughput: boolean | null;
  latency: boolean | null;
  rss: boolean | null;
}

/** Every table of sections 4-7 and the targets, computed once for markdown and stdout. */
function summarize(r: HboneResults) {
  // 4. throughput
  const tputHead = [
    'path',
    'streams',
    'Gbit/s (mean)',
    'per block',
    '× direct',
    '× nghttpx tunnel',
    'sender Gbit/s',
    'machine CPU %',
    'CPU % of a core (processes between client and server)',
  ];
  const tputRows: string[][] = [];
  for (const streams of [1, 4]) {
    for (const p of XPATHS) {
      const xs = r.tput.filter((x) => x.path === p && x.streams === streams);
      if (!xs.length) continue;
      const same = (a: XTput, b: XTput): boolean => a.streams === b.streams;
      tputRows.push([
        LABEL[p],
        String(streams),
        fmt(mean(xs.map((x) => x.recvGbps)), 2),
        xs.map((x) => `${fmt(x.recvGbps, 2)}${x.failed ? '*' : ''}`).join(', '),
        p === 'direct' ? '1.00' : fmt(mean(xs.map((x) => ratio(x.recvGbps, partner(r.tput, x, 'direct', same)?.recvGbps))), 2),
        p === 'nghttpx' ? '1.00' : fmt(mean(xs.map((x) => ratio(x.recvGbps, partner(r.tput, x, 'nghttpx', same)?.recvGbps))), 2),
        fmt(mean(xs.map((x) => x.sentGbps)), 2),
        fmt(mean(xs.map((x) => x.machineBusyPct)), 0),
        coreCell(xs),
      ]);
    }
  }
  // 5. latency
  const latHead = ['path', 'p50 µs', 'p99 µs', 'added p50 µs', 'added p99 µs', 'p50 × direct', 'per block p50/p99 (direct of the block)', 'CPU % of a core'];
  const latRows = (pinned: boolean): string[][] =>
    XPATHS.flatMap((p) => {
      const sub = r.lat.filter((x) => x.pinned === pinned);
      const xs = sub.filter((x) => x.path === p);
      if (!xs.length) return [];
      const d = (x: XLat): XLat | undefined => partner(sub, x, 'direct');
      return [
        [
          LABEL[p],
          fmt(mean(xs.map((x) => x.p50))),
          fmt(mean(xs.map((x) => x.p99))),
          p === 'direct' ? '-' : signed(mean(xs.map((x) => x.p50 - (d(x)?.p50 ?? NaN)))),
          p === 'direct' ? '-' : signed(mean(xs.map((x) => x.p99 - (d(x)?.p99 ?? NaN)))),
          p === 'direct' ? '1.00' : fmt(mean(xs.map((x) => ratio(x.p50, d(x)?.p50))), 2),
          xs.map((x) => `${x.p50.toFixed(1)}/${x.p99.toFixed(1)}${p === 'direct' ? '' : ` (${fmt(d(x)?.p50)}/${fmt(d(x)?.p99)})`}`).join(', '),
          coreCell(xs),
        ],
      ];
    });
  const added50 = (pinned: boolean): number => {
    const sub = r.lat.filter((x) => x.pinned === pinned);
    return mean(sub.filter((x) => x.path === 'hbone').map((x) => x.p50 - (partner(sub, x, 'direct')?.p50 ?? NaN)));
  };
  // 6. connections per second
  const cpsHead = [
    'path',
    'conn/s',
    '× direct',
    'connections (failed)',
    'per connection p50 / p99 ms',
    'machine CPU %',
    'CPU % of a core',
    'HBONE streams opened (n1) / tunnels (n2)',
  ];
  const cpsRows = (['direct', 'hbone'] as const).flatMap((p) => {
    const xs = r.cps.filter((x) => x.path === p);
    if (!xs.length) return [];
    return [
      [
        LABEL[p],
        fmt(mean(xs.map((x) => x.rate)), 0),
        p === 'direct' ? '1.00' : fmt(mean(xs.map((x) => ratio(x.rate, partner(r.cps, x, 'direct')?.rate))), 2),
        xs
          .map(
            (x) =>
              `${x.conns} (${x.failures}${
                x.failures
                  ? `: ${Object.entries(x.errors)
                      .map(([k, v]) => `${k} ${v}`)
                      .join(', ')}`
                  : ''
              })`,
          )
          .join(', '),
        xs.map((x) => `${fmt(x.p50ms, 2)} / ${fmt(x.p99ms, 2)}`).join(', '),
        fmt(mean(xs.map((x) => x.machineBusyPct)), 0),
        coreCell(xs),
        xs.map((x) => (x.verify ? `${x.verify.streamsOpened} / ${x.verify.tunnelsOpened}` : '-')).join(', '),
      ],
    ];
  });
  // 7. RSS
  const rss = r.rss;
  const perConn = (x: { before: number; after: number }): number => (rss ? (x.after - x.before) / rss.conns : NaN);
  const rssHead = ['agent', 'VmRSS before MiB', `with ${rss?.conns ?? '?'} idle connections MiB`, 'KiB per connection', 'target <= 4 KiB'];
  const rssRows = rss
    ? (
        [
          ['client side (n1)', rss.client],
          ['server side (n2)', rss.server],
        ] as const
      ).map(([k, x]) => [k, fmt(x.before / 1024, 1), fmt(x.after / 1024, 1), fmt(perConn(x), 2), perConn(x) <= 4 ? 'met' : '**NOT met**'])
    : [];

  const hb1 = r.tput.filter((x) => x.path === 'hbone');
  const tunnelRatio = mean(hb1.map((x) => ratio(x.recvGbps, partner(r.tput, x, 'nghttpx', (a, b) => a.streams === b.streams)?.recvGbps)));
  const targets: HboneTargets = {
    throughput: hb1.length ? hb1.every((x) => x.recvGbps >= (partner(r.tput, x, 'nghttpx', (a, b) => a.streams === b.streams)?.recvGbps ?? Infinity)) : null,
    latency: r.lat.some((x) => x.path === 'hbone') ? added50(true) <= 120 && added50(false) <= 120 : null,
    rss: rss ? perConn(rss.client) <= 4 && perConn(rss.server) <= 4 : null,
  };
  return { tputHead, tputRows, latHead, latRows, added50, cpsHead, cpsRows, rssHead, rssRows, tunnelRatio, targets };
}

/** The line of the run header that says how sections 4-7 were measured. */
export function hboneHeaderLine(r: HboneResults): string {
  const o = r.options;
  return `- cross-node (sections 4-7): ${o.seconds} s per throughput/latency measurement, ${o.blocks} block(s) of direct / HBONE / nghttpx tunnel; ${o.cpsSeconds} s of connections per second per path; ${o.idleConns} idle connections; nghttpx ${r.info.nghttpx}; sandbox of 2 nodes × 2 pods up with both agents ready in ${fmt(r.info.upMs, 0)} ms`;
}

export function hboneText(r: HboneResults): string[] {
  const s = summarize(r);
  const text: string[] = [];
  text.push('\nCross-node throughput (iperf3; Gbit/s the receiver got)', textTable(s.tputHead, s.tputRows));
  text.push(`\nCross-node 1 KB round trip (${r.info.tool}), pinned to CPU ${r.pinCpu}`, textTable(s.latHead, s.latRows(true)));
  text.push(`\nCross-node 1 KB round trip (${r.info.tool}), not pinned`, textTable(s.latHead, s.latRows(false)));
  text.push(`\nConnections per second (${r.options.cpsConcurrency} at a time)`, textTable(s.cpsHead, s.cpsRows));
  if (r.rss) text.push(`\nAgent memory, ${r.rss.conns} idle HBONE connections`, textTable(s.rssHead, s.rssRows));
  text.push('\nRelay CPU per Gbit/s (% of a core)', textTable(COST_HEAD, costRows(r)));
  const perfText = [
    ...r.tput.filter((x) => x.perf).flatMap((x) => perfRows(`${x.path} tput`, x.perf)),
    ...r.cps.filter((x) => x.perf).flatMap((x) => perfRows(`${x.path} conn/s`, x.perf)),
  ];
  if (perfText.length) text.push('\nperf: where the relays spend their CPU (% of a core)', textTable(PERF_HEAD, perfText));
  text.push(
    `targets: HBONE throughput >= nghttpx tunnel: ${plain(yes(s.targets.throughput))} (× ${fmt(s.tunnelRatio, 2)} on average); added p50 <= 120 µs: ${plain(yes(s.targets.latency))} (pinned ${signed(s.added50(true))}, not pinned ${signed(s.added50(false))} µs); <= 4 KiB per idle connection: ${plain(yes(s.targets.rss))}`,
  );
  return text;
}

export function hboneMarkdown(r: HboneResults): string[] {
  const s = summarize(r);
  const o = r.options;
  const md: string[] = [];
  const verified = [...r.tput, ...r.lat].filter((x) => x.verify);
  const nMeas = r.tput.length + r.lat.length;
  md.push(
    `## 4. Cross-node throughput (iperf3, 1 and 4 streams, ${o.seconds} s)`,
    '',
    'Sandbox 2 nodes × 2 pods (`n<i>-p1` ambient, `n<i>-p2` plain), node n1 -> node n2',
    'over the fabric bridge. Three paths, measured back to back in each block',
    `(${o.blocks} block${o.blocks > 1 ? 's' : ''}, the order reversed every other block):`,
    '',
    '| path | from -> to | what it includes |',
    '|---|---|---|',
    '| **direct** (baseline) | `n1-p2` -> `n2-p2`, plain pods | the kernel alone |',
    '| **HBONE (2 agents)** | `n1-p1` -> `n2-p1`, ambient pods | connect4 capture into the n1 agent (Node.js), HTTP/2 CONNECT over mTLS 1.3 from `n1-p1` to `n2-p1:15008` (one pooled h2 connection), terminated by the n2 agent, which connects to the app inside `n2-p1` |',
    `| **nghttpx tunnel** | \`n1-p2\` -> \`n2-p2\`, plain pods | the client connects to \`127.0.0.1:<port>\` in \`n1-p2\`, where \`bench/h2fwd.ts\` (Node.js) turns each TCP connection into a CONNECT stream over one pooled h2/mTLS 1.3 connection to nghttpx ${r.info.nghttpx} (\`--http2-proxy\`, TLS 1.3 only, \`--verify-client\`) in \`n2-p2\`, which hands the CONNECT to \`bench/connect-proxy.ts\` (Node.js, HTTP/1.1 CONNECT) on 127.0.0.1 in \`n2-p2\`, which connects to the app |`,
    '',
    'About the tunnel: nghttpx cannot be the client end (its frontends only',
    'speak HTTP: a plain TCP connection from iperf3 cannot become a CONNECT',
    'stream there; `--client-proxy` no longer exists, and in `--http2-proxy`',
    'mode with an h2 backend it still needs an HTTP/1.1 CONNECT from the app),',
    'so the client end is `bench/h2fwd.ts`, built on our own HBONE client',
    'library (`HbonePool` + `spliceStreamSocket`: the exact code the agent runs',
    'for outbound HBONE, same TLS 1.3 settings, ALPN h2, client certificate,',
    'server URI SAN check, 4 MiB stream / 16 MiB connection windows, 1 MiB',
    'max frame, <= 100 streams per h2 connection) minus the eBPF capture.',
    'The two paths therefore differ on the server side: the n2 agent vs',
    'nghttpx (C, libnghttp2; same windows via',
    '`--frontend-http2-window-size=4194304 --frontend-http2-connection-window-size=16777216`;',
    'nghttpx has no option to raise its SETTINGS_MAX_FRAME_SIZE, so it receives',
    '16 KiB DATA frames where our server accepts 1 MiB). And nghttpx does not',
    'dial CONNECT targets itself: in `--http2-proxy` mode it forwards each CONNECT',
    'to an HTTP/1.1 forward proxy backend, here a minimal Node.js one',
    '(`bench/connect-proxy.ts`, one more user-space copy of every byte that the',
    'HBONE path does not have). So the tunnel has three user-space relays',
    '(h2fwd, nghttpx, connect-proxy) where HBONE has two (agent n1, agent n2);',
    'the CPU column shows what each one costs. Certificates for both tunnel ends',
    'come from the sandbox CA (SPIFFE ids of `n1-p2` and `n2-p2`). No kTLS',
    "anywhere (nghttpx's `--tls-ktls` is off, Node has none).",
    '',
    `Every HBONE measurement is checked with both agents' \`/config_dump\`: the n1 agent's`,
    'connection records to the destination port say `via: hbone` (none any other',
    "way), the n2 agent's say `inbound-hbone`, and the n1 pool's `streamsOpened`",
    "and the n2 server's `tunnelsOpened` went up by at least the number of",
    `connections the tool opened (${verified.length} of ${nMeas} throughput/latency measurements were HBONE ones; all passed, or the run would have stopped).`,
    '"CPU % of a core" is per process, over the measurement (utime+stime from',
    '`/proc/<pid>/stat`); iperf3/sockperf themselves are not in it.',
    '',
    table(s.tputHead, s.tputRows),
    '',
  );
  const failed = r.tput.filter((x) => x.failed);
  if (failed.length) md.push(`\\* broke off: ${failed.map((x) => `${LABEL[x.path]} -P ${x.streams} block ${x.block}: \`${x.failed}\``).join('; ')}.`, '');
  md.push(
    `Target: HBONE throughput >= the nghttpx tunnel's: **${plain(yes(s.targets.throughput))}** (HBONE / tunnel × ${fmt(s.tunnelRatio, 2)} averaged over streams and blocks).`,
    '',
    '### What limits the throughput',
    '',
    `Every path is CPU-bound on this ${r.cpus}-CPU machine: the client and server, the kernel`,
    '(TCP and veth on both nodes, loopback inside the pods) and the relays share',
    'two cores, so what a relay spends per byte comes straight off the throughput.',
    'Cost of each relay process per Gbit/s moved (its "% of a core" divided by the',
    'Gbit/s of the same run, averaged):',
    '',
    table(COST_HEAD, costRows(r)),
    '',
    ...sideBySide(r),
  );
  md.push('Syscall counts and what they say about the server side: "One-off analysis" in `bench/README.md`.', '');
  const tp = r.tput.filter((x) => x.perf);
  if (tp.length) {
    md.push(
      `Where that CPU goes: \`perf record -F 499\` on the relay processes (all their threads) for ${fmt(tp[0]!.perf?.seconds, 1)} s in the middle of the 1-stream runs of the last block, samples sorted by symbol into categories, in % of one core (perf sees only those 2.5 s of one run, the sampler above the whole runs: the totals differ accordingly):`,
      '',
      table(
        PERF_HEAD,
        tp.flatMap((x) => perfRows(`${LABEL[x.path]}, ${fmt(x.recvGbps, 2)} Gbit/s`, x.perf)),
      ),
      '',
      'Heaviest symbols (% of a core):',
      '',
      ...tp.flatMap((x) => perfTop(x.perf)),
      '',
    );
  } else if (!o.quick) {
    md.push('(`perf` was not available or failed: no per-category breakdown.)', '');
  }
  md.push(
    `## 5. Cross-node 1 KB request/response latency (${r.info.tool === 'nettool' ? '`nettool rr`' : '`sockperf ping-pong --tcp -m 1024 --full-rtt`'}, ${o.seconds} s)`,
    '',
    'Same three paths and blocks; "added" is the difference to the direct path',
    'of the same block. Pinned: client, server, both agents and the three tunnel',
    `processes on CPU ${r.pinCpu} (every hop is CPU work on one core, no cross-CPU`,
    'wake-ups). Not pinned: wherever the scheduler puts them.',
    '',
    `### Pinned to CPU ${r.pinCpu}`,
    '',
    table(s.latHead, s.latRows(true)),
    '',
    '### Not pinned',
    '',
    table(s.latHead, s.latRows(false)),
    '',
    `Target: added p50 <= 120 µs: **${plain(yes(s.targets.latency))}** (HBONE added p50: pinned ${signed(s.added50(true))} µs, not pinned ${signed(s.added50(false))} µs).`,
    '',
    `## 6. Connections per second (${o.cpsSeconds} s, ${o.cpsConcurrency} connections at a time)`,
    '',
    '`bench/cps.ts` in the source pod: each of the loops connects, sends 1 byte,',
    'reads the 1-byte echo (`nettool serve` in the destination pod) and closes,',
    'then starts over. Direct: `n1-p2` -> `n2-p2`; HBONE: `n1-p1` -> `n2-p1`, every',
    'connection one CONNECT stream on the pooled h2 connection (no new TLS',
    'handshake per connection). "per connection" is connect issued -> echo read.',
    'The last column is what the agents counted (n1 pool `streamsOpened`, n2',
    '`tunnelsOpened`), checked to be at least the connections completed.',
    '',
    table(s.cpsHead, s.cpsRows),
    '',
  );
  const hc = r.cps.find((x) => x.path === 'hbone');
  if (hc) {
    const us = (p: number | null | undefined): string => (p === null || p === undefined || !(hc.rate > 0) ? '-' : fmt((p / 100 / hc.rate) * 1e6, 0));
    md.push(
      'What a new HBONE connection costs the server-side agent (a thread + `setns()` per upstream socket, synchronously on the event loop) and the client-side one: "One-off analysis" in `bench/README.md`.',
      '',
      `CPU per HBONE connection (% of a core / conn/s): client-side agent ${us(hc.cores['agent n1'])} µs, server-side agent ${us(hc.cores['agent n2'])} µs; the machine was ${fmt(hc.machineBusyPct, 0)}% busy.`,
      '',
    );
    if (hc.perf) {
      md.push(
        `\`perf\` over ${fmt(hc.perf.seconds, 1)} s of the HBONE run (% of one core):`,
        '',
        table(PERF_HEAD, perfRows('HBONE conn/s', hc.perf)),
        '',
        ...perfTop(hc.perf),
        '',
      );
    }
  }
  const rss = r.rss;
  if (rss) {
    md.push(
      `## 7. Agent memory per idle HBONE connection (${rss.conns} connections)`,
      '',
      `\`bench/hold.ts\` in \`n1-p1\` opens ${rss.conns} TCP connections to \`nettool serve\` in \`n2-p1\``,
      `(50 at a time; each sends 1 byte and waits for the echo, so it works end to end; ${rss.openMs} ms for all)`,
      'and holds them idle. VmRSS of each agent (`/proc/<pid>/status`, median of',
      '5 samples) before (after a warm-up of 100 connections opened and closed,',
      'so the code paths and one pooled h2 connection exist) and 3 s after the',
      "last one is up. Both agents' `/config_dump` afterwards: ",
      `${rss.openViaHbone} open \`hbone\` records at n1, ${rss.openInboundHbone} open \`inbound-hbone\` records at n2;`,
      `the n1 pool holds ${rss.clientSessions} h2 connection(s) with ${rss.clientActiveStreams} streams, the n2 server ${rss.serverEstablished} with ${rss.serverActiveStreams}.`,
      '',
      table(s.rssHead, s.rssRows),
      '',
      'Per connection, the client-side agent holds the captured app socket, an h2',
      'stream and the splice between them (plus 1/100 of an h2/TLS connection);',
      'the server-side agent an h2 stream, the socket to the app and the splice.',
      `Kernel socket buffers are not in RSS (idle sockets hold almost none: the machine's TCP memory went from ${fmt(rss.tcpMemBefore, 0)} to ${fmt(rss.tcpMemAfter, 0)} KiB, \`/proc/net/sockstat\`).`,
      "RSS grows in V8 heap-growth steps, and how much of the growth the heap's",
      'free space (garbage of earlier runs) absorbs depends on GC timing: these',
      'figures wander by several KiB per connection from run to run. The live JS',
      'heap after a full GC (a one-off measurement with instrumented agents, see',
      '`bench/README.md`) grew by ~10 KiB per connection in each agent, so the',
      'target is missed whatever the noise.',
      '',
      `Target: <= 4 KiB per idle connection (ztunnel: ≈3.8 KB): **${plain(yes(s.targets.rss))}**.`,
      '',
    );
  }
  return md;
}
