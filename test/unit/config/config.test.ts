// The settings table (src/config/settings.ts) -> reading and validating the
// settings file (src/config/config.ts): defaults, every kind of value, bad
// values named by field, groups (ports, limits), unknown keys, the file plus
// flags (loadConfig), units.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, parseConfig, parseDuration, parseSize } from '../../../src/config/config.js';
import { entries } from '../../../src/config/settings.js';
import { formatDuration, formatSize } from '../../../src/config/units.js';
import { DEFAULT_LIMITS } from '../../../src/proxy/limits.js';
import { AmbientError } from '../../../src/util/errors.js';

const MIN = { node: 'n1', workloads: '/w' };

/** parseConfig(raw) fails with CONFIG_INVALID, a message matching `re` and a hint. */
function rejects(raw: unknown, re: RegExp, file = 'x.yaml'): AmbientError {
  let err: unknown;
  assert.throws(
    () => parseConfig(raw, file),
    (e: unknown) => {
      err = e;
      return e instanceof AmbientError && e.code === 'CONFIG_INVALID' && re.test(e.message) && e.hint.length > 0;
    },
    `${JSON.stringify(raw)} should fail with ${re}`,
  );
  return err as AmbientError;
}

/** `raw` with `value` at the dotted `key` ("ports.admin"). */
function withKey(raw: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const [top, member] = key.split('.') as [string, string | undefined];
  return member === undefined ? { ...raw, [top]: value } : { ...raw, [top]: { [member]: value } };
}

test('defaults: the whole config from the two required settings', () => {
  const c = parseConfig(MIN);
  const { bpfObject, ...rest } = c;
  assert.match(bpfObject, /bpf\/ambient\.bpf\.o$/);
  assert.deepEqual(JSON.parse(JSON.stringify(rest)), {
    node: 'n1',
    nodeIP: null,
    source: 'file',
    workloads: '/w',
    rootNamespace: 'istio-system',
    cgroupRoot: '/sys/fs/cgroup',
    agentCgroup: null,
    bpffsDir: '/sys/fs/bpf/ambientd/n1',
    ports: { outbound: 15001, inbound: 15006, hbone: 15008, admin: 15000, metrics: 15020, readiness: 15021 },
    adminAddress: '127.0.0.1',
    metricsAddress: '0.0.0.0',
    mark: 0x539,
    clientAddress: 'preserve',
    workers: 'auto',
    acceleration: 'none',
    trustDomain: 'cluster.local',
    caDir: '/var/lib/ambientd/ca',
    certLifetimeMs: 24 * 3_600_000,
    caAddress: null,
    caRootCert: '/var/run/secrets/ambientd/ca/root-cert.pem',
    caTokenFile: '/var/run/secrets/tokens/ambientd-ca',
    clusterId: null,
    readyFile: null,
    handoverSocket: '/run/ambientd/handover.sock',
    drainTimeoutMs: 30_000,
    handoverTimeoutMs: 10_000,
    peerTimeoutMs: 30_000,
    limits: { ...DEFAULT_LIMITS },
    logLevel: 'info',
    accessLog: 'info',
  });
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.ports) && Object.isFrozen(c.limits));
  // null reads as "the default" (except where null is a value: handoverSocket)
  assert.equal(parseConfig({ ...MIN, cgroupRoot: null, ports: { admin: null }, limits: null }).cgroupRoot, '/sys/fs/cgroup');
  assert.equal(parseConfig({ ...MIN, handoverSocket: null }).handoverSocket, null);
  assert.equal(parseConfig({ ...MIN, handoverSocket: '' }).handoverSocket, null);
});

test('defaults computed from settings above: bpffsDir from node, workloads required only with the file source', () => {
  assert.equal(parseConfig({ node: 'node-2', workloads: '/w' }).bpffsDir, '/sys/fs/bpf/ambientd/node-2');
  assert.equal(parseConfig({ node: 'n1', source: 'kubernetes' }).workloads, null);
  assert.equal(parseConfig({ node: 'n1', source: 'kubernetes', workloads: '/w' }).workloads, '/w');
  rejects({ node: 'n1' }, /field "workloads" is required with source "file"/);
  rejects({ workloads: '/w' }, /field "node" is required/);
});

test('bpfObject: $AMBIENTD_BPF_OBJECT overrides the default, the file overrides both', () => {
  const saved = process.env.AMBIENTD_BPF_OBJECT;
  try {
    process.env.AMBIENTD_BPF_OBJECT = '/opt/x/ambient.bpf.o';
    assert.equal(parseConfig(MIN).bpfObject, '/opt/x/ambient.bpf.o');
    assert.equal(parseConfig({ ...MIN, bpfObject: '/y.o' }).bpfObject, '/y.o');
    delete process.env.AMBIENTD_BPF_OBJECT;
    assert.match(parseConfig(MIN).bpfObject, /^\/.*\/bpf\/ambient\.bpf\.o$/);
  } finally {
    if (saved === undefined) delete process.env.AMBIENTD_BPF_OBJECT;
    else process.env.AMBIENTD_BPF_OBJECT = saved;
  }
});

test('every kind of value: good values read as typed, units converted', () => {
  const c = parseConfig({
    node: 'node-1.example',
    nodeIP: 'fd00::1',
    source: 'file',
    workloads: '/w',
    rootNamespace: 'mesh',
    cgroupRoot: '/cg',
    agentCgroup: '/cg/a',
    bpffsDir: '/sys/fs/bpf/x',
    bpfObject: '/o',
    ports: { outbound: 1, inbound: 2, hbone: 3, admin: 4, metrics: 5, readiness: 65535 },
    adminAddress: '::1',
    metricsAddress: '10.0.0.1',
    mark: 0xffffffff,
    clientAddress: 'pod',
    workers: 2,
    acceleration: 'sockmap',
    trustDomain: 'example.org',
    caDir: '/ca',
    certLifetime: '90s',
    readyFile: '/r',
    handoverSocket: '/run/h.sock',
    drainTimeout: 1500,
    handoverTimeout: '100ms',
    peerTimeout: '1h',
    limits: {
      receiveBuffer: '8MiB',
      streamWindow: 2 << 20,
      minStreamWindow: '16KiB',
      maxStreamsPerSession: 1,
      maxSessionsPerPeer: 100_000,
      maxHandshakes: 7,
      maxPendingDials: 9,
      socketBuffer: '4096',
    },
    logLevel: 'off',
    accessLog: 'debug',
  });
  assert.equal(c.nodeIP, 'fd00::1');
  assert.equal(c.ports.readiness, 65535);
  assert.equal(c.mark, 0xffffffff);
  assert.equal(c.certLifetimeMs, 90_000);
  assert.equal(c.drainTimeoutMs, 1500);
  assert.equal(c.handoverTimeoutMs, 100);
  assert.equal(c.peerTimeoutMs, 3_600_000);
  assert.deepEqual(
    { ...c.limits },
    {
      receiveBuffer: 8 << 20,
      streamWindow: 2 << 20,
      minStreamWindow: 16 << 10,
      maxStreamsPerSession: 1,
      maxSessionsPerPeer: 100_000,
      maxHandshakes: 7,
      maxPendingDials: 9,
      socketBuffer: 4096,
    },
  );
  assert.equal(c.logLevel, 'off');
  assert.equal(c.accessLog, 'debug');
  // a group's members left out keep their defaults
  const l = parseConfig({ ...MIN, peerTimeout: '10s', limits: { receiveBuffer: '8MiB', maxPendingDials: 10 } });
  assert.equal(l.peerTimeoutMs, 10_000);
  assert.equal(l.limits.receiveBuffer, 8 << 20);
  assert.equal(l.limits.maxPendingDials, 10);
  assert.equal(l.limits.streamWindow, DEFAULT_LIMITS.streamWindow, 'the others keep their defaults');
  const p = parseConfig({ ...MIN, ports: { metrics: 9090, readiness: 9091 }, metricsAddress: '127.0.0.1' });
  assert.deepEqual([p.ports.metrics, p.ports.readiness, p.ports.admin, p.metricsAddress], [9090, 9091, 15000, '127.0.0.1']);
});

test('every setting: a value of the wrong type is CONFIG_INVALID naming the file and the field', () => {
  for (const e of entries()) {
    const err = rejects(withKey(MIN, e.key, { wrong: true }), new RegExp(`^x\\.yaml: field "${e.key.replace('.', '\\.')}" `));
    assert.match(err.message, /\{"wrong":true\}/, `${e.key}: the bad value is shown`);
  }
});

test('bad values: what each setting wants is said', () => {
  rejects({ node: 'N_1', workloads: '/w' }, /field "node" must be a DNS-1123 name/);
  rejects({ node: 'a..b', workloads: '/w' }, /field "node" must be a DNS-1123 name/);
  rejects({ ...MIN, node: '' }, /field "node" must be a non-empty string/);
  rejects({ ...MIN, nodeIP: '1.2.3' }, /field "nodeIP" must be an IP address, got "1\.2\.3"/);
  rejects({ ...MIN, source: 'etcd' }, /field "source" must be "file" or "kubernetes", got "etcd"/);
  rejects({ ...MIN, ports: { outbound: 70000 } }, /field "ports\.outbound" must be a port number/);
  rejects({ ...MIN, ports: { metrics: 0 } }, /ports\.metrics/);
  rejects({ ...MIN, ports: { outbound: 15006 } }, /field "ports" outbound, inbound and hbone must be distinct/);
  rejects({ ...MIN, ports: { readiness: 15000 } }, /field "ports" admin, metrics and readiness must be distinct/);
  rejects({ ...MIN, ports: 15001 }, /field "ports" must be a mapping of outbound, inbound, hbone, admin, metrics, readiness/);
  rejects({ ...MIN, ports: { dns: 15053 } }, /field "ports\.dns" is not a known port \(known: outbound/);
  rejects({ ...MIN, adminAddress: 'localhost' }, /field "adminAddress" must be an IP address \(keep it on loopback\)/);
  rejects({ ...MIN, metricsAddress: 'everywhere' }, /metricsAddress/);
  rejects({ ...MIN, mark: 0 }, /field "mark" must be a positive 32-bit integer/);
  rejects({ ...MIN, mark: 2 ** 32 }, /field "mark" must be a positive 32-bit integer/);
  rejects({ ...MIN, acceleration: 'turbo' }, /"acceleration" must be "sockmap" or "none"/);
  rejects({ ...MIN, clientAddress: 'spoof' }, /"clientAddress" must be "preserve" or "pod"/);
  rejects({ ...MIN, workers: -1 }, /"workers" must be "auto" or a whole number between 0 and 256, got -1/);
  rejects({ ...MIN, workers: 1.5 }, /"workers" must be "auto" or a whole number/);
  rejects({ ...MIN, workers: 'all' }, /"workers" must be "auto" or a whole number/);
  rejects({ ...MIN, logLevel: 'trace' }, /field "logLevel" must be one of debug, info, warn, error, off/);
  rejects({ ...MIN, accessLog: 'warn' }, /field "accessLog" must be one of info, debug, off/);
  rejects({ ...MIN, bpffsDir: 'relative' }, /bpffsDir" must be an absolute path/);
  rejects({ ...MIN, caDir: 'ca' }, /field "caDir" must be an absolute path/);
  rejects({ ...MIN, trustDomain: 'Cluster.Local' }, /field "trustDomain" must be a lowercase DNS-like name/);
  rejects({ ...MIN, rootNamespace: 'istio.system' }, /field "rootNamespace" must be a namespace name/);
  rejects({ ...MIN, handoverSocket: 'h.sock' }, /field "handoverSocket" must be an absolute path of at most 107 bytes/);
  rejects({ ...MIN, handoverSocket: `/${'x'.repeat(107)}` }, /handoverSocket/);
  rejects({ ...MIN, certLifetime: '500ms' }, /field "certLifetime" must be a duration of at least 1s/);
  rejects({ ...MIN, drainTimeout: '30 seconds' }, /field "drainTimeout" must be a duration like "30s"/);
  rejects({ ...MIN, drainTimeout: 0 }, /drainTimeout/);
  rejects({ ...MIN, handoverTimeout: '11m' }, /field "handoverTimeout" must be a duration between 100ms and 10m/);
  rejects({ ...MIN, peerTimeout: '1s' }, /peerTimeout.*between 2s and 1h/);
  rejects({ ...MIN, limits: { nope: 1 } }, /limits\.nope.*not a known limit/);
  rejects({ ...MIN, limits: { receiveBuffer: '1KiB' } }, /field "limits\.receiveBuffer" must be a size .* between 1MiB and 64GiB, got "1KiB"/);
  rejects({ ...MIN, limits: { maxHandshakes: '10' } }, /field "limits\.maxHandshakes" must be a whole number 1-100000, got "10"/);
  rejects({ ...MIN, limits: { maxHandshakes: 0 } }, /limits\.maxHandshakes/);
  rejects({ ...MIN, limits: { minStreamWindow: '2MiB' } }, /field "limits\.minStreamWindow" must not exceed limits\.streamWindow/);
  rejects({ ...MIN, limits: [] }, /field "limits" must be a mapping of receiveBuffer/);
});

test('unknown keys: a typed error that lists the known ones and suggests the near miss', () => {
  const e = rejects({ ...MIN, nodeIp: '1.2.3.4' }, /"nodeIp" is not a known setting \(known: node, nodeIP,/);
  assert.match(e.hint, /did you mean "nodeIP"\?/);
  assert.match(rejects({ ...MIN, 'drain-timeout': '5s' }, /"drain-timeout" is not a known setting/).hint, /did you mean "drainTimeout"\?/);
  assert.match(rejects({ ...MIN, admin: 1 }, /"admin" is not a known setting/).hint, /did you mean "ports\.admin"\?/);
  assert.doesNotMatch(rejects({ ...MIN, zzz: 1 }, /"zzz" is not a known setting/).hint, /did you mean/);
  rejects(['x'], /must be a mapping/);
  rejects('node: n1', /must be a mapping/);
  // a duration's file key is not its AgentConfig field
  rejects({ ...MIN, drainTimeoutMs: 5 }, /"drainTimeoutMs" is not a known setting/);
});

test('loadConfig: the file, flags on top (a group member by member), errors say where the value came from', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-cfg-'));
  try {
    const f = path.join(dir, 'agent.yaml');
    fs.writeFileSync(f, 'node: n1\nworkloads: /w.yaml\nports: {admin: 16000}\nlimits: {maxHandshakes: 5}\n');
    const l = loadConfig(f, { node: 'n2', ports: { outbound: 16001 }, limits: { socketBuffer: '64KiB' } });
    assert.equal(l.node, 'n2');
    assert.equal(l.ports.admin, 16000);
    assert.equal(l.ports.outbound, 16001);
    assert.deepEqual([l.limits.maxHandshakes, l.limits.socketBuffer], [5, 64 << 10]);
    assert.equal(loadConfig(f, { node: undefined }).node, 'n1', 'an undefined override is no override');
    const from = (overrides: Record<string, unknown>, re: RegExp, hint: RegExp): void => {
      assert.throws(
        () => loadConfig(f, overrides),
        (e: unknown) => e instanceof AmbientError && e.code === 'CONFIG_INVALID' && re.test(e.message) && hint.test(e.hint),
      );
    };
    from({ ports: { hbone: 0 } }, /^<flags>: field "ports\.hbone" must be a port number/, /fix --hbone-port/);
    from({ limits: { nope: 1 } }, /^<flags>: field "limits\.nope" is not a known limit/, /fix the flag/);
    from(
      { ports: { metrics: 16000 } },
      new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} with flags: field "ports" admin, metrics and readiness must be distinct`),
      /the config file or the flags/,
    );
    fs.writeFileSync(f, 'node: n1\nworkloads: /w.yaml\nmark: -1\n');
    from({}, new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: field "mark"`), /fix the field in the config file/);
    fs.writeFileSync(f, 'node: n1\n');
    from({}, /field "workloads" is required/, /set "workloads" in the config file or pass --workloads/);
    assert.throws(
      () => loadConfig(path.join(dir, 'missing.yaml')),
      (e: unknown) => e instanceof AmbientError && e.code === 'CONFIG_UNREADABLE',
    );
    fs.writeFileSync(f, 'node: [');
    assert.throws(
      () => loadConfig(f),
      (e: unknown) => e instanceof AmbientError && e.code === 'CONFIG_INVALID' && /not valid YAML/.test(e.message),
    );
    fs.writeFileSync(f, '- a\n- b\n');
    assert.throws(
      () => loadConfig(f),
      (e: unknown) => e instanceof AmbientError && e.code === 'CONFIG_INVALID' && /must be a mapping of settings/.test(e.message),
    );
    const j = path.join(dir, 'agent.json');
    fs.writeFileSync(j, JSON.stringify({ node: 'n3', source: 'kubernetes' }));
    assert.equal(loadConfig(j).node, 'n3');
    // no file: every value is a flag's
    assert.throws(() => loadConfig(null, { node: 'n1', workloads: '/w', mark: 0 }), /^AmbientError: <flags>: field "mark"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('units: durations and sizes read and written back', () => {
  assert.deepEqual(['256KiB', '32MiB', '1GiB', '4096', 512, 'x', '1.5MiB', -1].map(parseSize), [262144, 33554432, 1073741824, 4096, 512, null, null, null]);
  assert.deepEqual(['500ms', '1.5s', '15m', '24h', '1d', 250, '0s', '5', 's', -1, Infinity].map(parseDuration), [
    500,
    1500,
    900_000,
    86_400_000,
    86_400_000,
    250,
    null,
    null,
    null,
    null,
    null,
  ]);
  assert.deepEqual([86_400_000, 3_600_000, 600_000, 30_000, 1500, 100].map(formatDuration), ['24h', '1h', '10m', '30s', '1500ms', '100ms']);
  assert.deepEqual([1 << 30, 32 << 20, 64 << 10, 4096, 65_535].map(formatSize), ['1GiB', '32MiB', '64KiB', '4KiB', '65535']);
  for (const ms of [100, 1000, 90_000, 86_400_000]) assert.equal(parseDuration(formatDuration(ms)), ms);
  for (const b of [4096, 65_535, 32 << 20]) assert.equal(parseSize(formatSize(b)), b);
});
