// An HBONE peer holding a valid mesh certificate (the adversarial tests run it
// inside a sandbox pod): it opens one mutual-TLS HTTP/2 session to HOST:PORT
// and sends the given CONNECT requests on it, one after the other, printing
// one JSON line per request: {"authority", "status", "reason", "echo"}.
//
//   node hbone-peer.js CERTDIR HOST PORT REQUESTS_JSON
//   REQUESTS_JSON: [{ "authority": "10.244.2.2:8080", "headers": { "forwarded": "for=..." }, "send": "text", "times": 1 }]
// CERTDIR holds key.pem and cert.pem (the chain). The server's certificate is
// not checked: this peer attacks the server, it does not trust it.
import http2 from 'node:http2';
import fs from 'node:fs';
import path from 'node:path';

interface Req {
  authority: string;
  headers?: Record<string, string>;
  send?: string;
  times?: number;
}

const [certDir, host, portS, json] = process.argv.slice(2);
const reqs = JSON.parse(json!) as Req[];
const print = (o: unknown): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};

const session = http2.connect(`https://${host}:${portS}`, {
  key: fs.readFileSync(path.join(certDir!, 'key.pem')),
  cert: fs.readFileSync(path.join(certDir!, 'cert.pem')),
  ALPNProtocols: ['h2'],
  minVersion: 'TLSv1.3',
  servername: '',
  rejectUnauthorized: false,
  settings: { enablePush: false },
});
session.on('error', (e: NodeJS.ErrnoException) => {
  print({ sessionError: e.code ?? e.message });
  process.exit(1);
});

function one(r: Req): Promise<void> {
  return new Promise((resolve) => {
    const req = session.request({ ':method': 'CONNECT', ':authority': r.authority, ...(r.headers ?? {}) });
    let status = 0;
    let reason: string | null = null;
    let body = '';
    let finished = false;
    const done = (extra: Record<string, unknown> = {}): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      print({ authority: r.authority, status, reason, echo: body, ...extra });
      req.destroy();
      resolve();
    };
    const timer = setTimeout(() => done({ timeout: true }), 8000);
    req.on('response', (h) => {
      status = Number(h[':status']);
      reason = typeof h['x-hbone-reason'] === 'string' ? h['x-hbone-reason'] : null;
      if (status !== 200) return done();
      if (!r.send) return done();
      req.write(r.send);
    });
    req.on('data', (c: Buffer) => {
      body += c.toString();
      if (r.send && body.includes(r.send)) done();
    });
    req.on('error', (e: NodeJS.ErrnoException) => done({ error: e.code ?? e.message }));
    req.on('close', () => done());
  });
}

async function main(): Promise<void> {
  for (const r of reqs) for (let i = 0; i < (r.times ?? 1); i++) await one(r);
  session.close();
}
void main();
