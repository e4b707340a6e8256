/**
 * The datapath: loads bpf/ambient.bpf.o through the native addon, keeps its
 * maps pinned under <bpffsDir>/maps, and enrolls/unenrolls pods:
 *
 *   enroll:   listeners registered in amb_listeners (by the agent), then
 *             amb_pods + amb_pod_by_cgroup entries, then the links
 *             (connect4 + sockops on the pod cgroup, sk_lookup on the pod
 *             netns), each pinned under <bpffsDir>/pods/<ns>_<name>/.
 *   unenroll: links first, then map entries, so a pod is never half captured.
 *
 * Pins outlive the agent: while no agent runs, enrolled pods keep being
 * redirected to listeners that no longer exist, i.e. they fail closed.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { NativeAddon, MapInfo } from './native-api.js';
import { loadNative, errnoName } from './native.js';
import {
  MAPS, STRUCTS, type MapName, CFG_SOCKMAP_ACCEL, POD_ENROLLED, encodeConfig, encodeIp, encodeListenerKey,
  encodePod, encodePodAddrs, encodeSockaddr, encodeU32, encodeU64, readIp, decodeOrigDst, decodePodStats, decodeStruct,
  type AmbPodStats, type Sockaddr,
} from './codec.js';
import { probeFeatures, requireFeatures, type FeatureCheck } from './features.js';
import { AmbientError, type ErrorCode } from '../util/errors.js';
import type { Logger } from '../util/log.js';

const PROGS = ['amb_connect4', 'amb_getpeername4', 'amb_sockops', 'amb_sk_msg', 'amb_sk_lookup'] as const;
type ProgName = (typeof PROGS)[number];

export interface DatapathOptions {
  bpffsDir: string;
  bpfObject: string;
  ports: { outbound: number; inbound: number; hbone: number };
  mark: number;
  acceleration: 'sockmap' | 'none';
  /** cgroup v2 dir of the agent: gets the sockops hook (sk_msg pairs). */
  agentCgroup: string | null;
}

export interface PodSpec {
  /** namespace/name */
  key: string;
  ip: string;
  netns: string;
  cgroup: string;
  index: number;
  /** the node's address: not captured (kubelet probes) */
  exemptSrc: string | null;
}

const HINTS: Partial<Record<string, string>> = {
  EPERM: 'needs CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN (run as root or grant the capabilities)',
  EACCES: 'needs CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN; the verifier may also have rejected a program (see the log)',
  ENOENT: 'a path does not exist: check bpffs is mounted and the netns/cgroup paths are right',
  ENOSPC: 'a BPF map is full: raise its max_entries or unenroll pods',
  E2BIG: 'a BPF map is full or a value is too large',
  EINVAL: 'the kernel rejected the request: it may be older than 5.10 or lack a BPF feature',
  EBUSY: 'something else holds this hook; remove the other program or run `ambientd cleanup`',
  EEXIST: 'a stale pin exists; run `ambientd cleanup`',
};

export function nativeError(code: ErrorCode, what: string, rc: number, extraHint?: string): AmbientError {
  const name = errnoName(rc);
  const hint = extraHint ?? HINTS[name] ?? 'see the agent log for details';
  const c: ErrorCode = name === 'EPERM' || (name === 'EACCES' && code !== 'BPF_LOAD') ? 'BPF_PERMISSION' : code;
  return new AmbientError(c, `${what}: ${name}`, hint, { errno: -rc });
}

function check(rc: number, code: ErrorCode, what: string): number {
  if (rc < 0) throw nativeError(code, what, rc);
  return rc;
}

function safeDirName(key: string): string {
  return key.replace(/\//g, '_').replace(/[^A-Za-z0-9_.-]/g, '-');
}

export class Datapath {
  readonly features: FeatureCheck[];
  private readonly progFds = new Map<ProgName, number>();
  private readonly mapFds = new Map<MapName, number>();
  private agentSockopsLink = -1;
  private linkUpdates = 0;
  private linkUpgrades = 0;
  /** cgroup/getpeername4 available (Linux 5.8): apps see their original destination as peer. */
  private getpeername = false;
  private closed = false;

  private constructor(readonly native: NativeAddon, readonly opts: DatapathOptions, private readonly log: Logger, features: FeatureCheck[]) {
    this.features = features;
  }

  get mapDir(): string { return path.join(this.opts.bpffsDir, 'maps'); }
  get podDir(): string { return path.join(this.opts.bpffsDir, 'pods'); }

  static open(opts: DatapathOptions, log: Logger, native: NativeAddon = loadNative()): Datapath {
    const features = probeFeatures(native);
    if (features.every((f) => f.kind === 'fs' || (!f.ok && f.detail === 'probe failed: errno 1'))) {
      throw new AmbientError('BPF_PERMISSION', 'cannot load BPF programs: EPERM', HINTS.EPERM!);
    }
    requireFeatures(features);
    if (!fs.existsSync(opts.bpfObject)) {
      throw new AmbientError('BPF_OBJECT', `BPF object not found: ${opts.bpfObject}`, 'build it with `make build` (clang -target bpf)');
    }
    try {
      fs.mkdirSync(path.join(opts.bpffsDir, 'maps'), { recursive: true });
      fs.mkdirSync(path.join(opts.bpffsDir, 'pods'), { recursive: true });
    } catch (e) {
      throw new AmbientError('BPF_PIN', `cannot create ${opts.bpffsDir}: ${(e as Error).message}`, 'bpffsDir must be on a mounted bpffs (`mount -t bpf bpf /sys/fs/bpf`)', { cause: e });
    }
    const dp = new Datapath(native, opts, log, features);
    dp.load();
    return dp;
  }

  private load(): void {
    const n = this.native;
    const h = n.objectOpen(this.opts.bpfObject);
    if (h < 0) throw nativeError('BPF_OBJECT', `cannot open ${this.opts.bpfObject}`, h, 'rebuild the BPF object (`make build`)');
    try {
      const rc = n.objectLoad(h, this.mapDir);
      if (rc < 0) {
        const log = n.lastLog().split('\n').slice(-25).join('\n');
        const err = nativeError('BPF_LOAD', `loading ${path.basename(this.opts.bpfObject)} failed`, rc,
          errnoName(rc) === 'EINVAL' ? `a pinned map under ${this.mapDir} may be incompatible with this build: run \`ambientd cleanup\`; libbpf said:\n${log}` : undefined);
        if (!err.hint.includes('libbpf said')) (err as { hint: string }).hint += `\nlibbpf said:\n${log}`;
        throw err;
      }
      for (const p of PROGS) this.progFds.set(p, check(n.objectProgramFd(h, p), 'BPF_LOAD', `program ${p}`));
      for (const m of Object.keys(MAPS) as MapName[]) this.mapFds.set(m, check(n.objectMapFd(h, m), 'BPF_MAP', `map ${m}`));
    } finally {
      n.objectClose(h);
    }
    const accel = this.opts.acceleration === 'sockmap' && this.features.find((f) => f.name.startsWith('program type sk_msg'))?.ok;
    this.update('amb_config', encodeU32(0), encodeConfig({
      outboundPort: this.opts.ports.outbound, inboundPort: this.opts.ports.inbound, hbonePort: this.opts.ports.hbone,
      mark: this.opts.mark, flags: accel ? CFG_SOCKMAP_ACCEL : 0,
    }));
    const agentSockops = path.join(this.opts.bpffsDir, 'agent_sockops');
    if (accel) {
      check(this.native.attachSkMsg(this.prog('amb_sk_msg'), this.map('amb_sock_pairs')), 'BPF_ATTACH', 'attach sk_msg to amb_sock_pairs');
      if (this.opts.agentCgroup) this.agentSockopsLink = this.pinnedLink(agentSockops, 'amb_sockops', () => this.native.linkCgroup(this.prog('amb_sockops'), this.opts.agentCgroup!, 'sockops'), 'sockops on the agent cgroup');
    } else {
      // an earlier agent may have run with acceleration: take it down
      this.native.detachSkMsg(this.prog('amb_sk_msg'), this.map('amb_sock_pairs'));
      this.removePinnedLink(agentSockops);
    }
    this.getpeername = this.features.find((f) => f.name.includes('getpeername4'))?.ok ?? false;
    this.log.info('datapath loaded', { object: this.opts.bpfObject, pins: this.opts.bpffsDir, acceleration: accel ? 'sockmap' : 'none' });
  }

  /** Adopts a pinned link if there is one, else creates and pins it. Returns its fd. */
  /**
   * The pinned link at `pin` (adopted from an earlier agent) or a new one.
   * An adopted link that runs another program than ours (an agent upgrade, or
   * just an earlier load) gets ours with bpf_link_update: atomic, no moment
   * without redirection.
   */
  private pinnedLink(pin: string, prog: ProgName, create: () => number, what: string): number {
    if (fs.existsSync(pin)) {
      const fd = this.native.objGet(pin);
      if (fd >= 0) {
        const li = this.native.linkInfo(fd);
        const mine = this.native.progInfo(this.prog(prog));
        if (typeof li !== 'number' && typeof mine !== 'number' && li.progId !== mine.id) {
          const rc = this.native.linkUpdate(fd, this.prog(prog));
          if (rc < 0) {
            this.native.closeFd(fd);
            throw nativeError('BPF_ATTACH', `update ${what} to this agent's ${prog}`, rc);
          }
          this.linkUpdates++;
          if (li.progTag !== mine.tag) this.linkUpgrades++;
        }
        return fd;
      }
      fs.rmSync(pin, { force: true });
    }
    const fd = create();
    if (fd < 0) throw nativeError('BPF_ATTACH', `attach ${what}`, fd);
    const rc = this.native.objPin(fd, pin);
    if (rc < 0) {
      this.native.linkDetach(fd);
      this.native.closeFd(fd);
      throw nativeError('BPF_PIN', `pin ${pin}`, rc);
    }
    return fd;
  }

  /** Adopted links moved to this agent's programs (upgrades: with another program tag, i.e. other code). */
  get adoptedLinks(): { updated: number; upgraded: number } {
    return { updated: this.linkUpdates, upgraded: this.linkUpgrades };
  }

  /** This agent's loaded programs (id, tag), by name. */
  programs(): Record<string, { id: number; tag: string }> {
    const out: Record<string, { id: number; tag: string }> = {};
    for (const [name, fd] of this.progFds) {
      const pi = this.native.progInfo(fd);
      if (typeof pi !== 'number') out[name] = { id: pi.id, tag: pi.tag };
    }
    return out;
  }

  private removePinnedLink(pin: string): void {
    if (!fs.existsSync(pin)) return;
    const fd = this.native.objGet(pin);
    if (fd >= 0) {
      this.native.linkDetach(fd);
      this.native.closeFd(fd);
    }
    fs.rmSync(pin, { force: true });
  }

  prog(name: ProgName): number { return this.progFds.get(name)!; }
  map(name: MapName): number {
    const fd = this.mapFds.get(name);
    if (fd === undefined) throw new AmbientError('BPF_MAP', `map ${name} is not open`, 'the datapath is closed');
    return fd;
  }

  mapPinPath(name: MapName): string { return path.join(this.mapDir, name); }

  update(name: MapName, key: Buffer, value: Buffer, flags = 0): void {
    check(this.native.mapUpdate(this.map(name), key, value, flags), 'BPF_MAP', `update ${name}`);
  }

  lookup(name: MapName, key: Buffer, size: number): Buffer | null {
    const r = this.native.mapLookup(this.map(name), key, size);
    if (typeof r === 'number') {
      if (errnoName(r) === 'ENOENT') return null;
      throw nativeError('BPF_MAP', `lookup ${name}`, r);
    }
    return r;
  }

  delete(name: MapName, key: Buffer): boolean {
    const rc = this.native.mapDelete(this.map(name), key);
    if (rc < 0 && errnoName(rc) !== 'ENOENT') throw nativeError('BPF_MAP', `delete ${name}`, rc);
    return rc === 0;
  }

  /** Registers an agent listener (fd) for a pod and role port in amb_listeners. */
  registerListener(podIp: string, port: number, fd: number): void {
    this.update('amb_listeners', encodeListenerKey(podIp, port), encodeU64(fd));
  }
  unregisterListener(podIp: string, port: number): void {
    this.delete('amb_listeners', encodeListenerKey(podIp, port));
  }

  linkDir(key: string): string { return path.join(this.podDir, safeDirName(key)); }

  /** Is this pod's redirection already in place (pinned by an earlier agent)? */
  isPinned(key: string): boolean {
    return fs.existsSync(path.join(this.linkDir(key), 'sk_lookup'));
  }

  enroll(pod: PodSpec): void {
    const cgid = this.native.cgroupId(pod.cgroup);
    if (typeof cgid === 'number') {
      throw new AmbientError('CGROUP_UNAVAILABLE', `pod ${pod.key}: cgroup ${pod.cgroup}: ${errnoName(cgid)}`, 'the pod cgroup v2 directory must exist (check cgroupRoot and the pod cgroup path)', { errno: -cgid });
    }
    if (!fs.existsSync(pod.netns)) {
      throw new AmbientError('NETNS_UNAVAILABLE', `pod ${pod.key}: netns ${pod.netns} does not exist`, 'the pod sandbox is gone or the netns path is wrong');
    }
    this.update('amb_pods', encodeIp(pod.ip), encodePod({ podIndex: pod.index, flags: POD_ENROLLED, exemptSrc: pod.exemptSrc }));
    this.update('amb_pod_by_cgroup', encodeU64(cgid), encodePodAddrs({ v4: pod.ip.includes(':') ? null : pod.ip, v6: pod.ip.includes(':') ? pod.ip : null }));
    const dir = this.linkDir(pod.key);
    fs.mkdirSync(dir, { recursive: true });
    const fds: number[] = [];
    try {
      fds.push(this.pinnedLink(path.join(dir, 'sk_lookup'), 'amb_sk_lookup', () => this.native.linkNetns(this.prog('amb_sk_lookup'), pod.netns), `sk_lookup on ${pod.netns}`));
      fds.push(this.pinnedLink(path.join(dir, 'sockops'), 'amb_sockops', () => this.native.linkCgroup(this.prog('amb_sockops'), pod.cgroup, 'sockops'), `sockops on ${pod.cgroup}`));
      if (this.getpeername) fds.push(this.pinnedLink(path.join(dir, 'getpeername4'), 'amb_getpeername4', () => this.native.linkCgroup(this.prog('amb_getpeername4'), pod.cgroup, 'getpeername4'), `getpeername4 on ${pod.cgroup}`));
      // connect4 last: from here on the pod's connections are captured
      fds.push(this.pinnedLink(path.join(dir, 'connect4'), 'amb_connect4', () => this.native.linkCgroup(this.prog('amb_connect4'), pod.cgroup, 'connect4'), `connect4 on ${pod.cgroup}`));
    } catch (e) {
      this.unenroll(pod.key, pod.ip);
      throw e;
    } finally {
      for (const fd of fds) this.native.closeFd(fd);
    }
  }

  /** Removes a pod's links (detached even if someone else holds them) and map entries. */
  unenroll(key: string, ip: string | null): void {
    const dir = this.linkDir(key);
    // connect4 first: from here on the pod's new connections are not captured
    for (const l of ['connect4', 'getpeername4', 'sockops', 'sk_lookup']) this.removePinnedLink(path.join(dir, l));
    fs.rmSync(dir, { recursive: true, force: true });
    if (ip) this.forgetIp(ip);
  }

  /** Deletes every map entry of a pod address (amb_pods, stats, its cgroup entries). */
  forgetIp(ip: string): void {
    this.delete('amb_pods', encodeIp(ip));
    this.delete('amb_pod_stats', encodeIp(ip));
    for (const e of this.dump('amb_pod_by_cgroup')) {
      const v = e.value as { v4: string | null; v6: string | null };
      if (v.v4 === ip || v.v6 === ip) this.delete('amb_pod_by_cgroup', encodeU64(e.key as bigint));
    }
  }

  /** Pod keys (namespace/name) with pinned links (from this or an earlier agent). */
  pinnedPods(): string[] {
    try {
      return fs.readdirSync(this.podDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name.replace('_', '/'));
    } catch {
      return [];
    }
  }

  /** Pod IPs with an amb_pods entry. */
  enrolledIps(): string[] {
    return this.dump('amb_pods').map((e) => ipOfKey(e.key)).filter((x): x is string => x !== null);
  }

  /**
   * The original destination of a captured outbound connection, by its source
   * (pod IP:port). The entry stays (getpeername4 answers from it); it is
   * overwritten by the next capture from the same port and aged out by LRU.
   */
  originalDst(src: Sockaddr): Sockaddr | null {
    const v = this.lookup('amb_orig_dst', encodeSockaddr(src), STRUCTS.amb_orig_dst.size);
    return v ? decodeOrigDst(v)?.dst ?? null : null;
  }

  podStats(ip: string): AmbPodStats | null {
    const v = this.lookup('amb_pod_stats', encodeIp(ip), STRUCTS.amb_pod_stats.size);
    return v ? decodePodStats(v) : null;
  }

  mapInfo(name: MapName): MapInfo {
    const r = this.native.mapInfo(this.map(name));
    if (typeof r === 'number') throw nativeError('BPF_MAP', `info ${name}`, r);
    return r;
  }

  /** Every entry of a map, decoded with field names (sockhash values are socket cookies). */
  dump(name: MapName): Array<{ key: unknown; value: unknown }> {
    return dumpMap(this.native, this.map(name), name);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.agentSockopsLink >= 0) this.native.closeFd(this.agentSockopsLink);
    for (const fd of this.progFds.values()) this.native.closeFd(fd);
    for (const fd of this.mapFds.values()) this.native.closeFd(fd);
    this.progFds.clear();
    this.mapFds.clear();
  }
}

function ipOfKey(k: unknown): string | null {
  const o = k as { family: number; addr: number[] };
  const b = Buffer.alloc(20);
  b[0] = o.family;
  Buffer.from(o.addr).copy(b, 4);
  return readIp(b, 0);
}

function decodeTyped(t: string, b: Buffer): unknown {
  if (t === 'u32') return b.readUInt32LE(0);
  if (t === 'u64') return b.readBigUInt64LE(0);
  return decodeStruct(t as keyof typeof STRUCTS, b);
}

function sizeOf(t: string): number {
  if (t === 'u32') return 4;
  if (t === 'u64') return 8;
  return STRUCTS[t as keyof typeof STRUCTS].size;
}

/**
 * Iterates a map through its fd; used by the agent and by `inspect maps`.
 * `decode` turns a key/value buffer of the given type into what is shown.
 */
export function dumpMap(native: NativeAddon, fd: number, name: MapName, decode: (type: string, b: Buffer) => unknown = decodeTyped): Array<{ key: unknown; value: unknown }> {
  const spec = MAPS[name];
  const ks = sizeOf(spec.key);
  const vs = sizeOf(spec.value);
  const out: Array<{ key: unknown; value: unknown }> = [];
  let key: Buffer | null = null;
  for (let i = 0; i < 1_000_000; i++) {
    const next: Buffer | number = native.mapNextKey(fd, key, ks);
    if (typeof next === 'number') break;
    key = next;
    const v = native.mapLookup(fd, next, vs);
    if (typeof v === 'number') continue; // raced with a delete, or a sockhash (no user-space lookup)
    out.push({ key: decode(spec.key, next), value: decode(spec.value, v) });
  }
  return out;
}
