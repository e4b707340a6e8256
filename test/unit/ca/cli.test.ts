/**
 * `ambientd ca`: its flags, its help, and the process itself (sandbox auth,
 * the workload file as pod index) serving an agent's client end to end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseCaArgs } from '../../../src/ca/cli.js';
import { generateSandboxKey, mintSandboxToken } from '../../../src/ca/auth-sandbox.js';
import { RemoteCaIssuer } from '../../../src/identity/ca-client.js';
import { IdentityManager } from '../../../src/identity/manager.js';
import { CLI } from '../../helpers/paths.js';

test('ca flags: defaults, and every mistake is a typed error', () => {
  assert.equal(parseCaArgs(['--help']), null);
  assert.deepEqual(parseCaArgs(['--ca-dir', '/ca']), {
    listen: '0.0.0.0:15012',
    caDir: '/ca',
    caSecretNamespace: null,
    trustDomain: 'cluster.local',
    auth: 'kubernetes',
    tokenAudience: 'istio-ca',
    sandboxTokenKey: null,
    trustedNodeAccounts: ['ambientd-system/ambientd'],
    source: 'kubernetes',
    workloads: null,
    serverNames: ['ambientd-ca', 'ambientd-ca.ambientd-system', 'ambientd-ca.ambientd-system.svc'],
    certLifetimeMs: 24 * 3_600_000,
    maxCertLifetimeMs: 7 * 24 * 3_600_000,
    metricsPort: 15014,
    logLevel: 'info',
    servingCertLifetimeMs: 30 * 24 * 3_600_000,
    rootConfigMap: null,
    rootConfigMapNamespace: null,
    rootSyncIntervalMs: 60_000,
  });
  const k8s = parseCaArgs(['--ca-secret-namespace', 'ambientd-system']);
  assert.equal(k8s?.caSecretNamespace, 'ambientd-system');
  // with the key in Secrets the trust bundle is published, by default into the agents' (the Secrets') namespace
  assert.deepEqual([k8s?.rootConfigMap, k8s?.rootConfigMapNamespace], ['ambientd-ca-root-cert', 'ambientd-system']);
  assert.equal(parseCaArgs(['--ca-secret-namespace', 'ambientd-system', '--root-configmap', ''])?.rootConfigMap, null);
  assert.equal(parseCaArgs(['--ca-secret-namespace', 'a', '--root-configmap-namespace', 'b'])?.rootConfigMapNamespace, 'b');
  const sandbox = parseCaArgs(['--ca-dir', '/ca', '--auth', 'sandbox', '--sandbox-token-key', '/k.pem', '--workloads', '/w', '--listen', '127.0.0.1:0']);
  assert.equal(sandbox?.source, 'file');
  const errors: Array<[string[], RegExp]> = [
    [[], /give one of --ca-dir and --ca-secret-namespace/],
    [['--ca-dir', '/ca', '--ca-secret-namespace', 'ns'], /give one of/],
    [['--ca-secret-namespace', 'Not_A_Namespace'], /must be a namespace name/],
    [['--ca-dir', '/ca', '--auth', 'x509'], /--auth must be kubernetes or sandbox/],
    [['--ca-dir', '/ca', '--auth', 'sandbox', '--workloads', '/w'], /--sandbox-token-key is required/],
    [['--ca-dir', '/ca', '--source', 'file'], /--workloads is required/],
    [['--ca-dir', '/ca', '--trusted-node-account', 'ambientd'], /NAMESPACE\/SERVICEACCOUNT/],
    [['--ca-dir', '/ca', '--cert-lifetime', '10ms'], /at least 1s/],
    [['--ca-dir', '/ca', '--listen', 'here'], /--listen must be HOST:PORT/],
    [['--ca-dir', '/ca', '--log-level', 'loud'], /--log-level/],
    [['--ca-dir', '/ca', '--root-configmap', 'roots'], /--root-configmap needs --ca-secret-namespace/],
    [['--ca-secret-namespace', 'a', '--root-configmap', 'Roots!'], /--root-configmap must be a ConfigMap name/],
    [['--ca-secret-namespace', 'a', '--root-configmap-namespace', 'B'], /--root-configmap-namespace must be a namespace name/],
    [['--ca-dir', '/ca', '--serving-cert-lifetime', '0s'], /--serving-cert-lifetime must be a duration/],
  ];
  for (const [args, re] of errors)
    assert.throws(
      () => parseCaArgs(args),
      (e: Error & { code?: string }) => e.code === 'CA_SERVER_CONFIG' && re.test(e.message),
      args.join(' '),
    );
  assert.throws(
    () => parseCaArgs(['--nope']),
    (e: Error & { code?: string }) => e.code === 'USAGE',
  );
});

test('ambientd ca --help; ambientd --help lists it', () => {
  const r = spawnSync(process.execPath, [CLI, 'ca', '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^ambientd ca — the cluster CA/);
  assert.match(r.stdout, /istio\.v1\.auth\.IstioCertificateService\/CreateCertificate/);
  assert.match(r.stdout, /--trusted-node-account NS\/SA/);
  const all = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
  assert.match(all.stdout, /ambientd ca --ca-dir DIR \| --ca-secret-namespace NS/);
  const bad = spawnSync(process.execPath, [CLI, 'ca'], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^ambientd: CA_SERVER_CONFIG: give one of --ca-dir and --ca-secret-namespace .*\n {2}hint: /);
});

test('ambientd ca as a process: sandbox tokens, the workload file as pod index, an agent client gets and is refused certificates', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-ca-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const keys = generateSandboxKey();
  fs.writeFileSync(path.join(dir, 'sandbox-key.pub'), keys.publicKeyPem);
  fs.writeFileSync(
    path.join(dir, 'workloads.yaml'),
    [
      'namespaces: [{ name: demo }]',
      'pods:',
      '  - { name: web-1, namespace: demo, serviceAccount: web, node: n1, ip: 10.0.1.2 }',
      '  - { name: db-1, namespace: demo, serviceAccount: db, node: n2, ip: 10.0.2.2 }',
      '',
    ].join('\n'),
  );
  const metricsPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const child = spawn(
    process.execPath,
    [
      CLI,
      'ca',
      '--ca-dir',
      path.join(dir, 'ca'),
      '--auth',
      'sandbox',
      '--sandbox-token-key',
      path.join(dir, 'sandbox-key.pub'),
      '--workloads',
      path.join(dir, 'workloads.yaml'),
      '--listen',
      '127.0.0.1:0',
      '--server-name',
      '127.0.0.1',
      '--metrics-port',
      String(metricsPort),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  t.after(() => {
    child.kill('SIGKILL');
  });
  const lines: Array<Record<string, unknown>> = [];
  let port = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "pod index synced" in 15 s: ${JSON.stringify(lines)}`)), 15_000);
    child.once('exit', (code) => reject(new Error(`ambientd ca exited ${code}: ${JSON.stringify(lines)}`)));
    createInterface({ input: child.stderr! }).on('line', (l) => {
      const j = JSON.parse(l) as Record<string, unknown>;
      lines.push(j);
      if (j.msg === 'serving IstioCertificateService') port = j.port as number;
      if (j.msg === 'pod index synced') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  assert.ok(port > 0);
  // ready: key loaded, pod index synced, serving certificate made
  const ready = await fetch(`http://127.0.0.1:${metricsPort}/healthz/ready`);
  assert.deepEqual([ready.status, await ready.text()], [200, 'ready\n']);
  // the root was created in --ca-dir: the agent's trust bundle
  const rootFile = path.join(dir, 'ca', 'root-cert.pem');
  const tokenFile = path.join(dir, 'n1.token');
  fs.writeFileSync(
    tokenFile,
    mintSandboxToken(keys.privateKeyPem, { namespace: 'ambientd-system', serviceAccount: 'ambientd', node: 'n1', audience: 'istio-ca' }),
  );
  const issuer = new RemoteCaIssuer({ address: `127.0.0.1:${port}`, rootFile, tokenFile });
  const m = new IdentityManager({ issuer });
  t.after(() => m.close());
  const cert = await m.get('spiffe://cluster.local/ns/demo/sa/web');
  assert.match(cert.certPem, /BEGIN CERTIFICATE/);
  await assert.rejects(
    m.get('spiffe://cluster.local/ns/demo/sa/db'),
    (e: Error & { cause?: { serverCode?: string } }) => e.cause?.serverCode === 'CA_NODE_DENIED',
  );
  child.kill('SIGTERM');
  const code = await new Promise((resolve) => child.once('exit', (c) => resolve(c)));
  assert.equal(code, 0);
  assert.ok(lines.some((l) => l.msg === 'certificate request refused' && l.code === 'CA_NODE_DENIED'));
});
