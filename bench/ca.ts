/**
 * Section 12: the cluster CA (issue 15). The CA runs as its own process in
 * the sandbox's control-plane netns; the agents ask it over the fabric.
 *   - issuance: from node n1's netns, what an agent does for a new identity
 *     (key, CSR, CreateCertificate over gRPC+TLS, chain check), one after
 *     another (p50/p99) and from 16 concurrent callers (certificates/s); the
 *     CA's own handling time from its duration histogram;
 *   - time from enrollment to the first HBONE connection of a pod, with the
 *     cluster CA and with the embedded one, in the same run;
 *   - start-up of a node with 100 pods: agent ready, and every ambient pod's
 *     certificate held, cluster CA vs embedded.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { caMetrics, nodeCaFiles, sandboxDown, sandboxUp, setEnrollment, startAgent, waitAgentReady, type SandboxState } from '../tools/sandbox/index.js';
import { NETTOOL } from '../tools/sandbox/podproc.js';
import { getJsonInNetns } from '../src/util/netns-http.js';
import type { ConfigDump } from '../src/agent/index.js';
import type { CaResults, CaMode } from './results.js';
import { killAll, now, sleep, startProc, toolFailed, HINT_OUTPUT } from './lib.js';

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'ca-client.js');
const MODES: CaMode[] = ['cluster', 'embedded'];

type Dump = Pick<ConfigDump, 'connections' | 'certificates'>;
const dumpOf = (st: SandboxState, node: string): Promise<Dump> =>
  getJsonInNetns<Dump>(st.nodes.find((n) => n.name === node)!.netnsPath, '127.0.0.1', 15000, '/config_dump');
const spiffe = (p: SandboxState['pods'][number]): string => `spiffe://cluster.local/ns/${p.namespace}/sa/${p.serviceAccount}`;

/** A connection loop in a pod: every 10 ms a new connection to HOST:PORT, the greeting read, closed. */
const LOOP = `
const net = require('net');
const [host, port] = process.argv.slice(1);
setInterval(() => {
  const s = net.connect(Number(port), host);
  s.on('data', () => s.destroy());
  s.on('error', () => {});
  s.setTimeout(2000, () => s.destroy());
}, 10);
console.log('looping');`;

export async function caBench(o: { quick: boolean }, stateDir: string, log: (s: string) => void): Promise<CaResults> {
  const opts = { stateDir };
  const seq = o.quick ? 30 : 300;
  const seconds = o.quick ? 2 : 10;
  const concurrency = 16;
  const res: CaResults = { quick: o.quick, issuance: null, firstConnection: [], startup: [] };

  for (const ca of MODES) {
    const pods = o.quick ? 4 : 10;
    log(`ca: ${ca} CA, 2 nodes x ${pods} pods`);
    const st = await sandboxUp({ nodes: 2, pods, agents: true, stateDir, ca });
    try {
      const dst = st.pods.find((p) => p.name === 'n2-p1')!;
      const server = startProc(dst, [process.execPath, NETTOOL, 'serve', '8080', '--greet']);
      await server.waitFor(/listening/, 10_000);
      if (ca === 'cluster') {
        const cp = st.controlPlane!;
        const f = nodeCaFiles(st.stateDir, 'n1');
        const ids = st.pods.filter((p) => p.node === 'n1').map(spiffe);
        const n1 = st.nodes.find((n) => n.name === 'n1')!;
        const r = await execa(
          'nsenter',
          [
            `--net=${n1.netnsPath}`,
            '--',
            process.execPath,
            CLIENT,
            cp.address,
            f.rootCert,
            f.token,
            String(seq),
            String(concurrency),
            String(seconds),
            ids.join(','),
          ],
          { reject: false, timeout: 300_000 },
        );
        if (r.exitCode !== 0) throw toolFailed(`ca-client failed: ${String(r.stderr)}`, HINT_OUTPUT);
        const j = JSON.parse(String(r.stdout).trim().split('\n').pop()!) as { seqMs: number[]; concCerts: number; concSeconds: number; errors: number };
        const m = await caMetrics(opts);
        const num = (re: RegExp): number | null => {
          const x = re.exec(m);
          return x ? Number(x[1]) : null;
        };
        const sumS = num(/^ambientd_ca_request_duration_seconds_sum\{result="issued"\} ([\d.e+-]+)/m);
        const count = num(/^ambientd_ca_request_duration_seconds_count\{result="issued"\} (\d+)/m);
        res.issuance = {
          sequentialMs: j.seqMs,
          concurrency,
          concurrentCerts: j.concCerts,
          concurrentSeconds: j.concSeconds,
          errors: j.errors,
          caMeanMs: sumS !== null && count ? (sumS * 1000) / count : null,
          caIssued: count,
        };
      }
      // enrollment -> first HBONE connection, for each plain pod of n1
      const samples: Array<number | null> = [];
      for (const p of st.pods.filter((x) => x.node === 'n1' && !x.ambient)) {
        const loop = startProc(p, [process.execPath, '-e', LOOP, dst.ip, '8080']);
        await loop.waitFor(/looping/, 10_000);
        await sleep(100);
        const t0 = now();
        await setEnrollment(p.name, true, opts);
        let ms: number | null = null;
        for (const end = t0 + 30_000; now() < end; await sleep(20)) {
          const rec = (await dumpOf(st, 'n1')).connections.find(
            (c) => c.pod.endsWith(`/${p.name}`) && c.via === 'hbone' && c.direction === 'outbound' && c.bytesReceived > 0 && c.end !== null,
          );
          if (rec) {
            ms = Date.parse(rec.end!) - t0;
            break;
          }
        }
        loop.child.kill('SIGKILL');
        samples.push(ms);
      }
      res.firstConnection.push({ ca, samplesMs: samples });
      log(`ca: ${ca}: enrollment -> first HBONE connection ${samples.map((s) => (s === null ? '-' : s.toFixed(0))).join(', ')} ms`);
    } finally {
      killAll();
      await sandboxDown(opts);
    }
  }

  const pods = o.quick ? 20 : 100;
  for (const ca of MODES) {
    const st = await sandboxUp({ nodes: 1, pods, agents: false, stateDir, ca });
    try {
      const ambient = st.pods.filter((p) => p.ambient).map(spiffe);
      const t0 = now();
      await startAgent('n1', opts);
      await waitAgentReady('n1', 120_000, opts);
      const readyMs = now() - t0;
      let allCertsMs: number | null = null;
      for (const end = t0 + 120_000; now() < end; await sleep(20)) {
        const held = new Set((await dumpOf(st, 'n1')).certificates.filter((c) => c.serial !== null).map((c) => c.id));
        if (ambient.every((id) => held.has(id))) {
          allCertsMs = now() - t0;
          break;
        }
      }
      res.startup.push({ ca, pods, ambientPods: ambient.length, readyMs, allCertsMs });
      log(`ca: ${ca}: 1 node x ${pods} pods: agent ready ${readyMs.toFixed(0)} ms, all ${ambient.length} certificates ${allCertsMs?.toFixed(0) ?? '-'} ms`);
    } finally {
      killAll();
      await sandboxDown(opts);
    }
  }
  return res;
}
