// Run inside a sandbox pod by test/privileged/hbone.test.ts: talks to an
// agent's HBONE port the wrong way and prints what happened as JSON.
//   node bad-hbone-client.js MODE HOST PORT [CERTDIR]
//   MODE: garbage | truncated-hello | no-client-cert | foreign-cert
import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import fs from 'node:fs';
import path from 'node:path';

const [mode, host, portS, certDir] = process.argv.slice(2);
const port = Number(portS);
const print = (o: unknown): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};

function raw(bytes: Buffer): void {
  const s = net.connect(port, host!, () => s.write(bytes));
  let got = 0;
  s.on('data', (c: Buffer) => {
    got += c.length;
  });
  s.on('error', (e: NodeJS.ErrnoException) => print({ outcome: 'error', code: e.code, got }));
  s.on('close', () => print({ outcome: 'closed', got }));
  s.setTimeout(15_000, () => {
    print({ outcome: 'timeout', got });
    s.destroy();
  });
}

function h2(opts: tls.ConnectionOptions): void {
  const session = http2.connect(`https://${host}:${port}`, {
    ...opts,
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    servername: '',
    rejectUnauthorized: false,
  });
  session.on('error', (e: NodeJS.ErrnoException) => print({ outcome: 'session-error', code: e.code, message: e.message }));
  session.on('goaway', (code, _last, data) => print({ outcome: 'goaway', code, reason: data?.toString() }));
  const req = session.request({ ':method': 'CONNECT', ':authority': `${host}:8080` });
  req.on('response', (h) => {
    print({ outcome: 'response', status: h[':status'] });
    session.destroy();
  });
  req.on('error', (e: NodeJS.ErrnoException) => {
    print({ outcome: 'stream-error', code: e.code });
    session.destroy();
  });
  setTimeout(() => {
    print({ outcome: 'timeout' });
    session.destroy();
  }, 10_000).unref();
}

switch (mode) {
  case 'garbage':
    raw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\nthis is not TLS at all\x00\x01\x02'));
    break;
  case 'truncated-hello':
    // a TLS record header announcing a 512-byte ClientHello, then only 5 bytes of it
    raw(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03]));
    break;
  case 'no-client-cert':
    h2({});
    break;
  case 'foreign-cert':
    h2({ key: fs.readFileSync(path.join(certDir!, 'key.pem')), cert: fs.readFileSync(path.join(certDir!, 'cert.pem')) });
    break;
  default:
    process.stderr.write(`unknown mode ${mode}\n`);
    process.exit(2);
}
