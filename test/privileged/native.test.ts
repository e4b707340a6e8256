// Over 500 lines on purpose: one suite over the native addon's whole surface, sharing the object, pins, cgroup and netns made in before() and removed in after(); split, every file would repeat that fixture.
/**
 * Privileged tests of the native addon against the real kernel: BPF object
 * load + pinning, map elements, links on a throw-away cgroup and netns, and
 * sockets created inside a netns. Needs root, bpffs at /sys/fs/bpf, cgroup v2
 * at /sys/fs/cgroup/unified, clang, iproute2 and bpftool.
 *
 * Everything created here (pins, netns, cgroup, temp dir) is removed in the
 * after() hook, whether the tests pass or not.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { errnoName, loadNative } from '../../src/datapath/native.js';
import { DialError, dialFromNetns, handleFd } from '../../src/datapath/sockets.js';
import { NetnsHandle } from '../../src/datapath/netns.js';
import { AmbientError } from '../../src/util/errors.js';
import { TIME_SCALE } from '../../tools/sandbox/index.js';
import type { BpfObject, NativeAddon } from '../../src/datapath/native.js';
import { threadNetnsInodes } from '../helpers/sandbox.js';

const execFileP = promisify(execFile);

// dist/test/privileged/native.test.js -> repository root
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const E = os.constants.errno;

const BPFFS = '/sys/fs/bpf';
const CGROUP2 = '/sys/fs/cgroup/unified';
const privileged = process.getuid?.() === 0 && fs.existsSync(BPFFS) && fs.existsSync(CGROUP2);

// BPF type numbers (linux/bpf.h).
const PROG_TYPE = { cgroup_sock_addr: 18, sock_ops: 13, sk_msg: 16, sk_lookup: 30 };
const MAP_TYPE_HASH = 1;
const MAP_TYPE_ARRAY = 2;
const MAP_TYPE_SOCKHASH = 18;
const FUNC_SK_LOOKUP_TCP = 84;
const FUNC_SK_ASSIGN = 124;

const PROGS = ['amb_connect4', 'amb_sockops', 'amb_sk_msg', 'amb_sk_lookup'] as const;
const MAPS = ['amb_config', 'amb_pods', 'amb_listeners'] as const;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs every cleanup step even when earlier ones throw. */
function tryAll(steps: Array<() => void>): void {
  for (const step of steps) {
    try {
      step();
    } catch {
      /* best effort */
    }
  }
}

/** struct amb_ip for an IPv4 address. */
function ip4(addr: string): Buffer {
  const b = Buffer.alloc(20);
  b[0] = 2; // AMB_AF_INET
  addr.split('.').forEach((o, i) => (b[4 + i] = Number(o)));
  return b;
}

/** struct amb_pod { u64 cgroup_id; u32 flags; u32 pad; struct amb_ip exempt_src; } */
const POD_SIZE = 40;
function pod(cgroupId: number, flags: number, exempt: string): Buffer {
  const b = Buffer.alloc(POD_SIZE);
  b.writeBigUInt64LE(BigInt(cgroupId), 0);
  b.writeUInt32LE(flags, 8);
  ip4(exempt).copy(b, 16);
  return b;
}

/**
 * Whole lines of a child's stdout, one per call. A 'data' chunk is not a line:
 * with PYTHONUNBUFFERED=1 Python writes each piece of a print() on its own.
 */
function lineReader(stream: NodeJS.ReadableStream): () => Promise<string> {
  let buf = '';
  const waiting: Array<(line: string) => void> = [];
  const lines: string[] = [];
  stream.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i + 1);
      buf = buf.slice(i + 1);
      const w = waiting.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  return () =>
    new Promise<string>((resolve) => {
      const line = lines.shift();
      if (line !== undefined) resolve(line);
      else waiting.push(resolve);
    });
}

describe('native addon (privileged)', () => {
  it('runs with root, bpffs and cgroup v2 (privileged tests fail, never skip, without them)', () => {
    assert.ok(privileged, 'needs root, bpffs at /sys/fs/bpf and cgroup v2');
  });
  const id = randomBytes(4).toString('hex');
  const pinDir = `${BPFFS}/ambientd-test-${id}`;
  const cgDir = `${CGROUP2}/ambientd-test-${id}`;
  const nsName = `ambientd-test-${id}`;
  const nsPath = `/run/netns/${nsName}`;
  let tmpDir = '';
  let objPath = '';
  let a: NativeAddon;
  let handle: BpfObject;
  const handles = new Set<BpfObject>();
  const fds = new Set<number>();
  const skMsgAttached: Array<[number, number]> = [];
  let nsCreated = false;

  /** Remembers a returned fd so after() closes it if a test fails midway. */
  function own(fd: number, what: string): number {
    assert.equal(typeof fd, 'number');
    assert.ok(fd >= 0, `${what}: ${errnoName(fd)} (${fd})\n${a.lastLog()}`);
    fds.add(fd);
    return fd;
  }
  function release(fd: number): void {
    fds.delete(fd);
    assert.equal(a.closeFd(fd), 0);
  }
  function open(file: string): BpfObject {
    const h = a.objectOpen(file);
    assert.ok(typeof h === 'object', `objectOpen(${file}): ${errnoName(h as number)}\n${a.lastLog()}`);
    handles.add(h);
    return h;
  }
  function close(h: BpfObject): void {
    handles.delete(h);
    h.close();
  }
  function inNs(cmd: string, args: string[]): string {
    return sh('ip', ['netns', 'exec', nsName, cmd, ...args]);
  }

  before(() => {
    a = loadNative();
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-native-'));
    objPath = path.join(tmpDir, 'ambient.bpf.o');
    sh('clang', ['-g', '-O2', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', path.join(ROOT, 'bpf', 'ambient.bpf.c'), '-o', objPath]);
    fs.mkdirSync(pinDir);
    fs.mkdirSync(cgDir);
    sh('ip', ['netns', 'add', nsName]);
    nsCreated = true;
    inNs('ip', ['link', 'set', 'lo', 'up']);
  });

  after(() => {
    tryAll([
      ...skMsgAttached.map(
        ([p, m]) =>
          () =>
            void a.detachSkMsg(p, m),
      ),
      ...[...fds].map((fd) => () => void a.closeFd(fd)),
      ...[...handles].map((h) => () => h.close()),
      () => fs.rmSync(pinDir, { recursive: true, force: true }),
      () => nsCreated && sh('ip', ['netns', 'delete', nsName]),
      () => fs.existsSync(cgDir) && fs.rmdirSync(cgDir),
      () => tmpDir && fs.rmSync(tmpDir, { recursive: true, force: true }),
    ]);
    assert.equal(fs.existsSync(pinDir), false, `${pinDir} left behind`);
    assert.equal(fs.existsSync(cgDir), false, `${cgDir} left behind`);
    assert.equal(fs.existsSync(nsPath), false, `${nsPath} left behind`);
  });

  it('loads the object and pins every map under the pin dir', () => {
    handle = open(objPath);
    const r = handle.load(pinDir);
    assert.equal(r, 0, `load: ${errnoName(r)}\n${a.lastLog()}`);

    const expectType: Record<(typeof PROGS)[number], number> = {
      amb_connect4: PROG_TYPE.cgroup_sock_addr,
      amb_sockops: PROG_TYPE.sock_ops,
      amb_sk_msg: PROG_TYPE.sk_msg,
      amb_sk_lookup: PROG_TYPE.sk_lookup,
    };
    for (const name of PROGS) {
      const fd = own(handle.programFd(name), name);
      const info = a.progInfo(fd);
      assert.ok(typeof info === 'object', `progInfo(${name}) = ${String(info)}`);
      assert.equal(info.name, name);
      assert.equal(info.type, expectType[name]);
      assert.ok(info.id > 0);
      assert.match(info.tag, /^[0-9a-f]{16}$/);
      assert.equal(a.mapInfo(fd), -E.EINVAL, 'mapInfo of a program fd');
      release(fd);
    }
    for (const name of MAPS) {
      const fd = own(handle.mapFd(name), name);
      const info = a.mapInfo(fd);
      assert.ok(typeof info === 'object');
      assert.equal(info.name, name);
      // libbpf creates sockmap/sockhash maps without BTF; the others carry it.
      if (info.type !== MAP_TYPE_SOCKHASH) assert.ok(info.btfId > 0, `${name} carries BTF`);
      assert.ok(fs.existsSync(`${pinDir}/${name}`), `${name} pinned`);
      assert.equal(a.progInfo(fd), -E.EINVAL, 'progInfo of a map fd');
      release(fd);
    }
    const config = own(handle.mapFd('amb_config'), 'amb_config');
    const ci = a.mapInfo(config);
    assert.ok(typeof ci === 'object');
    assert.deepEqual([ci.type, ci.keySize, ci.valueSize, ci.maxEntries], [MAP_TYPE_ARRAY, 4, 16, 1]);
    release(config);
    const listeners = own(handle.mapFd('amb_listeners'), 'amb_listeners');
    const li = a.mapInfo(listeners);
    assert.ok(typeof li === 'object');
    assert.deepEqual([li.type, li.keySize, li.valueSize], [MAP_TYPE_SOCKHASH, 16, 8]);
    release(listeners);

    assert.equal(handle.programFd('no_such_prog'), -E.ENOENT);
    assert.equal(handle.mapFd('no_such_map'), -E.ENOENT);
    // a closed object: every method says EBADF, close() again is a no-op
    const closed = open(objPath);
    close(closed);
    close(closed);
    assert.equal(closed.programFd('amb_connect4'), -E.EBADF);
    assert.equal(closed.mapFd('amb_pods'), -E.EBADF);
    assert.equal(closed.load(pinDir), -E.EBADF);
    // the object is the handle: a method called on anything else throws
    assert.throws(() => handle.programFd.call({}, 'amb_connect4'), TypeError);
  });

  it('amb_pods: update / lookup / nextKey / delete round trip', () => {
    const fd = own(handle.mapFd('amb_pods'), 'amb_pods');
    try {
      const info = a.mapInfo(fd);
      assert.ok(typeof info === 'object');
      assert.deepEqual([info.type, info.keySize, info.valueSize, info.maxEntries], [MAP_TYPE_HASH, 20, POD_SIZE, 4096]);

      const key = ip4('10.244.1.7');
      const val = pod(7, 1, '172.18.0.2');
      assert.equal(a.mapLookup(fd, key, POD_SIZE), -E.ENOENT);
      assert.equal(a.mapNextKey(fd, null, 20), -E.ENOENT, 'empty map has no first key');
      assert.equal(a.mapUpdate(fd, key, val, 2 /* BPF_EXIST */), -E.ENOENT);
      assert.equal(a.mapUpdate(fd, key, val, 1 /* BPF_NOEXIST */), 0);
      assert.equal(a.mapUpdate(fd, key, val, 1), -E.EEXIST);
      assert.deepEqual(a.mapLookup(fd, key, POD_SIZE), val);

      const val2 = pod(8, 0, '172.18.0.3');
      assert.equal(a.mapUpdate(fd, key, val2, 0 /* BPF_ANY */), 0);
      assert.deepEqual(a.mapLookup(fd, key, POD_SIZE), val2);

      const first = a.mapNextKey(fd, null, 20);
      assert.ok(Buffer.isBuffer(first));
      assert.deepEqual(first, key);
      assert.equal(a.mapNextKey(fd, key, 20), -E.ENOENT, 'single key: no next');

      // Sizes must match the map exactly (the kernel copies that many bytes).
      assert.equal(a.mapLookup(fd, key.subarray(0, 19), POD_SIZE), -E.EINVAL);
      assert.equal(a.mapLookup(fd, key, POD_SIZE - 1), -E.EINVAL);
      assert.equal(a.mapUpdate(fd, key, Buffer.alloc(POD_SIZE + 1), 0), -E.EINVAL);
      assert.equal(a.mapLookup(fd, Buffer.alloc(0), POD_SIZE), -E.EINVAL);
      assert.equal(a.mapNextKey(fd, null, 8), -E.EINVAL);

      assert.equal(a.mapDelete(fd, key), 0);
      assert.equal(a.mapDelete(fd, key), -E.ENOENT);
      assert.equal(a.mapLookup(fd, key, POD_SIZE), -E.ENOENT);
    } finally {
      a.mapDelete(fd, ip4('10.244.1.7'));
      release(fd);
    }
  });

  it('a second load with the same pin dir reuses the pinned maps', () => {
    const fd1 = own(handle.mapFd('amb_pods'), 'amb_pods');
    const h2 = open(objPath);
    try {
      const r = h2.load(pinDir);
      assert.equal(r, 0, `load (reuse): ${errnoName(r)}\n${a.lastLog()}`);
      const fd2 = own(h2.mapFd('amb_pods'), 'amb_pods (2)');
      const i1 = a.mapInfo(fd1);
      const i2 = a.mapInfo(fd2);
      assert.ok(typeof i1 === 'object' && typeof i2 === 'object');
      assert.equal(i2.id, i1.id, 'same kernel map');

      // And it really is the same map: an element written through one
      // object's fd is seen through the other's.
      const key = ip4('10.244.9.9');
      const val = pod(99, 1, '0.0.0.0');
      try {
        assert.equal(a.mapUpdate(fd1, key, val, 0), 0);
        assert.deepEqual(a.mapLookup(fd2, key, POD_SIZE), val);
      } finally {
        a.mapDelete(fd1, key);
      }
      release(fd2);
    } finally {
      close(h2);
      release(fd1);
    }
    // close() leaves the pins (and the first object's maps) alone.
    assert.ok(fs.existsSync(`${pinDir}/amb_pods`));
  });

  it('objGet / objPin / closeFd', () => {
    const pinned = own(a.objGet(`${pinDir}/amb_pods`), 'objGet amb_pods');
    const fromObj = own(handle.mapFd('amb_pods'), 'amb_pods');
    const ip = a.mapInfo(pinned);
    const io = a.mapInfo(fromObj);
    assert.ok(typeof ip === 'object' && typeof io === 'object');
    assert.equal(ip.name, 'amb_pods');
    assert.equal(ip.id, io.id);
    assert.equal(ip.keySize, 20);
    assert.equal(ip.valueSize, POD_SIZE);
    release(fromObj);

    const prog = own(handle.programFd('amb_sk_lookup'), 'amb_sk_lookup');
    const progPin = `${pinDir}/test_prog_pin`;
    assert.equal(a.objPin(prog, progPin), 0);
    assert.equal(a.objPin(prog, progPin), -E.EEXIST);
    const again = own(a.objGet(progPin), 'objGet prog');
    const p1 = a.progInfo(prog);
    const p2 = a.progInfo(again);
    assert.ok(typeof p1 === 'object' && typeof p2 === 'object');
    assert.equal(p2.id, p1.id);
    fs.unlinkSync(progPin);
    release(again);
    release(prog);

    assert.equal(a.objGet(`${pinDir}/does_not_exist`), -E.ENOENT);
    assert.equal(a.closeFd(pinned), 0);
    fds.delete(pinned);
    assert.equal(a.closeFd(pinned), -E.EBADF, 'closing twice');
    assert.equal(a.mapInfo(pinned), -E.EBADF);
  });

  it('BpfObject.load failures return an errno and leave a libbpf log', () => {
    // Pin dir that does not exist: the maps cannot be pinned.
    const h = open(objPath);
    try {
      const r = h.load(`${pinDir}/missing/dir`);
      assert.ok(r < 0, `expected an errno, got ${r}`);
      assert.match(a.lastLog(), /amb_/);
    } finally {
      close(h);
    }

    // A program the verifier rejects: lastLog() holds the verifier's reason.
    const src = path.join(tmpDir, 'bad.bpf.c');
    const obj = path.join(tmpDir, 'bad.bpf.o');
    fs.writeFileSync(
      src,
      `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } bad_map SEC(".maps");
SEC("sk_lookup") int bad_prog(struct bpf_sk_lookup *ctx) {
  __u32 k = 0;
  __u64 *v = bpf_map_lookup_elem(&bad_map, &k);
  return *v ? SK_PASS : SK_DROP; /* no NULL check */
}
char LICENSE[] SEC("license") = "GPL";
`,
    );
    sh('clang', ['-g', '-O2', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', src, '-o', obj]);
    const badDir = `${pinDir}/bad`;
    fs.mkdirSync(badDir);
    const hb = open(obj);
    try {
      const r = hb.load(badDir);
      assert.ok(r < 0, `verifier should reject bad_prog, got ${r}`);
      const log = a.lastLog();
      assert.match(log, /bad_prog/);
      assert.match(log, /invalid mem access|map_value_or_null/);
      assert.ok(log.length <= 16 * 1024 + 1024);
    } finally {
      close(hb);
    }
  });

  it('objectOpen of a missing file returns -ENOENT', () => {
    assert.equal(a.objectOpen(path.join(tmpDir, 'nope.o')), -E.ENOENT);
    assert.equal(errnoName(-E.ENOENT), 'ENOENT');
  });

  it("socketInNetnsAsync: sockets made on the netns's one long-lived thread, off the event loop; the thread leaves when idle; a re-created netns at the same path gets a new thread", async () => {
    const mk = (p: string, o: Parameters<NativeAddon['socketInNetns']>[1]): Promise<number> =>
      new Promise((resolve) => {
        const rc = a.socketInNetnsAsync(p, o, resolve);
        if (rc < 0) resolve(rc);
      });
    const nsIno = a.netnsInode(nsPath) as bigint;
    const threadsIn = (ino: bigint): number =>
      fs.readdirSync('/proc/self/task').filter((t) => fs.statSync(`/proc/self/task/${t}/ns/net`, { bigint: true, throwIfNoEntry: false })?.ino === ino).length;
    // 50 at once into one netns: one thread serves them all
    const got = await Promise.all(Array.from({ length: 50 }, () => mk(nsPath, { family: 4, mark: 0x539 })));
    for (const fd of got) own(fd, 'socketInNetnsAsync');
    assert.equal(threadsIn(nsIno), 1, 'one thread for the netns');
    assert.ok(a.netnsThreads() >= 1);
    for (const fd of got) {
      const info = a.socketInfo(fd);
      assert.ok(typeof info === 'object');
      assert.equal(info.netnsInode, nsIno, 'made in the pod netns');
    }
    // the event loop ran while they were made (nothing blocks it): a timer fires in between
    let ticks = 0;
    const t = setInterval(() => ticks++, 0);
    await Promise.all(Array.from({ length: 200 }, () => mk(nsPath, { family: 4 }).then((fd) => release(own(fd, 'async')))));
    clearInterval(t);
    assert.ok(ticks > 0);
    for (const fd of got) release(fd);
    // errors come back as -errno through the callback, bad arguments as a TypeError
    assert.equal(await mk('/nonexistent/netns', { family: 4 }), -E.ENOENT);
    assert.equal(await mk(nsPath, { family: 5 as 4 }), -E.EAFNOSUPPORT);
    assert.throws(() => (a as unknown as { socketInNetnsAsync: (p: string, o: object) => number }).socketInNetnsAsync(nsPath, { family: 4 }), TypeError);
    // idle for longer than 2 s: the thread has left the netns
    const end = Date.now() + 6000 * TIME_SCALE;
    while (threadNetnsInodes().has(nsIno) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    assert.equal(threadNetnsInodes().has(nsIno), false, 'no thread of the agent stays in an idle netns');
    assert.equal(threadsIn(nsIno), 0);
    // the same path re-created: another namespace, so another thread, never the old one's
    const tmpNs = `${nsName}-re`;
    sh('ip', ['netns', 'add', tmpNs]);
    try {
      const p = `/run/netns/${tmpNs}`;
      const first = a.netnsInode(p) as bigint;
      release(own(await mk(p, { family: 4 }), 'first'));
      sh('ip', ['netns', 'delete', tmpNs]);
      sh('ip', ['netns', 'add', tmpNs]);
      const second = a.netnsInode(p) as bigint;
      assert.notEqual(second, first);
      const fd = own(await mk(p, { family: 4 }), 'after re-creation');
      const info = a.socketInfo(fd);
      assert.ok(typeof info === 'object');
      assert.equal(info.netnsInode, second, 'made in the new namespace');
      release(fd);
    } finally {
      sh('ip', ['netns', 'delete', tmpNs]);
    }
  });

  it('socketInNetns: listener exists only in the netns and works as a Node server', async () => {
    const before = threadNetnsInodes();
    const fd = a.socketInNetns(nsPath, {
      family: 4,
      mark: 0x539,
      reuseAddr: true,
      bind: { ip: '127.0.0.1', port: 15001 },
      listen: 64,
    });
    assert.ok(fd >= 0, `socketInNetns: ${errnoName(fd)}`);
    fds.add(fd);
    // No thread of this process changed namespace (the worker thread is gone).
    assert.deepEqual(threadNetnsInodes(), before);

    const inside = inNs('ss', ['-Hltne', 'sport = :15001']);
    assert.match(inside, /127\.0\.0\.1:15001/);
    assert.match(inside, /fwmark:0x539/);
    const host = sh('ss', ['-Hltn', 'sport = :15001']);
    assert.doesNotMatch(host, /127\.0\.0\.1:15001/);

    const server = net.createServer((c) => {
      c.once('data', (d) => c.end(`pong:${d.toString()}`));
    });
    fds.delete(fd); // Node owns it now; server.close() closes it.
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ fd }, () => resolve());
      });
      const addr = server.address();
      assert.ok(addr && typeof addr === 'object');
      assert.equal(addr.address, '127.0.0.1');
      assert.equal(addr.port, 15001);

      // A client inside the netns reaches it ...
      const client =
        "const s=require('net').connect(15001,'127.0.0.1',()=>s.write('ping'));" +
        "let b='';s.on('data',d=>b+=d);s.on('end',()=>{process.stdout.write(b)});" +
        "s.on('error',e=>{console.error(e.message);process.exit(3)});";
      const { stdout } = await execFileP('ip', ['netns', 'exec', nsName, process.execPath, '-e', client], {
        timeout: 15_000,
      });
      assert.equal(stdout, 'pong:ping');

      // ... while in the host netns nothing listens there.
      await assert.rejects(
        new Promise<void>((resolve, reject) => {
          const s = net.connect(15001, '127.0.0.1', () => {
            s.destroy();
            resolve();
          });
          s.once('error', reject);
        }),
        { code: 'ECONNREFUSED' },
      );
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    assert.doesNotMatch(inNs('ss', ['-Hltn', 'sport = :15001']), /15001/, 'closed with the server');
  });

  it('socketInNetns: IPv6, unbound, and option variants', { skip: !fs.existsSync('/proc/net/if_inet6') && 'no IPv6' }, async () => {
    const fd = a.socketInNetns(nsPath, { family: 6, reusePort: true, transparent: true, bind: { ip: '::1', port: 0 }, listen: 8 });
    assert.ok(fd >= 0, `socketInNetns v6: ${errnoName(fd)}`);
    fds.add(fd);
    const server = net.createServer();
    fds.delete(fd);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ fd }, () => resolve());
      });
      const addr = server.address();
      assert.ok(addr && typeof addr === 'object');
      assert.equal(addr.family, 'IPv6');
      assert.equal(addr.address, '::1');
      assert.ok(addr.port > 0);
      assert.match(inNs('ss', ['-Hltn', `sport = :${addr.port}`]), new RegExp(`\\[::1\\]:${addr.port}`));
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }

    // A socket for connect(): no bind, no listen.
    const c = own(a.socketInNetns(nsPath, { family: 4 }), 'unbound socket');
    release(c);
  });

  it('socketInNetns errors', () => {
    assert.equal(a.socketInNetns('/run/netns/ambientd-no-such-netns', { family: 4 }), -E.ENOENT);
    assert.equal(a.socketInNetns('/proc/self/status', { family: 4 }), -E.EINVAL, 'not a netns file');
    assert.equal(a.socketInNetns(nsPath, { family: 5 as 4 }), -E.EAFNOSUPPORT);
    assert.equal(a.socketInNetns(nsPath, { family: 4, bind: { ip: 'not-an-ip', port: 1 } }), -E.EINVAL);
    assert.equal(a.socketInNetns(nsPath, { family: 4, bind: { ip: '::1', port: 1 } }), -E.EINVAL);
    assert.equal(a.socketInNetns(nsPath, { family: 4, bind: { ip: '127.0.0.1', port: 70000 } }), -E.EINVAL);
    // The address is not configured in the netns.
    assert.equal(a.socketInNetns(nsPath, { family: 4, bind: { ip: '192.0.2.1', port: 1 } }), -E.EADDRNOTAVAIL);
  });

  it('linkCgroup attaches connect4/sockops to a cgroup and linkDetach detaches', () => {
    const attached = (): Array<{ id: number; attach_type: string }> =>
      JSON.parse(sh('bpftool', ['-j', 'cgroup', 'show', cgDir]).trim() || '[]') as Array<{ id: number; attach_type: string }>;
    assert.deepEqual(attached(), []);

    for (const [progName, type, bpftoolType] of [
      ['amb_connect4', 'connect4', 'cgroup_inet4_connect'],
      ['amb_sockops', 'sockops', 'cgroup_sock_ops'],
    ] as const) {
      const prog = own(handle.programFd(progName), progName);
      const pi = a.progInfo(prog);
      assert.ok(typeof pi === 'object');
      const link = own(a.linkCgroup(prog, cgDir, type), `linkCgroup ${type}`);
      const now = attached();
      assert.ok(
        now.some((x) => x.id === pi.id && x.attach_type === bpftoolType),
        `${progName} attached: ${JSON.stringify(now)}`,
      );
      assert.equal(a.linkDetach(link), 0);
      assert.ok(!attached().some((x) => x.id === pi.id), `${progName} detached`);
      release(link);
      release(prog);
    }

    const prog = own(handle.programFd('amb_connect4'), 'amb_connect4');
    assert.equal(a.linkCgroup(prog, cgDir, 'bogus'), -E.EINVAL);
    assert.equal(a.linkCgroup(prog, `${cgDir}/missing`, 'connect4'), -E.ENOENT);
    assert.equal(a.linkCgroup(prog, '/proc/self/status', 'connect4'), -E.ENOTDIR);
    release(prog);
    assert.deepEqual(attached(), []);
  });

  it('linkUpdate swaps the program of a live link; linkInfo reports it', () => {
    const p1 = own(handle.programFd('amb_connect4'), 'amb_connect4');
    const p2 = own(handle.programFd('amb_sockops'), 'amb_sockops');
    const link = own(a.linkCgroup(p1, cgDir, 'connect4'), 'linkCgroup');
    const i1 = a.progInfo(p1);
    const li = a.linkInfo(link);
    assert.ok(typeof li === 'object' && typeof i1 === 'object', `linkInfo ${String(li)} progInfo ${String(i1)}`);
    assert.equal(li.progId, i1.id);
    assert.equal(li.progTag, i1.tag);
    // the same program again (a restart of the same build): accepted
    assert.equal(a.linkUpdate(link, p1), 0);
    // a program of another type is refused by the kernel, the link keeps its program
    assert.ok(a.linkUpdate(link, p2) < 0);
    assert.equal((a.linkInfo(link) as { progId: number }).progId, i1.id);
    // not a link / not a program
    assert.equal(a.linkInfo(p1), -E.EINVAL);
    assert.equal(a.linkUpdate(p1, p1), -E.EINVAL);
    assert.equal(a.linkUpdate(link, link), -E.EINVAL);
    assert.equal(a.linkDetach(link), 0);
    release(link);
    release(p2);
    release(p1);
  });

  it('hand-over primitives: unixListen / unixConnect / sendFds / recvFds / socketInfo', async () => {
    const sock = path.join(tmpDir, 'h.sock');
    const lfd = a.unixListen(sock, 4);
    assert.ok(lfd >= 0, errnoName(lfd));
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    assert.ok(!fs.existsSync(`${sock}.new`), 'bound under a temporary name, then renamed');
    // the Node server accepts; the native client sends; a plain read gets the bytes
    const got = new Promise<string>((resolve) => {
      const srv = net.createServer((c) =>
        c.once('data', (d) => {
          resolve(d.toString());
          c.destroy();
          srv.close();
        }),
      );
      srv.listen({ fd: lfd });
    });
    const cfd = a.unixConnect(sock, 1000);
    assert.ok(cfd >= 0, errnoName(cfd));
    const tcp = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => tcp.once('listening', r));
    const tfd = handleFd(tcp)!;
    assert.equal(a.sendFds(cfd, Buffer.from('HELLO'), [tfd], 1000), 5);
    assert.equal(await got, 'HELLO');
    // fd and argument checks
    assert.equal(a.sendFds(cfd, Buffer.from('x'), Array(254).fill(tfd), 1000), -E.E2BIG);
    assert.equal(a.sendFds(cfd, Buffer.from('x'), [987654], 1000), -E.EBADF);
    assert.equal(a.sendFds(cfd, Buffer.alloc(0), [], 1000), -E.EINVAL);
    assert.equal(a.recvFds(cfd, 0, 1000), -E.EINVAL);
    a.closeFd(cfd);
    assert.equal(a.unixConnect(path.join(tmpDir, 'absent.sock'), 1000), -E.ENOENT);
    assert.equal(a.unixConnect('relative.sock'.padEnd(200, 'x'), 1000), -E.EINVAL);
    // socketInfo: a TCP listener, a non-socket
    const info = a.socketInfo(tfd);
    assert.ok(typeof info === 'object');
    assert.deepEqual(
      { family: info.family, listening: info.listening, ip: info.ip, port: info.port },
      { family: 4, listening: true, ip: '127.0.0.1', port: (tcp.address() as net.AddressInfo).port },
    );
    assert.equal(info.netnsInode, BigInt(fs.statSync('/proc/self/ns/net').ino));
    const file = fs.openSync(sock.replace('h.sock', 'plain'), 'w');
    assert.equal(a.socketInfo(file), -E.ENOTSOCK);
    // peerCred: who is on the other end of a unix socket, from the kernel
    const lfd2 = a.unixListen(sock, 4);
    const accepted = new Promise<net.Socket>((resolve) => {
      const srv = net.createServer((c) => {
        resolve(c);
        srv.close();
      });
      srv.listen({ fd: lfd2 });
    });
    const cfd2 = a.unixConnect(sock, 1000);
    const server = await accepted;
    const cred = a.peerCred(handleFd(server)!);
    assert.deepEqual(cred, { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    assert.deepEqual(a.peerCred(cfd2), { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    server.destroy();
    a.closeFd(cfd2);
    assert.equal(a.peerCred(file), -E.ENOTSOCK);
    assert.equal(a.peerCred(987654), -E.EBADF);
    fs.closeSync(file);
    tcp.close();
    const x = a as unknown as Record<string, (...args: unknown[]) => unknown>;
    for (const call of [
      () => x.unixListen(1, 1),
      () => x.unixConnect(sock, '1'),
      () => x.sendFds(1, 'x', [], 1),
      () => x.sendFds(1, Buffer.from('x'), 1, 1),
      () => x.recvFds('1', 1, 1),
      () => x.socketInfo('1'),
      () => x.linkUpdate(1),
      () => x.linkInfo(null),
      () => x.peerCred('1'),
    ]) {
      assert.throws(call, TypeError, call.toString());
    }
  });

  it('linkNetns attaches amb_sk_lookup to the netns', () => {
    type Link = { id: number; prog_id: number; type: string; netns_ino?: number };
    const links = (): Link[] => JSON.parse(sh('bpftool', ['-j', 'link', 'show']).trim() || '[]') as Link[];
    const prog = own(handle.programFd('amb_sk_lookup'), 'amb_sk_lookup');
    const pi = a.progInfo(prog);
    assert.ok(typeof pi === 'object');
    const ino = a.netnsInode(nsPath);
    assert.equal(typeof ino, 'bigint');

    const link = own(a.linkNetns(prog, nsPath), 'linkNetns');
    const mine = links().filter((l) => l.prog_id === pi.id);
    assert.equal(mine.length, 1, JSON.stringify(mine));
    assert.equal(mine[0]!.type, 'netns');
    assert.equal(BigInt(mine[0]!.netns_ino ?? -1), ino);

    assert.equal(a.linkDetach(link), 0);
    const after = links().find((l) => l.prog_id === pi.id);
    assert.ok(!after || !after.netns_ino, `detached: ${JSON.stringify(after)}`);
    release(link);
    release(prog);

    const sockops = own(handle.programFd('amb_sockops'), 'amb_sockops');
    assert.ok(a.linkNetns(sockops, nsPath) < 0, 'a sockops program cannot be an sk_lookup link');
    release(sockops);
    assert.equal(a.linkNetns(1, '/run/netns/ambientd-no-such-netns'), -E.ENOENT);
  });

  it('a /proc/self/fd/N netns path (NetnsHandle.path) works for socketInNetns, tcpSockets, dialFromNetns and linkNetns', async () => {
    type Link = { id: number; prog_id: number; type: string; netns_ino?: number };
    const links = (): Link[] => JSON.parse(sh('bpftool', ['-j', 'link', 'show']).trim() || '[]') as Link[];
    const ns = NetnsHandle.open(nsPath, 'native.test');
    try {
      assert.match(ns.path, /^\/proc\/self\/fd\/\d+$/);
      assert.equal(a.netnsInode(ns.path), a.netnsInode(nsPath), 'the fd path names the same namespace');

      // socketInNetns: the socket is made in the namespace the fd names
      const fd = own(
        a.socketInNetns(ns.path, { family: 4, reuseAddr: true, bind: { ip: '127.0.0.1', port: 15077 }, listen: 8 }),
        'socketInNetns via the fd path',
      );
      const si = a.socketInfo(fd);
      assert.ok(typeof si === 'object', errnoName(si as number));
      assert.deepEqual([si.listening, si.ip, si.port, si.netnsInode], [true, '127.0.0.1', 15077, ns.inode]);
      assert.match(inNs('ss', ['-Hltn', 'sport = :15077']), /15077/, 'listening inside the netns');

      // tcpSockets: the addon's thread enters the same namespace
      const socks = a.tcpSockets(ns.path, 1 << 10);
      assert.ok(Array.isArray(socks), errnoName(socks as number));
      assert.ok(
        socks.some((x) => x.sport === 15077),
        JSON.stringify(socks, (_k, v) => (typeof v === 'bigint' ? String(v) : v)),
      );
      release(fd);

      // dialFromNetns: connects from inside it; a refusal is a DialError
      // (an AmbientError, UPSTREAM_FAILED) that keeps the errno name callers report
      await assert.rejects(dialFromNetns(a, ns.path, { ip: '127.0.0.1', port: 15078 }, 0, 5000 * TIME_SCALE), (e: unknown) => {
        assert.ok(e instanceof DialError && e instanceof AmbientError, String(e));
        assert.equal(e.code, 'UPSTREAM_FAILED');
        assert.equal(e.errnoName, 'ECONNREFUSED');
        assert.equal(e.errno, E.ECONNREFUSED);
        return true;
      });

      // linkNetns: the sk_lookup link goes on that namespace
      const prog = own(handle.programFd('amb_sk_lookup'), 'amb_sk_lookup');
      const pi = a.progInfo(prog);
      assert.ok(typeof pi === 'object');
      const link = own(a.linkNetns(prog, ns.path), 'linkNetns via the fd path');
      const mine = links().filter((l) => l.prog_id === pi.id && l.netns_ino);
      assert.equal(mine.length, 1, JSON.stringify(mine));
      assert.equal(BigInt(mine[0]!.netns_ino ?? -1), ns.inode);
      assert.equal(a.linkDetach(link), 0);
      release(link);
      release(prog);
    } finally {
      ns.close();
    }
    assert.equal(a.socketInNetns('/proc/self/fd/987654', { family: 4 }), -E.ENOENT, 'a closed fd path names nothing');
  });

  it('attachSkMsg / detachSkMsg on the sockhash', () => {
    const prog = own(handle.programFd('amb_sk_msg'), 'amb_sk_msg');
    const map = own(handle.mapFd('amb_sock_pairs'), 'amb_sock_pairs');
    assert.equal(a.attachSkMsg(prog, map), 0);
    skMsgAttached.push([prog, map]);
    assert.equal(a.detachSkMsg(prog, map), 0);
    skMsgAttached.pop();
    assert.equal(a.detachSkMsg(prog, map), -E.ENOENT, 'nothing left to detach');
    const notSkMsg = own(handle.programFd('amb_sk_lookup'), 'amb_sk_lookup');
    assert.equal(a.attachSkMsg(notSkMsg, map), -E.EINVAL, 'only sk_msg programs');
    release(notSkMsg);
    release(map);
    release(prog);
  });

  it('socketInNetns sets keepalive, TCP_USER_TIMEOUT and buffers, and a listener passes them on to what it accepts', async () => {
    const lfd = own(
      a.socketInNetns(nsPath, {
        family: 4,
        reuseAddr: true,
        bind: { ip: '127.0.0.1', port: 15099 },
        listen: 16,
        keepIdleMs: 15000,
        keepIntervalMs: 5000,
        keepCount: 3,
        userTimeoutMs: 30000,
        sndBuf: 65536,
        rcvBuf: 65536,
      }),
      'listener',
    );
    assert.deepEqual(a.tcpLiveness(lfd), { keepalive: true, keepIdleMs: 15000, keepIntervalMs: 5000, keepCount: 3, userTimeoutMs: 30000 });
    const accepted = new Promise<net.Socket>((resolve) => {
      const srv = net.createServer((c) => {
        resolve(c);
        srv.close();
      });
      srv.listen({ fd: lfd });
    });
    fds.delete(lfd);
    const cfd = own(a.socketInNetns(nsPath, { family: 4, keepIdleMs: 2000, keepIntervalMs: 1000, keepCount: 3 }), 'client');
    const c = new net.Socket({ fd: cfd });
    fds.delete(cfd);
    c.connect(15099, '127.0.0.1');
    c.on('error', () => undefined);
    const srvSide = await accepted;
    assert.deepEqual(
      a.tcpLiveness(handleFd(srvSide)!),
      { keepalive: true, keepIdleMs: 15000, keepIntervalMs: 5000, keepCount: 3, userTimeoutMs: 30000 },
      'inherited: no call per connection',
    );
    assert.deepEqual(a.tcpLiveness(cfd), { keepalive: true, keepIdleMs: 2000, keepIntervalMs: 1000, keepCount: 3, userTimeoutMs: 0 });
    srvSide.destroy();
    c.destroy();
    assert.equal(a.socketInNetns(nsPath, { family: 4, keepIdleMs: 1000 }), -E.EINVAL, 'keepalive needs all three values');
    assert.equal(a.tcpLiveness(987654), -E.EBADF);
  });

  it("tcpSockets / destroyTcpSockets: list a netns's TCP sockets (both families, mark, cookie) and reset one", async () => {
    // inside the test netns: a listener and two connections to it, one of them from a marked AF_INET6 socket (v4-mapped)
    const py = `
import socket, sys, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('127.0.0.1', 9999)); l.listen()
c = socket.socket(); c.connect(('127.0.0.1', 9999)); a1, _ = l.accept()
m = socket.socket(socket.AF_INET6); m.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x539); m.connect(('::ffff:127.0.0.1', 9999)); a2, _ = l.accept()
print(c.getsockname()[1], m.getsockname()[1], flush=True)
sys.stdin.readline()
try:
    c.send(b'x'); c.recv(1); print('alive', flush=True)
except OSError as e:
    print('errno', e.errno, flush=True)
`;
    const child = spawn('ip', ['netns', 'exec', nsName, 'python3', '-c', py], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const lines = lineReader(child.stdout!);
      const ports = await lines();
      const [plainPort, markedPort] = ports.trim().split(' ').map(Number);
      const all = a.tcpSockets(nsPath, 0xfff);
      assert.ok(Array.isArray(all), errnoName(all as number));
      const listen = all.find((x) => x.state === 10 && x.sport === 9999);
      assert.ok(listen, 'the listener');
      const plain = all.find((x) => x.state === 1 && x.sport === plainPort);
      const marked = all.find((x) => x.state === 1 && x.sport === markedPort);
      assert.ok(
        plain && marked,
        JSON.stringify(all, (_k, v) => (typeof v === 'bigint' ? String(v) : v)),
      );
      assert.deepEqual([plain.family, plain.src, plain.dst, plain.dport, plain.mark], [4, '127.0.0.1', '127.0.0.1', 9999, 0]);
      assert.deepEqual([marked.family, marked.src, marked.dport, marked.mark], [6, '::ffff:127.0.0.1', 9999, 0x539]);
      assert.equal(typeof plain.cookie, 'bigint');
      const listening = a.tcpSockets(nsPath, 1 << 10);
      assert.ok(Array.isArray(listening) && listening.every((x) => x.state === 10), 'the state filter applies');
      // the wrong cookie destroys nothing; the right one resets exactly that socket
      assert.equal(a.destroyTcpSockets(nsPath, [{ ...plain, cookie: plain.cookie + 1000n }]), 0);
      assert.equal(a.destroyTcpSockets(nsPath, [plain]), 1);
      assert.equal(a.destroyTcpSockets(nsPath, [plain]), 0, 'already gone');
      child.stdin!.write('\n');
      const res = await lines();
      assert.match(res, /errno (103|104)/, 'the owner sees ECONNABORTED (or the RST)');
      assert.equal(a.tcpSockets('/nonexistent/netns', 1), -E.ENOENT);
      assert.equal(a.tcpSockets(nsPath, 0), -E.EINVAL);
      assert.equal(a.destroyTcpSockets(nsPath, [{ ...plain, src: 'not-an-ip' }]), -E.EINVAL);
      const x = a as unknown as Record<string, (...args: unknown[]) => unknown>;
      for (const call of [
        () => x.tcpSockets(1, 1),
        () => x.tcpSockets(nsPath, '1'),
        () => x.destroyTcpSockets(nsPath, 'x'),
        () => x.destroyTcpSockets(nsPath, [{ ...plain, cookie: 1 }]),
      ]) {
        assert.throws(call, TypeError, call.toString());
      }
      // the threads that entered the netns are gone: no thread of this process is in it
      // (an exiting thread can linger in /proc for a moment on a slow, emulated machine)
      const nsIno = a.netnsInode(nsPath) as bigint;
      const end = Date.now() + 5000 * TIME_SCALE;
      while (threadNetnsInodes().has(nsIno) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      const inNs = fs.readdirSync('/proc/self/task').filter((t) => {
        try {
          return fs.statSync(`/proc/self/task/${t}/ns/net`, { bigint: true }).ino === nsIno;
        } catch {
          return false;
        }
      });
      assert.deepEqual(
        inNs.map((t) => `${t}:${fs.readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim()}`),
        [],
        'no thread of this process is left in the netns',
      );
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('cgroupId and netnsInode', () => {
    const idv = a.cgroupId(cgDir);
    assert.equal(typeof idv, 'bigint');
    assert.equal(idv, fs.statSync(cgDir, { bigint: true }).ino);
    assert.equal(a.cgroupId(CGROUP2), 1n, 'root cgroup');
    assert.equal(a.cgroupId(`${cgDir}/missing`), -E.ENOENT);
    assert.equal(a.cgroupId(tmpDir), -E.EINVAL, 'not on cgroup2');

    const ns = a.netnsInode(nsPath);
    assert.equal(ns, fs.statSync(nsPath, { bigint: true }).ino);
    const self = a.netnsInode('/proc/self/ns/net');
    assert.equal(self, fs.statSync('/proc/self/ns/net', { bigint: true }).ino);
    assert.notEqual(ns, self);
    assert.equal(a.netnsInode('/run/netns/ambientd-no-such-netns'), -E.ENOENT);
  });

  it('feature probes', () => {
    for (const t of ['sk_lookup', 'cgroup_sock_addr', 'sock_ops', 'sk_msg', 'sched_cls']) {
      assert.equal(a.probeProgType(t), 1, `prog type ${t}`);
    }
    for (const t of ['hash', 'array', 'lru_hash', 'sockhash', 'sockmap', 'sk_storage']) {
      assert.equal(a.probeMapType(t), 1, `map type ${t}`);
    }
    assert.equal(a.probeHelper('sk_lookup', FUNC_SK_ASSIGN), 1);
    assert.equal(a.probeHelper('cgroup_sock_addr', FUNC_SK_LOOKUP_TCP), 1);
    assert.equal(a.probeHelper('sk_msg', FUNC_SK_ASSIGN), 0, 'sk_assign is not for sk_msg');
    assert.equal(a.probeProgType('no_such_type'), -E.EINVAL);
    assert.equal(a.probeMapType('no_such_type'), -E.EINVAL);
    assert.equal(a.probeHelper('no_such_type', 1), -E.EINVAL);
  });

  it('wrong argument types throw TypeError', () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const x = a as any;
    const buf = Buffer.alloc(20);
    const calls: Array<() => unknown> = [
      () => x.objectOpen(42),
      () => x.objectOpen(),
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      () => (handle as any).load(1),
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      () => (handle as any).programFd(null),
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      () => (handle as any).mapFd(),
      () => x.objPin(1, 2),
      () => x.objGet(undefined),
      () => x.closeFd('3'),
      () => x.mapInfo('3'),
      () => x.progInfo(null),
      () => x.mapLookup(3, 'key', 28),
      () => x.mapLookup(3, buf, '28'),
      () => x.mapUpdate(3, buf, [1, 2], 0),
      () => x.mapUpdate(3, buf, buf, '0'),
      () => x.mapDelete(3, 7),
      () => x.mapNextKey(3, 'k', 20),
      () => x.mapNextKey(3, null, null),
      () => x.linkCgroup('3', cgDir, 'connect4'),
      () => x.linkCgroup(3, cgDir, 4),
      () => x.linkNetns(3, {}),
      () => x.linkDetach(undefined),
      () => x.attachSkMsg(3, '4'),
      () => x.detachSkMsg('3', 4),
      () => x.probeProgType(1),
      () => x.probeMapType(undefined),
      () => x.probeHelper('sk_lookup', '1'),
      () => x.socketInNetns(nsPath),
      () => x.socketInNetns(1, { family: 4 }),
      () => x.socketInNetns(nsPath, { family: '4' }),
      () => x.socketInNetns(nsPath, { family: 4, mark: '1337' }),
      () => x.socketInNetns(nsPath, { family: 4, reuseAddr: 1 }),
      () => x.socketInNetns(nsPath, { family: 4, bind: { ip: 1, port: 1 } }),
      () => x.socketInNetns(nsPath, { family: 4, bind: { ip: '127.0.0.1', port: '1' } }),
      () => x.socketInNetns(nsPath, { family: 4, listen: true }),
      () => x.cgroupId(1),
      () => x.netnsInode(null),
    ];
    for (const call of calls) assert.throws(call, TypeError, call.toString());
  });

  it('errnoName', () => {
    assert.equal(errnoName(-E.EPERM), 'EPERM');
    assert.equal(errnoName(-E.EEXIST), 'EEXIST');
    assert.equal(errnoName(E.EINVAL), 'EINVAL');
    assert.equal(errnoName(-E.E2BIG), 'E2BIG');
    assert.equal(errnoName(-E.EOPNOTSUPP), 'EOPNOTSUPP');
    assert.equal(errnoName(-E.EADDRINUSE), 'EADDRINUSE');
    assert.equal(errnoName(-524), 'ENOTSUPP');
    assert.equal(errnoName(-99999), 'errno 99999');
  });
});
