/**
 * Client end of the benchmark's nghttpx tunnel, run inside a plain pod by
 * bench/hbone.ts:
 *
 *   node dist/bench/h2fwd.js LISTEN_IP PORTS PROXY_IP:PROXY_PORT TARGET_IP \
 *        SRC_ID DST_ID KEY_PEM CERT_PEM ROOT_PEM
 *
 * Listens on LISTEN_IP:<p> for every p in PORTS (e.g. "5301-5304,11311");
 * each accepted TCP connection becomes one HTTP/2 CONNECT stream to
 * TARGET_IP:<p> over a pooled mTLS 1.3 h2 connection to PROXY_IP:PROXY_PORT
 * (nghttpx --http2-proxy). It turns a plain TCP connection into a CONNECT
 * stream, which nghttpx itself cannot: its frontends speak HTTP only.
 *
 * It is deliberately the agent's own outbound code minus the capture: the
 * HBONE client pool (src/proxy/hbone/client.ts: TLS 1.3 only, ALPN h2,
 * client certificate, server URI SAN = DST_ID, 4 MiB stream / 16 MiB
 * connection windows, 1 MiB max frame, <= 100 streams per connection) and
 * spliceStreamSocket (src/proxy/hbone/tunnel.ts), so that the client hop is
 * the same on both paths and the comparison is about the server side.
 *
 * stdout: "listening" once every port is bound; one line per failed tunnel.
 */
import fs from 'node:fs';
import net from 'node:net';
import { HbonePool } from '../src/proxy/hbone/client.js';
import { spliceStreamSocket, resetSocket } from '../src/proxy/hbone/tunnel.js';

const [listenIp, portsArg, proxyArg, targetIp, srcId, dstId, keyFile, certFile, rootFile] = process.argv.slice(2);
if (!listenIp || !portsArg || !proxyArg || !targetIp || !srcId || !dstId || !keyFile || !certFile || !rootFile) {
  process.stderr.write('usage: h2fwd LISTEN_IP PORTS PROXY_IP:PROXY_PORT TARGET_IP SRC_ID DST_ID KEY CERT ROOT\n');
  process.exit(2);
}

function parsePorts(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let p = a!; p <= (b ?? a!); p++) out.push(p);
  }
  return out;
}

const [proxyIp, proxyPort] = [proxyArg.slice(0, proxyArg.lastIndexOf(':')), Number(proxyArg.slice(proxyArg.lastIndexOf(':') + 1))];
const cert = { key: fs.readFileSync(keyFile, 'utf8'), cert: fs.readFileSync(certFile, 'utf8'), ca: fs.readFileSync(rootFile, 'utf8') };
const pool = new HbonePool({ getClientCert: () => cert });
let failures = 0;

function onConnection(client: net.Socket, port: number): void {
  client.on('error', () => undefined);
  // Like the agent's captured sockets (mesh.ts onOutbound): Nagle left on.
  client.pause();
  pool
    .connect({
      srcId: srcId!,
      dstId: dstId!,
      dstAddr: { ip: proxyIp!, port: proxyPort },
      target: { ip: targetIp!, port },
      headers: { forwardedFor: { ip: client.remoteAddress ?? '127.0.0.1', port: client.remotePort ?? 0 } },
    })
    .then(
      (stream) => {
        if (client.destroyed) {
          stream.destroy();
          return;
        }
        spliceStreamSocket(stream, client);
        client.resume();
      },
      (e: Error) => {
        failures++;
        process.stdout.write(`tunnel failed (${failures}): ${e.message}\n`);
        resetSocket(client);
      },
    );
}

const ports = parsePorts(portsArg);
let bound = 0;
for (const port of ports) {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => onConnection(s, port));
  srv.on('error', (e) => {
    process.stderr.write(`h2fwd: ${listenIp}:${port}: ${e.message}\n`);
    process.exit(1);
  });
  srv.listen(port, listenIp, () => {
    if (++bound === ports.length) process.stdout.write('listening\n');
  });
}
process.on('SIGTERM', () => process.exit(0));
