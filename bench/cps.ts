/**
 * Connection-rate client, run inside a pod by bench/hbone.ts:
 *
 *   node dist/bench/cps.js HOST PORT SECONDS CONCURRENCY
 *
 * CONCURRENCY loops, each as fast as it can: connect to HOST:PORT (an echo
 * server: `nettool serve`), send 1 byte, read the 1-byte echo, close; then
 * the next connection. Prints one JSON line: connections completed, failures
 * by error code, the rate, and percentiles of one connection's time (connect
 * issued -> echo read), in ms.
 */
import net from 'node:net';

const [host = '127.0.0.1', portArg = '7000', secondsArg = '5', concArg = '16'] = process.argv.slice(2);
const port = Number(portArg);
const seconds = Number(secondsArg);
const concurrency = Number(concArg);
const now = (): number => performance.now();

const times: number[] = [];
const errors: Record<string, number> = {};
let done = 0;

function once(): Promise<void> {
  return new Promise((resolve) => {
    const t0 = now();
    const s = net.connect({ host, port });
    let finished = false;
    const finish = (err?: NodeJS.ErrnoException): void => {
      if (finished) return;
      finished = true;
      if (err) errors[err.code ?? err.message] = (errors[err.code ?? err.message] ?? 0) + 1;
      s.destroy();
      resolve();
    };
    s.setTimeout(5000, () => finish(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    s.once('error', finish);
    s.once('connect', () => s.write('x'));
    s.once('data', () => {
      times.push(now() - t0);
      done++;
      finish();
    });
    s.once('end', () => finish(Object.assign(new Error('closed before the echo'), { code: 'EOF' })));
  });
}

async function worker(deadline: number): Promise<void> {
  while (now() < deadline) await once();
}

const start = now();
const deadline = start + seconds * 1000;
await Promise.all(Array.from({ length: concurrency }, () => worker(deadline)));
const elapsed = (now() - start) / 1000;
times.sort((a, b) => a - b);
const q = (p: number): number | null => (times.length ? times[Math.min(times.length - 1, Math.max(0, Math.ceil(p * times.length) - 1))]! : null);
process.stdout.write(
  JSON.stringify({
    conns: done,
    failures: Object.values(errors).reduce((a, b) => a + b, 0),
    errors,
    seconds: elapsed,
    rate: done / elapsed,
    concurrency,
    p50_ms: q(0.5),
    p99_ms: q(0.99),
  }) + '\n',
);
