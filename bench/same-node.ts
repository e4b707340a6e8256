/**
 * Sections 1-2, measured: same-node throughput (iperf3, 1 stream) and 1 KB
 * request/response latency (sockperf ping-pong, pinned to one CPU and not) on
 * three paths — direct plain -> plain pod, and ambient -> plain through the
 * agent with acceleration=sockmap and =none — in blocks (see Options.blocks).
 * Returns SameNodeResults; bench/render/same-node.ts writes the report.
 */
import fs from 'node:fs';
import os from 'node:os';
import { sandboxUp, sandboxStatus, startAgent, stopAgent, waitAgentReady, type SandboxNode, type SandboxPod } from '../tools/sandbox/index.js';
import { settleTcpMem, startSampler, capturedOut, iperf, latency, setAffinity, waitNoSandbox, parseJson, tcpMemLimits, toolFailed, PIN_CPU } from './lib.js';
import type { Options } from './options.js';
import type { Lat, PathName, SameNodeResults, Tput } from './results.js';
import { fmt } from './stats.js';

/** Sets `acceleration:` in the node's agent.yaml and restarts its agent. */
async function setAcceleration(node: SandboxNode, accel: 'sockmap' | 'none', stateDir: string): Promise<number> {
  const text = fs.readFileSync(node.config, 'utf8');
  if (!/^acceleration: .*$/m.test(text))
    throw toolFailed(
      `${node.config} has no acceleration: line`,
      'the sandbox writes agent.yaml (tools/sandbox/plan.ts agentConfigFor); has its layout changed?',
    );
  fs.writeFileSync(node.config, text.replace(/^acceleration: .*$/m, `acceleration: ${accel}`));
  if (!(await stopAgent(node.name, 'SIGTERM', { stateDir }))) throw toolFailed(`the agent of ${node.name} did not stop`, `see ${node.log}`);
  const logSize = fs.existsSync(node.log) ? fs.statSync(node.log).size : 0;
  const pid = await startAgent(node.name, { stateDir });
  await waitAgentReady(node.name, 30_000, { stateDir });
  // Check what the datapath really runs (sockmap needs the sk_msg program type).
  const fresh = fs.readFileSync(node.log, 'utf8').slice(logSize);
  const line = fresh
    .split('\n')
    .map(parseJson)
    .find((j) => j?.msg === 'datapath loaded');
  const effective = line?.acceleration;
  if (effective !== accel)
    throw toolFailed(
      `asked the agent of ${node.name} for acceleration=${accel}, its datapath runs ${String(effective)}`,
      `sockmap needs the sk_msg program type; see the "datapath loaded" line of ${node.log}`,
    );
  return pid;
}

export async function sameNodeBench(o: Options, stateDir: string, log: (s: string) => void): Promise<SameNodeResults> {
  log(`\n[1+2] throughput and latency: sandbox 1 node x 4 pods, ${o.blocks.length} blocks (${o.blocks.join(', ')}), ${o.seconds} s per measurement`);
  await waitNoSandbox();
  const state = await sandboxUp({ nodes: 1, pods: 4, stateDir });
  const node = state.nodes[0]!;
  const pod = (n: string): SandboxPod => state.pods.find((p) => p.name === n)!;
  const [p1, p2, p4] = [pod('n1-p1'), pod('n1-p2'), pod('n1-p4')];
  if (!p1.ambient || p2.ambient || p4.ambient)
    throw toolFailed(
      'unexpected sandbox layout: n1-p1 should be ambient, n1-p2 and n1-p4 plain',
      'the bench follows the sandbox layout of tools/sandbox/plan.ts; update it there or here',
    );
  const route: Record<PathName, [SandboxPod, SandboxPod]> = {
    direct: [p2, p4],
    'agent+sockmap': [p1, p2],
    'agent (no accel)': [p1, p2],
  };
  // What the sandbox wrote into agent.yaml (agentConfigFor: `none` today). Read
  // it rather than assume it: a block only restarts the agent when the mode
  // changes, so a wrong guess here would measure block 1 in the other mode.
  const initial = /^acceleration: *(\S+)/m.exec(fs.readFileSync(node.config, 'utf8'))?.[1];
  let accel: 'sockmap' | 'none' | undefined = initial === 'sockmap' || initial === 'none' ? initial : undefined;
  let agentPid = sandboxStatus({ stateDir }).nodes[0]!.agentPid;
  const tput: Tput[] = [];
  const lat: Lat[] = [];
  const notCaptured = (pth: PathName, src: SandboxPod): Error =>
    toolFailed(
      `${pth}: the agent captured no connection from ${src.name}: the path did not go through the agent`,
      'check that the pod is enrolled and its connect4 hook attached (`ambientd inspect`)',
    );

  const measureTput = async (pth: PathName, block: number): Promise<void> => {
    const [src, dst] = route[pth];
    const viaAgent = pth !== 'direct';
    await settleTcpMem();
    const c0 = viaAgent ? await capturedOut(node, src.name) : 0;
    const s = startSampler(agentPid);
    const t = await iperf(src, dst, o.seconds);
    const m = s.stop();
    const captured = viaAgent ? (await capturedOut(node, src.name)) - c0 : null;
    if (viaAgent && !captured) throw notCaptured(pth, src);
    tput.push({ path: pth, block, ...t, captured, ...m });
    log(
      `  ${String(block)} ${pth.padEnd(17)} iperf3    ${t.recvGbps.toFixed(2)} Gbit/s received (${t.sentGbps.toFixed(2)} sent), peak TCP mem ${(m.peakTcpMem / 2 ** 20).toFixed(0)} MiB, agent ${m.agentCorePct === null ? '-' : m.agentCorePct.toFixed(0) + '%'} of a core${t.failed ? ` — FAILED after ${fmt(t.failedAfterS, 0)} s: ${t.failed}` : ''}`,
    );
  };
  const measureLat = async (pth: PathName, block: number, pinned: boolean): Promise<void> => {
    const [src, dst] = route[pth];
    const viaAgent = pth !== 'direct';
    await settleTcpMem();
    const c0 = viaAgent ? await capturedOut(node, src.name) : 0;
    const s = startSampler(agentPid);
    const l = await latency(src, dst, o.seconds, pinned ? PIN_CPU : null);
    const m = s.stop();
    const captured = viaAgent ? (await capturedOut(node, src.name)) - c0 : null;
    if (viaAgent && !captured) throw notCaptured(pth, src);
    lat.push({ path: pth, block, ...l, pinned, captured, machineBusyPct: m.machineBusyPct, agentCorePct: m.agentCorePct });
    log(
      `  ${String(block)} ${pth.padEnd(17)} ${l.tool.padEnd(9)} ${pinned ? `CPU ${PIN_CPU}` : 'any CPU'} p50 ${l.p50.toFixed(1)} µs, p99 ${l.p99.toFixed(1)} µs (${l.samples} round trips)`,
    );
  };

  for (const [k, want] of o.blocks.entries()) {
    const block = k + 1;
    if (want !== accel) {
      agentPid = await setAcceleration(node, want, stateDir);
      accel = want;
    }
    const agentPath: PathName = want === 'sockmap' ? 'agent+sockmap' : 'agent (no accel)';
    // Alternate which of the pair goes first, so a drift in time favours neither.
    const pair: PathName[] = block % 2 === 1 ? ['direct', agentPath] : [agentPath, 'direct'];
    for (const pth of pair) await measureTput(pth, block);
    await setAffinity(agentPid, String(PIN_CPU));
    try {
      for (const pth of pair) await measureLat(pth, block, true);
    } finally {
      await setAffinity(agentPid, `0-${os.availableParallelism() - 1}`);
    }
    for (const pth of pair) await measureLat(pth, block, false);
  }
  return { seconds: o.seconds, blocks: o.blocks, pinCpu: PIN_CPU, tcpMemLimits: tcpMemLimits(), tput, lat };
}
