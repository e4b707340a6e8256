/**
 * What a connection record says about who talked to whom, derived once for
 * both readers: the Istio label set of the `istio_tcp_*` metrics and the
 * fields of the JSON access log (`recordView`). One rule decides each side's
 * workload and principal:
 *
 *  - the local side (the enrolled pod the connection was captured for: the
 *    source of an outbound record, the destination of an inbound one) is the
 *    record's pod; its principal is the identity the agent holds for it. On
 *    mutual TLS that identity is proven to the peer by the certificate we
 *    present; on plaintext it is only known to us ("local").
 *  - the remote side is the pod at the address the kernel reports (the
 *    destination, or the service endpoint chosen; the TCP peer inbound, never
 *    a header). Its principal is only what the peer's certificate proved
 *    (HBONE); and on inbound mutual TLS the address names a workload only if
 *    that workload has the proven identity, else "unknown" with the proven
 *    principal (docs/SECURITY.md: an address never lends its workload to
 *    another identity).
 *
 * Principals are shown by proof: the Istio labels carry only identities the
 * mutual-TLS handshake proved (`source_principal`/`destination_principal` are
 * "unknown" without mTLS, as ztunnel's "set only ... based on the real mTLS
 * identity"); the access log shows every known principal, the local pod's
 * included (an operator reading it wants to know which identity the local pod
 * has, and `via` says whether it was proven on the wire).
 *
 * Istio semantics otherwise (docs: reference "Metrics"): reporter "source"
 * for outbound records, "destination" for inbound; *_workload is the pod's
 * controller name when the pod says so (a ReplicaSet pod
 * "web-7d4b9c8f6d-x2x9z" with label pod-template-hash gives "web"), else the
 * pod name; unknown values are "unknown". Cardinality is bounded: no label
 * carries a port, an address or a connection id.
 */
import type { MeshIndex, PodInfo, ServiceInfo } from '../discovery/model.js';
import { formatClaimed, recordReason, recordState, type RecordState, type TrackedConnection, type Direction, type Via } from '../proxy/connections.js';
import { unreachable, type Outcome } from '../proxy/outcome.js';
import { formatHostPort } from '../util/hostport.js';

export const UNKNOWN = 'unknown';
export const CLUSTER = 'Kubernetes';

export const ISTIO_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;
export type IstioLabel = (typeof ISTIO_LABELS)[number];
export type IstioLabels = Record<IstioLabel, string>;

/** One line of the access log (scope "<root>.access"): field names and values are a contract (log pipelines read them). */
export interface AccessLogEntry {
  connectionId: number;
  direction: Direction;
  via: Via;
  /** namespace/name, null when the address is not a workload of the model */
  srcWorkload: string | null;
  dstWorkload: string | null;
  srcPrincipal: string | null;
  dstPrincipal: string | null;
  src: string;
  /** inbound HBONE: the client the peer claimed (Forwarded), informational */
  claimedSrc: string | null;
  /** what the client dialled */
  dst: string;
  /** where it was sent (service endpoint), else the original destination */
  endpoint: string;
  service: string | null;
  bytesSent: number;
  bytesReceived: number;
  durationMs: number | null;
  state: RecordState;
  reason: string | null;
  start: string;
  end: string | null;
}

/** What the derivation reads from the mesh model. */
export interface RecordContext {
  /** the model's pod at an address (local or remote), when known */
  podByIp(ip: string): PodInfo | undefined;
  /** SPIFFE identity of a pod */
  spiffeOf(p: PodInfo): string;
  /** the model's pod by namespace/name (a record's own pod); without it the local pod is found by its address */
  podByKey?(key: string): PodInfo | undefined;
  /** the model's service by namespace/name */
  service?(key: string): ServiceInfo | undefined;
}

/** The context of the mesh model `index` (or of whatever model `index()` returns at the time: the agent's current one). */
export function recordContext(index: MeshIndex | (() => MeshIndex), spiffeOf: (p: PodInfo) => string): RecordContext {
  const idx = typeof index === 'function' ? index : (): MeshIndex => index;
  return {
    podByIp: (ip) => idx().podByIp.get(ip),
    podByKey: (k) => idx().snap.pods.get(k),
    service: (k) => idx().snap.services.get(k),
    spiffeOf,
  };
}

/** Deployment-style workload name: strips "-<pod-template-hash>-<5 chars>" when the pod says so. */
export function workloadName(p: PodInfo): string {
  const hash = p.labels['pod-template-hash'];
  if (hash) {
    const suffix = new RegExp(`-${hash.replace(/[^a-z0-9]/gi, '')}-[a-z0-9]{5}$`);
    if (suffix.test(p.name)) return p.name.replace(suffix, '');
  }
  return p.name;
}

export function canonicalService(p: PodInfo): string {
  return p.labels['service.istio.io/canonical-name'] || p.labels['app.kubernetes.io/name'] || p.labels.app || workloadName(p);
}

export function canonicalRevision(p: PodInfo): string {
  return p.labels['service.istio.io/canonical-revision'] || p.labels['app.kubernetes.io/version'] || p.labels.version || 'latest';
}

export type ResponseFlag = '-' | 'DENY' | 'CONNECT' | 'TLS_FAILURE' | 'UO';

/**
 * Istio response_flags: DENY (a policy denied it, here or at the peer),
 * CONNECT (the destination could not be reached), TLS_FAILURE (the HBONE
 * handshake failed), UO (a cap of the agent: Envoy's upstream overflow), "-"
 * for a connection that was established (however it ended) or is open.
 */
export function responseFlags(outcome: Outcome | null): ResponseFlag {
  if (outcome === null) return '-';
  switch (outcome.kind) {
    case 'closed':
    case 'reset':
    case 'socket_error':
    case 'client_gone':
      return '-';
    case 'denied':
    case 'revoked':
      return 'DENY';
    case 'limit':
      return 'UO';
    case 'no_endpoint':
    case 'upstream_failed':
      return 'CONNECT';
    case 'hbone_failed':
      return outcome.code === 'HBONE_DENIED' ? 'DENY' : outcome.code === 'HBONE_TLS' ? 'TLS_FAILURE' : 'CONNECT';
    default:
      return unreachable(outcome);
  }
}

export type DenialReason = 'policy_revoked' | 'denied_by_peer' | 'policy_hbone' | 'policy_plaintext';

/** Bounded reason of a denial (ambientd_denied_connections_total); null when it was not denied. */
export function denialReason(rec: Pick<TrackedConnection, 'outcome' | 'via'>): DenialReason | null {
  const o = rec.outcome;
  if (o === null) return null;
  switch (o.kind) {
    case 'revoked':
      return 'policy_revoked';
    case 'denied':
      return rec.via === 'inbound-hbone' ? 'policy_hbone' : 'policy_plaintext';
    case 'hbone_failed':
      return o.code === 'HBONE_DENIED' ? 'denied_by_peer' : null;
    case 'closed':
    case 'reset':
    case 'socket_error':
    case 'client_gone':
    case 'no_endpoint':
    case 'upstream_failed':
    case 'limit':
      return null;
    default:
      return unreachable(o);
  }
}

export function isMutualTls(via: Via): boolean {
  return via === 'hbone' || via === 'inbound-hbone';
}

/** One side of a connection: the workload, its principal and what proves the principal. */
export interface Side {
  pod: PodInfo | undefined;
  principal: string | null;
  /** "mtls": the handshake proved it; "local": the agent's own pod (not proven on the wire); null: no principal */
  proof: 'mtls' | 'local' | null;
}

/** Both sides of a record, by the rule at the top of this file. */
export function sidesOf(rec: TrackedConnection, ctx: RecordContext): { src: Side; dst: Side; mtls: boolean } {
  const mtls = isMutualTls(rec.via);
  const outbound = rec.direction === 'outbound';
  const localAddr = outbound ? rec.src : rec.dst;
  const localPod = ctx.podByKey?.(rec.pod) ?? ctx.podByIp(localAddr.ip);
  const local: Side = { pod: localPod, principal: localPod ? ctx.spiffeOf(localPod) : null, proof: localPod ? (mtls ? 'mtls' : 'local') : null };
  const proven = mtls ? rec.peerIdentity : null;
  let remotePod = ctx.podByIp((outbound ? (rec.endpoint ?? rec.dst) : rec.src).ip);
  // inbound mTLS: the address names a workload only if that workload is who the certificate proved
  if (!outbound && mtls && remotePod && ctx.spiffeOf(remotePod) !== proven) remotePod = undefined;
  const remote: Side = { pod: remotePod, principal: proven, proof: proven !== null ? 'mtls' : null };
  return outbound ? { src: local, dst: remote, mtls } : { src: remote, dst: local, mtls };
}

interface LabelSide {
  workload: string;
  canonical_service: string;
  canonical_revision: string;
  workload_namespace: string;
  principal: string;
  app: string;
  version: string;
  cluster: string;
}

function labelSide(s: Side): LabelSide {
  const principal = s.proof === 'mtls' && s.principal !== null ? s.principal : UNKNOWN;
  const p = s.pod;
  if (!p) {
    return {
      workload: UNKNOWN,
      canonical_service: UNKNOWN,
      canonical_revision: UNKNOWN,
      workload_namespace: UNKNOWN,
      principal,
      app: UNKNOWN,
      version: UNKNOWN,
      cluster: UNKNOWN,
    };
  }
  return {
    workload: workloadName(p),
    canonical_service: canonicalService(p),
    canonical_revision: canonicalRevision(p),
    workload_namespace: p.namespace,
    principal,
    app: p.labels['app.kubernetes.io/name'] || p.labels.app || UNKNOWN,
    version: p.labels['app.kubernetes.io/version'] || p.labels.version || UNKNOWN,
    cluster: CLUSTER,
  };
}

const podKeyOf = (p: PodInfo): string => `${p.namespace}/${p.name}`;

export interface RecordView {
  labels: IstioLabels;
  accessLog: AccessLogEntry;
}

/** The Istio labels and the access-log fields of a record, from one derivation. */
export function recordView(rec: TrackedConnection, ctx: RecordContext): RecordView {
  const { src, dst, mtls } = sidesOf(rec, ctx);
  const outbound = rec.direction === 'outbound';
  const s = labelSide(src);
  const d = labelSide(dst);
  const svc = rec.service ? ctx.service?.(rec.service) : undefined;
  const [svcNs, svcName] = rec.service ? [rec.service.split('/')[0]!, rec.service.split('/')[1] ?? UNKNOWN] : [UNKNOWN, UNKNOWN];
  const labels: IstioLabels = {
    reporter: outbound ? 'source' : 'destination',
    source_workload: s.workload,
    source_canonical_service: s.canonical_service,
    source_canonical_revision: s.canonical_revision,
    source_workload_namespace: s.workload_namespace,
    source_principal: s.principal,
    source_app: s.app,
    source_version: s.version,
    source_cluster: s.cluster,
    destination_service: svc?.hostname ?? UNKNOWN,
    destination_service_namespace: svc?.namespace ?? svcNs,
    destination_service_name: svc?.name ?? svcName,
    destination_workload: d.workload,
    destination_canonical_service: d.canonical_service,
    destination_canonical_revision: d.canonical_revision,
    destination_workload_namespace: d.workload_namespace,
    destination_principal: d.principal,
    destination_app: d.app,
    destination_version: d.version,
    destination_cluster: d.cluster,
    request_protocol: 'tcp',
    response_flags: responseFlags(rec.endMs === null ? null : rec.outcome),
    connection_security_policy: mtls ? 'mutual_tls' : UNKNOWN,
  };
  const accessLog: AccessLogEntry = {
    connectionId: rec.id,
    direction: rec.direction,
    via: rec.via,
    // the local side falls back to the record's pod when the model no longer has it
    srcWorkload: src.pod ? podKeyOf(src.pod) : outbound ? rec.pod : null,
    dstWorkload: dst.pod ? podKeyOf(dst.pod) : outbound ? null : rec.pod,
    srcPrincipal: src.principal,
    dstPrincipal: dst.principal,
    src: formatHostPort(rec.src),
    claimedSrc: rec.claimedSrc ? formatClaimed(rec.claimedSrc) : null,
    dst: formatHostPort(rec.dst),
    endpoint: formatHostPort(rec.endpoint ?? rec.dst),
    service: rec.service,
    bytesSent: rec.bytesSent,
    bytesReceived: rec.bytesReceived,
    durationMs: rec.endMs === null ? null : rec.endMs - rec.startMs,
    state: recordState(rec),
    reason: recordReason(rec),
    start: new Date(rec.startMs).toISOString(),
    end: rec.endMs === null ? null : new Date(rec.endMs).toISOString(),
  };
  return { labels, accessLog };
}
