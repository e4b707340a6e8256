// Floods an agent's HBONE port (run inside a sandbox pod by the chaos tests),
// printing one JSON summary line:
//   node hbone-flood.js streams CERTDIR HOST AUTHORITY N HOLD_MS [CONCURRENCY]
//       one mutual-TLS HTTP/2 session, N CONNECT streams, CONCURRENCY of them
//       in flight at a time (default N: all at once, the answered ones held);
//       {"statuses": {...}, "errors": {...}, "opened": n} after HOLD_MS
//   node hbone-flood.js handshakes HOST N HOLD_MS
//       N TCP connections to HOST:15008 that send a truncated ClientHello and
//       stall; {"closedEarly": n, "open": m} after HOLD_MS
import http2 from 'node:http2';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';

const [mode, ...a] = process.argv.slice(2);
const print = (o: unknown): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};
const count = (m: Record<string, number>, k: string): void => {
  m[k] = (m[k] ?? 0) + 1;
};

if (mode === 'streams') {
  const [certDir, host, authority, nS, holdS, concS] = a;
  const n = Number(nS);
  const hold = Number(holdS);
  const concurrency = Number(concS ?? n);
  const session = http2.connect(`https://${host}:15008`, {
    key: fs.readFileSync(path.join(certDir!, 'key.pem')),
    cert: fs.readFileSync(path.join(certDir!, 'cert.pem')),
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    servername: '',
    rejectUnauthorized: false,
    maxSessionMemory: 1000,
    peerMaxConcurrentStreams: 100_000,
  });
  const statuses: Record<string, number> = {};
  const errors: Record<string, number> = {};
  session.on('error', (e: NodeJS.ErrnoException) => count(errors, `session:${e.code ?? e.message}`));
  // the server may end an abusive session: report what happened until then
  session.on('close', () => {
    print({ statuses, errors, opened, sessionClosed: true });
    process.exit(0);
  });
  let opened = 0;
  let settled = 0;
  const held: http2.ClientHttp2Stream[] = [];
  const finish = (): void => {
    setTimeout(() => {
      print({ statuses, errors, opened });
      process.exit(0);
    }, hold);
  };
  // keeps `concurrency` streams in flight; an answered one is closed (or, with
  // concurrency == n, held) and the next one opened, until n were opened
  const next = (): void => {
    if (opened >= n || session.destroyed) return;
    opened++;
    let req: http2.ClientHttp2Stream;
    try {
      req = session.request({ ':method': 'CONNECT', ':authority': authority! });
    } catch (e) {
      count(errors, (e as NodeJS.ErrnoException).code ?? 'request');
      settle(false, null);
      return;
    }
    let seen = false;
    const settleOnce = (ok: boolean): void => {
      if (!seen) {
        seen = true;
        settle(ok, req);
      }
    };
    req.on('response', (h) => {
      count(statuses, String(h[':status']));
      settleOnce(true);
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      count(errors, e.code ?? e.message);
      settleOnce(false);
    });
    req.on('close', () => {
      if (!seen) count(errors, `closed:${req.rstCode}`);
      settleOnce(false);
    });
  };
  const settle = (_ok: boolean, req: http2.ClientHttp2Stream | null): void => {
    settled++;
    if (req) {
      if (concurrency >= n) held.push(req);
      else req.destroy();
    }
    if (settled === n) finish();
    else next();
  };
  session.once('connect', () => {
    for (let i = 0; i < Math.min(concurrency, n); i++) next();
  });
  setTimeout(() => {
    print({ statuses, errors, opened, timeout: true });
    process.exit(0);
  }, 110_000).unref();
} else if (mode === 'handshakes') {
  const [host, nS, holdS] = a;
  const n = Number(nS);
  let closedEarly = 0;
  const socks: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect(15008, host!, () => s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])));
    s.on('error', () => {});
    s.on('close', () => {
      closedEarly++;
    });
    socks.push(s);
  }
  setTimeout(() => {
    print({ closedEarly, open: socks.filter((s) => !s.destroyed).length });
    for (const s of socks) s.destroy();
    process.exit(0);
  }, Number(holdS));
} else {
  process.stderr.write('usage: hbone-flood.js streams CERTDIR HOST AUTHORITY N HOLD_MS | handshakes HOST N HOLD_MS\n');
  process.exit(2);
}
