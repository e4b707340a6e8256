/**
 * A data-plane worker thread (docs/WORKERS.md). It serves its share of every
 * enrolled pod's listeners (its own socket of each SO_REUSEPORT group: the
 * kernel spreads connections over the group), runs its own MeshProxy (HBONE
 * pools and server, relays, policy checks) and reports what happened to the
 * control thread in batches. It never serves metrics or admin, and holds no
 * signing key: certificates come from the control thread on request.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type net from 'node:net';
import { loadNative } from '../datapath/native.js';
import { serveListeningFd } from '../datapath/sockets.js';
import { decodeOrigDst, encodeSockaddr, STRUCTS } from '../datapath/codec.js';
import { errnoName } from '../datapath/errno.js';
import { emptySnapshot, MeshIndex, podIps } from '../discovery/model.js';
import type { IdentityManager } from '../identity/manager.js';
import { ActivePolicies } from '../policy/active.js';
import { ConnectionTracker, type TrackedConnection } from '../proxy/connections.js';
import { MeshProxy, type MeshPod } from '../proxy/mesh.js';
import { AmbientError, type ErrorCode } from '../util/errors.js';
import { liveHeap } from '../util/heap.js';
import { Logger } from '../util/log.js';
import type { CertWire, FromWorker, PodWire, ToWorker, WorkerEvent, WorkerInit, WorkerStats } from './protocol.js';

const port = parentPort!;
const init = workerData as WorkerInit;

// ---- events to the control thread: one message per event-loop turn -------
let events: WorkerEvent[] = [];
let flushArmed = false;
function post(m: FromWorker): void {
  port.postMessage(m);
}
function flush(): void {
  flushArmed = false;
  if (events.length === 0) return;
  const batch = events;
  events = [];
  post({ t: 'batch', events: batch, sockets: mesh.openSockets() });
}
function emit(e: WorkerEvent): void {
  events.push(e);
  if (!flushArmed) {
    flushArmed = true;
    setImmediate(flush);
  }
}

const log = new Logger('ambientd', init.logLevel, (line) => emit({ k: 'log', line })).child(`worker${init.index}`);
const native = loadNative();

// ---- the model and the node's pods, as the control thread pushes them -----
let index = new MeshIndex(emptySnapshot(), init.trustDomain);
const policies = new ActivePolicies({ trustDomain: init.trustDomain, rootNamespace: init.rootNamespace });
const podsByKey = new Map<string, MeshPod>();
const podsByIp = new Map<string, MeshPod>();
function setPods(list: PodWire[]): void {
  podsByKey.clear();
  podsByIp.clear();
  for (const p of list) addPod(p);
}
/** A PodWire is a MeshPod as it is (plain data): indexed by key and by each of its addresses. */
function addPod(pod: PodWire): MeshPod {
  podsByKey.set(pod.key, pod);
  for (const ip of podIps(pod.info)) podsByIp.set(ip, pod);
  return pod;
}

// ---- certificates: asked of the control thread, kept until dropped or expired
const certs = new Map<string, Promise<CertWire>>();
const certWaits = new Map<number, { resolve(c: CertWire): void; reject(e: Error): void }>();
let nextReq = 1;
function certificate(id: string): Promise<CertWire> {
  let p = certs.get(id);
  if (!p) {
    p = new Promise<CertWire>((resolve, reject) => {
      const req = nextReq++;
      certWaits.set(req, { resolve, reject });
      post({ t: 'certReq', req, id });
    });
    certs.set(id, p);
    // a failure is not kept: the next connection asks again
    p.then(
      (c) => {
        const ttl = Date.parse(c.notAfter) - Date.now();
        if (!(ttl > 0)) certs.delete(id);
      },
      () => certs.delete(id),
    );
  }
  return p.then((c) => {
    if (Date.parse(c.notAfter) <= Date.now()) {
      certs.delete(id);
      return certificate(id);
    }
    return c;
  });
}
// what MeshProxy reads of a WorkloadCert: the PEMs and notAfter (a Date)
const identities = {
  get: (id: string) => certificate(id).then((c) => ({ ...c, notAfter: new Date(c.notAfter) })),
} as unknown as IdentityManager;

// ---- the data plane --------------------------------------------------------
const tracker = new ConnectionTracker(0);
tracker.on('open', (rec: TrackedConnection) => emit({ k: 'open', rec: { ...rec } }));
tracker.on('close', (rec: TrackedConnection) => emit({ k: 'end', id: rec.id, outcome: rec.outcome!, sent: rec.bytesSent, received: rec.bytesReceived }));

const origDstFd = init.origDstMapFd;
const mesh: MeshProxy = new MeshProxy({
  native,
  mark: init.mark,
  clientAddress: init.clientAddressMark === null ? null : { mark: init.clientAddressMark },
  ports: init.ports,
  nodePorts: init.nodePorts,
  trustDomain: init.trustDomain,
  log: log.child('proxy'),
  tracker,
  count: (reason) => emit({ k: 'count', reason, n: 1 }),
  identities,
  originalDst: (src) => {
    if (origDstFd === null) return null;
    const v = native.mapLookup(origDstFd, encodeSockaddr(src), STRUCTS.amb_orig_dst.size);
    if (typeof v === 'number') {
      if (errnoName(v) === 'ENOENT') return null;
      throw new AmbientError('BPF_MAP', `lookup amb_orig_dst: ${errnoName(v)}`, 'the datapath map is gone: the agent is stopping');
    }
    return decodeOrigDst(v);
  },
  index: () => index,
  authorize: (dst, src) => policies.authorize(dst, src),
  localPodByIp: (ip) => podsByIp.get(ip) ?? null,
  limits: init.limits,
  liveness: init.liveness,
  onLimit: (reason, message) =>
    log.once(reason, 'warn', 'a limit was hit: the connection was refused', {
      reason,
      message,
      worker: init.index,
      hint: 'raise the limit in "limits:" if this is legitimate load (each worker holds 1/N of the node-wide caps)',
    }),
});

// ---- listeners ------------------------------------------------------------
const servers = new Map<number, net.Server>();
async function listen(m: Extract<ToWorker, { t: 'listen' }>): Promise<void> {
  const own = addPodIfNew(m.pod);
  const onConnection =
    m.role === 'outbound'
      ? (s: net.Socket) => mesh.onOutbound(podsByKey.get(m.pod.key) ?? own, s)
      : m.role === 'inbound'
        ? (s: net.Socket) => mesh.onInbound(podsByKey.get(m.pod.key) ?? own, s)
        : (s: net.Socket) => mesh.hbone.handle(s);
  try {
    const l = await serveListeningFd(m.fd, { ip: m.ip, port: m.port }, onConnection);
    l.server.on('error', (e: NodeJS.ErrnoException) => {
      emit({ k: 'count', reason: e.code === 'EMFILE' || e.code === 'ENFILE' ? 'accept_out_of_fds' : 'accept_failed', n: 1 });
      log.once(`accept:${e.code}`, 'error', 'accept() failed: pending connections were refused; accepting resumes by itself', {
        listener: `${m.pod.key} ${m.role}`,
        error: e.code,
      });
    });
    servers.set(m.id, l.server);
    post({ t: 'listening', id: m.id });
  } catch (e) {
    native.closeFd(m.fd);
    post({ t: 'listening', id: m.id, error: (e as Error).message });
  }
}
function addPodIfNew(p: PodWire): MeshPod {
  return podsByKey.get(p.key) ?? addPod(p);
}

function stats(): WorkerStats {
  const s = mesh.stats();
  return {
    server: s.server as unknown as WorkerStats['server'],
    pools: s.pools as unknown as WorkerStats['pools'],
    sockets: mesh.openSockets(),
    windows: {
      window: mesh.windows.window,
      openStreams: mesh.windows.openStreams,
      changes: mesh.windows.changes,
      settingsTimeouts: mesh.windows.settingsTimeouts,
    },
    dials: { inUse: mesh.dials.inUse, hits: mesh.dials.hits },
  };
}

async function call(m: Extract<ToWorker, { t: 'call' }>): Promise<unknown> {
  switch (m.op) {
    case 'stats':
      return stats();
    case 'heap':
      return liveHeap();
    case 'close':
      if (m.force) for (const s of servers.values()) s.close();
      await mesh.close({ force: m.force });
      return stats();
    case 'hboneClose':
      await mesh.hbone.close({ graceMs: m.graceMs }).catch(() => undefined);
      return stats();
  }
}

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'model': {
      index = new MeshIndex(m.snapshot, init.trustDomain);
      policies.update([...m.snapshot.policies.values()]);
      // policies, labels or identities may have changed: this worker's live connections are checked again
      mesh.recheck();
      return;
    }
    case 'pods':
      setPods(m.pods);
      return;
    case 'listen':
      void listen(m);
      return;
    case 'unlisten': {
      const s = servers.get(m.id);
      servers.delete(m.id);
      s?.close();
      return;
    }
    case 'release':
      mesh.releasePod(m.key);
      return;
    case 'cert': {
      const w = certWaits.get(m.req);
      certWaits.delete(m.req);
      if (!w) return;
      if (m.cert) w.resolve(m.cert);
      else
        w.reject(
          new AmbientError(
            (m.error?.code ?? 'WORKER_UNAVAILABLE') as ErrorCode,
            m.error?.message ?? 'no certificate',
            'see the agent log: the control thread could not issue it',
          ),
        );
      return;
    }
    case 'certDrop':
      certs.delete(m.id);
      return;
    case 'logLevel':
      log.setLevel(m.level);
      return;
    case 'call':
      call(m).then(
        (value) => {
          flush();
          post({ t: 'reply', req: m.req, value });
        },
        (e: unknown) => post({ t: 'reply', req: m.req, error: (e as Error)?.message ?? String(e) }),
      );
      return;
  }
});

post({ t: 'ready' });
