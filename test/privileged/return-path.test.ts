/**
 * Privileged tests of the in-pod return path (native/return_path.cc,
 * src/datapath/return-path.ts) against the real kernel, in throw-away
 * network namespaces:
 *
 *   pod netns  (eth0 10.213.0.2/24, fd00:213::2/64, default route via the client)
 *     └── veth ──  client netns (10.213.0.1, fd00:213::1)
 *
 * The real outcome: an app in the pod, accepting on the pod address, sees a
 * connection made from inside the pod by a transparent socket bound to the
 * client's address as coming from the client's address, with bytes both
 * ways; without the return path (or without the mark) that connect does not
 * complete. Every namespace is deleted in after(), whether the tests pass or not.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { errnoName, loadNative } from '../../src/datapath/native.js';
import type { NativeAddon } from '../../src/datapath/native.js';
import { DialError, dialFromNetns } from '../../src/datapath/sockets.js';
import {
  RETURN_MARK,
  RETURN_PRIORITY,
  RETURN_TABLE,
  ReturnPathError,
  disableReturnPath,
  enableReturnPath,
  returnPathState,
} from '../../src/datapath/return-path.js';
import { TIME_SCALE } from '../../tools/sandbox/index.js';
import { threadNetnsInodes } from '../helpers/sandbox.js';

const E = os.constants.errno;
const privileged = process.getuid?.() === 0;
const tag = randomBytes(3).toString('hex');
const POD = `ambrp-pod-${tag}`;
const CLIENT = `ambrp-cli-${tag}`;
const NOV6 = `ambrp-nov6-${tag}`;
const podNs = `/run/netns/${POD}`;
const FAM = {
  4: { pod: '10.213.0.2', client: '10.213.0.1', prefix: 24 },
  6: { pod: 'fd00:213::2', client: 'fd00:213::1', prefix: 64 },
} as const;
const CFG = { mark: RETURN_MARK, table: RETURN_TABLE, priority: RETURN_PRIORITY };
/** How long a connect that must not complete is given (a negative check, not a timing assertion). */
const NO_CONNECT_MS = 2000 * TIME_SCALE;

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function sysctl(ns: string, key: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-n', key], { encoding: 'utf8' }).trim();
}

/** The return path as `ip` sees it: fwmark rules and table routes per family, and the sysctl. */
function seen(ns: string): { rules4: string[]; rules6: string[]; routes4: string[]; routes6: string[]; fwmarkAccept: string } {
  const lines = (s: string): string[] => s.split('\n').filter((l) => l.trim() !== '');
  const mine = (l: string): boolean => /fwmark 0x4d3 lookup 133/.test(l);
  return {
    rules4: lines(ip(['-n', ns, 'rule'])).filter(mine),
    rules6: lines(ip(['-n', ns, '-6', 'rule'])).filter(mine),
    routes4: lines(ip(['-n', ns, 'route', 'show', 'table', String(RETURN_TABLE)])),
    routes6: lines(ip(['-n', ns, '-6', 'route', 'show', 'table', String(RETURN_TABLE)])),
    fwmarkAccept: sysctl(ns, 'net.ipv4.tcp_fwmark_accept'),
  };
}

/** TCP segments the client netns received (/proc/net/snmp Tcp InSegs, both families): the app's replies when they leave through the pod's eth0. */
function clientTcpInSegs(): number {
  const rows = execFileSync('ip', ['netns', 'exec', CLIENT, 'cat', '/proc/net/snmp'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith('Tcp:'))
    .map((l) => l.trim().split(/\s+/));
  assert.equal(rows.length, 2, 'Tcp header and values in /proc/net/snmp');
  return Number(rows[1][rows[0].indexOf('InSegs')]);
}

/**
 * A connect that must not complete: it times out, or (IPv6) finds no route at
 * all: a transparent socket is bound to the pod's loopback, and without the
 * return path's table nothing routes the pod's own address over lo. Never
 * refused, never a bind error.
 */
function timedOut(e: unknown): boolean {
  return e instanceof DialError && (e.errnoName === 'ETIMEDOUT' || e.errnoName === 'ENETUNREACH');
}

interface App {
  server: net.Server;
  port: number;
  /** remote addresses of the connections it accepted */
  peers: string[];
}

/** The app: a listener on the pod address inside the pod netns, answering "pong:<what it sees as the peer>:<data>". */
async function startApp(a: NativeAddon, family: 4 | 6): Promise<App> {
  const fd = a.socketInNetns(podNs, { family, bind: { ip: FAM[family].pod, port: 0 }, listen: 16 });
  assert.ok(fd >= 0, `app listener: ${errnoName(fd)}`);
  const peers: string[] = [];
  const server = net.createServer((c) => {
    peers.push(c.remoteAddress ?? '?');
    c.on('error', () => {});
    c.once('data', (d) => c.end(`pong:${c.remoteAddress}:${d.toString()}`));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => resolve());
  });
  const addr = server.address();
  assert.ok(addr && typeof addr === 'object');
  return { server, port: addr.port, peers };
}

function stopApp(app: App): Promise<void> {
  return new Promise((resolve) => app.server.close(() => resolve()));
}

/** Connects from inside the pod with a transparent socket bound to the client's address. */
function dialAsClient(a: NativeAddon, family: 4 | 6, app: App, mark: number, timeoutMs: number): Promise<net.Socket> {
  return dialFromNetns(a, podNs, { ip: FAM[family].pod, port: app.port }, mark, timeoutMs, {
    bind: { ip: FAM[family].client, port: 0 },
    transparent: true,
  });
}

/** Sends "ping" and reads the app's whole answer. */
function exchange(s: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let b = '';
    s.on('data', (d: Buffer) => (b += d.toString()));
    s.once('end', () => resolve(b));
    s.once('error', reject);
    s.end('ping');
  });
}

describe('in-pod return path (privileged)', () => {
  let a: NativeAddon;

  before(() => {
    assert.ok(privileged, 'the privileged tests need root (they fail, never skip, without it)');
    a = loadNative();
    ip(['netns', 'add', POD]);
    ip(['netns', 'add', CLIENT]);
    ip(['netns', 'add', NOV6]);
    ip(['-n', POD, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', CLIENT]);
    for (const [ns, side] of [
      [POD, 'pod'],
      [CLIENT, 'client'],
    ] as const) {
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      for (const f of [4, 6] as const) {
        ip(['-n', ns, ...(f === 6 ? ['-6'] : []), 'addr', 'add', `${FAM[f][side]}/${FAM[f].prefix}`, 'dev', 'eth0', ...(f === 6 ? ['nodad'] : [])]);
      }
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    }
    // As in a real pod: a default route towards the outside (the replies must not take it).
    ip(['-n', POD, 'route', 'add', 'default', 'via', FAM[4].client]);
    ip(['-n', POD, '-6', 'route', 'add', 'default', 'via', FAM[6].client]);
  });

  after(() => {
    for (const ns of [POD, CLIENT, NOV6]) {
      try {
        ip(['netns', 'del', ns]);
      } catch {
        /* not created */
      }
    }
    for (const ns of [POD, CLIENT, NOV6]) assert.ok(!fs.existsSync(`/run/netns/${ns}`), `${ns} left behind`);
  });

  for (const family of [4, 6] as const) {
    it(`IPv${family}: without the return path a transparent connect from the client's address does not complete`, async () => {
      const app = await startApp(a, family);
      try {
        const segs = clientTcpInSegs();
        let err: unknown = null;
        await assert.rejects(
          dialAsClient(a, family, app, RETURN_MARK, NO_CONNECT_MS).catch((e: unknown) => {
            err = e;
            throw e;
          }),
          timedOut,
        );
        assert.deepEqual(app.peers, [], 'the app accepted nothing');
        if ((err as DialError).errnoName === 'ETIMEDOUT')
          assert.ok(clientTcpInSegs() > segs, "the app's SYN-ACKs left the pod through eth0 (the client netns got them)");
      } finally {
        await stopApp(app);
      }
    });
  }

  it('enable sets exactly one rule and one route per family and tcp_fwmark_accept=1, and a second enable adds nothing', () => {
    assert.equal(sysctl(POD, 'net.ipv4.tcp_fwmark_accept'), '0');
    const hostSysctl = fs.readFileSync('/proc/sys/net/ipv4/tcp_fwmark_accept', 'utf8');
    const hostRules = ip(['rule']) + ip(['-6', 'rule']);
    const threads = threadNetnsInodes();
    enableReturnPath(a, podNs, [4, 6], CFG);
    assert.deepEqual(threadNetnsInodes(), threads, 'no thread of the agent stayed in the pod netns');
    assert.equal(fs.readFileSync('/proc/sys/net/ipv4/tcp_fwmark_accept', 'utf8'), hostSysctl, "the host's sysctl is untouched");
    assert.equal(ip(['rule']) + ip(['-6', 'rule']), hostRules, "the host's rules are untouched");
    const once = seen(POD);
    assert.equal(once.fwmarkAccept, '1');
    assert.equal(once.rules4.length, 1, once.rules4.join('\n'));
    assert.equal(once.rules6.length, 1, once.rules6.join('\n'));
    assert.match(once.rules4[0], /^32000:\s+from all fwmark 0x4d3 lookup 133/);
    assert.match(once.rules6[0], /^32000:\s+from all fwmark 0x4d3 lookup 133/);
    assert.deepEqual(once.routes4.length, 1, once.routes4.join('\n'));
    assert.match(once.routes4[0], /^local default dev lo /);
    assert.deepEqual(once.routes6.length, 1, once.routes6.join('\n'));
    assert.match(once.routes6[0], /^local default dev lo /);

    enableReturnPath(a, podNs, [4, 6], CFG);
    assert.equal(a.returnPath(podNs, { ...CFG, families: [6, 4], enable: true }), 0);
    assert.deepEqual(seen(POD), once, 'enable is idempotent: no duplicate rule or route');
    const st = returnPathState(a, podNs, CFG);
    assert.equal(st.fwmarkAccept, 1);
    assert.deepEqual(
      [...st.rules].sort((x, y) => x.family - y.family),
      [
        { family: 4, priority: RETURN_PRIORITY },
        { family: 6, priority: RETURN_PRIORITY },
      ],
    );
    assert.deepEqual(
      [...st.routes].sort((x, y) => x.family - y.family),
      [{ family: 4 }, { family: 6 }],
    );
    // returnPathState filters on the mark and the table.
    const other = returnPathState(a, podNs, { mark: RETURN_MARK + 1, table: RETURN_TABLE + 1 });
    assert.deepEqual({ rules: other.rules, routes: other.routes }, { rules: [], routes: [] });
  });

  for (const family of [4, 6] as const) {
    it(`IPv${family}: with the return path the app sees the client's address, bytes both ways`, async () => {
      const app = await startApp(a, family);
      try {
        const segs = clientTcpInSegs();
        const s = await dialAsClient(a, family, app, RETURN_MARK, 10_000 * TIME_SCALE);
        assert.equal(s.localAddress, FAM[family].client, 'the socket is bound to the client address');
        assert.equal(await exchange(s), `pong:${FAM[family].client}:ping`, 'the answer came back to the transparent socket');
        assert.deepEqual(app.peers, [FAM[family].client], "the app's socket.remoteAddress is the client's address");
        assert.equal(clientTcpInSegs(), segs, 'no reply left the pod through eth0');
      } finally {
        await stopApp(app);
      }
    });

    it(`IPv${family}: an unmarked transparent socket gets no return path (only the agent's mark is routed back)`, async () => {
      const app = await startApp(a, family);
      try {
        await assert.rejects(dialAsClient(a, family, app, 0, NO_CONNECT_MS), timedOut);
        assert.deepEqual(app.peers, []);
      } finally {
        await stopApp(app);
      }
    });
  }

  it('disable removes the rules and routes, resets tcp_fwmark_accept, and is idempotent', async () => {
    disableReturnPath(a, podNs, [4, 6], CFG);
    const st = seen(POD);
    assert.deepEqual(st, { rules4: [], rules6: [], routes4: [], routes6: [], fwmarkAccept: '0' });
    assert.deepEqual(returnPathState(a, podNs, CFG), { fwmarkAccept: 0, rules: [], routes: [] });
    disableReturnPath(a, podNs, [4, 6], CFG); // already gone = success
    assert.deepEqual(returnPathState(a, podNs, CFG), { fwmarkAccept: 0, rules: [], routes: [] });
    // The pod's own routing is untouched.
    assert.match(ip(['-n', POD, 'route', 'show']), /^default via 10\.213\.0\.1/m);
    assert.match(ip(['-n', POD, 'rule']), /32766:\s+from all lookup main/);
    // And the connect no longer completes.
    const app = await startApp(a, 4);
    try {
      await assert.rejects(dialAsClient(a, 4, app, RETURN_MARK, NO_CONNECT_MS), timedOut);
    } finally {
      await stopApp(app);
    }
  });

  it('disable also removes duplicates added by hand', () => {
    // (`ip rule add` refuses an exact duplicate: these differ in their protocol only)
    for (const proto of ['static', 'boot']) ip(['-n', POD, 'rule', 'add', 'fwmark', '0x4d3', 'lookup', '133', 'priority', '32000', 'protocol', proto]);
    ip(['-n', POD, 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '133']);
    assert.equal(seen(POD).rules4.length, 2);
    disableReturnPath(a, podNs, [4], CFG);
    assert.deepEqual(returnPathState(a, podNs, CFG), { fwmarkAccept: 0, rules: [], routes: [] });
  });

  it('loopback down (ENETDOWN) or IPv6 disabled in the pod (EACCES): enable returns the errno, IPv4 stays usable, disable cleans up', () => {
    const nov6 = `/run/netns/${NOV6}`;
    // First a loopback that is down: IPv6 will not route onto it (ENETDOWN), and nothing is left half-made.
    ip(['-n', NOV6, 'link', 'set', 'lo', 'down']);
    assert.equal(a.returnPath(nov6, { ...CFG, families: [6], enable: true }), -E.ENETDOWN);
    assert.deepEqual(returnPathState(a, nov6, CFG), { fwmarkAccept: 1, rules: [], routes: [] });
    ip(['-n', NOV6, 'link', 'set', 'lo', 'up']);
    execFileSync('ip', ['netns', 'exec', NOV6, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.lo.disable_ipv6=1']);
    assert.equal(a.returnPath(nov6, { ...CFG, families: [4, 6], enable: true }), -E.EACCES);
    assert.throws(
      () => enableReturnPath(a, nov6, [6], CFG),
      (e: unknown) => e instanceof ReturnPathError && e.code === 'RETURN_PATH_FAILED' && e.errnoName === 'EACCES' && /IPv6 is disabled/.test(e.hint),
    );
    const st = returnPathState(a, nov6, CFG);
    assert.deepEqual(st, { fwmarkAccept: 1, rules: [{ family: 4, priority: RETURN_PRIORITY }], routes: [{ family: 4 }] }, 'no half-made IPv6 entries');
    disableReturnPath(a, nov6, [4, 6], CFG);
    assert.deepEqual(returnPathState(a, nov6, CFG), { fwmarkAccept: 0, rules: [], routes: [] });
  });

  it('a netns path that does not exist, or is not a netns: an errno, no crash, a typed error', () => {
    const opts = { ...CFG, families: [4] as Array<4 | 6>, enable: true };
    assert.equal(a.returnPath(`/run/netns/ambrp-none-${tag}`, opts), -E.ENOENT);
    assert.equal(a.returnPath('/proc/self/status', opts), -E.EINVAL);
    assert.equal(a.returnPathState(`/run/netns/ambrp-none-${tag}`, CFG), -E.ENOENT);
    assert.throws(
      () => enableReturnPath(a, `/run/netns/ambrp-none-${tag}`, [4], CFG),
      (e: unknown) => e instanceof ReturnPathError && e.code === 'RETURN_PATH_FAILED' && e.errnoName === 'ENOENT' && e.errno === E.ENOENT,
    );
    assert.throws(() => returnPathState(a, '/proc/self/status', CFG), ReturnPathError);
  });

  it('argument validation: -EINVAL for each bad value, before anything is changed', () => {
    const ok = { ...CFG, families: [4, 6] as Array<4 | 6>, enable: true };
    const bad: Array<[string, string, object]> = [
      ['empty path', '', ok],
      ['NUL in path', `${podNs}\0x`, ok],
      ['mark 0', podNs, { ...ok, mark: 0 }],
      ['mark 2^32', podNs, { ...ok, mark: 2 ** 32 }],
      ['mark -1', podNs, { ...ok, mark: -1 }],
      ['mark 1.5', podNs, { ...ok, mark: 1.5 }],
      ['mark NaN', podNs, { ...ok, mark: NaN }],
      ['table 0', podNs, { ...ok, table: 0 }],
      ['table default', podNs, { ...ok, table: 253 }],
      ['table main', podNs, { ...ok, table: 254 }],
      ['table local', podNs, { ...ok, table: 255 }],
      ['table 2^32', podNs, { ...ok, table: 2 ** 32 }],
      ['priority 0', podNs, { ...ok, priority: 0 }],
      ['priority 32766', podNs, { ...ok, priority: 32766 }],
      ['priority Infinity', podNs, { ...ok, priority: Infinity }],
      ['no family', podNs, { ...ok, families: [] }],
      ['family 5', podNs, { ...ok, families: [5] }],
      ['family 4 twice', podNs, { ...ok, families: [4, 4] }],
      ['three families', podNs, { ...ok, families: [4, 6, 4] }],
    ];
    for (const [what, p, o] of bad) assert.equal(a.returnPath(p, o as never), -E.EINVAL, what);
    assert.equal(a.returnPathState(podNs, { table: 254, mark: RETURN_MARK }), -E.EINVAL, 'state: main table');
    assert.equal(a.returnPathState(podNs, { table: RETURN_TABLE, mark: 0 }), -E.EINVAL, 'state: mark 0');
    assert.deepEqual(returnPathState(a, podNs, CFG), { fwmarkAccept: 0, rules: [], routes: [] }, 'nothing was set up by a rejected call');
    // A large table id (> 255: carried only in the u32 attribute) works.
    const big = { mark: 0x1234, table: 100_000, priority: 31000 };
    enableReturnPath(a, podNs, [4, 6], big);
    assert.equal(returnPathState(a, podNs, big).rules.length, 2);
    assert.equal(returnPathState(a, podNs, big).routes.length, 2);
    disableReturnPath(a, podNs, [4, 6], big);
    assert.deepEqual(returnPathState(a, podNs, big), { fwmarkAccept: 0, rules: [], routes: [] });
  });

  it('a wrong JS type throws a TypeError', () => {
    const x = a as unknown as Record<string, (...args: unknown[]) => unknown>;
    const ok = { ...CFG, families: [4], enable: true };
    const calls = [
      () => x.returnPath(1, ok),
      () => x.returnPath(podNs),
      () => x.returnPath(podNs, { ...ok, mark: '1235' }),
      () => x.returnPath(podNs, { ...ok, table: undefined }),
      () => x.returnPath(podNs, { ...ok, priority: 1n }),
      () => x.returnPath(podNs, { ...ok, families: 4 }),
      () => x.returnPath(podNs, { ...ok, families: ['4'] }),
      () => x.returnPath(podNs, { ...ok, enable: 1 }),
      () => x.returnPathState(podNs),
      () => x.returnPathState(podNs, { table: '133', mark: 1 }),
      () => x.returnPathState(podNs, { table: 133 }),
    ];
    for (const call of calls) assert.throws(call, TypeError, call.toString());
  });
});
