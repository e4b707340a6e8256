/**
 * Opens N long-lived idle TCP connections and holds them, run inside a pod by
 * bench/hbone.ts (agent memory per idle tunnelled connection):
 *
 *   node dist/bench/hold.js HOST PORT N
 *
 * Each connection sends 1 byte and waits for its echo (`nettool serve` at
 * HOST:PORT), so a connection only counts once it works end to end; at most
 * 50 are being opened at a time. Prints "ready <n> <ms>" when all N are up
 * (exit 1 on the first failure) and then stays idle until SIGTERM. Raise the fd limit first (ulimit -n) for large N.
 */
import net from 'node:net';

const [host = '127.0.0.1', portArg = '7000', nArg = '1000'] = process.argv.slice(2);
const port = Number(portArg);
const n = Number(nArg);
const socks: net.Socket[] = [];
const t0 = performance.now();

function open(): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    s.once('error', reject);
    s.once('connect', () => s.write('x'));
    s.once('data', () => {
      s.off('error', reject);
      s.on('error', (e) => {
        process.stdout.write(`connection lost: ${e.message}\n`);
      });
      s.on('close', () => process.stdout.write('connection closed\n'));
      socks.push(s);
      resolve();
    });
  });
}

let next = 0;
async function worker(): Promise<void> {
  while (next < n) {
    next++;
    await open();
  }
}
try {
  await Promise.all(Array.from({ length: Math.min(50, n) }, worker));
} catch (e) {
  process.stdout.write(`failed after ${socks.length}: ${(e as Error).message}\n`);
  process.exit(1);
}
process.stdout.write(`ready ${socks.length} ${(performance.now() - t0).toFixed(0)}\n`);
process.on('SIGTERM', () => process.exit(0));
