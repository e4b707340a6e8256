/**
 * Start-up checks, run by `ambientd agent` before anything else (after its
 * settings are read): the capabilities, mounts and cgroup namespace the agent
 * needs. Each failure is a PreflightError naming what is missing and the line
 * of deploy/ambientd.yaml that grants it (MANIFEST_ITEMS, one table; a unit test
 * checks that every entry is really in the manifest). The agent then exits
 * with PREFLIGHT_EXIT_CODE, not ready, having touched nothing. Without these
 * checks a missing NET_ADMIN, cgroup mount or /run/netns left a ready agent
 * whose pods were isolated (docs/IMAGE.md).
 *
 * The probes (CapEff, statfs, access, /proc) are injectable for unit tests.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AmbientError, type PreflightCode } from '../util/errors.js';

/** The exit code of an agent that failed its start-up checks (EX_CONFIG). */
export const PREFLIGHT_EXIT_CODE = 78;

/** The manifest file the table below refers to (relative to the repository). */
export const MANIFEST_FILE = 'deploy/ambientd.yaml';

/** The agent's container in the DaemonSet. */
const CONTAINER = 'DaemonSet ambientd, container ambientd';

/** Linux capability numbers (include/uapi/linux/capability.h). */
export const CAPABILITY_BITS = { NET_ADMIN: 12, SYS_PTRACE: 19, SYS_ADMIN: 21, SYS_RESOURCE: 24, BPF: 39 } as const;
export type Capability = keyof typeof CAPABILITY_BITS;

/** What the agent needs, as deploy/ambientd.yaml grants it. */
export type ManifestItem =
  | { kind: 'capability'; capability: Capability }
  | { kind: 'mount'; volume: string; mountPath: string; hostPath: string }
  | { kind: 'command'; command: readonly string[] }
  | { kind: 'config'; key: string; value: string }
  | { kind: 'podSpec'; field: string; value: boolean };

/** The DaemonSet's entrypoint: enter the host cgroup namespace, then run the agent (scripts/image/enter-host-cgroupns). */
export const HOST_CGROUPNS_ENTRYPOINT = '/opt/ambientd/bin/enter-host-cgroupns';

export const MANIFEST_ITEMS = {
  BPF: { kind: 'capability', capability: 'BPF' },
  NET_ADMIN: { kind: 'capability', capability: 'NET_ADMIN' },
  SYS_ADMIN: { kind: 'capability', capability: 'SYS_ADMIN' },
  SYS_PTRACE: { kind: 'capability', capability: 'SYS_PTRACE' },
  SYS_RESOURCE: { kind: 'capability', capability: 'SYS_RESOURCE' },
  bpffs: { kind: 'mount', volume: 'bpffs', mountPath: '/sys/fs/bpf', hostPath: '/sys/fs/bpf' },
  cgroup: { kind: 'mount', volume: 'cgroup', mountPath: '/sys/fs/cgroup', hostPath: '/sys/fs/cgroup' },
  netns: { kind: 'mount', volume: 'netns', mountPath: '/run/netns', hostPath: '/run/netns' },
  // client-address preservation sets tcp_fwmark_accept in pod netns; the container's own /proc/sys is read-only
  hostProc: { kind: 'mount', volume: 'host-proc', mountPath: '/host/proc', hostPath: '/proc' },
  // the manifest's agents get certificates from the cluster CA (no key, no CA directory on the node); an agent
  // without caAddress runs the built-in CA, which needs a writable host directory at caDir
  ca: { kind: 'config', key: 'caAddress', value: 'ambientd-ca.ambientd-system.svc:15012' },
  run: { kind: 'mount', volume: 'run', mountPath: '/run/ambientd', hostPath: '/run/ambientd' },
  hostCgroupns: { kind: 'command', command: [HOST_CGROUPNS_ENTRYPOINT, '/proc/1/ns/cgroup', 'node', '/opt/ambientd/dist/src/cli.js'] },
  cgroupRoot: { kind: 'config', key: 'cgroupRoot', value: '/sys/fs/cgroup' },
  hostPID: { kind: 'podSpec', field: 'hostPID', value: true },
} as const satisfies Record<string, ManifestItem>;

export type ManifestItemName = keyof typeof MANIFEST_ITEMS;

/** "deploy/ambientd.yaml: <where>: <what>", the line an operator fixes. */
export function manifestLine(name: ManifestItemName): string {
  const item: ManifestItem = MANIFEST_ITEMS[name];
  switch (item.kind) {
    case 'capability':
      return `${MANIFEST_FILE}: ${CONTAINER}, securityContext.capabilities.add: ${item.capability}`;
    case 'mount':
      return `${MANIFEST_FILE}: ${CONTAINER}, volumeMounts: {name: ${item.volume}, mountPath: ${item.mountPath}} with volumes: {name: ${item.volume}, hostPath.path: ${item.hostPath}}`;
    case 'command':
      return `${MANIFEST_FILE}: ${CONTAINER}, command: [${item.command.join(', ')}]`;
    case 'config':
      return `${MANIFEST_FILE}: ConfigMap ambientd-config, agent.yaml: ${item.key}: ${item.value}`;
    case 'podSpec':
      return `${MANIFEST_FILE}: DaemonSet ambientd, template.spec.${item.field}: ${item.value}`;
  }
}

export class PreflightError extends AmbientError {
  readonly item: ManifestItemName;
  constructor(code: PreflightCode, item: ManifestItemName, message: string, hint: string) {
    super(code, message, `${hint}; in the DaemonSet: ${manifestLine(item)}`);
    this.name = 'PreflightError';
    this.item = item;
  }
}

/** What the checks read; the defaults read this process's /proc and file systems. */
export interface PreflightProbes {
  /** CapEff of this process */
  effectiveCapabilities(): bigint;
  /** /proc/sys/kernel/cap_last_cap: the highest capability this kernel knows */
  lastCapability(): number;
  /** `uname -r` */
  kernelRelease(): string;
  /** statfs f_type of the path, or null when it does not exist */
  fsType(p: string): number | null;
  isDirectory(p: string): boolean;
  /** null when the directory exists and is writable (or could be created, when missing); else the errno code */
  writableError(p: string): string | null;
  /** a file's text, or null */
  read(p: string): string | null;
  /** a symlink's target (e.g. /proc/1/ns/cgroup), or null when not readable */
  readLink(p: string): string | null;
  /** set by enter-host-cgroupns when nsenter could not enter the host cgroup namespace */
  cgroupnsEntryError(): string | null;
  /** this process's pid (1 in a pid namespace of its own) */
  pid(): number;
  /** true in a container (an overlay root, or a Kubernetes pod) */
  inContainer(): boolean;
  /** the mountinfo "root" (the path inside its file system) of the mount holding p: "/" for a file system's own root, the directory for a bind mount */
  mountRoot(p: string): string | null;
}

export const BPF_FS_MAGIC = 0xcafe4a11;
export const PROC_SUPER_MAGIC = 0x9fa0;
export const CGROUP2_SUPER_MAGIC = 0x63677270;

/** The directory itself if it exists, else its nearest existing ancestor. */
function nearestExisting(p: string, isDirectory: (p: string) => boolean): string {
  let d = path.resolve(p);
  while (d !== '/' && !isDirectory(d)) d = path.dirname(d);
  return d;
}

export const systemProbes: PreflightProbes = {
  effectiveCapabilities() {
    const line = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return line ? BigInt('0x' + line[1]!) : 0n;
  },
  lastCapability() {
    try {
      return Number(fs.readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
    } catch {
      return CAPABILITY_BITS.BPF; // not readable: assume a kernel with CAP_BPF
    }
  },
  kernelRelease: () => os.release(),
  fsType(p) {
    try {
      return fs.statfsSync(p).type;
    } catch {
      return null;
    }
  },
  isDirectory(p) {
    try {
      return fs.statSync(p).isDirectory();
    } catch {
      return false;
    }
  },
  writableError(p) {
    // access(2) reports EROFS for a read-only file system and EACCES for modes
    try {
      fs.accessSync(nearestExisting(p, systemProbes.isDirectory), fs.constants.W_OK);
      return null;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code ?? String(e);
    }
  },
  read(p) {
    try {
      return fs.readFileSync(p, 'utf8');
    } catch {
      return null;
    }
  },
  readLink(p) {
    try {
      return fs.readlinkSync(p);
    } catch {
      return null;
    }
  },
  cgroupnsEntryError: () => process.env.AMBIENTD_CGROUPNS_ERROR || null,
  pid: () => process.pid,
  // A container's root is an overlay (podman, containerd, CRI-O); kubelet also sets KUBERNETES_SERVICE_HOST in
  // every container. Not /proc/1/root (closed on some hosts), /.dockerenv (development machines that are
  // themselves containers have it, with an ext4 root) nor /run/.containerenv (podman --read-only has none).
  inContainer() {
    const rootLine = (systemProbes.read('/proc/self/mountinfo') ?? '')
      .split('\n')
      .filter((l) => l.split(' ')[4] === '/')
      .pop();
    const looksLikeOne = rootLine?.split(' - ')[1]?.startsWith('overlay ') === true || Boolean(process.env.KUBERNETES_SERVICE_HOST);
    // a container has its own mount namespace: in the one of pid 1 (the host's init with hostPID, or a VM's
    // or machine's whose root happens to be an overlay) the agent is not in one, whatever the root looks like
    let ownMountNs = true;
    try {
      ownMountNs = fs.readlinkSync('/proc/self/ns/mnt') !== fs.readlinkSync('/proc/1/ns/mnt');
    } catch {
      // /proc/1's namespaces unreadable (no SYS_PTRACE, reported on its own): keep what the root says
    }
    return looksLikeOne && ownMountNs;
  },
  mountRoot(p) {
    const text = systemProbes.read('/proc/self/mountinfo');
    if (text === null) return null;
    const unescape = (f: string): string => f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const dir = nearestExisting(p, systemProbes.isDirectory);
    let best: { point: string; root: string } | null = null;
    for (const line of text.split('\n')) {
      const f = line.split(' ');
      if (f.length < 5) continue;
      const root = unescape(f[3]!);
      const point = unescape(f[4]!);
      const under = point === '/' || dir === point || dir.startsWith(point + '/');
      // later lines mount over earlier ones at the same point
      if (under && (best === null || point.length >= best.point.length)) best = { point, root };
    }
    return best?.root ?? null;
  },
};

/** The settings the checks need (a subset of AgentConfig). */
export interface PreflightSettings {
  cgroupRoot: string;
  bpffsDir: string;
  caDir: string;
  /** the cluster CA's address; null: the built-in CA (which keeps its root in caDir) */
  caAddress?: string | null;
  handoverSocket: string | null;
  /** set explicitly (--agent-cgroup): the agent's own cgroup is not looked up */
  agentCgroup: string | null;
  /** preserve: pods get a return path, which needs a writable procfs (the host's, in a container) */
  clientAddress?: 'preserve' | 'pod';
}

export interface PreflightResult {
  errors: PreflightError[];
  /** the cgroup v2 root to use: cgroupRoot, or <cgroupRoot>/unified on a hybrid host */
  cgroupRoot: string;
  /** what was adjusted (logged by the agent) */
  notes: string[];
}

/** The kernel release as [major, minor]. */
function kernelVersion(release: string): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/**
 * The capabilities the agent needs here: NET_ADMIN, SYS_ADMIN, SYS_PTRACE
 * always; BPF where the kernel has it (5.8+); SYS_RESOURCE only where BPF maps
 * are charged to RLIMIT_MEMLOCK (before 5.11; later kernels charge memcg, and
 * hosts may keep it out of the bounding set).
 */
export function requiredCapabilities(probes: Pick<PreflightProbes, 'lastCapability' | 'kernelRelease'>): Capability[] {
  const caps: Capability[] = [];
  if (probes.lastCapability() >= CAPABILITY_BITS.BPF) caps.push('BPF');
  caps.push('NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE');
  const [major, minor] = kernelVersion(probes.kernelRelease());
  if (major < 5 || (major === 5 && minor < 11)) caps.push('SYS_RESOURCE');
  return caps;
}

const CAP_USE: Record<Capability, string> = {
  BPF: 'load the datapath and create its maps',
  NET_ADMIN: "attach the datapath's hooks and listen with IP_TRANSPARENT and SO_MARK in pods",
  SYS_ADMIN: "enter pods' network namespaces and the host cgroup namespace",
  SYS_PTRACE: "open other processes' /proc/<pid>/ns/*",
  SYS_RESOURCE: 'raise RLIMIT_MEMLOCK for BPF maps (kernels before 5.11)',
};

/** The cgroup v2 path of a /proc/<pid>/cgroup text ("0::/path"), or null. */
function cgroupV2Path(text: string | null): string | null {
  const line = text?.split('\n').find((l) => l.startsWith('0::'));
  return line === undefined ? null : line.slice(3).trim();
}

/** Runs every check; never throws for what it finds (the caller reports all errors at once). */
export function preflight(settings: PreflightSettings, probes: PreflightProbes = systemProbes): PreflightResult {
  const errors: PreflightError[] = [];
  const notes: string[] = [];

  // capabilities
  const eff = probes.effectiveCapabilities();
  for (const cap of requiredCapabilities(probes)) {
    if ((eff >> BigInt(CAPABILITY_BITS[cap])) & 1n) continue;
    errors.push(
      new PreflightError(
        'PREFLIGHT_CAPABILITY_MISSING',
        cap,
        `capability CAP_${cap} is not in the agent's effective set (CapEff ${eff.toString(16).padStart(16, '0')}); the agent needs it to ${CAP_USE[cap]}`,
        `grant CAP_${cap} to the agent's container`,
      ),
    );
  }

  // host pid: pods are found through /proc/<pid>; pid 1 is then the node's init, never the agent (in a pid
  // namespace of its own the entrypoint execs into the agent as pid 1, and /proc/1/ns/cgroup is its own)
  if (probes.pid() === 1) {
    errors.push(
      new PreflightError(
        'PREFLIGHT_PID_NAMESPACE',
        'hostPID',
        "the agent is pid 1: it runs in a pid namespace of its own, where pods' processes and the host's cgroup namespace are not visible",
        "run the agent in the host's pid namespace",
      ),
    );
  }

  // cgroup namespace: the host's (kubelet gives containers a private one on cgroup v2; the entrypoint leaves it)
  const entryError = probes.cgroupnsEntryError();
  const own = probes.readLink('/proc/self/ns/cgroup');
  const init = probes.readLink('/proc/1/ns/cgroup');
  const initPath = cgroupV2Path(probes.read('/proc/1/cgroup'));
  let privateNs: string | null = null;
  if (entryError !== null) privateNs = `the entrypoint could not enter the host cgroup namespace (${entryError})`;
  else if (own !== null && init !== null && own !== init) privateNs = `its cgroup namespace ${own} is not that of pid 1 (${init})`;
  // /proc/1/ns/* not readable (some inits refuse): pid 1 outside our namespace shows as "/.."
  else if (initPath !== null && initPath.startsWith('/..')) privateNs = `pid 1's cgroup reads ${initPath} from here: outside this cgroup namespace`;
  if (privateNs !== null) {
    errors.push(
      new PreflightError(
        'PREFLIGHT_CGROUP_NAMESPACE',
        'hostCgroupns',
        `the agent runs in a private cgroup namespace: ${privateNs}; pods' and its own cgroup paths would not be paths under the host's cgroup root`,
        'run the agent in the host cgroup namespace (the image\'s entrypoint does "nsenter --cgroup=/proc/1/ns/cgroup"; it needs CAP_SYS_ADMIN and CAP_SYS_PTRACE and host pid)',
      ),
    );
  }

  // bpffs: the pins' directory (or its nearest existing parent) is on a bpffs
  const bpfBase = nearestExisting(settings.bpffsDir, probes.isDirectory);
  const bpfType = probes.fsType(bpfBase);
  if (bpfType !== BPF_FS_MAGIC) {
    errors.push(
      new PreflightError(
        'PREFLIGHT_MOUNT_MISSING',
        'bpffs',
        `${bpfBase} (for bpffsDir ${settings.bpffsDir}) is not on a bpffs (f_type ${bpfType === null ? 'none' : '0x' + bpfType.toString(16)}): pins would not outlive the agent`,
        "mount the host's bpffs (/sys/fs/bpf, mount -t bpf bpf /sys/fs/bpf on the host if it has none) into the agent",
      ),
    );
  }

  // the cgroup v2 root; on hybrid hosts (v1 controllers at /sys/fs/cgroup) v2 is at <root>/unified
  let cgroupRoot = settings.cgroupRoot;
  let cgroupOk = probes.fsType(cgroupRoot) === CGROUP2_SUPER_MAGIC;
  if (!cgroupOk && probes.fsType(path.join(cgroupRoot, 'unified')) === CGROUP2_SUPER_MAGIC) {
    notes.push(`cgroupRoot ${cgroupRoot} is a hybrid layout: cgroup v2 is at ${path.join(cgroupRoot, 'unified')}, used instead`);
    cgroupRoot = path.join(cgroupRoot, 'unified');
    cgroupOk = true;
  }
  if (!cgroupOk) {
    errors.push(
      new PreflightError(
        'PREFLIGHT_MOUNT_MISSING',
        probes.isDirectory(settings.cgroupRoot) ? 'cgroupRoot' : 'cgroup',
        `cgroupRoot ${settings.cgroupRoot} is not a cgroup v2 mount (nor is ${path.join(settings.cgroupRoot, 'unified')})`,
        "set cgroupRoot to the host's cgroup v2 mount and mount it into the agent (cgroup v1 alone is not supported)",
      ),
    );
  } else if (privateNs === null && settings.agentCgroup === null) {
    // the host's hierarchy, not the container's own view: the agent's own cgroup is under it
    const ownPath = cgroupV2Path(probes.read('/proc/self/cgroup'));
    if (ownPath !== null && ownPath !== '/' && !probes.isDirectory(path.join(cgroupRoot, ownPath))) {
      errors.push(
        new PreflightError(
          'PREFLIGHT_MOUNT_MISSING',
          'cgroup',
          `${cgroupRoot} is not the host's cgroup v2 hierarchy: the agent's own cgroup ${ownPath} is not under it`,
          "mount the host's /sys/fs/cgroup into the agent (replacing the container's own view)",
        ),
      );
    }
  }

  // network namespaces that the CNI (or the sandbox) bind-mounts
  if (!probes.isDirectory('/run/netns')) {
    errors.push(
      new PreflightError(
        'PREFLIGHT_MOUNT_MISSING',
        'netns',
        "/run/netns is not a directory: pods' network namespaces named there cannot be entered",
        "mount the host's /run/netns into the agent (read-only, HostToContainer propagation)",
      ),
    );
  }

  // state: the CA directory and the hand-over socket's directory are writable (not the read-only root) and, in a
  // container, the host's (a bind mount): the CA's root and the hand-over socket must outlive the container
  const inContainer = probes.inContainer();
  const stateDir = (item: 'ca' | 'run', dir: string, what: string, why: string, hint: string): void => {
    const error = probes.writableError(dir);
    if (error !== null) {
      errors.push(new PreflightError('PREFLIGHT_MOUNT_MISSING', item, `${what} ${dir} is not writable (${error}): ${why}`, hint));
      return;
    }
    const root = inContainer ? probes.mountRoot(dir) : null;
    if (root === '/') {
      errors.push(
        new PreflightError(
          'PREFLIGHT_MOUNT_MISSING',
          item,
          `${what} ${dir} is in the container's own file system, not a directory mounted from the host: ${why}`,
          hint,
        ),
      );
    }
  };
  if (!settings.caAddress) {
    stateDir(
      'ca',
      settings.caDir,
      'caDir',
      'without caAddress the built-in CA keeps its root there across restarts',
      "set caAddress to the cluster CA as the manifest does (no key on the node), or mount a host directory at caDir (the container's root file system is read-only)",
    );
  }
  // client-address preservation writes tcp_fwmark_accept in pod netns: in a container through the host's procfs
  if (inContainer && settings.clientAddress !== 'pod' && probes.fsType('/host/proc') !== PROC_SUPER_MAGIC)
    errors.push(
      new PreflightError(
        'PREFLIGHT_MOUNT_MISSING',
        'hostProc',
        "the host's procfs is not mounted at /host/proc: client-address preservation sets tcp_fwmark_accept in each pod's netns through it (the container's own /proc/sys is read-only)",
        "mount the host's /proc at /host/proc, or set clientAddress: pod (apps then see their pod's own address as their clients')",
      ),
    );
  if (settings.handoverSocket !== null) {
    stateDir(
      'run',
      path.dirname(settings.handoverSocket),
      "the hand-over socket's directory",
      'restarts could not pass the listening sockets on',
      'mount a host directory there, shared by the old and the new agent pod',
    );
  }
  return { errors, cgroupRoot, notes };
}

/** All errors as one text for stderr: each "CODE: message" and its hint. */
export function describePreflight(errors: readonly PreflightError[]): string {
  return (
    `the agent is missing what it needs to start (${errors.length} start-up check${errors.length === 1 ? '' : 's'} failed; nothing was changed):\n` +
    errors.map((e) => `  ${e.code}: ${e.message}\n    hint: ${e.hint}`).join('\n')
  );
}
