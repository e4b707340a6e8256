/**
 * The one mapper from Kubernetes objects (raw JSON/YAML, as the API server
 * serves them or as `kubectl get -o yaml` prints them) to the mesh model. Both
 * workload sources use it: the Kubernetes source on what it lists and watches,
 * the file source on the objects of the workload file (its compact form is
 * turned into objects first, see compact.ts). Pure and strict about the
 * fields the mesh uses; every other field is ignored. A problem throws a
 * FieldError naming the field ("status.podIP: ..."), which the source turns
 * into an EntryError "<Kind> <ns>/<name>: <field>: <problem>".
 *
 * The rules are Kubernetes' and Istio's:
 *  - apiVersion is checked for every kind (API_VERSIONS); the Kubernetes
 *    source fills in the apiVersion/kind the API server leaves out of list
 *    items (withTypeMeta);
 *  - namespace and Service names are DNS-1123 labels, other object names
 *    DNS-1123 subdomains;
 *  - a pod is ready only with the condition Ready=True; hostNetwork pods,
 *    pods in phase Succeeded/Failed and pods without an IP are not workloads
 *    (a skip, not an error);
 *  - a Service's targetPort is a number, or a port name (an IANA service
 *    name, so never all digits: the API server rejects `targetPort: "8080"`);
 *  - an AuthorizationPolicy's deprecated spec.targetRef is folded into
 *    spec.targetRefs.
 * Where a pod lives (netns, cgroup) is not the mapper's business: the file
 * source reads it from annotations, the Kubernetes source from /proc.
 */
import { FAMILY_NAME, ipFamily } from '../util/address.js';
import type { AuthorizationPolicy, AuthorizationPolicySpec, Endpoint, NamespaceInfo, PodInfo, ServiceInfo, ServicePort } from './model.js';
import { dnsName, FieldError, ip, isAbsent, isObj, list, obj, oneOf, optBool, optStr, port, portName, show, strMap, type Obj } from '../util/fields.js';

export { FieldError } from '../util/fields.js';

/** The kinds the mesh reads, and the apiVersions each is accepted in. */
export const API_VERSIONS = {
  Namespace: ['v1'],
  Pod: ['v1'],
  Service: ['v1'],
  EndpointSlice: ['discovery.k8s.io/v1'],
  AuthorizationPolicy: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
} as const satisfies Record<string, readonly string[]>;

export type MeshKind = keyof typeof API_VERSIONS;

export function isMeshKind(k: unknown): k is MeshKind {
  return typeof k === 'string' && Object.prototype.hasOwnProperty.call(API_VERSIONS, k);
}

/** What differs between the sources' inputs (never the rules). */
export interface MapOptions {
  /** hostname suffix of Services (default cluster.local) */
  clusterDomain?: string;
  /**
   * A pod with an IP but without spec.nodeName: the file source reads it as
   * "on this node" (node null: single-machine files need not name the node);
   * for the Kubernetes source it is malformed (a pod gets its IP only once
   * scheduled). Default false.
   */
  nodeOptional?: boolean;
}

/**
 * The object with apiVersion and kind filled in when absent. The API server
 * leaves them out of the items of a list of built-in kinds; the collection
 * that was listed says what they are (as client-go's decoder does).
 */
export function withTypeMeta(o: unknown, kind: MeshKind, apiVersion: string): unknown {
  if (!isObj(o) || (!isAbsent(o.apiVersion) && !isAbsent(o.kind))) return o;
  return { ...o, apiVersion: isAbsent(o.apiVersion) ? apiVersion : o.apiVersion, kind: isAbsent(o.kind) ? kind : o.kind };
}

function typeMeta(o: Obj, kind: MeshKind): void {
  if (!isAbsent(o.kind) && o.kind !== kind) throw new FieldError('kind', `must be ${kind}, got ${show(o.kind)}`);
  oneOf(o.apiVersion, 'apiVersion', API_VERSIONS[kind]);
}

export interface Meta {
  name: string;
  namespace: string;
  uid?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** Type and object metadata: names by the DNS-1123 rules (a namespace is a label). */
export function meta(o: unknown, kind: MeshKind): Meta {
  if (!isObj(o)) throw new FieldError('(object)', `must be an object, got ${show(o)}`);
  typeMeta(o, kind);
  const md = obj(o.metadata, 'metadata', true);
  const namespaced = kind !== 'Namespace';
  const n = dnsName(md.name, 'metadata.name', namespaced && kind !== 'Service' ? 'subdomain' : 'label');
  const ns = namespaced ? dnsName(md.namespace, 'metadata.namespace', 'label') : '';
  const uid = optStr(md.uid, 'metadata.uid');
  return {
    name: n,
    namespace: ns,
    ...(uid ? { uid } : {}),
    labels: strMap(md.labels, 'metadata.labels'),
    annotations: strMap(md.annotations, 'metadata.annotations'),
  };
}

/** "Pod ns/name", "Namespace name", or the best that can be said of a broken object. */
export function describeObject(kind: string, o: unknown, fallback?: string): string {
  const md = isObj(o) && isObj(o.metadata) ? o.metadata : undefined;
  const n = md && typeof md.name === 'string' ? md.name : undefined;
  const ns = md && typeof md.namespace === 'string' && md.namespace !== '' ? md.namespace : undefined;
  if (n === undefined) return `${kind} ${fallback ?? '<unnamed>'}`;
  return `${kind} ${ns ? `${ns}/` : ''}${n}`;
}

const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;

// ---------------------------------------------------------------- Namespace

export function mapNamespace(o: unknown): NamespaceInfo {
  const m = meta(o, 'Namespace');
  return { name: m.name, labels: m.labels };
}

// ---------------------------------------------------------------- Pod

/** Why a pod is not a workload of the snapshot (not an error). */
export type PodSkip =
  /** spec.hostNetwork: shares the node's IP and network namespace; never captured, never an identity for an IP */
  | 'hostNetwork'
  /** status.phase Succeeded/Failed: the sandbox is gone and its IP may be reused */
  | 'terminated'
  /** no status.podIP yet (Pending, not scheduled, sandbox not created) */
  | 'noIP';

/** A pod (netns/cgroup null: the source says where it lives) and its annotations. */
export type PodMapping = { pod: PodInfo; annotations: Record<string, string> } | { skip: PodSkip };

/** Maps a v1 Pod; node is spec.nodeName (null only with opts.nodeOptional). */
export function mapPod(o: unknown, opts: MapOptions = {}): PodMapping {
  const m = meta(o, 'Pod');
  const p = o as Obj;
  const spec = obj(p.spec, 'spec', true);
  if (optBool(spec.hostNetwork, 'spec.hostNetwork') === true) return { skip: 'hostNetwork' };
  const status = obj(p.status, 'status') ?? {};
  const phase = optStr(status.phase, 'status.phase');
  if (phase === 'Succeeded' || phase === 'Failed') return { skip: 'terminated' };

  const ips: string[] = [];
  const podIP = isAbsent(status.podIP) || status.podIP === '' ? undefined : ip(status.podIP, 'status.podIP');
  if (podIP) ips.push(podIP);
  list(status.podIPs, 'status.podIPs').forEach((e, i) => {
    const f = `status.podIPs[${i}].ip`;
    const a = ip(obj(e, `status.podIPs[${i}]`, true).ip, f);
    if (ips.includes(a)) return; // podIPs[0] repeats podIP
    // Kubernetes allows one address of each family (dual-stack): two of one family is malformed
    const same = ips.find((x) => ipFamily(x) === ipFamily(a));
    if (same !== undefined)
      throw new FieldError(f, `${a} is a second ${FAMILY_NAME[ipFamily(a)]} address (already ${same}): a pod has at most one address of each family`);
    ips.push(a);
  });
  if (ips.length === 0) return { skip: 'noIP' };

  const saField = !isAbsent(spec.serviceAccountName) ? 'spec.serviceAccountName' : 'spec.serviceAccount';
  const sa = spec.serviceAccountName ?? spec.serviceAccount;
  const serviceAccount = isAbsent(sa) || sa === '' ? 'default' : dnsName(sa, saField, 'subdomain');
  const node = opts.nodeOptional && isAbsent(spec.nodeName) ? null : dnsName(spec.nodeName, 'spec.nodeName', 'subdomain');

  // Ready only with the condition Ready=True (no condition: not ready, as the
  // endpoints controller and Istio read it)
  let ready = false;
  list(status.conditions, 'status.conditions').forEach((c, i) => {
    const co = obj(c, `status.conditions[${i}]`, true);
    const type = optStr(co.type, `status.conditions[${i}].type`);
    const st = optStr(co.status, `status.conditions[${i}].status`);
    if (type === 'Ready') ready = st === 'True';
  });

  const pod: PodInfo = {
    ...(m.uid ? { uid: m.uid } : {}),
    name: m.name,
    namespace: m.namespace,
    serviceAccount,
    node,
    ip: ips[0]!,
    ips,
    netns: null,
    cgroup: null,
    labels: m.labels,
    ready,
  };
  return { pod, annotations: m.annotations };
}

// ---------------------------------------------------------------- Service

/**
 * A Service's targetPort (IntOrString): absent or 0 = the port; a number
 * 1-65535; or the name of a container port, an IANA service name. A string of
 * digits is neither (Kubernetes' validation rejects it: a port name has at
 * least one letter).
 */
function targetPort(v: unknown, field: string, def: number): number | string {
  if (isAbsent(v) || v === 0 || v === '') return def;
  if (typeof v === 'number') return port(v, field);
  if (typeof v === 'string' && /^[0-9]+$/.test(v)) {
    throw new FieldError(field, `${show(v)} is a string of digits: write the port as a number (${v}), or a port name (which has at least one letter)`);
  }
  if (typeof v === 'string') return portName(v, field);
  throw new FieldError(field, `must be a port number or a port name, got ${show(v)}`);
}

/** A Service without endpoints (the Kubernetes source adds them from EndpointSlices, the file source from the selector). */
export function mapService(o: unknown, opts: MapOptions = {}): ServiceInfo {
  const m = meta(o, 'Service');
  const spec = obj((o as Obj).spec, 'spec', true);
  const type = optStr(spec.type, 'spec.type') ?? 'ClusterIP';
  let raw: unknown[];
  let field: string;
  if (!isAbsent(spec.clusterIPs)) {
    raw = list(spec.clusterIPs, 'spec.clusterIPs');
    field = 'spec.clusterIPs';
  } else {
    raw = isAbsent(spec.clusterIP) ? [] : [spec.clusterIP];
    field = 'spec.clusterIP';
  }
  // spec.ipFamilies: the families of spec.clusterIPs, in order (dual-stack: one VIP of each)
  const families = list(spec.ipFamilies, 'spec.ipFamilies').map((f, i) => oneOf(f, `spec.ipFamilies[${i}]`, ['IPv4', 'IPv6'] as const));
  if (families.length > 2 || (families.length === 2 && families[0] === families[1]))
    throw new FieldError('spec.ipFamilies', `${show(families)}: at most one of each family (IPv4, IPv6)`);
  const vips: string[] = [];
  let headless = false;
  raw.forEach((v, i) => {
    if (v === 'None') {
      headless = true;
      return;
    }
    if (v === '') return; // not allocated
    const f = field === 'spec.clusterIPs' ? `${field}[${i}]` : field;
    const a = ip(v, f);
    if (vips.includes(a)) return;
    const fam = FAMILY_NAME[ipFamily(a)];
    if (vips.some((x) => ipFamily(x) === ipFamily(a))) throw new FieldError(f, `${a} is a second ${fam} cluster IP: a Service has at most one of each family`);
    if (families.length > i && families[i] !== fam) throw new FieldError(f, `${a} is ${fam}, but spec.ipFamilies[${i}] is ${families[i]}`);
    vips.push(a);
  });
  if (type === 'ExternalName') vips.length = 0;

  const rawPorts = list(spec.ports, 'spec.ports');
  if (rawPorts.length === 0 && !headless && type !== 'ExternalName')
    throw new FieldError('spec.ports', 'must list at least one port (only headless and ExternalName Services may have none)');
  const ports: ServicePort[] = rawPorts.map((p, i) => {
    const f = `spec.ports[${i}]`;
    const po = obj(p, f, true);
    const pn = port(po.port, `${f}.port`);
    const n = optStr(po.name, `${f}.name`);
    return {
      ...(n ? { name: n } : {}),
      port: pn,
      targetPort: targetPort(po.targetPort, `${f}.targetPort`, pn),
      protocol: oneOf(po.protocol, `${f}.protocol`, PROTOCOLS, 'TCP'),
    };
  });
  const selector = isAbsent(spec.selector) ? undefined : strMap(spec.selector, 'spec.selector');
  return {
    name: m.name,
    namespace: m.namespace,
    hostname: `${m.name}.${m.namespace}.svc.${opts.clusterDomain ?? 'cluster.local'}`,
    vips,
    ports,
    ...(selector && Object.keys(selector).length > 0 ? { selector } : {}),
    endpoints: [],
  };
}

// ---------------------------------------------------------------- EndpointSlice

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface SliceInfo {
  name: string;
  namespace: string;
  /** the owning Service (label kubernetes.io/service-name); null = not a Service's slice */
  service: string | null;
  endpoints: Endpoint[];
}

export function mapEndpointSlice(o: unknown): SliceInfo {
  const m = meta(o, 'EndpointSlice');
  const s = o as Obj;
  const service = m.labels[SERVICE_NAME_LABEL] || null;
  const addressType = oneOf(s.addressType, 'addressType', ['IPv4', 'IPv6', 'FQDN'] as const);
  if (addressType === 'FQDN') return { name: m.name, namespace: m.namespace, service, endpoints: [] };

  const ports: Array<{ name?: string; port: number }> = [];
  list(s.ports, 'ports').forEach((p, i) => {
    const po = obj(p, `ports[${i}]`, true);
    const n = optStr(po.name, `ports[${i}].name`);
    oneOf(po.protocol, `ports[${i}].protocol`, PROTOCOLS, 'TCP');
    if (isAbsent(po.port)) return; // "all ports" slice entries: nothing to resolve against
    ports.push({ ...(n ? { name: n } : {}), port: port(po.port, `ports[${i}].port`) });
  });

  const endpoints: Endpoint[] = [];
  list(s.endpoints, 'endpoints').forEach((e, i) => {
    const f = `endpoints[${i}]`;
    const eo = obj(e, f, true);
    const addrs = list(eo.addresses, `${f}.addresses`);
    if (addrs.length === 0) throw new FieldError(`${f}.addresses`, 'must list at least one address');
    const cond = obj(eo.conditions, `${f}.conditions`) ?? {};
    const ready = optBool(cond.ready, `${f}.conditions.ready`) !== false; // nil means ready (discovery.k8s.io/v1 EndpointConditions)
    const ref = obj(eo.targetRef, `${f}.targetRef`);
    let pod: string | undefined;
    if (ref && ref.kind === 'Pod') {
      const rn = dnsName(ref.name, `${f}.targetRef.name`, 'subdomain');
      const rns = isAbsent(ref.namespace) || ref.namespace === '' ? m.namespace : dnsName(ref.namespace, `${f}.targetRef.namespace`, 'label');
      pod = `${rns}/${rn}`;
    }
    const nodeName = optStr(eo.nodeName, `${f}.nodeName`);
    addrs.forEach((a, j) => {
      const addr = ip(a, `${f}.addresses[${j}]`);
      if (FAMILY_NAME[ipFamily(addr)] !== addressType) throw new FieldError(`${f}.addresses[${j}]`, `${addr} is not an ${addressType} address`);
      endpoints.push({
        ip: addr,
        ready,
        ...(ports.length > 0 ? { ports: ports.map((p) => ({ ...p })) } : {}),
        ...(pod ? { pod } : {}),
        ...(nodeName ? { node: nodeName } : {}),
      });
    });
  });
  return { name: m.name, namespace: m.namespace, service, endpoints };
}

/**
 * Endpoints of one Service from its slices (in slice-name order). An address
 * in several slices (slices being rebalanced) appears once, ready if any copy
 * is ready.
 */
export function mergeEndpoints(slices: SliceInfo[]): Endpoint[] {
  const byIp = new Map<string, Endpoint>();
  for (const s of [...slices].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    for (const e of s.endpoints) {
      const prev = byIp.get(e.ip);
      if (!prev) byIp.set(e.ip, { ...e });
      else if (!prev.ready && e.ready) byIp.set(e.ip, { ...e });
    }
  }
  return [...byIp.values()];
}

// ---------------------------------------------------------------- AuthorizationPolicy

/**
 * Maps a security.istio.io/v1 (or v1beta1) AuthorizationPolicy. A missing
 * spec is the empty spec (ALLOW with no rules: allows nothing). The
 * deprecated singular spec.targetRef is folded into targetRefs.
 */
export function mapAuthorizationPolicy(o: unknown): AuthorizationPolicy {
  const m = meta(o, 'AuthorizationPolicy');
  // The spec goes to the policy engine as written: it validates it with field
  // paths and applies Istio's fail-safe to an invalid policy (an invalid DENY
  // denies, an invalid ALLOW allows nothing). Dropping a malformed policy here
  // would open access instead.
  const raw = (o as Obj).spec;
  const spec = (isObj(raw) ? { ...raw } : {}) as AuthorizationPolicySpec & { targetRef?: unknown };
  if (!isAbsent(spec.targetRef)) {
    spec.targetRefs = [...(Array.isArray(spec.targetRefs) ? spec.targetRefs : []), spec.targetRef];
    delete spec.targetRef;
  }
  return { name: m.name, namespace: m.namespace, spec };
}

// ---------------------------------------------------------------- any kind

/** What one object of a mesh kind maps to. */
export type Mapped =
  | { kind: 'Namespace'; value: NamespaceInfo }
  | { kind: 'Pod'; value: PodMapping }
  | { kind: 'Service'; value: ServiceInfo }
  | { kind: 'EndpointSlice'; value: SliceInfo }
  | { kind: 'AuthorizationPolicy'; value: AuthorizationPolicy };

/** Maps an object of any mesh kind (by its kind field). */
export function mapObject(kind: MeshKind, o: unknown, opts: MapOptions = {}): Mapped {
  switch (kind) {
    case 'Namespace':
      return { kind, value: mapNamespace(o) };
    case 'Pod':
      return { kind, value: mapPod(o, opts) };
    case 'Service':
      return { kind, value: mapService(o, opts) };
    case 'EndpointSlice':
      return { kind, value: mapEndpointSlice(o) };
    case 'AuthorizationPolicy':
      return { kind, value: mapAuthorizationPolicy(o) };
  }
}
