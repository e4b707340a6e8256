/**
 * Kernel-requirements audit of the compiled BPF object (bpf/ambient.bpf.o).
 *
 * Everything is read from the object, not from the C source:
 *  - programs: ELF sections with code (`llvm-objdump -d`), mapped to program
 *    type / attach type by their libbpf section name;
 *  - helpers: `call N` instructions (raw insn, src_reg 0 = helper; src_reg 1
 *    is a bpf-to-bpf call and src_reg 2 a kfunc, both reported separately);
 *  - maps: the BTF `.maps` DATASEC (`bpftool -j btf dump file`), where the
 *    `type` member of each map definition is `int (*)[N]` and N is the map type;
 *  - which program uses which map: relocations (`llvm-objdump -r`).
 * The attach mechanisms are those the agent uses (native/ linkCgroup,
 * linkNetns, attachSkMsg).
 *
 * Sources for the versions (first mainline release containing the commit):
 *  - helper ids: include/uapi/linux/bpf.h __BPF_FUNC_MAPPER order (stable ABI);
 *    the unit test cross-checks this table against /usr/include/linux/bpf.h.
 *  - helper introduction: iovisor/bcc docs/kernel-versions.md ("Helpers").
 *  - program-type availability: the commit that added the helper to the
 *    program type's *_func_proto in net/core/filter.c (cited per entry).
 *  - program/attach/map types: bcc docs/kernel-versions.md plus the commits
 *    cited per entry.
 * An item the tables do not know is reported as `unknown` (the CLI exits 3 and
 * the unit test fails), so a new helper, program or map type in the BPF code
 * must be added here with its version.
 *
 * CLI: node dist/tools/kernel-audit/kernel-audit.js [--json] [--max 5.10] [object]
 * Exit 0 = required path fits --max, 1 = a required item needs a newer
 * kernel, 2 = usage / tool error, 3 = unknown items in the object.
 */
import { execFileSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { AmbientError } from '../../src/util/errors.js';

export type Version = string;

interface ProgSpec {
  progType: string;
  attachType: string;
  since: Version;
  ref: string;
  /** on the required path of the agent */
  required: boolean;
  /** attach mechanism the agent uses */
  attach: { how: string; since: Version; ref: string };
  note?: string;
}

const LINK_CGROUP = {
  how: 'bpf_link (BPF_LINK_CREATE on a cgroup fd)',
  since: '5.7',
  ref: 'af6eea57437a "bpf: Implement bpf_link-based cgroup BPF program attachment"',
};

/** libbpf section name -> program. */
export const PROGRAMS: Record<string, ProgSpec> = {
  'cgroup/connect4': {
    progType: 'cgroup_sock_addr',
    attachType: 'BPF_CGROUP_INET4_CONNECT',
    since: '4.17',
    ref: 'd74bad4e74ee "bpf: Hooks for sys_connect"',
    required: true,
    attach: LINK_CGROUP,
  },
  'cgroup/connect6': {
    progType: 'cgroup_sock_addr',
    attachType: 'BPF_CGROUP_INET6_CONNECT',
    since: '4.17',
    ref: 'd74bad4e74ee "bpf: Hooks for sys_connect"',
    required: true,
    attach: LINK_CGROUP,
    note: 'dual-stack sockets: v4-mapped captured like IPv4, native IPv6 to the IPv6 outbound listener',
  },
  'cgroup/bind4': {
    progType: 'cgroup_sock_addr',
    attachType: 'BPF_CGROUP_INET4_BIND',
    since: '4.17',
    ref: '4fbac77d2d09 "bpf: Hooks for sys_bind"',
    required: true,
    attach: LINK_CGROUP,
    note: "the agent's ports in the pod are refused to apps (they cannot join its SO_REUSEPORT groups)",
  },
  'cgroup/bind6': {
    progType: 'cgroup_sock_addr',
    attachType: 'BPF_CGROUP_INET6_BIND',
    since: '4.17',
    ref: '4fbac77d2d09 "bpf: Hooks for sys_bind"',
    required: true,
    attach: LINK_CGROUP,
    note: "the agent's ports in the pod are refused to apps (IPv6 and dual-stack sockets)",
  },
  'cgroup/getpeername4': {
    progType: 'cgroup_sock_addr',
    attachType: 'BPF_CGROUP_INET4_GETPEERNAME',
    since: '5.8',
    ref: '1b66d253610c "bpf: Add get{peer,sock}name attach types for sock_addr"',
    required: false,
    attach: LINK_CGROUP,
    note: 'optional: original destination via getpeername()',
  },
  'cgroup/getpeername6': {
    progType: 'cgroup_sock_addr',
    attachType: 'BPF_CGROUP_INET6_GETPEERNAME',
    since: '5.8',
    ref: '1b66d253610c "bpf: Add get{peer,sock}name attach types for sock_addr"',
    required: false,
    attach: LINK_CGROUP,
    note: 'optional: original destination via getpeername() on dual-stack sockets',
  },
  sockops: {
    progType: 'sock_ops',
    attachType: 'BPF_CGROUP_SOCK_OPS',
    since: '4.13',
    ref: '40304b2a1567 "bpf: BPF support for sock_ops"',
    required: true,
    attach: LINK_CGROUP,
  },
  sk_msg: {
    progType: 'sk_msg',
    attachType: 'BPF_SK_MSG_VERDICT',
    since: '4.17',
    ref: '4f738adba30a "bpf: create tcp_bpf_ulp allowing BPF to monitor socket TX/RX data"',
    required: false,
    attach: {
      how: 'bpf_prog_attach to a sockhash map fd',
      since: '4.18',
      ref: '81110384441a "bpf: sockmap, add hash map support" (BPF_SK_MSG_VERDICT on a sockmap: 4.17)',
    },
    note: 'optional: local socket-to-socket redirect',
  },
  sk_lookup: {
    progType: 'sk_lookup',
    attachType: 'BPF_SK_LOOKUP',
    since: '5.9',
    ref: 'e9ddbb7707ff "bpf: Introduce SK_LOOKUP program type with a dedicated attach point"',
    required: true,
    attach: { how: 'bpf_link on a netns fd', since: '5.9', ref: '7f045a49fee0 netns bpf_link is 5.8 (flow_dissector); BPF_SK_LOOKUP exists from 5.9' },
    note: 'the section holds amb_sk_lookup (required) and amb_sk_lookup_lo, which also reads bpf_sk_lookup.ingress_ifindex (5.17, "bpf: Add ingress_ifindex to bpf_sk_lookup"; a context field, not seen by this audit): the agent loads it only where the verifier accepts it (client-address preservation), else falls back',
  },
};

interface HelperSpec {
  name: string;
  since: Version;
  /** availability per program type (only where the audit knows it) */
  progTypes: Record<string, { since: Version; ref: string }>;
}

const BASE = (pt: string, since: Version): [string, { since: Version; ref: string }] => [
  pt,
  { since, ref: "bpf_base_func_proto, from the program type's introduction" },
];
const ANCESTOR_CG = '0f09abd105da "bpf: Enable bpf cgroup hooks to retrieve cgroup v2 and ancestor id"';
const SOCK_LOOKUP_SOCK_ADDR = '6c49e65eabf5 "bpf: Support socket lookup in CGROUP_SOCK_ADDR progs"';
const SK_LOOKUP_PROG = 'e9ddbb7707ff (sk_lookup_func_proto)';

/** helper id (uapi __BPF_FUNC_MAPPER order) -> helper. */
export const HELPERS: Record<number, HelperSpec> = {
  1: {
    name: 'map_lookup_elem',
    since: '3.19',
    progTypes: Object.fromEntries([BASE('cgroup_sock_addr', '4.17'), BASE('sock_ops', '4.13'), BASE('sk_msg', '4.17'), BASE('sk_lookup', '5.9')]),
  },
  2: {
    name: 'map_update_elem',
    since: '3.19',
    progTypes: Object.fromEntries([BASE('cgroup_sock_addr', '4.17'), BASE('sock_ops', '4.13'), BASE('sk_msg', '4.17'), BASE('sk_lookup', '5.9')]),
  },
  3: {
    name: 'map_delete_elem',
    since: '3.19',
    progTypes: Object.fromEntries([BASE('cgroup_sock_addr', '4.17'), BASE('sock_ops', '4.13'), BASE('sk_msg', '4.17'), BASE('sk_lookup', '5.9')]),
  },
  5: {
    name: 'ktime_get_ns',
    since: '4.1',
    progTypes: Object.fromEntries([BASE('sock_ops', '4.13'), BASE('cgroup_sock_addr', '4.17'), BASE('sk_msg', '4.17'), BASE('sk_lookup', '5.9')]),
  },
  46: {
    name: 'get_socket_cookie',
    since: '4.12',
    progTypes: {
      cgroup_sock_addr: { since: '4.19', ref: 'd692f1138a4b "bpf: Support bpf_get_socket_cookie in more prog types"' },
      sock_ops: { since: '4.19', ref: 'd692f1138a4b "bpf: Support bpf_get_socket_cookie in more prog types"' },
    },
  },
  59: {
    name: 'sock_ops_cb_flags_set',
    since: '4.16',
    progTypes: {
      sock_ops: { since: '4.16', ref: 'b13d88072172 "bpf: Adds field bpf_sock_ops_cb_flags to tcp_sock" (BPF_SOCK_OPS_STATE_CB: d44874910a26, 4.16)' },
    },
  },
  70: { name: 'sock_hash_update', since: '4.18', progTypes: { sock_ops: { since: '4.18', ref: '81110384441a "bpf: sockmap, add hash map support"' } } },
  71: { name: 'msg_redirect_hash', since: '4.18', progTypes: { sk_msg: { since: '4.18', ref: '81110384441a "bpf: sockmap, add hash map support"' } } },
  80: { name: 'get_current_cgroup_id', since: '4.18', progTypes: { cgroup_sock_addr: { since: '5.7', ref: ANCESTOR_CG } } },
  84: { name: 'sk_lookup_tcp', since: '4.20', progTypes: { cgroup_sock_addr: { since: '5.2', ref: SOCK_LOOKUP_SOCK_ADDR } } },
  86: {
    name: 'sk_release',
    since: '4.20',
    progTypes: { cgroup_sock_addr: { since: '5.2', ref: SOCK_LOOKUP_SOCK_ADDR }, sk_lookup: { since: '5.9', ref: SK_LOOKUP_PROG } },
  },
  123: { name: 'get_current_ancestor_cgroup_id', since: '5.7', progTypes: { cgroup_sock_addr: { since: '5.7', ref: ANCESTOR_CG } } },
  124: { name: 'sk_assign', since: '5.7', progTypes: { sk_lookup: { since: '5.9', ref: SK_LOOKUP_PROG } } },
};

/** map type id (enum bpf_map_type) -> map type. */
export const MAP_TYPES: Record<number, { name: string; since: Version; ref: string }> = {
  1: { name: 'hash', since: '3.19', ref: '0f8e4bd8a1fc "bpf: add hashtable type of eBPF maps"' },
  2: { name: 'array', since: '3.19', ref: '28fbcfa08d8e "bpf: add array type of eBPF maps"' },
  9: { name: 'lru_hash', since: '4.10', ref: '29ba732acbee "bpf: Add BPF_MAP_TYPE_LRU_HASH"' },
  18: { name: 'sockhash', since: '4.18', ref: '81110384441a "bpf: sockmap, add hash map support"' },
};

export interface AuditItem {
  kind: 'program' | 'attach' | 'helper' | 'map';
  name: string;
  /** program section / map users */
  context: string;
  since: Version;
  required: boolean;
  ref: string;
  note?: string;
}

export interface AuditResult {
  object: string;
  max: Version;
  items: AuditItem[];
  /** things in the object the tables do not know */
  unknown: string[];
  /** highest version among required items */
  requiredMax: Version;
  /** required items newer than `max` */
  violations: AuditItem[];
}

export function parseVersion(v: string): [number, number] {
  const m = /^(\d+)\.(\d+)$/.exec(v.trim());
  if (!m) throw new AmbientError('USAGE', `bad kernel version "${v}" (want e.g. 5.10)`, 'give a kernel version as MAJOR.MINOR, e.g. --max 5.10');
  return [Number(m[1]), Number(m[2])];
}

export function cmpVersion(a: Version, b: Version): number {
  const [a1, a2] = parseVersion(a);
  const [b1, b2] = parseVersion(b);
  return a1 !== b1 ? a1 - b1 : a2 - b2;
}

const maxVersion = (...vs: Version[]): Version => vs.reduce((m, v) => (cmpVersion(v, m) > 0 ? v : m));

export interface ObjectFacts {
  /** section -> helper ids called (sorted, unique) */
  helpers: Map<string, number[]>;
  /** section -> other call kinds found (bpf-to-bpf, kfunc) */
  otherCalls: Map<string, string[]>;
  /** map name -> map type id */
  maps: Map<string, number>;
  /** section -> map names referenced */
  mapUsers: Map<string, Set<string>>;
}

function run(tool: string, args: string[]): string {
  return execFileSync(tool, args, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Parses `llvm-objdump -d` (with raw instruction bytes). */
export function parseDisassembly(text: string): Pick<ObjectFacts, 'helpers' | 'otherCalls'> {
  const helpers = new Map<string, number[]>();
  const otherCalls = new Map<string, string[]>();
  let section: string | undefined;
  for (const line of text.split('\n')) {
    const s = /^Disassembly of section (.+):$/.exec(line);
    if (s) {
      section = s[1]!;
      if (section !== '.text') helpers.set(section, []);
      continue;
    }
    // "      9:	85 00 00 00 01 00 00 00	call 1"
    const c = /^\s*\d+:\s+85 ([0-9a-f]{2})(?: [0-9a-f]{2}){6}\s+call (-?\w+)/.exec(line);
    if (!c || !section) continue;
    const src = parseInt(c[1]!, 16) >> 4;
    if (src === 0) {
      const list = helpers.get(section) ?? [];
      const id = Number(c[2]);
      if (!list.includes(id)) list.push(id);
      helpers.set(section, list);
    } else {
      const list = otherCalls.get(section) ?? [];
      list.push(src === 1 ? `bpf-to-bpf call ${c[2]}` : src === 2 ? `kfunc call ${c[2]}` : `call src_reg=${src} ${c[2]}`);
      otherCalls.set(section, list);
    }
  }
  for (const l of helpers.values()) l.sort((a, b) => a - b);
  return { helpers, otherCalls };
}

interface BtfType {
  id: number;
  kind: string;
  name?: string;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number }>;
  vars?: Array<{ type_id: number }>;
}

/** Map name -> map type id, from the BTF `.maps` DATASEC. */
export function parseBtfMaps(json: string): Map<string, number> {
  const types = (JSON.parse(json) as { types: BtfType[] }).types;
  const byId = new Map(types.map((t) => [t.id, t]));
  const resolve = (id: number): BtfType => {
    let t = byId.get(id)!;
    while (t && (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE')) t = byId.get(t.type_id!)!;
    return t;
  };
  const out = new Map<string, number>();
  const sec = types.find((t) => t.kind === 'DATASEC' && t.name === '.maps');
  for (const v of sec?.vars ?? []) {
    const variable = byId.get(v.type_id)!;
    const def = resolve(variable.type_id!);
    const member = def.members?.find((m) => m.name === 'type');
    const ptr = member && resolve(member.type_id);
    const arr = ptr?.kind === 'PTR' ? resolve(ptr.type_id!) : undefined;
    out.set(variable.name!, arr?.kind === 'ARRAY' ? arr.nr_elems! : -1);
  }
  return out;
}

/** Parses `llvm-objdump -r`: section -> referenced symbols. */
export function parseRelocations(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  let section: string | undefined;
  for (const line of text.split('\n')) {
    const s = /^RELOCATION RECORDS FOR \[(.+)\]:$/.exec(line);
    if (s) {
      section = s[1]!;
      continue;
    }
    const r = /^[0-9a-f]+\s+\S+\s+(\S+)$/.exec(line.trim());
    if (r && section) {
      if (!out.has(section)) out.set(section, new Set());
      out.get(section)!.add(r[1]!);
    }
  }
  return out;
}

export function readObject(obj: string): ObjectFacts {
  const objdump = process.env.LLVM_OBJDUMP ?? 'llvm-objdump';
  const bpftool = process.env.BPFTOOL ?? 'bpftool';
  const dis = parseDisassembly(run(objdump, ['-d', obj]));
  const maps = parseBtfMaps(run(bpftool, ['-j', 'btf', 'dump', 'file', obj]));
  const relocs = parseRelocations(run(objdump, ['-r', obj]));
  const mapUsers = new Map<string, Set<string>>();
  for (const [sec, syms] of relocs) if (dis.helpers.has(sec)) mapUsers.set(sec, new Set([...syms].filter((s) => maps.has(s))));
  return { ...dis, maps, mapUsers };
}

export function audit(facts: ObjectFacts, opts: { max?: Version; object?: string } = {}): AuditResult {
  const max = opts.max ?? '5.10';
  parseVersion(max);
  const items: AuditItem[] = [];
  const unknown: string[] = [];
  const requiredSections = new Set<string>();

  for (const [sec, ids] of facts.helpers) {
    const p = PROGRAMS[sec];
    if (!p) {
      unknown.push(`program section "${sec}"`);
      continue;
    }
    if (p.required) requiredSections.add(sec);
    items.push({
      kind: 'program',
      name: `${p.progType}/${p.attachType}`,
      context: sec,
      since: p.since,
      required: p.required,
      ref: p.ref,
      ...(p.note ? { note: p.note } : {}),
    });
    items.push({ kind: 'attach', name: p.attach.how, context: sec, since: maxVersion(p.attach.since, p.since), required: p.required, ref: p.attach.ref });
    for (const other of facts.otherCalls.get(sec) ?? []) unknown.push(`${other} in ${sec}`);
    for (const id of ids) {
      const h = HELPERS[id];
      if (!h) {
        unknown.push(`helper id ${id} in ${sec}`);
        continue;
      }
      const avail = h.progTypes[p.progType];
      if (!avail) {
        unknown.push(`helper bpf_${h.name} (${id}) in program type ${p.progType} (${sec}): availability not in the table`);
        continue;
      }
      const since = maxVersion(h.since, avail.since, p.since);
      const note = cmpVersion(avail.since, h.since) > 0 ? `helper itself ${h.since}; in ${p.progType} from ${avail.since}` : undefined;
      items.push({ kind: 'helper', name: `bpf_${h.name} (${id})`, context: sec, since, required: p.required, ref: avail.ref, ...(note ? { note } : {}) });
    }
  }

  for (const [name, typeId] of facts.maps) {
    const m = MAP_TYPES[typeId];
    if (!m) {
      unknown.push(`map type ${typeId} (map ${name})`);
      continue;
    }
    const users = [...facts.mapUsers]
      .filter(([, s]) => s.has(name))
      .map(([sec]) => sec)
      .sort();
    const required = users.some((u) => requiredSections.has(u));
    items.push({ kind: 'map', name: `${m.name} (${typeId})`, context: `${name} [${users.join(', ') || 'unused'}]`, since: m.since, required, ref: m.ref });
  }

  const req = items.filter((i) => i.required);
  const requiredMax = req.length ? maxVersion(...req.map((i) => i.since)) : '0.0';
  const violations = req.filter((i) => cmpVersion(i.since, max) > 0);
  return { object: opts.object ?? '', max, items, unknown, requiredMax, violations };
}

export function auditObject(obj: string, opts: { max?: Version } = {}): AuditResult {
  return audit(readObject(obj), { ...opts, object: obj });
}

export function formatTable(r: AuditResult): string {
  const rows = r.items.map((i) => [
    i.kind,
    i.name,
    i.context,
    i.since,
    i.required ? 'required' : 'optional',
    i.required && cmpVersion(i.since, r.max) > 0 ? `> ${r.max}` : '',
    i.note ?? '',
  ]);
  const head = ['KIND', 'ITEM', 'WHERE', 'SINCE', 'PATH', '', 'NOTE'];
  const w = head.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c]!.length)));
  const fmt = (row: string[]): string =>
    row
      .map((cell, c) => cell.padEnd(w[c]!))
      .join('  ')
      .trimEnd();
  return [fmt(head), ...rows.map(fmt)].join('\n');
}

export function violationMessage(r: AuditResult): string {
  return (
    `required path needs Linux ${r.requiredMax} > --max ${r.max}: ` + r.violations.map((v) => `${v.kind} ${v.name} in ${v.context} (${v.since})`).join('; ')
  );
}

export function main(argv: string[]): number {
  let json = false;
  let max = '5.10';
  let obj = 'bpf/ambient.bpf.o';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') json = true;
    else if (a === '--max') max = argv[++i] ?? '';
    else if (a.startsWith('--max=')) max = a.slice(6);
    else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: kernel-audit [--json] [--max 5.10] [bpf/ambient.bpf.o]\n');
      return 0;
    } else if (a.startsWith('-')) {
      process.stderr.write(`kernel-audit: unknown option ${a}\n`);
      return 2;
    } else obj = a;
  }
  let r: AuditResult;
  try {
    r = auditObject(obj, { max });
  } catch (e) {
    process.stderr.write(`kernel-audit: ${(e as Error).message}\n`);
    return 2;
  }
  if (json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else process.stdout.write(`${formatTable(r)}\n\nrequired path needs Linux ${r.requiredMax} (target ${r.max})\n`);
  if (r.unknown.length) {
    process.stderr.write(`kernel-audit: not in the audit tables (add them to tools/kernel-audit/kernel-audit.ts): ${r.unknown.join('; ')}\n`);
    return 3;
  }
  if (r.violations.length) {
    process.stderr.write(`kernel-audit: ${violationMessage(r)}\n`);
    return 1;
  }
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = main(process.argv.slice(2));
}
