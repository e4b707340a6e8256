/**
 * Section 10 (agent restarts): (a) the hand-over window at 200 new
 * connections/s, (b) start-up time to ready; and the list of anomalies, which
 * is derived here from what the measuring code recorded (log lines, exits,
 * failed restarts) in the order they happened.
 */
import {
  RESTART_MODES,
  type HandoverWindowResults,
  type HoldJson,
  type ModeRun,
  type RateJson,
  type RestartFailure,
  type RestartMode,
  type RestartResults,
  type SocketMissing,
  type StartKind,
  type StartStep,
  type StartupResults,
} from '../results.js';
import { fmt, median, sum } from '../stats.js';
import { table } from './md.js';

const ms0 = (x: number | null | undefined): string => fmt(x, 0);
const parseJson = (l: string): Record<string, unknown> | null => {
  try {
    return JSON.parse(l) as Record<string, unknown>;
  } catch {
    return null;
  }
};
const fence = (lines: string[]): string => `\n\n  \`\`\`\n${lines.map((l) => `  ${l}`).join('\n')}\n  \`\`\``;

function failureText(prefix: string, f: RestartFailure, handover: boolean, tailNote: string): string {
  return `${prefix} failed: ${f.message}${handover && !f.socketExistedBefore ? ` — the hand-over socket ${f.handoverSocket} did not exist before this restart although agent pid ${f.previousPid} was running` : ''}. ${tailNote}:${fence(f.logTail)}\n\n`;
}

function socketMissingText(prefix: string, node: string | null, m: SocketMissing, intro: string): string {
  return `${prefix}: after the restart${node ? ` of ${node}` : ''} (old pid ${m.oldPid} gone, new pid ${m.newPid} running) the hand-over socket ${m.path} is missing: the next hand-over restart${node ? ` of ${node}` : ''} cannot take the sockets over (it fails with EADDRINUSE). ${intro}${fence(m.logTail)}`;
}

// ---------------------------------------------------------------------------
// (a) hand-over window
// ---------------------------------------------------------------------------

function handoverAnomalies(a: HandoverWindowResults): string[] {
  const out: string[] = [];
  if (a.control && a.control.failed > 0)
    out.push(`control run without any restart: ${a.control.failed} of ${a.control.attempted} connections failed (${JSON.stringify(a.control.errors)})`);
  for (const run of a.runs) {
    const { round, mode } = run;
    const handover = mode === 'hand-over';
    for (const r of run.restarts) {
      if (r.error)
        out.push(
          failureText(
            `round ${round} ${mode}: \`restartAgent('${r.node}', {handover: ${handover}})\``,
            r.error,
            handover,
            'Its log since the restart (without access-log lines)',
          ) + `  The bench then stopped pid ${r.error.previousPid} and started a fresh agent.`,
        );
    }
    for (const r of run.restarts) {
      if (r.oldGoneAfterMs === null)
        out.push(
          `round ${round} ${mode}: the old agent of ${r.node} (pid ${r.oldPid}) was still running ${a.drainTimeoutS + 15} s after the restart (drainTimeout ${a.drainTimeoutS}s); see ${r.logFile}`,
        );
      if (!handover) continue;
      for (const p of r.log.problems.slice(0, 8)) out.push(`round ${round} ${mode}, ${r.node} agent.log: \`${p}\``);
      for (const f of r.log.failedConns.slice(0, 8)) out.push(`round ${round} ${mode}, ${r.node} access log, failed connection: \`${JSON.stringify(f)}\``);
      if (r.error === null && (r.log.socketsTaken === null || (r.log.socketsRejected ?? 0) > 0))
        out.push(
          `round ${round} hand-over: the new agent of ${r.node} logged ${r.log.socketsTaken === null ? 'no "took over the listening sockets" line' : `${r.log.socketsRejected} rejected sockets`}`,
        );
      if (r.error === null && r.socketMissing) out.push(socketMissingText(`round ${round} hand-over`, r.node, r.socketMissing, 'Hand-over lines of its log: '));
    }
    if (!run.rate) out.push(`round ${round} ${mode}: nettool rate printed nothing usable (exit ${run.rateExit}): ${run.rateRaw.slice(0, 300)}`);
    if (handover && !run.hold) out.push(`round ${round} hand-over: nettool hold printed nothing usable (exit ${run.holdExit}): ${run.holdRaw.slice(0, 300)}`);
    const lastDone = Math.max(...run.restarts.map((r) => r.doneMs));
    if (run.rate && lastDone > run.rate.seconds * 1000)
      out.push(
        `round ${round} ${mode}: the restarts ended ${(lastDone / 1000).toFixed(1)} s after the load started, after the ${a.loadSeconds} s load (the window may be cut short)`,
      );
  }
  return out;
}

/** Stop-then-start: the warnings and failed connections the agents logged (expected there), summarised per round and node. */
function stopThenStartLogs(a: HandoverWindowResults): { warnings: string[]; failed: string[] } {
  const warnings: string[] = [];
  const failed: string[] = [];
  for (const run of a.runs.filter((x) => x.mode === 'stop-then-start')) {
    for (const r of run.restarts) {
      const byMsg = new Map<string, number>();
      for (const p of r.log.problems) {
        const m = (parseJson(p)?.msg as string | undefined) ?? p.slice(0, 80);
        byMsg.set(m, (byMsg.get(m) ?? 0) + 1);
      }
      if (byMsg.size) warnings.push(`round ${run.round}, ${r.node}: ${[...byMsg].map(([m, c]) => `${c}× "${m}"`).join(', ')}`);
      const byReason = new Map<string, number>();
      for (const f of r.log.failedConns) {
        const k = `${String(f.direction)} ${String(f.reason)}`;
        byReason.set(k, (byReason.get(k) ?? 0) + 1);
      }
      if (byReason.size) failed.push(`round ${run.round}, ${r.node}: ${[...byReason].map(([k, c]) => `${c}× ${k}`).join(', ')}`);
    }
  }
  return { warnings, failed };
}

function handoverMarkdown(a: HandoverWindowResults): string[] {
  const { runs, rate: RATE } = a;
  const byMode = (m: RestartMode): ModeRun[] => runs.filter((r) => r.mode === m);
  const errs = (rs: ModeRun[]): string => {
    const e: Record<string, number> = {};
    for (const r of rs) for (const [k, v] of Object.entries(r.rate?.errors ?? {})) e[k] = (e[k] ?? 0) + v;
    return Object.keys(e).length
      ? Object.entries(e)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')
      : '-';
  };
  const summaryRows = RESTART_MODES.map((m) => {
    const rs = byMode(m);
    const rates = rs.map((r) => r.rate).filter((x): x is RateJson => x !== null);
    const ready = (n: string): number[] => rs.map((r) => r.restarts.find((x) => x.node === n)?.readyMs ?? null).filter((x): x is number => x !== null);
    const holds = rs.map((r) => r.hold).filter((x): x is HoldJson => x !== null);
    return [
      m,
      `${sum(rates.map((r) => r.failed))} / ${sum(rates.map((r) => r.attempted))}`,
      errs(rs),
      rates.map((r) => String(r.windowMs)).join(', '),
      rates.map((r) => String(r.maxConnectMs)).join(', '),
      `${ms0(median(ready('n1')))} (${ready('n1').join(', ')})`,
      `${ms0(median(ready('n2')))} (${ready('n2').join(', ')})`,
      m === 'hand-over'
        ? `${holds.filter((h) => h.error === null).length}/${rs.length} survived${
            holds.some((h) => h.error !== null)
              ? ` (${holds
                  .filter((h) => h.error !== null)
                  .map((h) => h.error)
                  .join(', ')})`
              : ''
          }`
        : 'not held (see below)',
    ];
  });
  const roundRows = runs.map((r) => [
    String(r.round),
    r.mode,
    r.order === 1 ? '1st' : '2nd',
    r.rate ? `${r.rate.failed} / ${r.rate.attempted}` : '-',
    r.rate && r.rate.failed
      ? Object.entries(r.rate.errors)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')
      : '-',
    r.rate ? String(r.rate.windowMs) : '-',
    r.rate?.firstFailureMs === null || r.rate === null ? '-' : String(r.rate.firstFailureMs),
    r.rate ? String(r.rate.maxConnectMs) : '-',
    r.restarts.map((x) => `${x.node} ${(x.atMs / 1000).toFixed(1)}–${(x.doneMs / 1000).toFixed(1)} s`).join(', '),
    r.restarts.map((x) => (x.error ? '**failed**' : String(x.readyMs))).join(' / '),
    r.restarts
      .map((x) =>
        x.log.drained
          ? `${(x.log.drained.ms / 1000).toFixed(1)} s (${x.log.drained.connectionsAtStart} open${x.log.drained.closedAtDeadline ? `, ${x.log.drained.closedAtDeadline} cut` : ''})`
          : '-',
      )
      .join(' / '),
    r.mode === 'hand-over'
      ? r.restarts
          .map((x) => (x.log.socketsTaken === null ? '-' : `${x.log.socketsTaken}${x.log.socketsRejected ? ` (${x.log.socketsRejected} rejected)` : ''}`))
          .join(' / ')
      : '-',
    r.hold ? (r.hold.error === null ? `yes, ${r.hold.rounds} RTs, max ${r.hold.maxRttMs} ms` : `**no**: ${r.hold.error} after ${r.hold.rounds} RTs`) : '-',
  ]);
  const ho = byMode('hand-over');
  const hoFailed = sum(ho.map((r) => r.rate?.failed ?? 0));
  const met = ho.length > 0 && ho.every((r) => r.rate !== null) && hoFailed === 0;
  const { control } = a;
  const stt = stopThenStartLogs(a);
  return [
    `### (a) Hand-over window at ${RATE} new connections/s`,
    '',
    `Sandbox 2 nodes × 2 pods (up in ${ms0(a.upMs)} ms), agents with \`drainTimeout: ${a.drainTimeoutS}s\`. Client \`n1-p1\` -> \`nettool serve\` in \`n2-p1\` (port ${a.echoPort}), both enrolled: every connection goes app -> n1 agent -> HBONE -> n2 agent -> app. \`nettool rate ${RATE} ${a.loadSeconds}\` opens ${RATE} new connections a second for ${a.loadSeconds} s (each one 1-byte round trip, 5 s timeout); 2 s in, n1's agent is restarted (\`restartAgent\`), then n2's. ${a.rounds} round(s); each round runs both modes back to back, alternating which goes first. Before the rounds, a ${a.controlSeconds} s control run without any restart: ${control ? `${control.failed}/${control.attempted} failed, slowest ${control.maxConnectMs} ms` : 'no result'}.`,
    '',
    '- **hand-over** (`handover: true`, DaemonSet maxSurge): the new agent starts while the old one runs, takes every listening socket over the hand-over unix socket (SCM_RIGHTS), and the old one, sent SIGTERM once the new one is ready, drains and exits. One extra `nettool hold` connection (a 64-byte round trip every 50 ms for the whole run) checks that established connections survive.',
    '- **stop-then-start** (`handover: false`, maxUnavailable; the baseline): SIGTERM, wait for the old agent to exit, start the new one. No held connection here: SIGTERM drains established connections, so a held one would keep the old agent alive until it ends (or drainTimeout) and hold the restart up.',
    '',
    table(
      [
        'mode',
        'failed / attempted (all rounds)',
        'errors',
        'failure window ms (per round)',
        'slowest successful connection ms (per round)',
        'n1 new agent ready ms, median (per round)',
        'n2 new agent ready ms, median (per round)',
        'held connection',
      ],
      summaryRows,
    ),
    '',
    `**Target: 0 refused at ${RATE}/s with hand-over: ${met ? 'met' : 'NOT met'}** (${hoFailed} of ${sum(ho.map((r) => r.rate?.attempted ?? 0))} new connections failed over ${ho.length} hand-over run(s); any failed connection counts, whatever its error).`,
    '',
    "Error codes: `ECONNREFUSED` is the app's connect refused — the pod's connect4 hook still sends it to the agent's listener, which is closed while no agent runs (fail closed, no bypass); `ECONNRESET` is a connection the n1 agent accepted but could not open the HBONE tunnel for (n2's agent down), so it reset it; `ECLOSED`/`ETIMEDOUT` (nettool) a connection closed before or not answered within 5 s of its echo.",
    '',
    `"failure window" is nettool's: from the first to the last failed connection, plus one interval (5 ms); it spans both restarts when both produced failures (and the gap between them), so for a continuous outage estimate use failed × ${1000 / RATE} ms. Ready time is \`restartAgent\`'s \`readyMs\`, from the call to the new agent's ready file (polled every 100 ms); for stop-then-start it includes the old agent's drain and exit. "slowest" is the longest successful connect + round trip. With hand-over the old agents drain until their last connection ends (the held one lasts the whole run, hence "drained in" ≈ the rest of the run); the next run starts only once they have exited. After every hand-over restart the bench also checks that the node's hand-over socket file still exists (the next hand-over needs it), and a restart that fails is reported and followed by a fresh start of that node's agent.`,
    '',
    '<details><summary>per run</summary>',
    '',
    table(
      [
        'round',
        'mode',
        'order',
        'failed / attempted',
        'errors',
        'window ms',
        'first failure ms',
        'slowest ms',
        'restarts (from launching the load; nettool starts ~0.1-0.3 s later)',
        'ready ms n1 / n2',
        'old agent drained in (its log)',
        'sockets taken over n1 / n2',
        'held connection',
      ],
      roundRows,
    ),
    '',
    '</details>',
    '',
    ...(stt.warnings.length || stt.failed.length
      ? [
          'In stop-then-start the agents log what the baseline is expected to produce (not counted as anomalies):',
          ...(stt.warnings.length ? [`warnings — ${stt.warnings.join('; ')};`] : []),
          ...(stt.failed.length
            ? [`failed connections in the access log (the ones the agent saw; refused connects never reach it) — ${stt.failed.join('; ')}.`]
            : []),
          '',
        ]
      : []),
  ];
}

// ---------------------------------------------------------------------------
// (b) start-up time to ready
// ---------------------------------------------------------------------------

function startupAnomalies(b: StartupResults): string[] {
  const out: string[] = [];
  for (const s of b.steps) {
    const at = `round ${s.round} ${s.kind}`;
    if (s.failure) {
      out.push(
        failureText(`${at}: \`restartAgent\``, s.failure, true, 'Its log since the restart') +
          `  The bench then stopped pid ${s.failure.previousPid} and started a fresh agent; this round has no hand-over figure.`,
      );
      continue;
    }
    if (s.kind === 'hand-over' && s.oldGoneAfterMs === null)
      out.push(`${at}: the old agent (pid ${s.oldPid}) was still running 30 s after the restart (no connections to drain)`);
    if (s.kind === 'cold' && s.log.podsAdopted > 0) out.push(`${at}: ${s.log.podsAdopted} pods still had pinned links (not a cold start for them)`);
    for (const p of s.log.problems) out.push(`${at}: agent.log: \`${p}\``);
    if (s.log.enrolled !== null && s.log.enrolled !== b.enrolledPods)
      out.push(`${at}: the agent was ready with ${s.log.enrolled} of ${b.enrolledPods} pods enrolled`);
    if (s.socketMissing) out.push(socketMissingText(at, null, s.socketMissing, 'Its log since the restart:'));
  }
  return out;
}

function startupMarkdown(b: StartupResults, quick: boolean): string[] {
  const runs = b.steps.filter((s) => !s.failure);
  // ref: what the ratio compares with (the cold start's ready time, or its spawn -> "agent ready" from the log)
  const kinds: Array<{ kind: StartKind; label: string; value: (r: StartStep) => number | null; ref: 'ready' | 'log' | null }> = [
    { kind: 'hand-over', label: '(1) restart with hand-over: `restartAgent` readyMs', value: (r) => r.readyMs, ref: 'ready' },
    {
      kind: 'no-hand-over',
      label: '(2) restart without hand-over, total: `restartAgent` readyMs (old agent drains + exits, then the new one starts)',
      value: (r) => r.readyMs,
      ref: 'ready',
    },
    {
      kind: 'no-hand-over',
      label: '(2) of which the new agent alone: spawn -> "agent ready" (agent log; × cold: against the cold start\'s same log figure)',
      value: (r) => r.log.spawnToReadyMs,
      ref: 'log',
    },
    { kind: 'warm', label: "(2') stop + start timed apart: `stopAgent` (SIGTERM -> exit)", value: (r) => r.stopMs, ref: null },
    {
      kind: 'warm',
      label: "(2') stop + start timed apart: `startAgent` + `waitAgentReady` (links still pinned: warm start)",
      value: (r) => r.readyMs,
      ref: 'ready',
    },
    { kind: 'cold', label: '(3) cold start: `startAgent` + `waitAgentReady`, no pinned pod links', value: (r) => r.readyMs, ref: 'ready' },
  ];
  const colds = runs.filter((r) => r.kind === 'cold');
  const coldRef = {
    ready: median(colds.map((r) => r.readyMs)),
    log: median(colds.map((r) => r.log.spawnToReadyMs).filter((x): x is number => x !== null)),
  };
  const rows = kinds.map((k) => {
    const xs = runs.filter((r) => r.kind === k.kind).map(k.value);
    const med = median(xs.filter((x): x is number => x !== null));
    return [k.label, xs.map((x) => ms0(x)).join(', '), ms0(med), k.ref === null ? '-' : fmt(med / coldRef[k.ref], 2)];
  });
  const breakdown = (['hand-over', 'no-hand-over', 'warm', 'cold'] as const).map((kind) => {
    const rs = runs.filter((r) => r.kind === kind);
    const m = (f: (r: StartStep) => number | null): string => ms0(median(rs.map(f).filter((x): x is number => x !== null)));
    return [
      kind === 'hand-over' ? '(1) hand-over' : kind === 'no-hand-over' ? '(2) no hand-over' : kind === 'warm' ? "(2') warm start" : '(3) cold start',
      m((r) => r.log.spawnToLoadedMs),
      m((r) => r.log.loadedToReadyMs),
      m((r) => r.log.spawnToReadyMs),
      rs.map((r) => `${r.log.podsAdopted}/${r.log.podsAttached}`).join(', '),
      rs.map((r) => (r.log.socketsTaken === null ? '-' : String(r.log.socketsTaken))).join(', '),
      rs.map((r) => (r.log.enrolled === null ? '-' : String(r.log.enrolled))).join(', '),
    ];
  });
  const hoGone = runs.filter((r) => r.kind === 'hand-over').map((r) => r.oldGoneAfterMs);
  return [
    `### (b) Agent start-up time to ready with ${b.enrolledPods} enrolled pods`,
    '',
    `Sandbox 1 node × ${b.totalPods} pods, every other one enrolled (${b.enrolledPods} enrolled pods, 3 listening sockets each); no traffic. \`sandboxUp\` of the ${b.totalPods} pods with the agent ready took ${ms0(b.upMs)} ms (informative: namespaces, veths, cgroups, workload file, and the first agent start enrolling every pod; timed from the moment it held the sandbox lock).${quick ? ` **Quick run: ${b.totalPods} pods instead of 200, 1 round.**` : ''} Per round (the order rotates by one step from round to round): (1) \`restartAgent(handover: true)\`; (2) \`restartAgent(handover: false)\`; (2') the same done by hand, \`stopAgent\` then \`startAgent\` + \`waitAgentReady\`, timed apart; (3) \`stopAgent\`, then every pod's pinned links (\`<bpffsDir>/pods/<ns>_<name>/\`, ${runs.find((r) => r.kind === 'cold')?.pinsRemoved ?? '-'} directories) removed — with no agent holding them that detaches the hooks — then \`startAgent\` + \`waitAgentReady\`: the agent attaches every pod's 4 hooks again (the pinned BPF maps stay; their entries are rewritten). Ready = the agent's ready file seen (polled every 100 ms). ${b.rounds} round(s); the ratio is the median over the median cold start.`,
    '',
    table(['measure', 'per round ms', 'median ms', '× cold start'], rows),
    '',
    'From the agent\'s own log (1 ms timestamps; "spawn" is the marker `startAgent` writes just before spawning, so spawn -> "datapath loaded" is mostly Node.js start-up and module loading, and "datapath loaded" -> "agent ready" is the CA, the listeners, the pods\' enrollment and the first reconcile; medians):',
    '',
    table(
      [
        'start',
        'spawn -> "datapath loaded" ms',
        '"datapath loaded" -> "agent ready" ms',
        'spawn -> "agent ready" ms',
        'pods: links adopted / attached (per round)',
        'listening sockets taken over (per round)',
        'enrolled at ready (per round)',
      ],
      breakdown,
    ),
    '',
    `With hand-over the old agent (no connections to drain) was gone ${hoGone.map((x) => (x === null || x === undefined ? 'not within 30 s' : `${ms0(x)} ms`)).join(', ')} after \`restartAgent\` returned.`,
    '',
  ];
}

// ---------------------------------------------------------------------------

export function restartMarkdown(r: RestartResults, heading = '##'): string[] {
  const anomalies = [...handoverAnomalies(r.handover), ...startupAnomalies(r.startup)];
  return [
    `${heading} Agent restarts: hand-over window, start-up time to ready`,
    '',
    `Rolling-update restarts of the agent (\`restartAgent\` in \`tools/sandbox/agents.ts\`). Section run time ${r.seconds.toFixed(0)} s.${r.quick ? ' **Quick run**: 1 round each, 8 s of load, 20 pods in (b).' : ''}`,
    '',
    ...handoverMarkdown(r.handover),
    ...startupMarkdown(r.startup, r.quick),
    ...(anomalies.length
      ? [
          '**Anomalies and warnings seen during the run** (hand-over runs and start-up measurements; a `HBONE request rejected` / `server_closing` warning in a hand-over run is the draining n2 agent refusing a new stream, which the n1 agent then retries on a new session — the app only sees it if it appears among the failed connections):',
          '',
          ...anomalies.map((x) => `- ${x}`),
          '',
        ]
      : [
          'No anomalies: no warning or error in the agent logs of the hand-over runs and start-up measurements, no failed connection in their access logs, every old agent exited by itself, every hand-over socket was in place.',
          '',
        ]),
  ];
}
