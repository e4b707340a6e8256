/**
 * Where the agent's listening sockets come from: the predecessor's, handed
 * over (same address and port, and for a pod the same netns), or new ones
 * (node ports on the node; pod ports inside the pod's netns, through its
 * handle). accept() failures on any of them are counted and logged once.
 */
import type http from 'node:http';
import type { NativeAddon } from '../datapath/native-api.js';
import { handleFd, listenInNetns, newListenerFd, serveListeningFd, type AgentSocketOptions, type PodListener } from '../datapath/sockets.js';
import { podWire } from '../workers/protocol.js';
import type { WorkerPool } from '../workers/pool.js';
import type { HandoverEntry } from '../lifecycle/handover.js';
import { AmbientError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { Handover } from './handover.js';
import type { ListenRequest } from './pod-capture.js';
import { formatHostPort } from '../util/hostport.js';

export type NodeRole = 'readiness' | 'metrics' | 'admin';

export interface ListenersDeps {
  native: NativeAddon;
  mark: number;
  handover: Pick<Handover, 'take' | 'takeAll' | 'adopted'>;
  /** the data-plane workers serving pod listeners; null: this thread serves them */
  workers(): WorkerPool | null;
  /** liveness and buffer options of a new socket (MeshProxy.socketOptions; the proxy exists before any pod listens) */
  socketOptions(kind: 'app' | 'remote' | 'hbone'): AgentSocketOptions;
  count(reason: string): void;
  log: Logger;
  /** fds open now and the limit (for the out-of-fds log line) */
  fds(): { fds: number | null; fdLimit: number | null };
}

export class Listeners {
  constructor(private readonly d: ListenersDeps) {}

  /**
   * accept() failed on a listener (EMFILE/ENFILE: out of fds): libuv drops the
   * pending connections (they see a reset: closed, never open) and accepts
   * again as soon as fds are free; we count it and log it once, never exit.
   */
  acceptError(e: NodeJS.ErrnoException, where: string): void {
    const code = e.code ?? 'ERROR';
    const outOfFds = code === 'EMFILE' || code === 'ENFILE';
    this.d.count(outOfFds ? 'accept_out_of_fds' : 'accept_failed');
    this.d.log.once(`accept:${code}`, 'error', 'accept() failed: pending connections were refused; accepting resumes by itself', {
      listener: where,
      error: code,
      ...this.d.fds(),
      hint: outOfFds
        ? 'the agent ran out of file descriptors: raise its nofile limit (the agent raises the soft limit to the hard one at start), or lower limits.*'
        : 'see the error',
    });
  }

  /** A node port (readiness, metrics, admin). */
  async node(server: http.Server, port: number, address: string, what: NodeRole, setting: string): Promise<void> {
    const fd = this.d.handover.take('node', what, { ip: address, port });
    if (fd !== null) this.d.handover.adopted();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new AmbientError(
            'LISTENER_FAILED',
            `${what} listener ${formatHostPort({ ip: address, port })}: ${e.code}`,
            `another agent runs in this network namespace (hand-over needs handoverSocket set alike on both), or change ${setting}`,
            { cause: e },
          ),
        ),
      );
      if (fd !== null) server.listen({ fd }, () => resolve());
      else server.listen(port, address, () => resolve());
    });
    server.on('error', (e: NodeJS.ErrnoException) => this.acceptError(e, what));
  }

  /** A pod's listener (PodCapture's `listen`). */
  async pod(req: ListenRequest): Promise<PodListener> {
    // outbound: the app in this pod (bounded buffers); inbound: plaintext clients; hbone: peers (TCP_USER_TIMEOUT)
    const kind = req.role === 'outbound' ? 'app' : req.role === 'hbone' ? 'hbone' : 'remote';
    const pool = this.d.workers();
    if (pool) return this.podGroup(req, pool, kind);
    // every socket of the predecessor's group (it may have had workers): each served here, none closed
    // with connections in its queue
    const fds = this.d.handover.takeAll('pod', req.role, { ...req.bind, key: req.key, netnsInode: req.netns.inode });
    if (fds.length === 0) {
      const l = await listenInNetns(this.d.native, req.netns.path, req.bind, this.d.mark, req.onConnection, this.d.socketOptions(kind));
      l.server!.on('error', (e: NodeJS.ErrnoException) => this.acceptError(e, `${req.key} ${req.role}`));
      return l;
    }
    const servers: Array<import('node:net').Server> = [];
    try {
      for (const fd of fds) {
        const l = await serveListeningFd(fd, req.bind, req.onConnection).catch((e: unknown) => {
          this.d.native.closeFd(fd);
          throw e;
        });
        servers.push(l.server);
        l.server.on('error', (e: NodeJS.ErrnoException) => this.acceptError(e, `${req.key} ${req.role}`));
        this.d.handover.adopted();
      }
    } catch (e) {
      for (const srv of servers) srv.close();
      for (const fd of fds.slice(servers.length + 1)) this.d.native.closeFd(fd);
      throw e;
    }
    return { server: servers[0], fd: fds[0]!, fds, ip: req.bind.ip, port: req.bind.port, close: () => servers.forEach((srv) => srv.close()) };
  }

  /**
   * With data-plane workers: one socket per worker in an SO_REUSEPORT group
   * (the predecessor's, all of them, then new ones up to the worker count),
   * each served by its worker. An old agent's socket without SO_REUSEPORT
   * cannot be joined: its workers then share it.
   */
  private async podGroup(req: ListenRequest, pool: WorkerPool, kind: 'app' | 'remote' | 'hbone'): Promise<PodListener> {
    const fds = this.d.handover.takeAll('pod', req.role, { ...req.bind, key: req.key, netnsInode: req.netns.inode });
    for (let i = 0; i < fds.length; i++) this.d.handover.adopted();
    try {
      while (fds.length < pool.size) {
        try {
          fds.push(newListenerFd(this.d.native, req.netns.path, req.bind, this.d.mark, this.d.socketOptions(kind)));
        } catch (e) {
          // the predecessor's socket has no SO_REUSEPORT (an older agent): the workers share it
          if (fds.length > 0 && /: EADDRINUSE$/.test(String((e as Error).message))) break;
          throw e;
        }
      }
    } catch (e) {
      for (const fd of fds) this.d.native.closeFd(fd);
      throw e;
    }
    const group = await pool.serve(fds, req.role, podWire(req.pod), req.bind.ip, req.bind.port);
    return { fd: fds[0]!, fds, ip: req.bind.ip, port: req.bind.port, close: () => group.close() };
  }

  /** The node ports' listening sockets, for a successor. */
  static nodeEntries(servers: Array<[NodeRole, http.Server | null]>): Array<{ entry: HandoverEntry; fd: number }> {
    const out: Array<{ entry: HandoverEntry; fd: number }> = [];
    for (const [role, srv] of servers) {
      const fd = handleFd(srv);
      const a = srv?.address();
      if (fd === null || !a || typeof a === 'string') continue;
      out.push({ entry: { kind: 'node', role, ip: a.address, port: a.port }, fd });
    }
    return out;
  }
}
