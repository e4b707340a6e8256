// Start to ready of one sandbox node's agent, from the checkout and from the
// image, in the same run: 2 pods (1 enrolled) and 200 pods (100 enrolled).
// Each: stop the agent, remove the pods' pinned links (a cold start: it must
// attach everything again), start, wait for the ready file. Median of ROUNDS.
// Run under the machine-wide lock, after `make image` and a build of dist/:
//   flock /tmp/ambientd-privileged.lock node scripts/image/measure-start.mjs
import fs from 'node:fs';
import process from 'node:process';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { sandboxDown, sandboxUp, startAgent, stopAgent, waitAgentReady } from '../../dist/tools/sandbox/index.js';

const IMAGE = process.env.IMAGE ?? 'localhost/ambientd:0.1.0';
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

for (const pods of [2, 200]) {
  const st = await sandboxUp({ nodes: 1, pods, agents: false });
  const n = st.nodes[0];
  const enrolled = st.pods.filter((p) => p.ambient).length;
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
