/**
 * The workload file's compact form ({ namespaces: [...], pods: [...] }, what
 * the sandbox writes; docs/workloads.md) as Kubernetes objects, so that it
 * goes through the one mapper (k8s-mapping.ts) like everything else.
 *
 * A compact pod is a running, scheduled pod: phase Running, its IP in
 * status.podIP(s), the condition Ready=True unless it says `ready: false`;
 * its netns/cgroup become the ambientd.io/netns and ambientd.io/cgroup
 * annotations the file source reads for every pod. The conversion checks
 * only the entry's shape (a mapping, known fields, `ready`); the values are
 * the mapper's business, and `compactError` turns the field paths of its
 * errors back into the compact names ("ip: ...", "name: ..."). A compact pod
 * without an IP maps to "no IP yet"; the file source reports it as
 * "ip: missing".
 */
import { FieldError, isAbsent, knownKeys, obj, optBool, type Obj } from '../util/fields.js';

export const NETNS_ANNOTATION = 'ambientd.io/netns';
export const CGROUP_ANNOTATION = 'ambientd.io/cgroup';

export const COMPACT_NAMESPACE_FIELDS = ['name', 'labels'] as const;
export const COMPACT_POD_FIELDS = ['name', 'namespace', 'serviceAccount', 'node', 'ip', 'ips', 'netns', 'cgroup', 'labels', 'ready'] as const;

const set = (o: Obj, k: string, v: unknown): void => {
  if (!isAbsent(v)) o[k] = v;
};

/** A compact namespace entry as a v1 Namespace. */
export function compactNamespace(raw: unknown): Obj {
  const o = obj(raw, '(entry)', true);
  knownKeys(o, COMPACT_NAMESPACE_FIELDS, '');
  const metadata: Obj = {};
  set(metadata, 'name', o.name);
  set(metadata, 'labels', o.labels);
  return { apiVersion: 'v1', kind: 'Namespace', metadata };
}

/** A compact pod entry as a v1 Pod (running, Ready=True unless `ready: false`). */
export function compactPod(raw: unknown): Obj {
  const o = obj(raw, '(entry)', true);
  knownKeys(o, COMPACT_POD_FIELDS, '');
  const ready = optBool(o.ready, 'ready') ?? true;
  const metadata: Obj = {};
  set(metadata, 'name', o.name);
  set(metadata, 'namespace', o.namespace);
  set(metadata, 'labels', o.labels);
  const annotations: Obj = {};
  set(annotations, NETNS_ANNOTATION, o.netns);
  set(annotations, CGROUP_ANNOTATION, o.cgroup);
  if (Object.keys(annotations).length > 0) metadata.annotations = annotations;
  const spec: Obj = {};
  set(spec, 'serviceAccountName', o.serviceAccount);
  set(spec, 'nodeName', o.node);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata,
    spec,
    status: {
      phase: 'Running',
      // `ips`: every address of a dual-stack pod (status.podIPs, one of each family), `ip` first
      ...(isAbsent(o.ip)
        ? {}
        : { podIP: o.ip, podIPs: Array.isArray(o.ips) ? o.ips.map((ip: unknown) => ({ ip })) : isAbsent(o.ips) ? [{ ip: o.ip }] : o.ips }),
      conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
    },
  };
}

/** Object field paths -> compact field names (longest first). */
const RENAMES: ReadonlyArray<readonly [string, string]> = [
  [`metadata.annotations.${NETNS_ANNOTATION}`, 'netns'],
  [`metadata.annotations.${CGROUP_ANNOTATION}`, 'cgroup'],
  ['metadata.annotations', 'netns/cgroup'],
  ['metadata.name', 'name'],
  ['metadata.namespace', 'namespace'],
  ['metadata.labels', 'labels'],
  ['spec.serviceAccountName', 'serviceAccount'],
  ['spec.nodeName', 'node'],
  ['status.podIPs[0].ip', 'ip'],
  ['status.podIPs', 'ips'],
  ['status.podIP', 'ip'],
  ['status.conditions', 'ready'],
];

/** The compact name of an object field path ("status.podIP" -> "ip", "metadata.labels.app" -> "labels.app"). */
export function renameField(field: string): string {
  for (const [from, to] of RENAMES) {
    if (field === from) return to;
    if (field.startsWith(`${from}.`) || field.startsWith(`${from}[`)) return `${to}${field.slice(from.length)}`;
  }
  return field;
}

/** A mapper error about a compact entry, naming the compact field. */
export function compactError(e: unknown): unknown {
  return e instanceof FieldError ? new FieldError(renameField(e.field), e.problem, e.code) : e;
}
