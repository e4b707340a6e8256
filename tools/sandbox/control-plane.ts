/**
 * The sandbox's control plane: the cluster CA (`ambientd ca`) as its own
 * process, in its own network namespace on the fabric, the way a CA
 * Deployment behind a Service would be:
 *
 *   netns ambs-cp:  eth0 (10.100.0.254/24) ═══ cp ── br0 (netns ambs-fabric)
 *
 * Every node reaches it at 10.100.0.254:15012 over the fabric. There is no
 * API server here: a node proves which node it is with a node token (an
 * EdDSA JWT with the claims of a bound Kubernetes token) that this tool
 * mints with the sandbox signing key; the CA gets only the public key, and
 * its pod index is the sandbox's workload directory.
 *
 * Key material lives in <stateDir>/control-plane (0700): the CA's key and the
 * token signing key. A node gets only <stateDir>/n<i>/ca/{root-cert.pem,token}:
 * the trust bundle (public) and its own node's token (a ConfigMap and a
 * projected token in Kubernetes). No node holds a signing key.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { ipBatch, isProcessAlive, run, shellQuote, sleep, tailFile, waitDead } from './helpers.js';
import {
  AGENT_NAMESPACE,
  AGENT_SERVICE_ACCOUNT,
  CA_PORT,
  CA_TOKEN_AUDIENCE,
  FABRIC_BRIDGE,
  FABRIC_NETNS,
  NODE_TOKEN_LIFETIME_MS,
  SANDBOX_DIR_NAME,
  SandboxError,
  TIME_SCALE,
  type SandboxControlPlane,
  type SandboxPathOptions,
  type SandboxState,
} from './model.js';
import { nodeCaFiles } from './plan.js';
export { nodeCaFiles, planControlPlane } from './plan.js';
import { agentEntrypoint } from './agents.js';
import { loadState, updateState } from './state.js';

/** Mints node `node`'s token with the sandbox signing key (what `sandbox up` writes to the node's token file). */
export async function mintNodeToken(cp: SandboxControlPlane, node: string, o: { audience?: string; lifetimeMs?: number; now?: number } = {}): Promise<string> {
  const { mintSandboxToken } = await import('../../src/ca/auth-sandbox.js');
  return mintSandboxToken(await fsp.readFile(cp.tokenKey, 'utf8'), {
    namespace: AGENT_NAMESPACE,
    serviceAccount: AGENT_SERVICE_ACCOUNT,
    node,
    audience: o.audience ?? CA_TOKEN_AUDIENCE,
    lifetimeMs: o.lifetimeMs ?? NODE_TOKEN_LIFETIME_MS,
    ...(o.now !== undefined ? { now: o.now } : {}),
  });
}

/**
 * Creates the control plane's key material (CA root, token signing key) and
 * gives every node its trust bundle and node token.
 */
export async function buildControlPlaneFiles(state: SandboxState, cp: SandboxControlPlane, trustDomain: string): Promise<void> {
  const { CertificateAuthority } = await import('../../src/identity/ca.js');
  const { generateSandboxKey } = await import('../../src/ca/auth-sandbox.js');
  await fsp.mkdir(cp.dir, { recursive: true, mode: 0o700 });
  await fsp.chmod(cp.dir, 0o700);
  const ca = await CertificateAuthority.loadOrCreate(cp.caDir, { trustDomain });
  const keys = generateSandboxKey();
  await fsp.writeFile(cp.tokenKey, keys.privateKeyPem, { mode: 0o600 });
  await fsp.writeFile(cp.tokenPublicKey, keys.publicKeyPem, { mode: 0o644 });
  await fsp.mkdir(cp.cgroup, { recursive: true });
  for (const n of state.nodes) {
    const f = nodeCaFiles(state.stateDir, n.name);
    await fsp.mkdir(f.dir, { recursive: true, mode: 0o755 });
    await fsp.writeFile(f.rootCert, ca.rootPem, { mode: 0o644 });
    await fsp.writeFile(f.token, (await mintNodeToken(cp, n.name)) + '\n', { mode: 0o600 });
  }
}

/** The control-plane netns on the fabric, with routes to every node's pod range. */
export async function buildControlPlaneNetwork(state: SandboxState, cp: SandboxControlPlane): Promise<void> {
  await run('ip', ['netns', 'add', cp.netns]);
  await ipBatch([`link add eth0 netns ${cp.netns} type veth peer name cp netns ${FABRIC_NETNS}`]);
  await ipBatch([`link set cp master ${FABRIC_BRIDGE}`, 'link set cp up'], ['-n', FABRIC_NETNS]);
  await ipBatch(
    [
      'link set lo up',
      `addr add ${cp.ip}/24 dev eth0`,
      'link set eth0 up',
      ...state.nodes.map((n) => `route add 10.244.${n.name.slice(1)}.0/24 via ${n.ip} dev eth0`),
    ],
    ['-n', cp.netns],
  );
}

/** The command that runs the CA (exported for docs and tests). */
export function caCommand(state: SandboxState, cp: SandboxControlPlane, trustDomain: string): string[] {
  const argv = [
    process.execPath,
    agentEntrypoint(state.repoRoot),
    'ca',
    '--ca-dir',
    cp.caDir,
    '--auth',
    'sandbox',
    '--sandbox-token-key',
    cp.tokenPublicKey,
    '--token-audience',
    CA_TOKEN_AUDIENCE,
    '--trusted-node-account',
    `${AGENT_NAMESPACE}/${AGENT_SERVICE_ACCOUNT}`,
    '--source',
    'file',
    '--workloads',
    state.meshDir,
    '--trust-domain',
    trustDomain,
    '--listen',
    `0.0.0.0:${CA_PORT}`,
    '--server-name',
    cp.ip,
    '--metrics-port',
    String(cp.metricsPort),
  ];
  const script = `echo $$ > ${shellQuote(path.join(cp.cgroup, 'cgroup.procs'))} && exec nsenter ${shellQuote(`--net=${cp.netnsPath}`)} -- ${argv.map(shellQuote).join(' ')}`;
  return ['sh', '-c', script];
}

function controlPlaneOf(state: SandboxState): SandboxControlPlane {
  if (!state.controlPlane)
    throw new SandboxError('this sandbox has no cluster CA (it was started with --ca embedded)', 'run `ambientd sandbox up` (the default runs the CA)');
  return state.controlPlane;
}

/** The CA's pid if it runs (and is ours), else null. */
export function liveCaPid(cp: SandboxControlPlane | undefined): number | null {
  if (!cp || cp.caPid === null || !isProcessAlive(cp.caPid)) return null;
  try {
    // ours, not a reused pid: in the control-plane cgroup, or (just spawned) the shell that runs the CA
    if (fs.readFileSync(`/proc/${cp.caPid}/cgroup`, 'utf8').includes(`/${SANDBOX_DIR_NAME}/control-plane`)) return cp.caPid;
    return fs.readFileSync(`/proc/${cp.caPid}/cmdline`, 'utf8').includes(cp.caDir) ? cp.caPid : null;
  } catch {
    return null;
  }
}

/** Starts the CA process (detached, logging to control-plane/ca.log) and waits until it is ready. */
export async function startCa(opts: SandboxPathOptions & { readyTimeoutMs?: number } = {}): Promise<number> {
  const state = loadState(opts);
  const cp = controlPlaneOf(state);
  if (liveCaPid(cp) !== null) throw new SandboxError(`the sandbox CA already runs (pid ${cp.caPid})`, 'stop it first: `ambientd sandbox ca stop`');
  const trustDomain = String(state.agentSettings?.trustDomain ?? 'cluster.local');
  const fd = fs.openSync(cp.log, 'a');
  let child: ChildProcess;
  try {
    fs.writeSync(fd, `--- ambientd sandbox: starting the CA at ${new Date().toISOString()} ---\n`);
    const [cmd, ...args] = caCommand(state, cp, trustDomain);
    child = spawn(cmd!, args, { detached: true, stdio: ['ignore', fd, fd] });
  } finally {
    fs.closeSync(fd);
  }
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('error', (e) => reject(new SandboxError(`cannot start the sandbox CA: ${e.message}`, 'check that sh and nsenter exist', { cause: e })));
    child.once('spawn', () => resolve(child.pid!));
  });
  child.unref();
  await updateState(opts, (s) => void (controlPlaneOf(s).caPid = pid));
  await waitCaReady(opts, opts.readyTimeoutMs ?? 30_000 * TIME_SCALE);
  return pid;
}

/** Stops the CA (SIGTERM, then SIGKILL after 5 s). */
export async function stopCa(opts: SandboxPathOptions & { signal?: NodeJS.Signals } = {}): Promise<void> {
  const cp = controlPlaneOf(loadState(opts));
  const pid = liveCaPid(cp);
  if (pid !== null) {
    try {
      process.kill(pid, opts.signal ?? 'SIGTERM');
    } catch {
      /* gone */
    }
    if ((await waitDead([pid], 5000)).length > 0) {
      process.kill(pid, 'SIGKILL');
      await waitDead([pid], 5000);
    }
  }
  await updateState(opts, (s) => void (controlPlaneOf(s).caPid = null));
}

/** GET a path of the CA's metrics port (from inside the control-plane netns): [status, body]. */
export async function caHttp(urlPath: string, opts: SandboxPathOptions = {}): Promise<{ status: number; body: string }> {
  const cp = controlPlaneOf(loadState(opts));
  const r = await execa(
    'nsenter',
    [`--net=${cp.netnsPath}`, '--', 'curl', '-s', '-o', '-', '-w', '\n%{http_code}', '--max-time', '3', `http://127.0.0.1:${cp.metricsPort}${urlPath}`],
    {
      reject: false,
    },
  );
  const out = String(r.stdout ?? '');
  const i = out.lastIndexOf('\n');
  return { status: Number(out.slice(i + 1)) || 0, body: out.slice(0, Math.max(0, i)) };
}

/** The CA's /metrics text. */
export async function caMetrics(opts: SandboxPathOptions = {}): Promise<string> {
  return (await caHttp('/metrics', opts)).body;
}

/** Waits until the CA answers /healthz/ready with 200 (serving, pod index synced); throws with the log tail otherwise. */
export async function waitCaReady(opts: SandboxPathOptions = {}, timeoutMs = 30_000 * TIME_SCALE): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const cp = controlPlaneOf(loadState(opts));
    // (just after the spawn the shell may not have joined the cgroup yet: alive is enough here)
    if (cp.caPid === null || !isProcessAlive(cp.caPid))
      throw new SandboxError(`the sandbox CA (pid ${cp.caPid}) is not running\n--- last lines of ${cp.log} ---\n${tailFile(cp.log)}`, 'read the CA log');
    if ((await caHttp('/healthz/ready', opts)).status === 200) return;
    if (Date.now() > deadline)
      throw new SandboxError(`the sandbox CA was not ready after ${timeoutMs} ms\n--- last lines of ${cp.log} ---\n${tailFile(cp.log)}`, 'read the CA log');
    await sleep(100);
  }
}

/** One certificate request made by askCaAsNode. */
export interface CaAttempt {
  ok: boolean;
  serial?: string;
  /** the client's error code (CA_ISSUE_FAILED, ...) */
  code?: string;
  /** the gRPC status (7 PERMISSION_DENIED, 16 UNAUTHENTICATED, ...) */
  grpc?: number;
  /** the CA's own code of the refusal (CA_NODE_DENIED, ...) */
  server?: string;
  message?: string;
}

/**
 * Asks the CA for certificates from inside node `node`'s netns, with the
 * agent's own client and `tokenFile` (default: the node's token): what root
 * on that node can do. For the tests and the demo's attack.
 */
export async function askCaAsNode(node: string, ids: string[], opts: SandboxPathOptions & { tokenFile?: string } = {}): Promise<Record<string, CaAttempt>> {
  const state = loadState(opts);
  const cp = controlPlaneOf(state);
  const n = state.nodes.find((x) => x.name === node);
  if (!n) throw new SandboxError(`unknown node ${node}`, 'see `ambientd sandbox status`');
  const f = nodeCaFiles(state.stateDir, node);
  const dist = path.join(state.repoRoot, 'dist', 'src', 'identity');
  const script = `
    const { RemoteCaIssuer } = await import(${JSON.stringify(path.join(dist, 'ca-client.js'))});
    const { IdentityManager } = await import(${JSON.stringify(path.join(dist, 'manager.js'))});
    const m = new IdentityManager({ issuer: new RemoteCaIssuer({ address: ${JSON.stringify(cp.address)}, rootFile: ${JSON.stringify(f.rootCert)}, tokenFile: ${JSON.stringify(opts.tokenFile ?? f.token)} }) });
    const out = {};
    for (const id of ${JSON.stringify(ids)}) {
      try { const c = await m.get(id); out[id] = { ok: true, serial: c.serial }; }
      catch (e) { out[id] = { ok: false, code: e.code, grpc: e.cause?.grpcCode, server: e.cause?.serverCode, message: e.message }; }
    }
    m.close();
    console.log(JSON.stringify(out));
    process.exit(0);`;
  const r = await execa('nsenter', [`--net=${n.netnsPath}`, '--', process.execPath, '--input-type=module', '-e', script], { reject: false, timeout: 60_000 });
  if (r.exitCode !== 0) throw new SandboxError(`asking the CA from ${node} failed: ${String(r.stderr)}`, 'read the error above');
  return JSON.parse(String(r.stdout)) as Record<string, CaAttempt>;
}

/**
 * Files a node can read that hold a private key or the CA's or token signing
 * key: everything under the node's state dir and the mesh dir. Empty when no
 * node holds a key (a node's own pods' keys live only in its agent's memory).
 */
export function nodeKeyLeaks(state: SandboxState): string[] {
  const cp = state.controlPlane;
  const body = (file: string): string | null => {
    try {
      return fs.readFileSync(file, 'utf8').replace(/-----[^-]+-----|\s/g, '');
    } catch {
      return null;
    }
  };
  const secrets = cp ? [body(path.join(cp.caDir, 'ca-key.pem')), body(cp.tokenKey)].filter((s): s is string => !!s) : [];
  const walk = (dir: string): string[] => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return [];
    }
    return entries.flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : e.isFile() ? [path.join(dir, e.name)] : []));
  };
  const leaks: string[] = [];
  for (const f of [...state.nodes.flatMap((n) => walk(path.dirname(n.config))), ...walk(state.meshDir)]) {
    const text = fs.readFileSync(f, 'latin1');
    const flat = text.replace(/\s/g, '');
    if (/PRIVATE KEY/.test(text) || secrets.some((s) => flat.includes(s))) leaks.push(f);
  }
  return leaks;
}
