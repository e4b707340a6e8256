// Over 500 lines on purpose: both ends of the hand-over protocol (client and server) share its framing, checks and deadlines; the records half is in forwarder.ts.
/**
 * Socket hand-over between a running agent and its successor (a restart or a
 * rolling update), so no connection is refused and none is dropped:
 *
 *   new agent                                   old agent (HandoverServer)
 *   connect(handoverSocket)  ───────────────▶  accept
 *   "HELLO 1 <pid> <node>\n" ───────────────▶  same node? describes every listening socket
 *                            ◀───────────────  frames: u32 length + JSON
 *                                              {entries, last}, each with the
 *                                              entries' fds (SCM_RIGHTS)
 *   serves on the same sockets (their accept queues are shared, nothing is
 *   closed or re-bound), enrolls pods, then
 *   "ADOPTED\n"              ───────────────▶  within handoverTimeout: closes
 *                            ◀───────────────  its copies of the listening
 *                                "OK\n"        fds, sends GOAWAY on HBONE
 *                                              sessions and drains its
 *                                              established connections
 *   binds handoverSocket for its own successor.
 *
 * Both ends check who the other is from the kernel (SO_PEERCRED: uid 0 and an
 * ambientd agent process, src/lifecycle/peer.ts), not from what it writes.
 * A new agent that dies before ADOPTED, or does not send it within
 * handoverTimeout (e.g. it hangs), leaves the old one serving as before: the
 * old agent aborts the hand-over and resumes enrollment (it applies policy
 * throughout). A new agent that gets no OK exits: the two never both serve.
 * Established connections (TLS + HTTP/2 state in the old process) are not
 * moved: the old process keeps them until they end or drainTimeout passes,
 * and sends the record of each one that closes to the successor
 * ("RECORDS 1 <pid> <node>\n" then one JSON line per record, each carrying
 * its own format version: RecordForwarder in src/lifecycle/forwarder.ts,
 * the format in src/lifecycle/records.ts), whose metrics count it: the successor answers the
 * metrics port now, so nothing the drained connections carried is lost.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { NativeAddon } from '../datapath/native-api.js';
import { errnoName } from '../datapath/native.js';
import { handleFd } from '../datapath/sockets.js';
import type { Logger } from '../util/log.js';
import type { PeerCred } from './peer.js';
import { AmbientError, type LifecycleCode } from '../util/errors.js';
import { formatHostPort } from '../util/hostport.js';

/** null when the peer may take part in a hand-over, else why not. */
export type PeerVerifier = (cred: PeerCred, claimedPid?: number) => string | null;

export const HANDOVER_VERSION = 1;
/** entries (and fds) per frame: below SCM_MAX_FD (253) */
const FDS_PER_FRAME = 200;
const MAX_FRAME = 4 * 1024 * 1024;
/** longest line on the hand-over socket (a connection record is well under 4 KiB) */
const MAX_LINE = 64 * 1024;

export interface HandoverEntry {
  /** 'pod': a pod's listener (key = namespace/name); 'node': readiness, metrics, admin */
  kind: 'pod' | 'node';
  role: string;
  key?: string;
  ip: string;
  port: number;
  /** inode of the pod's netns (decimal), checked against the received socket */
  netnsInode?: string;
}

interface Frame {
  v: number;
  pid: number;
  last: boolean;
  entries?: HandoverEntry[];
  error?: string;
}

export type HandoverCode = Extract<LifecycleCode, `HANDOVER_${string}`>;

const HANDOVER_HINTS: Record<HandoverCode, string> = {
  HANDOVER_ABORTED: 'the exchange with the other agent broke off; each side carries on as before (the running agent serves, a new one starts on fresh sockets)',
  HANDOVER_PROTOCOL: 'the other agent sent a malformed frame or speaks another hand-over version: both agents must be of compatible versions',
  HANDOVER_PEER: 'only an ambientd agent of this node (uid 0, same executable) may use the hand-over socket',
  HANDOVER_REFUSED: 'the running agent refused (see the message): a successor for another node, or a hand-over already in progress or done',
  HANDOVER_RECORD_INVALID: 'a connection record from the agent we replaced failed its checks and was dropped (its bytes are missing from the metrics)',
  HANDOVER_RECORD_VERSION:
    'the agent we replaced writes connection records in a format version this agent does not read: they are dropped (their bytes are missing from the metrics); upgrade across one version at a time',
};

/** A hand-over that failed: `code` says how, `reason` the low-level cause (an errno name, EOF, EPROTO). */
export class HandoverError extends AmbientError {
  declare readonly code: HandoverCode;
  readonly reason: string;
  constructor(code: HandoverCode, reason: string, message: string, opts: { hint?: string } = {}) {
    super(code, message, opts.hint ?? HANDOVER_HINTS[code]);
    this.name = 'HandoverError';
    this.reason = reason;
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), reason: this.reason };
  }
}

/** What a new agent received: listening fds it may take, then ack() or abort(). */
export class Inherited {
  /** a listener's sockets: one per data-plane worker of the old agent (an SO_REUSEPORT group), one without workers */
  private readonly byKey = new Map<string, Array<{ entry: HandoverEntry; fd: number }>>();
  private done = false;
  readonly rejected: Array<{ entry: HandoverEntry; reason: string }> = [];

  constructor(
    private readonly native: NativeAddon,
    private readonly conn: number,
    readonly fromPid: number,
    list: Array<{ entry: HandoverEntry; fd: number }>,
  ) {
    for (const x of list) {
      const id = Inherited.id(x.entry.kind, x.entry.role, x.entry.key, x.entry.ip);
      const l = this.byKey.get(id);
      if (l) l.push(x);
      else this.byKey.set(id, [x]);
    }
  }

  /** A listener is one role of one pod (or the node) in one family: a dual-stack pod has one of each. */
  private static id(kind: string, role: string, key: string | undefined, ip: string): string {
    return `${kind}\0${role}\0${key ?? ''}\0${ip.includes(':') ? 6 : 4}`;
  }

  get size(): number {
    let n = 0;
    for (const l of this.byKey.values()) n += l.length;
    return n;
  }

  /**
   * The fd of a listener the old agent had, if it is what we would bind now
   * (same address and port, and for pods the same netns); null otherwise (the
   * caller binds a new socket). The fd then belongs to the caller. Where the
   * old agent had several sockets for it (one per worker), the first.
   */
  take(kind: 'pod' | 'node', role: string, want: { ip: string; port: number; key?: string; netnsInode?: bigint | null }): number | null {
    return this.takeAll(kind, role, want, 1)[0] ?? null;
  }

  /**
   * Every socket the old agent had for this listener (its workers' SO_REUSEPORT
   * group), at most `max`, each checked like take(); the rest stay for closeRest().
   */
  takeAll(kind: 'pod' | 'node', role: string, want: { ip: string; port: number; key?: string; netnsInode?: bigint | null }, max = Infinity): number[] {
    const id = Inherited.id(kind, role, want.key, want.ip);
    const list = this.byKey.get(id);
    if (!list) return [];
    const out: number[] = [];
    while (list.length > 0 && out.length < max) {
      const x = list.shift()!;
      const why = this.check(x.fd, want);
      if (why) {
        this.rejected.push({ entry: x.entry, reason: why });
        this.native.closeFd(x.fd);
        continue;
      }
      out.push(x.fd);
    }
    if (list.length === 0) this.byKey.delete(id);
    return out;
  }

  private check(fd: number, want: { ip: string; port: number; netnsInode?: bigint | null }): string | null {
    const info = this.native.socketInfo(fd);
    if (typeof info === 'number') return `socketInfo: ${errnoName(info)}`;
    if (!info.listening) return 'not a listening socket';
    if (info.port !== want.port || info.ip !== want.ip) return `bound to ${formatHostPort(info)}, want ${formatHostPort(want)}`;
    if (want.netnsInode != null && info.netnsInode !== 0n && info.netnsInode !== want.netnsInode)
      return 'in another network namespace (the pod sandbox was re-created)';
    return null;
  }

  /** Entries nobody took (pods gone since): closed. */
  closeRest(): HandoverEntry[] {
    const rest = [...this.byKey.values()].flat();
    for (const x of rest) this.native.closeFd(x.fd);
    this.byKey.clear();
    return rest.map((x) => x.entry);
  }

  /**
   * Tells the old agent we serve on its sockets and waits for its OK: it
   * stops accepting and drains. Not ok when it gave up on us before
   * (handoverTimeout): it serves on, and we must not.
   */
  ack(timeoutMs = 3000): { ok: true } | { ok: false; reason: string } {
    if (this.done) return { ok: false, reason: 'hand-over already finished' };
    this.done = true;
    try {
      const w = this.native.sendFds(this.conn, Buffer.from('ADOPTED\n'), [], 2000);
      if (w < 0) return { ok: false, reason: `sending ADOPTED: ${errnoName(w)}` };
      let got = '';
      const deadline = Date.now() + timeoutMs;
      while (!got.includes('\n')) {
        const r = this.native.recvFds(this.conn, 64, Math.max(1, deadline - Date.now()));
        if (typeof r === 'number') return { ok: false, reason: `waiting for OK: ${errnoName(r)}` };
        for (const f of r.fds) this.native.closeFd(f);
        if (r.data.length === 0) return { ok: false, reason: 'the running agent closed the hand-over connection (it gave up waiting)' };
        got += r.data.toString('utf8');
        if (got.length > 256) break;
      }
      return got.startsWith('OK\n') ? { ok: true } : { ok: false, reason: `unexpected answer ${JSON.stringify(got.slice(0, 40))}` };
    } finally {
      this.native.closeFd(this.conn);
    }
  }

  /** The old agent goes on serving as if nothing happened. */
  abort(reason: string): void {
    this.closeRest();
    this.finish(`ABORT ${reason.replace(/\s+/g, ' ').slice(0, 200)}\n`);
  }

  private finish(line: string): void {
    if (this.done) return;
    this.done = true;
    this.native.sendFds(this.conn, Buffer.from(line), [], 2000);
    this.native.closeFd(this.conn);
  }
}

function check(r: number, what: string): number {
  if (r < 0) throw new HandoverError('HANDOVER_ABORTED', errnoName(r), `${what}: ${errnoName(r)}`);
  return r;
}

/** Reads exactly n bytes from a blocking-with-timeout socket, collecting any fds. */
function recvExact(native: NativeAddon, fd: number, n: number, fds: number[], deadline: number): Buffer {
  const parts: Buffer[] = [];
  let got = 0;
  while (got < n) {
    const left = Math.max(1, deadline - Date.now());
    const r = native.recvFds(fd, n - got, left);
    if (typeof r === 'number') throw new HandoverError('HANDOVER_ABORTED', errnoName(r), `hand-over read: ${errnoName(r)}`);
    fds.push(...r.fds);
    if (r.data.length === 0) throw new HandoverError('HANDOVER_ABORTED', 'EOF', 'the old agent closed the hand-over connection');
    parts.push(r.data);
    got += r.data.length;
  }
  return Buffer.concat(parts);
}

/**
 * New agent: asks the agent serving on socketPath for its listening sockets.
 * Null when no agent answers there (first start, or the old one crashed);
 * throws HandoverError when one answers but the exchange fails (the caller
 * then starts fresh: nothing was changed on either side).
 */
export function requestHandover(
  native: NativeAddon,
  socketPath: string,
  node: string,
  opts: { timeoutMs?: number; verifyPeer?: PeerVerifier } = {},
): Inherited | null {
  const timeoutMs = opts.timeoutMs ?? 5000;
  if (!fs.existsSync(socketPath)) return null;
  const conn = native.unixConnect(socketPath, timeoutMs);
  if (conn < 0) {
    const name = errnoName(conn);
    if (name === 'ECONNREFUSED' || name === 'ENOENT') return null; // stale socket file: nobody serves there
    throw new HandoverError('HANDOVER_ABORTED', name, `connect ${socketPath}: ${name}`);
  }
  const received: Array<{ entry: HandoverEntry; fd: number }> = [];
  const stray: number[] = [];
  try {
    // who serves there, from the kernel: sockets are only taken from an agent
    const cred = native.peerCred(conn);
    if (typeof cred === 'number') throw new HandoverError('HANDOVER_PEER', errnoName(cred), `SO_PEERCRED: ${errnoName(cred)}`);
    const why = opts.verifyPeer?.(cred) ?? null;
    if (why) throw new HandoverError('HANDOVER_PEER', 'EPERM', `the process serving ${socketPath} is refused: ${why}`);
    check(native.sendFds(conn, Buffer.from(`HELLO ${HANDOVER_VERSION} ${process.pid} ${node}\n`), [], timeoutMs), 'hand-over hello');
    const deadline = Date.now() + timeoutMs;
    let fromPid = 0;
    for (;;) {
      const fds: number[] = [];
      const len = recvExact(native, conn, 4, fds, deadline).readUInt32BE(0);
      if (len === 0 || len > MAX_FRAME) throw new HandoverError('HANDOVER_PROTOCOL', 'EPROTO', `hand-over frame of ${len} bytes`);
      const body = recvExact(native, conn, len, fds, deadline);
      let frame: Frame;
      try {
        frame = JSON.parse(body.toString('utf8')) as Frame;
      } catch {
        stray.push(...fds);
        throw new HandoverError('HANDOVER_PROTOCOL', 'EPROTO', 'hand-over frame is not JSON');
      }
      if (frame.v !== HANDOVER_VERSION) {
        stray.push(...fds);
        throw new HandoverError('HANDOVER_PROTOCOL', 'EPROTO', `hand-over version ${frame.v}, want ${HANDOVER_VERSION}`);
      }
      if (frame.error) {
        stray.push(...fds);
        throw new HandoverError('HANDOVER_REFUSED', 'REFUSED', `the old agent refused: ${frame.error}`);
      }
      const entries = frame.entries ?? [];
      if (entries.length !== fds.length) {
        stray.push(...fds);
        throw new HandoverError('HANDOVER_PROTOCOL', 'EPROTO', `frame has ${entries.length} entries but ${fds.length} fds`);
      }
      entries.forEach((entry, i) => received.push({ entry, fd: fds[i]! }));
      if (frame.pid !== cred.pid) throw new HandoverError('HANDOVER_PROTOCOL', 'EPROTO', `the frame says pid ${frame.pid} but the kernel says ${cred.pid}`);
      fromPid = frame.pid;
      if (frame.last) break;
    }
    return new Inherited(native, conn, fromPid, received);
  } catch (e) {
    for (const x of received) native.closeFd(x.fd);
    for (const f of stray) native.closeFd(f);
    native.closeFd(conn);
    throw e;
  }
}

export interface HandoverServerOptions {
  native: NativeAddon;
  socketPath: string;
  /** this agent's node: a successor for another node is refused */
  node: string;
  log: Logger;
  /**
   * the listening sockets to hand over, with their fds (still owned by the
   * caller); called once a hand-over starts: the caller stops changing its
   * listeners (no enrollment) until onAdopted or onAborted
   */
  listeners: () => Promise<Array<{ entry: HandoverEntry; fd: number }>>;
  /** the successor serves on them: stop accepting and drain */
  onAdopted: (pid: number) => void;
  /** a successor asked but did not adopt */
  onAborted?: (pid: number, reason: string) => void;
  /** a connection record from the agent we replaced (it closed while that agent drained) */
  onRecord?: (rec: unknown, pid: number) => void;
  /** a line that is not a usable record */
  onBadRecord?: (pid: number, why: string) => void;
  /** how long a successor may take from HELLO to ADOPTED before we give up on it and carry on */
  adoptTimeoutMs?: number;
  /** checks the peer's SO_PEERCRED (and the pid it claims); default: anyone */
  verifyPeer?: PeerVerifier;
  /** a peer refused by verifyPeer */
  onPeerRejected?: (why: string) => void;
}

/** Old agent: serves the hand-over socket; hands over once, then refuses. */
export class HandoverServer {
  private server: net.Server | null = null;
  private handedTo: number | null = null;
  private busy = false;
  /** inode of the socket file we bound (close() removes only that one) */
  private boundIno: number | null = null;

  constructor(private readonly o: HandoverServerOptions) {}

  /** Binds socketPath (replacing the predecessor's file atomically; mode 0600, parent 0700). */
  async start(): Promise<void> {
    const p = this.o.socketPath;
    fs.mkdirSync(path.dirname(p), { recursive: true, mode: 0o700 });
    const fd = this.o.native.unixListen(p, 16);
    if (fd < 0)
      throw new HandoverError('HANDOVER_ABORTED', errnoName(fd), `listen on ${p}: ${errnoName(fd)}`, {
        hint: 'the agent must be able to create handoverSocket (its directory is made 0700); two agents of one node must agree on it',
      });
    this.boundIno = fs.statSync(p).ino;
    const srv = net.createServer((s) => this.onConnection(s));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ fd }, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    srv.on('error', (e) => this.o.log.warn('hand-over socket error', { error: e.message }));
    this.server = srv;
  }

  /**
   * Stops answering; removes the socket file only if no successor took over
   * (after a hand-over the path is the successor's, or about to be: checking
   * the inode first would race with its rename) and it is still ours.
   */
  close(): void {
    const srv = this.server;
    this.server = null;
    if (!srv) return;
    srv.close();
    if (this.handedTo !== null || this.busy) return;
    try {
      if (fs.statSync(this.o.socketPath).ino === this.boundIno) fs.rmSync(this.o.socketPath, { force: true });
    } catch {
      /* gone */
    }
  }

  private onConnection(s: net.Socket): void {
    const log = this.o.log;
    s.on('error', () => s.destroy());
    let buf = '';
    let peer = 0;
    let sent = false;
    let adoptTimer: NodeJS.Timeout | null = null;
    const fd = handleFd(s);
    // the kernel's word on who connected (not what it will write)
    const cred = fd === null ? -9 : this.o.native.peerCred(fd);
    const refuse = (why: string): void => {
      this.o.onPeerRejected?.(why);
      s.destroy();
    };
    if (typeof cred === 'number') {
      refuse(`SO_PEERCRED: ${errnoName(cred)}`);
      return;
    }
    const early = this.o.verifyPeer?.(cred) ?? null;
    if (early) {
      refuse(early);
      return;
    }
    const send = (frame: Frame, fds: number[]): void => {
      const body = Buffer.from(JSON.stringify(frame));
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length, 0);
      const r = this.o.native.sendFds(fd as number, Buffer.concat([head, body]), fds, 5000);
      if (r < 0) throw new HandoverError('HANDOVER_ABORTED', errnoName(r), `hand-over send: ${errnoName(r)}`);
    };
    const handout = async (): Promise<void> => {
      this.busy = true;
      try {
        const list = await this.o.listeners();
        if (s.destroyed) throw new HandoverError('HANDOVER_ABORTED', 'EOF', 'the new agent went away');
        if (list.length === 0) send({ v: HANDOVER_VERSION, pid: process.pid, last: true, entries: [] }, []);
        for (let i = 0; i < list.length; i += FDS_PER_FRAME) {
          const part = list.slice(i, i + FDS_PER_FRAME);
          send(
            { v: HANDOVER_VERSION, pid: process.pid, last: i + FDS_PER_FRAME >= list.length, entries: part.map((x) => x.entry) },
            part.map((x) => x.fd),
          );
        }
        log.info('listening sockets sent to the new agent', { pid: peer, sockets: list.length });
      } catch (e) {
        if (adoptTimer) clearTimeout(adoptTimer);
        this.busy = false;
        log.warn('hand-over failed; serving on', { pid: peer, error: (e as Error).message });
        this.o.onAborted?.(peer, (e as Error).message);
        s.destroy();
      }
    };
    let records = false;
    s.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (records) {
          let rec: unknown;
          try {
            rec = JSON.parse(line);
          } catch {
            this.o.onBadRecord?.(peer, 'not JSON');
            continue;
          }
          this.o.onRecord?.(rec, peer);
          continue;
        }
        const [word, ...rest] = line.split(' ');
        if (word === 'RECORDS' && !sent) {
          // the agent we replaced, reporting connections that closed while it drained
          peer = Number(rest[1]) || 0;
          const why = this.o.verifyPeer?.(cred, peer) ?? null;
          if (why) {
            refuse(why);
            return;
          }
          if (rest[0] !== String(HANDOVER_VERSION) || rest[2] !== this.o.node) {
            this.o.onBadRecord?.(peer, `bad RECORDS header: ${line.slice(0, 100)}`);
            s.destroy();
            return;
          }
          records = true;
        } else if (word === 'HELLO' && !sent) {
          sent = true;
          peer = Number(rest[1]) || 0;
          const why = this.o.verifyPeer?.(cred, peer) ?? null;
          if (why) {
            refuse(why);
            return;
          }
          if (fd === null) {
            s.destroy();
            return;
          }
          try {
            if (rest[0] !== String(HANDOVER_VERSION)) {
              send(
                { v: HANDOVER_VERSION, pid: process.pid, last: true, error: `version ${rest[0]} not supported (this agent speaks ${HANDOVER_VERSION})` },
                [],
              );
              s.end();
              return;
            }
            if (rest[2] !== this.o.node) {
              send({ v: HANDOVER_VERSION, pid: process.pid, last: true, error: `this agent serves node ${this.o.node}, not ${rest[2] ?? '(none)'}` }, []);
              s.end();
              return;
            }
            if (this.handedTo !== null || this.busy) {
              send(
                {
                  v: HANDOVER_VERSION,
                  pid: process.pid,
                  last: true,
                  error: this.handedTo !== null ? `already handed over to pid ${this.handedTo}` : 'a hand-over is in progress',
                },
                [],
              );
              s.end();
              return;
            }
            // a successor that does not adopt in time (hung, stopped) is given up on
            const limit = this.o.adoptTimeoutMs ?? 10_000;
            adoptTimer = setTimeout(() => {
              adoptTimer = null;
              if (!this.busy) return;
              this.busy = false;
              log.warn('the new agent did not adopt the sockets in time; aborting the hand-over', { pid: peer, timeoutMs: limit });
              this.o.onAborted?.(peer, `no ADOPTED within ${limit} ms`);
              s.destroy();
            }, limit);
            void handout();
          } catch (e) {
            this.busy = false;
            log.warn('hand-over failed; serving on', { pid: peer, error: (e as Error).message });
            s.destroy();
          }
        } else if (word === 'ADOPTED' && sent && this.busy) {
          if (adoptTimer) {
            clearTimeout(adoptTimer);
            adoptTimer = null;
          }
          this.handedTo = peer;
          this.busy = false;
          s.end('OK\n');
          this.o.onAdopted(peer);
        } else if (word === 'ABORT') {
          if (adoptTimer) {
            clearTimeout(adoptTimer);
            adoptTimer = null;
          }
          if (!this.busy) {
            s.end();
            return;
          }
          this.busy = false;
          this.o.onAborted?.(peer, rest.join(' '));
          s.end();
        } else {
          s.destroy();
        }
      }
      if (buf.length > MAX_LINE) {
        this.o.onBadRecord?.(peer, 'line too long');
        s.destroy();
      }
    });
    s.on('close', () => {
      if (adoptTimer) {
        clearTimeout(adoptTimer);
        adoptTimer = null;
      }
      if (sent && this.busy) {
        // the new agent went away without adopting: keep serving
        this.busy = false;
        this.o.onAborted?.(peer, 'connection closed before ADOPTED');
      }
    });
  }
}
