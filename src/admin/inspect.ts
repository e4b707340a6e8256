/**
 * `ambientd inspect config|maps`: reads an agent's admin endpoint and its
 * pinned maps. In a sandbox, --node picks the node (its netns and pins).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadNative } from '../datapath/native.js';
import { dumpMap } from '../datapath/datapath.js';
import { MAPS, type MapName } from '../datapath/codec.js';
import { getJsonInNetns } from '../util/netns-http.js';
import { AmbientError } from '../util/errors.js';

const SANDBOX_STATE = '/run/ambientd-sandbox/state.json';

function sandboxNode(node: string | undefined): { netns: string | null; bpffs: string } {
  if (!node) return { netns: null, bpffs: '/sys/fs/bpf/ambientd' };
  let st: { nodes: Array<{ name: string; netns: string }> } | null = null;
  try { st = JSON.parse(fs.readFileSync(SANDBOX_STATE, 'utf8')); } catch { /* not a sandbox */ }
  const n = st?.nodes.find((x) => x.name === node);
  if (n) return { netns: n.netns.startsWith('/') ? n.netns : `/run/netns/${n.netns}`, bpffs: `/sys/fs/bpf/ambientd-sandbox/${node}` };
  return { netns: null, bpffs: `/sys/fs/bpf/ambientd/${node}` };
}

const json = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x), 2);

export async function runInspect(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: { node: { type: 'string' }, bpffs: { type: 'string' }, output: { type: 'string', short: 'o' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    throw new AmbientError('USAGE', (e as Error).message, 'run `ambientd inspect --help`');
  }
  const { values, positionals } = parsed;
  const what = positionals[0];
  if (values.help || !what) {
    process.stdout.write('ambientd inspect config|maps [--node NAME] [--bpffs DIR] [-o json|table]\n  config: GET /config_dump of the agent\n  maps:   every pinned map, decoded with field names (what `bpftool map dump pinned <path>` shows)\n');
    return;
  }
  const output = values.output ?? 'table';
  if (output !== 'json' && output !== 'table') throw new AmbientError('USAGE', `-o must be json or table, got ${output}`, 'use -o json or -o table');
  const where = sandboxNode(values.node);
  if (what === 'config') {
    const dump = await getJsonInNetns<unknown>(where.netns, '127.0.0.1', 15000, '/config_dump').catch((e: Error) => {
      throw new AmbientError('USAGE', `no agent answered on 127.0.0.1:15000${values.node ? ` of node ${values.node}` : ''}: ${e.message}`, 'is the agent running? (`ambientd sandbox status`)');
    });
    process.stdout.write(json(dump) + '\n');
    return;
  }
  if (what === 'maps') {
    const dir = path.join(values.bpffs ?? where.bpffs, 'maps');
    if (!fs.existsSync(dir)) throw new AmbientError('USAGE', `no pinned maps under ${dir}`, 'pass --node or --bpffs of a running agent');
    const native = loadNative();
    const result: Record<string, { pin: string; entries: unknown[] }> = {};
    for (const name of Object.keys(MAPS) as MapName[]) {
      const pin = path.join(dir, name);
      const fd = native.objGet(pin);
      if (fd < 0) continue;
      try { result[name] = { pin, entries: dumpMap(native, fd, name) }; } finally { native.closeFd(fd); }
    }
    if (output === 'json') { process.stdout.write(json(result) + '\n'); return; }
    for (const [name, m] of Object.entries(result)) {
      process.stdout.write(`${name} (${m.entries.length} entries)  bpftool map dump pinned ${m.pin}\n`);
      for (const e of m.entries) process.stdout.write(`  ${JSON.stringify(e, (_k, x) => (typeof x === 'bigint' ? Number(x) : x))}\n`);
    }
    return;
  }
  throw new AmbientError('USAGE', `unknown inspect target ${JSON.stringify(what)}`, 'use `inspect config` or `inspect maps`');
}
