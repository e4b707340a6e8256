/** bench/run.ts's command line: what to run, for how long, where the report goes. */
import os from 'node:os';
import path from 'node:path';
import { SECTIONS, type HboneOptions, type Section } from './results.js';

export interface Options {
  quick: boolean;
  /** the markdown report; the JSON results go next to it (jsonPathFor) */
  out: string;
  /** seconds per throughput / latency measurement */
  seconds: number;
  /**
   * One block per entry: the agent runs with that acceleration, and the block
   * measures the direct path and the agent path back to back, so each agent
   * figure has a direct figure taken seconds apart to be compared with.
   */
  blocks: Array<'sockmap' | 'none'>;
  /** plain pods enrolled in the enrollment benchmark */
  enrollPods: number;
  /** length of the soak (section 11), when not the default */
  soakSeconds?: number | undefined;
  /** which sections run (--only), in the order given */
  sections: Set<Section>;
  /** cross-node sections 4-7 (bench/hbone.ts) */
  hbone: HboneOptions;
}

export const USAGE = `usage: node dist/bench/run.js [--quick] [--only SECTION[,SECTION...]] [--out FILE] [--soak-seconds N]
  sections: same-node (1-2: same-node throughput and latency), enroll (3: enrollment latency),
            hbone (4-7: cross-node throughput, latency, connections/s, memory per idle connection),
            policy (8: connection set-up latency with 0, 100, 10 000 AuthorizationPolicies),
            observability (9: agent CPU per 1000 requests, /metrics scrape cost under 1000 connections),
            restart (10: refused connections at 200/s during agent restarts with/without hand-over,
                     start-up time to ready with 100 enrolled pods),
            lifecycle (11: detection after peer death and partition, a non-reading app, keepalive/PING
                       CPU with 10 000 idle connections, 10-minute soak; --soak-seconds N to change it),
            ca (12: cluster CA issuance p50/p99 and certificates/s, enrollment -> first HBONE connection
                and a 100-pod node start-up, cluster CA vs embedded),
            ipv6 (13: IPv6 vs IPv4 throughput, 1 KiB latency and connections/s, same node and cross node,
                  through the mesh and direct, client-address preservation on and off, in one dual-stack sandbox; ~7 min),
            workers (14: the data plane on worker threads: workers 1 and 2 and the main thread, each figure
                     beside its baseline: connections/s and CPU per connection, bulk vs the nghttpx tunnel,
                     added latency, scrape p99, scaling, live heap per idle connection, shares; ~8 min)
  the report goes to FILE (default: bench/RESULTS.md for a full run), the raw results as JSON next to
  it (FILE.md -> FILE.json); node dist/bench/render.js FILE.json renders them again
`;

/** Where the JSON results of a report go: FILE.md -> FILE.json, anything else -> FILE.json appended. */
export const jsonPathFor = (out: string): string => (out.endsWith('.md') ? out.slice(0, -3) : out) + '.json';

export type ParsedArgs = { ok: true; options: Options } | { ok: false; exitCode: 0 | 2; message: string };

/** Parses argv (without node and the script); `root` is the repository root (the default report goes to root/bench). */
export function parseArgs(argv: string[], root: string): ParsedArgs {
  const fail = (message: string): ParsedArgs => ({ ok: false, exitCode: 2, message: `${message}\n${USAGE}` });
  const quick = argv.includes('--quick');
  const outIdx = argv.indexOf('--out');
  const onlyIdx = argv.indexOf('--only');
  const soakIdx = argv.indexOf('--soak-seconds');
  for (const [i, a] of argv.entries()) {
    if (a === '--quick' || a === '--out' || a === '--only' || a === '--soak-seconds' || [outIdx, onlyIdx, soakIdx].some((x) => x >= 0 && i === x + 1)) continue;
    if (a === '--help' || a === '-h') return { ok: false, exitCode: 0, message: USAGE };
    return fail(`bench: unknown argument ${a}`);
  }
  for (const [idx, what] of [
    [outIdx, 'a file name'],
    [onlyIdx, 'a list of sections'],
    [soakIdx, 'a number of seconds'],
  ] as const) {
    if (idx >= 0 && (!argv[idx + 1] || argv[idx + 1]!.startsWith('--'))) return fail(`bench: ${argv[idx]} needs ${what}`);
  }
  const soakSeconds = soakIdx >= 0 ? Number(argv[soakIdx + 1]) : undefined;
  if (soakSeconds !== undefined && !(Number.isInteger(soakSeconds) && soakSeconds >= 30)) {
    return fail(`bench: --soak-seconds needs a whole number of seconds >= 30, got ${argv[soakIdx + 1]}`);
  }
  const sections = new Set<Section>();
  for (const name of onlyIdx >= 0 ? argv[onlyIdx + 1]!.split(',') : SECTIONS) {
    const sec = name === 'cross-node' ? 'hbone' : name;
    if (!(SECTIONS as readonly string[]).includes(sec)) return fail(`bench: unknown section ${name}`);
    sections.add(sec as Section);
  }
  const partial = sections.size < SECTIONS.length;
  // Only a full run replaces bench/RESULTS.md unless --out says otherwise.
  const out =
    outIdx >= 0
      ? path.resolve(argv[outIdx + 1]!)
      : quick || partial
        ? path.join(os.tmpdir(), `ambientd-bench-RESULTS${quick ? '.quick' : ''}${partial ? `.${[...sections].join('+')}` : ''}.md`)
        : path.join(root, 'bench', 'RESULTS.md');
  const options: Options = quick
    ? {
        soakSeconds,
        quick,
        out,
        seconds: 1,
        blocks: ['sockmap', 'none'],
        enrollPods: 10,
        sections,
        hbone: { quick, seconds: 1, blocks: 1, cpsSeconds: 1, cpsConcurrency: 16, idleConns: 200 },
      }
    : {
        soakSeconds,
        quick,
        out,
        seconds: 5,
        blocks: ['sockmap', 'none', 'none', 'sockmap'],
        enrollPods: 50,
        sections,
        hbone: { quick, seconds: 5, blocks: 2, cpsSeconds: 5, cpsConcurrency: 16, idleConns: 1000 },
      };
  return { ok: true, options };
}
