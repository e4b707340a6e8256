// Over 500 lines on purpose: both restart measurements (hand-over window, start-up time) share one sandbox set-up and the alternating rounds.
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
 *   node dist/bench/restart.js [--quick]   -> prints the markdown section
 *
 * Called by bench/run.ts (section `restart`). Builds and removes its own
 * sandbox (state in opts.stateDir); never asserts on times. Returns
 * RestartResults: the figures and what went wrong (failed restarts, log
 * lines, exits); bench/render/restart.ts writes section 10 and its list of
 * anomalies from them.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import {
  sandboxUp,
  sandboxDown,
  sandboxStatus,
  restartAgent,
  startAgent,
  stopAgent,
  waitAgentReady,
  isProcessAlive,
  SANDBOX_LOCK,
  type SandboxState,
  type SandboxPod,
  type SandboxUpOptions,
} from '../tools/sandbox/index.js';
import { nettool, nettoolServer, type RunResult } from '../tools/sandbox/podproc.js';
import { now, sleep, parseJson, waitNoSandbox, toolFailed } from './lib.js';
import { fmt } from './stats.js';
import {
  RESTART_MODES,
  type HoldJson,
  type HandoverWindowResults,
  type ModeRun,
  type NodeRestart,
  type RateJson,
  type RestartFailure,
  type RestartMode,
  type RestartResults,
  type SocketMissing,
  type StartLog,
  type StartStep,
  type StartupResults,
} from './results.js';
import { restartMarkdown } from './render/restart.js';

const ECHO_PORT = 7000;
const RATE = 200;
/** drainTimeout of the agents in (a): long enough for the held connection to end by itself */
const DRAIN_TIMEOUT_S = 60;

export interface RestartBenchOptions {
  quick?: boolean;
  /** the sandbox state dir (bench/run.ts: /run/ambientd-sandbox-bench) */
  stateDir: string;
  /** progress lines (default: stdout) */
  log?: (s: string) => void;
}

const lastJson = <T>(r: RunResult): T | null => {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return parseJson(line) as T | null;
};

function logSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

const emptyStartLog = (): StartLog => ({
  spawnToLoadedMs: null,
  loadedToReadyMs: null,
  spawnToReadyMs: null,
  enrolled: null,
  podsAdopted: 0,
  podsAttached: 0,
  socketsTaken: null,
  socketsRejected: null,
  drained: null,
  problems: [],
  failedConns: [],
});

/** Reads agent.log from byte offset `from` and picks out the start-up and drain figures. */
function readStartLog(file: string, from: number): StartLog {
  let text = '';
  try {
    const buf = fs.readFileSync(file);
    text = buf.subarray(from).toString('utf8');
  } catch {
    /* none */
  }
  const out = emptyStartLog();
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
      case 'datapath loaded':
        loadedAt ??= t;
        break;
      case 'agent ready':
        if (readyAt === null) {
          readyAt = t;
          out.enrolled = typeof j.enrolled === 'number' ? j.enrolled : null;
        }
        break;
      case 'pod enrolled':
        if (j.adopted === true) out.podsAdopted++;
        else out.podsAttached++;
        break;
      case 'took over the listening sockets':
        out.socketsTaken = typeof j.adopted === 'number' ? j.adopted : null;
        out.socketsRejected = typeof j.rejected === 'number' ? j.rejected : null;
        break;
      case 'drained':
        out.drained = { ms: Number(j.ms), connectionsAtStart: Number(j.connectionsAtStart), closedAtDeadline: Number(j.closedAtDeadline) };
        break;
      default:
        break;
    }
    if (j.msg === 'connection' && j.state === 'failed') {
      // the fields that matter, in this order (JSON drops the undefined ones)
      out.failedConns.push(
        JSON.parse(
          JSON.stringify({
            time: j.time,
            direction: j.direction,
            via: j.via,
            src: j.src,
            dst: j.dst,
            reason: j.reason,
            durationMs: j.durationMs,
            start: j.start,
          }),
        ) as Record<string, unknown>,
      );
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
      } catch {
        /* not taken yet */
      }
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
    return fs
      .readFileSync(file)
      .subarray(from)
      .toString('utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.includes('"scope":"ambientd.access"'))
      .slice(-n)
      .map((l) => (l.length > 300 ? l.slice(0, 300) + '…' : l));
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
    try {
      process.kill(alivePid, 'SIGTERM');
    } catch {
      /* gone */
    }
    if ((await watchExit(alivePid, waitMs)) === null) {
      try {
        process.kill(alivePid, 'SIGKILL');
      } catch {
        /* gone */
      }
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

async function handoverWindow(o: { quick: boolean; stateDir: string; log: (s: string) => void }): Promise<HandoverWindowResults> {
  const { stateDir, log } = o;
  const rounds = o.quick ? 1 : 3;
  const T = o.quick ? 8 : 10;
  const controlS = 3;
  log(
    `\n[10a] restart: hand-over window at ${RATE} new connections/s; sandbox 2 nodes x 2 pods (drainTimeout ${DRAIN_TIMEOUT_S}s), ${rounds} round(s) x ${RESTART_MODES.join(' / ')}, ${T} s each`,
  );
  const res: HandoverWindowResults = {
    rate: RATE,
    drainTimeoutS: DRAIN_TIMEOUT_S,
    echoPort: ECHO_PORT,
    loadSeconds: T,
    rounds,
    controlSeconds: controlS,
    upMs: NaN,
    control: null,
    controlRaw: '',
    runs: [],
  };
  let st: SandboxState | null = null;
  const procs: ChildProcess[] = [];
  try {
    await waitNoSandbox();
    let upMs: number;
    ({ st, upMs } = await timedSandboxUp({ nodes: 2, pods: 2, drainTimeout: `${DRAIN_TIMEOUT_S}s`, stateDir }, log));
    res.upMs = upMs;
    const pod = (n: string): SandboxPod => st!.pods.find((p) => p.name === n)!;
    const src = pod('n1-p1');
    const dst = pod('n2-p1');
    if (!src.ambient || !dst.ambient)
      throw toolFailed(
        'unexpected sandbox layout: n1-p1 and n2-p1 should be ambient',
        'the bench follows the sandbox layout of tools/sandbox/plan.ts; update it there or here',
      );
    const nodeOf = (n: string) => st!.nodes.find((x) => x.name === n)!;
    procs.push(await nettoolServer(dst, 'serve', ECHO_PORT));

    // Control: the same load without a restart (also warms the HBONE pool, the certificates and the JIT).
    const c = await nettool(src, 'rate', dst.ip, ECHO_PORT, RATE, controlS);
    const control = lastJson<RateJson>(c);
    res.control = control;
    res.controlRaw = `${c.stdout.trim()} ${c.stderr.trim()}`.trim();
    log(
      `  control (no restart, ${controlS} s): ${control ? `${control.ok}/${control.attempted} ok, ${control.failed} failed${control.failed ? ` ${JSON.stringify(control.errors)}` : ''}, slowest ${control.maxConnectMs} ms` : `unparsable: ${c.stdout} ${c.stderr}`}`,
    );

    for (let round = 1; round <= rounds; round++) {
      const order: RestartMode[] = round % 2 === 1 ? [...RESTART_MODES] : [...RESTART_MODES].reverse();
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
          const sock = handoverSocketOf(nodeOf(n).config);
          const sockBefore = fs.existsSync(sock);
          const base = { node: n, atMs: at - t0, oldGoneAfterMs: null, logFile: nodeOf(n).log, log: emptyStartLog(), socketMissing: null };
          try {
            const r = await restartAgent(n, { handover, stateDir, readyTimeoutMs: 60_000 });
            const done = now();
            exits.push(watchExit(r.oldPid, (DRAIN_TIMEOUT_S + 15) * 1000).then((gone) => (gone === null ? null : Math.max(0, gone - done))));
            restarts.push({ ...base, oldPid: r.oldPid, newPid: r.newPid, readyMs: r.readyMs, doneMs: done - t0, error: null });
          } catch (e) {
            const msg = (e as Error).message.split('\n')[0]!;
            const done = now();
            log(`  round ${round} ${mode}: restart of ${n} FAILED after ${((done - at) / 1000).toFixed(1)} s: ${msg}`);
            const error: RestartFailure = {
              message: msg,
              handoverSocket: sock,
              socketExistedBefore: sockBefore,
              previousPid: before,
              logTail: logTail(nodeOf(n).log, offsets[n]!),
            };
            await recoverAgent(n, before, stateDir, (DRAIN_TIMEOUT_S + 15) * 1000);
            exits.push(Promise.resolve(0));
            restarts.push({ ...base, oldPid: before, newPid: null, readyMs: null, doneMs: now() - t0, error });
          }
        }
        const [rateR, holdR] = await Promise.all([rateP, holdP]);
        // the old agents drain and exit by themselves (hand-over) before the next run starts
        const gone = await Promise.all(exits);
        restarts.forEach((r, i) => {
          r.oldGoneAfterMs = gone[i]!;
          r.log = readStartLog(r.logFile, offsets[r.node]!);
          const sock = handoverSocketOf(nodeOf(r.node).config);
          if (handover && r.error === null && !fs.existsSync(sock))
            r.socketMissing = { path: sock, oldPid: r.oldPid, newPid: r.newPid, logTail: logTail(r.logFile, offsets[r.node]!, 14) };
        });
        const run: ModeRun = {
          round,
          mode,
          order: (k + 1) as 1 | 2,
          rate: lastJson<RateJson>(rateR),
          rateRaw: `${rateR.stdout.trim()} ${rateR.stderr.trim()}`.trim(),
          rateExit: rateR.code,
          hold: holdR ? lastJson<HoldJson>(holdR) : null,
          holdRaw: holdR ? `${holdR.stdout.trim()} ${holdR.stderr.trim()}`.trim() : '',
          holdExit: holdR ? holdR.code : null,
          restarts,
        };
        res.runs.push(run);
        const rt = run.rate;
        log(
          `  round ${round} ${mode.padEnd(15)} ${rt ? `${rt.failed}/${rt.attempted} failed${rt.failed ? ` ${JSON.stringify(rt.errors)}, window ${rt.windowMs} ms from ${rt.firstFailureMs} ms` : ''}, slowest ${rt.maxConnectMs} ms` : 'no result'}; ready ${restarts.map((r) => `${r.node} ${r.error ? 'FAILED' : `${r.readyMs} ms`}`).join(', ')}${run.hold ? `; held connection ${run.hold.error === null ? `survived (${run.hold.rounds} round trips, max ${run.hold.maxRttMs} ms)` : `BROKE: ${run.hold.error} after ${run.hold.rounds} round trips`}` : ''}; old agents gone ${restarts.map((r) => `${r.node} +${r.oldGoneAfterMs === null ? '?' : (r.oldGoneAfterMs / 1000).toFixed(1)} s`).join(', ')}`,
        );
      }
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await sandboxDown({ stateDir });
  }
  return res;
}

// ---------------------------------------------------------------------------
// (b) start-up time to ready
// ---------------------------------------------------------------------------

async function startupTime(o: { quick: boolean; stateDir: string; log: (s: string) => void }): Promise<StartupResults> {
  const { stateDir, log } = o;
  const rounds = o.quick ? 1 : 3;
  const totalPods = o.quick ? 20 : 200;
  const res: StartupResults = { totalPods, enrolledPods: 0, rounds, upMs: NaN, steps: [] };
  log(`\n[10b] restart: agent start-up time to ready; sandbox 1 node x ${totalPods} pods (${totalPods / 2} enrolled), ${rounds} round(s)`);
  const READY_TIMEOUT = 120_000;
  try {
    await waitNoSandbox();
    const { st, upMs } = await timedSandboxUp({ nodes: 1, pods: totalPods, stateDir, agentReadyTimeoutMs: READY_TIMEOUT }, log);
    res.upMs = upMs;
    res.enrolledPods = st.pods.filter((p) => p.ambient).length;
    const node = st.nodes[0]!;
    const podsDir = path.join(node.bpffsDir, 'pods');
    const sock = handoverSocketOf(node.config);
    log(`  sandboxUp of ${totalPods} pods with the agent ready: ${fmt(upMs, 0)} ms (${res.enrolledPods} enrolled)`);
    const pinned = (): string[] => {
      try {
        return fs
          .readdirSync(podsDir, { withFileTypes: true })
          .filter((d) => d.isDirectory())
          .map((d) => d.name);
      } catch {
        return [];
      }
    };
    const agentPid = (): number | null => sandboxStatus({ stateDir }).nodes[0]!.agentPid;
    const record = (r: StartStep): void => {
      res.steps.push(r);
      log(
        `  round ${r.round} ${r.kind.padEnd(12)} ready ${fmt(r.readyMs, 0)} ms${r.stopMs !== null ? ` (stop ${fmt(r.stopMs, 0)} ms before)` : ''}; agent log: spawn -> "datapath loaded" ${fmt(r.log.spawnToLoadedMs, 0)} ms, -> "agent ready" ${fmt(r.log.loadedToReadyMs, 0)} ms; pods: ${r.log.podsAdopted} links adopted, ${r.log.podsAttached} attached${r.log.socketsTaken !== null ? `; ${r.log.socketsTaken} sockets taken over` : ''}`,
      );
    };
    const stopped = async (): Promise<void> => {
      if (!(await stopAgent(node.name, 'SIGTERM', { stateDir, timeoutMs: 60_000 })))
        throw toolFailed(
          `the agent of ${node.name} (pid ${agentPid()}) did not stop within 60 s`,
          `it should drain nothing here (no traffic): see ${node.log}`,
        );
    };
    const handoverStart = async (round: number): Promise<void> => {
      // (1) restart with hand-over
      const off = logSize(node.log);
      const before = agentPid();
      const sockBefore = fs.existsSync(sock);
      let h: Awaited<ReturnType<typeof restartAgent>>;
      try {
        h = await restartAgent(node.name, { handover: true, stateDir, readyTimeoutMs: READY_TIMEOUT });
      } catch (e) {
        const msg = (e as Error).message.split('\n')[0]!;
        log(`  round ${round} hand-over: restart FAILED: ${msg}`);
        const failure: RestartFailure = {
          message: msg,
          handoverSocket: sock,
          socketExistedBefore: sockBefore,
          previousPid: before,
          logTail: logTail(node.log, off),
        };
        res.steps.push({ round, kind: 'hand-over', readyMs: NaN, stopMs: null, log: readStartLog(node.log, off), failure });
        await recoverAgent(node.name, before, stateDir, 30_000);
        return;
      }
      const hDone = now();
      const gone = await watchExit(h.oldPid, 30_000);
      const socketMissing: SocketMissing | null = fs.existsSync(sock)
        ? null
        : { path: sock, oldPid: h.oldPid, newPid: h.newPid, logTail: logTail(node.log, off, 14) };
      record({
        round,
        kind: 'hand-over',
        readyMs: h.readyMs,
        stopMs: null,
        log: readStartLog(node.log, off),
        oldPid: h.oldPid,
        oldGoneAfterMs: gone === null ? null : gone - hDone,
        socketMissing,
      });
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
      await stopped();
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
      await stopped();
      const dirs = pinned();
      for (const d of dirs) fs.rmSync(path.join(podsDir, d), { recursive: true, force: true });
      const left = pinned();
      if (left.length)
        throw toolFailed(
          `could not remove the pinned links of ${left.length} pods under ${podsDir}`,
          'is something else holding them? `make sandbox-down` removes the sandbox',
        );
      const stopMs = now() - t;
      t = now();
      await startAgent(node.name, { stateDir });
      await waitAgentReady(node.name, READY_TIMEOUT, { stateDir });
      record({ round, kind: 'cold', readyMs: now() - t, stopMs, log: readStartLog(node.log, off), pinsRemoved: dirs.length });
    };
    const steps = [handoverStart, noHandoverRestart, warmStart, coldStart];
    for (let round = 1; round <= rounds; round++) {
      // rotate the order from round to round, so no kind always runs right after the same one
      for (let i = 0; i < steps.length; i++) await steps[(i + round - 1) % steps.length]!(round);
    }
  } finally {
    await sandboxDown({ stateDir });
  }
  return res;
}

// ---------------------------------------------------------------------------

export async function restartBench(opts: RestartBenchOptions): Promise<RestartResults> {
  const log = opts.log ?? ((s: string) => void process.stdout.write(s + '\n'));
  const o = { quick: opts.quick ?? false, stateDir: opts.stateDir, log };
  const t0 = now();
  const handover = await handoverWindow(o);
  const startup = await startupTime(o);
  return { quick: o.quick, seconds: (now() - t0) / 1000, handover, startup };
}

if (process.argv[1] && process.argv[1].endsWith('restart.js')) {
  const stateDir = '/run/ambientd-sandbox-bench';
  restartBench({ quick: process.argv.includes('--quick'), stateDir, log: (s) => void process.stderr.write(s + '\n') }).then(
    (r) => process.stdout.write(restartMarkdown(r).join('\n') + '\n'),
    async (e) => {
      process.stderr.write(`${(e as Error).stack}\n`);
      await sandboxDown({ stateDir }).catch(() => undefined);
      process.exit(1);
    },
  );
}
