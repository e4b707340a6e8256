/**
 * The nghttpx tunnel of the cross-node benchmarks (bench/hbone.ts), the
 * baseline HBONE is compared with, from n1-p2 to n2-p2:
 *
 *   client in n1-p2 -> 127.0.0.1:<port> -> bench/h2fwd.ts (our HBONE client
 *   library: one pooled h2/mTLS 1.3 connection, a CONNECT stream per TCP
 *   connection) -> nghttpx --http2-proxy in n2-p2 (TLS 1.3, --verify-client)
 *   -> bench/connect-proxy.ts (the HTTP/1.1 CONNECT backend nghttpx needs)
 *   -> server in n2-p2
 *
 * Certificates for both ends come from the sandbox CA.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SandboxPod } from '../tools/sandbox/index.js';
import { CertificateAuthority } from '../src/identity/ca.js';
import { IdentityManager } from '../src/identity/manager.js';
import { startProc, waitListening, toolFailed, type Proc, type Via } from './lib.js';

const BENCH_DIST = path.dirname(fileURLToPath(import.meta.url));
const TRUST_DOMAIN = 'cluster.local';
const NGHTTPX_PORT = 15443;
const CONNECT_PROXY_PORT = 3128;
/** server ports the tunnel forwards: rotate through a few so a restarted server never meets its predecessor's sockets */
export const IPERF_PORTS = [5301, 5308] as const;
export const SOCKPERF_PORTS = [11311, 11318] as const;
const range = (r: readonly [number, number]): string => `${r[0]}-${r[1]}`;
let seq = 0;
export const nextPort = (r: readonly [number, number]): number => r[0] + (seq++ % (r[1] - r[0] + 1));

export interface Tunnel {
  fwd: Proc;
  ng: Proc;
  proxy: Proc;
  /** client side: where the client connects for a server on `port` */
  via: Via;
  pids: Record<string, number>;
}

const spiffe = (ns: string, sa: string): string => `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;

async function writeCerts(stateDir: string): Promise<{ dir: string; files: (id: string) => { key: string; cert: string; root: string } }> {
  // the sandbox's mesh CA: the cluster CA's material (default) or the embedded one
  const cluster = path.join(stateDir, 'control-plane', 'ca');
  const ca = await CertificateAuthority.loadOrCreate(fs.existsSync(cluster) ? cluster : path.join(stateDir, 'ca'), { trustDomain: TRUST_DOMAIN });
  const ids = new IdentityManager({ issuer: ca });
  const dir = path.join(stateDir, 'bench-tunnel');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const names = new Map<string, { key: string; cert: string; root: string }>();
  try {
    for (const [k, id] of [
      ['client', spiffe('plain', 'sa-n1-p2')],
      ['server', spiffe('plain', 'sa-n2-p2')],
    ] as const) {
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

/** nghttpx flags of the server end: TLS 1.3 only, mTLS, the HBONE flow-control windows. */
export function nghttpxArgs(ip: string, key: string, cert: string, root: string): string[] {
  return [
    'nghttpx',
    '--conf=/dev/null',
    '--single-process',
    '--workers=1',
    '--no-ocsp',
    '--log-level=WARN',
    '--errorlog-file=/dev/stderr',
    '--http2-proxy',
    `--frontend=${ip},${NGHTTPX_PORT}`,
    `--backend=127.0.0.1,${CONNECT_PROXY_PORT}`,
    '--verify-client',
    `--verify-client-cacert=${root}`,
    '--tls-min-proto-version=TLSv1.3',
    '--tls-max-proto-version=TLSv1.3',
    '--tls13-ciphers=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384',
    '--frontend-http2-window-size=4194304',
    '--frontend-http2-connection-window-size=16777216',
    '--frontend-http2-max-concurrent-streams=100',
    '--no-via',
    '--no-server-push',
    key,
    cert,
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
  const fwd = startProc(client, [
    process.execPath,
    path.join(BENCH_DIST, 'h2fwd.js'),
    '127.0.0.1',
    ports,
    `${server.ip}:${NGHTTPX_PORT}`,
    server.ip,
    cid,
    sid,
    cf.key,
    cf.cert,
    cf.root,
  ]);
  await fwd.waitFor(/listening/, 10_000);
  return {
    fwd,
    ng,
    proxy,
    via: (_dst, port) => ({ host: '127.0.0.1', port }),
    pids: { h2fwd: fwd.child.pid!, nghttpx: ng.child.pid!, 'connect-proxy': proxy.child.pid! },
  };
}

/** Fails if a tunnel process died or reported failed tunnels. */
export function checkTunnel(t: Tunnel): void {
  for (const [name, p] of [
    ['h2fwd', t.fwd],
    ['nghttpx', t.ng],
    ['connect-proxy', t.proxy],
  ] as const) {
    if (p.child.exitCode !== null || p.child.signalCode !== null)
      throw toolFailed(`${name} exited: ${p.output().trim().slice(-500)}`, 'its last output is in the message; is nghttpx (package nghttp2-proxy) installed?');
  }
  const failed = /tunnel failed \((\d+)\)/g;
  let m: RegExpExecArray | null;
  let n = 0;
  while ((m = failed.exec(t.fwd.output())) !== null) n = Number(m[1]);
  if (n > 0)
    throw toolFailed(
      `h2fwd: ${n} tunnels failed: ${t.fwd.output().trim().slice(-500)}`,
      'the tunnel is the baseline, not the agent: see why nghttpx or connect-proxy refused (output in the message)',
    );
}
