/**
 * What the CA accepts in a CSR. The certificate it signs takes only the
 * public key from the CSR; everything else (the URI SAN, key usages, no CA
 * flag, the lifetime) comes from the CA. A CSR that asks for more than a
 * workload certificate of the granted identity is REFUSED, not sanitised:
 *   - a SAN other than the URI of the granted identity (DNS, IP, e-mail,
 *     another URI): "extra SAN";
 *   - a URI SAN with a SPIFFE id in another trust domain;
 *   - basicConstraints CA:TRUE.
 * Refusing (INVALID_ARGUMENT, counted) makes a confused or hostile client
 * visible instead of handing it a certificate it did not ask for. A CSR with
 * no SAN at all is fine (the identity comes from authorization). The subject
 * is ignored (the certificate's is empty, as Istio's).
 */
import { x509 } from '../identity/x509.js';
import { tryParseSpiffeId } from '../identity/spiffe.js';
import { CaServiceError } from './errors.js';
import { CaError } from '../identity/ca-errors.js';

const OID_SAN = '2.5.29.17';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';

/**
 * Checks `pem` for `identity` in `trustDomain`; throws CA_BAD_CSR (unreadable,
 * bad signature) or CA_CSR_REJECTED. Returns the CSR's public key (SPKI DER),
 * the one thing the signed certificate takes from it (the signer checks the
 * key type).
 */
export async function checkCsr(pem: string, identity: string, trustDomain: string): Promise<Uint8Array> {
  let req: x509.Pkcs10CertificateRequest;
  try {
    req = new x509.Pkcs10CertificateRequest(pem);
  } catch (e) {
    throw new CaError('CA_BAD_CSR', 'cannot parse the CSR (PEM PKCS#10 expected)', { cause: e });
  }
  let ok = false;
  try {
    ok = await req.verify();
  } catch (e) {
    throw new CaError('CA_BAD_CSR', 'cannot verify the CSR signature', { cause: e });
  }
  if (!ok) throw new CaError('CA_BAD_CSR', 'the CSR signature is invalid');
  for (const ext of req.extensions) {
    if (ext.type === OID_BASIC_CONSTRAINTS && new x509.BasicConstraintsExtension(ext.rawData).ca)
      throw new CaServiceError('CA_CSR_REJECTED', 'the CSR asks for a CA certificate (basicConstraints CA:TRUE)');
    if (ext.type !== OID_SAN) continue;
    let names: readonly x509.GeneralName[];
    try {
      names = new x509.SubjectAlternativeNameExtension(ext.rawData).names.items;
    } catch (e) {
      // otherName, X.400, EDI party: nothing a workload certificate carries
      throw new CaServiceError('CA_CSR_REJECTED', 'the CSR carries a SAN of a kind the CA does not sign', { cause: e });
    }
    for (const n of names) {
      if (n.type === 'url' && n.value === identity) continue;
      if (n.type === 'url') {
        const other = tryParseSpiffeId(n.value);
        if (other && other.trustDomain !== trustDomain)
          throw new CaServiceError('CA_CSR_REJECTED', `the CSR asks for ${n.value}, in trust domain ${other.trustDomain} (the CA signs for ${trustDomain})`);
        throw new CaServiceError('CA_CSR_REJECTED', `the CSR asks for URI SAN ${n.value}, the caller was granted ${identity}`);
      }
      throw new CaServiceError('CA_CSR_REJECTED', `the CSR asks for an extra SAN (${n.type}: ${n.value}); only the URI SAN ${identity} is signed`);
    }
  }
  return new Uint8Array(req.publicKey.rawData);
}
