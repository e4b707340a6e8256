/**
 * `ambientd demo` (make demo): a sandbox cluster of 2 nodes x 2 pods with an
 * agent on each node, real traffic between ambient and non-ambient pods, and
 * a short report: what was captured, original destinations, bytes, redirect
 * counters, the bpftool dump of the pod map, a restart of both agents under
 * load that drops nothing (socket hand-over), and fail-closed with the agent
 * gone. The sandbox is removed at the end, also on failure.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { restartAgent, sandboxDown, sandboxUp, stopAgent, type SandboxState } from './sandbox/topology.js';
import { nettool, nettoolServer } from './sandbox/podproc.js';
import { getJsonInNetns, httpInNetns } from './util/netns-http.js';
import type { ConnectionRecord } from './proxy/connections.js';

const B = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

interface Dump {
  node: string;
  workloads: Array<{ name: string; namespace: string; ip: string; state: string; redirect?: Record<string, string> }>;
  connections: ConnectionRecord[];
  certificates: Array<{ id: string; serial: string | null; notAfter: string | null; state: string }>;
}

export async function runDemo(): Promise<void> {
  const out = (s = ''): boolean => process.stdout.write(s + '\n');
  out(B('ambientd demo: sandbox cluster of 2 nodes x 2 pods, one agent per node, HBONE between them'));
  let st: SandboxState | null = null;
  const children: Array<{ kill: (s?: NodeJS.Signals) => boolean }> = [];
  try {
    st = await sandboxUp({ nodes: 2, pods: 2, agents: true });
    const pod = (n: string): SandboxState['pods'][number] => st!.pods.find((p) => p.name === n)!;
    out();
    out(B('Pods'));
    for (const p of st.pods) out(`  ${p.name.padEnd(6)} node ${p.node}  ${p.namespace.padEnd(12)} sa ${p.serviceAccount.padEnd(9)} ${p.ip.padEnd(11)} ${p.ambient ? 'AMBIENT (captured)' : 'not in the mesh'}`);

    for (const p of st.pods) children.push(await nettoolServer(p, 'serve', 8080, '--greet'));
    children.push(await nettoolServer(pod('n2-p1'), 'serve', 8081));

    const flows: Array<[string, string, string]> = [
      ['n1-p1', 'n2-p1', 'ambient -> ambient, across nodes'],
      ['n1-p1', 'n1-p2', 'ambient -> plain, same node'],
      ['n2-p2', 'n1-p1', 'plain -> ambient (inbound capture)'],
      ['n1-p2', 'n2-p2', 'plain -> plain (never captured)'],
    ];
    out();
    out(B('Traffic (nettool send <dst>:8080 from inside each source pod)'));
    for (const [from, to, what] of flows) {
      const r = await nettool(pod(from), 'send', pod(to).ip, 8080, `hi from ${from}`);
      const reply = r.stdout.split('\n')[0] ?? '';
      out(`  ${from} -> ${to} (${pod(to).ip}:8080)  ${what.padEnd(36)} ${r.code === 0 ? `ok: "${reply}"` : `FAILED: ${r.stderr.trim()}`}`);
    }

    const dumps: Dump[] = [];
    for (const n of st.nodes) dumps.push(await getJsonInNetns<Dump>(n.netnsPath, '127.0.0.1', 15000, '/config_dump'));
    out();
    out(B('What the agents carried (GET 127.0.0.1:15000/config_dump -> connections)'));
    out('  NODE POD                 DIR       SOURCE              ORIGINAL DESTINATION  VIA                SENT  RECV  STATE   PEER IDENTITY');
    for (const d of dumps) {
      for (const c of d.connections) {
        out(`  ${d.node.padEnd(4)} ${c.pod.padEnd(19)} ${c.direction.padEnd(9)} ${c.src.padEnd(19)} ${c.dst.padEnd(21)} ${c.via.padEnd(18)} ${String(c.bytesSent).padStart(4)}  ${String(c.bytesReceived).padStart(4)}  ${(c.state + (c.reason && c.reason !== 'eof' ? ` (${c.reason})` : '')).padEnd(7)} ${c.peerIdentity ?? '-'}`);
      }
    }
    out('  (no record for plain -> plain: it never touched an agent)');
    out('  via hbone: HTTP/2 CONNECT over mutual TLS 1.3 to <dst pod>:15008; peer identity = the SPIFFE id the other side proved');
    out();
    out(B('Workload certificates (built-in CA, shared trust root; config_dump -> certificates)'));
    for (const d of dumps) for (const c of d.certificates) out(`  ${d.node} ${c.id}  serial ${c.serial?.slice(0, 16)}…  valid until ${c.notAfter}  ${c.state}`);

    out();
    out(B('Redirect counters per enrolled pod (BPF map amb_pod_stats)'));
    for (const d of dumps) for (const w of d.workloads) if (w.redirect) out(`  ${d.node} ${w.namespace}/${w.name}: ${Object.entries(w.redirect).map(([k, v]) => `${k}=${v}`).join(' ')}`);

    out();
    out(B('Istio metrics (GET :15020/metrics on each agent; istio_tcp_sent_bytes_total, abridged labels)'));
    for (const n of st.nodes) {
      const m = await httpInNetns(n.netnsPath, '127.0.0.1', 15020, '/metrics');
      for (const line of m.body.split('\n').filter((l) => l.startsWith('istio_tcp_sent_bytes_total{'))) {
        const lab = (k: string): string => new RegExp(`${k}="([^"]*)"`).exec(line)?.[1] ?? '?';
        out(`  ${n.name} reporter=${lab('reporter').padEnd(11)} ${lab('source_workload')} -> ${lab('destination_workload')}  ${lab('connection_security_policy').padEnd(10)} bytes=${line.split(' ').pop()}`);
      }
    }

    const n1 = st.nodes[0]!;
    const pinDir = path.join('/sys/fs/bpf/ambientd-sandbox', n1.name, 'maps');
    out();
    out(B(`bpftool map dump pinned ${pinDir}/amb_pod_stats`));
    out(indent(execFileSync('bpftool', ['map', 'dump', 'pinned', `${pinDir}/amb_pod_stats`], { encoding: 'utf8' })));
    out(B(`bpftool map dump pinned ${pinDir}/amb_pods`));
    out(indent(execFileSync('bpftool', ['map', 'dump', 'pinned', `${pinDir}/amb_pods`], { encoding: 'utf8' })));

    out(B('Restart both agents under load (hand-over of the listening sockets; the old agents drain)'));
    const held = nettool(pod('n1-p1'), 'hold', pod('n2-p1').ip, 8081, 8);
    const rate = nettool(pod('n1-p1'), 'rate', pod('n2-p1').ip, 8081, 200, 7);
    await new Promise((r) => setTimeout(r, 1500));
    for (const n of st.nodes) {
      const r = await restartAgent(n.name);
      out(`  ${n.name}: new agent pid ${r.newPid} ready in ${r.readyMs} ms; old agent pid ${r.oldPid} handed its sockets over and drains`);
    }
    const [h, rt] = await Promise.all([held, rate]);
    const hj = JSON.parse(h.stdout || '{}') as { rounds?: number; error?: string | null };
    const rj = JSON.parse(rt.stdout || '{}') as { attempted?: number; failed?: number };
    out(`  held connection n1-p1 -> n2-p1 across both restarts: ${hj.error === null ? `kept (${hj.rounds} round trips)` : `LOST (${hj.error})`}`);
    out(`  new connections at 200/s during the restarts: ${rj.attempted} opened, ${rj.failed} refused or failed`);
    out();
    out(B(`Fail closed: SIGKILL the agent on ${n1.name}`));
    await stopAgent(n1.name, 'SIGKILL');
    for (const [from, to, what] of [['n1-p1', 'n2-p1', 'ambient pod, agent gone'], ['n1-p2', 'n2-p2', 'plain pod, unaffected']] as const) {
      const r = await nettool(pod(from), 'probe', pod(to).ip, 8080);
      out(`  ${from} -> ${to}: ${what.padEnd(24)} ${r.code === 0 ? 'connected' : `refused (${r.stdout.trim()})`}`);
    }
    out();
    out('Try it yourself: `node dist/src/cli.js sandbox up`, `... sandbox exec n1-p1 -- node dist/src/tools/nettool.js send 10.244.2.2 8080 hi`,');
    out('`... inspect connections --node n1`, `... sandbox down` (README).');
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await sandboxDown();
    out(B('sandbox removed (netns, cgroups, pins, agents)'));
  }
}

function indent(s: string): string {
  return s.trimEnd().split('\n').map((l) => `  ${l}`).join('\n');
}
