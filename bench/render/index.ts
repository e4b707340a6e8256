/**
 * The renderer: turns a run's results (bench/results.ts) into
 * bench/RESULTS.md. Pure: no I/O, nothing read from the machine it runs on, so
 * the same JSON always renders to the same markdown. One module per section
 * (same-node.ts: 1-2, enroll.ts: 3, hbone.ts: 4-7, policy.ts: 8,
 * observability.ts: 9, restart.ts: 10, lifecycle.ts: 11, ca.ts: 12, ipv6.ts: 13); this one writes the
 * header and "How to read" and puts them together.
 */
import { SECTIONS, type BackgroundLoad, type BenchResults, type RunInfo } from '../results.js';
import { caMarkdown } from './ca.js';
import { enrollMarkdown, enrollText } from './enroll.js';
import { hboneHeaderLine, hboneMarkdown, hboneText } from './hbone.js';
import { ipv6Markdown, ipv6Text } from './ipv6.js';
import { workersMarkdown, workersText } from './workers.js';
import { lifecycleMarkdown } from './lifecycle.js';
import { observabilityMarkdown } from './observability.js';
import { policyMarkdown } from './policy.js';
import { restartMarkdown } from './restart.js';
import { sameNodeHeaderLine, sameNodeMarkdown, sameNodeText } from './same-node.js';

export { caMarkdown, enrollMarkdown, hboneMarkdown, ipv6Markdown, lifecycleMarkdown, observabilityMarkdown, policyMarkdown, restartMarkdown, sameNodeMarkdown };

/** "pid 123 `cmd` 45% of a core, ..." */
export function backgroundText(bg: BackgroundLoad): string[] {
  return bg.hogs.map((h) => `pid ${h.pid} \`${h.command}\` ${h.corePct.toFixed(0)}% of a core`);
}

export function treeText(t: RunInfo['tree']): string {
  return t.commit === null
    ? 'unknown (no git)'
    : `\`${t.commit}\`${t.dirtyFiles ? ` + uncommitted changes in ${t.dirtyFiles} file(s) under src/, bpf/, native/` : ''}`;
}

function header(r: BenchResults): string[] {
  const run = r.run;
  const hb = r.hbone;
  const hogs = backgroundText(run.background);
  const md: string[] = ['# ambientd benchmark results', ''];
  if (run.quick) md.push('> **Quick smoke run** (~1 s per measurement, 10 pods): the figures are not representative.', '');
  md.push(
    `- date: ${run.date} (run took ${run.elapsedS.toFixed(0)} s)`,
    `- kernel: \`${run.machine.kernel}\`; CPUs: ${run.machine.cpus} × ${run.machine.cpuModel}; memory ${(run.machine.memoryBytes / 2 ** 30).toFixed(0)} GiB`,
    `- node ${run.versions.node}; iperf3 ${run.versions.iperf3}; sockperf ${run.versions.sockperf}${hb ? `; nghttpx ${hb.info.nghttpx}; perf ${run.versions.perf}` : ''}`,
    `- command: \`${run.command}\` (as root, from the repository root; \`make bench\` builds first and runs the same)`,
    `- background load in the second before the run: ${run.background.busyPct.toFixed(0)}% of the machine${hogs.length ? ` — ${hogs.join('; ')}` : ''}`,
    `- tree at the start of the run: ${treeText(run.tree)}`,
    ...(r.sameNode ? [sameNodeHeaderLine(r.sameNode)] : []),
    `- sections: ${run.sections.join(', ')}${run.partial ? ' (a partial run: `--only`)' : ''}`,
    ...(hb ? [hboneHeaderLine(hb)] : []),
    '',
    '## How to read',
    '',
    'Everything runs on one small, shared, noisy machine: absolute numbers move by',
    'tens of percent from run to run, **the ratios to the direct path measured',
    'seconds apart in the same block are the point**. In sections 1-2 every path is same-node pod -> node -> pod over veth',
    'pairs; "through the agent" adds, inside the source pod, the connect4',
    "redirect to the agent's listener (15001), the agent's relay (Node.js, one",
    'extra TCP connection from the pod to the destination) and, with',
    '`acceleration: sockmap`, sk_msg redirection of the app<->agent bytes instead',
    'of the loopback TCP stack. The destination pod is not enrolled (no inbound',
    'capture), so this is the cost of one capture + relay hop. "machine CPU %" is',
    `the share of all ${run.machine.cpus} CPUs busy during the measurement (including the background load above);`,
    '"agent % of a core" is the agent process alone. See `bench/README.md`.',
    '',
    'Latency on a VM depends on where the processes run: waking a process on the',
    'other, idle vCPU costs tens of µs, so the unpinned direct round trip jumps',
    'between ~17 and ~80 µs p50 from one run to the next, and every extra process',
    'hop (app -> agent -> server and back) may pay it again. Section 2 therefore',
    'also pins client, server and agent to one CPU: that table is the stable one.',
    '',
    'Sections 4-7 are cross-node (node n1 -> node n2 over the fabric bridge, two',
    'agents) and compare HBONE with the kernel alone and with an nghttpx HTTP/2',
    'CONNECT tunnel of the same shape, all measured back to back in the same',
    'blocks; section 4 says what the tunnel is made of and section "What limits',
    'the throughput" where the CPU goes.',
    '',
  );
  return md;
}

/** bench/RESULTS.md for a run: header, "How to read", then every section that ran. */
export function renderResults(r: BenchResults): string {
  const md = header(r);
  if (r.sameNode) md.push(...sameNodeMarkdown(r.sameNode));
  if (r.enroll) md.push(...enrollMarkdown(r.enroll));
  if (r.hbone) md.push(...hboneMarkdown(r.hbone));
  // sections 8-13 follow after an empty line, each ending with one
  if (r.policy) md.push('', policyMarkdown(r.policy, '## 8.').join('\n'));
  if (r.observability) md.push('', observabilityMarkdown(r.observability, '## 9.').join('\n'));
  if (r.restart) md.push('', restartMarkdown(r.restart, '## 10.').join('\n'));
  if (r.lifecycle) md.push('', lifecycleMarkdown(r.lifecycle, '## 11.').join('\n'));
  if (r.ca) md.push('', caMarkdown(r.ca, '## 12.').join('\n'));
  if (r.ipv6) md.push('', ipv6Markdown(r.ipv6, '## 13.').join('\n'));
  if (r.workers) md.push('', workersMarkdown(r.workers, '## 14.').join('\n'));
  return md.join('\n');
}

/** What run.ts prints to stdout once a section is measured: compact tables for 1-7 and 13, the markdown for 8-12. */
export function sectionSummary(r: BenchResults, section: (typeof SECTIONS)[number]): string[] {
  switch (section) {
    case 'same-node':
      return r.sameNode ? sameNodeText(r.sameNode) : [];
    case 'enroll':
      return r.enroll ? enrollText(r.enroll) : [];
    case 'hbone':
      return r.hbone ? hboneText(r.hbone) : [];
    case 'policy':
      return r.policy ? [policyMarkdown(r.policy).join('\n')] : [];
    case 'observability':
      return r.observability ? [observabilityMarkdown(r.observability).join('\n')] : [];
    case 'restart':
      return r.restart ? [restartMarkdown(r.restart).join('\n')] : [];
    case 'lifecycle':
      return r.lifecycle ? [lifecycleMarkdown(r.lifecycle).join('\n')] : [];
    case 'ca':
      return r.ca ? [caMarkdown(r.ca).join('\n')] : [];
    case 'ipv6':
      return r.ipv6 ? ipv6Text(r.ipv6) : [];
    case 'workers':
      return r.workers ? workersText(r.workers) : [];
  }
}
