/**
 * The agent's client of a cluster CA (`ambientd ca`, or istiod): a
 * CertificateIssuer that asks Istio's IstioCertificateService/CreateCertificate
 * over TLS for each workload identity, with the node's token as
 * "authorization: Bearer <token>" and the identity in
 * metadata.ImpersonatedIdentity. The IdentityManager (manager.ts) keeps doing
 * what it does with the built-in CA: renewal at half-life, back-off, keeping a
 * still-valid certificate when renewal fails. The agent holds no CA key.
 *
 * Trust: the trust bundle is the root file (caRootCert; in Kubernetes a
 * ConfigMap like Istio's istio-ca-root-cert), never the chain the CA answers
 * with: a trust anchor comes out of band. The file verifies the CA's TLS
 * certificate, and an answer whose chain does not end in one of its roots is
 * refused (CA_ISSUE_BAD_RESPONSE). Both files (root, token) are re-read on
 * every request: the kubelet rotates projected tokens, and a root rotation
 * updates the bundle (the channel is rebuilt when the roots change).
 */
import fs from 'node:fs';
import net from 'node:net';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { parseDialAddress } from '../util/hostport.js';
import { clientCodeOf, CaServiceError, ERROR_CODE_METADATA, RemoteCaError } from '../ca/errors.js';
import { IMPERSONATED_IDENTITY, loadCaService, type IstioCertificateRequest, type IstioCertificateResponse } from '../ca/proto.js';
import { splitPemCertificates } from './ca-keys.js';
import type { CertificateIssuer, CertificateSigningRequest, IssuedCertificate } from './ca.js';
import { CertificateIssueError } from './manager.js';

export interface RemoteCaOptions {
  /** "host:port" of the CA (Istio: istiod.istio-system.svc:15012) */
  address: string;
  /** PEM trust bundle: verifies the CA's TLS certificate and the chains it returns */
  rootFile: string;
  /** the node's bearer token (projected ServiceAccount token, or the sandbox's node token) */
  tokenFile: string;
  /** the name checked in the CA's TLS certificate (default: the host of `address`) */
  serverName?: string;
  /** deadline of one call (default 10 s) */
  timeoutMs?: number;
  /** sent as the "ClusterID" header (istiod wants it with several clusters) */
  clusterId?: string;
}

interface Channel {
  roots: string;
  client: grpc.Client & {
    CreateCertificate(
      req: Partial<IstioCertificateRequest>,
      md: grpc.Metadata,
      opts: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: IstioCertificateResponse) => void,
    ): grpc.ClientUnaryCall;
  };
}

export class RemoteCaIssuer implements CertificateIssuer {
  readonly requiresCsr = true;
  readonly #o: RemoteCaOptions;
  readonly #host: string;
  #channel: Channel | undefined;
  #closed = false;
  #bundle: { key: string; pem: string } | undefined;

  constructor(o: RemoteCaOptions) {
    this.#o = o;
    const a = parseDialAddress(o.address);
    if (!a) throw new CaServiceError('CA_CLIENT_CONFIG', `caAddress must be host:port, got ${JSON.stringify(o.address)}`);
    this.#host = a.host;
  }

  async issue(req: CertificateSigningRequest): Promise<IssuedCertificate> {
    if (this.#closed) throw new CaServiceError('CA_REMOTE_UNAVAILABLE', 'the CA client is closed');
    if (req.csrPem === undefined) throw new CertificateIssueError('CA_ISSUE_FAILED', 'the cluster CA needs a CSR');
    const roots = readFile(this.#o.rootFile, 'caRootCert');
    const token = readFile(this.#o.tokenFile, 'caTokenFile').trim();
    const ch = this.#channelFor(roots);
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    if (this.#o.clusterId) md.set('ClusterID', this.#o.clusterId);
    const request: Partial<IstioCertificateRequest> = {
      csr: req.csrPem,
      validity_duration: String(Math.max(1, Math.round((req.lifetimeMs ?? 24 * 3_600_000) / 1000))),
      metadata: { fields: { [IMPERSONATED_IDENTITY]: { stringValue: req.spiffeId } } },
    };
    const res = await new Promise<IstioCertificateResponse>((resolve, reject) => {
      ch.client.CreateCertificate(request, md, { deadline: Date.now() + (this.#o.timeoutMs ?? 10_000) }, (err, r) => {
        if (err) {
          const serverCode = err.metadata?.get(ERROR_CODE_METADATA)[0];
          reject(
            new RemoteCaError(
              clientCodeOf(err.code),
              `${this.#o.address}: ${grpc.status[err.code] ?? err.code}: ${err.details}`,
              err.code,
              serverCode !== undefined ? String(serverCode) : undefined,
              { cause: err },
            ),
          );
        } else resolve(r ?? { cert_chain: [] });
      });
    });
    return issuedFrom(res, roots);
  }

  /**
   * The trust bundle as the root file holds it now: what the agent's HBONE
   * connections verify peers with (IdentityManager), so a root added by a
   * rotation is trusted as soon as the kubelet updates the file, and a removed
   * one stops being trusted, without waiting for the local certificate's
   * renewal. Re-read when the file changes (stat: inode, size, mtime; the
   * kubelet swaps a symlink); a file that cannot be read or holds no
   * certificate keeps the last good bundle (never an empty trust set).
   */
  trustBundle(): string | undefined {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.#o.rootFile);
    } catch {
      return this.#bundle?.pem;
    }
    const key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (this.#bundle?.key === key) return this.#bundle.pem;
    try {
      const pem = fs.readFileSync(this.#o.rootFile, 'utf8');
      const certs = splitPemCertificates(pem);
      if (certs.length > 0) this.#bundle = { key, pem: certs.join('') };
    } catch {
      // keep the last good bundle
    }
    return this.#bundle?.pem;
  }

  /** Closes the channel; later issue() calls fail. */
  close(): void {
    this.#closed = true;
    this.#channel?.client.close();
    this.#channel = undefined;
  }

  #channelFor(roots: string): Channel {
    if (this.#channel && this.#channel.roots === roots) return this.#channel;
    this.#channel?.client.close();
    if (splitPemCertificates(roots).length === 0) throw new CaServiceError('CA_CLIENT_CONFIG', `${this.#o.rootFile} holds no PEM certificate`);
    const name = this.#o.serverName ?? this.#host;
    const options: grpc.ChannelOptions = net.isIP(name) ? {} : { 'grpc.ssl_target_name_override': name, 'grpc.default_authority': name };
    const { Client } = loadCaService();
    const client = new Client(this.#o.address, grpc.credentials.createSsl(Buffer.from(roots)), options) as unknown as Channel['client'];
    this.#channel = { roots, client };
    return this.#channel;
  }
}

function readFile(file: string, setting: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CaServiceError('CA_CLIENT_CONFIG', `cannot read ${setting} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
}

/**
 * An IssuedCertificate from a CreateCertificate answer: cert_chain is leaf
 * first, root last (an element may hold several PEM blocks). The chain must
 * link up, certificate by certificate, to a root of the trust bundle.
 */
export function issuedFrom(res: IstioCertificateResponse, bundlePem: string): IssuedCertificate {
  const pems = (res.cert_chain ?? []).flatMap((c) => splitPemCertificates(c));
  if (pems.length === 0) throw new CertificateIssueError('CA_ISSUE_BAD_RESPONSE', 'the CA answered with an empty cert_chain');
  let certs: X509Certificate[];
  try {
    certs = pems.map((p) => new X509Certificate(p));
  } catch (e) {
    throw new CertificateIssueError('CA_ISSUE_BAD_RESPONSE', 'the CA answered with a certificate that does not parse', { cause: e });
  }
  const bundle = splitPemCertificates(bundlePem).map((p) => new X509Certificate(p));
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!certs[i]!.checkIssued(certs[i + 1]!) || !certs[i]!.verify(certs[i + 1]!.publicKey))
      throw new CertificateIssueError('CA_ISSUE_BAD_RESPONSE', `cert_chain[${i}] is not signed by cert_chain[${i + 1}]`);
  }
  const top = certs[certs.length - 1]!;
  const anchored = bundle.some((r) => r.raw.equals(top.raw) || (top.checkIssued(r) && top.verify(r.publicKey)));
  if (!anchored)
    throw new CertificateIssueError('CA_ISSUE_BAD_RESPONSE', 'the chain the CA answered with does not end in a root of the trust bundle (caRootCert)');
  // the chain presented in TLS: leaf and intermediates, without a self-signed root
  const selfSigned = top.checkIssued(top) && top.verify(top.publicKey);
  const presented = selfSigned && pems.length > 1 ? pems.slice(0, -1) : pems;
  const leaf = certs[0]!;
  return {
    certPem: pems[0]!,
    chainPem: presented.join(''),
    rootPem: splitPemCertificates(bundlePem).join(''),
    serial: leaf.serialNumber.toLowerCase(),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
  };
}
