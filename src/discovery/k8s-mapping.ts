/**
 * Kubernetes API objects (raw JSON, as served) -> the mesh model. Pure and
 * strict about the fields the mesh uses; every other field is ignored. A
 * problem throws a FieldError naming the field ("status.podIP: ..."), which
 * the source turns into an EntryError "<Kind> <ns>/<name>: <field>: <problem>".
 */
import net from 'node:net';
import type {
  AuthorizationPolicy, AuthorizationPolicySpec, Endpoint, NamespaceInfo, PodInfo, ServiceInfo, ServicePort,
} from './model.js';

export class FieldError extends Error {
  constructor(readonly field: string, readonly problem: string) {
    super(`${field}: ${problem}`);
    this.name = 'FieldError';
  }
}

type Obj = Record<string, unknown>;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function show(v: unknown): string {
  const s = v === undefined ? 'undefined' : JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function obj(v: unknown, field: string, required: boolean): Obj | undefined {
  if (v === undefined || v === null) {
    if (required) throw new FieldError(field, 'missing');
    return undefined;
  }
  if (!isObj(v)) throw new FieldError(field, `must be an object, got ${show(v)}`);
  return v;
}

function arr(v: unknown, field: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new FieldError(field, `must be a list, got ${show(v)}`);
  return v;
}

function optStr(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new FieldError(field, `must be a string, got ${show(v)}`);
  return v;
}

function name(v: unknown, field: string, re: RegExp, max: number): string {
  if (typeof v !== 'string' || v === '') throw new FieldError(field, `must be a non-empty string, got ${show(v)}`);
  if (v.length > max || !re.test(v)) throw new FieldError(field, `${show(v)} is not a valid name`);
  return v;
}

function ip(v: unknown, field: string): string {
  if (typeof v !== 'string' || net.isIP(v) === 0) throw new FieldError(field, `${show(v)} is not an IP address`);
  return v;
}

function strMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw new FieldError(field, `must be a map of strings, got ${show(v)}`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw new FieldError(`${field}.${k}`, `must be a string, got ${show(val)}`);
    out[k] = val;
  }
  return out;
}

function portNumber(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new FieldError(field, `must be a port number 1-65535, got ${show(v)}`);
  return v;
}

function protocol(v: unknown, field: string): 'TCP' | 'UDP' | 'SCTP' {
  if (v === undefined || v === null) return 'TCP';
  if (v === 'TCP' || v === 'UDP' || v === 'SCTP') return v;
  throw new FieldError(field, `must be TCP, UDP or SCTP, got ${show(v)}`);
}

export interface Meta {
  name: string;
  namespace: string;
  uid?: string;
  labels: Record<string, string>;
}

export function meta(o: unknown, namespaced: boolean): Meta {
  if (!isObj(o)) throw new FieldError('(object)', `must be an object, got ${show(o)}`);
  const md = obj(o.metadata, 'metadata', true)!;
  const n = name(md.name, 'metadata.name', namespaced ? DNS_SUBDOMAIN : DNS_LABEL, namespaced ? 253 : 63);
  const ns = namespaced ? name(md.namespace, 'metadata.namespace', DNS_LABEL, 63) : '';
  const uid = optStr(md.uid, 'metadata.uid');
  return { name: n, namespace: ns, ...(uid ? { uid } : {}), labels: strMap(md.labels, 'metadata.labels') };
}

/** "Pod ns/name", "Namespace name", or the best that can be said of a broken object. */
export function describeObject(kind: string, o: unknown, fallback?: string): string {
  const md = isObj(o) && isObj(o.metadata) ? o.metadata : undefined;
  const n = md && typeof md.name === 'string' ? md.name : undefined;
  const ns = md && typeof md.namespace === 'string' && md.namespace !== '' ? md.namespace : undefined;
  if (n === undefined) return `${kind} ${fallback ?? '<unnamed>'}`;
  return `${kind} ${ns ? `${ns}/` : ''}${n}`;
}

// ---------------------------------------------------------------- Namespace

export function mapNamespace(o: unknown): NamespaceInfo {
  const m = meta(o, false);
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

export type PodMapping = { pod: PodInfo } | { skip: PodSkip };

/**
 * Maps a v1 Pod. netns/cgroup are left null (filled by the source for local
 * pods); node is spec.nodeName.
 */
export function mapPod(o: unknown): PodMapping {
  const m = meta(o, true);
  const p = o as Obj;
  const spec = obj(p.spec, 'spec', true)!;
  if (spec.hostNetwork !== undefined && spec.hostNetwork !== null && typeof spec.hostNetwork !== 'boolean') {
    throw new FieldError('spec.hostNetwork', `must be a boolean, got ${show(spec.hostNetwork)}`);
  }
  if (spec.hostNetwork === true) return { skip: 'hostNetwork' };
  const status = obj(p.status, 'status', false) ?? {};
  const phase = optStr(status.phase, 'status.phase');
  if (phase === 'Succeeded' || phase === 'Failed') return { skip: 'terminated' };

  const ips: string[] = [];
  const podIP = status.podIP === undefined || status.podIP === null || status.podIP === '' ? undefined : ip(status.podIP, 'status.podIP');
  if (podIP) ips.push(podIP);
  arr(status.podIPs, 'status.podIPs').forEach((e, i) => {
    const eo = obj(e, `status.podIPs[${i}]`, true)!;
    const a = ip(eo.ip, `status.podIPs[${i}].ip`);
    if (!ips.includes(a)) ips.push(a);
  });
  if (ips.length === 0) return { skip: 'noIP' };

  const sa = spec.serviceAccountName ?? spec.serviceAccount;
  const serviceAccount = sa === undefined || sa === null || sa === ''
    ? 'default'
    : name(sa, spec.serviceAccountName !== undefined ? 'spec.serviceAccountName' : 'spec.serviceAccount', DNS_SUBDOMAIN, 253);
  const node = name(spec.nodeName, 'spec.nodeName', DNS_SUBDOMAIN, 253);

  let ready = false;
  arr(status.conditions, 'status.conditions').forEach((c, i) => {
    const co = obj(c, `status.conditions[${i}]`, true)!;
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
  return { pod };
}

// ---------------------------------------------------------------- Service

/** A Service without endpoints (they come from EndpointSlices). */
export function mapService(o: unknown, clusterDomain = 'cluster.local'): ServiceInfo {
  const m = meta(o, true);
  const spec = obj((o as Obj).spec, 'spec', true)!;
  const type = optStr(spec.type, 'spec.type') ?? 'ClusterIP';
  let raw: unknown[];
  let field: string;
  if (spec.clusterIPs !== undefined && spec.clusterIPs !== null) {
    raw = arr(spec.clusterIPs, 'spec.clusterIPs');
    field = 'spec.clusterIPs';
  } else {
    raw = spec.clusterIP === undefined || spec.clusterIP === null ? [] : [spec.clusterIP];
    field = 'spec.clusterIP';
  }
  const vips: string[] = [];
  raw.forEach((v, i) => {
    if (v === 'None' || v === '') return; // headless / not allocated
    const a = ip(v, field === 'spec.clusterIPs' ? `${field}[${i}]` : field);
    if (!vips.includes(a)) vips.push(a);
  });
  if (type === 'ExternalName') vips.length = 0;

  const ports: ServicePort[] = arr(spec.ports, 'spec.ports').map((p, i) => {
    const f = `spec.ports[${i}]`;
    const po = obj(p, f, true)!;
    const port = portNumber(po.port, `${f}.port`);
    const n = optStr(po.name, `${f}.name`);
    let targetPort: number | string = port;
    const tp = po.targetPort;
    if (typeof tp === 'number') targetPort = portNumber(tp, `${f}.targetPort`);
    else if (typeof tp === 'string' && /^[0-9]+$/.test(tp)) targetPort = portNumber(Number(tp), `${f}.targetPort`);
    else if (typeof tp === 'string' && tp !== '') targetPort = tp;
    else if (tp !== undefined && tp !== null && tp !== '' && tp !== 0) throw new FieldError(`${f}.targetPort`, `must be a port number or a port name, got ${show(tp)}`);
    return { ...(n ? { name: n } : {}), port, targetPort, protocol: protocol(po.protocol, `${f}.protocol`) };
  });
  const selector = spec.selector === undefined || spec.selector === null ? undefined : strMap(spec.selector, 'spec.selector');
  return {
    name: m.name,
    namespace: m.namespace,
    hostname: `${m.name}.${m.namespace}.svc.${clusterDomain}`,
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
  const m = meta(o, true);
  const s = o as Obj;
  const service = m.labels[SERVICE_NAME_LABEL] || null;
  const addressType = optStr(s.addressType, 'addressType');
  if (addressType === 'FQDN') return { name: m.name, namespace: m.namespace, service, endpoints: [] };
  if (addressType !== 'IPv4' && addressType !== 'IPv6') throw new FieldError('addressType', `must be IPv4, IPv6 or FQDN, got ${show(addressType)}`);

  const ports: Array<{ name?: string; port: number }> = [];
  arr(s.ports, 'ports').forEach((p, i) => {
    const po = obj(p, `ports[${i}]`, true)!;
    const n = optStr(po.name, `ports[${i}].name`);
    protocol(po.protocol, `ports[${i}].protocol`);
    if (po.port === undefined || po.port === null) return; // "all ports" slice entries: nothing to resolve against
    ports.push({ ...(n ? { name: n } : {}), port: portNumber(po.port, `ports[${i}].port`) });
  });

  const endpoints: Endpoint[] = [];
  arr(s.endpoints, 'endpoints').forEach((e, i) => {
    const f = `endpoints[${i}]`;
    const eo = obj(e, f, true)!;
    const addrs = arr(eo.addresses, `${f}.addresses`);
    if (addrs.length === 0) throw new FieldError(`${f}.addresses`, 'must list at least one address');
    const cond = obj(eo.conditions, `${f}.conditions`, false) ?? {};
    const r = cond.ready;
    if (r !== undefined && r !== null && typeof r !== 'boolean') throw new FieldError(`${f}.conditions.ready`, `must be a boolean, got ${show(r)}`);
    const ready = r !== false; // nil means ready (discovery.k8s.io/v1 EndpointConditions)
    const ref = obj(eo.targetRef, `${f}.targetRef`, false);
    let pod: string | undefined;
    if (ref && ref.kind === 'Pod') {
      const rn = name(ref.name, `${f}.targetRef.name`, DNS_SUBDOMAIN, 253);
      const rns = ref.namespace === undefined || ref.namespace === null || ref.namespace === '' ? m.namespace : name(ref.namespace, `${f}.targetRef.namespace`, DNS_LABEL, 63);
      pod = `${rns}/${rn}`;
    }
    const nodeName = optStr(eo.nodeName, `${f}.nodeName`);
    addrs.forEach((a, j) => {
      const addr = ip(a, `${f}.addresses[${j}]`);
      if ((net.isIPv4(addr) ? 'IPv4' : 'IPv6') !== addressType) throw new FieldError(`${f}.addresses[${j}]`, `${addr} is not an ${addressType} address`);
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
 * Maps a security.istio.io/v1 AuthorizationPolicy. A missing spec is the
 * empty spec (ALLOW with no rules: allows nothing). The deprecated singular
 * spec.targetRef is folded into targetRefs.
 */
export function mapAuthorizationPolicy(o: unknown): AuthorizationPolicy {
  const m = meta(o, true);
  // The spec goes to the policy engine as written: it validates it with field
  // paths and applies Istio's fail-safe to an invalid policy (an invalid DENY
  // denies, an invalid ALLOW allows nothing). Dropping a malformed policy here
  // would open access instead.
  const raw = (o as Obj).spec;
  const spec = (raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? { ...(raw as Obj) } : {}) as AuthorizationPolicySpec & { targetRef?: unknown };
  if (spec.targetRef !== undefined && spec.targetRef !== null) {
    spec.targetRefs = [...(Array.isArray(spec.targetRefs) ? spec.targetRefs : []), spec.targetRef];
    delete spec.targetRef;
  }
  return { name: m.name, namespace: m.namespace, spec };
}
