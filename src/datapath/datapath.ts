// Over 500 lines on purpose: one class, the only owner of the loaded object, its pins and links; the enroll/isolate/unenroll ordering described below stays in one place rather than spread over files.
/**
 * The datapath: loads bpf/ambient.bpf.o through the native addon, keeps its
 * maps pinned under <bpffsDir>/maps, and enrolls, isolates and unenrolls
 * pods. Everything of a pod is keyed by its cgroup v2 id (its datapath
 * identity); an IP only names the pod that owns it (amb_pods):
 *
 *   enroll:   listeners registered in amb_listeners (by the agent), then
 *             amb_pod_by_cgroup + amb_pods entries, then the links
 *             (sk_lookup on the pod netns; sockops, getpeername4/6,
 *             connect6 and connect4 on the pod cgroup), each pinned under
 *             <bpffsDir>/pods/<ns>_<name>/.
 *   isolate:  the same entries with AMB_POD_ISOLATED and the same links, no
 *             listener needed: every TCP connection of the pod is refused
 *             (a pod that cannot be enrolled fails closed).
 *   unenroll: links first, then this pod's map entries (an IP's entry only
 *             while this pod still owns it), so a pod is never half captured
 *             and never takes another pod's state with it.
 *
 * Pins outlive the agent: while no agent runs, enrolled pods keep being
 * redirected to listeners that no longer exist, i.e. they fail closed.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { NativeAddon, MapInfo } from './native-api.js';
import { loadNative } from './native.js';
import { check, errnoHint, errnoName, nativeError } from './errno.js';
import { BpfObjectHandle, OwnedFd } from './handles.js';
import { NetnsHandle } from './netns.js';
import {
  MAPS,
  STRUCTS,
  type MapName,
  CFG_SOCKMAP_ACCEL,
  POD_ENROLLED,
  POD_ISOLATED,
  DATAPATH_COUNTERS,
  encodeConfig,
  encodeIp,
  encodeListenerKey,
  encodePod,
  encodeCgroupPod,
  encodeSockaddr,
  encodeU32,
  encodeU64,
  readIp,
  decodeOrigDst,
  decodePod,
  decodePodStats,
  decodeStruct,
  type AmbPodStats,
  type AmbOrigDst,
  type DatapathCounter,
  type Sockaddr,
} from './codec.js';
import { probeFeatures, requireFeatures, type FeatureCheck } from './features.js';
import { AmbientError } from '../util/errors.js';
import type { Logger } from '../util/log.js';

const PROGS = [
  'amb_connect4',
  'amb_connect6',
  'amb_getpeername4',
  'amb_getpeername6',
  'amb_bind4',
  'amb_bind6',
  'amb_sockops',
  'amb_sk_msg',
  'amb_sk_lookup',
  'amb_sk_lookup_lo',
] as const;
type ProgName = (typeof PROGS)[number];
/** Loaded when the kernel accepts it (Linux 5.17: bpf_sk_lookup.ingress_ifindex); see bpf/ambient.bpf.c. */
const OPTIONAL_PROGS: readonly ProgName[] = ['amb_sk_lookup_lo'];

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
  /** namespace/name (names the pin directory) */
  key: string;
  /** the pod's cgroup v2 id (Datapath.cgroupIdOf): the key of its datapath state */
  cgroupId: bigint;
  /** its addresses (IPv4 first) */
  ips: string[];
  netns: string;
  cgroup: string;
  /** the node's address: not captured (kubelet probes) */
  exemptSrc: string | null;
}

/** What isolate() could put in place for a pod it could not enroll. */
export interface Isolation {
  /** connect() refused (cgroup hooks attached) */
  outbound: boolean;
  /** inbound SYNs refused (sk_lookup attached, amb_pods entries isolated) */
  inbound: boolean;
}

export type OriginalDst = Pick<AmbOrigDst, 'dst' | 'cookie' | 'cgroupId' | 'createdNs'>;

/** Kept for importers of the old place: the errno table and nativeError live in ./errno.ts. */
export { nativeError };

/** The owner of the datapath's own long-lived fds (leak reports). */
const OWNER = 'datapath';

function safeDirName(key: string): string {
  return key.replace(/\//g, '_').replace(/[^A-Za-z0-9_.-]/g, '-');
}

export class Datapath {
  readonly features: FeatureCheck[];
  private readonly progFds = new Map<ProgName, OwnedFd>();
  private readonly mapFds = new Map<MapName, OwnedFd>();
  private agentSockopsLink: OwnedFd | null = null;
  private linkUpdates = 0;
  private linkUpgrades = 0;
  /** cgroup/getpeername4/6 available (Linux 5.8): apps see their original destination as peer. */
  private getpeername = false;
  /**
   * The sk_lookup program in use: amb_sk_lookup_lo (loopback SYNs are not
   * steered, so the agent can reach the app from the client's address) where
   * the kernel has it, else amb_sk_lookup.
   */
  private skLookup: 'amb_sk_lookup' | 'amb_sk_lookup_lo' = 'amb_sk_lookup';
  private closed = false;

  private constructor(
    readonly native: NativeAddon,
    readonly opts: DatapathOptions,
    private readonly log: Logger,
    features: FeatureCheck[],
  ) {
    this.features = features;
  }

  get mapDir(): string {
    return path.join(this.opts.bpffsDir, 'maps');
  }
  get podDir(): string {
    return path.join(this.opts.bpffsDir, 'pods');
  }

  static open(opts: DatapathOptions, log: Logger, native: NativeAddon = loadNative()): Datapath {
    const features = probeFeatures(native);
    if (features.every((f) => f.kind === 'fs' || (!f.ok && f.detail === 'probe failed: errno 1'))) {
      throw new AmbientError('BPF_PERMISSION', 'cannot load BPF programs: EPERM', errnoHint('EPERM'), { errno: 1 });
    }
    requireFeatures(features);
    if (!fs.existsSync(opts.bpfObject)) {
      throw new AmbientError('BPF_OBJECT', `BPF object not found: ${opts.bpfObject}`, 'build it with `make build` (clang -target bpf)');
    }
    try {
      fs.mkdirSync(path.join(opts.bpffsDir, 'maps'), { recursive: true });
      fs.mkdirSync(path.join(opts.bpffsDir, 'pods'), { recursive: true });
    } catch (e) {
      throw new AmbientError(
        'BPF_PIN',
        `cannot create ${opts.bpffsDir}: ${(e as Error).message}`,
        'bpffsDir must be on a mounted bpffs (`mount -t bpf bpf /sys/fs/bpf`)',
        { cause: e },
      );
    }
    const dp = new Datapath(native, opts, log, features);
    try {
      dp.load();
    } catch (e) {
      dp.close();
      throw e;
    }
    return dp;
  }

  /**
   * True when the datapath lets the agent reach apps from their clients'
   * addresses (the loopback-aware sk_lookup program loaded: Linux 5.17).
   */
  get clientAddressCapable(): boolean {
    return this.skLookup === 'amb_sk_lookup_lo';
  }

  private load(): void {
    const n = this.native;
    let h = BpfObjectHandle.open(n, this.opts.bpfObject, OWNER, 'rebuild the BPF object (`make build`)');
    try {
      let skip: readonly ProgName[] = [];
      let rc = h.load(this.mapDir);
      if (rc < 0) {
        // an optional program the kernel refuses (older verifier): load without it
        const first = n.lastLog().split('\n').slice(-8).join('\n');
        h.close();
        h = BpfObjectHandle.open(n, this.opts.bpfObject, OWNER, 'rebuild the BPF object (`make build`)');
        skip = OPTIONAL_PROGS;
        rc = h.load(this.mapDir, skip);
        if (rc >= 0) this.log.info('datapath loaded without the optional programs: this kernel refused them', { programs: skip, libbpf: first });
      }
      if (rc < 0) {
        const log = n.lastLog().split('\n').slice(-25).join('\n');
        const err = nativeError(
          'BPF_LOAD',
          `loading ${path.basename(this.opts.bpfObject)} failed`,
          rc,
          errnoName(rc) === 'EINVAL'
            ? `a pinned map under ${this.mapDir} may be incompatible with this build: run \`ambientd cleanup\`; libbpf said:\n${log}`
            : undefined,
        );
        if (!err.hint.includes('libbpf said')) (err as { hint: string }).hint += `\nlibbpf said:\n${log}`;
        throw err;
      }
      for (const p of PROGS) if (!skip.includes(p)) this.progFds.set(p, h.programFd(p, OWNER));
      this.skLookup = this.progFds.has('amb_sk_lookup_lo') ? 'amb_sk_lookup_lo' : 'amb_sk_lookup';
      for (const m of Object.keys(MAPS) as MapName[]) this.mapFds.set(m, h.mapFd(m, OWNER));
    } catch (e) {
      this.closeFds();
      throw e;
    } finally {
      h.close();
    }
    const accel = this.opts.acceleration === 'sockmap' && this.features.find((f) => f.name.startsWith('program type sk_msg'))?.ok;
    this.update(
      'amb_config',
      encodeU32(0),
      encodeConfig({
        outboundPort: this.opts.ports.outbound,
        inboundPort: this.opts.ports.inbound,
        hbonePort: this.opts.ports.hbone,
        mark: this.opts.mark,
        flags: accel ? CFG_SOCKMAP_ACCEL : 0,
      }),
    );
    const agentSockops = path.join(this.opts.bpffsDir, 'agent_sockops');
    if (accel) {
      check(this.native.attachSkMsg(this.prog('amb_sk_msg'), this.map('amb_sock_pairs')), 'BPF_ATTACH', 'attach sk_msg to amb_sock_pairs');
      if (this.opts.agentCgroup)
        this.agentSockopsLink = this.pinnedLink(
          OWNER,
          agentSockops,
          'amb_sockops',
          () => this.native.linkCgroup(this.prog('amb_sockops'), this.opts.agentCgroup!, 'sockops'),
          'sockops on the agent cgroup',
        );
    } else {
      // an earlier agent may have run with acceleration: take it down
      this.native.detachSkMsg(this.prog('amb_sk_msg'), this.map('amb_sock_pairs'));
      this.removePinnedLink(agentSockops);
    }
    this.getpeername = this.features.find((f) => f.name.includes('getpeername4'))?.ok ?? false;
    this.log.info('datapath loaded', {
      object: this.opts.bpfObject,
      pins: this.opts.bpffsDir,
      acceleration: accel ? 'sockmap' : 'none',
      skLookup: this.skLookup,
    });
  }

  /**
   * The pinned link at `pin` (adopted from an earlier agent) or a new one,
   * owned by `owner`. An adopted link that runs another program than ours (an
   * agent upgrade, or just an earlier load) gets ours with bpf_link_update:
   * atomic, no moment without redirection.
   */
  private pinnedLink(owner: string, pin: string, prog: ProgName, create: () => number, what: string): OwnedFd {
    if (fs.existsSync(pin)) {
      const fd = this.native.objGet(pin);
      if (fd >= 0) {
        const link = new OwnedFd(this.native, fd, 'bpf-link', owner, `link ${what}`);
        try {
          const li = this.native.linkInfo(link.fd);
          const mine = this.native.progInfo(this.prog(prog));
          if (typeof li !== 'number' && typeof mine !== 'number' && li.progId !== mine.id) {
            check(this.native.linkUpdate(link.fd, this.prog(prog)), 'BPF_ATTACH', `update ${what} to this agent's ${prog}`);
            this.linkUpdates++;
            if (li.progTag !== mine.tag) this.linkUpgrades++;
          }
        } catch (e) {
          link.close();
          throw e;
        }
        return link;
      }
      fs.rmSync(pin, { force: true });
    }
    const link = OwnedFd.take(this.native, create(), 'bpf-link', owner, `link ${what}`, 'BPF_ATTACH');
    const rc = this.native.objPin(link.fd, pin);
    if (rc < 0) {
      this.native.linkDetach(link.fd);
      link.close();
      throw nativeError('BPF_PIN', `pin ${pin}`, rc);
    }
    return link;
  }

  /** Adopted links moved to this agent's programs (upgrades: with another program tag, i.e. other code). */
  get adoptedLinks(): { updated: number; upgraded: number } {
    return { updated: this.linkUpdates, upgraded: this.linkUpgrades };
  }

  /** This agent's loaded programs (id, tag), by name. */
  programs(): Record<string, { id: number; tag: string }> {
    const out: Record<string, { id: number; tag: string }> = {};
    for (const [name, fd] of this.progFds) {
      const pi = this.native.progInfo(fd.fd);
      if (typeof pi !== 'number') out[name] = { id: pi.id, tag: pi.tag };
    }
    return out;
  }

  private removePinnedLink(pin: string): void {
    if (!fs.existsSync(pin)) return;
    const fd = this.native.objGet(pin);
    if (fd >= 0) {
      const link = new OwnedFd(this.native, fd, 'bpf-link', OWNER, `link ${pin} (removing)`);
      this.native.linkDetach(link.fd);
      link.close();
    }
    fs.rmSync(pin, { force: true });
  }

  /** The fd of one of this agent's programs (valid while the datapath is open). */
  prog(name: ProgName): number {
    const fd = this.progFds.get(name);
    if (fd === undefined) throw new AmbientError('BPF_LOAD', `program ${name} is not open`, 'the datapath is closed');
    return fd.fd;
  }
  /** The fd of one of the datapath's maps (valid while the datapath is open). */
  map(name: MapName): number {
    const fd = this.mapFds.get(name);
    if (fd === undefined) throw new AmbientError('BPF_MAP', `map ${name} is not open`, 'the datapath is closed');
    return fd.fd;
  }

  mapPinPath(name: MapName): string {
    return path.join(this.mapDir, name);
  }

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
  /** A pod's listener of one role port and family (sk_lookup steers each family's SYNs to its own). */
  registerListener(cgroupId: bigint, port: number, fd: number, family: 4 | 6 = 4): void {
    this.update('amb_listeners', encodeListenerKey(cgroupId, port, family), encodeU64(fd));
  }
  unregisterListener(cgroupId: bigint, port: number, family: 4 | 6 = 4): void {
    this.delete('amb_listeners', encodeListenerKey(cgroupId, port, family));
  }

  linkDir(key: string): string {
    return path.join(this.podDir, safeDirName(key));
  }

  /** Is this pod's redirection already in place (pinned by an earlier agent)? */
  isPinned(key: string): boolean {
    return fs.existsSync(path.join(this.linkDir(key), 'sk_lookup'));
  }

  /** The cgroup v2 id of a pod's cgroup directory (the key of its datapath state). */
  cgroupIdOf(pod: { key: string; cgroup: string }): bigint {
    const cgid = this.native.cgroupId(pod.cgroup);
    if (typeof cgid === 'number') {
      throw nativeError(
        'CGROUP_UNAVAILABLE',
        `pod ${pod.key}: cgroup ${pod.cgroup}`,
        cgid,
        'the pod cgroup v2 directory must exist (check cgroupRoot and the pod cgroup path)',
      );
    }
    return cgid;
  }

  enroll(pod: PodSpec): void {
    // held open while the links are made: the sk_lookup link goes on exactly
    // the namespace that was checked, even if the path is replaced meanwhile
    const netns = NetnsHandle.open(pod.netns, `pod ${pod.key}`);
    try {
      this.writeEntries(pod.cgroupId, pod.ips, POD_ENROLLED, pod.exemptSrc);
      try {
        this.attach(pod.key, netns, pod.cgroup);
      } catch (e) {
        this.unenroll(pod);
        throw e;
      }
    } finally {
      netns.close();
    }
  }

  /**
   * Fails a pod closed that could not be enrolled: its entries say
   * ISOLATED (connect() gets EPERM, inbound SYNs an RST) and its hooks are
   * attached, as far as its netns and cgroup exist. Never throws: what could
   * not be put in place is returned (and the caller reports it).
   */
  isolate(
    pod: { key: string; cgroupId: bigint | null; ips: string[]; netns: string | null; cgroup: string | null; exemptSrc: string | null },
    sharedIps: ReadonlySet<string> = new Set(),
  ): Isolation {
    const res: Isolation = { outbound: false, inbound: false };
    try {
      if (pod.cgroupId !== null) {
        this.update('amb_pod_by_cgroup', encodeU64(pod.cgroupId), encodeCgroupPod({ v4: null, v6: null, flags: POD_ISOLATED }));
        this.unregisterListeners(pod.cgroupId);
      }
      for (const ip of pod.ips) {
        // an address two live pods claim has no single owner: both are isolated
        const owner = sharedIps.has(ip) ? 0n : (pod.cgroupId ?? 0n);
        this.update('amb_pods', encodeIp(ip), encodePod({ cgroupId: owner, flags: POD_ISOLATED, exemptSrc: pod.exemptSrc }));
      }
    } catch (e) {
      this.log.error('isolating a pod: map update failed', { pod: pod.key, error: (e as Error).message });
      return res;
    }
    const dir = this.linkDir(pod.key);
    fs.mkdirSync(dir, { recursive: true });
    const owner = `isolate ${pod.key}`;
    if (pod.netns && fs.existsSync(pod.netns)) {
      let netns: NetnsHandle | null = null;
      try {
        netns = NetnsHandle.open(pod.netns, owner);
        const ns = netns;
        this.pinnedLink(
          owner,
          path.join(dir, 'sk_lookup'),
          this.skLookup,
          () => this.native.linkNetns(this.prog(this.skLookup), ns.path),
          `sk_lookup on ${pod.netns}`,
        ).close();
        res.inbound = pod.ips.length > 0;
      } catch (e) {
        this.log.error('isolating a pod: sk_lookup not attached', { pod: pod.key, error: (e as Error).message });
      } finally {
        netns?.close();
      }
    }
    if (pod.cgroup && pod.cgroupId !== null) {
      try {
        for (const [name, prog, type] of CONNECT_HOOKS)
          this.pinnedLink(
            owner,
            path.join(dir, name),
            prog,
            () => this.native.linkCgroup(this.prog(prog), pod.cgroup!, type),
            `${type} on ${pod.cgroup}`,
          ).close();
        res.outbound = true;
      } catch (e) {
        this.log.error('isolating a pod: connect hooks not attached', { pod: pod.key, error: (e as Error).message });
      }
    }
    return res;
  }

  /** amb_pod_by_cgroup + amb_pods entries of a pod. */
  private writeEntries(cgroupId: bigint, ips: string[], flags: number, exemptSrc: string | null): void {
    const v4 = ips.find((ip) => !ip.includes(':')) ?? null;
    const v6 = ips.find((ip) => ip.includes(':')) ?? null;
    this.update('amb_pod_by_cgroup', encodeU64(cgroupId), encodeCgroupPod({ v4, v6, flags }));
    for (const ip of ips) this.update('amb_pods', encodeIp(ip), encodePod({ cgroupId, flags, exemptSrc }));
  }

  /** The links of a pod, connect4 last: from then on its connections are captured. */
  private attach(key: string, netns: NetnsHandle, cgroup: string): void {
    const dir = this.linkDir(key);
    fs.mkdirSync(dir, { recursive: true });
    const owner = `enroll ${key}`;
    const links: OwnedFd[] = [];
    try {
      links.push(
        this.pinnedLink(
          owner,
          path.join(dir, 'sk_lookup'),
          this.skLookup,
          () => this.native.linkNetns(this.prog(this.skLookup), netns.path),
          `sk_lookup on ${netns.source}`,
        ),
      );
      links.push(
        this.pinnedLink(
          owner,
          path.join(dir, 'sockops'),
          'amb_sockops',
          () => this.native.linkCgroup(this.prog('amb_sockops'), cgroup, 'sockops'),
          `sockops on ${cgroup}`,
        ),
      );
      if (this.getpeername) {
        for (const [name, prog] of [
          ['getpeername4', 'amb_getpeername4'],
          ['getpeername6', 'amb_getpeername6'],
        ] as const) {
          links.push(this.pinnedLink(owner, path.join(dir, name), prog, () => this.native.linkCgroup(this.prog(prog), cgroup, name), `${name} on ${cgroup}`));
        }
      }
      // before the listeners count as the agent's: nothing in the pod may bind their ports from here on
      for (const [name, prog] of BIND_HOOKS)
        links.push(this.pinnedLink(owner, path.join(dir, name), prog, () => this.native.linkCgroup(this.prog(prog), cgroup, name), `${name} on ${cgroup}`));
      for (const [name, prog, type] of CONNECT_HOOKS)
        links.push(this.pinnedLink(owner, path.join(dir, name), prog, () => this.native.linkCgroup(this.prog(prog), cgroup, type), `${type} on ${cgroup}`));
    } finally {
      // the pins hold the links; this agent keeps no fd of a pod's links
      for (const l of links) l.close();
    }
  }

  private unregisterListeners(cgroupId: bigint): void {
    for (const port of [this.opts.ports.outbound, this.opts.ports.inbound, this.opts.ports.hbone])
      for (const family of [4, 6] as const) this.unregisterListener(cgroupId, port, family);
  }

  /**
   * Removes a pod's links (detached even if someone else holds them) and its
   * map entries: those keyed by its cgroup id, and an IP's entry only while
   * this pod still owns it (or nobody does) and `keepIps` does not name it
   * (another live pod claims it: its own enrollment writes it).
   */
  unenroll(pod: { key: string; cgroupId: bigint | null; ips: string[] }, keepIps: ReadonlySet<string> = new Set()): void {
    this.removeLinks(pod.key);
    for (const ip of pod.ips) {
      if (keepIps.has(ip)) continue;
      const cur = this.lookup('amb_pods', encodeIp(ip), STRUCTS.amb_pod.size);
      const owner = cur ? decodePod(cur).cgroupId : null;
      if (owner !== null && (owner === pod.cgroupId || owner === 0n)) this.delete('amb_pods', encodeIp(ip));
    }
    if (pod.cgroupId !== null) this.forgetCgroup(pod.cgroupId);
  }

  /** Links of a pod (by its key), connect hooks first. */
  removeLinks(key: string): void {
    const dir = this.linkDir(key);
    // connect4/6 first: from here on the pod's new connections are not captured
    for (const l of ['connect4', 'connect6', 'bind4', 'bind6', 'getpeername4', 'getpeername6', 'sockops', 'sk_lookup'])
      this.removePinnedLink(path.join(dir, l));
    fs.rmSync(dir, { recursive: true, force: true });
  }

  /** Every map entry keyed by a pod's cgroup id (and its in-flight original destinations). */
  private forgetCgroup(cgroupId: bigint): void {
    this.delete('amb_pod_by_cgroup', encodeU64(cgroupId));
    this.delete('amb_pod_stats', encodeU64(cgroupId));
    this.unregisterListeners(cgroupId);
    for (const e of this.rawEntries('amb_orig_dst')) {
      const v = decodeOrigDst(e.value);
      if (v && v.cgroupId === cgroupId) this.delete('amb_orig_dst', e.key);
    }
  }

  /**
   * Removes entries of pods that are not wanted any more (left by an earlier
   * agent, or by a pod that went away while no agent ran): cgroup-keyed
   * entries whose cgroup is not wanted, and IP entries of IPs no wanted pod
   * has. Returns how many pod entries went.
   */
  sweep(wantedCgroups: ReadonlySet<bigint>, wantedIps: ReadonlySet<string>): number {
    let n = 0;
    for (const e of this.rawEntries('amb_pod_by_cgroup')) {
      const cg = e.key.readBigUInt64LE(0);
      if (!wantedCgroups.has(cg)) {
        this.forgetCgroup(cg);
        n++;
      }
    }
    for (const e of this.rawEntries('amb_pod_stats')) {
      if (!wantedCgroups.has(e.key.readBigUInt64LE(0))) this.delete('amb_pod_stats', e.key);
    }
    for (const e of this.rawEntries('amb_pods')) {
      const ip = readIp(e.key, 0);
      if (ip === null || !wantedIps.has(ip)) {
        this.delete('amb_pods', e.key);
        n++;
      }
    }
    return n;
  }

  /** Pod keys (namespace/name) with pinned links (from this or an earlier agent). */
  pinnedPods(): string[] {
    try {
      return fs
        .readdirSync(this.podDir, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name.replace('_', '/'));
    } catch {
      return [];
    }
  }

  /**
   * The original destination of a captured outbound connection, by its
   * source (pod IP:port), with the app socket's cookie and the pod (cgroup
   * id) it belongs to. The entry lives exactly as long as the app socket
   * (deleted by sockops when it closes); getpeername4/6 answer from it.
   */
  originalDst(src: Sockaddr): OriginalDst | null {
    const v = this.lookup('amb_orig_dst', encodeSockaddr(src), STRUCTS.amb_orig_dst.size);
    return v ? decodeOrigDst(v) : null;
  }

  podStats(cgroupId: bigint): AmbPodStats | null {
    const v = this.lookup('amb_pod_stats', encodeU64(cgroupId), STRUCTS.amb_pod_stats.size);
    return v ? decodePodStats(v) : null;
  }

  /** Datapath refusals by reason (amb_counters). */
  counters(): Record<DatapathCounter, bigint> {
    const out = {} as Record<DatapathCounter, bigint>;
    DATAPATH_COUNTERS.forEach((name, i) => {
      const v = this.lookup('amb_counters', encodeU32(i), 8);
      out[name] = v ? v.readBigUInt64LE(0) : 0n;
    });
    return out;
  }

  /** Number of live original-destination entries (one per captured outbound socket). */
  originalDstCount(): number {
    return this.rawEntries('amb_orig_dst').length;
  }

  /** Every raw key/value of a map. */
  private rawEntries(name: MapName): Array<{ key: Buffer; value: Buffer }> {
    const spec = MAPS[name];
    const ks = spec.key === 'u32' ? 4 : spec.key === 'u64' ? 8 : STRUCTS[spec.key as keyof typeof STRUCTS].size;
    const vs = spec.value === 'u64' ? 8 : STRUCTS[spec.value as keyof typeof STRUCTS].size;
    const out: Array<{ key: Buffer; value: Buffer }> = [];
    const fd = this.map(name);
    let key: Buffer | null = null;
    for (let i = 0; i < 1_000_000; i++) {
      const next: Buffer | number = this.native.mapNextKey(fd, key, ks);
      if (typeof next === 'number') break;
      key = next;
      const v = this.native.mapLookup(fd, next, vs);
      if (typeof v !== 'number') out.push({ key: next, value: v });
    }
    return out;
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
    this.closeFds();
  }

  private closeFds(): void {
    this.agentSockopsLink?.close();
    this.agentSockopsLink = null;
    for (const fd of this.progFds.values()) fd.close();
    for (const fd of this.mapFds.values()) fd.close();
    this.progFds.clear();
    this.mapFds.clear();
  }
}

/** The bind hooks of a pod cgroup: the agent's ports in the pod are refused to its apps (its SO_REUSEPORT groups). */
const BIND_HOOKS = [
  ['bind4', 'amb_bind4'],
  ['bind6', 'amb_bind6'],
] as const;

/** The connect hooks of a pod cgroup: [pin name, program, attach type]; connect4 last. */
const CONNECT_HOOKS = [
  ['connect6', 'amb_connect6', 'connect6'],
  ['connect4', 'amb_connect4', 'connect4'],
] as const;

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
export function dumpMap(
  native: NativeAddon,
  fd: number,
  name: MapName,
  decode: (type: string, b: Buffer) => unknown = decodeTyped,
): Array<{ key: unknown; value: unknown }> {
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
