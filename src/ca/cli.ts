/**
 * `ambientd ca`: the cluster CA as a process. Reads its flags, loads (or
 * creates) the CA material in --ca-dir, starts the pod index (Kubernetes pod
 * watch, or the sandbox's workload file), makes its own TLS certificate and
 * serves Istio's certificate API, plus /metrics and /healthz/ready.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { AmbientError } from '../util/errors.js';
import { Logger, isLevel, type Level } from '../util/log.js';
import { parseDuration } from '../config/units.js';
import { parseDialAddress } from '../util/hostport.js';
import { CaServiceError } from './errors.js';
import type { Authenticator } from './auth.js';
import type { WorkloadSource } from '../discovery/source.js';

export const CA_HELP = `ambientd ca — the cluster CA: signs workload certificates for node agents (no node holds a CA key)

Usage: ambientd ca --ca-dir DIR | --ca-secret-namespace NS [--auth kubernetes|sandbox] [flags]

Serves Istio's certificate API (istio.v1.auth.IstioCertificateService/CreateCertificate) over TLS.
A node agent authenticates with a bearer token that says which node it runs on, and gets only the
identities (spiffe://TD/ns/<ns>/sa/<sa>) of pods scheduled on that node. Anything else is refused
(UNAUTHENTICATED, PERMISSION_DENIED or INVALID_ARGUMENT with a CA_* code), counted
(ambientd_ca_requests_total{result,code}) and logged. Stateless: run several replicas on the same
CA material.

  --listen HOST:PORT           gRPC+TLS address [0.0.0.0:15012]
  --ca-dir DIR                 CA material in a directory: an Istio plug-in layout (ca-cert.pem,
                               ca-key.pem, root-cert.pem, cert-chain.pem), or an empty directory
                               where a root is created
  --ca-secret-namespace NS     or in Secrets of NS: the plug-in Secret "cacerts" if present, else
                               "ambientd-ca-root", created with a new root on first start (several
                               replicas starting at once end with one root)
  --trust-domain TD            SPIFFE trust domain [cluster.local]
  --auth M                     how callers prove their node: kubernetes (projected ServiceAccount
                               token, checked by TokenReview) | sandbox (a node token signed by the
                               sandbox key) [kubernetes]
  --token-audience AUD         the audience tokens must carry [istio-ca]
  --sandbox-token-key FILE     --auth sandbox: the sandbox public key (Ed25519 PEM)
  --trusted-node-account NS/SA the node agents' ServiceAccount: only it may ask for other identities
                               (repeatable) [ambientd-system/ambientd]
  --source S                   where pods and their nodes come from: kubernetes (pod watch) | file
                               [kubernetes with --auth kubernetes, else file]
  --workloads PATH             --source file: the workload file or directory (the sandbox's)
  --server-name NAME           DNS name or IP in the CA's own TLS certificate (repeatable)
                               [ambientd-ca, ambientd-ca.ambientd-system, ambientd-ca.ambientd-system.svc]
  --cert-lifetime D            lifetime when a request asks for none [24h]
  --max-cert-lifetime D        longer requests are clamped to this [7d]
  --serving-cert-lifetime D    lifetime of the CA's own TLS certificate, renewed at half-life [30d]
  --root-configmap NAME        with --ca-secret-namespace: publish the trust bundle (root-cert.pem of the
                               CA Secret: every trusted root) into this ConfigMap, key root-cert.pem, at
                               start and every --root-sync-interval; agents mount it as caRootCert;
                               empty: not published [ambientd-ca-root-cert]
  --root-configmap-namespace NS  the agents' namespace [the --ca-secret-namespace]
  --root-sync-interval D       how often the ConfigMap is checked against the Secret [1m]
  --metrics-port N             GET /metrics and /healthz/ready on 0.0.0.0:N; 0: off [15014]
                               (ready: the key is loaded, the pod index synced, a serving
                               certificate valid; else 503 naming what is missing)
  --log-level L                debug, info, warn, error, off [info]
  -h, --help                   this help

Kubernetes (deploy/ca.yaml): the CA needs RBAC create on tokenreviews, list/watch on pods, get on its two Secrets and
create on secrets, get/update on its ConfigMap and create on configmaps; agents mount a projected token with the
audience above and the published ConfigMap as caRootCert (see docs/CA.md).`;

export interface CaCliOptions {
  listen: string;
  caDir: string | null;
  caSecretNamespace: string | null;
  trustDomain: string;
  auth: 'kubernetes' | 'sandbox';
  tokenAudience: string;
  sandboxTokenKey: string | null;
  trustedNodeAccounts: string[];
  source: 'kubernetes' | 'file';
  workloads: string | null;
  serverNames: string[];
  certLifetimeMs: number;
  maxCertLifetimeMs: number;
  metricsPort: number;
  logLevel: Level;
  servingCertLifetimeMs: number;
  /** the ConfigMap the trust bundle is published to (null: not published); only with --ca-secret-namespace */
  rootConfigMap: string | null;
  rootConfigMapNamespace: string | null;
  rootSyncIntervalMs: number;
}

/** Reads the flags of `ambientd ca`; null for --help. Throws USAGE / CA_SERVER_CONFIG. */
export function parseCaArgs(args: string[]): CaCliOptions | null {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    values = parseArgs({
      args,
      strict: true,
      options: {
        listen: { type: 'string' },
        'ca-dir': { type: 'string' },
        'ca-secret-namespace': { type: 'string' },
        'trust-domain': { type: 'string' },
        auth: { type: 'string' },
        'token-audience': { type: 'string' },
        'sandbox-token-key': { type: 'string' },
        'trusted-node-account': { type: 'string', multiple: true },
        source: { type: 'string' },
        workloads: { type: 'string' },
        'server-name': { type: 'string', multiple: true },
        'cert-lifetime': { type: 'string' },
        'max-cert-lifetime': { type: 'string' },
        'metrics-port': { type: 'string' },
        'log-level': { type: 'string' },
        'serving-cert-lifetime': { type: 'string' },
        'root-configmap': { type: 'string' },
        'root-configmap-namespace': { type: 'string' },
        'root-sync-interval': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    throw new AmbientError('USAGE', (e as Error).message, 'run `ambientd ca --help`');
  }
  if (values.help) return null;
  const bad = (msg: string): never => {
    throw new CaServiceError('CA_SERVER_CONFIG', msg);
  };
  const str = (k: string): string | undefined => values[k] as string | undefined;
  const listen = str('listen') ?? '0.0.0.0:15012';
  if (!parseDialAddress(listen) && !/^\[?[0-9a-fA-F:.]*\]?:0$/.test(listen)) bad(`--listen must be HOST:PORT, got ${JSON.stringify(listen)}`);
  const caDir = str('ca-dir') ?? null;
  const caSecretNamespace = str('ca-secret-namespace') ?? null;
  if ((caDir === null) === (caSecretNamespace === null)) bad('give one of --ca-dir and --ca-secret-namespace (where the CA key is)');
  if (caSecretNamespace !== null && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(caSecretNamespace))
    bad(`--ca-secret-namespace must be a namespace name, got ${JSON.stringify(caSecretNamespace)}`);
  const auth = str('auth') ?? 'kubernetes';
  if (auth !== 'kubernetes' && auth !== 'sandbox') bad(`--auth must be kubernetes or sandbox, got ${JSON.stringify(auth)}`);
  const source = str('source') ?? (auth === 'kubernetes' ? 'kubernetes' : 'file');
  if (source !== 'kubernetes' && source !== 'file') bad(`--source must be kubernetes or file, got ${JSON.stringify(source)}`);
  const workloads = str('workloads') ?? null;
  if (source === 'file' && workloads === null) bad('--workloads is required with --source file');
  const sandboxTokenKey = str('sandbox-token-key') ?? null;
  if (auth === 'sandbox' && sandboxTokenKey === null) bad('--sandbox-token-key is required with --auth sandbox');
  const trusted = (values['trusted-node-account'] as string[] | undefined) ?? ['ambientd-system/ambientd'];
  for (const a of trusted)
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(a))
      bad(`--trusted-node-account must be NAMESPACE/SERVICEACCOUNT, got ${JSON.stringify(a)}`);
  const duration = (k: string, def: number): number => {
    const v = str(k);
    if (v === undefined) return def;
    const n = parseDuration(v);
    return n !== null && n >= 1000 ? n : bad(`--${k} must be a duration of at least 1s, got ${JSON.stringify(v)}`);
  };
  const metricsPort = Number(str('metrics-port') ?? '15014');
  if (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535)
    bad(`--metrics-port must be 0..65535, got ${JSON.stringify(str('metrics-port'))}`);
  const logLevel = str('log-level') ?? 'info';
  if (!isLevel(logLevel)) bad(`--log-level must be debug, info, warn, error or off, got ${JSON.stringify(logLevel)}`);
  const dnsName = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
  const rootConfigMapFlag = str('root-configmap');
  const rootConfigMapNamespace = str('root-configmap-namespace') ?? caSecretNamespace;
  if (rootConfigMapFlag !== undefined && rootConfigMapFlag !== '' && !dnsName.test(rootConfigMapFlag))
    bad(`--root-configmap must be a ConfigMap name (or empty: not published), got ${JSON.stringify(rootConfigMapFlag)}`);
  if (rootConfigMapNamespace !== null && !dnsName.test(rootConfigMapNamespace))
    bad(`--root-configmap-namespace must be a namespace name, got ${JSON.stringify(rootConfigMapNamespace)}`);
  if (caSecretNamespace === null && rootConfigMapFlag) bad('--root-configmap needs --ca-secret-namespace (the bundle is published from the CA Secret)');
  const rootConfigMap = caSecretNamespace === null || rootConfigMapFlag === '' ? null : (rootConfigMapFlag ?? 'ambientd-ca-root-cert');
  return {
    listen,
    caDir,
    caSecretNamespace,
    trustDomain: str('trust-domain') ?? 'cluster.local',
    auth: auth as 'kubernetes' | 'sandbox',
    tokenAudience: str('token-audience') ?? 'istio-ca',
    sandboxTokenKey,
    trustedNodeAccounts: trusted,
    source: source as 'kubernetes' | 'file',
    workloads,
    serverNames: (values['server-name'] as string[] | undefined) ?? ['ambientd-ca', 'ambientd-ca.ambientd-system', 'ambientd-ca.ambientd-system.svc'],
    certLifetimeMs: duration('cert-lifetime', 24 * 3_600_000),
    maxCertLifetimeMs: duration('max-cert-lifetime', 7 * 24 * 3_600_000),
    metricsPort,
    logLevel: logLevel as Level,
    servingCertLifetimeMs: duration('serving-cert-lifetime', 30 * 24 * 3_600_000),
    rootConfigMap,
    rootConfigMapNamespace: rootConfigMap === null ? null : rootConfigMapNamespace,
    rootSyncIntervalMs: duration('root-sync-interval', 60_000),
  };
}

/** What the CA watches (node authorization needs pods only): its RBAC is list/watch on pods and nothing else (deploy/ca.yaml). */
export const CA_WATCHED_RESOURCES = ['pods'] as const;

/** A node name no real node has: the CA has no local pods. */
export const NO_LOCAL_NODE = '(ambientd ca: no local pods)';

/** Runs the CA until SIGTERM/SIGINT. */
export async function runCa(o: CaCliOptions): Promise<void> {
  const fs = await import('node:fs');
  const { CertificateAuthority } = await import('../identity/ca.js');
  const { NodePodIndex } = await import('./pod-index.js');
  const { CaServer } = await import('./server.js');
  const { ServingCertificateRenewer } = await import('./serving.js');
  const { healthHandler } = await import('./health.js');
  const log = new Logger('ambientd.ca', o.logLevel);

  // readiness first: 503 (with what is missing) until the key is loaded, the pod index synced and a serving certificate made
  const health = { keyLoaded: false, podsSynced: false, servingValid: false };
  let server: import('./server.js').CaServer | null = null;
  let renewer: import('./serving.js').ServingCertificateRenewer | null = null;
  let metrics: http.Server | null = null;
  if (o.metricsPort !== 0) {
    metrics = http.createServer(
      healthHandler(
        () => ({ ...health, servingValid: renewer?.valid ?? false }),
        () => server?.registry ?? null,
      ),
    );
    await new Promise<void>((resolve, reject) => metrics!.once('error', reject).listen(o.metricsPort, '0.0.0.0', () => resolve()));
  }

  let signer: import('../identity/ca.js').CertificateAuthority;
  let kc: import('@kubernetes/client-node').KubeConfig | null = null;
  if (o.caDir !== null) {
    signer = await CertificateAuthority.loadOrCreate(o.caDir, { trustDomain: o.trustDomain });
    log.info('CA material', { caDir: o.caDir, source: signer.source, notAfter: signer.notAfter.toISOString() });
  } else {
    const { KubeConfig } = await import('@kubernetes/client-node');
    const { httpSecretApi, loadOrCreateFromSecrets } = await import('./secret-store.js');
    kc = new KubeConfig();
    kc.loadFromDefault();
    const r = await loadOrCreateFromSecrets(httpSecretApi(kc), { namespace: o.caSecretNamespace!, trustDomain: o.trustDomain });
    signer = r.ca;
    log.info('CA material', { secret: `${o.caSecretNamespace}/${r.secret}`, source: r.source, notAfter: signer.notAfter.toISOString() });
  }
  health.keyLoaded = true;

  let authenticator: Authenticator | undefined;
  if (o.auth === 'sandbox') {
    const { SandboxAuthenticator } = await import('./auth-sandbox.js');
    authenticator = new SandboxAuthenticator({ publicKey: fs.readFileSync(o.sandboxTokenKey!, 'utf8'), audience: o.tokenAudience });
  }
  const pods = new NodePodIndex(o.trustDomain);
  let source: WorkloadSource;
  if (o.source === 'file') {
    const { WorkloadFileSource } = await import('../discovery/workloads.js');
    source = new WorkloadFileSource(o.workloads!, null);
  } else {
    const { KubernetesSource } = await import('../discovery/kubernetes.js');
    source = new KubernetesSource({ nodeName: NO_LOCAL_NODE, resolveLocalPod: () => null, resources: CA_WATCHED_RESOURCES, log: log.child('pods') });
  }
  source.on('error', (e) => log.warn('pod source', { error: e }));
  source.on('invalid', (e) => log.warn('pod source rejected its input; the last good pod index stays', { error: e }));
  if (o.auth === 'kubernetes') {
    const { KubeConfig } = await import('@kubernetes/client-node');
    const { KubernetesAuthenticator, httpTokenReviewer } = await import('./auth-kubernetes.js');
    const reviewKc = new KubeConfig();
    reviewKc.loadFromDefault();
    authenticator = new KubernetesAuthenticator({ review: httpTokenReviewer(reviewKc), audience: o.tokenAudience, pods: (ns, name) => pods.pod(ns, name) });
  }

  renewer = new ServingCertificateRenewer({
    signer,
    names: o.serverNames,
    lifetimeMs: o.servingCertLifetimeMs,
    onRenewed: (c) => {
      server?.setServingCertificate(c);
      log.info('serving certificate renewed', { notAfter: c.notAfter.toISOString() });
    },
    onError: (e) => log.error('serving certificate renewal failed; the current one stays, retrying', { error: e }),
  });
  const tls = await renewer.start();
  server = new CaServer({
    signer,
    authenticator: authenticator!,
    pods,
    trustedNodeAccounts: o.trustedNodeAccounts,
    tls,
    defaultCertLifetimeMs: o.certLifetimeMs,
    maxCertLifetimeMs: o.maxCertLifetimeMs,
    log,
  });
  // serve at once: requests before the pod index is synced get UNAVAILABLE (agents retry); readiness says 503 meanwhile
  const port = await server.listen(o.listen);
  log.info('serving IstioCertificateService', {
    listen: o.listen,
    port,
    auth: o.auth,
    trustedNodeAccounts: o.trustedNodeAccounts,
    serverNames: o.serverNames,
    servingNotAfter: tls.notAfter.toISOString(),
  });

  // root distribution: the Secret's trust bundle into the agents' ConfigMap, at start and at every resync
  let publishTimer: NodeJS.Timeout | null = null;
  let stopped = false;
  if (kc !== null && o.rootConfigMap !== null) {
    const { httpSecretApi } = await import('./secret-store.js');
    const { httpConfigMapApi, syncTrustBundle } = await import('./root-publisher.js');
    const secrets = httpSecretApi(kc);
    const maps = httpConfigMapApi(kc);
    const target = `${o.rootConfigMapNamespace}/${o.rootConfigMap}`;
    const sync = async (): Promise<void> => {
      try {
        const r = await syncTrustBundle(secrets, maps, {
          secretNamespace: o.caSecretNamespace!,
          configMapNamespace: o.rootConfigMapNamespace!,
          configMap: o.rootConfigMap!,
        });
        if (r === 'no-secret') log.warn('no CA Secret to publish the trust bundle from; the ConfigMap is left as it is', { configMap: target });
        else if (r !== 'unchanged') log.info('trust bundle published', { configMap: target, result: r });
      } catch (e) {
        log.error('publishing the trust bundle failed; retrying at the next resync', { configMap: target, error: e });
      }
      if (!stopped) {
        publishTimer = setTimeout(() => void sync(), o.rootSyncIntervalMs);
        publishTimer.unref();
      }
    };
    await sync();
  }

  await source.start();
  pods.follow(source);
  health.podsSynced = true;
  log.info('pod index synced', { nodes: pods.nodes, source: o.source });

  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      log.info('stopping', { signal: sig });
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  stopped = true;
  if (publishTimer) clearTimeout(publishTimer);
  renewer.stop();
  source.stop();
  metrics?.close();
  await server.close();
}
