/**
 * Cross-node benchmarks (sections 4-7 of bench/RESULTS.md), run by
 * bench/run.ts (`--only hbone` runs them alone):
 *
 *   4. bulk throughput, iperf3 with 1 and 4 streams
 *   5. 1 KB request/response latency (sockperf ping-pong), pinned and not
 *   6. connections per second (connect, 1 byte, echo, close)
 *   7. agent memory (VmRSS) per idle tunnelled connection
 *
 * Sandbox: 2 nodes x 2 pods. n<i>-p1 are ambient (enrolled), n<i>-p2 plain.
 * Three paths from node n1 to node n2, measured back to back in each block:
 *
 *   direct   n1-p2 -> n2-p2                 plain pods, the kernel alone
 *   hbone    n1-p1 -> n2-p1                 captured by the n1 agent, HTTP/2
 *                                           CONNECT over mTLS 1.3 to n2-p1:15008,
 *                                           terminated by the n2 agent
 *   nghttpx  n1-p2 -> n2-p2 through a tunnel of the same shape: client in n1-p2
 *            connects to 127.0.0.1:<port>, bench/h2fwd.ts (our HBONE client
 *            library: one pooled h2/mTLS 1.3 connection, a CONNECT stream per
 *            TCP connection) -> nghttpx --http2-proxy in n2-p2 (TLS 1.3,
 *            --verify-client) -> bench/connect-proxy.ts (HTTP/1.1 CONNECT
 *            backend nghttpx needs) -> server in n2-p2
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  sandboxUp,
  sandboxStatus,
  type SandboxPod,
  type SandboxNode,
} from '../src/sandbox/topology.js';
import { runInPod, NETTOOL } from '../src/sandbox/podproc.js';
import { getJsonInNetns } from '../src/util/netns-http.js';
import { CertificateAuthority } from '../src/identity/ca.js';
import { IdentityManager } from '../src/identity/manager.js';
import {
  execFileP, sleep, startProc, stopProc, waitListening, settleTcpMem, waitNoSandbox, iperf, latency,
  PIN_CPU, ALL_CPUS, setAffinity, startProcSampler, rssKiB, pct, mean, fmt, signed, table, textTable,
  perfProfile, PERF_CATEGORIES, type PerfProfile, type Proc, type Via,
} from './lib.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BENCH_DIST = path.join(ROOT, 'dist', 'bench');
const TRUST_DOMAIN = 'cluster.local';

export type XPath = 'direct' | 'hbone' | 'nghttpx';
export const XPATHS: XPath[] = ['direct', 'hbone', 'nghttpx'];
const LABEL: Record<XPath, string> = { direct: 'direct', hbone: 'HBONE (2 agents)', nghttpx: 'nghttpx tunnel' };

export interface HboneOptions {
  quick: boolean;
  stateDir: string;
  /** seconds per throughput / latency measurement */
  seconds: number;
  /** blocks of throughput + latency (each measures the three paths back to back) */
  blocks: number;
  cpsSeconds: number;
  cpsConcurrency: number;
  idleConns: number;
}

/** CPU of the processes between client and server (% of one core), by name. */
type Cores = Record<string, number | null>;

export interface XTput {
  path: XPath;
  block: number;
  streams: number;
  recvGbps: number;
  sentGbps: number;
  failed: string | null;
  machineBusyPct: number;
  cores: Cores;
  verify: Verify | null;
  /** perf samples of the relaying processes during the middle of the run (last block, 1 stream) */
  perf?: PerfProfile | null;
}

export interface XLat {
  path: XPath;
  block: number;
  pinned: boolean;
  tool: string;
  p50: number;
  p99: number;
  samples: number;
  machineBusyPct: number;
  cores: Cores;
  verify: Verify | null;
}

export interface XCps {
  path: 'direct' | 'hbone';
  block: number;
  conns: number;
  failures: number;
  errors: Record<string, number>;
  rate: number;
  p50ms: number | null;
  p99ms: number | null;
  machineBusyPct: number;
  cores: Cores;
  verify: Verify | null;
  perf?: PerfProfile | null;
}

export interface XRss {
  conns: number;
  openMs: number;
  client: { before: number; after: number };
  server: { before: number; after: number };
  /** from /config_dump once the connections were up */
  openViaHbone: number;
  openInboundHbone: number;
  clientSessions: number | null;
  clientActiveStreams: number | null;
  serverEstablished: number | null;
  serverActiveStreams: number | null;
  /** kernel TCP memory of the machine (sockstat), before/after, KiB: not part of RSS */
  tcpMemBefore: number;
  tcpMemAfter: number;
}

/** What the agents' /config_dump says about one measurement through HBONE. */
export interface Verify {
  /** n1: outbound connection records via 'hbone' to the destination ip:port */
  outboundHbone: number;
  /** n1: records to that ip:port carried any other way (should be 0) */
  outboundOther: number;
  /** n2: inbound records via 'inbound-hbone' to that ip:port */
  inboundHbone: number;
  /** n1 pool: streams opened during the measurement */
  streamsOpened: number;
  /** n2 server: tunnels opened during the measurement */
  tunnelsOpened: number;
}

export interface HboneResults {
  tput: XTput[];
  lat: XLat[];
  cps: XCps[];
  rss: XRss | null;
  info: {
    nghttpx: string;
    agentPids: [number, number];
    tunnelPids: Record<string, number>;
    tool: string;
    upMs: number;
  };
}

// ---------------------------------------------------------------------------
// agents' view
// ---------------------------------------------------------------------------

interface Dump {
  connections: Array<{ via: string; dst: string; state: string; direction: string }>;
  hbone: {
    server: { connections: { established: number }; streams: { active: number; tunnelsOpened: number } };
    pools: Record<string, { sessions: number; activeStreams: number; streamsOpened: number; sessionsOpened: number }>;
  } | null;
}

const dump = (n: SandboxNode): Promise<Dump> => getJsonInNetns<Dump>(n.netnsPath, '127.0.0.1', 15000, '/config_dump');
const streamsOpened = (d: Dump): number => Object.values(d.hbone?.pools ?? {}).reduce((a, p) => a + p.streamsOpened, 0);
const tunnelsOpened = (d: Dump): number => d.hbone?.server.streams.tunnelsOpened ?? 0;

async function hboneCounters(n1: SandboxNode, n2: SandboxNode): Promise<{ s: number; t: number }> {
  const [a, b] = await Promise.all([dump(n1), dump(n2)]);
  return { s: streamsOpened(a), t: tunnelsOpened(b) };
}

/** Checks with both agents that connections to dst ip:port went through HBONE. */
async function verifyHbone(n1: SandboxNode, n2: SandboxNode, dst: string, c0: { s: number; t: number }, want: number): Promise<Verify> {
  const [a, b] = await Promise.all([dump(n1), dump(n2)]);
  const out = a.connections.filter((c) => c.direction === 'outbound' && c.dst === dst);
  const v: Verify = {
    outboundHbone: out.filter((c) => c.via === 'hbone').length,
    outboundOther: out.filter((c) => c.via !== 'hbone').length,
    inboundHbone: b.connections.filter((c) => c.via === 'inbound-hbone' && c.dst === dst).length,
    streamsOpened: streamsOpened(a) - c0.s,
    tunnelsOpened: tunnelsOpened(b) - c0.t,
  };
  if (v.outboundOther > 0 || v.streamsOpened < want || v.tunnelsOpened < want || Math.min(v.outboundHbone, v.inboundHbone) < Math.min(want, 500)) {
    throw new Error(`connections to ${dst} did not all go through HBONE: ${JSON.stringify(v)} (expected >= ${want})`);
  }
  return v;
}

// ---------------------------------------------------------------------------
// the nghttpx tunnel
// ---------------------------------------------------------------------------

const NGHTTPX_PORT = 15443;
const CONNECT_PROXY_PORT = 3128;
/** server ports: rotate through a few so a restarted server never meets its predecessor's sockets */
const IPERF_PORTS = [5301, 5308] as const;
const SOCKPERF_PORTS = [11311, 11318] as const;
const ECHO_PORT = 7001;
const HOLD_PORT = 7101;
const range = (r: readonly [number, number]): string => `${r[0]}-${r[1]}`;
let seq = 0;
const nextPort = (r: readonly [number, number]): number => r[0] + (seq++ % (r[1] - r[0] + 1));

interface Tunnel {
  fwd: Proc;
  ng: Proc;
  proxy: Proc;
  /** client side: where the client connects for a server on `port` */
  via: Via;
  pids: Record<string, number>;
}

async function writeCerts(stateDir: string): Promise<{ dir: string; files: (id: string) => { key: string; cert: string; root: string } }> {
  const ca = await CertificateAuthority.loadOrCreate(path.join(stateDir, 'ca'), { trustDomain: TRUST_DOMAIN });
  const ids = new IdentityManager({ issuer: ca });
  const dir = path.join(stateDir, 'bench-tunnel');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const names = new Map<string, { key: string; cert: string; root: string }>();
  try {
    for (const [k, id] of [['client', spiffe('plain', 'sa-n1-p2')], ['server', spiffe('plain', 'sa-n2-p2')]] as const) {
      const c = await ids.get(id);
      const f = { key: path.join(dir, `${k}-key.pem`), cert: path.join(dir, `${k}-cert.pem`), root: path.join(dir, 'root.pem') };
      fs.writeFileSync(f.key, c.keyPem, { mode: 0o600 });
      fs.writeFileSync(f.cert, c.chainPem);
      fs.writeFileSync(f.root, c.rootPem);
      names.set(id, f);
    }
  } finally {
    ids.close();
  }
  return { dir, files: (id) => names.get(id)! };
}

const spiffe = (ns: string, sa: string): string => `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;

/** nghttpx flags of the server end: TLS 1.3 only, mTLS, the HBONE flow-control windows. */
export function nghttpxArgs(ip: string, key: string, cert: string, root: string): string[] {
  return [
    'nghttpx', '--conf=/dev/null', '--single-process', '--workers=1', '--no-ocsp', '--log-level=WARN', '--errorlog-file=/dev/stderr',
    '--http2-proxy', `--frontend=${ip},${NGHTTPX_PORT}`, `--backend=127.0.0.1,${CONNECT_PROXY_PORT}`,
    '--verify-client', `--verify-client-cacert=${root}`,
    '--tls-min-proto-version=TLSv1.3', '--tls-max-proto-version=TLSv1.3', '--tls13-ciphers=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384',
    '--frontend-http2-window-size=4194304', '--frontend-http2-connection-window-size=16777216',
    '--frontend-http2-max-concurrent-streams=100', '--no-via', '--no-server-push',
    key, cert,
  ];
}

export async function startTunnel(stateDir: string, client: SandboxPod, server: SandboxPod): Promise<Tunnel> {
  const certs = await writeCerts(stateDir);
  const cid = spiffe('plain', 'sa-n1-p2');
  const sid = spiffe('plain', 'sa-n2-p2');
  const sf = certs.files(sid);
  const cf = certs.files(cid);
  const proxy = startProc(server, [process.execPath, path.join(BENCH_DIST, 'connect-proxy.js'), '127.0.0.1', String(CONNECT_PROXY_PORT), server.ip]);
  await proxy.waitFor(/listening/, 10_000);
  const ng = startProc(server, nghttpxArgs(server.ip, sf.key, sf.cert, sf.root));
  await waitListening(server, NGHTTPX_PORT, ng);
  const ports = `${range(IPERF_PORTS)},${range(SOCKPERF_PORTS)}`;
  const fwd = startProc(client, [process.execPath, path.join(BENCH_DIST, 'h2fwd.js'), '127.0.0.1', ports, `${server.ip}:${NGHTTPX_PORT}`, server.ip, cid, sid, cf.key, cf.cert, cf.root]);
  await fwd.waitFor(/listening/, 10_000);
  return {
    fwd, ng, proxy,
    via: (_dst, port) => ({ host: '127.0.0.1', port }),
    pids: { h2fwd: fwd.child.pid!, nghttpx: ng.child.pid!, 'connect-proxy': proxy.child.pid! },
  };
}

/** Fails if a tunnel process died or reported failed tunnels. */
function checkTunnel(t: Tunnel): void {
  for (const [name, p] of [['h2fwd', t.fwd], ['nghttpx', t.ng], ['connect-proxy', t.proxy]] as const) {
    if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`${name} exited: ${p.output().trim().slice(-500)}`);
  }
  const failed = /tunnel failed \((\d+)\)/g;
  let m: RegExpExecArray | null;
  let n = 0;
  while ((m = failed.exec(t.fwd.output())) !== null) n = Number(m[1]);
  if (n > 0) throw new Error(`h2fwd: ${n} tunnels failed: ${t.fwd.output().trim().slice(-500)}`);
}

// ---------------------------------------------------------------------------
// the benchmark
// ---------------------------------------------------------------------------

export async function hboneBenchmarks(o: HboneOptions, log: (s: string) => void): Promise<HboneResults> {
  log(`\n[4-7] cross-node: sandbox 2 nodes x 2 pods, ${o.blocks} block(s) of direct / HBONE / nghttpx tunnel, ${o.seconds} s per measurement; connection rate ${o.cpsSeconds} s; ${o.idleConns} idle connections`);
  await waitNoSandbox();
  const tUp = performance.now();
  const state = await sandboxUp({ nodes: 2, pods: 2, stateDir: o.stateDir });
  const upMs = performance.now() - tUp;
  const pod = (n: string): SandboxPod => state.pods.find((p) => p.name === n)!;
  const [a1, p1, a2, p2] = [pod('n1-p1'), pod('n1-p2'), pod('n2-p1'), pod('n2-p2')];
  if (!a1.ambient || !a2.ambient || p1.ambient || p2.ambient) throw new Error('unexpected sandbox layout: n<i>-p1 should be ambient, n<i>-p2 plain');
  const [n1, n2] = [state.nodes[0]!, state.nodes[1]!];
  const st = sandboxStatus({ stateDir: o.stateDir });
  const agentPids: [number, number] = [st.nodes[0]!.agentPid!, st.nodes[1]!.agentPid!];
  const agents = { 'agent n1': agentPids[0], 'agent n2': agentPids[1] };

  // Connection-rate runs leave tens of thousands of TIME_WAIT sockets (the
  // closing side keeps one for 60 s): give every pod the whole port range and
  // let connect() reuse TIME_WAIT ports, so no path is limited by its own port
  // space (the default 28k ports fill up within seconds at ~4000 conn/s).
  for (const p of [a1, p1, a2, p2]) {
    await execFileP('ip', ['netns', 'exec', p.netns, 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);
  }
  const tunnel = await startTunnel(o.stateDir, p1, p2);
  const nghttpxVersion = /nghttp2\/(\S+)/.exec((await runInPod(p2, ['nghttpx', '--version'])).stdout)?.[1] ?? '?';
  const route: Record<XPath, [SandboxPod, SandboxPod, Via | undefined]> = {
    direct: [p1, p2, undefined],
    hbone: [a1, a2, undefined],
    nghttpx: [p1, p2, tunnel.via],
  };
  const procsOf = (pth: XPath | 'direct'): Record<string, number> => (pth === 'hbone' ? agents : pth === 'nghttpx' ? tunnel.pids : {});

  const tput: XTput[] = [];
  const lat: XLat[] = [];
  const cps: XCps[] = [];
  let tool = 'sockperf';

  const measureTput = async (pth: XPath, block: number, streams: number, profile = false): Promise<void> => {
    const [src, dst, via] = route[pth];
    await settleTcpMem();
    const port = nextPort(IPERF_PORTS);
    const c0 = pth === 'hbone' ? await hboneCounters(n1, n2) : null;
    const s = startProcSampler(procsOf(pth));
    // perf over the middle of the run (after the server start and the first second)
    const pf = profile ? sleep(1500).then(() => perfProfile(procsOf(pth), o.seconds - 2.5, o.stateDir)) : null;
    const t = await iperf(src, dst, o.seconds, { port, streams, ...(via ? { via } : {}) });
    const m = s.stop();
    const perf = pf ? await pf : undefined;
    // iperf3 opens a control connection besides its data streams
    const verify = c0 ? await verifyHbone(n1, n2, `${dst.ip}:${port}`, c0, streams + 1) : null;
    if (pth === 'nghttpx') checkTunnel(tunnel);
    tput.push({ path: pth, block, streams, recvGbps: t.recvGbps, sentGbps: t.sentGbps, failed: t.failed, machineBusyPct: m.machineBusyPct, cores: m.cores, verify, ...(perf !== undefined ? { perf } : {}) });
    log(`  ${block} ${LABEL[pth].padEnd(17)} iperf3 -P ${streams}  ${t.recvGbps.toFixed(2)} Gbit/s received (${t.sentGbps.toFixed(2)} sent)${coresText(m.cores)}${t.failed ? ` — FAILED: ${t.failed}` : ''}`);
  };
  const measureLat = async (pth: XPath, block: number, pinned: boolean): Promise<void> => {
    const [src, dst, via] = route[pth];
    await settleTcpMem();
    const port = nextPort(SOCKPERF_PORTS);
    const c0 = pth === 'hbone' ? await hboneCounters(n1, n2) : null;
    const s = startProcSampler(procsOf(pth));
    const l = await latency(src, dst, o.seconds, pinned ? PIN_CPU : null, { port, ...(via ? { via } : {}) });
    const m = s.stop();
    const verify = c0 ? await verifyHbone(n1, n2, `${dst.ip}:${port}`, c0, 1) : null;
    if (pth === 'nghttpx') checkTunnel(tunnel);
    tool = l.tool;
    lat.push({ path: pth, block, pinned, tool: l.tool, p50: l.p50, p99: l.p99, samples: l.samples, machineBusyPct: m.machineBusyPct, cores: m.cores, verify });
    log(`  ${block} ${LABEL[pth].padEnd(17)} ${l.tool} ${pinned ? `CPU ${PIN_CPU}` : 'any CPU'}  p50 ${l.p50.toFixed(1)} µs, p99 ${l.p99.toFixed(1)} µs (${l.samples} round trips)${coresText(m.cores)}`);
  };
  const pinAll = async (cpus: string): Promise<void> => {
    for (const pid of [...agentPids, ...Object.values(tunnel.pids)]) await setAffinity(pid, cpus);
  };

  for (let block = 1; block <= o.blocks; block++) {
    // Alternate the order so that a drift in time favours no path.
    const order: XPath[] = block % 2 === 1 ? ['direct', 'hbone', 'nghttpx'] : ['nghttpx', 'hbone', 'direct'];
    const profile = (pth: XPath, streams: number): boolean => !o.quick && block === o.blocks && streams === 1 && pth !== 'direct';
    for (const streams of [1, 4]) for (const pth of order) await measureTput(pth, block, streams, profile(pth, streams));
    await pinAll(String(PIN_CPU));
    try {
      for (const pth of order) await measureLat(pth, block, true);
    } finally {
      await pinAll(ALL_CPUS());
    }
    for (const pth of order) await measureLat(pth, block, false);
  }

  // 6. connections per second: direct vs HBONE (echo server: nettool serve)
  for (const [pth, block] of [['direct', 1], ['hbone', 1]] as const) {
    const [src, dst] = route[pth];
    const server = startProc(dst, ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', process.execPath, NETTOOL, 'serve', String(ECHO_PORT)]);
    try {
      await server.waitFor(/listening/, 10_000);
      await settleTcpMem();
      const c0 = pth === 'hbone' ? await hboneCounters(n1, n2) : null;
      const s = startProcSampler(procsOf(pth));
      const pf = pth === 'hbone' && !o.quick ? sleep(1000).then(() => perfProfile(procsOf(pth), o.cpsSeconds - 2, o.stateDir)) : null;
      const r = await runInPod(src, ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', process.execPath, path.join(BENCH_DIST, 'cps.js'), dst.ip, String(ECHO_PORT), String(o.cpsSeconds), String(o.cpsConcurrency)], { timeoutMs: o.cpsSeconds * 1000 + 30_000 });
      const m = s.stop();
      const perf = pf ? await pf : undefined;
      let j: { conns: number; failures: number; errors: Record<string, number>; rate: number; p50_ms: number | null; p99_ms: number | null };
      try {
        j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
      } catch {
        throw new Error(`cps ${src.name} -> ${dst.name}: exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(-500)}`);
      }
      await sleep(300); // let the last tunnels finish before counting
      const verify = c0 ? await verifyHbone(n1, n2, `${dst.ip}:${ECHO_PORT}`, c0, j.conns) : null;
      cps.push({ path: pth, block, conns: j.conns, failures: j.failures, errors: j.errors, rate: j.rate, p50ms: j.p50_ms, p99ms: j.p99_ms, machineBusyPct: m.machineBusyPct, cores: m.cores, verify, ...(perf !== undefined ? { perf } : {}) });
      log(`  ${block} ${LABEL[pth].padEnd(17)} conn/s ${j.rate.toFixed(0)} (${j.conns} in ${o.cpsSeconds} s, ${o.cpsConcurrency} at a time, ${j.failures} failed), per connection p50 ${fmt(j.p50_ms, 2)} ms p99 ${fmt(j.p99_ms, 2)} ms${coresText(m.cores)}`);
    } finally {
      await stopProc(server);
    }
  }

  // 7. agent RSS per idle tunnelled connection
  const rss = await idleRss(o, a1, a2, n1, n2, agentPids, log);

  await Promise.all([stopProc(tunnel.fwd), stopProc(tunnel.ng), stopProc(tunnel.proxy)]);
  return { tput, lat, cps, rss, info: { nghttpx: nghttpxVersion, agentPids, tunnelPids: tunnel.pids, tool, upMs } };
}

/** Median of `n` samples taken `everyMs` apart. */
async function sampleRss(pid: number, n = 5, everyMs = 200): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    xs.push(rssKiB(pid));
    if (i < n - 1) await sleep(everyMs);
  }
  return pct(xs, 50);
}

function tcpMemKiB(): number {
  const m = /^TCP:.*\bmem (\d+)/m.exec(fs.readFileSync('/proc/net/sockstat', 'utf8'));
  return m ? (Number(m[1]) * 4096) / 1024 : NaN;
}

async function idleRss(o: HboneOptions, src: SandboxPod, dst: SandboxPod, n1: SandboxNode, n2: SandboxNode, pids: [number, number], log: (s: string) => void): Promise<XRss> {
  const server = startProc(dst, ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', process.execPath, NETTOOL, 'serve', String(HOLD_PORT)]);
  let holder: Proc | null = null;
  try {
    await server.waitFor(/listening/, 10_000);
    const holdArgv = (n: number): string[] => ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', process.execPath, path.join(BENCH_DIST, 'hold.js'), dst.ip, String(HOLD_PORT), String(n)];
    // Warm-up: the code paths, and one pooled h2 connection, exist before the baseline.
    const warm = startProc(src, holdArgv(100));
    await warm.waitFor(/^ready /m, 30_000);
    await stopProc(warm);
    await sleep(o.quick ? 500 : 2000);
    const before = await Promise.all(pids.map((p) => sampleRss(p)));
    const tcp0 = tcpMemKiB();
    holder = startProc(src, holdArgv(o.idleConns));
    const out = await holder.waitFor(/^ready \d+ \d+$/m, 60_000);
    const openMs = Number(/^ready \d+ (\d+)$/m.exec(out)![1]);
    await sleep(o.quick ? 1000 : 3000);
    const after = await Promise.all(pids.map((p) => sampleRss(p, 5, 300)));
    const tcp1 = tcpMemKiB();
    // Only now ask the agents (a /config_dump of 1000+ connections allocates memory itself).
    const [a, b] = await Promise.all([dump(n1), dump(n2)]);
    const target = `${dst.ip}:${HOLD_PORT}`;
    const r: XRss = {
      conns: o.idleConns,
      openMs,
      client: { before: before[0]!, after: after[0]! },
      server: { before: before[1]!, after: after[1]! },
      openViaHbone: a.connections.filter((c) => c.state === 'open' && c.via === 'hbone' && c.dst === target).length,
      openInboundHbone: b.connections.filter((c) => c.state === 'open' && c.via === 'inbound-hbone' && c.dst === target).length,
      clientSessions: Object.values(a.hbone?.pools ?? {}).reduce((x, p) => x + p.sessions, 0),
      clientActiveStreams: Object.values(a.hbone?.pools ?? {}).reduce((x, p) => x + p.activeStreams, 0),
      serverEstablished: b.hbone?.server.connections.established ?? null,
      serverActiveStreams: b.hbone?.server.streams.active ?? null,
      tcpMemBefore: tcp0,
      tcpMemAfter: tcp1,
    };
    if (r.openViaHbone < o.idleConns || r.openInboundHbone < o.idleConns) {
      throw new Error(`idle connections: only ${r.openViaHbone} open via hbone at n1 and ${r.openInboundHbone} inbound-hbone at n2, wanted ${o.idleConns}`);
    }
    const per = (x: { before: number; after: number }): string => ((x.after - x.before) / o.idleConns).toFixed(2);
    log(`  ${o.idleConns} idle connections (opened in ${openMs} ms): client agent ${per(r.client)} KiB/conn (${(r.client.before / 1024).toFixed(1)} -> ${(r.client.after / 1024).toFixed(1)} MiB), server agent ${per(r.server)} KiB/conn (${(r.server.before / 1024).toFixed(1)} -> ${(r.server.after / 1024).toFixed(1)} MiB); ${r.clientSessions} h2 sessions`);
    return r;
  } finally {
    await stopProc(holder);
    await stopProc(server);
  }
}

function coresText(c: Cores): string {
  const e = Object.entries(c);
  return e.length ? `; ${e.map(([k, v]) => `${k} ${v === null ? '-' : v.toFixed(0)}%`).join(', ')} of a core` : '';
}

// ---------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------

function partner<T extends { path: string; block: number }>(xs: T[], x: T, p: string, match: (a: T, b: T) => boolean = () => true): T | undefined {
  return xs.find((d) => d.path === p && d.block === x.block && match(d, x));
}

const coreCell = (xs: Array<{ cores: Cores }>): string => {
  const names = [...new Set(xs.flatMap((x) => Object.keys(x.cores)))];
  return names.length ? names.map((n) => `${n} ${fmt(mean(xs.map((x) => x.cores[n] ?? NaN)), 0)}`).join(', ') : '-';
};

/** "% of a core" per process, per Gbit/s moved, averaged over runs. */
function costRows(r: HboneResults): string[][] {
  const rows: string[][] = [];
  for (const streams of [1, 4]) {
    for (const p of ['hbone', 'nghttpx'] as const) {
      const xs = r.tput.filter((x) => x.path === p && x.streams === streams && x.recvGbps > 0);
      if (!xs.length) continue;
      const names = Object.keys(xs[0]!.cores);
      const per = (n: string): number => mean(xs.map((x) => (x.cores[n] ?? NaN) / x.recvGbps));
      const total = mean(xs.map((x) => names.reduce((a, n) => a + (x.cores[n] ?? 0), 0) / x.recvGbps));
      rows.push([LABEL[p], String(streams), fmt(mean(xs.map((x) => x.recvGbps)), 2), names.map((n) => `${n} ${fmt(per(n), 0)}`).join(', '), fmt(total, 0)]);
    }
  }
  return rows;
}

/** Client side vs client side, server side vs server side, per Gbit/s. */
function sideBySide(r: HboneResults): string[] {
  const per = (p: XPath, names: string[]): number => mean(r.tput.filter((x) => x.path === p && x.recvGbps > 0)
    .map((x) => names.reduce((a, n) => a + (x.cores[n] ?? NaN), 0) / x.recvGbps));
  const c = [per('hbone', ['agent n1']), per('nghttpx', ['h2fwd'])];
  const sv = [per('hbone', ['agent n2']), per('nghttpx', ['nghttpx']), per('nghttpx', ['connect-proxy'])];
  if (c.some(Number.isNaN) || sv.some(Number.isNaN)) return [];
  return [
    `Averaged over all runs: client side, the agent costs ${fmt(c[0], 0)} % of a core per Gbit/s where h2fwd, running the same HBONE client code (\`HbonePool\` + \`spliceStreamSocket\`), costs ${fmt(c[1], 0)}; server side, the agent costs ${fmt(sv[0], 0)} where nghttpx costs ${fmt(sv[1], 0)} (${fmt(sv[1]! + sv[2]!, 0)} with the extra connect-proxy relay).`,
    '',
  ];
}

const PERF_HEAD = ['run', 'process', 'perf: % of a core', ...PERF_CATEGORIES];
function perfRows(label: string, pf: PerfProfile | null | undefined): string[][] {
  if (!pf) return [];
  return Object.entries(pf.byProc).map(([proc, c]) => [label, proc, fmt(c.total, 0), ...PERF_CATEGORIES.map((k) => fmt(c[k], 0))]);
}
function perfTop(pf: PerfProfile | null | undefined): string[] {
  if (!pf) return [];
  return Object.entries(pf.top).map(([proc, xs]) => `- ${proc}: ${xs.slice(0, 6).map((x) => `\`${x.sym.length > 60 ? x.sym.slice(0, 57) + '...' : x.sym}\` ${fmt(x.pct, 1)}`).join(', ')}`);
}

export interface HboneReport {
  text: string[];
  md: string[];
  targets: { throughput: boolean | null; latency: boolean | null; rss: boolean | null };
}

export function hboneReport(r: HboneResults, o: HboneOptions): HboneReport {
  const text: string[] = [];
  const md: string[] = [];
  const ratio = (a: number, b: number | undefined): number => (b === undefined ? NaN : a / b);

  // 4. throughput
  const tputHead = ['path', 'streams', 'Gbit/s (mean)', 'per block', '× direct', '× nghttpx tunnel', 'sender Gbit/s', 'machine CPU %', 'CPU % of a core (processes between client and server)'];
  const tputRows: string[][] = [];
  for (const streams of [1, 4]) {
    for (const p of XPATHS) {
      const xs = r.tput.filter((x) => x.path === p && x.streams === streams);
      if (!xs.length) continue;
      const same = (a: XTput, b: XTput): boolean => a.streams === b.streams;
      tputRows.push([
        LABEL[p], String(streams), fmt(mean(xs.map((x) => x.recvGbps)), 2),
        xs.map((x) => `${fmt(x.recvGbps, 2)}${x.failed ? '*' : ''}`).join(', '),
        p === 'direct' ? '1.00' : fmt(mean(xs.map((x) => ratio(x.recvGbps, partner(r.tput, x, 'direct', same)?.recvGbps))), 2),
        p === 'nghttpx' ? '1.00' : fmt(mean(xs.map((x) => ratio(x.recvGbps, partner(r.tput, x, 'nghttpx', same)?.recvGbps))), 2),
        fmt(mean(xs.map((x) => x.sentGbps)), 2),
        fmt(mean(xs.map((x) => x.machineBusyPct)), 0),
        coreCell(xs),
      ]);
    }
  }
  // 5. latency
  const latHead = ['path', 'p50 µs', 'p99 µs', 'added p50 µs', 'added p99 µs', 'p50 × direct', 'per block p50/p99 (direct of the block)', 'CPU % of a core'];
  const latRows = (pinned: boolean): string[][] => XPATHS.flatMap((p) => {
    const sub = r.lat.filter((x) => x.pinned === pinned);
    const xs = sub.filter((x) => x.path === p);
    if (!xs.length) return [];
    const d = (x: XLat): XLat | undefined => partner(sub, x, 'direct');
    return [[
      LABEL[p], fmt(mean(xs.map((x) => x.p50))), fmt(mean(xs.map((x) => x.p99))),
      p === 'direct' ? '-' : signed(mean(xs.map((x) => x.p50 - (d(x)?.p50 ?? NaN)))),
      p === 'direct' ? '-' : signed(mean(xs.map((x) => x.p99 - (d(x)?.p99 ?? NaN)))),
      p === 'direct' ? '1.00' : fmt(mean(xs.map((x) => ratio(x.p50, d(x)?.p50))), 2),
      xs.map((x) => `${x.p50.toFixed(1)}/${x.p99.toFixed(1)}${p === 'direct' ? '' : ` (${fmt(d(x)?.p50)}/${fmt(d(x)?.p99)})`}`).join(', '),
      coreCell(xs),
    ]];
  });
  const added50 = (pinned: boolean): number => {
    const sub = r.lat.filter((x) => x.pinned === pinned);
    return mean(sub.filter((x) => x.path === 'hbone').map((x) => x.p50 - (partner(sub, x, 'direct')?.p50 ?? NaN)));
  };
  // 6. connections per second
  const cpsHead = ['path', 'conn/s', '× direct', 'connections (failed)', 'per connection p50 / p99 ms', 'machine CPU %', 'CPU % of a core', 'HBONE streams opened (n1) / tunnels (n2)'];
  const cpsRows = (['direct', 'hbone'] as const).flatMap((p) => {
    const xs = r.cps.filter((x) => x.path === p);
    if (!xs.length) return [];
    return [[
      LABEL[p], fmt(mean(xs.map((x) => x.rate)), 0),
      p === 'direct' ? '1.00' : fmt(mean(xs.map((x) => ratio(x.rate, partner(r.cps, x, 'direct')?.rate))), 2),
      xs.map((x) => `${x.conns} (${x.failures}${x.failures ? `: ${Object.entries(x.errors).map(([k, v]) => `${k} ${v}`).join(', ')}` : ''})`).join(', '),
      xs.map((x) => `${fmt(x.p50ms, 2)} / ${fmt(x.p99ms, 2)}`).join(', '),
      fmt(mean(xs.map((x) => x.machineBusyPct)), 0),
      coreCell(xs),
      xs.map((x) => (x.verify ? `${x.verify.streamsOpened} / ${x.verify.tunnelsOpened}` : '-')).join(', '),
    ]];
  });
  // 7. RSS
  const rss = r.rss;
  const perConn = (x: { before: number; after: number }): number => (rss ? (x.after - x.before) / rss.conns : NaN);
  const rssHead = ['agent', 'VmRSS before MiB', `with ${rss?.conns ?? '?'} idle connections MiB`, 'KiB per connection', 'target <= 4 KiB'];
  const rssRows = rss ? ([['client side (n1)', rss.client], ['server side (n2)', rss.server]] as const).map(([k, x]) => [
    k, fmt(x.before / 1024, 1), fmt(x.after / 1024, 1), fmt(perConn(x), 2), perConn(x) <= 4 ? 'met' : '**NOT met**',
  ]) : [];

  const hb1 = r.tput.filter((x) => x.path === 'hbone');
  const tunnelRatio = mean(hb1.map((x) => ratio(x.recvGbps, partner(r.tput, x, 'nghttpx', (a, b) => a.streams === b.streams)?.recvGbps)));
  const targets = {
    throughput: hb1.length ? hb1.every((x) => x.recvGbps >= (partner(r.tput, x, 'nghttpx', (a, b) => a.streams === b.streams)?.recvGbps ?? Infinity)) : null,
    latency: r.lat.some((x) => x.path === 'hbone') ? added50(true) <= 120 && added50(false) <= 120 : null,
    rss: rss ? perConn(rss.client) <= 4 && perConn(rss.server) <= 4 : null,
  };
  const yes = (b: boolean | null): string => (b === null ? 'not measured' : b ? 'met' : '**NOT met**');

  text.push('\nCross-node throughput (iperf3; Gbit/s the receiver got)', textTable(tputHead, tputRows));
  text.push(`\nCross-node 1 KB round trip (${r.info.tool}), pinned to CPU ${PIN_CPU}`, textTable(latHead, latRows(true)));
  text.push(`\nCross-node 1 KB round trip (${r.info.tool}), not pinned`, textTable(latHead, latRows(false)));
  text.push(`\nConnections per second (${o.cpsConcurrency} at a time)`, textTable(cpsHead, cpsRows));
  if (rss) text.push(`\nAgent memory, ${rss.conns} idle HBONE connections`, textTable(rssHead, rssRows));
  text.push('\nRelay CPU per Gbit/s (% of a core)', textTable(['path', 'streams', 'Gbit/s', '% of a core per Gbit/s, by process', 'all relays'], costRows(r)));
  const perfText = [...r.tput.filter((x) => x.perf).flatMap((x) => perfRows(`${x.path} tput`, x.perf)), ...r.cps.filter((x) => x.perf).flatMap((x) => perfRows(`${x.path} conn/s`, x.perf))];
  if (perfText.length) text.push('\nperf: where the relays spend their CPU (% of a core)', textTable(PERF_HEAD, perfText));
  text.push(`targets: HBONE throughput >= nghttpx tunnel: ${yes(targets.throughput).replace(/\*/g, '')} (× ${fmt(tunnelRatio, 2)} on average); added p50 <= 120 µs: ${yes(targets.latency).replace(/\*/g, '')} (pinned ${signed(added50(true))}, not pinned ${signed(added50(false))} µs); <= 4 KiB per idle connection: ${yes(targets.rss).replace(/\*/g, '')}`);

  const verified = [...r.tput, ...r.lat].filter((x) => x.verify);
  const nMeas = r.tput.length + r.lat.length;
  md.push(
    `## 4. Cross-node throughput (iperf3, 1 and 4 streams, ${o.seconds} s)`,
    '',
    'Sandbox 2 nodes × 2 pods (`n<i>-p1` ambient, `n<i>-p2` plain), node n1 -> node n2',
    'over the fabric bridge. Three paths, measured back to back in each block',
    `(${o.blocks} block${o.blocks > 1 ? 's' : ''}, the order reversed every other block):`,
    '',
    '| path | from -> to | what it includes |',
    '|---|---|---|',
    '| **direct** (baseline) | `n1-p2` -> `n2-p2`, plain pods | the kernel alone |',
    '| **HBONE (2 agents)** | `n1-p1` -> `n2-p1`, ambient pods | connect4 capture into the n1 agent (Node.js), HTTP/2 CONNECT over mTLS 1.3 from `n1-p1` to `n2-p1:15008` (one pooled h2 connection), terminated by the n2 agent, which connects to the app inside `n2-p1` |',
    `| **nghttpx tunnel** | \`n1-p2\` -> \`n2-p2\`, plain pods | the client connects to \`127.0.0.1:<port>\` in \`n1-p2\`, where \`bench/h2fwd.ts\` (Node.js) turns each TCP connection into a CONNECT stream over one pooled h2/mTLS 1.3 connection to nghttpx ${r.info.nghttpx} (\`--http2-proxy\`, TLS 1.3 only, \`--verify-client\`) in \`n2-p2\`, which hands the CONNECT to \`bench/connect-proxy.ts\` (Node.js, HTTP/1.1 CONNECT) on 127.0.0.1 in \`n2-p2\`, which connects to the app |`,
    '',
    'About the tunnel: nghttpx cannot be the client end (its frontends only',
    'speak HTTP: a plain TCP connection from iperf3 cannot become a CONNECT',
    'stream there; `--client-proxy` no longer exists, and in `--http2-proxy`',
    'mode with an h2 backend it still needs an HTTP/1.1 CONNECT from the app),',
    'so the client end is `bench/h2fwd.ts`, built on our own HBONE client',
    'library (`HbonePool` + `spliceStreamSocket`: the exact code the agent runs',
    'for outbound HBONE, same TLS 1.3 settings, ALPN h2, client certificate,',
    'server URI SAN check, 4 MiB stream / 16 MiB connection windows, 1 MiB',
    'max frame, <= 100 streams per h2 connection) minus the eBPF capture.',
    'The two paths therefore differ on the server side: the n2 agent vs',
    'nghttpx (C, libnghttp2; same windows via',
    '`--frontend-http2-window-size=4194304 --frontend-http2-connection-window-size=16777216`;',
    'nghttpx has no option to raise its SETTINGS_MAX_FRAME_SIZE, so it receives',
    '16 KiB DATA frames where our server accepts 1 MiB). And nghttpx does not',
    'dial CONNECT targets itself: in `--http2-proxy` mode it forwards each CONNECT',
    'to an HTTP/1.1 forward proxy backend, here a minimal Node.js one',
    '(`bench/connect-proxy.ts`, one more user-space copy of every byte that the',
    'HBONE path does not have). So the tunnel has three user-space relays',
    '(h2fwd, nghttpx, connect-proxy) where HBONE has two (agent n1, agent n2);',
    'the CPU column shows what each one costs. Certificates for both tunnel ends',
    'come from the sandbox CA (SPIFFE ids of `n1-p2` and `n2-p2`). No kTLS',
    'anywhere (nghttpx\'s `--tls-ktls` is off, Node has none).',
    '',
    `Every HBONE measurement is checked with both agents' \`/config_dump\`: the n1 agent's`,
    'connection records to the destination port say `via: hbone` (none any other',
    'way), the n2 agent\'s say `inbound-hbone`, and the n1 pool\'s `streamsOpened`',
    'and the n2 server\'s `tunnelsOpened` went up by at least the number of',
    `connections the tool opened (${verified.length} of ${nMeas} throughput/latency measurements were HBONE ones; all passed, or the run would have stopped).`,
    '"CPU % of a core" is per process, over the measurement (utime+stime from',
    '`/proc/<pid>/stat`); iperf3/sockperf themselves are not in it.',
    '',
    table(tputHead, tputRows),
    '',
  );
  const failed = r.tput.filter((x) => x.failed);
  if (failed.length) md.push(`\\* broke off: ${failed.map((x) => `${LABEL[x.path]} -P ${x.streams} block ${x.block}: \`${x.failed}\``).join('; ')}.`, '');
  md.push(
    `Target: HBONE throughput >= the nghttpx tunnel's: **${yes(targets.throughput).replace(/\*/g, '')}** (HBONE / tunnel × ${fmt(tunnelRatio, 2)} averaged over streams and blocks).`,
    '',
    '### What limits the throughput',
    '',
    `Every path is CPU-bound on this ${os.availableParallelism()}-CPU machine: the client and server, the kernel`,
    '(TCP and veth on both nodes, loopback inside the pods) and the relays share',
    'two cores, so what a relay spends per byte comes straight off the throughput.',
    'Cost of each relay process per Gbit/s moved (its "% of a core" divided by the',
    'Gbit/s of the same run, averaged):',
    '',
    table(['path', 'streams', 'Gbit/s', '% of a core per Gbit/s, by process', 'all relays'], costRows(r)),
    '',
    ...sideBySide(r),
  );
  md.push('Syscall counts and what they say about the server side: "One-off analysis" in `bench/README.md`.', '');
  const tp = r.tput.filter((x) => x.perf);
  if (tp.length) {
    md.push(
      `Where that CPU goes: \`perf record -F 499\` on the relay processes (all their threads) for ${fmt(tp[0]!.perf?.seconds, 1)} s in the middle of the 1-stream runs of the last block, samples sorted by symbol into categories, in % of one core (perf sees only those 2.5 s of one run, the sampler above the whole runs: the totals differ accordingly):`,
      '',
      table(PERF_HEAD, tp.flatMap((x) => perfRows(`${LABEL[x.path]}, ${fmt(x.recvGbps, 2)} Gbit/s`, x.perf))),
      '',
      'Heaviest symbols (% of a core):',
      '',
      ...tp.flatMap((x) => perfTop(x.perf)),
      '',
    );
  } else if (!o.quick) {
    md.push('(`perf` was not available or failed: no per-category breakdown.)', '');
  }
  md.push(
    `## 5. Cross-node 1 KB request/response latency (${r.info.tool === 'nettool' ? '`nettool rr`' : '`sockperf ping-pong --tcp -m 1024 --full-rtt`'}, ${o.seconds} s)`,
    '',
    'Same three paths and blocks; "added" is the difference to the direct path',
    'of the same block. Pinned: client, server, both agents and the three tunnel',
    `processes on CPU ${PIN_CPU} (every hop is CPU work on one core, no cross-CPU`,
    'wake-ups). Not pinned: wherever the scheduler puts them.',
    '',
    `### Pinned to CPU ${PIN_CPU}`,
    '',
    table(latHead, latRows(true)),
    '',
    '### Not pinned',
    '',
    table(latHead, latRows(false)),
    '',
    `Target: added p50 <= 120 µs: **${yes(targets.latency).replace(/\*/g, '')}** (HBONE added p50: pinned ${signed(added50(true))} µs, not pinned ${signed(added50(false))} µs).`,
    '',
    `## 6. Connections per second (${o.cpsSeconds} s, ${o.cpsConcurrency} connections at a time)`,
    '',
    '`bench/cps.ts` in the source pod: each of the loops connects, sends 1 byte,',
    'reads the 1-byte echo (`nettool serve` in the destination pod) and closes,',
    'then starts over. Direct: `n1-p2` -> `n2-p2`; HBONE: `n1-p1` -> `n2-p1`, every',
    'connection one CONNECT stream on the pooled h2 connection (no new TLS',
    'handshake per connection). "per connection" is connect issued -> echo read.',
    'The last column is what the agents counted (n1 pool `streamsOpened`, n2',
    '`tunnelsOpened`), checked to be at least the connections completed.',
    '',
    table(cpsHead, cpsRows),
    '',
  );
  const hc = r.cps.find((x) => x.path === 'hbone');
  if (hc) {
    const us = (pct: number | null | undefined): string => (pct === null || pct === undefined || !(hc.rate > 0) ? '-' : fmt((pct / 100 / hc.rate) * 1e6, 0));
    md.push(
      'What a new HBONE connection costs the server-side agent (a thread + `setns()` per upstream socket, synchronously on the event loop) and the client-side one: "One-off analysis" in `bench/README.md`.',
      '',
      `CPU per HBONE connection (% of a core / conn/s): client-side agent ${us(hc.cores['agent n1'])} µs, server-side agent ${us(hc.cores['agent n2'])} µs; the machine was ${fmt(hc.machineBusyPct, 0)}% busy.`,
      '',
    );
    if (hc.perf) {
      md.push(
        `\`perf\` over ${fmt(hc.perf.seconds, 1)} s of the HBONE run (% of one core):`,
        '',
        table(PERF_HEAD, perfRows('HBONE conn/s', hc.perf)),
        '',
        ...perfTop(hc.perf),
        '',
      );
    }
  }
  if (rss) {
    md.push(
      `## 7. Agent memory per idle HBONE connection (${rss.conns} connections)`,
      '',
      `\`bench/hold.ts\` in \`n1-p1\` opens ${rss.conns} TCP connections to \`nettool serve\` in \`n2-p1\``,
      `(50 at a time; each sends 1 byte and waits for the echo, so it works end to end; ${rss.openMs} ms for all)`,
      'and holds them idle. VmRSS of each agent (`/proc/<pid>/status`, median of',
      '5 samples) before (after a warm-up of 100 connections opened and closed,',
      'so the code paths and one pooled h2 connection exist) and 3 s after the',
      'last one is up. Both agents\' `/config_dump` afterwards: ',
      `${rss.openViaHbone} open \`hbone\` records at n1, ${rss.openInboundHbone} open \`inbound-hbone\` records at n2;`,
      `the n1 pool holds ${rss.clientSessions} h2 connection(s) with ${rss.clientActiveStreams} streams, the n2 server ${rss.serverEstablished} with ${rss.serverActiveStreams}.`,
      '',
      table(rssHead, rssRows),
      '',
      'Per connection, the client-side agent holds the captured app socket, an h2',
      'stream and the splice between them (plus 1/100 of an h2/TLS connection);',
      'the server-side agent an h2 stream, the socket to the app and the splice.',
      `Kernel socket buffers are not in RSS (idle sockets hold almost none: the machine's TCP memory went from ${fmt(rss.tcpMemBefore, 0)} to ${fmt(rss.tcpMemAfter, 0)} KiB, \`/proc/net/sockstat\`).`,
      'RSS grows in V8 heap-growth steps, and how much of the growth the heap\'s',
      'free space (garbage of earlier runs) absorbs depends on GC timing: these',
      'figures wander by several KiB per connection from run to run. The live JS',
      'heap after a full GC (a one-off measurement with instrumented agents, see',
      '`bench/README.md`) grew by ~10 KiB per connection in each agent, so the',
      'target is missed whatever the noise.',
      '',
      `Target: <= 4 KiB per idle connection (ztunnel: ≈3.8 KB): **${yes(targets.rss).replace(/\*/g, '')}**.`,
      '',
    );
  }
  return { text, md, targets };
}

