/**
 * Agent restarts (DaemonSet rolling update), two measurements:
 *
 *  (a) hand-over window at 200 new connections/s: sandbox 2 nodes × 2 pods,
 *      `nettool serve` in n2-p1; `nettool rate <n2-p1> 7000 200 T` in n1-p1
 *      (plus, in the hand-over mode, one `nettool hold` connection n1-p1 ->
 *      n2-p1); 2 s in, n1's agent is restarted, then n2's. Two modes, measured
 *      side by side in every round (which goes first alternates):
 *        hand-over        restartAgent({handover: true}): the new agent starts
 *                         next to the old one and takes its listening sockets
 *                         (maxSurge); the old one drains and exits by itself
 *        stop-then-start  restartAgent({handover: false}): SIGTERM, wait for
 *                         the exit, start the new one (maxUnavailable)
 *      Reported: new connections attempted / failed (by error), the window
 *      between the first and the last failure, the slowest successful
 *      connection, each new agent's ready time, whether the held connection
 *      survived. Target: 0 failed connections at 200/s with hand-over.
 *  (b) start-up time to ready with 100 enrolled pods: sandbox 1 node × 200
 *      pods (every other one enrolled); per round: restart with hand-over,
 *      restart without (total, and the start alone), stop + start timed apart
 *      (pinned links kept: warm), and a cold start (the pods' pinned links
 *      removed while no agent runs, so the new agent attaches every hook).
 *
 *   node dist/bench/restart.js [--quick]   -> prints a markdown section
 *
 * Called by bench/run.ts (section `restart`). Builds and removes its own
 * sandbox (state in opts.stateDir); never asserts on times.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import {
  sandboxUp, sandboxDown, sandboxStatus, restartAgent, startAgent, stopAgent, waitAgentReady, isProcessAlive,
  SANDBOX_LOCK, type SandboxState, type SandboxPod, type SandboxUpOptions,
} from '../src/sandbox/topology.js';
import { nettool, nettoolServer, type RunResult } from '../src/sandbox/podproc.js';
import { now, sleep, pct, fmt, table, parseJson, waitNoSandbox } from './lib.js';

const ECHO_PORT = 7000;
const RATE = 200;
/** drainTimeout of the agents in (a): long enough for the held connection to end by itself */
const DRAIN_TIMEOUT_S = 60;
const MODES = ['hand-over', 'stop-then-start'] as const;
type Mode = (typeof MODES)[number];

export interface RestartBenchOptions {
  quick?: boolean;
  /** the sandbox state dir (bench/run.ts: /run/ambientd-sandbox-bench) */
  stateDir: string;
  /** progress lines (default: stdout) */
  log?: (s: string) => void;
}

interface RateJson { attempted: number; ok: number; failed: number; errors: Record<string, number>; firstFailureMs: number | null; windowMs: number; maxConnectMs: number; seconds: number }
interface HoldJson { rounds: number; error: string | null; maxRttMs: number }

/** What one agent start logged (agent.log slice from its "starting agent" marker on). */
interface StartLog {
  /** marker (written by startAgent right before the spawn) -> "datapath loaded", ms (1 ms resolution) */
  spawnToLoadedMs: number | null;
  /** "datapath loaded" -> "agent ready", ms */
  loadedToReadyMs: number | null;
  /** marker -> "agent ready", ms */
  spawnToReadyMs: number | null;
  enrolled: number | null;
  /** "pod enrolled" lines: links found pinned (adopted) / attached anew */
  podsAdopted: number;
  podsAttached: number;
  /** "took over the listening sockets": sockets adopted / rejected */
  socketsTaken: number | null;
  socketsRejected: number | null;
  /** the draining agent's "drained" line */
  drained: { ms: number; connectionsAtStart: number; closedAtDeadline: number } | null;
  /** warn/error lines */
  problems: string[];
  /** access-log records of failed connections ("connection" lines with state failed), compacted */
  failedConns: string[];
}

const lastJson = <T>(r: RunResult): T | null => {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return parseJson(line) as T | null;
};

const median = (xs: number[]): number => pct(xs, 50);
const ms0 = (x: number | null | undefined): string => fmt(x, 0);

function logSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** Reads agent.log from byte offset `from` and picks out the start-up and drain figures. */
function readStartLog(file: string, from: number): StartLog {
  let text = '';
  try {
    const buf = fs.readFileSync(file);
    text = buf.subarray(from).toString('utf8');
  } catch { /* none */ }
  const out: StartLog = {
    spawnToLoadedMs: null, loadedToReadyMs: null, spawnToReadyMs: null, enrolled: null,
    podsAdopted: 0, podsAttached: 0, socketsTaken: null, socketsRejected: null, drained: null, problems: [], failedConns: [],
  };
  let spawnAt: number | null = null;
  let loadedAt: number | null = null;
  let readyAt: number | null = null;
  for (const line of text.split('\n')) {
    const m = /^--- ambientd sandbox: starting agent of \S+ at (\S+) ---$/.exec(line);
    if (m) {
      spawnAt ??= Date.parse(m[1]!);
      continue;
    }
    const j = parseJson(line);
    if (!j) continue;
    const t = typeof j.time === 'string' ? Date.parse(j.time) : NaN;
    switch (j.msg) {
      case 'datapath loaded': loadedAt ??= t; break;
      case 'agent ready':
        if (readyAt === null) {
          readyAt = t;
          out.enrolled = typeof j.enrolled === 'number' ? j.enrolled : null;
        }
        break;
      case 'pod enrolled': if (j.adopted === true) out.podsAdopted++; else out.podsAttached++; break;
      case 'took over the listening sockets':
        out.socketsTaken = typeof j.adopted === 'number' ? j.adopted : null;
        out.socketsRejected = typeof j.rejected === 'number' ? j.rejected : null;
        break;
      case 'drained':
        out.drained = { ms: Number(j.ms), connectionsAtStart: Number(j.connectionsAtStart), closedAtDeadline: Number(j.closedAtDeadline) };
        break;
      default: break;
    }
    if (j.msg === 'connection' && j.state === 'failed') {
      out.failedConns.push(JSON.stringify({ time: j.time, direction: j.direction, via: j.via, src: j.src, dst: j.dst, reason: j.reason, durationMs: j.durationMs, start: j.start }));
    }
    if (j.level === 'warn' || j.level === 'error') out.problems.push(line.length > 400 ? line.slice(0, 400) + '…' : line);
    else if (!line.startsWith('{') && /error|EADDRINUSE|LISTENER_FAILED/i.test(line)) out.problems.push(line.slice(0, 400));
  }
  if (spawnAt !== null && loadedAt !== null) out.spawnToLoadedMs = loadedAt - spawnAt;
  if (loadedAt !== null && readyAt !== null) out.loadedToReadyMs = readyAt - loadedAt;
  if (spawnAt !== null && readyAt !== null) out.spawnToReadyMs = readyAt - spawnAt;
  return out;
}

/** Resolves with the time (now()) the process was gone, or null after timeoutMs. */
async function watchExit(pid: number | null, timeoutMs: number): Promise<number | null> {
  if (pid === null) return now();
  const end = now() + timeoutMs;
  while (now() < end) {
    if (!isProcessAlive(pid)) return now();
    await sleep(50);
  }
  return isProcessAlive(pid) ? null : now();
}

/**
 * sandboxUp, timed from the moment it holds the machine-wide sandbox lock (it
 * waits there while another process's sandbox, e.g. a privileged test, exists).
 */
async function timedSandboxUp(opts: SandboxUpOptions, log: (s: string) => void): Promise<{ st: SandboxState; upMs: number }> {
  const t0 = now();
  let lockedAt: number | null = null;
  let done = false;
  const poll = (async () => {
    while (!done && lockedAt === null) {
      try {
        if (fs.readFileSync(SANDBOX_LOCK, 'utf8').trim() === String(process.pid)) lockedAt = now();
      } catch { /* not taken yet */ }
      await sleep(10);
    }
  })();
  try {
    const st = await sandboxUp(opts);
    const t1 = now();
    const from = lockedAt ?? t0;
    if (from - t0 > 1000) log(`  (waited ${((from - t0) / 1000).toFixed(1)} s for another process's sandbox to go away)`);
    return { st, upMs: t1 - from };
  } finally {
    done = true;
    await poll;
  }
}

/** The lines of the agent log since `from` that are not access-log records (the last `n`). */
function logTail(file: string, from: number, n = 12): string[] {
  try {
    return fs.readFileSync(file).subarray(from).toString('utf8').split('\n')
      .filter((l) => l.trim() && !l.includes('"scope":"ambientd.access"')).slice(-n).map((l) => (l.length > 300 ? l.slice(0, 300) + '…' : l));
  } catch {
    return [];
  }
}

/**
 * After a failed restart: the previous agent (alivePid) may still serve.
 * SIGTERM it (it is ours), wait for it (it drains), then start a fresh agent.
 */
async function recoverAgent(node: string, alivePid: number | null, stateDir: string, waitMs: number): Promise<void> {
  if (alivePid !== null && isProcessAlive(alivePid)) {
    try { process.kill(alivePid, 'SIGTERM'); } catch { /* gone */ }
    if ((await watchExit(alivePid, waitMs)) === null) {
      try { process.kill(alivePid, 'SIGKILL'); } catch { /* gone */ }
      await watchExit(alivePid, 5000);
    }
  }
  const cur = sandboxStatus({ stateDir }).nodes.find((n) => n.name === node)!;
  if (cur.agentPid !== null && isProcessAlive(cur.agentPid)) {
    await waitAgentReady(node, 60_000, { stateDir });
    return;
  }
  await startAgent(node, { stateDir });
  await waitAgentReady(node, 60_000, { stateDir });
}

/** <stateDir>/n<i>/handover.sock (agent.yaml's handoverSocket, as the sandbox writes it) */
const handoverSocketOf = (nodeConfig: string): string => path.join(path.dirname(nodeConfig), 'handover.sock');

// ---------------------------------------------------------------------------
// (a) hand-over window at 200 new connections/s
// ---------------------------------------------------------------------------

interface NodeRestart {
  node: string;
  oldPid: number | null;
  newPid: number;
  /** restartAgent's readyMs: call -> the new agent's ready file seen (100 ms polling) */
  readyMs: number;
  /** call / return, ms after launching the load */
  atMs: number;
  doneMs: number;
  /** the old agent was gone this many ms after restartAgent returned (hand-over: it drains after the return); null: still there at the timeout */
  oldGoneAfterMs: number | null;
  log: StartLog;
  /** restartAgent threw (the agent was then restarted from scratch, see recoverAgent) */
  error: string | null;
}

interface ModeRun {
  round: number;
  mode: Mode;
  order: 1 | 2;
  rate: RateJson | null;
  rateRaw: string;
  hold: HoldJson | null;
  holdRaw: string;
  restarts: NodeRestart[];
}

async function handoverWindow(o: { quick: boolean; stateDir: string; log: (s: string) => void }): Promise<{ md: string[]; anomalies: string[] }> {
  const { stateDir, log } = o;
  const rounds = o.quick ? 1 : 3;
  const T = o.quick ? 8 : 10;
  const controlS = 3;
  log(`\n[10a] restart: hand-over window at ${RATE} new connections/s; sandbox 2 nodes x 2 pods (drainTimeout ${DRAIN_TIMEOUT_S}s), ${rounds} round(s) x ${MODES.join(' / ')}, ${T} s each`);
  const anomalies: string[] = [];
  const runs: ModeRun[] = [];
  /** stop-then-start: warn lines and failed connections the agents logged (expected there), summarised */
  const stopThenStartWarnings: string[] = [];
  const stopThenStartFailed: string[] = [];
  let control: RateJson | null = null;
  let upMs = NaN;
  let st: SandboxState | null = null;
  const procs: ChildProcess[] = [];
  try {
    await waitNoSandbox();
    ({ st, upMs } = await timedSandboxUp({ nodes: 2, pods: 2, drainTimeout: `${DRAIN_TIMEOUT_S}s`, stateDir }, log));
    const pod = (n: string): SandboxPod => st!.pods.find((p) => p.name === n)!;
    const src = pod('n1-p1');
    const dst = pod('n2-p1');
    if (!src.ambient || !dst.ambient) throw new Error('unexpected sandbox layout: n1-p1 and n2-p1 should be ambient');
    const nodeOf = (n: string) => st!.nodes.find((x) => x.name === n)!;
    procs.push(await nettoolServer(dst, 'serve', ECHO_PORT));

    // Control: the same load without a restart (also warms the HBONE pool, the certificates and the JIT).
    const c = await nettool(src, 'rate', dst.ip, ECHO_PORT, RATE, controlS);
    control = lastJson<RateJson>(c);
    log(`  control (no restart, ${controlS} s): ${control ? `${control.ok}/${control.attempted} ok, ${control.failed} failed${control.failed ? ` ${JSON.stringify(control.errors)}` : ''}, slowest ${control.maxConnectMs} ms` : `unparsable: ${c.stdout} ${c.stderr}`}`);
    if (control && control.failed > 0) anomalies.push(`control run without any restart: ${control.failed} of ${control.attempted} connections failed (${JSON.stringify(control.errors)})`);

    for (let round = 1; round <= rounds; round++) {
      const order: Mode[] = round % 2 === 1 ? [...MODES] : [...MODES].reverse();
      for (const [k, mode] of order.entries()) {
        const handover = mode === 'hand-over';
        const offsets = Object.fromEntries(['n1', 'n2'].map((n) => [n, logSize(nodeOf(n).log)]));
        const t0 = now();
        const rateP = nettool(src, 'rate', dst.ip, ECHO_PORT, RATE, T);
        // In stop-then-start a held connection would keep the SIGTERMed agent draining (up to drainTimeout) and hold the restart up.
        const holdP = handover ? nettool(src, 'hold', dst.ip, ECHO_PORT, T) : null;
        await sleep(2000);
        const restarts: NodeRestart[] = [];
        const exits: Array<Promise<number | null>> = [];
        for (const n of ['n1', 'n2']) {
          const at = now();
          const before = sandboxStatus({ stateDir }).nodes.find((x) => x.name === n)!.agentPid;
          const sockBefore = fs.existsSync(handoverSocketOf(nodeOf(n).config));
          try {
            const r = await restartAgent(n, { handover, stateDir, readyTimeoutMs: 60_000 });
            const done = now();
            exits.push(watchExit(r.oldPid, (DRAIN_TIMEOUT_S + 15) * 1000).then((gone) => (gone === null ? null : Math.max(0, gone - done))));
            restarts.push({ node: n, oldPid: r.oldPid, newPid: r.newPid, readyMs: r.readyMs, atMs: at - t0, doneMs: done - t0, oldGoneAfterMs: null, log: null as unknown as StartLog, error: null });
          } catch (e) {
            const msg = (e as Error).message.split('\n')[0]!;
            const done = now();
            log(`  round ${round} ${mode}: restart of ${n} FAILED after ${((done - at) / 1000).toFixed(1)} s: ${msg}`);
            anomalies.push(`round ${round} ${mode}: \`restartAgent('${n}', {handover: ${handover}})\` failed: ${msg}${handover && !sockBefore ? ` — the hand-over socket ${handoverSocketOf(nodeOf(n).config)} did not exist before this restart although agent pid ${before} was running` : ''}. Its log since the restart (without access-log lines):\n\n  \`\`\`\n${logTail(nodeOf(n).log, offsets[n]!).map((l) => `  ${l}`).join('\n')}\n  \`\`\`\n\n  The bench then stopped pid ${before} and started a fresh agent.`);
            await recoverAgent(n, before, stateDir, (DRAIN_TIMEOUT_S + 15) * 1000);
            exits.push(Promise.resolve(0));
            restarts.push({ node: n, oldPid: before, newPid: NaN, readyMs: NaN, atMs: at - t0, doneMs: now() - t0, oldGoneAfterMs: null, log: null as unknown as StartLog, error: msg });
          }
        }
        const [rateR, holdR] = await Promise.all([rateP, holdP]);
        // the old agents drain and exit by themselves (hand-over) before the next run starts
        const gone = await Promise.all(exits);
        restarts.forEach((r, i) => {
          r.oldGoneAfterMs = gone[i]!;
          r.log = readStartLog(nodeOf(r.node).log, offsets[r.node]!);
          if (gone[i] === null) anomalies.push(`round ${round} ${mode}: the old agent of ${r.node} (pid ${r.oldPid}) was still running ${DRAIN_TIMEOUT_S + 15} s after the restart (drainTimeout ${DRAIN_TIMEOUT_S}s); see ${nodeOf(r.node).log}`);
          if (handover) {
            for (const p of r.log.problems.slice(0, 8)) anomalies.push(`round ${round} ${mode}, ${r.node} agent.log: \`${p}\``);
            for (const f of r.log.failedConns.slice(0, 8)) anomalies.push(`round ${round} ${mode}, ${r.node} access log, failed connection: \`${f}\``);
            if (r.error === null && (r.log.socketsTaken === null || (r.log.socketsRejected ?? 0) > 0)) anomalies.push(`round ${round} hand-over: the new agent of ${r.node} logged ${r.log.socketsTaken === null ? 'no "took over the listening sockets" line' : `${r.log.socketsRejected} rejected sockets`}`);
            const sock = handoverSocketOf(nodeOf(r.node).config);
            if (r.error === null && !fs.existsSync(sock)) anomalies.push(`round ${round} hand-over: after the restart of ${r.node} (old pid ${r.oldPid} gone, new pid ${r.newPid} running) the hand-over socket ${sock} is missing: the next hand-over restart of ${r.node} cannot take the sockets over (it fails with EADDRINUSE). Hand-over lines of its log: \n\n  \`\`\`\n${logTail(nodeOf(r.node).log, offsets[r.node]!, 14).map((l) => `  ${l}`).join('\n')}\n  \`\`\``);
          } else {
            // expected in the baseline: summarise
            const byMsg = new Map<string, number>();
            for (const p of r.log.problems) { const m = (parseJson(p)?.msg as string | undefined) ?? p.slice(0, 80); byMsg.set(m, (byMsg.get(m) ?? 0) + 1); }
            if (byMsg.size) stopThenStartWarnings.push(`round ${round}, ${r.node}: ${[...byMsg].map(([m, c]) => `${c}× "${m}"`).join(', ')}`);
            const byReason = new Map<string, number>();
            for (const f of r.log.failedConns) { const x = parseJson(f); const k = `${String(x?.direction)} ${String(x?.reason)}`; byReason.set(k, (byReason.get(k) ?? 0) + 1); }
            if (byReason.size) stopThenStartFailed.push(`round ${round}, ${r.node}: ${[...byReason].map(([k, c]) => `${c}× ${k}`).join(', ')}`);
          }
        });
        const run: ModeRun = {
          round, mode, order: (k + 1) as 1 | 2,
          rate: lastJson<RateJson>(rateR), rateRaw: `${rateR.stdout.trim()} ${rateR.stderr.trim()}`.trim(),
          hold: holdR ? lastJson<HoldJson>(holdR) : null, holdRaw: holdR ? `${holdR.stdout.trim()} ${holdR.stderr.trim()}`.trim() : '',
          restarts,
        };
        runs.push(run);
        if (!run.rate) anomalies.push(`round ${round} ${mode}: nettool rate printed nothing usable (exit ${rateR.code}): ${run.rateRaw.slice(0, 300)}`);
        if (handover && !run.hold) anomalies.push(`round ${round} hand-over: nettool hold printed nothing usable (exit ${holdR!.code}): ${run.holdRaw.slice(0, 300)}`);
        const lastDone = Math.max(...restarts.map((r) => r.doneMs));
        if (run.rate && lastDone > run.rate.seconds * 1000) anomalies.push(`round ${round} ${mode}: the restarts ended ${(lastDone / 1000).toFixed(1)} s after the load started, after the ${T} s load (the window may be cut short)`);
        const rt = run.rate;
        log(`  round ${round} ${mode.padEnd(15)} ${rt ? `${rt.failed}/${rt.attempted} failed${rt.failed ? ` ${JSON.stringify(rt.errors)}, window ${rt.windowMs} ms from ${rt.firstFailureMs} ms` : ''}, slowest ${rt.maxConnectMs} ms` : 'no result'}; ready ${restarts.map((r) => `${r.node} ${r.error ? 'FAILED' : `${r.readyMs} ms`}`).join(', ')}${run.hold ? `; held connection ${run.hold.error === null ? `survived (${run.hold.rounds} round trips, max ${run.hold.maxRttMs} ms)` : `BROKE: ${run.hold.error} after ${run.hold.rounds} round trips`}` : ''}; old agents gone ${restarts.map((r) => `${r.node} +${r.oldGoneAfterMs === null ? '?' : (r.oldGoneAfterMs / 1000).toFixed(1)} s`).join(', ')}`);
      }
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await sandboxDown({ stateDir });
  }

  // report
  const md: string[] = [];
  const byMode = (m: Mode) => runs.filter((r) => r.mode === m);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const errs = (rs: ModeRun[]): string => {
    const e: Record<string, number> = {};
    for (const r of rs) for (const [k, v] of Object.entries(r.rate?.errors ?? {})) e[k] = (e[k] ?? 0) + v;
    return Object.keys(e).length ? Object.entries(e).map(([k, v]) => `${k} ${v}`).join(', ') : '-';
  };
  const summaryRows = MODES.map((m) => {
    const rs = byMode(m);
    const rates = rs.map((r) => r.rate).filter((x): x is RateJson => x !== null);
    const ready = (n: string) => rs.map((r) => r.restarts.find((x) => x.node === n)!.readyMs).filter((x) => !Number.isNaN(x));
    const holds = rs.map((r) => r.hold).filter((x): x is HoldJson => x !== null);
    return [
      m,
      `${sum(rates.map((r) => r.failed))} / ${sum(rates.map((r) => r.attempted))}`,
      errs(rs),
      rates.map((r) => String(r.windowMs)).join(', '),
      rates.map((r) => String(r.maxConnectMs)).join(', '),
      `${ms0(median(ready('n1')))} (${ready('n1').join(', ')})`,
      `${ms0(median(ready('n2')))} (${ready('n2').join(', ')})`,
      m === 'hand-over' ? `${holds.filter((h) => h.error === null).length}/${rs.length} survived${holds.some((h) => h.error !== null) ? ` (${holds.filter((h) => h.error !== null).map((h) => h.error).join(', ')})` : ''}` : 'not held (see below)',
    ];
  });
  const roundRows = runs.map((r) => [
    String(r.round), r.mode, r.order === 1 ? '1st' : '2nd',
    r.rate ? `${r.rate.failed} / ${r.rate.attempted}` : '-',
    r.rate && r.rate.failed ? Object.entries(r.rate.errors).map(([k, v]) => `${k} ${v}`).join(', ') : '-',
    r.rate ? String(r.rate.windowMs) : '-',
    r.rate?.firstFailureMs === null || r.rate === null ? '-' : String(r.rate.firstFailureMs),
    r.rate ? String(r.rate.maxConnectMs) : '-',
    r.restarts.map((x) => `${x.node} ${(x.atMs / 1000).toFixed(1)}–${(x.doneMs / 1000).toFixed(1)} s`).join(', '),
    r.restarts.map((x) => (x.error ? '**failed**' : String(x.readyMs))).join(' / '),
    r.restarts.map((x) => x.log.drained ? `${(x.log.drained.ms / 1000).toFixed(1)} s (${x.log.drained.connectionsAtStart} open${x.log.drained.closedAtDeadline ? `, ${x.log.drained.closedAtDeadline} cut` : ''})` : '-').join(' / '),
    r.mode === 'hand-over' ? r.restarts.map((x) => x.log.socketsTaken === null ? '-' : `${x.log.socketsTaken}${x.log.socketsRejected ? ` (${x.log.socketsRejected} rejected)` : ''}`).join(' / ') : '-',
    r.hold ? (r.hold.error === null ? `yes, ${r.hold.rounds} RTs, max ${r.hold.maxRttMs} ms` : `**no**: ${r.hold.error} after ${r.hold.rounds} RTs`) : '-',
  ]);
  const ho = byMode('hand-over');
  const hoFailed = sum(ho.map((r) => r.rate?.failed ?? 0));
  const hoComplete = ho.length > 0 && ho.every((r) => r.rate !== null);
  const met = hoComplete && hoFailed === 0;
  md.push(
    `### (a) Hand-over window at ${RATE} new connections/s`,
    '',
    `Sandbox 2 nodes × 2 pods (up in ${ms0(upMs)} ms), agents with \`drainTimeout: ${DRAIN_TIMEOUT_S}s\`. Client \`n1-p1\` -> \`nettool serve\` in \`n2-p1\` (port ${ECHO_PORT}), both enrolled: every connection goes app -> n1 agent -> HBONE -> n2 agent -> app. \`nettool rate ${RATE} ${T}\` opens ${RATE} new connections a second for ${T} s (each one 1-byte round trip, 5 s timeout); 2 s in, n1's agent is restarted (\`restartAgent\`), then n2's. ${rounds} round(s); each round runs both modes back to back, alternating which goes first. Before the rounds, a ${controlS} s control run without any restart: ${control ? `${control.failed}/${control.attempted} failed, slowest ${control.maxConnectMs} ms` : 'no result'}.`,
    '',
    '- **hand-over** (`handover: true`, DaemonSet maxSurge): the new agent starts while the old one runs, takes every listening socket over the hand-over unix socket (SCM_RIGHTS), and the old one, sent SIGTERM once the new one is ready, drains and exits. One extra `nettool hold` connection (a 64-byte round trip every 50 ms for the whole run) checks that established connections survive.',
    '- **stop-then-start** (`handover: false`, maxUnavailable; the baseline): SIGTERM, wait for the old agent to exit, start the new one. No held connection here: SIGTERM drains established connections, so a held one would keep the old agent alive until it ends (or drainTimeout) and hold the restart up.',
    '',
    table(['mode', 'failed / attempted (all rounds)', 'errors', 'failure window ms (per round)', 'slowest successful connection ms (per round)', 'n1 new agent ready ms, median (per round)', 'n2 new agent ready ms, median (per round)', 'held connection'], summaryRows),
    '',
    `**Target: 0 refused at ${RATE}/s with hand-over: ${met ? 'met' : 'NOT met'}** (${hoFailed} of ${sum(ho.map((r) => r.rate?.attempted ?? 0))} new connections failed over ${ho.length} hand-over run(s); any failed connection counts, whatever its error).`,
    '',
    'Error codes: `ECONNREFUSED` is the app\'s connect refused — the pod\'s connect4 hook still sends it to the agent\'s listener, which is closed while no agent runs (fail closed, no bypass); `ECONNRESET` is a connection the n1 agent accepted but could not open the HBONE tunnel for (n2\'s agent down), so it reset it; `ECLOSED`/`ETIMEDOUT` (nettool) a connection closed before or not answered within 5 s of its echo.',
    '',
    `"failure window" is nettool's: from the first to the last failed connection, plus one interval (5 ms); it spans both restarts when both produced failures (and the gap between them), so for a continuous outage estimate use failed × ${1000 / RATE} ms. Ready time is \`restartAgent\`'s \`readyMs\`, from the call to the new agent's ready file (polled every 100 ms); for stop-then-start it includes the old agent's drain and exit. "slowest" is the longest successful connect + round trip. With hand-over the old agents drain until their last connection ends (the held one lasts the whole run, hence "drained in" ≈ the rest of the run); the next run starts only once they have exited. After every hand-over restart the bench also checks that the node's hand-over socket file still exists (the next hand-over needs it), and a restart that fails is reported and followed by a fresh start of that node's agent.`,
    '',
    '<details><summary>per run</summary>',
    '',
    table(['round', 'mode', 'order', 'failed / attempted', 'errors', 'window ms', 'first failure ms', 'slowest ms', 'restarts (from launching the load; nettool starts ~0.1-0.3 s later)', 'ready ms n1 / n2', 'old agent drained in (its log)', 'sockets taken over n1 / n2', 'held connection'], roundRows),
    '',
    '</details>',
    '',
    ...(stopThenStartWarnings.length || stopThenStartFailed.length
      ? [
          'In stop-then-start the agents log what the baseline is expected to produce (not counted as anomalies):',
          ...(stopThenStartWarnings.length ? [`warnings — ${stopThenStartWarnings.join('; ')};`] : []),
          ...(stopThenStartFailed.length ? [`failed connections in the access log (the ones the agent saw; refused connects never reach it) — ${stopThenStartFailed.join('; ')}.`] : []),
          '',
        ]
      : []),
  );
  return { md, anomalies };
}

// ---------------------------------------------------------------------------
// (b) start-up time to ready
// ---------------------------------------------------------------------------

type StartKind = 'hand-over' | 'no-hand-over' | 'warm' | 'cold';

interface StartRun {
  round: number;
  kind: StartKind;
  /** the figure: restartAgent readyMs (hand-over, no-hand-over) or startAgent + waitAgentReady (warm, cold) */
  readyMs: number;
  /** warm: stopAgent (SIGTERM -> exit); cold: stopAgent + removing the pins */
  stopMs: number | null;
  log: StartLog;
  /** cold: pod pin directories removed */
  pinsRemoved?: number;
  /** hand-over: old agent gone, ms after restartAgent returned */
  oldGoneAfterMs?: number | null;
}

async function startupTime(o: { quick: boolean; stateDir: string; log: (s: string) => void }): Promise<{ md: string[]; anomalies: string[] }> {
  const { stateDir, log } = o;
  const rounds = o.quick ? 1 : 3;
  const totalPods = o.quick ? 20 : 200;
  const anomalies: string[] = [];
  const runs: StartRun[] = [];
  let upMs = NaN;
  let enrolledPods = 0;
  log(`\n[10b] restart: agent start-up time to ready; sandbox 1 node x ${totalPods} pods (${totalPods / 2} enrolled), ${rounds} round(s)`);
  const READY_TIMEOUT = 120_000;
  try {
    await waitNoSandbox();
    let st: SandboxState;
    ({ st, upMs } = await timedSandboxUp({ nodes: 1, pods: totalPods, stateDir, agentReadyTimeoutMs: READY_TIMEOUT }, log));
    enrolledPods = st.pods.filter((p) => p.ambient).length;
    const node = st.nodes[0]!;
    const podsDir = path.join(node.bpffsDir, 'pods');
    log(`  sandboxUp of ${totalPods} pods with the agent ready: ${ms0(upMs)} ms (${enrolledPods} enrolled)`);
    const pinned = (): string[] => {
      try {
        return fs.readdirSync(podsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
      } catch {
        return [];
      }
    };
    const agentPid = (): number | null => sandboxStatus({ stateDir }).nodes[0]!.agentPid;
    const record = (r: StartRun): void => {
      runs.push(r);
      for (const p of r.log.problems) anomalies.push(`round ${r.round} ${r.kind}: agent.log: \`${p}\``);
      if (r.log.enrolled !== null && r.log.enrolled !== enrolledPods) anomalies.push(`round ${r.round} ${r.kind}: the agent was ready with ${r.log.enrolled} of ${enrolledPods} pods enrolled`);
      log(`  round ${r.round} ${r.kind.padEnd(12)} ready ${ms0(r.readyMs)} ms${r.stopMs !== null ? ` (stop ${ms0(r.stopMs)} ms before)` : ''}; agent log: spawn -> "datapath loaded" ${ms0(r.log.spawnToLoadedMs)} ms, -> "agent ready" ${ms0(r.log.loadedToReadyMs)} ms; pods: ${r.log.podsAdopted} links adopted, ${r.log.podsAttached} attached${r.log.socketsTaken !== null ? `; ${r.log.socketsTaken} sockets taken over` : ''}`);
    };
    const handoverStart = async (round: number): Promise<void> => {
      // (1) restart with hand-over
      const off = logSize(node.log);
      const before = agentPid();
      const sockBefore = fs.existsSync(handoverSocketOf(node.config));
      let h: Awaited<ReturnType<typeof restartAgent>>;
      try {
        h = await restartAgent(node.name, { handover: true, stateDir, readyTimeoutMs: READY_TIMEOUT });
      } catch (e) {
        const msg = (e as Error).message.split('\n')[0]!;
        log(`  round ${round} hand-over: restart FAILED: ${msg}`);
        anomalies.push(`round ${round} hand-over: \`restartAgent\` failed: ${msg}${!sockBefore ? ` — the hand-over socket ${handoverSocketOf(node.config)} did not exist before this restart although agent pid ${before} was running` : ''}. Its log since the restart:\n\n  \`\`\`\n${logTail(node.log, off).map((l) => `  ${l}`).join('\n')}\n  \`\`\`\n\n  The bench then stopped pid ${before} and started a fresh agent; this round has no hand-over figure.`);
        await recoverAgent(node.name, before, stateDir, 30_000);
        return;
      }
      const hDone = now();
      const gone = await watchExit(h.oldPid, 30_000);
      if (gone === null) anomalies.push(`round ${round} hand-over: the old agent (pid ${h.oldPid}) was still running 30 s after the restart (no connections to drain)`);
      record({ round, kind: 'hand-over', readyMs: h.readyMs, stopMs: null, log: readStartLog(node.log, off), oldGoneAfterMs: gone === null ? null : gone - hDone });
      if (!fs.existsSync(handoverSocketOf(node.config))) anomalies.push(`round ${round} hand-over: after the restart (old pid ${h.oldPid} gone, new pid ${h.newPid} running) the hand-over socket ${handoverSocketOf(node.config)} is missing: the next hand-over restart cannot take the sockets over (it fails with EADDRINUSE). Its log since the restart:\n\n  \`\`\`\n${logTail(node.log, off, 14).map((l) => `  ${l}`).join('\n')}\n  \`\`\``);
    };
    const noHandoverRestart = async (round: number): Promise<void> => {
      // (2) restart without hand-over (SIGTERM, exit, start)
      const off = logSize(node.log);
      const n = await restartAgent(node.name, { handover: false, stateDir, readyTimeoutMs: READY_TIMEOUT });
      record({ round, kind: 'no-hand-over', readyMs: n.readyMs, stopMs: null, log: readStartLog(node.log, off) });
    };
    const warmStart = async (round: number): Promise<void> => {
      // (2') the same, stop and start timed apart (pinned links kept: warm start)
      const off = logSize(node.log);
      let t = now();
      if (!(await stopAgent(node.name, 'SIGTERM', { stateDir, timeoutMs: 60_000 }))) throw new Error(`the agent of ${node.name} (pid ${agentPid()}) did not stop within 60 s`);
      const stopMs = now() - t;
      t = now();
      await startAgent(node.name, { stateDir });
      await waitAgentReady(node.name, READY_TIMEOUT, { stateDir });
      record({ round, kind: 'warm', readyMs: now() - t, stopMs, log: readStartLog(node.log, off) });
    };
    const coldStart = async (round: number): Promise<void> => {
      // (3) cold: no agent, no pinned per-pod links
      const off = logSize(node.log);
      let t = now();
      if (!(await stopAgent(node.name, 'SIGTERM', { stateDir, timeoutMs: 60_000 }))) throw new Error(`the agent of ${node.name} (pid ${agentPid()}) did not stop within 60 s`);
      const dirs = pinned();
      for (const d of dirs) fs.rmSync(path.join(podsDir, d), { recursive: true, force: true });
      const left = pinned();
      if (left.length) throw new Error(`could not remove the pinned links of ${left.length} pods under ${podsDir}`);
      const stopMs = now() - t;
      t = now();
      await startAgent(node.name, { stateDir });
      await waitAgentReady(node.name, READY_TIMEOUT, { stateDir });
      const cold: StartRun = { round, kind: 'cold', readyMs: now() - t, stopMs, log: readStartLog(node.log, off), pinsRemoved: dirs.length };
      if (cold.log.podsAdopted > 0) anomalies.push(`round ${round} cold: ${cold.log.podsAdopted} pods still had pinned links (not a cold start for them)`);
      record(cold);
    };
    const steps = [handoverStart, noHandoverRestart, warmStart, coldStart];
    for (let round = 1; round <= rounds; round++) {
      // rotate the order from round to round, so no kind always runs right after the same one
      for (let i = 0; i < steps.length; i++) await steps[(i + round - 1) % steps.length]!(round);
    }
  } finally {
    await sandboxDown({ stateDir });
  }

  // ref: what the ratio compares with (the cold start's ready time, or its spawn -> "agent ready" from the log)
  const kinds: Array<{ kind: StartKind; label: string; value: (r: StartRun) => number | null; ref: 'ready' | 'log' | null }> = [
    { kind: 'hand-over', label: '(1) restart with hand-over: `restartAgent` readyMs', value: (r) => r.readyMs, ref: 'ready' },
    { kind: 'no-hand-over', label: '(2) restart without hand-over, total: `restartAgent` readyMs (old agent drains + exits, then the new one starts)', value: (r) => r.readyMs, ref: 'ready' },
    { kind: 'no-hand-over', label: '(2) of which the new agent alone: spawn -> "agent ready" (agent log; × cold: against the cold start\'s same log figure)', value: (r) => r.log.spawnToReadyMs, ref: 'log' },
    { kind: 'warm', label: '(2\') stop + start timed apart: `stopAgent` (SIGTERM -> exit)', value: (r) => r.stopMs, ref: null },
    { kind: 'warm', label: '(2\') stop + start timed apart: `startAgent` + `waitAgentReady` (links still pinned: warm start)', value: (r) => r.readyMs, ref: 'ready' },
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
    const m = (f: (r: StartRun) => number | null) => ms0(median(rs.map(f).filter((x): x is number => x !== null)));
    return [
      kind === 'hand-over' ? '(1) hand-over' : kind === 'no-hand-over' ? '(2) no hand-over' : kind === 'warm' ? '(2\') warm start' : '(3) cold start',
      m((r) => r.log.spawnToLoadedMs), m((r) => r.log.loadedToReadyMs), m((r) => r.log.spawnToReadyMs),
      rs.map((r) => `${r.log.podsAdopted}/${r.log.podsAttached}`).join(', '),
      rs.map((r) => (r.log.socketsTaken === null ? '-' : String(r.log.socketsTaken))).join(', '),
      rs.map((r) => (r.log.enrolled === null ? '-' : String(r.log.enrolled))).join(', '),
    ];
  });
  const hoGone = runs.filter((r) => r.kind === 'hand-over').map((r) => r.oldGoneAfterMs);
  const md = [
    `### (b) Agent start-up time to ready with ${enrolledPods} enrolled pods`,
    '',
    `Sandbox 1 node × ${totalPods} pods, every other one enrolled (${enrolledPods} enrolled pods, 3 listening sockets each); no traffic. \`sandboxUp\` of the ${totalPods} pods with the agent ready took ${ms0(upMs)} ms (informative: namespaces, veths, cgroups, workload file, and the first agent start enrolling every pod; timed from the moment it held the sandbox lock).${o.quick ? ` **Quick run: ${totalPods} pods instead of 200, 1 round.**` : ''} Per round (the order rotates by one step from round to round): (1) \`restartAgent(handover: true)\`; (2) \`restartAgent(handover: false)\`; (2') the same done by hand, \`stopAgent\` then \`startAgent\` + \`waitAgentReady\`, timed apart; (3) \`stopAgent\`, then every pod's pinned links (\`<bpffsDir>/pods/<ns>_<name>/\`, ${runs.find((r) => r.kind === 'cold')?.pinsRemoved ?? '-'} directories) removed — with no agent holding them that detaches the hooks — then \`startAgent\` + \`waitAgentReady\`: the agent attaches every pod's 4 hooks again (the pinned BPF maps stay; their entries are rewritten). Ready = the agent's ready file seen (polled every 100 ms). ${rounds} round(s); the ratio is the median over the median cold start.`,
    '',
    table(['measure', 'per round ms', 'median ms', '× cold start'], rows),
    '',
    'From the agent\'s own log (1 ms timestamps; "spawn" is the marker `startAgent` writes just before spawning, so spawn -> "datapath loaded" is mostly Node.js start-up and module loading, and "datapath loaded" -> "agent ready" is the CA, the listeners, the pods\' enrollment and the first reconcile; medians):',
    '',
    table(['start', 'spawn -> "datapath loaded" ms', '"datapath loaded" -> "agent ready" ms', 'spawn -> "agent ready" ms', 'pods: links adopted / attached (per round)', 'listening sockets taken over (per round)', 'enrolled at ready (per round)'], breakdown),
    '',
    `With hand-over the old agent (no connections to drain) was gone ${hoGone.map((x) => (x === null ? 'not within 30 s' : `${ms0(x)} ms`)).join(', ')} after \`restartAgent\` returned.`,
    '',
  ];
  return { md, anomalies };
}

// ---------------------------------------------------------------------------

export async function restartBench(opts: RestartBenchOptions): Promise<string> {
  const log = opts.log ?? ((s: string) => void process.stdout.write(s + '\n'));
  const o = { quick: opts.quick ?? false, stateDir: opts.stateDir, log };
  const t0 = now();
  const a = await handoverWindow(o);
  const b = await startupTime(o);
  const anomalies = [...a.anomalies, ...b.anomalies];
  const md = [
    '## Agent restarts: hand-over window, start-up time to ready',
    '',
    `Rolling-update restarts of the agent (\`restartAgent\` in \`src/sandbox/topology.ts\`). Section run time ${((now() - t0) / 1000).toFixed(0)} s.${o.quick ? ' **Quick run**: 1 round each, 8 s of load, 20 pods in (b).' : ''}`,
    '',
    ...a.md,
    ...b.md,
    ...(anomalies.length
      ? [
          '**Anomalies and warnings seen during the run** (hand-over runs and start-up measurements; a `HBONE request rejected` / `server_closing` warning in a hand-over run is the draining n2 agent refusing a new stream, which the n1 agent then retries on a new session — the app only sees it if it appears among the failed connections):',
          '',
          ...anomalies.map((x) => `- ${x}`),
          '',
        ]
      : ['No anomalies: no warning or error in the agent logs of the hand-over runs and start-up measurements, no failed connection in their access logs, every old agent exited by itself, every hand-over socket was in place.', '']),
  ];
  return md.join('\n');
}

if (process.argv[1] && process.argv[1].endsWith('restart.js')) {
  const stateDir = '/run/ambientd-sandbox-bench';
  restartBench({ quick: process.argv.includes('--quick'), stateDir, log: (s) => void process.stderr.write(s + '\n') })
    .then((s) => process.stdout.write(s + '\n'), async (e) => {
      process.stderr.write(`${(e as Error).stack}\n`);
      await sandboxDown({ stateDir }).catch(() => undefined);
      process.exit(1);
    });
}
