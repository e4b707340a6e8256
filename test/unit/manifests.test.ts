/**
 * deploy/*.yaml: every document is a Kubernetes object that validates against
 * the Kubernetes OpenAPI schema (kubernetes-models), and the agent's DaemonSet
 * keeps the settings the datapath depends on (host namespaces, bpffs and
 * cgroup mounts, probes, scrape annotations, no privileged mode, the RBAC
 * ServiceAccount). deploy/grafana/ (JSON) is covered by dashboard.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { parseConfig } from '../../src/config/config.js';
import { CA_WATCHED_RESOURCES, parseCaArgs, type CaCliOptions } from '../../src/ca/cli.js';
import { ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY } from '../../src/ca/root-publisher.js';
import { PLUGIN_SECRET, ROOT_SECRET } from '../../src/ca/secret-store.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');

// parsed YAML/JSON of any shape, read field by field by the assertions
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;
interface Doc {
  file: string;
  obj: Obj;
}

function loadAll(): Doc[] {
  const out: Doc[] = [];
  for (const name of fs.readdirSync(DEPLOY).sort()) {
    if (!/\.ya?ml$/.test(name)) continue; // grafana/ is a directory of JSON
    if (name === 'kustomization.yaml') continue; // the kustomize base: rendered and compared below
    const file = path.join('deploy', name);
    // YAML 1.1, as Kubernetes (go-yaml) reads manifests: `defaultMode: 0400` is octal (256), not 400
    for (const d of parseAllDocuments(fs.readFileSync(path.join(DEPLOY, name), 'utf8'), { version: '1.1' })) {
      assert.equal(d.errors.length, 0, `${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      const obj = d.toJS() as Obj | null;
      if (obj === null) continue; // empty document
      out.push({ file, obj });
    }
  }
  return out;
}

/** kubernetes-models module for apiVersion/kind, e.g. apps/v1 DaemonSet -> kubernetes-models/apps/v1/DaemonSet */
async function validate(obj: Obj): Promise<void> {
  const { apiVersion, kind } = obj;
  assert.equal(typeof apiVersion, 'string', 'apiVersion');
  assert.match(kind, /^[A-Z][A-Za-z0-9]*$/, 'kind');
  const mod = (await import(`kubernetes-models/${apiVersion}/${kind}`)) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const Model = mod[kind];
  assert.equal(typeof Model, 'function', `no model for ${apiVersion} ${kind}`);
  new Model(obj).validate(); // throws on a schema violation
}

const docs = loadAll();
const find = (kind: string, name?: string) => docs.filter((d) => d.obj.kind === kind && (name === undefined || d.obj.metadata?.name === name));
const daemonSet = (): Obj => {
  const ds = find('DaemonSet', 'ambientd');
  assert.equal(ds.length, 1, 'one DaemonSet ambientd');
  return ds[0]!.obj;
};

test('deploy/ holds the expected manifests', () => {
  const files = new Set(docs.map((d) => d.file));
  for (const f of ['deploy/ambientd.yaml', 'deploy/rbac.yaml', 'deploy/ca.yaml', 'deploy/example-namespace.yaml', 'deploy/uninstall.yaml'])
    assert.ok(files.has(f), f);
  assert.deepEqual(docs.map((d) => `${d.obj.kind}/${d.obj.metadata?.name}`).sort(), [
    'ClusterRole/ambientd',
    'ClusterRole/ambientd-ca',
    'ClusterRoleBinding/ambientd',
    'ClusterRoleBinding/ambientd-ca',
    'ConfigMap/ambientd-config',
    'DaemonSet/ambientd',
    'DaemonSet/ambientd-cleanup',
    'Deployment/ambientd-ca',
    'Namespace/ambientd-system',
    'Namespace/demo',
    'PodDisruptionBudget/ambientd-ca',
    'Role/ambientd-ca',
    'RoleBinding/ambientd-ca',
    'Service/ambientd-ca',
    'ServiceAccount/ambientd',
    'ServiceAccount/ambientd-ca',
  ]);
  // the CA's objects are in their own file
  for (const d of docs.filter((x) => x.obj.metadata?.name === 'ambientd-ca')) assert.equal(d.file, 'deploy/ca.yaml', `${d.obj.kind}`);
});

test('every object validates against the Kubernetes schema', async () => {
  for (const { file, obj } of docs) {
    await assert.doesNotReject(validate(obj), `${file}: ${obj.kind} ${obj.metadata?.name}`);
  }
});

test('schema validation rejects broken objects', async () => {
  const ds = structuredClone(daemonSet());
  ds.spec.template.spec.containers = 'x';
  await assert.rejects(validate(ds));
  const noSelector = structuredClone(daemonSet());
  delete noSelector.spec.selector;
  await assert.rejects(validate(noSelector));
  const badPort = structuredClone(daemonSet());
  badPort.spec.template.spec.containers[0].ports = [{ containerPort: 'metrics' }];
  await assert.rejects(validate(badPort));
});

test('namespaced objects live in ambientd-system, which is created', () => {
  assert.equal(find('Namespace', 'ambientd-system').length, 1);
  for (const { file, obj } of docs) {
    if (['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(obj.kind)) continue;
    assert.equal(obj.metadata?.namespace, 'ambientd-system', `${file}: ${obj.kind} ${obj.metadata?.name}`);
  }
});

test('example namespace is enrolled in ambient mode', () => {
  const ns = docs.filter((d) => d.file === 'deploy/example-namespace.yaml');
  assert.equal(ns.length, 1);
  assert.equal(ns[0]!.obj.kind, 'Namespace');
  assert.equal(ns[0]!.obj.metadata.labels['istio.io/dataplane-mode'], 'ambient');
});

test('DaemonSet: host namespaces, no privileged mode, capabilities', () => {
  const ds = daemonSet();
  const pod = ds.spec.template.spec;
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.hostPID, true);
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.equal(pod.priorityClassName, 'system-node-critical');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  assert.equal(ds.spec.updateStrategy.type, 'RollingUpdate');
  // restarts that drop nothing: the new pod runs next to the old one and takes its sockets
  assert.equal(ds.spec.updateStrategy.rollingUpdate.maxSurge, 1);
  assert.equal(ds.spec.updateStrategy.rollingUpdate.maxUnavailable, 0);
  // hostNetwork ports would be hostPorts, which block the surge pod on the same node
  for (const c of pod.containers) assert.equal(c.ports, undefined, `${c.name} declares ports`);
  for (const [k, v] of Object.entries(ds.spec.selector.matchLabels)) assert.equal(ds.spec.template.metadata.labels[k], v, `selector ${k}`);
  for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
    const sc = c.securityContext ?? {};
    assert.notEqual(sc.privileged, true, `${c.name} is privileged`);
    assert.deepEqual(sc.capabilities.drop, ['ALL']);
    assert.deepEqual([...sc.capabilities.add].sort(), ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE', 'SYS_RESOURCE']);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.runAsUser, 0);
  }
  // Bidirectional propagation is only allowed for privileged containers
  for (const m of pod.containers.flatMap((c: Obj) => c.volumeMounts ?? [])) assert.notEqual(m.mountPropagation, 'Bidirectional', m.mountPath);
});

test('DaemonSet: bpffs and cgroup2 from the host, config mounted', () => {
  const pod = daemonSet().spec.template.spec;
  const c = pod.containers[0];
  const volumes = new Map<string, Obj>(pod.volumes.map((v: Obj) => [v.name, v]));
  const hostPathAt = (mountPath: string): string | undefined => {
    const m = c.volumeMounts.find((vm: Obj) => vm.mountPath === mountPath);
    return m ? volumes.get(m.name)?.hostPath?.path : undefined;
  };
  assert.equal(hostPathAt('/sys/fs/bpf'), '/sys/fs/bpf');
  assert.equal(hostPathAt('/sys/fs/cgroup'), '/sys/fs/cgroup');
  assert.equal(hostPathAt('/run/netns'), '/run/netns');
  const cfg = c.volumeMounts.find((vm: Obj) => vm.mountPath === '/etc/ambientd');
  assert.equal(volumes.get(cfg.name)?.configMap?.name, find('ConfigMap')[0]!.obj.metadata.name);
});

test('DaemonSet: agent args, node from the downward API, config the agent accepts', () => {
  const c = daemonSet().spec.template.spec.containers[0];
  assert.equal(c.image, 'ambientd:0.1.0');
  assert.deepEqual(c.args, ['agent', '--config', '/etc/ambientd/agent.yaml', '--node', '$(NODE_NAME)', '--node-ip', '$(NODE_IP)']);
  const env = new Map<string, Obj>(c.env.map((e: Obj) => [e.name, e]));
  assert.equal(env.get('NODE_NAME')?.valueFrom.fieldRef.fieldPath, 'spec.nodeName');
  assert.equal(env.get('NODE_IP')?.valueFrom.fieldRef.fieldPath, 'status.hostIP');
  const agentYaml = find('ConfigMap')[0]!.obj.data['agent.yaml'];
  // what the agent does with the file plus the two flags
  const cfg = parseConfig({ ...(parseAllDocuments(agentYaml)[0]!.toJS() as Obj), node: 'node-1', nodeIP: '10.0.0.1' }, 'agent.yaml');
  assert.equal(cfg.source, 'kubernetes');
  assert.equal(cfg.cgroupRoot, '/sys/fs/cgroup');
  assert.equal(cfg.bpffsDir, '/sys/fs/bpf/ambientd');
  assert.equal(cfg.caAddress, `ambientd-ca.${daemonSet().metadata.namespace}.svc:15012`);
  assert.equal(cfg.adminAddress, '127.0.0.1');
  assert.deepEqual({ ...cfg.ports }, { outbound: 15001, inbound: 15006, hbone: 15008, admin: 15000, metrics: 15020, readiness: 15021 });
  // the hand-over socket is on a hostPath both the old and the new pod mount
  assert.equal(cfg.handoverSocket, '/run/ambientd/handover.sock');
  const mount = c.volumeMounts.find((m: Obj) => m.mountPath === path.dirname(cfg.handoverSocket!));
  assert.ok(mount, 'the hand-over directory is mounted');
  const vol = daemonSet().spec.template.spec.volumes.find((v: Obj) => v.name === mount.name);
  assert.equal(vol.hostPath.path, '/run/ambientd');
  // the grace period covers the drain
  assert.ok(daemonSet().spec.template.spec.terminationGracePeriodSeconds * 1000 > cfg.drainTimeoutMs);
});

test('DaemonSet: probes on 15021, Prometheus scrape on 15020, grace period, resources', () => {
  const tpl = daemonSet().spec.template;
  const c = tpl.spec.containers[0];
  assert.equal(c.readinessProbe.httpGet.port, 15021);
  assert.equal(c.readinessProbe.httpGet.path, '/healthz/ready');
  assert.equal(c.livenessProbe.tcpSocket.port, 15021);
  assert.deepEqual(
    {
      scrape: tpl.metadata.annotations['prometheus.io/scrape'],
      port: tpl.metadata.annotations['prometheus.io/port'],
      path: tpl.metadata.annotations['prometheus.io/path'],
    },
    { scrape: 'true', port: '15020', path: '/metrics' },
  );
  assert.equal(tpl.spec.terminationGracePeriodSeconds, 3630);
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory);
  assert.ok(c.resources.limits.memory);
});

test('uninstall: the cleanup DaemonSet runs `ambientd cleanup` on the paths the agent uses, with no API access', () => {
  const ds = find('DaemonSet', 'ambientd-cleanup')[0]!.obj;
  const pod = ds.spec.template.spec;
  const c = pod.containers[0];
  const cmd = c.args.join(' ');
  const agentYaml = find('ConfigMap')[0]!.obj.data['agent.yaml'];
  const cfg = parseConfig({ ...(parseAllDocuments(agentYaml)[0]!.toJS() as Obj), node: 'node-1' }, 'agent.yaml');
  assert.match(cmd, new RegExp(`cleanup --bpffs ${cfg.bpffsDir} --handover-socket ${cfg.handoverSocket}`));
  assert.equal(c.image, daemonSet().spec.template.spec.containers[0].image, 'same image as the agent');
  assert.equal(pod.serviceAccountName, undefined);
  assert.equal(c.securityContext.privileged, false);
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  const mounts = new Map<string, string>(c.volumeMounts.map((m: Obj) => [m.mountPath, m.name]));
  const vols = new Map<string, Obj>(pod.volumes.map((v: Obj) => [v.name, v]));
  assert.equal(vols.get(mounts.get('/sys/fs/bpf')!)?.hostPath.path, '/sys/fs/bpf');
  assert.equal(vols.get(mounts.get('/run/ambientd')!)?.hostPath.path, '/run/ambientd');
});

test('DaemonSet uses the ServiceAccount that deploy/rbac.yaml defines and binds', () => {
  const ds = daemonSet();
  const sa = ds.spec.template.spec.serviceAccountName;
  const accounts = docs.filter((d) => d.file === 'deploy/rbac.yaml' && d.obj.kind === 'ServiceAccount');
  assert.ok(
    accounts.some((d) => d.obj.metadata.name === sa && d.obj.metadata.namespace === ds.metadata.namespace),
    `ServiceAccount ${sa}`,
  );
  const binding = find('ClusterRoleBinding', 'ambientd')[0]!.obj;
  assert.ok(binding.subjects.some((s: Obj) => s.kind === 'ServiceAccount' && s.name === sa && s.namespace === ds.metadata.namespace));
});

/**
 * deploy/kustomization.yaml, rendered with `kubectl kustomize` (scripts/install-kubectl.sh installs a
 * kubectl when there is none): exactly the objects of its resources, so every check above holds for
 * the rendered base too; each validates against the schema. Skipped without a kubectl.
 */
const KUBECTL = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
test(
  'kustomize base: `kubectl kustomize deploy` renders exactly the objects of ambientd.yaml, rbac.yaml and ca.yaml, each valid',
  { skip: KUBECTL.status === 0 ? false : 'no kubectl here (scripts/install-kubectl.sh installs one)' },
  async () => {
    const base = parseAllDocuments(fs.readFileSync(path.join(DEPLOY, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Obj;
    assert.equal(base.kind, 'Kustomization');
    assert.deepEqual(base.resources, ['ambientd.yaml', 'rbac.yaml', 'ca.yaml']);
    const r = spawnSync('kubectl', ['kustomize', DEPLOY], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `kubectl kustomize: ${r.stderr}`);
    const rendered = parseAllDocuments(r.stdout, { version: '1.1' }).map((d) => d.toJS() as Obj);
    const key = (o: Obj): string => `${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`;
    const expected = docs.filter((d) => (base.resources as string[]).includes(path.basename(d.file))).map((d) => d.obj);
    assert.deepEqual(rendered.map(key).sort(), expected.map(key).sort());
    for (const o of rendered) {
      assert.deepEqual(
        o,
        expected.find((e) => key(e) === key(o)),
        key(o),
      );
      await assert.doesNotReject(validate(o), key(o));
    }
  },
);

// ---------------------------------------------------------------------------
// The cluster CA (deploy/ca.yaml) and the agent's side of it (deploy/ambientd.yaml)

const NS = 'ambientd-system';
const caDeployment = (): Obj => {
  const d = find('Deployment', 'ambientd-ca');
  assert.equal(d.length, 1, 'one Deployment ambientd-ca');
  return d[0]!.obj;
};
/** what `ambientd ca` makes of the Deployment's args (the same parser as the process) */
const caOptions = (): CaCliOptions => {
  const c = caDeployment().spec.template.spec.containers[0];
  assert.deepEqual(c.command, ['node', '/opt/ambientd/dist/src/cli.js']);
  assert.equal(c.args[0], 'ca');
  return parseCaArgs(c.args.slice(1))!;
};
/** the agent's settings: the ConfigMap plus the DaemonSet's two flags, through the agent's own parser */
const agentConfig = () => {
  const agentYaml = find('ConfigMap', 'ambientd-config')[0]!.obj.data['agent.yaml'];
  return parseConfig({ ...(parseAllDocuments(agentYaml)[0]!.toJS() as Obj), node: 'node-1', nodeIP: '10.0.0.1' }, 'agent.yaml');
};
/** the DaemonSet volume mounted at the directory of `file`, and the file's name in it */
const volumeOf = (file: string): { volume: Obj; name: string } => {
  const pod = daemonSet().spec.template.spec;
  const mount = pod.containers[0].volumeMounts.find((m: Obj) => m.mountPath === path.dirname(file));
  assert.ok(mount, `a volume is mounted at ${path.dirname(file)}`);
  return { volume: pod.volumes.find((v: Obj) => v.name === mount.name), name: path.basename(file) };
};

test('CA Deployment: 2 replicas of `ambientd ca` (Kubernetes authenticator, key in Secrets, pod watch), readiness on /healthz/ready', () => {
  const d = caDeployment();
  assert.equal(d.spec.replicas, 2);
  const o = caOptions();
  assert.equal(o.auth, 'kubernetes');
  assert.equal(o.source, 'kubernetes', 'the pod index from the pod watch');
  assert.equal(o.caSecretNamespace, NS, 'the key in Secrets of the namespace');
  assert.equal(o.caDir, null, 'no key on a disk');
  const c = d.spec.template.spec.containers[0];
  assert.equal(c.image, daemonSet().spec.template.spec.containers[0].image, 'the agent image');
  assert.equal(c.readinessProbe.httpGet.path, '/healthz/ready');
  assert.equal(c.readinessProbe.httpGet.port, o.metricsPort);
  assert.equal(c.livenessProbe.tcpSocket.port, o.metricsPort);
  const ports = new Map<string, number>(c.ports.map((p: Obj) => [p.name, p.containerPort]));
  assert.equal(ports.get('grpc-ca'), Number(o.listen.split(':').pop()));
  assert.equal(ports.get('http-monitoring'), o.metricsPort);
  for (const [k, v] of Object.entries(d.spec.selector.matchLabels)) assert.equal(d.spec.template.metadata.labels[k], v, `selector ${k}`);
  assert.equal(d.spec.template.metadata.annotations['prometheus.io/port'], String(o.metricsPort));
});

test('CA Deployment: non-root, read-only root, every capability dropped, no host namespace, no volume', () => {
  const pod = caDeployment().spec.template.spec;
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.ok(pod.securityContext.runAsUser > 0);
  assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  for (const k of ['hostNetwork', 'hostPID', 'hostIPC']) assert.notEqual(pod[k], true, k);
  assert.equal(pod.volumes, undefined, 'the key is read from the API, never mounted');
  for (const c of pod.containers) {
    const sc = c.securityContext;
    assert.equal(sc.runAsNonRoot, true);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.equal(sc.privileged, false);
    assert.deepEqual(sc.capabilities, { drop: ['ALL'] });
  }
});

test('CA Service on 15012 to the gRPC port; PodDisruptionBudget keeps one replica; both select the Deployment pods', () => {
  const labels = caDeployment().spec.template.metadata.labels;
  const svc = find('Service', 'ambientd-ca')[0]!.obj;
  const pdb = find('PodDisruptionBudget', 'ambientd-ca')[0]!.obj;
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(labels[k], v, `Service selector ${k}`);
  for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels)) assert.equal(labels[k], v, `PDB selector ${k}`);
  assert.equal(pdb.spec.minAvailable, 1);
  assert.deepEqual(svc.spec.ports, [{ name: 'grpc-ca', port: 15012, targetPort: 'grpc-ca' }]);
  const c = caDeployment().spec.template.spec.containers[0];
  assert.equal(c.ports.find((p: Obj) => p.name === 'grpc-ca').containerPort, 15012);
});

test('CA RBAC: exactly tokenreviews create and pods list/watch cluster-wide; get on its two Secrets, get/update on its ConfigMap, create (not limitable by name)', () => {
  const cr = find('ClusterRole', 'ambientd-ca')[0]!.obj;
  assert.deepEqual(cr.rules, [
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
    { apiGroups: [''], resources: [...CA_WATCHED_RESOURCES], verbs: ['list', 'watch'] },
  ]);
  const role = find('Role', 'ambientd-ca')[0]!.obj;
  assert.equal(role.metadata.namespace, caOptions().caSecretNamespace);
  assert.deepEqual(role.rules, [
    { apiGroups: [''], resources: ['secrets'], resourceNames: [PLUGIN_SECRET, ROOT_SECRET], verbs: ['get'] },
    { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
    { apiGroups: [''], resources: ['configmaps'], resourceNames: [ROOT_CONFIGMAP], verbs: ['get', 'update'] },
    { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
  ]);
  // the CA's ServiceAccount, and only it, is bound to both; the Deployment runs as it
  const sa = caDeployment().spec.template.spec.serviceAccountName;
  assert.equal(sa, 'ambientd-ca');
  assert.equal(find('ServiceAccount', sa)[0]!.obj.metadata.namespace, NS);
  for (const [kind, ref] of [
    ['ClusterRoleBinding', 'ClusterRole'],
    ['RoleBinding', 'Role'],
  ] as const) {
    const b = find(kind, 'ambientd-ca')[0]!.obj;
    assert.deepEqual(b.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: ref, name: 'ambientd-ca' });
    assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name: sa, namespace: NS }]);
  }
  // nothing else in deploy/ grants anything on secrets (the agent's role lists and watches, no secrets)
  for (const d of docs.filter((x) => x.obj.kind === 'ClusterRole' || x.obj.kind === 'Role'))
    if (d.obj.metadata.name !== 'ambientd-ca')
      for (const r of d.obj.rules) assert.ok(!r.resources.includes('secrets') && !r.resources.includes('*'), `${d.obj.kind} ${d.obj.metadata.name}`);
});

/** Where a pod could read a CA key: Secret volumes (plain or projected), env from a Secret, a hostPath of a CA directory. */
function keySources(pod: Obj): string[] {
  const out: string[] = [];
  for (const v of pod.volumes ?? []) {
    if (v.secret) out.push(`volume ${v.name}: Secret ${v.secret.secretName}`);
    for (const src of v.projected?.sources ?? []) if (src.secret) out.push(`volume ${v.name}: projected Secret ${src.secret.name}`);
    if (/(^|\/)(ca|cacerts|pki)(\/|$)/.test(v.hostPath?.path ?? '')) out.push(`volume ${v.name}: hostPath ${v.hostPath.path}`);
  }
  for (const c of [...(pod.containers ?? []), ...(pod.initContainers ?? [])]) {
    for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) out.push(`${c.name}: env ${e.name} from Secret ${e.valueFrom.secretKeyRef.name}`);
    for (const e of c.envFrom ?? []) if (e.secretRef) out.push(`${c.name}: envFrom Secret ${e.secretRef.name}`);
  }
  return out;
}

test('agent: no DaemonSet volume holds a CA key (no Secret, no CA hostPath); the CA is the configured issuer', () => {
  assert.deepEqual(keySources(daemonSet().spec.template.spec), []);
  const cfg = agentConfig();
  assert.notEqual(cfg.caAddress, null, 'certificates come from the cluster CA, not the built-in one');
});

test('the key check catches what the old manifest had and its variants', () => {
  const pod = structuredClone(daemonSet().spec.template.spec);
  pod.volumes.push(
    { name: 'cacerts', secret: { secretName: 'cacerts', optional: true } },
    { name: 'ca', hostPath: { path: '/var/lib/ambientd/ca', type: 'DirectoryOrCreate' } },
    { name: 'mixed', projected: { sources: [{ secret: { name: 'ambientd-ca-root' } }] } },
  );
  pod.containers[0].env.push({ name: 'KEY', valueFrom: { secretKeyRef: { name: 'cacerts', key: 'ca-key.pem' } } });
  pod.containers[0].envFrom = [{ secretRef: { name: 'ambientd-ca-root' } }];
  assert.deepEqual(keySources(pod), [
    'volume cacerts: Secret cacerts',
    'volume ca: hostPath /var/lib/ambientd/ca',
    'volume mixed: projected Secret ambientd-ca-root',
    'ambientd: env KEY from Secret cacerts',
    'ambientd: envFrom Secret ambientd-ca-root',
  ]);
});

test('agent ↔ CA: address and port of the Service, a name in the CA certificate, token audience, trusted node account, root ConfigMap', () => {
  const cfg = agentConfig();
  const o = caOptions();
  const ds = daemonSet();
  // caAddress is the Service, on its port; the CA's certificate carries that name
  const [host, port] = cfg.caAddress!.split(':');
  const svc = find('Service', 'ambientd-ca')[0]!.obj;
  assert.equal(host, `${svc.metadata.name}.${svc.metadata.namespace}.svc`);
  assert.ok(
    svc.spec.ports.some((p: Obj) => p.port === Number(port)),
    `Service port ${port}`,
  );
  assert.ok(o.serverNames.includes(host!), `--server-name ${host}`);
  // the token: a projected ServiceAccount token with the CA's audience, short-lived, at caTokenFile
  const tok = volumeOf(cfg.caTokenFile);
  const source = tok.volume.projected.sources.find((s: Obj) => s.serviceAccountToken?.path === tok.name)?.serviceAccountToken;
  assert.ok(source, `caTokenFile ${cfg.caTokenFile} is a projected token`);
  assert.equal(source.audience, o.tokenAudience);
  assert.ok(source.expirationSeconds >= 600 && source.expirationSeconds <= 3600, `expirationSeconds ${source.expirationSeconds}`);
  // the agents' ServiceAccount is the CA's trusted node account (only it may ask for other identities)
  assert.deepEqual(o.trustedNodeAccounts, [`${ds.metadata.namespace}/${ds.spec.template.spec.serviceAccountName}`]);
  // the trust bundle: the ConfigMap the CA publishes, in the agents' namespace, the key the CA writes, at caRootCert
  const root = volumeOf(cfg.caRootCert);
  assert.equal(root.volume.configMap.name, o.rootConfigMap);
  assert.equal(root.volume.configMap.name, ROOT_CONFIGMAP);
  assert.equal(o.rootConfigMapNamespace, ds.metadata.namespace);
  assert.deepEqual(root.volume.configMap.items, [{ key: ROOT_CONFIGMAP_KEY, path: root.name }]);
  assert.notEqual(root.volume.configMap.optional, true, 'the agent starts with a bundle');
});
