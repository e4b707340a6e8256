// HBONE server and client over loopback (src/proxy/hbone/): the data path,
// half-close and resets, peer identities and rejections, abandoned streams,
// idle sessions and PING, interop with nghttpx. Over 500 lines on purpose:
// every case shares one fixture (a CA, an HBONE server, a client pool and the
// applications behind the tunnel), built once in before().
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as http2 from 'node:http2';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';

import { CertificateAuthority } from '../../../../src/identity/ca.js';
import { IdentityManager } from '../../../../src/identity/manager.js';
import { createHboneServer, type HboneServer, type HboneServerEvent } from '../../../../src/proxy/hbone/server.js';
import { HbonePool, type ClientCert } from '../../../../src/proxy/hbone/client.js';
import { HboneError, GOAWAY_REJECT_CODE } from '../../../../src/proxy/hbone/common.js';
import { spliceStreamSocket } from '../../../../src/proxy/hbone/tunnel.js';

const LO = '127.0.0.1';
const TD = 'cluster.local';
const SRV_ID = 'spiffe://cluster.local/ns/apps/sa/server';
const CLI_ID = 'spiffe://cluster.local/ns/clients/sa/client';
const NG_ID = 'spiffe://cluster.local/ns/interop/sa/nghttpx';

// ----------------------------------------------------------------- helpers

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

function readN(s: Duplex, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let len = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      len += c.length;
      if (len >= n) {
        s.off('data', onData);
        s.off('error', reject);
        s.pause();
        resolve(Buffer.concat(chunks));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

async function waitFor(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves with the event's first argument; rejects with `what` after a timeout. */
function onceEvent<T = unknown>(em: NodeJS.EventEmitter, ev: string, what: string, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      em.off(ev, on);
      reject(new Error(`timed out waiting for ${what} (${ev})`));
    }, timeoutMs);
    const on = (v: T): void => {
      clearTimeout(t);
      resolve(v);
    };
    em.once(ev, on);
  });
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LO, () => resolve((server.address() as net.AddressInfo).port));
  });
}

const liveSockets = new WeakMap<net.Server, Set<net.Socket>>();
/** Records accepted sockets so cleanup can destroy stragglers. */
function track(server: net.Server): net.Server {
  const set = new Set<net.Socket>();
  liveSockets.set(server, set);
  server.on('connection', (s: net.Socket) => {
    set.add(s);
    s.once('close', () => set.delete(s));
  });
  return server;
}

function closeServer(server: net.Server): Promise<void> {
  for (const s of liveSockets.get(server) ?? []) s.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  const p = await listen(s);
  await closeServer(s);
  return p;
}

function connectionCount(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

async function openFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

/** Sockets in CLOSE_WAIT whose local port is one of `ports`. */
async function closeWait(ports: number[]): Promise<number> {
  let n = 0;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = await readFile(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4) continue;
      const port = parseInt(cols[1]!.split(':')[1]!, 16);
      if (cols[3] === '08' && ports.includes(port)) n++;
    }
  }
  return n;
}

/** The first flight (ClientHello) a real TLS 1.3 client sends. */
async function captureClientHello(): Promise<Buffer> {
  const sink = net.createServer();
  const port = await listen(sink);
  try {
    const got = new Promise<Buffer>((resolve) =>
      sink.once('connection', (s) =>
        s.once('data', (d: Buffer) => {
          s.destroy();
          resolve(d);
        }),
      ),
    );
    const c = tls.connect({ host: LO, port, ALPNProtocols: ['h2'], servername: '', rejectUnauthorized: false });
    c.on('error', () => undefined);
    const hello = await got;
    c.destroy();
    return hello;
  } finally {
    await closeServer(sink);
  }
}

// ----------------------------------------------------------------- fixture

describe('HBONE over loopback', () => {
  let tmp: string;
  let ca: CertificateAuthority;
  let mgr: IdentityManager;
  let server: HboneServer;
  let hbPort: number;
  let pool: HbonePool;
  const events: HboneServerEvent[] = [];
  const authorizeSeen: string[] = [];
  const targets: net.Server[] = [];
  let echoSrv: net.Server;
  let echoPort: number;
  let bannerPort: number;
  let halfPort: number;
  let finFirstPort: number;
  const finFirstGot: string[] = [];
  let resetSrvSockets: net.Socket[];
  let resetPort: number;

  const certFor = async (id: string): Promise<ClientCert> => {
    const c = await mgr.get(id);
    return { key: c.keyPem, cert: c.chainPem, ca: c.rootPem, notAfter: c.notAfter };
  };
  const open = (target: number | { ip: string; port: number }, p: HbonePool = pool, extra: { baggage?: string } = {}) =>
    p.connect({
      srcId: CLI_ID,
      dstId: SRV_ID,
      dstAddr: { ip: LO, port: hbPort },
      target: typeof target === 'number' ? { ip: LO, port: target } : target,
      headers: { forwardedFor: { ip: LO, port: 40000 }, baggage: extra.baggage ?? 'k8s.namespace.name=clients' },
    });
  const rejections = (r: string): number => (server.stats().rejections as Record<string, number>)[r] ?? 0;
  const assertServes = async (): Promise<void> => {
    const s = await open(echoPort);
    s.end('still-alive');
    assert.equal((await readAll(s)).toString(), 'still-alive');
  };

  before(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'ambientd-hbone-test-'));
    ca = await CertificateAuthority.createInMemory({ trustDomain: TD });
    mgr = new IdentityManager({ issuer: ca });

    // Applications behind the tunnel.
    echoSrv = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    targets.push(track(echoSrv));
    echoPort = await listen(echoSrv);

    const banner = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined);
      s.write('220 server speaks first\r\n');
      s.pipe(s);
    });
    targets.push(track(banner));
    bannerPort = await listen(banner);

    const half = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined);
      let n = 0;
      s.on('data', (d: Buffer) => (n += d.length));
      s.on('end', () => {
        // The client already closed its side; we keep talking.
        s.write(`got ${n} bytes;`);
        setTimeout(() => s.end('bye after your FIN'), 50);
      });
    });
    targets.push(track(half));
    halfPort = await listen(half);

    const finFirst = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => undefined);
      s.end('server done talking;');
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('end', () => finFirstGot.push(got));
    });
    targets.push(track(finFirst));
    finFirstPort = await listen(finFirst);

    resetSrvSockets = [];
    const resetter = net.createServer({ allowHalfOpen: true }, (s) => {
      resetSrvSockets.push(s);
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => {
        if (d.toString().includes('RST-ME')) s.resetAndDestroy();
        else s.write(d);
      });
    });
    targets.push(track(resetter));
    resetPort = await listen(resetter);

    server = createHboneServer({
      trustDomain: TD,
      getServerCert: async (localAddress) => {
        assert.equal(localAddress, LO);
        const c = await mgr.get(SRV_ID);
        return { key: c.keyPem, cert: c.chainPem, ca: c.rootPem };
      },
      authorize: (peer, _target, ctx) => {
        authorizeSeen.push(peer.id);
        return ctx.baggage?.includes('deny=1') ? 'deny' : 'allow';
      },
      onConnection: (e) => events.push(e),
    });
    hbPort = (await server.listen({ host: LO, port: 0 })).port;
    pool = new HbonePool({ getClientCert: certFor, rootPem: ca.rootPem });
  });

  after(async () => {
    await pool?.close({ force: true });
    await server?.close({ graceMs: 500 });
    for (const t of targets) await closeServer(t);
    mgr?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  // ----------------------------------------------------------------- data path

  it('tunnels 1 MiB both ways intact and reports the peer identity and headers', { timeout: 30_000 }, async () => {
    const payload = randomBytes(1 << 20);
    const s = await open(echoPort);
    const tp = (s as unknown as { hbone: { traceparent: string; peerId: string } }).hbone;
    assert.match(tp.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    assert.equal(tp.peerId, SRV_ID);
    const back = readAll(s);
    s.end(payload);
    const got = await back;
    assert.equal(got.length, payload.length);
    assert.equal(sha256(got), sha256(payload));

    const open_ = events.find((e) => e.type === 'tunnel_open' && e.ctx.traceparent === tp.traceparent);
    assert.ok(open_ && open_.type === 'tunnel_open');
    assert.equal(open_.ctx.peer.id, CLI_ID);
    assert.equal(open_.ctx.peer.namespace, 'clients');
    assert.equal(open_.ctx.forwarded, `for="${LO}:40000"`);
    assert.equal(open_.ctx.baggage, 'k8s.namespace.name=clients');
    assert.deepEqual(open_.ctx.target, { ip: LO, port: echoPort });
    assert.ok(authorizeSeen.includes(CLI_ID));
    await waitFor(() => events.some((e) => e.type === 'tunnel_close' && e.ctx.traceparent === tp.traceparent), 'tunnel_close event');
    const closed = events.find((e) => e.type === 'tunnel_close' && e.ctx.traceparent === tp.traceparent);
    assert.ok(closed && closed.type === 'tunnel_close');
    assert.equal(closed.bytesFromClient, payload.length);
    assert.equal(closed.bytesToClient, payload.length);
    assert.equal(closed.resetBy, undefined);
  });

  it('carries a server-speaks-first protocol', { timeout: 10_000 }, async () => {
    const s = await open(bannerPort);
    const first = await readN(s, 25);
    assert.equal(first.toString(), '220 server speaks first\r\n');
    s.resume();
    const rest = readAll(s);
    s.end('QUIT\r\n');
    assert.equal((await rest).toString(), 'QUIT\r\n');
  });

  it('propagates half-close: client ends, server keeps sending', { timeout: 10_000 }, async () => {
    const s = await open(halfPort);
    const all = readAll(s);
    s.write('abc');
    s.end('defg');
    assert.equal((await all).toString(), 'got 7 bytes;bye after your FIN');
  });

  it('propagates half-close: server ends first, client keeps sending', { timeout: 10_000 }, async () => {
    const s = await open(finFirstPort);
    const closed = new Promise((r) => s.once('close', r));
    assert.equal((await readAll(s)).toString(), 'server done talking;');
    s.write('late data ');
    s.end('after your FIN');
    await waitFor(() => finFirstGot.length === 1, 'application received data after its FIN');
    assert.equal(finFirstGot[0], 'late data after your FIN');
    await closed;
    assert.equal((s as unknown as http2.ClientHttp2Stream).rstCode, http2.constants.NGHTTP2_NO_ERROR);
  });

  it('propagates resets both ways', { timeout: 10_000 }, async () => {
    // client reset -> application sees RST
    const before = resetSrvSockets.length;
    const s1 = await open(resetPort);
    s1.write('hello');
    await readN(s1, 5);
    const appSock = resetSrvSockets[before]!;
    const appErr = new Promise<NodeJS.ErrnoException>((resolve) => appSock.once('error', resolve));
    s1.destroy();
    assert.equal((await appErr).code, 'ECONNRESET');

    // application reset -> client sees RST_STREAM(CONNECT_ERROR), not a clean end
    const s2 = await open(resetPort);
    let ended = false;
    s2.on('end', () => (ended = true));
    const err = new Promise<Error>((resolve) => s2.once('error', resolve));
    const closed = new Promise<void>((resolve) => s2.once('close', () => resolve()));
    s2.write('RST-ME');
    assert.match((await err).message, /CONNECT_ERROR/);
    await closed;
    assert.equal((s2 as unknown as http2.ClientHttp2Stream).rstCode, http2.constants.NGHTTP2_CONNECT_ERROR);
    assert.equal(ended, false);
    await waitFor(() => server.stats().streams.active === 0 && server.stats().streams.upstreamsOpen === 0, 'streams drained');
    const resets = events.filter((e) => e.type === 'tunnel_close' && e.ctx.target.port === resetPort).map((e) => (e.type === 'tunnel_close' ? e.resetBy : ''));
    assert.deepEqual(resets.sort(), ['client', 'upstream']);
  });

  it('joins an application socket with an HboneStream (spliceStreamSocket)', { timeout: 10_000 }, async () => {
    // What the agent does on the outbound side: app socket <-> tunnel.
    const front = net.createServer({ allowHalfOpen: true }, async (app) => {
      const s = await open(echoPort);
      spliceStreamSocket(s, app);
    });
    targets.push(track(front));
    const frontPort = await listen(front);
    const c = net.connect({ host: LO, port: frontPort, allowHalfOpen: true });
    const payload = randomBytes(256 * 1024);
    const got = readAll(c);
    c.end(payload);
    assert.equal(sha256(await got), sha256(payload));
  });

  it('serves sockets from an attached net.Server and from handle(); client uses createSocket', { timeout: 10_000 }, async () => {
    // The agent hands over listeners created in a pod netns (attach) or single sockets (handle).
    const ext = track(net.createServer());
    targets.push(ext);
    const extPort = await listen(ext);
    const detach = server.attach(ext);
    // handed over late: the ClientHello is already waiting in the socket
    const viaHandle = track(net.createServer((s) => void setTimeout(() => server.handle(s), 150)));
    targets.push(viaHandle);
    const handlePort = await listen(viaHandle);
    const dialed: string[] = [];
    const p2 = new HbonePool({
      getClientCert: certFor,
      rootPem: ca.rootPem,
      createSocket: (dst, info) => {
        dialed.push(`${info.srcId}->${info.dstId}@${dst.ip}:${dst.port}`);
        return net.connect({ host: dst.ip, port: dst.port });
      },
    });
    try {
      for (const port of [extPort, handlePort]) {
        const s = await p2.connect({ srcId: CLI_ID, dstId: SRV_ID, dstAddr: { ip: LO, port }, target: { ip: LO, port: echoPort } });
        const back = readAll(s);
        s.end(`via ${port}`);
        assert.equal((await back).toString(), `via ${port}`);
      }
      assert.deepEqual(dialed, [`${CLI_ID}->${SRV_ID}@${LO}:${extPort}`, `${CLI_ID}->${SRV_ID}@${LO}:${handlePort}`]);
      await assert.rejects(
        p2.connect({ srcId: 'not-spiffe', dstId: SRV_ID, dstAddr: { ip: LO, port: extPort }, target: { ip: LO, port: echoPort } }),
        (e: unknown) => e instanceof HboneError && e.code === 'HBONE_BAD_ARGUMENT',
      );
      await assert.rejects(
        p2.connect({ srcId: CLI_ID, dstId: SRV_ID, dstAddr: { ip: 'localhost', port: extPort }, target: { ip: LO, port: echoPort } }),
        (e: unknown) => e instanceof HboneError && e.code === 'HBONE_BAD_ARGUMENT',
      );
      // A socket factory that never delivers: bounded by connectTimeoutMs, nothing left behind.
      const p3 = new HbonePool({ getClientCert: certFor, createSocket: () => new Promise<net.Socket>(() => undefined), connectTimeoutMs: 200 });
      await assert.rejects(
        p3.connect({ srcId: CLI_ID, dstId: SRV_ID, dstAddr: { ip: LO, port: extPort }, target: { ip: LO, port: echoPort } }),
        (e: unknown) => e instanceof HboneError && e.code === 'HBONE_TIMEOUT',
      );
      await waitFor(() => p3.stats().sessions === 0, 'abandoned session dropped from the pool');
      await p3.close();
    } finally {
      detach();
      await p2.close({ force: true });
    }
    await assertServes();
  });

  // ----------------------------------------------------------------- rejections

  it('rejects a client without a certificate (GOAWAY with reason)', { timeout: 10_000 }, async () => {
    const n0 = rejections('no_client_cert');
    const sock = tls.connect({ host: LO, port: hbPort, ca: ca.rootPem, ALPNProtocols: ['h2'], servername: '', checkServerIdentity: () => undefined });
    sock.on('error', () => undefined);
    await new Promise((r) => sock.once('secureConnect', r));
    const sess = http2.connect(`https://${LO}:${hbPort}`, { createConnection: () => sock });
    sess.on('error', () => undefined);
    const goaway = new Promise<[number, string]>((resolve) => sess.once('goaway', (code, _l, data?: Buffer) => resolve([code, data?.toString() ?? ''])));
    const st = sess.request({ ':method': 'CONNECT', ':authority': `${LO}:${echoPort}` });
    st.on('error', () => undefined);
    const [code, data] = await goaway;
    assert.equal(code, GOAWAY_REJECT_CODE);
    assert.match(data, /no_client_cert/);
    await new Promise((r) => sess.once('close', r));
    assert.equal(rejections('no_client_cert'), n0 + 1);
    await assertServes();
  });

  it('rejects a client from another trust domain', { timeout: 10_000 }, async () => {
    const other = await CertificateAuthority.createInMemory({ trustDomain: 'other.domain' });
    const m2 = new IdentityManager({ issuer: other });
    const p2 = new HbonePool({
      rootPem: ca.rootPem,
      getClientCert: async (id) => {
        const c = await m2.get(id);
        return { key: c.keyPem, cert: c.chainPem };
      },
    });
    try {
      const n0 = rejections('bad_trust_domain');
      await assert.rejects(
        p2.connect({ srcId: 'spiffe://other.domain/ns/x/sa/y', dstId: SRV_ID, dstAddr: { ip: LO, port: hbPort }, target: { ip: LO, port: echoPort } }),
        (e: unknown) => e instanceof HboneError && e.code === 'HBONE_TLS' && e.reason === 'bad_trust_domain',
      );
      assert.equal(rejections('bad_trust_domain'), n0 + 1);
    } finally {
      await p2.close({ force: true });
      m2.close();
    }
    await assertServes();
  });

  it('rejects an expired client certificate', { timeout: 10_000 }, async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Date.now();
    const expired = await ca.issue({
      spiffeId: CLI_ID,
      publicKey,
      notBefore: new Date(now - 50 * 60_000),
      notAfter: new Date(now - 10 * 60_000),
    });
    const p2 = new HbonePool({
      rootPem: ca.rootPem,
      getClientCert: () => ({ key: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, cert: expired.chainPem }),
    });
    try {
      const n0 = rejections('cert_expired');
      await assert.rejects(open(echoPort, p2), (e: unknown) => e instanceof HboneError && e.code === 'HBONE_TLS' && e.reason === 'cert_expired');
      assert.equal(rejections('cert_expired'), n0 + 1);
    } finally {
      await p2.close({ force: true });
    }
    await assertServes();
  });

  it('client rejects a server whose URI SAN is not the expected identity', { timeout: 10_000 }, async () => {
    await assert.rejects(
      pool.connect({
        srcId: CLI_ID,
        dstId: 'spiffe://cluster.local/ns/apps/sa/someone-else',
        dstAddr: { ip: LO, port: hbPort },
        target: { ip: LO, port: echoPort },
      }),
      (e: unknown) => e instanceof HboneError && e.code === 'HBONE_TLS' && e.reason === 'san_mismatch',
    );
    // A server from a foreign root fails chain verification.
    const foreign = await CertificateAuthority.createInMemory({ trustDomain: TD });
    const p2 = new HbonePool({
      getClientCert: async (id) => ({ ...(await certFor(id)), ca: foreign.rootPem }),
    });
    try {
      await assert.rejects(open(echoPort, p2), (e: unknown) => e instanceof HboneError && e.code === 'HBONE_TLS');
    } finally {
      await p2.close({ force: true });
    }
    await assertServes();
  });

  async function rawSession(): Promise<http2.ClientHttp2Session> {
    const c = await mgr.get(CLI_ID);
    const sock = tls.connect({
      host: LO,
      port: hbPort,
      key: c.keyPem,
      cert: c.chainPem,
      ca: c.rootPem,
      ALPNProtocols: ['h2'],
      servername: '',
      checkServerIdentity: () => undefined,
    });
    sock.on('error', () => undefined);
    await new Promise((r) => sock.once('secureConnect', r));
    const sess = http2.connect(`https://${LO}:${hbPort}`, { createConnection: () => sock });
    sess.on('error', () => undefined);
    return sess;
  }
  function statusOf(sess: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<{ status: number; reason: string }> {
    return new Promise((resolve, reject) => {
      const st = sess.request(headers, { endStream: headers[':method'] !== 'CONNECT' });
      st.on('error', reject);
      st.once('response', (h) => {
        resolve({ status: Number(h[':status']), reason: String(h['x-hbone-reason'] ?? '') });
        st.close();
      });
    });
  }

  it('answers 400 to non-CONNECT requests and bad or foreign authorities', { timeout: 10_000 }, async () => {
    const n = (r: string): number => rejections(r);
    const [nc, ba, am] = [n('not_connect'), n('bad_authority'), n('authority_mismatch')];
    const sess = await rawSession();
    try {
      // ztunnel flow-control settings as advertised by the server
      await waitFor(() => sess.remoteSettings.maxFrameSize === 1 << 20, 'server SETTINGS');
      assert.equal(sess.remoteSettings.initialWindowSize, 4 << 20);
      assert.equal(sess.remoteSettings.maxConcurrentStreams, 100);
      await new Promise((r) => sess.ping(r));
      assert.equal(sess.state.remoteWindowSize, 16 << 20, 'connection window 16 MiB');
      assert.deepEqual(await statusOf(sess, { ':method': 'GET', ':path': '/' }), { status: 400, reason: 'not_connect' });
      assert.deepEqual(await statusOf(sess, { ':method': 'POST', ':path': '/x' }), { status: 400, reason: 'not_connect' });
      for (const bad of ['example.com:80', `${LO}:0`, `${LO}:99999`, `${LO}`, `${LO}:http`]) {
        assert.deepEqual(await statusOf(sess, { ':method': 'CONNECT', ':authority': bad }), { status: 400, reason: 'bad_authority' }, bad);
      }
    } finally {
      sess.close();
    }
    // 127.0.0.2 is only a header value here: the connection arrived on 127.0.0.1, so it must be refused.
    await assert.rejects(
      open({ ip: '127.0.0.2', port: echoPort }),
      (e: unknown) => e instanceof HboneError && e.code === 'HBONE_BAD_REQUEST' && e.status === 400 && e.reason === 'authority_mismatch',
    );
    assert.equal(n('not_connect'), nc + 2);
    assert.equal(n('bad_authority'), ba + 5);
    assert.equal(n('authority_mismatch'), am + 1);
    await assertServes();
  });

  it('answers 401 when policy denies and 503 when the target refuses', { timeout: 10_000 }, async () => {
    const d0 = rejections('denied');
    await assert.rejects(open(echoPort, pool, { baggage: 'deny=1' }), (e: unknown) => e instanceof HboneError && e.code === 'HBONE_DENIED' && e.status === 401);
    assert.equal(rejections('denied'), d0 + 1);

    const u0 = rejections('upstream_unreachable');
    const closedPort = await freePort();
    await assert.rejects(open(closedPort), (e: unknown) => e instanceof HboneError && e.code === 'HBONE_UNAVAILABLE' && e.status === 503);
    assert.equal(rejections('upstream_unreachable'), u0 + 1);
    await assertServes();
  });

  it('survives garbage, truncated handshakes, stalls, wrong ALPN/TLS version and a bad HTTP/2 preface', { timeout: 20_000 }, async () => {
    // garbage bytes
    const t0 = rejections('tls_error');
    const g = net.connect({ host: LO, port: hbPort });
    g.on('error', () => undefined);
    await onceEvent(g, 'connect', 'garbage connect');
    // Starts with bytes no TLS record can start with, so the server can tell at once.
    // (Random bytes may parse as a long record header; those wait for the handshake timeout, tested below.)
    g.write(Buffer.concat([Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), randomBytes(4096)]));
    await onceEvent(g, 'close', 'server closing the garbage connection');
    await waitFor(() => rejections('tls_error') === t0 + 1, 'garbage counted as tls_error');

    // truncated ClientHello, then FIN
    const hello = await captureClientHello();
    assert.equal(hello[0], 0x16, 'TLS handshake record');
    const t = net.connect({ host: LO, port: hbPort });
    t.on('error', () => undefined);
    await onceEvent(t, 'connect', 'truncated connect');
    t.end(hello.subarray(0, Math.floor(hello.length / 2)));
    await onceEvent(t, 'close', 'server closing the truncated connection');
    await waitFor(() => rejections('tls_error') === t0 + 2, 'truncated handshake counted');

    // stalled handshake hits the handshake timeout (separate server with a short one)
    const quick = createHboneServer({
      trustDomain: TD,
      handshakeTimeoutMs: 300,
      getServerCert: async () => {
        const c = await mgr.get(SRV_ID);
        return { key: c.keyPem, cert: c.chainPem, ca: c.rootPem };
      },
    });
    try {
      const qp = (await quick.listen({ host: LO, port: 0 })).port;
      const st = net.connect({ host: LO, port: qp });
      st.on('error', () => undefined);
      await onceEvent(st, 'connect', 'stall connect');
      st.write(hello.subarray(0, 20));
      await onceEvent(st, 'close', 'handshake timeout closing the stalled connection');
      assert.equal(quick.stats().rejections.tls_timeout, 1);
      await waitFor(() => quick.stats().connections.open === 0, 'stalled socket closed by the server');
    } finally {
      await quick.close({ graceMs: 100 });
    }

    const c = await mgr.get(CLI_ID);
    const tlsOpts = { host: LO, port: hbPort, key: c.keyPem, cert: c.chainPem, ca: c.rootPem, servername: '', checkServerIdentity: () => undefined };

    // no ALPN at all
    const a0 = rejections('bad_alpn');
    const na = tls.connect(tlsOpts);
    na.on('error', () => undefined);
    await onceEvent(na, 'close', 'server closing the no-ALPN connection');
    assert.equal(rejections('bad_alpn'), a0 + 1);

    // http/1.1 only and TLS 1.2 only: refused in the handshake
    for (const extra of [{ ALPNProtocols: ['http/1.1'] }, { ALPNProtocols: ['h2'], maxVersion: 'TLSv1.2' as const }]) {
      const before = rejections('tls_error');
      const s = tls.connect({ ...tlsOpts, ...extra });
      const err = await new Promise<Error | undefined>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no handshake outcome for ${JSON.stringify(extra)}`)), 5000);
        s.once('error', (e) => (clearTimeout(t), resolve(e)));
        s.once('close', () => (clearTimeout(t), resolve(undefined)));
      });
      assert.ok(err, `handshake must fail for ${JSON.stringify(extra)}`);
      s.destroy();
      await waitFor(() => rejections('tls_error') === before + 1, `tls_error for ${JSON.stringify(extra)}`);
    }

    // TLS + h2 ALPN fine, but not an HTTP/2 client preface
    const p0 = rejections('bad_preface');
    const bp = tls.connect({ ...tlsOpts, ALPNProtocols: ['h2'] });
    bp.on('error', () => undefined);
    await onceEvent(bp, 'secureConnect', 'bad-preface TLS handshake');
    bp.write('THIS IS NOT THE HTTP/2 CLIENT PREFACE AT ALL\r\n\r\n');
    bp.resume();
    await onceEvent(bp, 'close', 'server closing the bad-preface connection');
    await waitFor(() => rejections('bad_preface') === p0 + 1, 'bad preface counted');

    await assertServes();
    await waitFor(() => server.stats().connections.open === 1, 'only the pooled connection left');
  });

  // ----------------------------------------------------------------- pooling / leaks

  it('200 abandoned streams leave no streams, sockets or CLOSE_WAIT behind', { timeout: 30_000 }, async () => {
    const p2 = new HbonePool({ getClientCert: certFor, rootPem: ca.rootPem });
    try {
      await assertServes(); // warm up shared state (certs, contexts)
      const fd0 = await openFds();
      const opened0 = events.filter((e) => e.type === 'connection_open').length;
      const streams = await Promise.all(Array.from({ length: 200 }, () => open(echoPort, p2)));
      assert.equal(p2.stats().sessionsOpened, 2, 'at most 100 streams per session');
      assert.equal(p2.stats().activeStreams, 200);
      const newConns = events
        .filter((e) => e.type === 'connection_open')
        .slice(opened0)
        .map((e) => (e.type === 'connection_open' ? e.connectionId : 0));
      assert.equal(newConns.length, 2);
      for (const id of newConns) {
        const perConn = events.filter((e) => e.type === 'tunnel_open' && e.ctx.connectionId === id).length;
        assert.ok(perConn <= 100, `connection ${id} carried ${perConn} streams`);
      }
      assert.ok(server.stats().streams.active >= 200);
      await waitFor(async () => (await connectionCount(echoSrv)) >= 200, 'all 200 reached the app');
      // some with data in flight, some idle
      streams.forEach((s, i) => (i % 2 ? s.write(randomBytes(1024)) : undefined));
      for (const s of streams) s.destroy();

      await waitFor(() => server.stats().streams.active === 0, 'server streams back to 0');
      await waitFor(() => server.stats().streams.upstreamsOpen === 0, 'upstream sockets closed');
      await waitFor(async () => (await connectionCount(echoSrv)) === 0, 'app saw every connection close');
      assert.equal(p2.stats().activeStreams, 0);
      await p2.close();
      await waitFor(() => server.stats().connections.open === 1, 'server-side TLS connections closed (pooled one stays)');
      await waitFor(async () => (await closeWait([hbPort, echoPort])) === 0, 'no CLOSE_WAIT sockets');
      await waitFor(async () => (await openFds()) <= fd0 + 2, `fds back near ${fd0}`);
    } finally {
      await p2.close({ force: true });
    }
  });

  it('closes idle sessions and keeps pinging live ones', { timeout: 10_000 }, async () => {
    const p2 = new HbonePool({ getClientCert: certFor, rootPem: ca.rootPem, idleTimeoutMs: 300, pingIntervalMs: 50 });
    try {
      const s = await open(echoPort, p2);
      await new Promise((r) => setTimeout(r, 200)); // several pings while the stream is open
      s.end('x');
      assert.equal((await readAll(s)).toString(), 'x');
      const s2 = await open(echoPort, p2); // reuses the session
      s2.end('y');
      await readAll(s2);
      assert.equal(p2.stats().sessionsOpened, 1);
      assert.equal(p2.stats().sessions, 1);
      await waitFor(() => p2.stats().sessions === 0, 'idle session closed', 3000);
      await waitFor(() => server.stats().connections.open === 1, 'server saw it close');
    } finally {
      await p2.close({ force: true });
    }
  });

  // ----------------------------------------------------------------- nghttpx interop

  async function startNghttpx(args: string[], port: number): Promise<{ proc: ChildProcess; log: () => string }> {
    let log = '';
    const proc = spawn('nghttpx', ['--conf=/dev/null', '--single-process', '--no-ocsp', '-n1', '--errorlog-file=/dev/stderr', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    let dead = false;
    void exited.then(() => (dead = true));
    await waitFor(
      () =>
        dead ||
        new Promise<boolean>((resolve) => {
          const s = net.connect({ host: LO, port });
          s.once('connect', () => {
            s.destroy();
            resolve(true);
          });
          s.once('error', () => resolve(false));
        }),
      'nghttpx listening',
      10_000,
    );
    if (dead) throw new Error(`nghttpx exited early:\n${log}`);
    return { proc, log: () => log };
  }
  async function stopNghttpx(proc: ChildProcess | undefined): Promise<void> {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  }
  async function writeNgCert(): Promise<{ key: string; cert: string; root: string }> {
    const c = await mgr.get(NG_ID);
    const files = { key: path.join(tmp, 'ng-key.pem'), cert: path.join(tmp, 'ng-cert.pem'), root: path.join(tmp, 'root.pem') };
    await writeFile(files.key, c.keyPem, { mode: 0o600 });
    await writeFile(files.cert, c.chainPem);
    await writeFile(files.root, c.rootPem);
    return files;
  }

  it('interop: nghttpx (HTTP/2 CONNECT over mTLS backend) tunnels through our server', { timeout: 30_000 }, async () => {
    const f = await writeNgCert();
    const front = await freePort();
    let ng: ChildProcess | undefined;
    let raw: net.Socket | undefined;
    try {
      const started = await startNghttpx(
        [
          '--http2-proxy',
          `--frontend=${LO},${front};no-tls`,
          `--backend=${LO},${hbPort};;proto=h2;tls`,
          '--insecure', // nghttpx would check a DNS name; we check identities on our side
          `--client-private-key-file=${f.key}`,
          `--client-cert-file=${f.cert}`,
          '--tls-min-proto-version=TLSv1.3',
        ],
        front,
      );
      ng = started.proc;
      raw = net.connect({ host: LO, port: front });
      raw.on('error', () => undefined);
      await new Promise((r) => raw!.once('connect', r));
      raw.write(`CONNECT ${LO}:${echoPort} HTTP/1.1\r\nHost: ${LO}:${echoPort}\r\n\r\n`);
      const head = await new Promise<string>((resolve) => {
        let acc = '';
        const on = (d: Buffer): void => {
          acc += d.toString('latin1');
          if (acc.includes('\r\n\r\n')) {
            raw!.off('data', on);
            resolve(acc);
          }
        };
        raw!.on('data', on);
      });
      assert.match(head, /^HTTP\/1\.1 200/, `${head}\n${started.log()}`);
      const payload = randomBytes(128 * 1024);
      const echoed = readN(raw, payload.length);
      raw.write(payload);
      assert.equal(sha256((await echoed).subarray(0, payload.length)), sha256(payload));
      const seen = events.filter((e) => e.type === 'tunnel_open' && e.ctx.peer.id === NG_ID);
      assert.equal(seen.length, 1, 'our server authenticated nghttpx by its SPIFFE id');
      raw.destroy();
      await waitFor(() => server.stats().streams.active === 0 && server.stats().streams.upstreamsOpen === 0, 'tunnel closed');
    } finally {
      raw?.destroy();
      await stopNghttpx(ng);
    }
  });

  it('interop: our client tunnels through nghttpx as an HTTP/2 mTLS CONNECT proxy', { timeout: 30_000 }, async () => {
    const f = await writeNgCert();
    // nghttpx forwards CONNECT to an HTTP/1.1 proxy; this one only dials 127.0.0.1.
    const heads: string[] = [];
    const h1proxy = net.createServer((s) => {
      s.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer): void => {
        buf = Buffer.concat([buf, d]);
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        s.off('data', onData);
        s.pause();
        const head = buf.subarray(0, i).toString('latin1');
        heads.push(head);
        const m = /^CONNECT 127\.0\.0\.1:(\d+) HTTP\/1\.1\r\n/.exec(head);
        if (!m) {
          s.end('HTTP/1.1 400 Bad Request\r\n\r\n');
          return;
        }
        const up = net.connect({ host: LO, port: Number(m[1]) }, () => {
          s.write('HTTP/1.1 200 Connection Established\r\n\r\n');
          const rest = buf.subarray(i + 4);
          if (rest.length) up.write(rest);
          s.pipe(up);
          up.pipe(s);
          s.resume();
        });
        up.on('error', () => s.destroy());
        s.on('close', () => up.destroy());
      };
      s.on('data', onData);
    });
    targets.push(track(h1proxy));
    const proxyPort = await listen(h1proxy);
    const front = await freePort();
    let ng: ChildProcess | undefined;
    const p2 = new HbonePool({ getClientCert: certFor, rootPem: ca.rootPem });
    try {
      ng = (
        await startNghttpx(
          [
            '--http2-proxy',
            `--frontend=${LO},${front}`,
            `--backend=${LO},${proxyPort}`,
            '--verify-client',
            `--verify-client-cacert=${f.root}`,
            '--tls-min-proto-version=TLSv1.3',
            f.key,
            f.cert,
          ],
          front,
        )
      ).proc;
      const s = await p2.connect({
        srcId: CLI_ID,
        dstId: NG_ID,
        dstAddr: { ip: LO, port: front },
        target: { ip: LO, port: echoPort },
        headers: { forwardedFor: { ip: LO, port: 41000 }, baggage: 'k8s.namespace.name=clients' },
      });
      const payload = randomBytes(128 * 1024);
      const echoed = readN(s, payload.length);
      s.write(payload);
      assert.equal(sha256((await echoed).subarray(0, payload.length)), sha256(payload));
      assert.equal(heads.length, 1);
      assert.match(heads[0]!, new RegExp(`^CONNECT 127\\.0\\.0\\.1:${echoPort} HTTP/1\\.1`));
      assert.match(heads[0]!, /\r\nForwarded: for="127\.0\.0\.1:41000"/i);
      assert.match(heads[0]!, /\r\nTraceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-00/i);
      assert.match(heads[0]!, /\r\nBaggage: k8s\.namespace\.name=clients/i);
      s.destroy();

      // nghttpx's certificate is checked against dstId on our side.
      await assert.rejects(
        p2.connect({ srcId: CLI_ID, dstId: SRV_ID, dstAddr: { ip: LO, port: front }, target: { ip: LO, port: echoPort } }),
        (e: unknown) => e instanceof HboneError && e.code === 'HBONE_TLS' && e.reason === 'san_mismatch',
      );
    } finally {
      await p2.close({ force: true });
      await stopNghttpx(ng);
    }
  });
});
