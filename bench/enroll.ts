/**
 * Section 3, measured: enrollment latency. Sandbox 1 node x 100 pods; one
 * plain pod at a time is enrolled while a prober in it (bench/prober.ts)
 * connects to an unroutable address every ~1 ms and reports its first
 * redirected connect. Returns EnrollResults; bench/render/enroll.ts writes the
 * report.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sandboxUp, setEnrollment } from '../tools/sandbox/index.js';
import { parseDocument } from '../src/config/config.js';
import { now, sleep, startProc, stopProc, waitNoSandbox, parseJson, toolFailed } from './lib.js';
import type { Enroll, EnrollResults } from './results.js';
import { fmt, pct } from './stats.js';

const PROBER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'prober.js');
/** An address with no route anywhere in the sandbox (see bench/prober.ts). */
const UNROUTABLE = { ip: '10.250.0.1', port: 80 };
const TOTAL_PODS = 100;

export async function enrollmentBench(o: { enrollPods: number }, stateDir: string, log: (s: string) => void): Promise<EnrollResults> {
  const totalPods = TOTAL_PODS;
  log(`\n[3] enrollment latency: sandbox 1 node x ${totalPods} pods, enrolling ${o.enrollPods} plain pods one at a time`);
  await waitNoSandbox();
  const tUp = now();
  const state = await sandboxUp({ nodes: 1, pods: totalPods, stateDir });
  const upMs = now() - tUp;
  const node = state.nodes[0]!;
  // When does workloads.json get replaced? (setEnrollment renames a temp file over it.)
  let renamedAt: number | null = null;
  const watcher = fs.watch(path.dirname(state.workloads), (_ev, name) => {
    if (name === path.basename(state.workloads) && renamedAt === null) renamedAt = now();
  });
  const plain = state.pods.filter((p) => !p.ambient).slice(0, o.enrollPods);
  if (plain.length < o.enrollPods)
    throw toolFailed(
      `only ${plain.length} plain pods, wanted ${o.enrollPods}`,
      'the sandbox enrolls every other pod; raise the pod count with the number of pods to enroll',
    );
  const t0s = new Map<string, number>();
  const pods: Enroll[] = [];
  for (const pod of plain) {
    const prober = startProc(pod, [process.execPath, PROBER, UNROUTABLE.ip, String(UNROUTABLE.port), '1']);
    try {
      const ready = await prober.waitFor(/^(ready|early) /m, 10_000);
      if (/^early /m.test(ready))
        throw toolFailed(
          `${pod.name}: a connect to ${UNROUTABLE.ip}:${UNROUTABLE.port} succeeded before enrollment`,
          'is the pod already enrolled, or does the address have a route now?',
        );
      renamedAt = null;
      const t0 = now();
      t0s.set(pod.name, t0);
      await setEnrollment(pod.name, true, { stateDir });
      const writeMs = now() - t0;
      let latencyMs: number | null = null;
      let attempts = 0;
      try {
        const out = await prober.waitFor(/^ok [0-9.]+ [0-9.]+ \d+ \d+$/m, 5000);
        const m = /^ok ([0-9.]+) ([0-9.]+) (\d+) (\d+)$/m.exec(out)!;
        latencyMs = Number(m[1]) - t0;
        attempts = Number(m[3]);
      } catch (e) {
        log(`  ${pod.name}: ${(e as Error).message.split('\n')[0]}`);
      }
      const renamed: number | null = renamedAt;
      pods.push({ pod: pod.name, latencyMs, writeMs, renamedMs: renamed === null ? null : renamed - t0, agentDoneMs: null, agentMs: null, attempts });
    } finally {
      await stopProc(prober);
    }
  }
  watcher.close();
  // The agent's side, from its log ("pod enrolled" lines carry "ms").
  await sleep(100);
  const lines = fs.readFileSync(node.log, 'utf8').split('\n').map(parseJson);
  const loaded = lines.find((j) => j?.msg === 'datapath loaded');
  const readyLine = lines.find((j) => j?.msg === 'agent ready');
  const initialEnrollMs = typeof loaded?.time === 'string' && typeof readyLine?.time === 'string' ? Date.parse(readyLine.time) - Date.parse(loaded.time) : null;
  const initialEnrolled = typeof readyLine?.enrolled === 'number' ? readyLine.enrolled : null;
  for (const j of lines) {
    if (j?.msg !== 'pod enrolled' || typeof j.pod !== 'string') continue;
    const name = j.pod.split('/').pop()!;
    const r = pods.find((x) => x.pod === name);
    const t0 = t0s.get(name);
    if (!r || t0 === undefined) continue;
    r.agentMs = typeof j.ms === 'number' ? j.ms : null;
    r.agentDoneMs = typeof j.time === 'string' ? Date.parse(j.time) - t0 : null;
  }
  const ok = pods.filter((r) => r.latencyMs !== null).map((r) => r.latencyMs!);
  log(`  ${ok.length}/${pods.length} pods redirected; p50 ${fmt(pct(ok, 50))} ms, p99 ${fmt(pct(ok, 99))} ms, max ${fmt(pct(ok, 100))} ms`);
  // What re-reading the workload file costs (the agent parses all of it on every change).
  const text = fs.readFileSync(state.workloads, 'utf8');
  const parses: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t = now();
    parseDocument(text, state.workloads, 'WORKLOADS_INVALID');
    if (i >= 5) parses.push(now() - t); // the first ones warm the JIT up
  }
  return { totalPods, unroutable: UNROUTABLE, upMs, initialEnrollMs, initialEnrolled, fileBytes: Buffer.byteLength(text), yamlParseMs: pct(parses, 50), pods };
}
