/**
 * The one model of the mesh every source (workload file, Kubernetes) feeds
 * and every consumer (agent, proxy, policy, admin) reads. Pure data with
 * indexes; no I/O here.
 */
import { formatHostPort } from '../util/hostport.js';

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';

export interface NamespaceInfo {
  name: string;
  labels: Record<string, string>;
}

export interface PodInfo {
  /** Kubernetes pod UID (file source: "<namespace>/<name>" when absent) */
  uid?: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  /** node the pod runs on; null = this node (single-machine file source) */
  node: string | null;
  /** primary IP (status.podIP) */
  ip: string;
  /** all IPs (status.podIPs), ip first */
  ips?: string[];
  /** network namespace path, for local pods (file source: given; k8s: found from /proc) */
  netns: string | null;
  /** cgroup v2 directory, for local pods */
  cgroup: string | null;
  labels: Record<string, string>;
  /** false while the pod is not Ready (endpoints skip it) */
  ready?: boolean;
}

export interface ServicePort {
  name?: string;
  port: number;
  /** number, or a named port resolved against endpoint ports */
  targetPort: number | string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
}

export interface Endpoint {
  ip: string;
  ready: boolean;
  /** endpoint ports by name (EndpointSlice ports), for named targetPorts */
  ports?: Array<{ name?: string; port: number }>;
  /** the pod behind it, "namespace/name", when known */
  pod?: string;
  node?: string;
}

export interface ServiceInfo {
  name: string;
  namespace: string;
  /** <name>.<namespace>.svc.cluster.local */
  hostname: string;
  /** cluster IPs */
  vips: string[];
  ports: ServicePort[];
  selector?: Record<string, string>;
  endpoints: Endpoint[];
}

/** Istio security.istio.io/v1 AuthorizationPolicy (the L4-relevant shape). */
export interface AuthorizationPolicy {
  name: string;
  namespace: string;
  spec: AuthorizationPolicySpec;
}

export interface AuthorizationPolicySpec {
  selector?: { matchLabels?: Record<string, string> };
  targetRefs?: unknown[];
  /** default ALLOW */
  action?: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  provider?: unknown;
  rules?: PolicyRule[];
}

export interface PolicyRule {
  from?: Array<{ source?: PolicySource }>;
  to?: Array<{ operation?: PolicyOperation }>;
  when?: Array<{ key: string; values?: string[]; notValues?: string[] }>;
}

export interface PolicySource {
  principals?: string[];
  notPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  serviceAccounts?: string[];
  notServiceAccounts?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  remoteIpBlocks?: string[];
  notRemoteIpBlocks?: string[];
  /** HTTP-only (JWT) */
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
}

export interface PolicyOperation {
  ports?: string[];
  notPorts?: string[];
  /** HTTP-only */
  hosts?: string[];
  notHosts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

export interface EntryError {
  /** e.g. "pods[3] (ambient-demo/web)" or "ambient-demo/deny-all (AuthorizationPolicy)" */
  entry: string;
  message: string;
}

export interface MeshSnapshot {
  namespaces: Map<string, NamespaceInfo>;
  /** keyed by "namespace/name" */
  pods: Map<string, PodInfo>;
  /** keyed by "namespace/name" */
  services: Map<string, ServiceInfo>;
  /** keyed by "namespace/name" */
  policies: Map<string, AuthorizationPolicy>;
  errors: EntryError[];
}

export function emptySnapshot(): MeshSnapshot {
  return { namespaces: new Map(), pods: new Map(), services: new Map(), policies: new Map(), errors: [] };
}

export function podKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}

/** ztunnel semantics: pod label ambient/none wins, else the namespace label. */
export function enrolledByLabels(podLabels: Record<string, string>, nsLabels: Record<string, string> | undefined): boolean {
  const own = podLabels[DATAPLANE_MODE_LABEL];
  if (own === 'ambient') return true;
  if (own !== undefined && own !== '') return false; // "none" (or any other value) opts out
  return nsLabels?.[DATAPLANE_MODE_LABEL] === 'ambient';
}

export function isEnrolled(pod: PodInfo, namespaces: Map<string, NamespaceInfo>): boolean {
  return enrolledByLabels(pod.labels, namespaces.get(pod.namespace)?.labels);
}

/** spiffe://<trust domain>/ns/<namespace>/sa/<service account> of a pod. */
export function podSpiffeId(p: { namespace: string; serviceAccount: string }, trustDomain: string): string {
  return `spiffe://${trustDomain}/ns/${p.namespace}/sa/${p.serviceAccount}`;
}

/** Every address of a pod (status.podIPs: at most one of each family), the primary first. */
export function podIps(p: { ip: string; ips?: string[] }): string[] {
  return [...new Set([p.ip, ...(p.ips ?? [])])];
}

/** Indexes over a snapshot, rebuilt when it changes. */
export class MeshIndex {
  readonly podByIp = new Map<string, PodInfo>();
  /** "vip:port" -> service and port */
  readonly serviceByVip = new Map<string, { service: ServiceInfo; port: ServicePort }>();
  readonly podsByIdentity = new Map<string, PodInfo[]>();

  constructor(
    readonly snap: MeshSnapshot,
    trustDomain = 'cluster.local',
  ) {
    for (const p of snap.pods.values()) {
      for (const ip of podIps(p)) this.podByIp.set(ip, p);
      const id = podSpiffeId(p, trustDomain);
      const l = this.podsByIdentity.get(id);
      if (l) l.push(p);
      else this.podsByIdentity.set(id, [p]);
    }
    for (const s of snap.services.values()) {
      for (const vip of s.vips)
        for (const port of s.ports) if (port.protocol === 'TCP') this.serviceByVip.set(formatHostPort({ ip: vip, port: port.port }), { service: s, port });
    }
  }

  enrolled(p: PodInfo): boolean {
    return isEnrolled(p, this.snap.namespaces);
  }
}
