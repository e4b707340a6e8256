/**
 * Root distribution: the cluster CA publishes its trust bundle (every trusted
 * root, PEM) into a ConfigMap in the agents' namespace, as istiod publishes
 * "istio-ca-root-cert". The agent DaemonSet mounts it as caRootCert; no
 * Secret or file is made by hand, and no agent takes a trust anchor from the
 * CA's own answer.
 *
 * Race-safe with several replicas: create answers 409 to all but one, and an
 * update carries the resourceVersion it read (409 Conflict when another
 * replica wrote in between): the loser reads again and retries. The bundle
 * mirrors the CA's Secret (root-cert.pem), which every replica reads, so
 * replicas publish the same content and a rotation's steps (old, old+new,
 * new) reach the agents from whichever replica resyncs first.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import { splitPemCertificates } from '../identity/ca-keys.js';
import { CaServiceError } from './errors.js';
import { apiFailure, kubeCall, trustBundleFromSecrets, type SecretApi } from './secret-store.js';

export const ROOT_CONFIGMAP = 'ambientd-ca-root-cert';
/** the key in the ConfigMap (as in Istio's istio-ca-root-cert); the agent's caRootCert is this file of the mounted ConfigMap */
export const ROOT_CONFIGMAP_KEY = 'root-cert.pem';

export interface ConfigMapObject {
  data: Record<string, string>;
  resourceVersion: string;
}

/** The three ConfigMap calls the publisher makes. */
export interface ConfigMapApi {
  get(namespace: string, name: string): Promise<ConfigMapObject | null>;
  /** 'exists' on 409 AlreadyExists */
  create(namespace: string, name: string, data: Record<string, string>): Promise<'created' | 'exists'>;
  /** an update conditional on resourceVersion: 'conflict' on 409 (someone wrote since), 'gone' on 404 */
  replace(namespace: string, name: string, data: Record<string, string>, resourceVersion: string): Promise<'replaced' | 'conflict' | 'gone'>;
}

export type PublishResult = 'created' | 'updated' | 'unchanged';

/** The bundle in a canonical form: the PEM certificates, each once, in order (so equal bundles compare equal). */
export function canonicalBundle(pem: string): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const p of splitPemCertificates(pem)) {
    let der: string;
    try {
      der = new X509Certificate(p).raw.toString('base64');
    } catch (e) {
      throw new CaServiceError('CA_SERVER_CONFIG', 'the trust bundle holds a certificate that does not parse', { cause: e });
    }
    if (seen.has(der)) continue;
    seen.add(der);
    out.push(p.trim() + '\n');
  }
  if (out.length === 0) throw new CaServiceError('CA_SERVER_CONFIG', 'the trust bundle holds no certificate: refusing to publish an empty one');
  return out.join('');
}

/** Makes the ConfigMap hold `bundlePem` (created if missing, updated if different); retries lost races up to `attempts` times. */
export async function publishTrustBundle(
  api: ConfigMapApi,
  o: { namespace: string; name?: string; bundlePem: string; attempts?: number },
): Promise<PublishResult> {
  const name = o.name ?? ROOT_CONFIGMAP;
  const bundle = canonicalBundle(o.bundlePem);
  const attempts = o.attempts ?? 5;
  for (let i = 0; i < attempts; i++) {
    const cur = await api.get(o.namespace, name);
    if (cur === null) {
      if ((await api.create(o.namespace, name, { [ROOT_CONFIGMAP_KEY]: bundle })) === 'created') return 'created';
      continue; // another replica created it: read it and compare
    }
    if (cur.data[ROOT_CONFIGMAP_KEY] === bundle) return 'unchanged';
    const r = await api.replace(o.namespace, name, { ...cur.data, [ROOT_CONFIGMAP_KEY]: bundle }, cur.resourceVersion);
    if (r === 'replaced') return 'updated';
    // conflict (another writer) or gone (deleted): read again
  }
  throw new CaServiceError('CA_SERVER_CONFIG', `ConfigMap ${o.namespace}/${name}: still racing with other writers after ${attempts} attempts`);
}

/**
 * ConfigMapApi over the API server of `kc`. RBAC: get and update on the one ConfigMap (resourceNames), create on
 * configmaps in the namespace (create cannot be limited to a name by RBAC).
 */
export function httpConfigMapApi(kc: KubeConfig, timeoutMs = 10_000): ConfigMapApi {
  const path = (ns: string, name?: string): string => `/api/v1/namespaces/${ns}/configmaps${name !== undefined ? `/${name}` : ''}`;
  const object = (ns: string, name: string, data: Record<string, string>, resourceVersion?: string) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace: ns, labels: { 'app.kubernetes.io/managed-by': 'ambientd-ca' }, ...(resourceVersion !== undefined ? { resourceVersion } : {}) },
    data,
  });
  return {
    async get(ns, name) {
      const p = path(ns, name);
      const { code, json } = await kubeCall(kc, 'GET', p, undefined, timeoutMs);
      if (code === 404) return null;
      if (code !== 200) return apiFailure(`GET ConfigMap ${ns}/${name}`, p, code, json);
      const md = (json.metadata ?? {}) as { resourceVersion?: unknown };
      return { data: (json.data ?? {}) as Record<string, string>, resourceVersion: String(md.resourceVersion ?? '') };
    },
    async create(ns, name, data) {
      const p = path(ns);
      const { code, json } = await kubeCall(kc, 'POST', p, object(ns, name, data), timeoutMs);
      if (code === 201 || code === 200) return 'created';
      if (code === 409) return 'exists';
      return apiFailure(`create ConfigMap ${ns}/${name}`, p, code, json);
    },
    async replace(ns, name, data, resourceVersion) {
      const p = path(ns, name);
      const { code, json } = await kubeCall(kc, 'PUT', p, object(ns, name, data, resourceVersion), timeoutMs);
      if (code === 200 || code === 201) return 'replaced';
      if (code === 409) return 'conflict';
      if (code === 404) return 'gone';
      return apiFailure(`update ConfigMap ${ns}/${name}`, p, code, json);
    },
  };
}

export type SyncResult = PublishResult | 'no-secret';

/**
 * One resync: the bundle of the CA's Secret (plug-in "cacerts", else "ambientd-ca-root": root-cert.pem) into the
 * ConfigMap. Never creates a root: with no Secret (deleted under a running CA) nothing is published.
 */
export async function syncTrustBundle(
  secrets: Pick<SecretApi, 'get'>,
  configMaps: ConfigMapApi,
  o: { secretNamespace: string; pluginSecret?: string; rootSecret?: string; configMapNamespace: string; configMap?: string },
): Promise<SyncResult> {
  const b = await trustBundleFromSecrets(secrets, {
    namespace: o.secretNamespace,
    ...(o.pluginSecret !== undefined ? { pluginSecret: o.pluginSecret } : {}),
    ...(o.rootSecret !== undefined ? { rootSecret: o.rootSecret } : {}),
  });
  if (!b) return 'no-secret';
  return publishTrustBundle(configMaps, {
    namespace: o.configMapNamespace,
    ...(o.configMap !== undefined ? { name: o.configMap } : {}),
    bundlePem: b.bundlePem,
  });
}
