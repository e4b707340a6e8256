/**
 * Running ambientd from its container image as the manifests do (docs/IMAGE.md):
 * the podman flags are read from deploy/ambientd.yaml (the agent DaemonSet) and
 * deploy/uninstall.yaml (the cleanup DaemonSet), not restated, so the
 * sandbox's container runs and the manifests cannot drift apart: the
 * capabilities (after dropping all), host pid and network, read-only root,
 * every hostPath volume as a bind mount (ro, rslave for HostToContainer), every
 * emptyDir as a tmpfs of its sizeLimit, and the container's command.
 * configMap and secret volumes are not mounted (the sandbox gives the agent its
 * own config in its state directory).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { shellQuote } from './helpers.js';
import type { SandboxNode } from './model.js';

/** The repository root of this build (dist/tools/sandbox/ -> ../../..). */
const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..', '..');

interface ManifestVolume {
  name: string;
  hostPath?: { path: string };
  emptyDir?: { medium?: string; sizeLimit?: string };
  configMap?: unknown;
  secret?: unknown;
}
interface ManifestContainerSpec {
  name: string;
  command: string[];
  args?: string[];
  securityContext: { readOnlyRootFilesystem?: boolean; privileged?: boolean; capabilities: { drop?: string[]; add?: string[] } };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean; mountPropagation?: string }>;
}
interface ManifestPodSpec {
  hostPID?: boolean;
  hostNetwork?: boolean;
  containers: ManifestContainerSpec[];
  volumes?: ManifestVolume[];
}

/** One mount of a container run. */
export type ContainerMount =
  | { type: 'bind'; volume: string; host: string; target: string; readOnly: boolean; rslave: boolean }
  | { type: 'tmpfs'; volume: string; target: string; size: string | null };

/** What a container of a manifest's DaemonSet gets. */
export interface ContainerRun {
  /** capabilities added after dropping ALL */
  capabilities: string[];
  hostPid: boolean;
  hostNetwork: boolean;
  readOnlyRoot: boolean;
  mounts: ContainerMount[];
  command: string[];
  args: string[];
}

/** The pod spec of the (first) DaemonSet in deploy/<file>. */
export function manifestPodSpec(file: 'ambientd.yaml' | 'uninstall.yaml', repoRoot = REPO_ROOT): ManifestPodSpec {
  const text = fs.readFileSync(path.join(repoRoot, 'deploy', file), 'utf8');
  for (const d of parseAllDocuments(text)) {
    const o = d.toJS() as { kind?: string; spec?: { template?: { spec?: ManifestPodSpec } } } | null;
    if (o?.kind === 'DaemonSet' && o.spec?.template?.spec) return o.spec.template.spec;
  }
  throw new Error(`no DaemonSet in deploy/${file}`);
}

/** Kubernetes quantity (16Mi, 1Mi, 512Ki) as a tmpfs size (16m, 1m, 512k). */
function tmpfsSize(q: string | undefined): string | null {
  if (!q) return null;
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(q);
  if (!m) throw new Error(`unsupported emptyDir sizeLimit ${q}`);
  return m[2] ? `${m[1]}${m[2][0]!.toLowerCase()}` : m[1]!;
}

/** The container run of deploy/<file>'s DaemonSet, as podman will get it. */
export function manifestContainerRun(file: 'ambientd.yaml' | 'uninstall.yaml', repoRoot = REPO_ROOT): ContainerRun {
  const spec = manifestPodSpec(file, repoRoot);
  const c = spec.containers[0]!;
  const sc = c.securityContext;
  if (sc.privileged) throw new Error(`deploy/${file}: a privileged container; the container runs expect capabilities`);
  if (!(sc.capabilities.drop ?? []).includes('ALL')) throw new Error(`deploy/${file}: capabilities.drop must be ["ALL"]`);
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  const mounts: ContainerMount[] = [];
  for (const m of c.volumeMounts ?? []) {
    const v = volumes.get(m.name);
    if (!v) throw new Error(`deploy/${file}: volumeMount ${m.name} has no volume`);
    if (v.hostPath) {
      mounts.push({
        type: 'bind',
        volume: m.name,
        host: v.hostPath.path,
        target: m.mountPath,
        readOnly: m.readOnly === true,
        rslave: m.mountPropagation === 'HostToContainer',
      });
    } else if (v.emptyDir) {
      mounts.push({ type: 'tmpfs', volume: m.name, target: m.mountPath, size: tmpfsSize(v.emptyDir.sizeLimit) });
    }
    // configMap, secret: the sandbox gives its own files
  }
  return {
    capabilities: [...(sc.capabilities.add ?? [])],
    hostPid: spec.hostPID === true,
    hostNetwork: spec.hostNetwork === true,
    readOnlyRoot: sc.readOnlyRootFilesystem === true,
    mounts,
    command: [...c.command],
    args: [...(c.args ?? [])],
  };
}

/** Variations of a run: what the container tests leave out, and where the sandbox puts host paths. */
export interface ContainerRunOptions {
  /** hostPath volume name -> the host directory to mount instead (the sandbox's scratch dirs) */
  hostPaths?: Record<string, string>;
  /** leave these capabilities out */
  dropCapabilities?: readonly string[];
  /** leave these volumes (by name) out */
  dropVolumes?: readonly string[];
  /** more bind mounts (host path = container path) */
  extraMounts?: readonly string[];
  /** false: a pid namespace of the container's own even where the manifest has hostPID */
  hostPid?: boolean;
}

/** A hard rlimit of this process from /proc/self/limits ('unlimited' as Infinity). */
function hardLimit(name: string): number {
  const line = fs
    .readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name));
  const v = line?.slice(26).trim().split(/\s+/)[1];
  return v === undefined || v === 'unlimited' ? Infinity : Number(v);
}

/**
 * CAP_SYS_RESOURCE may be missing from the host's bounding set: no rlimit above
 * the host's; rootful podman lowers its own nproc to 32768 (scripts/image/lib.sh).
 */
export function ulimitFlags(): string[] {
  const nofile = hardLimit('Max open files');
  const nproc = Math.min(hardLimit('Max processes'), 32768);
  return [...(Number.isFinite(nofile) ? [`--ulimit=nofile=${nofile}:${nofile}`] : []), `--ulimit=nproc=${nproc}:${nproc}`];
}

/** podman flags for a run: capabilities, pid, read-only root, mounts (no network, no entrypoint). */
export function podmanRunFlags(run: ContainerRun, opts: ContainerRunOptions = {}): string[] {
  const drop = new Set(opts.dropCapabilities ?? []);
  const dropVolumes = new Set(opts.dropVolumes ?? []);
  const caps = run.capabilities.filter((c) => !drop.has(c));
  const flags = [...(run.hostPid && opts.hostPid !== false ? ['--pid=host'] : []), ...(run.readOnlyRoot ? ['--read-only'] : []), '--cap-drop=all'];
  if (caps.length > 0) flags.push(`--cap-add=${caps.join(',')}`);
  for (const m of run.mounts) {
    if (dropVolumes.has(m.volume)) continue;
    if (m.type === 'tmpfs') {
      flags.push('--tmpfs', m.size ? `${m.target}:size=${m.size}` : m.target);
      continue;
    }
    const o = [m.readOnly ? 'ro' : '', m.rslave ? 'rslave' : ''].filter(Boolean).join(',');
    flags.push('-v', `${opts.hostPaths?.[m.volume] ?? m.host}:${m.target}${o ? `:${o}` : ''}`);
  }
  for (const m of opts.extraMounts ?? []) flags.push('-v', `${m}:${m}`);
  return flags;
}

/** Options of containerAgentCommand: the container tests' variations. */
export interface ContainerAgentOptions {
  dropCapabilities?: readonly string[];
  dropVolumes?: readonly string[];
  /** start `node` directly: the container's private cgroup namespace (no enter-host-cgroupns) */
  noHostCgroupns?: boolean;
  /** a pid namespace of the container's own (no --pid=host) */
  noHostPid?: boolean;
  /** more agent flags, after --config */
  agentArgs?: readonly string[];
  /** container name (default ambientd-sandbox-<node>-<ms>) */
  name?: string;
}

/** The scratch directories the sandbox mounts in place of the host's /var/lib/ambientd/ca and /run/ambientd. */
export function sandboxHostPaths(node: SandboxNode): Record<string, string> {
  const nodeDir = path.dirname(node.config);
  return { ca: path.join(nodeDir, 'image-ca'), run: path.join(nodeDir, 'image-run') };
}

/**
 * The shell command that runs a node's agent from a container image the way
 * the DaemonSet does (docs/IMAGE.md): everything manifestContainerRun reads
 * from deploy/ambientd.yaml (capabilities, host pid, read-only root, mounts,
 * command), with a private cgroup namespace as kubelet gives on cgroup v2.
 * The sandbox's differences: the node's netns instead of the host network;
 * its state directory mounted at its own path (agent.yaml, workloads, CA,
 * hand-over socket); the ca and run hostPaths are per-node scratch
 * directories; the command's /proc/1/ns/cgroup is the launching shell's
 * (/proc/$$/ns/cgroup), as this development machine's init does not let even
 * root open its namespaces; the agent's args are `agent --config <node's>`
 * (the manifest's --node/--node-ip come from that file). podman runs in the
 * foreground (signals are passed on); the container is removed on exit.
 */
export function containerAgentCommand(
  node: SandboxNode,
  repoRoot: string,
  image: string,
  env: Record<string, string>,
  opts: ContainerAgentOptions = {},
): string[] {
  const stateDir = path.dirname(path.dirname(node.config));
  const run = manifestContainerRun('ambientd.yaml', repoRoot);
  const hostPaths = sandboxHostPaths(node);
  const [entrypoint, target, ...rest] = run.command;
  if (target !== '/proc/1/ns/cgroup')
    throw new Error(`deploy/ambientd.yaml: expected the command ${entrypoint} /proc/1/ns/cgroup ..., got ${run.command.join(' ')}`);
  const command = opts.noHostCgroupns ? rest : [entrypoint!, '/proc/$$/ns/cgroup', ...rest];
  const args = [
    'podman',
    'run',
    '--rm',
    '--name',
    opts.name ?? `ambientd-sandbox-${node.name}-${Date.now()}`,
    '--label',
    `ambientd-sandbox=${stateDir}`,
    `--network=ns:${node.netnsPath}`,
    '--cgroupns=private',
    ...ulimitFlags(),
    ...podmanRunFlags(run, {
      hostPaths,
      dropCapabilities: opts.dropCapabilities,
      dropVolumes: opts.dropVolumes,
      extraMounts: [stateDir],
      hostPid: !opts.noHostPid,
    }),
    ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    '--entrypoint',
    command[0]!,
    image,
    ...command.slice(1),
    run.args[0]!,
    '--config',
    node.config,
    ...(opts.agentArgs ?? []),
  ].map((a) => (a === '/proc/$$/ns/cgroup' ? a : shellQuote(a)));
  const mkdirs = Object.values(hostPaths).map(shellQuote).join(' ');
  const script = `mkdir -p ${mkdirs} && echo $$ > ${shellQuote(path.join(node.cgroup, 'cgroup.procs'))} && CONTAINERS_CONF=${shellQuote(containersConf())} exec ${args.join(' ')}`;
  return ['sh', '-c', script];
}

/** The repository's podman settings (scripts/image/containers.conf: runc, cgroupfs), unless CONTAINERS_CONF is set. */
export function containersConf(): string {
  return process.env.CONTAINERS_CONF ?? path.join(REPO_ROOT, 'scripts', 'image', 'containers.conf');
}

/**
 * argv of a one-off `podman run` of the image's CLI as the uninstall DaemonSet
 * (deploy/uninstall.yaml) runs `ambientd cleanup`: its capabilities, host
 * network and pid, read-only root and mounts (hostPaths remaps a volume's
 * host directory); the CLI args instead of the manifest's shell line. Run it
 * with env CONTAINERS_CONF=containersConf().
 */
export function containerCliArgv(image: string, cliArgs: readonly string[], opts: ContainerRunOptions = {}, repoRoot = REPO_ROOT): string[] {
  const run = manifestContainerRun('uninstall.yaml', repoRoot);
  return [
    'podman',
    'run',
    '--rm',
    ...(run.hostNetwork ? ['--network=host'] : []),
    ...ulimitFlags(),
    ...podmanRunFlags(run, opts),
    '--entrypoint',
    'node',
    image,
    '/opt/ambientd/dist/src/cli.js',
    ...cliArgs,
  ];
}
