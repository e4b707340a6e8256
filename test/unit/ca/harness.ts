/**
 * A cluster CA on loopback for the tests: an in-memory root, the sandbox
 * authenticator (or any other), a pod index from a list of pods, the gRPC
 * server with TLS on 127.0.0.1, and a client made from our proto loader.
 * A helper, not a test file.
 */
import * as grpc from '@grpc/grpc-js';
import { createPrivateKey } from 'node:crypto';
import { CertificateAuthority } from '../../../src/identity/ca.js';
import { x509 } from '../../../src/identity/x509.js';
import { emptySnapshot, type PodInfo } from '../../../src/discovery/model.js';
import { NodePodIndex } from '../../../src/ca/pod-index.js';
import { CaServer, type CaServerOptions } from '../../../src/ca/server.js';
import { servingCertificate } from '../../../src/ca/serving.js';
import { generateSandboxKey, mintSandboxToken, SandboxAuthenticator, type MintOptions } from '../../../src/ca/auth-sandbox.js';
import type { Authenticator } from '../../../src/ca/auth.js';
import { IMPERSONATED_IDENTITY, loadCaService, type IstioCertificateResponse } from '../../../src/ca/proto.js';
import { Logger } from '../../../src/util/log.js';

export const TD = 'cluster.local';
export const AUDIENCE = 'istio-ca';
export const AGENT = { namespace: 'ambientd-system', serviceAccount: 'ambientd' };
export const id = (ns: string, sa: string, td = TD): string => `spiffe://${td}/ns/${ns}/sa/${sa}`;

export interface TestPod {
  namespace: string;
  name: string;
  serviceAccount: string;
  node: string | null;
  uid?: string;
}

/** web on node-a and node-b, db only on node-b, client on node-a (the shape of test/fixtures/k8s/pods.json). */
export const PODS: TestPod[] = [
  { namespace: 'ambient-demo', name: 'web-a', serviceAccount: 'web', node: 'node-a' },
  { namespace: 'ambient-demo', name: 'web-b', serviceAccount: 'web', node: 'node-b' },
  { namespace: 'ambient-demo', name: 'db-0', serviceAccount: 'db', node: 'node-b' },
  { namespace: 'plain', name: 'client', serviceAccount: 'client', node: 'node-a' },
];

export function snapshotOf(pods: TestPod[]) {
  const snap = emptySnapshot();
  let n = 10;
  for (const p of pods) {
    const info: PodInfo = {
      ...(p.uid ? { uid: p.uid } : {}),
      name: p.name,
      namespace: p.namespace,
      serviceAccount: p.serviceAccount,
      node: p.node,
      ip: `10.244.0.${n++}`,
      netns: null,
      cgroup: null,
      labels: {},
    };
    snap.pods.set(`${p.namespace}/${p.name}`, info);
  }
  return snap;
}

export interface CaHarness {
  ca: CertificateAuthority;
  server: CaServer;
  port: number;
  address: string;
  pods: NodePodIndex;
  keys: { privateKeyPem: string; publicKeyPem: string };
  logs: Array<Record<string, unknown>>;
  /** a node agent's token for `node` (overrides: expired, other audience, another SA) */
  token(node: string, o?: Partial<MintOptions>): string;
  /** CreateCertificate with our loader's client */
  call(req: { csr: string; validity?: number; impersonate?: string }, token?: string): Promise<IstioCertificateResponse>;
  metric(result: string, code: string): Promise<number>;
  close(): Promise<void>;
}

export async function startCa(
  t: { after(fn: () => Promise<void> | void): void },
  o: { pods?: TestPod[] | null; index?: NodePodIndex; authenticator?: Authenticator; server?: Partial<CaServerOptions>; servingNames?: string[] } = {},
): Promise<CaHarness> {
  const ca = await CertificateAuthority.createInMemory({ trustDomain: TD });
  const keys = generateSandboxKey();
  const pods = o.index ?? new NodePodIndex(TD);
  if (!o.index && o.pods !== null) pods.update(snapshotOf(o.pods ?? PODS));
  const logs: Array<Record<string, unknown>> = [];
  const log = new Logger('ambientd.ca', 'debug', (l) => logs.push(JSON.parse(l) as Record<string, unknown>));
  const tls = await servingCertificate(ca, o.servingNames ?? ['ambientd-ca.ambientd-system.svc', '127.0.0.1']);
  const server = new CaServer({
    signer: ca,
    authenticator: o.authenticator ?? new SandboxAuthenticator({ publicKey: keys.publicKeyPem, audience: AUDIENCE }),
    pods,
    trustedNodeAccounts: [`${AGENT.namespace}/${AGENT.serviceAccount}`],
    tls,
    log,
    ...o.server,
  });
  const port = await server.listen('127.0.0.1:0');
  const address = `127.0.0.1:${port}`;
  const { Client } = loadCaService();
  const client = new Client(address, grpc.credentials.createSsl(Buffer.from(ca.rootPem)));
  const priv = createPrivateKey(keys.privateKeyPem);
  const token = (node: string, m: Partial<MintOptions> = {}): string => mintSandboxToken(priv, { ...AGENT, node, audience: AUDIENCE, ...m });
  const call = (req: { csr: string; validity?: number; impersonate?: string }, tok?: string): Promise<IstioCertificateResponse> => {
    const md = new grpc.Metadata();
    if (tok !== undefined) md.set('authorization', `Bearer ${tok}`);
    return new Promise((resolve, reject) => {
      (client as unknown as Record<string, (...a: unknown[]) => void>).CreateCertificate!(
        {
          csr: req.csr,
          validity_duration: String(req.validity ?? 0),
          ...(req.impersonate !== undefined ? { metadata: { fields: { [IMPERSONATED_IDENTITY]: { stringValue: req.impersonate } } } } : {}),
        },
        md,
        { deadline: Date.now() + 10_000 },
        (err: grpc.ServiceError | null, res: IstioCertificateResponse) => (err ? reject(err) : resolve(res)),
      );
    });
  };
  const metric = async (result: string, code: string): Promise<number> => {
    const m = (await server.registry.getSingleMetric('ambientd_ca_requests_total')!.get()).values;
    return m.find((v) => v.labels.result === result && v.labels.code === code)?.value ?? 0;
  };
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    client.close();
    await server.close(100);
  };
  t.after(close);
  return { ca, server, port, address, pods, keys, logs, token, call, metric, close };
}

export interface CsrOptions {
  /** URI SANs (default: none) */
  uris?: string[];
  dns?: string[];
  ips?: string[];
  ca?: boolean;
}

/** A PKCS#10 CSR (PEM) with a fresh P-256 key. */
export async function makeCsr(o: CsrOptions = {}): Promise<{ csr: string; keys: CryptoKeyPair }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = (await globalThis.crypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const names: x509.JsonGeneralName[] = [
    ...(o.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(o.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(o.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const extensions: x509.Extension[] = [];
  if (names.length) extensions.push(new x509.SubjectAlternativeNameExtension(names, true));
  if (o.ca) extensions.push(new x509.BasicConstraintsExtension(true, undefined, true));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams, extensions });
  return { csr: csr.toString('pem'), keys };
}

/** The gRPC error of a call expected to fail. */
export async function refusal(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as grpc.ServiceError;
  }
  throw new Error('the call succeeded, a refusal was expected');
}
