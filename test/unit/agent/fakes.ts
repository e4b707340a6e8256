// Fakes for the agent's unit tests: a datapath that records its calls, netns
// handles, listeners, and the deps of a PodCapture.
import type net from 'node:net';
import type { CaptureDeps, CaptureDatapath, ListenRequest, NetnsRef } from '../../../src/agent/pod-capture.js';
import type { CaptureSetDeps } from '../../../src/agent/captures.js';
import { IdentityLeases } from '../../../src/agent/identity-lease.js';
import type { Isolation } from '../../../src/datapath/datapath.js';
import type { PodListener } from '../../../src/datapath/sockets.js';
import { AmbientError } from '../../../src/util/errors.js';
import { Logger } from '../../../src/util/log.js';

export type Call = [string, ...unknown[]];

export class FakeDatapath implements CaptureDatapath {
  readonly calls: Call[] = [];
  readonly pinned = new Set<string>();
  /** what isolate() manages to put in place */
  isolation: Isolation = { outbound: true, inbound: true };
  isPinned(key: string): boolean {
    return this.pinned.has(key);
  }
  cgroupIdOf(pod: { key: string; cgroup: string }): bigint {
    if (pod.cgroup.includes('missing')) throw new AmbientError('CGROUP_UNAVAILABLE', `pod ${pod.key}: cgroup ${pod.cgroup}: ENOENT`, 'test');
    return BigInt(pod.cgroup.length);
  }
  registerListener(cgroupId: bigint, port: number, fd: number, family: 4 | 6 = 4): void {
    this.calls.push(['registerListener', cgroupId, port, fd, family]);
  }
  enroll(pod: { key: string; netns: string; ips: string[] }): void {
    this.calls.push(['enroll', pod.key, pod.netns, pod.ips]);
    this.pinned.add(pod.key);
  }
  isolate(pod: { key: string; netns: string | null }, shared: ReadonlySet<string> = new Set()): Isolation {
    this.calls.push(['isolate', pod.key, pod.netns, [...shared]]);
    this.pinned.add(pod.key);
    return { ...this.isolation, inbound: this.isolation.inbound && pod.netns !== null };
  }
  unenroll(pod: { key: string; cgroupId: bigint | null; ips: string[] }, keepIps: ReadonlySet<string> = new Set()): void {
    this.calls.push(['unenroll', pod.key, [...keepIps]]);
    this.pinned.delete(pod.key);
  }
  pinnedPods(): string[] {
    return [...this.pinned];
  }
  removeLinks(key: string): void {
    this.calls.push(['removeLinks', key]);
    this.pinned.delete(key);
  }
  sweep(): number {
    return 0;
  }
  named(name: string): Call[] {
    return this.calls.filter((c) => c[0] === name);
  }
}

export class FakeNetns implements NetnsRef {
  closed = false;
  /** the path now names another namespace (sandbox re-created, pid reused) */
  replaced = false;
  constructor(
    readonly source: string,
    readonly inode: bigint,
    private readonly fd: number,
  ) {}
  get path(): string {
    if (this.closed) throw new AmbientError('NETNS_UNAVAILABLE', `netns handle for ${this.source} is closed`, 'a bug: a released capture used its netns');
    return `/proc/self/fd/${this.fd}`;
  }
  sameAs(source: string): boolean {
    return !this.replaced && source === this.source;
  }
  close(): void {
    this.closed = true;
  }
}

export interface CaptureWorld {
  deps: CaptureSetDeps;
  dp: FakeDatapath;
  handles: FakeNetns[];
  listens: ListenRequest[];
  closedListeners: number;
  forgotten: string[];
  prefetched: string[];
  released: string[];
  counts: Map<string, number>;
  lines: Array<{ level: string; msg: string }>;
  leases: IdentityLeases;
  now: number;
  /** listen() fails for this role */
  failRole: string | null;
  retries: number;
}

export function captureWorld(o: { missingNetns?: string[] } = {}): CaptureWorld {
  const w = {
    handles: [],
    listens: [],
    closedListeners: 0,
    forgotten: [],
    prefetched: [],
    released: [],
    counts: new Map(),
    lines: [],
    now: 1_000_000,
    failRole: null,
    retries: 0,
  } as unknown as CaptureWorld;
  w.dp = new FakeDatapath();
  w.leases = new IdentityLeases((id) => w.forgotten.push(id));
  let fd = 100;
  const deps: CaptureDeps = {
    ports: { outbound: 15001, inbound: 15006, hbone: 15008 },
    mark: 0x539,
    nodeIP: '10.100.0.1',
    datapath: w.dp,
    native: { tcpSockets: () => [], destroyTcpSockets: () => 0 },
    openNetns: (path, owner) => {
      if (o.missingNetns?.includes(path)) throw new AmbientError('NETNS_UNAVAILABLE', `${owner}: netns ${path} does not exist`, 'test');
      const h = new FakeNetns(path, 4000n + BigInt(fd), fd++);
      w.handles.push(h);
      return h;
    },
    listen: async (req) => {
      w.listens.push(req);
      await Promise.resolve();
      if (w.failRole === req.role)
        throw new AmbientError('LISTENER_FAILED', `cannot listen on ${req.bind.ip}:${req.bind.port} in ${req.netns.path}: EADDRINUSE`, 'test');
      const server = {
        close: () => {
          w.closedListeners++;
        },
      } as unknown as net.Server;
      const n = fd++;
      return { server, fd: n, fds: [n], close: () => server.close(), ...req.bind } satisfies PodListener;
    },
    proxy: { outbound: () => undefined, inbound: () => undefined, hbone: () => undefined, release: (k) => w.released.push(k) },
    leases: w.leases,
    prefetch: (id) => w.prefetched.push(id),
    count: (r, n = 1) => w.counts.set(r, (w.counts.get(r) ?? 0) + n),
    countEnrollFailure: () => undefined,
    log: new Logger('test', 'debug', (l) => {
      const j = JSON.parse(l) as { level: string; msg: string };
      w.lines.push({ level: j.level, msg: j.msg });
    }),
    now: () => w.now,
  };
  w.deps = {
    ...deps,
    datapath: w.dp,
    node: 'n1',
    trustDomain: 'cluster.local',
    retry: () => {
      w.retries++;
    },
    active: () => true,
  };
  return w;
}
