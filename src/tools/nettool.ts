/**
 * A small TCP tool run inside sandbox pods by the demo, tests and benchmarks:
 *
 *   nettool serve PORT [--greet]      echo server; --greet speaks first ("hello from <ip>:<port>")
 *   nettool sink PORT                 reads everything, answers "<bytes> <sha256>" on EOF
 *   nettool send HOST PORT TEXT       sends TEXT, half-closes, prints the reply
 *   nettool blob HOST PORT BYTES      sends BYTES pseudo-random bytes to a sink, prints "<bytes> <sha256>" sent and received
 *   nettool echo HOST PORT BYTES      sends BYTES random bytes to `serve` (no --greet) while reading the echo; prints "ok <bytes> <sha256>" if identical
 *   nettool probe HOST PORT           exit 0 if a TCP connection is accepted, 1 if refused/failed
 *   nettool rr HOST PORT N SIZE       N request/response round trips of SIZE bytes against `serve`, prints latency JSON
 *
 * Servers print "listening" on stdout once ready.
 */
import net from 'node:net';
import crypto from 'node:crypto';

function listen(port: number, onConn: (s: net.Socket) => void): void {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => s.destroy());
    onConn(s);
  });
  srv.listen(port, '0.0.0.0', () => process.stdout.write('listening\n'));
}

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, allowHalfOpen: true });
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...a] = argv;
  switch (cmd) {
    case 'serve': {
      const greet = a.includes('--greet');
      listen(Number(a[0]), (s) => {
        if (greet) s.write(`hello from ${s.localAddress}:${s.localPort} to ${s.remoteAddress}\n`);
        s.pipe(s);
      });
      return;
    }
    case 'sink': {
      listen(Number(a[0]), (s) => {
        const h = crypto.createHash('sha256');
        let n = 0;
        s.on('data', (c: Buffer) => { n += c.length; h.update(c); });
        s.on('end', () => s.end(`${n} ${h.digest('hex')}\n`));
      });
      return;
    }
    case 'send': {
      const s = await connect(a[0]!, Number(a[1]));
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.end(a[2] ?? '');
      await new Promise<void>((r, j) => { s.on('close', () => r()); s.on('error', j); });
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
      await new Promise<void>((r, j) => { s.on('close', () => r()); s.on('error', j); });
      process.stdout.write(`sent ${sent} ${h.digest('hex')}\nreceived ${Buffer.concat(chunks).toString().trim()}\n`);
      return;
    }
    case 'echo': {
      const total = Number(a[2]);
      const s = await connect(a[0]!, Number(a[1]));
      const sent = crypto.createHash('sha256');
      const got = crypto.createHash('sha256');
      let received = 0;
      s.on('data', (c: Buffer) => { received += c.length; got.update(c); });
      const done = new Promise<void>((r, j) => { s.on('end', () => r()); s.on('error', j); });
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
            if (got >= size) { s.off('data', onData); resolve(); }
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
