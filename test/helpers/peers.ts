// Attackers and held connections shared by the adversarial and chaos suites.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { CertificateAuthority } from '../../src/identity/ca.js';
import { startInPod, type PodRef } from '../../tools/sandbox/podproc.js';

/**
 * A valid mesh certificate for `id`, issued by the sandbox's CA (the cluster
 * CA's material in <stateDir>/control-plane/ca, or with --ca embedded
 * <stateDir>/ca): what a peer holding a stolen or its own identity presents.
 * Returns a directory under `tmp` with key.pem and cert.pem.
 */
export async function issueMeshCert(stateDir: string, tmp: string, id: string): Promise<string> {
  const cluster = path.join(stateDir, 'control-plane', 'ca');
  const ca = await CertificateAuthority.loadOrCreate(fs.existsSync(cluster) ? cluster : path.join(stateDir, 'ca'), { trustDomain: 'cluster.local' });
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const issued = await ca.issue({ spiffeId: id, publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string });
  const dir = fs.mkdtempSync(path.join(tmp, 'cert-'));
  fs.writeFileSync(path.join(dir, 'key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  fs.writeFileSync(path.join(dir, 'cert.pem'), issued.chainPem);
  return dir;
}

export interface HeldConnection {
  proc: ChildProcess;
  /** how it ended ("closed", "error CODE") and when */
  exit: Promise<{ code: number | null; out: string; at: number }>;
}

/** A connection held from `from` (a tick every 20 ms); the process goes into `procs` for the suite's teardown. */
export async function holdTicking(from: PodRef, host: string, port: number, procs: ChildProcess[]): Promise<HeldConnection> {
  const proc = await startInPod(from, [
    process.execPath,
    '-e',
    `
    const s = require('net').connect(${port}, '${host}', () => { process.stdout.write('listening\\n'); });
    s.on('data', () => {});
    s.on('error', (e) => { console.log('error', e.code); process.exit(3); });
    s.on('close', () => { console.log('closed'); process.exit(4); });
    setInterval(() => s.write('tick\\n'), 20);
  `,
  ]);
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  const exit = new Promise<{ code: number | null; out: string; at: number }>((r) => proc.on('exit', (code) => r({ code, out, at: Date.now() })));
  return { proc, exit };
}
