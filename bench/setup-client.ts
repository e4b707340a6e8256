// Run inside a sandbox pod: N sequential TCP connections to HOST:PORT (an echo
// server), each: connect, write 1 byte, read it back, close. Prints the
// set-up latencies (connect() -> first echoed byte) as JSON.
import net from 'node:net';

const [host, portS, nS, warmS] = process.argv.slice(2);
const port = Number(portS);
const n = Number(nS ?? 200);
const warm = Number(warmS ?? 20);

function once(): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = net.connect({ host: host!, port }, () => s.write('x'));
    s.once('data', () => {
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      s.destroy();
      resolve(us);
    });
    s.once('error', reject);
  });
}

const lat: number[] = [];
for (let i = 0; i < warm + n; i++) {
  const us = await once();
  if (i >= warm) lat.push(us);
}
lat.sort((a, b) => a - b);
const q = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!;
process.stdout.write(JSON.stringify({ n, p50_us: q(0.5), p90_us: q(0.9), p99_us: q(0.99), mean_us: lat.reduce((a, b) => a + b, 0) / lat.length }) + '\n');
