/**
 * Cluster CA load client, run inside a node's netns by bench/ca.ts (the CA
 * runs in its own process and netns):
 *
 *   node dist/bench/ca-client.js ADDRESS ROOT_FILE TOKEN_FILE SEQUENTIAL CONCURRENCY SECONDS ID[,ID...]
 *
 * Each request is what an agent does for a new identity: an ECDSA P-256 key,
 * a CSR, CreateCertificate over gRPC+TLS, the chain checked against the root
 * (a fresh IdentityManager per request, so nothing is cached). First
 * SEQUENTIAL requests one after another (their durations), then CONCURRENCY
 * callers for SECONDS (certificates issued). Prints one JSON line:
 * { "seqMs": [...], "concCerts": N, "concSeconds": S, "errors": N }.
 */
import { RemoteCaIssuer } from '../src/identity/ca-client.js';
import { IdentityManager } from '../src/identity/manager.js';

const [address, rootFile, tokenFile, seqArg, concArg, secondsArg, idsArg] = process.argv.slice(2);
const ids = (idsArg ?? '').split(',').filter(Boolean);
const issuer = new RemoteCaIssuer({ address: address!, rootFile: rootFile!, tokenFile: tokenFile! });
const now = (): number => performance.now();

async function one(i: number): Promise<void> {
  const m = new IdentityManager({ issuer });
  try {
    await m.get(ids[i % ids.length]!);
  } finally {
    // not close(): that would close the shared issuer
    for (const id of ids) m.forget(id);
  }
}

const seqMs: number[] = [];
let errors = 0;
for (let i = 0; i < Number(seqArg); i++) {
  const t = now();
  try {
    await one(i);
    seqMs.push(now() - t);
  } catch {
    errors++;
  }
}
let concCerts = 0;
const t0 = now();
const end = t0 + Number(secondsArg) * 1000;
await Promise.all(
  Array.from({ length: Number(concArg) }, async (_, w) => {
    for (let i = w; now() < end; i++) {
      try {
        await one(i);
        concCerts++;
      } catch {
        errors++;
      }
    }
  }),
);
process.stdout.write(JSON.stringify({ seqMs, concCerts, concSeconds: (now() - t0) / 1000, errors }) + '\n');
issuer.close();
process.exit(0);
