/**
 * HTTP/1.1 CONNECT backend for the benchmark's nghttpx tunnel, run by
 * bench/hbone.ts in the destination pod next to nghttpx:
 *
 *   node dist/bench/connect-proxy.js LISTEN_IP PORT ALLOWED_IP
 *
 * nghttpx in --http2-proxy mode does not dial CONNECT targets itself: it
 * forwards every CONNECT request to its backend, an HTTP/1.1 forward proxy
 * (Squid in nghttpx's docs). This is the smallest such proxy: it reads the
 * request head, connects to ALLOWED_IP:<port> (any other host is refused),
 * answers "200 Connection Established" and pipes both ways with half-close,
 * as the agent's HBONE server does with its app socket (noDelay on the
 * upstream, like HboneServer#splice).
 *
 * stdout: "listening" once bound.
 */
import net from 'node:net';

const [listenIp = '127.0.0.1', portArg = '3128', allowed = ''] = process.argv.slice(2);

const server = net.createServer({ allowHalfOpen: true }, (down) => {
  down.on('error', () => undefined);
  let head: Buffer = Buffer.alloc(0);
  const onData = (d: Buffer): void => {
    head = head.length ? Buffer.concat([head, d]) : d;
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) {
      if (head.length > 8192) down.destroy();
      return;
    }
    down.off('data', onData);
    down.pause();
    const m = /^CONNECT ([0-9.]+):(\d+) HTTP\/1\.[01]\r\n/.exec(head.subarray(0, end).toString('latin1'));
    if (!m || m[1] !== allowed) {
      down.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const rest = head.subarray(end + 4);
    const up = net.connect({ host: m[1], port: Number(m[2]), allowHalfOpen: true, noDelay: true });
    up.on('error', () => {
      if (!down.destroyed) down.resetAndDestroy();
    });
    up.once('connect', () => {
      down.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (rest.length) up.write(rest);
      down.pipe(up);
      up.pipe(down);
      down.resume();
    });
    down.once('close', () => {
      if (!up.destroyed && !up.writableEnded) up.destroy();
    });
  };
  down.on('data', onData);
});
server.listen(Number(portArg), listenIp, () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => process.exit(0));
