/**
 * `ambientd inspect workloads|services|policies|certs|connections|maps|config`:
 * reads an agent's admin endpoint (/config_dump) and its pinned maps. In a
 * sandbox, --node picks the node (its netns and pins).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadNative } from '../datapath/native.js';
import type { NativeAddon } from '../datapath/native-api.js';
import { dumpMap } from '../datapath/datapath.js';
import { MAPS, STRUCTS, type MapName, type StructDesc } from '../datapath/codec.js';
import { getJsonInNetns } from '../util/netns-http.js';
import { AmbientError } from '../util/errors.js';
import type { ConfigDump } from '../agent/index.js';

const SANDBOX_STATE = '/run/ambientd-sandbox/state.json';

export const TARGETS = ['workloads', 'services', 'policies', 'certs', 'connections', 'maps', 'config'] as const;
export type Target = (typeof TARGETS)[number];
export type Output = 'json' | 'table';

/** Maps without BTF-dumpable values (sockhash): bpftool shows no "formatted" for them. */
export const SOCKHASH_MAPS: readonly MapName[] = ['amb_listeners', 'amb_sock_pairs'];

const HELP = `ambientd inspect TARGET [--node NAME] [--bpffs DIR] [-o json|table]

Targets (all but maps read GET /config_dump of the agent on 127.0.0.1:15000):
  workloads    pods of the model: namespace, name, IP, node, ambient, state, identity
  services     services: VIPs, ports, endpoints
  policies     AuthorizationPolicies: action, scope, status, rules enforced
  certs        workload certificates: identity, serial, expiry, state
  connections  open and recently closed connections: addresses, via, peer, bytes, state
  config       the whole config_dump (table: a summary)
  maps         every pinned BPF map, decoded with field names (no agent needed);
               -o json prints what \`bpftool -j map dump pinned <pin>\` shows as "formatted"

  --node NAME  a sandbox node (its netns and pins)
  -o           table (default) or json
`;

function usage(msg: string): AmbientError {
  return new AmbientError('USAGE', msg, 'run `ambientd inspect --help` (targets: ' + TARGETS.join(', ') + '; -o json|table)');
}

export interface InspectArgs {
  target: Target | null;
  output: Output;
  node?: string;
  bpffs?: string;
  help: boolean;
}

/** Parses `inspect` arguments; bad input -> AmbientError USAGE. */
export function parseInspectArgs(args: string[]): InspectArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: { node: { type: 'string' }, bpffs: { type: 'string' }, output: { type: 'string', short: 'o' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    throw usage((e as Error).message);
  }
  const { values, positionals } = parsed;
  const output = values.output ?? 'table';
  if (output !== 'json' && output !== 'table') throw usage(`-o must be json or table, got ${JSON.stringify(output)}`);
  if (positionals.length > 1) throw usage(`one target at a time, got ${positionals.map((p) => JSON.stringify(p)).join(' ')}`);
  const what = positionals[0];
  if (what !== undefined && !(TARGETS as readonly string[]).includes(what)) throw usage(`unknown inspect target ${JSON.stringify(what)}`);
  return { target: (what as Target | undefined) ?? null, output, node: values.node, bpffs: values.bpffs, help: values.help ?? false };
}

function sandboxNode(node: string | undefined): { netns: string | null; bpffs: string } {
  if (!node) return { netns: null, bpffs: '/sys/fs/bpf/ambientd' };
  let st: { nodes: Array<{ name: string; netns: string; netnsPath?: string; bpffsDir?: string }> } | null = null;
  try {
    st = JSON.parse(fs.readFileSync(SANDBOX_STATE, 'utf8'));
  } catch {
    /* not a sandbox */
  }
  const n = st?.nodes.find((x) => x.name === node);
  if (n) {
    return {
      netns: n.netnsPath ?? (n.netns.startsWith('/') ? n.netns : `/run/netns/${n.netns}`),
      bpffs: n.bpffsDir ?? `/sys/fs/bpf/ambientd-sandbox/${node}`,
    };
  }
  return { netns: null, bpffs: `/sys/fs/bpf/ambientd/${node}` };
}

const replacer = (_k: string, x: unknown): unknown => (typeof x === 'bigint' ? Number(x) : x);
const json = (v: unknown): string => JSON.stringify(v, replacer, 2);

// ---- tables ------------------------------------------------------------------

/** Left-aligned columns, two spaces apart; null/undefined/'' shown as "-". */
export function table(header: string[], rows: unknown[][]): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined || c === '' ? '-' : String(c))));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]!.length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...cells.map(line)].join('\n') + '\n';
}

type Obj = Record<string, unknown>;
const arr = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);
/** A config_dump as read: from an agent of this version (ConfigDump), or a loose one (another version, a recording). */
type DumpLike = Partial<ConfigDump> | Obj;

/** What -o json prints for a config_dump target: the section of the dump (config: all of it). */
export function section(target: Exclude<Target, 'maps'>, dump: DumpLike): unknown {
  switch (target) {
    case 'config':
      return dump;
    case 'certs':
      return dump.certificates ?? [];
    default:
      return dump[target] ?? [];
  }
}

/** Formats a config_dump target as a table or JSON. */
export function formatDump(target: Exclude<Target, 'maps'>, dump: DumpLike, output: Output): string {
  if (output === 'json') return json(section(target, dump)) + '\n';
  switch (target) {
    case 'workloads':
      return table(
        ['NAMESPACE', 'NAME', 'IP', 'NODE', 'AMBIENT', 'STATE', 'IDENTITY'],
        arr(dump.workloads).map((w) => [
          w.namespace,
          w.name,
          Array.isArray(w.ips) && w.ips.length > 1 ? w.ips.join(',') : w.ip,
          w.node,
          w.ambient ? 'yes' : 'no',
          w.error ? `${String(w.state)} (${String((w.error as Obj).code)})` : w.state,
          w.identity,
        ]),
      );
    case 'services':
      return table(
        ['NAMESPACE', 'NAME', 'VIPS', 'PORTS', 'ENDPOINTS'],
        arr(dump.services).map((s) => [
          s.namespace,
          s.name,
          arr(s.vips).join(','),
          arr(s.ports)
            .map(
              (p) =>
                `${String(p.port)}${p.targetPort !== undefined && p.targetPort !== p.port ? `->${String(p.targetPort)}` : ''}/${String(p.protocol ?? 'TCP')}`,
            )
            .join(','),
          arr(s.endpoints)
            .map((e) => `${String(e.ip)}${e.ready === false ? '(not ready)' : ''}`)
            .join(','),
        ]),
      );
    case 'policies':
      return table(
        ['NAMESPACE', 'NAME', 'ACTION', 'SCOPE', 'STATUS', 'RULES', 'ENFORCED', 'ERRORS'],
        arr(dump.policies).map((p) => [p.namespace, p.name, p.action, p.scope, p.status, p.rules, p.enforcedRules, arr(p.errors).length || '']),
      );
    case 'certs':
      return table(
        ['IDENTITY', 'SERIAL', 'NOT-AFTER', 'STATE', 'NEXT-RENEWAL', 'LAST-ERROR'],
        arr(dump.certificates).map((c) => [c.id, c.serial, c.notAfter, c.state, c.nextRenewal, c.lastError]),
      );
    case 'connections':
      return table(
        ['ID', 'POD', 'DIR', 'VIA', 'SRC', 'DST', 'ENDPOINT', 'SERVICE', 'PEER', 'SENT', 'RECEIVED', 'STATE', 'REASON'],
        arr(dump.connections).map((c) => [
          c.id,
          c.pod,
          c.direction,
          c.via,
          c.src,
          c.dst,
          c.endpoint,
          c.service,
          c.peerIdentity,
          c.bytesSent,
          c.bytesReceived,
          c.state,
          c.reason,
        ]),
      );
    case 'config': {
      const r = (dump.readiness ?? {}) as Obj;
      const conns = arr(dump.connections);
      const dp = (dump.datapath ?? null) as Obj | null;
      const rows: unknown[][] = [
        ['node', dump.node],
        ['pid', dump.pid],
        ['ready', r.ready === undefined ? null : r.ready ? 'yes' : `no (pending: ${arr(r.pending).join(', ')})`],
        ['workloads', `${arr(dump.workloads).length} (${arr(dump.workloads).filter((w) => w.state === 'enrolled').length} enrolled here)`],
        ['services', arr(dump.services).length],
        ['policies', arr(dump.policies).length],
        ['certificates', arr(dump.certificates).length],
        ['connections', `${conns.length} (${conns.filter((c) => c.state === 'open').length} open)`],
        ['pins', dp?.pins],
        ['acceleration', dp?.acceleration],
        [
          'counters',
          Object.entries((dump.counters ?? {}) as Obj)
            .map(([k, v]) => `${k}=${String(v)}`)
            .join(' '),
        ],
      ];
      return table(['FIELD', 'VALUE'], rows) + 'details: `ambientd inspect config -o json`\n';
    }
  }
}

// ---- maps ------------------------------------------------------------------

/**
 * Decodes a key/value like bpftool's BTF dumper ("formatted"): integers as
 * numbers, byte arrays as number arrays, nested structs as objects.
 */
export function decodeBtfStyle(t: string, b: Buffer, off = 0): unknown {
  if (t === 'u8') return b.readUInt8(off);
  if (t === 'u16') return b.readUInt16LE(off);
  if (t === 'u32') return b.readUInt32LE(off);
  if (t === 'u64') return Number(b.readBigUInt64LE(off));
  const d: StructDesc = STRUCTS[t as keyof typeof STRUCTS];
  const out: Record<string, unknown> = {};
  for (const f of d.fields) {
    const o = off + f.offset;
    switch (f.kind) {
      case 'ip':
        out[f.name] = decodeBtfStyle('amb_ip', b, o);
        break;
      case 'sockaddr':
        out[f.name] = decodeBtfStyle('amb_sockaddr', b, o);
        break;
      case 'bytes':
        out[f.name] = [...b.subarray(o, o + f.size)];
        break;
      default:
        out[f.name] = decodeBtfStyle(f.kind, b, o);
    }
  }
  return out;
}

/** Every entry of a map, decoded like bpftool's "formatted" output. */
export function dumpMapBtfStyle(native: NativeAddon, fd: number, name: MapName): Array<{ key: unknown; value: unknown }> {
  return dumpMap(native, fd, name, (t, b) => decodeBtfStyle(t, b));
}

export interface MapDump {
  pin: string;
  bpftool: string;
  entries: Array<{ key: unknown; value: unknown }>;
}

export function formatMaps(result: Record<string, MapDump>, output: Output): string {
  if (output === 'json') return json(result) + '\n';
  const lines: string[] = [];
  for (const [name, m] of Object.entries(result)) {
    lines.push(`${name} (${m.entries.length} entries)  pin ${m.pin}`, `  $ ${m.bpftool}`);
    for (const e of m.entries) lines.push(`  ${JSON.stringify(e.key, replacer)} => ${JSON.stringify(e.value, replacer)}`);
    lines.push('');
  }
  return lines.join('\n');
}

function readMaps(dir: string, output: Output): Record<string, MapDump> {
  const native = loadNative();
  const result: Record<string, MapDump> = {};
  for (const name of Object.keys(MAPS) as MapName[]) {
    const pin = path.join(dir, name);
    const fd = native.objGet(pin);
    if (fd < 0) continue;
    try {
      // json: bpftool's shape (numbers, byte arrays); table: readable (addresses as text)
      const entries = output === 'json' ? dumpMapBtfStyle(native, fd, name) : dumpMap(native, fd, name);
      result[name] = { pin, bpftool: `bpftool map dump pinned ${pin}`, entries };
    } finally {
      native.closeFd(fd);
    }
  }
  return result;
}

export async function runInspect(args: string[]): Promise<void> {
  const a = parseInspectArgs(args);
  if (a.help || !a.target) {
    process.stdout.write(HELP);
    return;
  }
  const where = sandboxNode(a.node);
  if (a.target === 'maps') {
    const dir = path.join(a.bpffs ?? where.bpffs, 'maps');
    if (!fs.existsSync(dir)) throw new AmbientError('USAGE', `no pinned maps under ${dir}`, 'pass --node or --bpffs of a running agent');
    process.stdout.write(formatMaps(readMaps(dir, a.output), a.output));
    return;
  }
  const dump = await getJsonInNetns<Partial<ConfigDump>>(where.netns, '127.0.0.1', 15000, '/config_dump').catch((e: Error) => {
    throw new AmbientError(
      'USAGE',
      `no agent answered on 127.0.0.1:15000${a.node ? ` of node ${a.node}` : ''}: ${e.message}`,
      'is the agent running? (`ambientd sandbox status`)',
    );
  });
  process.stdout.write(formatDump(a.target, dump, a.output));
}
