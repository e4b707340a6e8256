/**
 * The cluster CA's key in Kubernetes Secrets, safe with several replicas
 * starting at once:
 *   1. a plug-in Secret (Istio's "cacerts": ca-cert.pem, ca-key.pem,
 *      root-cert.pem, cert-chain.pem) wins when present;
 *   2. else the CA's own root Secret ("ambientd-ca-root", same keys);
 *   3. else a new root is made and created as that Secret. The API server
 *      lets exactly one create succeed: a replica that loses (409
 *      AlreadyExists) drops its own root and loads the winner's. So two
 *      replicas racing end with one root.
 * The key lives only in the Secret and in the CA's memory, never on a node.
 */
import http from 'node:http';
import https from 'node:https';
import { X509Certificate } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { splitPemCertificates } from '../identity/ca-keys.js';
import { CertificateAuthority, createRoot, CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE } from '../identity/ca.js';
import { CaServiceError } from './errors.js';
import { KubernetesApiError } from '../discovery/k8s-reflector.js';

export const PLUGIN_SECRET = 'cacerts';
export const ROOT_SECRET = 'ambientd-ca-root';

/** The two Secret calls the store makes; data values are the decoded strings. */
export interface SecretApi {
  /** the Secret's data, or null when it does not exist */
  get(namespace: string, name: string): Promise<Record<string, string> | null>;
  /** 'exists' when a Secret of that name is already there (409) */
  create(namespace: string, name: string, data: Record<string, string>): Promise<'created' | 'exists'>;
}

export interface SecretStoreOptions {
  namespace: string;
  trustDomain: string;
  pluginSecret?: string;
  rootSecret?: string;
  rootLifetimeDays?: number;
}

export type SecretSource = 'plugin' | 'loaded' | 'created';

/** Loads the CA from the plug-in or root Secret, or creates the root Secret (race-safe). */
export async function loadOrCreateFromSecrets(
  api: SecretApi,
  o: SecretStoreOptions,
): Promise<{ ca: CertificateAuthority; source: SecretSource; secret: string }> {
  const plugin = o.pluginSecret ?? PLUGIN_SECRET;
  const root = o.rootSecret ?? ROOT_SECRET;
  const fromData = (d: Record<string, string>, name: string): Promise<CertificateAuthority> => {
    const cert = d[CA_CERT_FILE];
    const key = d[CA_KEY_FILE];
    if (!cert || !key) throw new CaServiceError('CA_SERVER_CONFIG', `Secret ${o.namespace}/${name} lacks ${CA_CERT_FILE} or ${CA_KEY_FILE}`);
    return CertificateAuthority.fromPem({
      trustDomain: o.trustDomain,
      caCertPem: cert,
      caKeyPem: key,
      ...(d[ROOT_CERT_FILE] ? { rootCertPem: d[ROOT_CERT_FILE] } : {}),
      ...(d[CERT_CHAIN_FILE] ? { certChainPem: d[CERT_CHAIN_FILE] } : {}),
    }).then((ca) => {
      checkSignsUnderTrustedRoot(ca, `Secret ${o.namespace}/${name}`);
      return ca;
    });
  };
  const p = await api.get(o.namespace, plugin);
  if (p) return { ca: await fromData(p, plugin), source: 'plugin', secret: plugin };
  const existing = await api.get(o.namespace, root);
  if (existing) return { ca: await fromData(existing, root), source: 'loaded', secret: root };
  const { certPem, keyPkcs8Pem } = await createRoot(o.trustDomain, o.rootLifetimeDays);
  const data = { [CA_CERT_FILE]: certPem, [CA_KEY_FILE]: keyPkcs8Pem, [ROOT_CERT_FILE]: certPem, [CERT_CHAIN_FILE]: certPem };
  if ((await api.create(o.namespace, root, data)) === 'created') return { ca: await fromData(data, root), source: 'created', secret: root };
  // another replica created it first: use its root, never ours
  const winner = await api.get(o.namespace, root);
  if (!winner) throw new CaServiceError('CA_SERVER_CONFIG', `Secret ${o.namespace}/${root} was reported to exist but cannot be read`);
  return { ca: await fromData(winner, root), source: 'loaded', secret: root };
}

/**
 * The CA must sign under a root it publishes: the top of its chain (ca-cert.pem and cert-chain.pem) is one of the
 * roots of root-cert.pem or signed by one. Else every certificate it signs would be refused by the agents (their
 * bundle is root-cert.pem): during a rotation that means root-cert.pem was not updated before ca-cert.pem/ca-key.pem.
 */
export function checkSignsUnderTrustedRoot(ca: Pick<CertificateAuthority, 'caCertPem' | 'intermediatesPem' | 'rootPem'>, where: string): void {
  const chain = splitPemCertificates(ca.intermediatesPem);
  const top = new X509Certificate(chain.length > 0 ? chain[chain.length - 1]! : ca.caCertPem);
  const roots = splitPemCertificates(ca.rootPem).map((p) => new X509Certificate(p));
  if (roots.some((r) => r.raw.equals(top.raw) || (top.checkIssued(r) && top.verify(r.publicKey)))) return;
  throw new CaServiceError(
    'CA_SERVER_CONFIG',
    `${where}: ${CA_CERT_FILE} does not chain to a root of ${ROOT_CERT_FILE}: agents would refuse every certificate it signs ` +
      `(rotation: add the new root to ${ROOT_CERT_FILE} first, then switch ${CA_CERT_FILE} and ${CA_KEY_FILE}; docs/CA.md)`,
  );
}

/**
 * The trust bundle the CA's Secrets hold, read only (never creates): root-cert.pem (all trusted roots, e.g. old
 * and new during a rotation; ca-cert.pem when absent) of the plug-in Secret if present, else of the root Secret.
 * null when neither exists. What the root ConfigMap mirrors (root-publisher.ts).
 */
export async function trustBundleFromSecrets(
  api: Pick<SecretApi, 'get'>,
  o: Pick<SecretStoreOptions, 'namespace' | 'pluginSecret' | 'rootSecret'>,
): Promise<{ bundlePem: string; secret: string } | null> {
  for (const name of [o.pluginSecret ?? PLUGIN_SECRET, o.rootSecret ?? ROOT_SECRET]) {
    const d = await api.get(o.namespace, name);
    if (!d) continue;
    const bundle = d[ROOT_CERT_FILE] ?? d[CA_CERT_FILE];
    if (!bundle) throw new CaServiceError('CA_SERVER_CONFIG', `Secret ${o.namespace}/${name} lacks ${ROOT_CERT_FILE} and ${CA_CERT_FILE}`);
    return { bundlePem: bundle, secret: name };
  }
  return null;
}

/** One JSON request to the API server of `kc` (its credentials and CA); the status code and the parsed body ({} when not JSON). */
export async function kubeCall(
  kc: KubeConfig,
  method: 'GET' | 'POST' | 'PUT',
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<{ code: number; json: Record<string, unknown> }> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new KubernetesApiError('kubeconfig has no current cluster', path);
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  const opts: https.RequestOptions = { headers: {} };
  await kc.applyToHTTPSOptions(opts);
  const text = body === undefined ? undefined : JSON.stringify(body);
  const headers: http.OutgoingHttpHeaders = {
    ...(opts.headers as http.OutgoingHttpHeaders),
    accept: 'application/json',
    'user-agent': 'ambientd/ca',
    ...(text !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } : {}),
  };
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, { method, headers, agent: opts.agent, ...(opts.auth ? { auth: opts.auth } : {}) });
    const timer = setTimeout(() => req.destroy(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
    req.once('close', () => clearTimeout(timer));
    req.on('error', (e) => reject(new KubernetesApiError(`${method} ${url.pathname}: ${e.message}`, path, undefined, undefined, { cause: e })));
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
        } catch {
          // not JSON: the status code says enough
        }
        resolve({ code: res.statusCode ?? 0, json });
      });
    });
    req.end(text);
  });
}

/** A typed K8S_API error for an unexpected answer. */
export function apiFailure(what: string, path: string, code: number, json: Record<string, unknown>): never {
  const reason = typeof json.reason === 'string' ? json.reason : undefined;
  throw new KubernetesApiError(`${what}: HTTP ${code}${typeof json.message === 'string' ? `: ${json.message}` : ''}`, path, code, reason);
}

/**
 * SecretApi over the API server of `kc`. RBAC: get on the two Secrets (resourceNames), create on secrets in the
 * namespace (RBAC cannot limit create to a name: the name is not known to the authorizer before the object exists).
 */
export function httpSecretApi(kc: KubeConfig, timeoutMs = 10_000): SecretApi {
  const call = (method: 'GET' | 'POST', path: string, body?: unknown) => kubeCall(kc, method, path, body, timeoutMs);
  return {
    async get(namespace, name) {
      const path = `/api/v1/namespaces/${namespace}/secrets/${name}`;
      const { code, json } = await call('GET', path);
      if (code === 404) return null;
      if (code !== 200) return apiFailure(`GET Secret ${namespace}/${name}`, path, code, json);
      const data = (json.data ?? {}) as Record<string, string>;
      return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
    },
    async create(namespace, name, data) {
      const secret = {
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'Opaque',
        metadata: { name, namespace, labels: { 'app.kubernetes.io/managed-by': 'ambientd-ca' } },
        data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
      };
      const path = `/api/v1/namespaces/${namespace}/secrets`;
      const { code, json } = await call('POST', path, secret);
      if (code === 201 || code === 200) return 'created';
      if (code === 409) return 'exists';
      return apiFailure(`create Secret ${namespace}/${name}`, path, code, json);
    },
  };
}
