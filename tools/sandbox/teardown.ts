/**
 * `sandbox down`: removes everything the sandbox may have created (agents and
 * every process in its cgroups, the cluster CA, the `ambs-*` netns (also the control plane's), the cgroup tree, the
 * bpffs dir, host ip rules with the mesh mark, the state dir), also without a
 * state file after a crash; idempotent.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { containersConf, liveAgentPid } from './agents.js';
import { liveCaPid } from './control-plane.js';
import { ipBatch, run, sleep, waitDead } from './helpers.js';
import { MESH_MARK, SANDBOX_DIR_NAME, SandboxError, type SandboxDownOptions, type SandboxDownReport, type SandboxState } from './model.js';
import { listSandboxNetns } from './network.js';
import { resolvePaths } from './plan.js';
import { readStateFile, releaseSandboxLock, waitForSandboxLock } from './state.js';

function cgroupProcs(dir: string, out: number[] = []): number[] {
  try {
    for (const l of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')) if (l.trim()) out.push(Number(l));
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) cgroupProcs(path.join(dir, e.name), out);
  } catch {
    /* vanished */
  }
  return out;
}

/** SIGKILLs everything in the cgroup tree and waits until it is empty. */
async function killCgroupTree(base: string, timeoutMs = 10_000): Promise<number[]> {
  if (!fs.existsSync(base)) return [];
  const self = new Set([process.pid, process.ppid]);
  const initial = cgroupProcs(base);
  if (initial.some((p) => self.has(p))) {
    throw new SandboxError(`refusing to tear down the sandbox from inside it (this process is in ${base})`, 'run `ambientd sandbox down` from the host');
  }
  const killed = new Set<number>();
  try {
    fs.writeFileSync(path.join(base, 'cgroup.kill'), '1'); // Linux >= 5.14
  } catch {
    /* fall back to the loop below */
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = cgroupProcs(base).filter((p) => !self.has(p));
    if (pids.length === 0) break;
    for (const pid of pids) {
      killed.add(pid);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    if (Date.now() > deadline) break;
    await sleep(50);
  }
  for (const p of initial) killed.add(p);
  return [...killed];
}

/** rmdir bottom-up; returns [removed count, leftovers]. */
async function removeCgroupTree(dir: string): Promise<[number, string[]]> {
  if (!fs.existsSync(dir)) return [0, []];
  let removed = 0;
  const left: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries: fs.Dirent[] = [];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    await Promise.all(entries.filter((e) => e.isDirectory()).map((e) => walk(path.join(d, e.name))));
    for (let attempt = 0; ; attempt++) {
      try {
        await fsp.rmdir(d);
        removed++;
        return;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return;
        if (code === 'EBUSY' && attempt < 40) {
          await sleep(50);
          continue;
        }
        left.push(`${d} (${code})`);
        return;
      }
    }
  };
  await walk(dir);
  return [removed, left];
}

async function removeMarkRules(): Promise<number> {
  let removed = 0;
  const mark = `0x${MESH_MARK.toString(16)}`;
  const re = new RegExp(`^(\\d+):.*\\bfwmark (${mark}(?:/0x[0-9a-f]+)?)(?=\\s|$)`, 'i');
  for (const fam of ['-4', '-6']) {
    for (let i = 0; i < 256; i++) {
      let out: string;
      try {
        out = await run('ip', [fam, 'rule', 'show']);
      } catch {
        break; // e.g. IPv6 disabled
      }
      const hit = out
        .split('\n')
        .map((l) => re.exec(l.trim()))
        .find((m) => m !== null);
      if (!hit) break;
      try {
        await run('ip', [fam, 'rule', 'del', 'priority', hit[1]!, 'fwmark', hit[2]!]);
        removed++;
      } catch {
        break;
      }
    }
  }
  return removed;
}

/**
 * Removes everything the sandbox may have created: agents and any process in
 * the sandbox cgroups, every `ambs-*` netns, the cgroup tree, the bpffs dir,
 * host ip rules with fwmark 0x539 and the state dir. Works without a state
 * file (after a crash) and is idempotent.
 */
export async function sandboxDown(opts: SandboxDownOptions = {}): Promise<SandboxDownReport> {
  const paths = resolvePaths(opts);
  // never tear down a sandbox another live process is using: wait for it
  await waitForSandboxLock(opts.lockTimeoutMs ?? 15 * 60_000);
  try {
    return await teardown(paths, opts);
  } finally {
    releaseSandboxLock();
  }
}

export async function teardown(paths: ReturnType<typeof resolvePaths>, opts: SandboxDownOptions): Promise<SandboxDownReport> {
  let state: SandboxState | null = null;
  try {
    state = readStateFile(paths.stateDir);
  } catch {
    state = null; // corrupt state: clean up by prefix only
  }
  const cgBases = [...new Set([path.join(paths.cgroupRoot, SANDBOX_DIR_NAME), ...(state?.cgroupRoot ? [path.join(state.cgroupRoot, SANDBOX_DIR_NAME)] : [])])];
  const bpfDirs = [...new Set([path.join(paths.bpffsRoot, SANDBOX_DIR_NAME), ...(state?.bpffsDir ? [state.bpffsDir] : [])])];
  const report: SandboxDownReport = { killed: [], netns: [], cgroups: 0, ipRules: 0, leftovers: [] };

  // 1. agents from the state file: SIGTERM, grace period, then SIGKILL.
  // (and the cluster CA: it is in the sandbox cgroup too, but gets its SIGTERM first)
  const agents = [...(state?.nodes ?? []).map(liveAgentPid), liveCaPid(state?.controlPlane)].filter((pid): pid is number => pid !== null);
  for (const pid of agents) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  for (const pid of await waitDead(agents, opts.graceMs ?? 2000)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  report.killed.push(...agents);
  if ((await waitDead(agents, 5000)).length > 0) report.leftovers.push(`agent processes ${agents.join(', ')}`);

  // 1b. agents run from an image (AMBIENTD_SANDBOX_IMAGE): their podman is in the sandbox cgroup,
  // the agent is not; a draining old one is no longer in the state. Remove every container
  // labelled with this state directory.
  report.killed.push(...removeAgentContainers(paths.stateDir));

  // 2. anything else in the sandbox cgroups.
  for (const base of cgBases) {
    for (const pid of await killCgroupTree(base)) if (!report.killed.includes(pid)) report.killed.push(pid);
    const left = cgroupProcs(base);
    if (left.length > 0) report.leftovers.push(`processes ${left.join(', ')} in ${base}`);
  }

  // 3. network namespaces.
  const names = await listSandboxNetns();
  if (names.length > 0) {
    await ipBatch(
      names.map((n) => `netns del ${n}`),
      ['-force'],
    ).catch(() => undefined);
    report.netns = names;
    const still = await listSandboxNetns();
    if (still.length > 0) report.leftovers.push(`netns ${still.join(', ')}`);
  }

  // 4. cgroup directories, bottom-up.
  for (const base of cgBases) {
    const [removed, left] = await removeCgroupTree(base);
    report.cgroups += removed;
    report.leftovers.push(...left);
  }

  // 4b. podman's cgroupfs manager (agents or tests run from the image) makes <controller>/libpod_parent{,/conmon}
  // and never removes them: remove them when empty (rmdir refuses otherwise, so a running container keeps its own)
  if (fs.existsSync('/usr/bin/podman')) removeEmptyPodmanCgroups();

  // 5. bpffs pins.
  for (const dir of bpfDirs) {
    try {
      await fsp.rm(dir, { recursive: true, force: true });
    } catch (e) {
      report.leftovers.push(`${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }

  // 6. host ip rules with our mark.
  report.ipRules = await removeMarkRules();

  // 7. state dir.
  await fsp.rm(paths.stateDir, { recursive: true, force: true });
  return report;
}

/** Removes the containers startAgent ran for this state directory (label ambientd-sandbox=<stateDir>); their agent pids. */
function removeAgentContainers(stateDir: string): number[] {
  if (!fs.existsSync('/usr/bin/podman')) return [];
  const env = { ...process.env, CONTAINERS_CONF: containersConf() };
  const ps = spawnSync('podman', ['ps', '-a', '--filter', `label=ambientd-sandbox=${stateDir}`, '--format', '{{.ID}} {{.Pid}}'], {
    env,
    encoding: 'utf8',
    timeout: 30_000,
  });
  const rows = (ps.stdout ?? '').split('\n').filter((l) => l.trim() !== '');
  if (rows.length === 0) return [];
  spawnSync('podman', ['rm', '-f', '-t', '2', ...rows.map((r) => r.split(' ')[0]!)], { env, encoding: 'utf8', timeout: 60_000 });
  return rows.map((r) => Number(r.split(' ')[1])).filter((p) => p > 0);
}

/** The empty libpod_parent{/conmon} cgroup directories podman leaves under each hierarchy (as scripts/image/lib.sh's rm_podman_cgroups). */
function removeEmptyPodmanCgroups(): void {
  const roots = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];
  for (const entry of fs.existsSync('/sys/fs/cgroup') ? fs.readdirSync('/sys/fs/cgroup') : []) roots.push(path.join('/sys/fs/cgroup', entry));
  for (const root of new Set(roots)) {
    for (const d of [path.join(root, 'libpod_parent', 'conmon'), path.join(root, 'libpod_parent')]) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* absent, not a directory, or not empty (a container still runs) */
      }
    }
  }
}
