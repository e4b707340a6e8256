/**
 * A small TCP tool run inside sandbox pods by the demo, tests and benchmarks:
 *
 *   nettool serve PORT [--greet [--peer-port]]  echo server; --greet speaks first ("hello from <ip>:<port> to <peer>"; --peer-port: <peer> with its port)
 *   nettool sink PORT                 reads everything, answers "<bytes> <sha256>" on EOF
 *   nettool send HOST PORT TEXT       sends TEXT, half-closes, prints the reply
 *   nettool blob HOST PORT BYTES      sends BYTES pseudo-random bytes to a sink, prints "<bytes> <sha256>" sent and received
 *   nettool echo HOST PORT BYTES      sends BYTES random bytes to `serve` (no --greet) while reading the echo; prints "ok <bytes> <sha256>" if identical
 *   nettool probe HOST PORT           exit 0 if a TCP connection is accepted, 1 if refused/failed
 *   nettool rr HOST PORT N SIZE       N request/response round trips of SIZE bytes against `serve`, prints latency JSON
 *   nettool hold HOST PORT SECONDS    one connection to `serve`: a 64-byte round trip every 50 ms for SECONDS; prints JSON, exit 1 on any error
 *   nettool rate HOST PORT RATE SECONDS
 *                                     RATE new connections per second to `serve` for SECONDS, each one round trip;
 *                                     prints JSON (ok, failed, errors by code, failure window), exit 1 if any failed
 *
 * Servers print "listening" on stdout once ready.
 */
import net from 'node:net';
import crypto from 'node:crypto';
import { formatHostPort } from '../../src/util/hostport.js';

function listen(port: number, onConn: (s: net.Socket) => void): void {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => s.destroy());
    onConn(s);
  });
  // both families ("::", dual-stack) where the netns has IPv6, else IPv4 only
  srv.once('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EAFNOSUPPORT' && e.code !== 'EADDRNOTAVAIL') throw e;
    srv.listen(port, '0.0.0.0', () => process.stdout.write('listening\n'));
  });
  srv.listen({ port, host: '::', ipv6Only: false }, () => process.stdout.write('listening\n'));
}

/** An IPv4 peer of a dual-stack socket as IPv4 ("::ffff:10.0.0.1" -> "10.0.0.1"), as the rest of the mesh writes it. */
function plainIp(ip: string | undefined): string {
  return ip?.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : (ip ?? '');
}

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, allowHalfOpen: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...a] = argv;
  switch (cmd) {
    case 'serve': {
      const greet = a.includes('--greet');
      // --peer-port: the greeting names the peer's port too ("to 10.0.0.1:40000", "to [fd00::1]:40000")
      const peerPort = a.includes('--peer-port');
      listen(Number(a[0]), (s) => {
        const peer = peerPort ? formatHostPort({ ip: plainIp(s.remoteAddress), port: s.remotePort ?? 0 }) : plainIp(s.remoteAddress);
        if (greet) s.write(`hello from ${formatHostPort({ ip: plainIp(s.localAddress), port: s.localPort ?? 0 })} to ${peer}\n`);
        s.pipe(s);
      });
      return;
    }
    case 'sink': {
      listen(Number(a[0]), (s) => {
        const h = crypto.createHash('sha256');
        let n = 0;
        s.on('data', (c: Buffer) => {
          n += c.length;
          h.update(c);
        });
        s.on('end', () => s.end(`${n} ${h.digest('hex')}\n`));
      });
      return;
    }
    case 'send': {
      const s = await connect(a[0]!, Number(a[1]));
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.end(a[2] ?? '');
      await new Promise<void>((r, j) => {
        s.on('close', () => r());
        s.on('error', j);
      });
      process.stdout.write(Buffer.concat(chunks));
      return;
    }
    case 'blob': {
      const total = Number(a[2]);
      const s = await connect(a[0]!, Number(a[1]));
      const h = crypto.createHash('sha256');
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      let sent = 0;
      const block = crypto.randomBytes(64 * 1024);
      while (sent < total) {
        const n = Math.min(block.length, total - sent);
        const b = block.subarray(0, n);
        h.update(b);
        sent += n;
        if (!s.write(b)) await new Promise((r) => s.once('drain', r));
      }
      s.end();
      await new Promise<void>((r, j) => {
        s.on('close', () => r());
        s.on('error', j);
      });
      process.stdout.write(`sent ${sent} ${h.digest('hex')}\nreceived ${Buffer.concat(chunks).toString().trim()}\n`);
      return;
    }
    case 'echo': {
      const total = Number(a[2]);
      const s = await connect(a[0]!, Number(a[1]));
      const sent = crypto.createHash('sha256');
      const got = crypto.createHash('sha256');
      let received = 0;
      s.on('data', (c: Buffer) => {
        received += c.length;
        got.update(c);
      });
      const done = new Promise<void>((r, j) => {
        s.on('end', () => r());
        s.on('error', j);
      });
      const block = crypto.randomBytes(64 * 1024);
      for (let n = 0; n < total;) {
        const b = block.subarray(0, Math.min(block.length, total - n));
        n += b.length;
        sent.update(b);
        if (!s.write(b)) await new Promise((r) => s.once('drain', r));
      }
      s.end();
      await done;
      const a1 = sent.digest('hex');
      const a2 = got.digest('hex');
      process.stdout.write(`${a1 === a2 && received === total ? 'ok' : 'MISMATCH'} ${received} ${a2}\n`);
      process.exit(a1 === a2 && received === total ? 0 : 1);
    }
    // falls through (exit above)
    case 'probe': {
      try {
        const s = await connect(a[0]!, Number(a[1]));
        s.destroy();
        process.exit(0);
      } catch (e) {
        process.stdout.write(`${(e as NodeJS.ErrnoException).code}\n`);
        process.exit(1);
      }
      return;
    }
    case 'hold': {
      const secs = Number(a[2]);
      const s = await connect(a[0]!, Number(a[1]));
      s.setNoDelay(true);
      let rounds = 0;
      let error: string | null = null;
      s.on('error', (e: NodeJS.ErrnoException) => {
        error = e.code ?? e.message;
      });
      s.on('close', () => {
        error = error ?? 'closed by peer';
      });
      const end = Date.now() + secs * 1000;
      let maxRttMs = 0;
      while (Date.now() < end && !error) {
        const msg = Buffer.from(`round ${rounds} `.padEnd(64, '.'));
        const t0 = Date.now();
        const ok = await new Promise<boolean>((resolve) => {
          let got = Buffer.alloc(0);
          const timer = setTimeout(() => {
            s.off('data', onData);
            resolve(false);
          }, 5000);
          const onData = (c: Buffer): void => {
            got = Buffer.concat([got, c]);
            if (got.length >= msg.length) {
              clearTimeout(timer);
              s.off('data', onData);
              resolve(got.subarray(0, msg.length).equals(msg));
            }
          };
          s.on('data', onData);
          s.write(msg);
        });
        if (!ok) {
          error = error ?? 'echo mismatch or timeout';
          break;
        }
        maxRttMs = Math.max(maxRttMs, Date.now() - t0);
        rounds++;
        await new Promise((r) => setTimeout(r, 50));
      }
      s.destroy();
      process.stdout.write(JSON.stringify({ rounds, error, maxRttMs }) + '\n');
      process.exit(error ? 1 : 0);
    }
    // falls through (exit above)
    case 'rate': {
      const [host, port, rate, secs] = [a[0]!, Number(a[1]), Number(a[2]), Number(a[3])];
      const total = Math.round(rate * secs);
      const t0 = Date.now();
      const errors: Record<string, number> = {};
      const failedAt: number[] = [];
      let ok = 0;
      let maxMs = 0;
      const one = async (): Promise<void> => {
        const start = Date.now();
        try {
          const s = await connect(host, port);
          await new Promise<void>((resolve, reject) => {
            s.once('data', () => {
              s.end();
              resolve();
            });
            s.once('error', reject);
            s.once('close', () => reject(Object.assign(new Error('closed'), { code: 'ECLOSED' })));
            setTimeout(() => reject(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })), 5000);
            s.write('x');
          });
          ok++;
          maxMs = Math.max(maxMs, Date.now() - start);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code ?? 'ERROR';
          errors[code] = (errors[code] ?? 0) + 1;
          failedAt.push(start - t0);
        }
      };
      const pending: Promise<void>[] = [];
      for (let i = 0; i < total; i++) {
        const due = t0 + (i * 1000) / rate;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        pending.push(one());
      }
      await Promise.all(pending);
      const failed = failedAt.length;
      const windowMs = failed ? Math.max(...failedAt) - Math.min(...failedAt) + Math.round(1000 / rate) : 0;
      process.stdout.write(
        JSON.stringify({
          attempted: total,
          ok,
          failed,
          errors,
          firstFailureMs: failed ? Math.min(...failedAt) : null,
          failedAtMs: failedAt.slice(0, 100),
          windowMs,
          maxConnectMs: maxMs,
          seconds: (Date.now() - t0) / 1000,
        }) + '\n',
      );
      process.exit(failed ? 1 : 0);
    }
    // falls through (exit above)
    case 'rr': {
      const n = Number(a[2]);
      const size = Number(a[3] ?? 1024);
      const s = await connect(a[0]!, Number(a[1]));
      s.setNoDelay(true);
      const payload = Buffer.alloc(size, 0x61);
      const lat: number[] = [];
      for (let i = 0; i < n; i++) {
        const t0 = process.hrtime.bigint();
        let got = 0;
        await new Promise<void>((resolve) => {
          const onData = (c: Buffer): void => {
            got += c.length;
            if (got >= size) {
              s.off('data', onData);
              resolve();
            }
          };
          s.on('data', onData);
          s.write(payload);
        });
        lat.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
      s.destroy();
      lat.sort((x, y) => x - y);
      const q = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!;
      process.stdout.write(JSON.stringify({ n, size, p50_us: q(0.5), p90_us: q(0.9), p99_us: q(0.99) }) + '\n');
      return;
    }
    default:
      process.stderr.write('usage: nettool serve|sink|send|blob|probe|rr ...\n');
      process.exit(2);
  }
}

main(process.argv.slice(2)).catch((e: NodeJS.ErrnoException) => {
  process.stderr.write(`nettool: ${e.code ?? ''} ${e.message}\n`);
  process.exit(1);
});
