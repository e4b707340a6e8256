/**
 * Section 7, measured: agent memory (VmRSS) per idle HBONE connection.
 * bench/hold.ts in the source pod opens N connections to `nettool serve` in
 * the destination pod and holds them; both agents' RSS before and after.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SandboxNode, SandboxPod } from '../tools/sandbox/index.js';
import { NETTOOL } from '../tools/sandbox/podproc.js';
import { sleep, startProc, stopProc, rssKiB, toolFailed, type Proc } from './lib.js';
import { dump } from './hbone-agents.js';
import type { HboneOptions, XRss } from './results.js';
import { pct } from './stats.js';

const BENCH_DIST = path.dirname(fileURLToPath(import.meta.url));
const HOLD_PORT = 7101;
/** argv run with the hard fd limit (many connections) */
const withFds = (argv: string[]): string[] => ['sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', ...argv];

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

export async function idleRss(
  o: HboneOptions,
  src: SandboxPod,
  dst: SandboxPod,
  n1: SandboxNode,
  n2: SandboxNode,
  pids: [number, number],
  log: (s: string) => void,
): Promise<XRss> {
  const server = startProc(dst, withFds([process.execPath, NETTOOL, 'serve', String(HOLD_PORT)]));
  let holder: Proc | null = null;
  try {
    await server.waitFor(/listening/, 10_000);
    const holdArgv = (n: number): string[] => withFds([process.execPath, path.join(BENCH_DIST, 'hold.js'), dst.ip, String(HOLD_PORT), String(n)]);
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
      throw toolFailed(
        `idle connections: only ${r.openViaHbone} open via hbone at n1 and ${r.openInboundHbone} inbound-hbone at n2, wanted ${o.idleConns}`,
        "some connections were not tunnelled or were closed: check both agents' logs",
      );
    }
    const per = (x: { before: number; after: number }): string => ((x.after - x.before) / o.idleConns).toFixed(2);
    log(
      `  ${o.idleConns} idle connections (opened in ${openMs} ms): client agent ${per(r.client)} KiB/conn (${(r.client.before / 1024).toFixed(1)} -> ${(r.client.after / 1024).toFixed(1)} MiB), server agent ${per(r.server)} KiB/conn (${(r.server.before / 1024).toFixed(1)} -> ${(r.server.after / 1024).toFixed(1)} MiB); ${r.clientSessions} h2 sessions`,
    );
    return r;
  } finally {
    await stopProc(holder);
    await stopProc(server);
  }
}
