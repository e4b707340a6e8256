/**
 * Sockets inside a pod's network namespace. The native addon creates them on
 * a thread of its own (setns never touches Node's threads) and hands Node the
 * fd; from then on they are ordinary net.Server / net.Socket objects.
 */
import net from 'node:net';
import type { NativeAddon, SocketOptions } from './native-api.js';
import { errnoName, errnoNumber, nativeError } from './errno.js';
import { OwnedFd } from './handles.js';
import { AmbientError } from '../util/errors.js';
import type { Sockaddr } from './codec.js';
import { formatHostPort } from '../util/hostport.js';

export interface PodListener {
  /** the socket the datapath steers to (amb_listeners); with workers, one of its SO_REUSEPORT group */
  fd: number;
  /** every socket of this listener: one, or one per data-plane worker (an SO_REUSEPORT group) */
  fds: readonly number[];
  /** the address it is bound to */
  ip: string;
  port: number;
  /** stops serving and closes its sockets */
  close(): void;
  /** the server accepting on it, when this thread serves it (no workers) */
  server?: net.Server;
}

/**
 * Options of the agent's own TCP sockets, set when they are made (a
 * listener's are inherited by every socket it accepts: no call per
 * connection): `socketBuffer` caps SO_SNDBUF/SO_RCVBUF (in-pod peers: bounded
 * kernel memory per socket), `liveness` turns on keepalive (and, with
 * userTimeoutMs, TCP_USER_TIMEOUT).
 */
export interface AgentSocketOptions {
  socketBuffer?: number;
  liveness?: { keepIdleMs: number; keepIntervalMs: number; keepCount: number; userTimeoutMs?: number };
}

function socketOpts(o: AgentSocketOptions | undefined): Partial<SocketOptions> {
  return {
    ...(o?.socketBuffer ? { sndBuf: o.socketBuffer, rcvBuf: o.socketBuffer } : {}),
    ...(o?.liveness ?? {}),
  };
}

/**
 * A new listening socket bound to ip:port inside the netns (the fd is the
 * caller's). With SO_REUSEPORT: each data-plane worker has one socket of the
 * group, and the kernel spreads the connections over them (sk_lookup's and
 * the connect rewrite's target is any socket of the group). Apps in the pod
 * cannot join the group: the bind hooks refuse them the agent's ports.
 */
export function newListenerFd(native: NativeAddon, netns: string, bind: Sockaddr, mark: number, opts?: AgentSocketOptions): number {
  const rc = native.socketInNetns(netns, {
    family: bind.ip.includes(':') ? 6 : 4,
    mark,
    reuseAddr: true,
    reusePort: true,
    bind,
    listen: 4096,
    ...socketOpts(opts),
  });
  const hint =
    errnoName(rc) === 'EADDRINUSE'
      ? 'another process in the pod uses an ambientd port (15001/15006/15008); free it or change `ports` in the agent config'
      : 'check the pod netns still exists and the agent has CAP_NET_ADMIN';
  if (rc < 0) throw nativeError('LISTENER_FAILED', `cannot listen on ${formatHostPort(bind)} in ${netns}`, rc, hint);
  return rc;
}

/** A listening socket bound to ip:port inside the netns, served by `onConnection`. */
export async function listenInNetns(
  native: NativeAddon,
  netns: string,
  bind: Sockaddr,
  mark: number,
  onConnection: (s: net.Socket) => void,
  opts?: AgentSocketOptions,
): Promise<PodListener> {
  const sock = new OwnedFd(native, newListenerFd(native, netns, bind, mark, opts), 'socket', 'listenInNetns', `listener ${formatHostPort(bind)} in ${netns}`);
  // From server.listen({fd}) on, Node owns the fd: it closes it itself when
  // its listen() fails, so closing it here too could close a reused number.
  return serveListeningFd(sock.release(), bind, onConnection);
}

/**
 * Serves an already listening socket (made by listenInNetns, or inherited
 * from the previous agent at a hand-over): its accept queue is kept as is.
 */
export async function serveListeningFd(fd: number, bind: Sockaddr, onConnection: (s: net.Socket) => void): Promise<PodListener & { server: net.Server }> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, fd, fds: [fd], ip: bind.ip, port: bind.port, close: () => server.close() };
}

/**
 * Listening sockets on these ports in the netns that are not ours (`own`:
 * their socket inodes): an app that bound an agent port with SO_REUSEPORT
 * before the pod was enrolled would share the agent's group. Empty when the
 * kernel cannot list them (the bind hooks still refuse new ones).
 */
export function foreignListeners(
  native: Pick<NativeAddon, 'tcpSockets'>,
  netns: string,
  ports: readonly number[],
  own: ReadonlySet<bigint>,
): Array<{ ip: string; port: number; uid: number }> {
  const TCP_LISTEN = 10;
  const list = native.tcpSockets(netns, 1 << TCP_LISTEN);
  if (typeof list === 'number') return [];
  return list.filter((s) => ports.includes(s.sport) && !own.has(s.inode)).map((s) => ({ ip: s.src, port: s.sport, uid: s.uid }));
}

/** The fd under a Node server or socket (Linux: the libuv handle exposes it); null when closed. */
export function handleFd(x: net.Server | net.Socket | null | undefined): number | null {
  const fd = (x as unknown as { _handle?: { fd?: number } } | null | undefined)?._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/**
 * A connection that could not be opened from a pod's netns: an AmbientError
 * (UPSTREAM_FAILED) that also carries the system's name for why, e.g.
 * ECONNREFUSED or ETIMEDOUT (ECONNFAILED when the system gave none): callers
 * report `errnoName` as the reason of the failed connection.
 */
export class DialError extends AmbientError {
  constructor(
    readonly errnoName: string,
    message: string,
    hint = 'the destination refused or did not answer; check it listens and policy allows it',
  ) {
    const n = errnoNumber(errnoName);
    super('UPSTREAM_FAILED', message, hint, n !== undefined ? { errno: n } : {});
    this.name = 'DialError';
  }
}

/**
 * Options of a dial: buffers and liveness, and optionally the source address.
 * `bind` with `transparent` (IP_TRANSPARENT/IPV6_TRANSPARENT) lets the source
 * be an address that is not the pod's, e.g. the real client's; the replies
 * then need the pod's return path (./return-path.ts) and `mark` = its mark.
 * A transparent socket is also bound to the pod's loopback device: it only
 * ever reaches the pod's own app, and its SYN must arrive on lo, where the
 * datapath (amb_sk_lookup_lo) lets it through unsteered.
 */
export interface DialOptions extends AgentSocketOptions {
  bind?: Sockaddr;
  transparent?: boolean;
}

/**
 * Connects to `dst` from inside the netns (so the source address is the
 * pod's, or `opts.bind`), with the agent's mark on the socket. Resolves once
 * connected. `opts`: buffers and liveness set on the socket as it is made.
 */
export function dialFromNetns(native: NativeAddon, netns: string, dst: Sockaddr, mark: number, timeoutMs = 10_000, opts?: DialOptions): Promise<net.Socket> {
  // made on a thread of its own, joined at once (34-41 µs of this thread's loop); the addon's
  // socketInNetnsAsync (the netns's long-lived thread) is not used here: with it the destination
  // agent's RSS under the chaos suite's non-reading app grew past the memory formula (docs/WORKERS.md)
  const rc = native.socketInNetns(netns, {
    family: dst.ip.includes(':') ? 6 : 4,
    mark,
    ...socketOpts(opts),
    ...(opts?.bind ? { bind: { ip: opts.bind.ip, port: opts.bind.port } } : {}),
    ...(opts?.transparent ? { transparent: true, viaLoopback: true } : {}),
  });
  if (rc < 0)
    return Promise.reject(
      new DialError(errnoName(rc), `socket in ${netns}: ${errnoName(rc)}`, 'check the pod netns still exists and the agent has CAP_NET_ADMIN'),
    );
  const fd = new OwnedFd(native, rc, 'socket', 'dialFromNetns', `socket to ${formatHostPort(dst)} in ${netns}`);
  let sock: net.Socket;
  try {
    sock = new net.Socket({ fd: fd.fd, allowHalfOpen: true, readable: true, writable: true });
  } catch (e) {
    fd.close();
    return Promise.reject(e);
  }
  fd.release(); // the net.Socket owns it now
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new DialError('ETIMEDOUT', `connect ${formatHostPort(dst)} timed out`));
    }, timeoutMs);
    const onError = (e: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(new DialError(e.code ?? 'ECONNFAILED', `connect ${formatHostPort(dst)}: ${e.code ?? e.message}`));
    };
    sock.once('error', onError);
    sock.connect({ port: dst.port, host: dst.ip }, () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
  });
}
