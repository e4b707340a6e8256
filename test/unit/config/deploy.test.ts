// deploy/ambientd.yaml against the settings table: the ConfigMap's agent.yaml
// sets only known keys, the DaemonSet passes only known flags, and together
// they give a valid config (what the agent does at start). The comments'
// flags are real flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { parseConfig } from '../../../src/config/config.js';
import { agentFlagOptions, parseAgentArgs } from '../../../src/config/flags.js';
import { entries, isGroup, SETTINGS } from '../../../src/config/settings.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const FILE = path.join(ROOT, 'deploy', 'ambientd.yaml');
// parsed YAML/JSON of any shape, read field by field by the assertions
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;

const docs = parseAllDocuments(fs.readFileSync(FILE, 'utf8'));
const objs = docs.map((d) => d.toJS() as Obj).filter(Boolean);
const configMap = objs.find((o) => o.kind === 'ConfigMap')!;
const agentYaml: string = configMap.data['agent.yaml'];
const agent = objs.find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'ambientd')!.spec.template.spec.containers[0];

test('the ConfigMap sets only settings of the table (groups member by member)', () => {
  const file = parseYaml(agentYaml) as Obj;
  const keys = new Set(entries().map((e) => e.key));
  const groups = new Set(
    Object.entries(SETTINGS)
      .filter(([, s]) => isGroup(s))
      .map(([field, s]) => s.key ?? field),
  );
  for (const [k, v] of Object.entries(file)) {
    if (groups.has(k)) for (const m of Object.keys(v as Obj)) assert.ok(keys.has(`${k}.${m}`), `agent.yaml: ${k}.${m} is a setting`);
    else assert.ok(keys.has(k), `agent.yaml: ${k} is a setting`);
  }
});

test('the DaemonSet passes known flags; with the ConfigMap they make a valid config; node and nodeIP only as flags', () => {
  const args: string[] = agent.args;
  assert.equal(args[0], 'agent');
  const known = new Set(Object.keys(agentFlagOptions()).map((f) => `--${f}`));
  for (const a of args.slice(1)) if (a.startsWith('--')) assert.ok(known.has(a), `${a} is a flag of ambientd agent`);
  const argv = args.slice(1).map((a) => a.replace('$(NODE_NAME)', 'node-1').replace('$(NODE_IP)', '10.0.0.1'));
  const { config, overrides } = parseAgentArgs(argv);
  assert.equal(config, '/etc/ambientd/agent.yaml');
  const file = parseYaml(agentYaml) as Obj;
  // the ConfigMap's comment: "node and nodeIP are not here: they differ per node and come from the downward API"
  assert.deepEqual(Object.keys(overrides).sort(), ['node', 'nodeIP']);
  for (const k of Object.keys(overrides)) assert.ok(!(k in file), `${k} is set by a flag, not in the ConfigMap`);
  const cfg = parseConfig({ ...file, ...overrides }, 'agent.yaml');
  assert.equal(cfg.node, 'node-1');
  assert.equal(cfg.nodeIP, '10.0.0.1');
});

test('flags named in the ConfigMap comments are flags of ambientd agent', () => {
  const start = fs
    .readFileSync(FILE, 'utf8')
    .split(/^---$/m)
    .find((d) => /^kind: ConfigMap$/m.test(d))!;
  const comments = start
    .split('\n')
    .filter((l) => /^\s*#/.test(l))
    .join('\n');
  const flags = [...comments.matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)].map((m) => m[1]!);
  assert.ok(flags.length > 0, 'the comments name flags');
  const known = new Set(Object.keys(agentFlagOptions()));
  for (const f of flags) assert.ok(known.has(f), `--${f} in a ConfigMap comment`);
});
