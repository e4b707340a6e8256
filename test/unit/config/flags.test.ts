// The settings table -> the flags of `ambientd agent` (each flag sets its
// key) and its --help (every setting listed with its flag, key and default).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, type AgentConfig } from '../../../src/config/config.js';
import { agentFlagOptions, flagOverrides, parseAgentArgs, settingsHelp } from '../../../src/config/flags.js';
import { Derived, entries, Required, SETTINGS } from '../../../src/config/settings.js';
import { AmbientError } from '../../../src/util/errors.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');

/**
 * The command line of every setting (by AgentConfig path): the flag as users
 * type it (renaming one breaks scripts and manifests) and the value it gives.
 * None is the default, so a flag that sets nothing or the wrong key is seen.
 * A setting added to the table needs a line here.
 */
const SAMPLES: Record<string, [string[], unknown]> = {
  node: [['--node', 'node-7'], 'node-7'],
  nodeIP: [['--node-ip', '10.1.2.3'], '10.1.2.3'],
  source: [['--source', 'kubernetes'], 'kubernetes'],
  workloads: [['--workloads', '/tmp/w'], '/tmp/w'],
  rootNamespace: [['--root-namespace', 'mesh-root'], 'mesh-root'],
  cgroupRoot: [['--cgroup-root', '/cg'], '/cg'],
  agentCgroup: [['--agent-cgroup', '/cg/agent'], '/cg/agent'],
  bpffsDir: [['--bpffs', '/sys/fs/bpf/x'], '/sys/fs/bpf/x'],
  bpfObject: [['--bpf-object', '/x.o'], '/x.o'],
  'ports.outbound': [['--outbound-port', '16001'], 16001],
  'ports.inbound': [['--inbound-port', '16006'], 16006],
  'ports.hbone': [['--hbone-port', '16008'], 16008],
  'ports.admin': [['--admin-port', '16000'], 16000],
  'ports.metrics': [['--metrics-port', '16020'], 16020],
  'ports.readiness': [['--readiness-port', '16021'], 16021],
  adminAddress: [['--admin-address', '127.0.0.2'], '127.0.0.2'],
  metricsAddress: [['--metrics-address', '::'], '::'],
  mark: [['--mark', '0x10'], 16],
  clientAddress: [['--client-address', 'pod'], 'pod'],
  workers: [['--workers', '3'], 3],
  acceleration: [['--acceleration', 'sockmap'], 'sockmap'],
  trustDomain: [['--trust-domain', 'example.org'], 'example.org'],
  caDir: [['--ca-dir', '/ca'], '/ca'],
  certLifetimeMs: [['--cert-lifetime', '90s'], 90_000],
  caAddress: [['--ca-address', 'ambientd-ca.ambientd-system.svc:15012'], 'ambientd-ca.ambientd-system.svc:15012'],
  caRootCert: [['--ca-root-cert', '/etc/ca/root-cert.pem'], '/etc/ca/root-cert.pem'],
  caTokenFile: [['--ca-token-file', '/run/token'], '/run/token'],
  clusterId: [['--cluster-id', 'Kubernetes'], 'Kubernetes'],
  readyFile: [['--ready-file', '/tmp/ready'], '/tmp/ready'],
  handoverSocket: [['--handover-socket', ''], null],
  drainTimeoutMs: [['--drain-timeout', '1h'], 3_600_000],
  handoverTimeoutMs: [['--handover-timeout', '500ms'], 500],
  peerTimeoutMs: [['--peer-timeout', '2m'], 120_000],
  'limits.receiveBuffer': [['--limit', 'receiveBuffer=8MiB'], 8 << 20],
  'limits.streamWindow': [['--limit', 'streamWindow=2MiB'], 2 << 20],
  'limits.minStreamWindow': [['--limit', 'minStreamWindow=32KiB'], 32 << 10],
  'limits.maxStreamsPerSession': [['--limit', 'maxStreamsPerSession=50'], 50],
  'limits.maxSessionsPerPeer': [['--limit', 'maxSessionsPerPeer=4'], 4],
  'limits.maxHandshakes': [['--limit', 'maxHandshakes=10'], 10],
  'limits.maxPendingDials': [['--limit', 'maxPendingDials=100'], 100],
  'limits.socketBuffer': [['--limit', 'socketBuffer=128KiB'], 128 << 10],
  logLevel: [['--log-level', 'debug'], 'debug'],
  accessLog: [['--access-log', 'off'], 'off'],
};

const get = (c: AgentConfig, field: string): unknown => field.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], c);

/** The argv that sets `field` to its sample; the table's flag is that one. */
function argvFor(field: string): string[] {
  const e = entries().find((x) => x.field === field)!;
  const argv = SAMPLES[field]![0];
  const [flag, value] = argv as [string, string];
  assert.equal(e.flag, flag === '--limit' ? `--limit ${value.split('=')[0]}=V` : flag, `${field}: its flag`);
  return argv;
}

test('every setting has a flag, and each flag sets its own key (and nothing else)', () => {
  const fields = entries().map((e) => e.field);
  assert.deepEqual(Object.keys(SAMPLES).sort(), [...fields].sort(), 'a sample per setting');
  const base = loadConfig(null, { node: 'n1', workloads: '/w' });
  for (const field of fields) {
    const { overrides } = parseAgentArgs(argvFor(field));
    const c = loadConfig(null, { node: 'n1', workloads: '/w', ...overrides });
    assert.deepEqual(get(c, field), SAMPLES[field]![1], `${argvFor(field).join(' ')} sets ${field}`);
    assert.notDeepEqual(get(base, field), SAMPLES[field]![1], `${field}: the sample is not the default`);
    for (const other of fields) {
      if (other === field || (field === 'node' && other === 'bpffsDir')) continue; // bpffsDir's default follows node
      assert.deepEqual(get(c, other), get(base, other), `${argvFor(field).join(' ')} leaves ${other} alone`);
    }
  }
});

test('flags: all at once, the file keys they set, group members merged, --limit repeatable', () => {
  const argv = Object.keys(SAMPLES).flatMap(argvFor);
  const { help, config, overrides } = parseAgentArgs(['--config', '/etc/a.yaml', ...argv]);
  assert.equal(help, false);
  assert.equal(config, '/etc/a.yaml');
  assert.deepEqual(
    Object.keys(overrides).sort(),
    Object.entries(SETTINGS)
      .map(([field, s]) => s.key ?? field)
      .sort(),
  );
  assert.equal(overrides.drainTimeout, '1h', 'durations keep their text: the file reads them');
  assert.deepEqual(overrides.ports, { outbound: 16001, inbound: 16006, hbone: 16008, admin: 16000, metrics: 16020, readiness: 16021 });
  assert.equal(Object.keys(overrides.limits as object).length, 8);
  const c = loadConfig(null, overrides);
  for (const field of Object.keys(SAMPLES)) assert.deepEqual(get(c, field), SAMPLES[field]![1], field);
  assert.deepEqual(parseAgentArgs([]), { help: false, config: null, overrides: {} });
  assert.equal(parseAgentArgs(['-h']).help, true);
  assert.equal(parseAgentArgs(['--mark', '1337']).overrides.mark, 1337);
  // parseArgs options: one per flag, --limit repeatable
  const opts = agentFlagOptions();
  assert.deepEqual(opts.limit, { type: 'string', multiple: true });
  assert.equal(Object.keys(opts).length, 2 + entries().filter((e) => e.flag && !e.flag.includes(' ')).length + 1);
  assert.deepEqual(flagOverrides({ 'admin-port': '1', unrelated: 'x' }), { ports: { admin: 1 } });
});

test('bad flags: USAGE errors that name the flag, with the flag meant when it is a near miss', () => {
  const usage = (argv: string[], re: RegExp, hint?: RegExp): void => {
    assert.throws(
      () => parseAgentArgs(argv),
      (e: unknown) => e instanceof AmbientError && e.code === 'USAGE' && re.test(e.message) && (!hint || hint.test(e.hint)) && /agent --help/.test(e.hint),
      argv.join(' '),
    );
  };
  usage(['--bogus'], /Unknown option '--bogus'/);
  usage(['--nodeIP', '1.2.3.4'], /--nodeIP/, /did you mean --node-ip\?/);
  usage(['--drainTimeout', '5s'], /--drainTimeout/, /did you mean --drain-timeout\?/);
  usage(['--receiveBuffer', '1'], /--receiveBuffer/, /did you mean --limit receiveBuffer=V\?/);
  usage(['--ports.admin', '1'], /--ports\.admin/, /did you mean --admin-port\?/);
  usage(['--node'], /argument missing/);
  usage(['positional'], /positional/);
  usage(['--admin-port', 'x'], /--admin-port must be an integer, got "x"/);
  usage(['--mark', ''], /--mark must be an integer/);
  usage(['--limit', 'maxHandshakes=many'], /--limit maxHandshakes must be an integer, got "many"/);
  usage(['--limit', 'receiveBuffer'], /--limit must be KEY=VALUE, got "receiveBuffer"/, /KEY is one of receiveBuffer, /);
  usage(['--limit', '=1'], /--limit must be KEY=VALUE/);
  // values a flag can carry but the setting refuses: CONFIG_INVALID from the settings check, naming the flag
  assert.throws(
    () => loadConfig(null, { node: 'n1', workloads: '/w', ...parseAgentArgs(['--limit', 'nope=1']).overrides }),
    (e: unknown) => e instanceof AmbientError && e.code === 'CONFIG_INVALID' && /field "limits\.nope" is not a known limit/.test(e.message),
  );
  assert.throws(
    () => loadConfig(null, { node: 'n1', workloads: '/w', ...parseAgentArgs(['--admin-port', '0']).overrides }),
    (e: unknown) => e instanceof AmbientError && /<flags>: field "ports\.admin"/.test(e.message) && /--admin-port/.test(e.hint),
  );
});

test('--help lists every setting from the table: flag, argument, file key, allowed values, default', () => {
  const help = settingsHelp();
  const flat = help.replace(/\s+/g, ' ');
  for (const e of entries()) {
    const s = e.setting;
    if (s.flag) {
      assert.match(help, new RegExp(`^  --${s.flag} ${s.arg} +${e.key.replace('.', '\\.')}\\b`, 'm'), `${e.key}: "--${s.flag} ${s.arg}  ${e.key}..."`);
    } else {
      // a member of a KEY=VALUE group: "name=default  help"
      const name = e.key.split('.').pop()!;
      assert.match(help, new RegExp(`^ +${name}=\\S+ +\\S`, 'm'), `${e.key} listed under ${e.flag}`);
    }
    for (const v of s.kind.values ?? []) assert.ok(flat.includes(v), `${e.key}: value ${v}`);
    assert.ok(flat.includes(s.help.replace(/\s+/g, ' ')), `${e.key}: its help`);
    if (s.shown !== undefined) assert.ok(flat.includes(s.shown), `${e.key}: ${s.shown}`);
    else if (s.default instanceof Required) assert.ok(flat.includes(`${e.key}: ${s.help} (required)`), `${e.key}: required`);
    else if (!(s.default instanceof Derived) && s.default !== null) {
      const shown = s.kind.format ? s.kind.format(s.default) : String(s.default);
      assert.ok(s.flag ? flat.includes(`[${shown}]`) : flat.includes(`${e.key.split('.').pop()}=${shown} `), `${e.key}: default ${shown}`);
    }
  }
  assert.match(help, /^ {2}--limit K=V +limits\.K: /m);
  for (const line of help.split('\n')) assert.ok(line.length <= 100, `at most 100 columns: ${line}`);
  // defaults as a file would write them
  assert.match(flat, /--drain-timeout D drainTimeout: .* \[30s\]/);
  assert.match(flat, /--cert-lifetime D certLifetime: .* \[24h\]/);
  assert.match(flat, /--mark N mark: .* \[0x539\]/);
  assert.match(flat, /receiveBuffer=32MiB /);
});

test('`ambientd agent --help` prints the settings, the --config flag and the agent notes', () => {
  const r = spawnSync(process.execPath, [CLI, 'agent', '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.includes(settingsHelp()));
  assert.match(r.stdout, /^ {2}--config FILE /m);
  assert.match(r.stdout, /^Restart: /m);
  const bad = spawnSync(process.execPath, [CLI, 'agent', '--nodeIP', 'x'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /USAGE: Unknown option '--nodeIP'\n {2}hint: did you mean --node-ip\?/);
});
