// Start to ready of one sandbox node's agent, from the checkout and from the
// image, in the same run: 2 pods with none enrolled, 2 pods (1 enrolled) and
// 200 pods (100 enrolled); CASES=0,1,100 (enrolled counts) picks some.
// Each: stop the agent, remove the pods' pinned links (a cold start: it must
// attach everything again), start, wait for the ready file. Median of ROUNDS.
// Run under the machine-wide lock, after `make image` and a build of dist/:
//   flock /tmp/ambientd-privileged.lock node scripts/image/measure-start.mjs
import fs from 'node:fs';
import process from 'node:process';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { sandboxDown, sandboxUp, setEnrollment, startAgent, stopAgent, waitAgentReady } from '../../dist/tools/sandbox/index.js';

const IMAGE = process.env.IMAGE ?? 'localhost/ambientd:0.1.0';
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

const CASES = [
  { pods: 2, enrolled: 0 },
  { pods: 2, enrolled: 1 },
  { pods: 200, enrolled: 100 },
].filter((c) => (process.env.CASES ?? '0,1,100').split(',').map(Number).includes(c.enrolled));

for (const { pods, enrolled: want } of CASES) {
  const st = await sandboxUp({ nodes: 1, pods, agents: false });
  const n = st.nodes[0];
  // 0 enrolled: the sandbox's one ambient pod is taken out of the mesh before any agent runs
  if (want === 0) for (const p of st.pods.filter((x) => x.ambient)) await setEnrollment(p.name, false);
  const enrolled = want === 0 ? 0 : st.pods.filter((p) => p.ambient).length;
  const res = {};
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (const [mode, image] of r % 2
        ? [
            ['image', IMAGE],
            ['checkout', ''],
          ]
        : [
            ['checkout', ''],
            ['image', IMAGE],
          ]) {
        await stopAgent(n.name, 'SIGTERM', { timeoutMs: 30_000 });
        fs.rmSync(path.join(n.bpffsDir, 'pods'), { recursive: true, force: true });
        const t0 = performance.now();
        await startAgent(n.name, { image });
        await waitAgentReady(n.name, 60_000);
        (res[mode] ??= []).push(Math.round(performance.now() - t0));
      }
    }
    await stopAgent(n.name, 'SIGTERM', { timeoutMs: 30_000 });
  } finally {
    await sandboxDown();
  }
  for (const [mode, ms] of Object.entries(res))
    process.stdout.write(`${pods} pods (${enrolled} enrolled) ${mode}: median ${median(ms)} ms (${ms.join(', ')})\n`);
}
