/**
 * `ambientd demo` (make demo): a sandbox cluster of 2 nodes x 2 pods with an
 * agent on each node, real traffic between ambient and non-ambient pods, and
 * a short report: what was captured, over what, with which identities, the
 * wire between the nodes, the metrics, the BPF maps, a restart of both agents
 * under load, and fail-closed with the agent gone.
 *
 * The demo keeps its word: every claim it prints ("✓ ...") is checked
 * against what really happened, a false one is printed "✗ ..." with what was
 * seen instead, and the demo then exits non-zero. `make test` runs it. The
 * sandbox is removed at the end, also on failure.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { askCaAsNode, caMetrics, nodeKeyLeaks, restartAgent, sandboxDown, sandboxUp, stopAgent, type SandboxState } from '../sandbox/index.js';
import { nettool, nettoolServer } from '../sandbox/podproc.js';
import { captureNodeLink, readTcpPackets } from '../sandbox/pcap.js';
import { getJsonInNetns, httpInNetns } from '../../src/util/netns-http.js';
import type { ConnectionRecord } from '../../src/proxy/connections.js';
import { AmbientError } from '../../src/util/errors.js';
import type { ConfigDump } from '../../src/agent/index.js';
import { formatHostPort } from '../../src/util/hostport.js';

const B = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

type Dump = Pick<ConfigDump, 'node' | 'workloads' | 'connections' | 'certificates'>;

/** A demo failed: one of its claims was false. */
export class DemoClaimError extends AmbientError {
  constructor(message: string) {
    super('DEMO_CLAIM_FALSE', message, 'the lines marked ✗ above say which claim and what was seen instead');
    this.name = 'DemoClaimError';
  }
}

export async function runDemo(): Promise<void> {
  const out = (s = ''): boolean => process.stdout.write(s + '\n');
  const failed: string[] = [];
  let checked = 0;
  /** prints a claim, checked: "✓ text", or "✗ text — seen: ..." (and the demo will fail) */
  const claim = (text: string, ok: boolean, seen = ''): void => {
    checked++;
    if (ok) out(`  ✓ ${text}`);
    else {
      failed.push(text);
      out(`  ✗ ${text} — NOT TRUE${seen ? `: ${seen}` : ''}`);
    }
  };
  out(B('ambientd demo: sandbox cluster of 2 nodes x 2 pods, one agent per node, HBONE between them, a cluster CA'));
  out('Every line marked ✓ was checked against what happened; a ✗ makes the demo fail.');
  let st: SandboxState | null = null;
  const children: Array<{ kill: (s?: NodeJS.Signals) => boolean }> = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-demo-'));
  try {
    // drainTimeout longer than the held connection below: a restart keeps it
    // dual-stack: every pod has an IPv4 and an IPv6 address, and both are captured
    st = await sandboxUp({ nodes: 2, pods: 2, agents: true, drainTimeout: '60s', ipFamily: 'dual' });
    const pod = (n: string): SandboxState['pods'][number] => st!.pods.find((p) => p.name === n)!;
    const spiffe = (n: string): string => `spiffe://cluster.local/ns/${pod(n).namespace}/sa/${pod(n).serviceAccount}`;
    out();
    out(B('Pods'));
    for (const p of st.pods)
      out(
        `  ${p.name.padEnd(6)} node ${p.node}  ${p.namespace.padEnd(12)} sa ${p.serviceAccount.padEnd(9)} ${(p.ips ?? [p.ip]).join(' ').padEnd(31)} ${p.ambient ? 'AMBIENT (captured)' : 'not in the mesh'}`,
      );

    for (const p of st.pods) children.push(await nettoolServer(p, 'serve', 8080, '--greet'));
    children.push(await nettoolServer(pod('n2-p1'), 'serve', 8081));

    const flows: Array<[string, string, string, 4 | 6]> = [
      ['n1-p1', 'n2-p1', 'ambient -> ambient, across nodes', 4],
      ['n1-p1', 'n2-p1', 'ambient -> ambient, across nodes', 6],
      ['n1-p1', 'n1-p2', 'ambient -> plain, same node', 4],
      ['n2-p2', 'n1-p1', 'plain -> ambient (inbound capture)', 4],
      ['n2-p2', 'n1-p1', 'plain -> ambient (inbound capture)', 6],
      ['n1-p2', 'n2-p2', 'plain -> plain (never captured)', 4],
    ];
    const addr = (n: string, family: 4 | 6): string => (pod(n).ips ?? [pod(n).ip]).find((a) => a.includes(':') === (family === 6))!;
    out();
    out(
      B(
        'Traffic (nettool send <dst>:8080 from inside each source pod, over IPv4 and IPv6; every server greets with the client it sees; the wire between the nodes captured)',
      ),
    );
    const pcap = path.join(tmp, 'n1.pcap');
    const td = await captureNodeLink(pcap, 'n1');
    children.push({
      kill: () => {
        td.kill();
        return true;
      },
    });
    const marker = `DEMO-SECRET-${crypto.randomBytes(4).toString('hex')}`;
    for (const [from, to, what, family] of flows) {
      const dst = formatHostPort({ ip: addr(to, family), port: 8080 });
      const r = await nettool(pod(from), 'send', addr(to, family), 8080, `${marker} from ${from}`);
      const reply = r.stdout.split('\n')[0] ?? '';
      // the app sees its real client, also when the agent carried the connection (IP_TRANSPARENT + the pod's return path)
      const client = addr(from, family);
      claim(
        `${from} -> ${to} (${dst})  ${what.padEnd(36)} answered: "${reply}"${pod(to).ambient ? '  <- the app saw its real client' : ''}`,
        r.code === 0 && reply === `hello from ${dst} to ${client}`,
        `${r.stdout.trim()} ${r.stderr.trim()} (expected the client ${client})`,
      );
    }
    await new Promise((r) => setTimeout(r, 300));
    await td.stop();

    const dumps: Dump[] = [];
    for (const n of st.nodes) dumps.push(await getJsonInNetns<Dump>(n.netnsPath, '127.0.0.1', 15000, '/config_dump'));
    out();
    out(B('What the agents carried (GET 127.0.0.1:15000/config_dump -> connections)'));
    out('  NODE POD                 DIR       SOURCE              ORIGINAL DESTINATION  VIA                SENT  RECV  STATE   PEER IDENTITY');
    for (const d of dumps) {
      for (const c of d.connections) {
        out(
          `  ${d.node.padEnd(4)} ${c.pod.padEnd(19)} ${c.direction.padEnd(9)} ${c.src.padEnd(19)} ${c.dst.padEnd(21)} ${c.via.padEnd(18)} ${String(c.bytesSent).padStart(4)}  ${String(c.bytesReceived).padStart(4)}  ${(c.state + (c.reason && c.reason !== 'eof' ? ` (${c.reason})` : '')).padEnd(7)} ${c.peerIdentity ?? '-'}`,
        );
      }
    }
    const [d1, d2] = dumps as [Dump, Dump];
    const find = (d: Dump, via: string, dst: string): ConnectionRecord | undefined => d.connections.find((c) => c.via === via && c.dst === dst);
    const out1 = find(d1, 'hbone', formatHostPort({ ip: pod('n2-p1').ip, port: 8080 }));
    const in2 = find(d2, 'inbound-hbone', formatHostPort({ ip: pod('n2-p1').ip, port: 8080 }));
    claim(
      'ambient -> ambient went over HBONE (HTTP/2 CONNECT over mutual TLS 1.3 to <dst pod>:15008)',
      !!out1 && !!in2,
      JSON.stringify({ n1: out1?.via, n2: in2?.via }),
    );
    claim(`n1 verified the server's identity ${spiffe('n2-p1')}`, out1?.peerIdentity === spiffe('n2-p1'), String(out1?.peerIdentity));
    claim(`n2 verified the client's identity ${spiffe('n1-p1')}`, in2?.peerIdentity === spiffe('n1-p1'), String(in2?.peerIdentity));
    claim(
      'ambient -> plain: captured and passed through in plaintext (no identity at the other end)',
      !!find(d1, 'passthrough', formatHostPort({ ip: pod('n1-p2').ip, port: 8080 })),
    );
    claim(
      'plain -> ambient: captured on the inbound plaintext port (15006), no peer identity',
      find(d1, 'inbound-plaintext', formatHostPort({ ip: pod('n1-p1').ip, port: 8080 }))?.peerIdentity === null,
    );
    claim(
      'plain -> plain: never touched an agent (no record anywhere)',
      !dumps.some((d) => d.connections.some((c) => c.dst === formatHostPort({ ip: pod('n2-p2').ip, port: 8080 }) && c.pod.endsWith('n1-p2'))),
    );
    for (const family of [4, 6] as const) {
      const a = addr('n1-p1', family);
      const b = addr('n2-p1', family);
      const pkts = readTcpPackets(pcap).filter((p) => (p.src === a && p.dst === b) || (p.src === b && p.dst === a));
      claim(
        `on the wire between the nodes over IPv${family}, n1-p1 <-> n2-p1 is only TLS on port 15008 (${pkts.length} packets) and "${marker}" never appears`,
        pkts.length > 0 && pkts.every((p) => p.sport === 15008 || p.dport === 15008) && Buffer.concat(pkts.map((p) => p.payload)).indexOf(marker) === -1,
      );
    }
    const plainPkts = readTcpPackets(pcap).filter((p) => p.dport === 8080 && p.src === pod('n1-p2').ip);
    claim(
      '...while plain -> plain crossed in clear (what the mesh saves the ambient pods from)',
      Buffer.concat(plainPkts.map((p) => p.payload)).indexOf(marker) >= 0,
    );

    out();
    const cp = st.controlPlane!;
    out(B(`Workload certificates from the cluster CA (\`ambientd ca\` at ${cp.address}, its own process and netns; config_dump -> certificates)`));
    for (const d of dumps) for (const c of d.certificates) out(`  ${d.node} ${c.id}  serial ${c.serial?.slice(0, 16)}…  valid until ${c.notAfter}  ${c.state}`);
    claim(
      'each agent holds a valid certificate for its ambient pod',
      dumps.every((d, i) => d.certificates.some((c) => c.id === spiffe(`n${i + 1}-p1`) && c.notAfter !== null && Date.parse(c.notAfter) > Date.now())),
    );
    const leaks = nodeKeyLeaks(st);
    claim(
      `no node holds a signing key: agents get ${cp.address}, the root and their own node token; no private key in any node's files (the CA key stays in ${cp.dir})`,
      leaks.length === 0 && st.nodes.every((n) => !/caDir/.test(fs.readFileSync(n.config, 'utf8'))),
      leaks.join(', '),
    );
    const deniedBefore = caCount(await caMetrics(), 'refused', 'CA_NODE_DENIED');
    const attack = (await askCaAsNode('n1', [spiffe('n2-p1')]))[spiffe('n2-p1')]!;
    claim(
      `the attack fails: root on n1, with n1's token, asks for ${spiffe('n2-p1')} (a pod only on n2) -> ${attack.server ?? (attack.ok ? 'a certificate!' : attack.code)}, no certificate`,
      !attack.ok && attack.server === 'CA_NODE_DENIED' && attack.grpc === 7,
      JSON.stringify(attack),
    );
    const deniedAfter = caCount(await caMetrics(), 'refused', 'CA_NODE_DENIED');
    claim(
      `the CA counted it: ambientd_ca_requests_total{result="refused",code="CA_NODE_DENIED"} ${deniedBefore} -> ${deniedAfter}`,
      deniedAfter === deniedBefore + 1,
    );

    out();
    out(B('Redirect counters per enrolled pod (BPF map amb_pod_stats)'));
    for (const d of dumps)
      for (const w of d.workloads)
        if (w.redirect)
          out(
            `  ${d.node} ${w.namespace}/${w.name}: ${Object.entries(w.redirect)
              .map(([k, v]) => `${k}=${v}`)
              .join(' ')}`,
          );
    const r1 = d1.workloads.find((w) => w.name === 'n1-p1')?.redirect;
    claim(
      "the BPF datapath counted n1-p1's captured connections (captured_out >= 2, captured_in >= 1)",
      Number(r1?.capturedOut) >= 2 && Number(r1?.capturedIn) >= 1,
      JSON.stringify(r1),
    );

    out();
    out(B('Istio metrics (GET :15020/metrics on each agent; istio_tcp_sent_bytes_total, abridged labels)'));
    const seen: string[] = [];
    for (const n of st.nodes) {
      const m = await httpInNetns(n.netnsPath, '127.0.0.1', 15020, '/metrics');
      for (const line of m.body.split('\n').filter((l) => l.startsWith('istio_tcp_sent_bytes_total{'))) {
        const lab = (k: string): string => new RegExp(`${k}="([^"]*)"`).exec(line)?.[1] ?? '?';
        out(
          `  ${n.name} reporter=${lab('reporter').padEnd(11)} ${lab('source_workload')} -> ${lab('destination_workload')}  ${lab('connection_security_policy').padEnd(10)} bytes=${line.split(' ').pop()}`,
        );
        seen.push(`${n.name}:${lab('reporter')}:${lab('source_workload')}:${lab('destination_workload')}:${lab('connection_security_policy')}`);
      }
    }
    claim(
      'the HBONE flow is counted once by each agent, as mutual_tls (reporter source on n1, destination on n2)',
      seen.includes('n1:source:n1-p1:n2-p1:mutual_tls') && seen.includes('n2:destination:n1-p1:n2-p1:mutual_tls'),
      seen.join(' '),
    );

    const n1 = st.nodes[0]!;
    const pinDir = path.join('/sys/fs/bpf/ambientd-sandbox', n1.name, 'maps');
    out();
    out(B(`bpftool map dump pinned ${pinDir}/amb_pods (an IP -> the pod that owns it, by cgroup id)`));
    const podsDump = execFileSync('bpftool', ['map', 'dump', 'pinned', `${pinDir}/amb_pods`], { encoding: 'utf8' });
    out(indent(podsDump));
    claim('bpftool prints the pinned maps with field names (BTF)', /"cgroup_id": \d+/.test(podsDump));

    out();
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
    claim(
      `the connection n1-p1 -> n2-p1 held across both restarts was kept (${hj.rounds ?? 0} round trips)`,
      hj.error === null && (hj.rounds ?? 0) > 0,
      String(hj.error),
    );
    claim(
      `new connections at 200/s during the restarts: ${rj.attempted ?? 0} opened, ${rj.failed ?? '?'} refused or failed`,
      (rj.attempted ?? 0) > 0 && rj.failed === 0,
    );

    out();
    out(B(`Fail closed: SIGKILL the agent on ${n1.name}`));
    await stopAgent(n1.name, 'SIGKILL');
    const dead = await nettool(pod('n1-p1'), 'probe', pod('n2-p1').ip, 8080);
    claim(
      'n1-p1 -> n2-p1: an ambient pod with its agent gone is refused, never sent around the mesh',
      dead.code !== 0 && dead.stdout.trim() === 'ECONNREFUSED',
      dead.stdout.trim() || 'connected',
    );
    const plain = await nettool(pod('n1-p2'), 'probe', pod('n2-p2').ip, 8080);
    claim('n1-p2 -> n2-p2: a plain pod is unaffected', plain.code === 0, plain.stdout.trim());
    out();
    out('Try it yourself: `node dist/src/cli.js sandbox up`, `... sandbox exec n1-p1 -- node dist/tools/nettool/nettool.js send 10.244.2.2 8080 hi`,');
    out('`... inspect connections --node n1`, `... sandbox down` (README).');
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await sandboxDown();
    fs.rmSync(tmp, { recursive: true, force: true });
    out(B('sandbox removed (netns, cgroups, pins, agents)'));
  }
  out();
  if (failed.length) {
    out(B(`demo: ${failed.length} of ${checked} claims were NOT true:`));
    for (const f of failed) out(`  ✗ ${f}`);
    throw new DemoClaimError(`${failed.length} of ${checked} demo claims were not true`);
  }
  out(B(`demo: all ${checked} claims checked and true`));
}

/** A counter of the CA's /metrics text (0 when absent). */
function caCount(metrics: string, result: string, code: string): number {
  const m = new RegExp(`^ambientd_ca_requests_total\\{result="${result}",code="${code}"\\} (\\d+)`, 'm').exec(metrics);
  return m ? Number(m[1]) : 0;
}

function indent(s: string): string {
  return s
    .trimEnd()
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}
