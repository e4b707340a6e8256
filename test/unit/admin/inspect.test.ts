// `ambientd inspect`: table/JSON formatting of a recorded config_dump, bad
// arguments -> USAGE (exit 2), bpftool-style map decoding. (Access-log
// lines: access-log.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { formatDump, formatMaps, parseInspectArgs, runInspect, decodeBtfStyle, table, TARGETS } from '../../../src/admin/inspect.js';
import { encodeIp, encodeSockaddr, STRUCTS } from '../../../src/datapath/codec.js';
import { isAmbientError } from '../../../src/util/errors.js';
import { ROOT } from '../../helpers/paths.js';

// recorded from a sandbox agent (n1 of `sandbox up --nodes 2 --pods 2`), trimmed
const DUMP = {
  node: 'n1',
  pid: 4242,
  workloads: [
    {
      name: 'n1-p1',
      namespace: 'ambient-demo',
      serviceAccount: 'sa-n1-p1',
      identity: 'spiffe://cluster.local/ns/ambient-demo/sa/sa-n1-p1',
      node: 'n1',
      ip: '10.244.1.2',
      netns: '/run/netns/ambs-n1-p1',
      cgroup: '/sys/fs/cgroup/ambientd-sandbox/n1/pods/n1-p1',
      labels: { app: 'n1-p1' },
      ambient: true,
      state: 'enrolled',
      enrolledAt: '2024-05-01T10:00:00.000Z',
      redirect: { capturedOut: '3' },
    },
    {
      name: 'n1-p2',
      namespace: 'plain',
      serviceAccount: 'sa-n1-p2',
      identity: 'spiffe://cluster.local/ns/plain/sa/sa-n1-p2',
      node: 'n1',
      ip: '10.244.1.3',
      netns: '/run/netns/ambs-n1-p2',
      cgroup: '/x',
      labels: {},
      ambient: false,
      state: 'not-enrolled',
    },
    {
      name: 'n2-p1',
      namespace: 'ambient-demo',
      serviceAccount: 'sa-n2-p1',
      identity: 'spiffe://cluster.local/ns/ambient-demo/sa/sa-n2-p1',
      node: 'n2',
      ip: '10.244.2.2',
      netns: null,
      cgroup: null,
      labels: {},
      ambient: true,
      state: 'remote',
    },
    {
      name: 'bad',
      namespace: 'ambient-demo',
      serviceAccount: 'default',
      identity: null,
      node: 'n1',
      ip: '10.244.1.9',
      netns: '/gone',
      cgroup: '/x',
      labels: {},
      ambient: true,
      state: 'failed',
      error: { code: 'NETNS_UNAVAILABLE', message: 'gone', hint: '' },
    },
  ],
  services: [
    {
      name: 'echo',
      namespace: 'ambient-demo',
      hostname: 'echo.ambient-demo.svc.cluster.local',
      vips: ['10.96.0.10'],
      ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
      endpoints: [
        { ip: '10.244.1.2', ready: true, pod: 'ambient-demo/n1-p1' },
        { ip: '10.244.2.2', ready: false },
      ],
    },
  ],
  policies: [
    {
      policy: 'ambient-demo/deny-p2',
      namespace: 'ambient-demo',
      name: 'deny-p2',
      action: 'DENY',
      scope: 'workload',
      selector: { app: 'n1-p1' },
      status: 'enforced',
      effect: 'denies matching connections',
      rules: 1,
      enforcedRules: 1,
      errors: [],
      warnings: [],
    },
  ],
  policyStats: {},
  connections: [
    {
      id: 1,
      pod: 'ambient-demo/n1-p1',
      direction: 'outbound',
      src: '10.244.1.2:40000',
      dst: '10.244.2.2:8080',
      via: 'hbone',
      peerIdentity: 'spiffe://cluster.local/ns/ambient-demo/sa/sa-n2-p1',
      bytesSent: 5,
      bytesReceived: 7,
      start: '2024-05-01T10:00:01.000Z',
      end: '2024-05-01T10:00:01.250Z',
      state: 'closed',
      reason: 'eof',
    },
    {
      id: 2,
      pod: 'ambient-demo/n1-p1',
      direction: 'outbound',
      src: '10.244.1.2:40002',
      dst: '10.96.0.10:80',
      via: 'passthrough',
      peerIdentity: null,
      service: 'ambient-demo/echo',
      endpoint: '10.244.1.3:8080',
      bytesSent: 0,
      bytesReceived: 0,
      start: '2024-05-01T10:00:02.000Z',
      end: null,
      state: 'open',
      reason: null,
    },
  ],
  certificates: [
    {
      id: 'spiffe://cluster.local/ns/ambient-demo/sa/sa-n1-p1',
      serial: '0a1b',
      notBefore: '2024-05-01T10:00:00.000Z',
      notAfter: '2024-05-02T10:00:00.000Z',
      state: 'valid',
      nextRenewal: '2024-05-01T22:00:00.000Z',
      failedAttempts: 0,
      lastError: null,
    },
  ],
  hbone: null,
  datapath: { pins: '/sys/fs/bpf/ambientd-sandbox/n1', acceleration: 'none', features: {} },
  counters: { workload_entry_invalid: 2 },
  readiness: { ready: true, pending: [], pods: [] },
};

const lines = (s: string): string[] => s.trimEnd().split('\n');
const cols = (l: string): string[] => l.split(/\s{2,}/);

test('workloads table: header, one row per pod, failed pods show their error code', () => {
  const out = lines(formatDump('workloads', DUMP, 'table'));
  assert.deepEqual(cols(out[0]!), ['NAMESPACE', 'NAME', 'IP', 'NODE', 'AMBIENT', 'STATE', 'IDENTITY']);
  assert.equal(out.length, 1 + DUMP.workloads.length);
  assert.deepEqual(cols(out[1]!), ['ambient-demo', 'n1-p1', '10.244.1.2', 'n1', 'yes', 'enrolled', 'spiffe://cluster.local/ns/ambient-demo/sa/sa-n1-p1']);
  assert.deepEqual(cols(out[2]!).slice(0, 6), ['plain', 'n1-p2', '10.244.1.3', 'n1', 'no', 'not-enrolled']);
  assert.deepEqual(cols(out[4]!), ['ambient-demo', 'bad', '10.244.1.9', 'n1', 'yes', 'failed (NETNS_UNAVAILABLE)', '-']);
  // columns are aligned: every row's IP starts at the same offset as the header's
  const at = out[0]!.indexOf('IP');
  for (const l of out.slice(1)) assert.match(l.slice(at), /^10\.244\./);
});

test('services, policies, certs, connections tables', () => {
  const s = lines(formatDump('services', DUMP, 'table'));
  assert.deepEqual(cols(s[1]!), ['ambient-demo', 'echo', '10.96.0.10', '80->8080/TCP', '10.244.1.2,10.244.2.2(not ready)']);
  const p = lines(formatDump('policies', DUMP, 'table'));
  assert.deepEqual(cols(p[0]!), ['NAMESPACE', 'NAME', 'ACTION', 'SCOPE', 'STATUS', 'RULES', 'ENFORCED', 'ERRORS']);
  assert.deepEqual(cols(p[1]!), ['ambient-demo', 'deny-p2', 'DENY', 'workload', 'enforced', '1', '1', '-']);
  const c = lines(formatDump('certs', DUMP, 'table'));
  assert.deepEqual(cols(c[1]!), [
    'spiffe://cluster.local/ns/ambient-demo/sa/sa-n1-p1',
    '0a1b',
    '2024-05-02T10:00:00.000Z',
    'valid',
    '2024-05-01T22:00:00.000Z',
    '-',
  ]);
  const k = lines(formatDump('connections', DUMP, 'table'));
  assert.equal(k.length, 3);
  assert.deepEqual(cols(k[1]!), [
    '1',
    'ambient-demo/n1-p1',
    'outbound',
    'hbone',
    '10.244.1.2:40000',
    '10.244.2.2:8080',
    '-',
    '-',
    'spiffe://cluster.local/ns/ambient-demo/sa/sa-n2-p1',
    '5',
    '7',
    'closed',
    'eof',
  ]);
  assert.deepEqual(cols(k[2]!).slice(6, 8), ['10.244.1.3:8080', 'ambient-demo/echo']);
  const cfg = formatDump('config', DUMP, 'table');
  assert.match(cfg, /^node\s+n1$/m);
  assert.match(cfg, /^connections\s+2 \(1 open\)$/m);
  assert.match(cfg, /^workloads\s+4 \(1 enrolled here\)$/m);
});

test('-o json prints the section of the dump (config: all of it)', () => {
  assert.deepEqual(JSON.parse(formatDump('workloads', DUMP, 'json')), DUMP.workloads);
  assert.deepEqual(JSON.parse(formatDump('certs', DUMP, 'json')), DUMP.certificates);
  assert.deepEqual(JSON.parse(formatDump('connections', DUMP, 'json')), DUMP.connections);
  assert.deepEqual(JSON.parse(formatDump('config', DUMP, 'json')), DUMP);
  assert.deepEqual(JSON.parse(formatDump('services', {}, 'json')), []);
  assert.equal(lines(formatDump('workloads', {}, 'table')).length, 1, 'an empty dump is just the header');
});

test('table(): "-" for empty cells, no trailing blanks', () => {
  assert.equal(
    table(
      ['A', 'BB'],
      [
        ['x', null],
        ['yyy', ''],
      ],
    ),
    'A    BB\nx    -\nyyy  -\n',
  );
});

test('arguments: targets, -o, --node; bad ones are USAGE errors with a hint', async () => {
  for (const t of TARGETS) assert.equal(parseInspectArgs([t]).target, t);
  assert.deepEqual(parseInspectArgs(['maps', '-o', 'json', '--node', 'n1']), { target: 'maps', output: 'json', node: 'n1', bpffs: undefined, help: false });
  assert.equal(parseInspectArgs([]).target, null);
  for (const bad of [['bogus'], ['workloads', '-o', 'yaml'], ['workloads', '--what'], ['workloads', 'services'], ['maps', '-o']]) {
    await assert.rejects(runInspect(bad), (e: unknown) => isAmbientError(e) && e.code === 'USAGE' && e.hint.includes('inspect --help'), bad.join(' '));
  }
});

test('the CLI exits 2 on a bad target or -o, with the hint on stderr', () => {
  const cli = path.join(ROOT, 'dist', 'src', 'cli.js');
  for (const args of [
    ['inspect', 'nope'],
    ['inspect', 'workloads', '-o', 'xml'],
  ]) {
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /USAGE/);
    assert.match(r.stderr, /inspect --help/);
  }
  const h = spawnSync(process.execPath, [cli, 'inspect', '--help'], { encoding: 'utf8' });
  assert.equal(h.status, 0);
  for (const t of TARGETS) assert.ok(h.stdout.includes(t), t);
});

test('maps are decoded like bpftool "formatted": numbers, byte arrays, nested structs', () => {
  const ip = decodeBtfStyle('amb_ip', encodeIp('10.244.1.2'));
  assert.deepEqual(ip, { family: 2, pad: [0, 0, 0], addr: [10, 244, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] });
  const sa = decodeBtfStyle('amb_sockaddr', encodeSockaddr({ ip: '10.0.0.1', port: 8080 }));
  assert.deepEqual(sa, { ip: { family: 2, pad: [0, 0, 0], addr: [10, 0, 0, 1, ...Array(12).fill(0)] }, port: 8080, pad: 0 });
  const stats = Buffer.alloc(STRUCTS.amb_pod_stats.size);
  stats.writeBigUInt64LE(7n, 0);
  stats.writeBigUInt64LE(123456789n, 56);
  assert.deepEqual(decodeBtfStyle('amb_pod_stats', stats), {
    captured_out: 7,
    refused_out: 0,
    denied_out: 0,
    captured_in: 0,
    hbone_in: 0,
    refused_in: 0,
    denied_in: 0,
    bypass_in: 123456789,
  });
  const out = formatMaps(
    { amb_config: { pin: '/p/maps/amb_config', bpftool: 'bpftool map dump pinned /p/maps/amb_config', entries: [{ key: 0, value: { mark: 1337 } }] } },
    'table',
  );
  assert.match(out, /^amb_config \(1 entries\)\s+pin \/p\/maps\/amb_config$/m);
  assert.match(out, /^\s+\$ bpftool map dump pinned \/p\/maps\/amb_config$/m);
});
