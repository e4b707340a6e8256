/**
 * Encoders/decoders for the key/value structs of bpf/ambient.h. Each struct is
 * described once, declaratively (name, offset, kind); test/unit/codec.test.ts
 * checks every description against the BTF that clang put in the object, so
 * a header change that is not mirrored here fails the unit tests.
 */
import net from 'node:net';
import { AmbientError } from '../util/errors.js';
import { formatHostPort } from '../util/hostport.js';

export type FieldKind = 'u8' | 'u16' | 'u32' | 'u64' | 'ip' | 'sockaddr' | 'bytes';

export interface FieldDesc {
  name: string;
  offset: number;
  kind: FieldKind;
  /** byte size (for 'bytes', padding) */
  size: number;
}

export interface StructDesc {
  name: string; // C struct name
  size: number;
  fields: FieldDesc[];
}

const AF_INET = 2;
const AF_INET6 = 10;

export const IP_SIZE = 20;
export const SOCKADDR_SIZE = 24;

export const STRUCTS = {
  amb_ip: {
    name: 'amb_ip',
    size: 20,
    fields: [
      { name: 'family', offset: 0, kind: 'u8', size: 1 },
      { name: 'pad', offset: 1, kind: 'bytes', size: 3 },
      { name: 'addr', offset: 4, kind: 'bytes', size: 16 },
    ],
  },
  amb_sockaddr: {
    name: 'amb_sockaddr',
    size: 24,
    fields: [
      { name: 'ip', offset: 0, kind: 'ip', size: 20 },
      { name: 'port', offset: 20, kind: 'u16', size: 2 },
      { name: 'pad', offset: 22, kind: 'u16', size: 2 },
    ],
  },
  amb_config: {
    name: 'amb_config',
    size: 16,
    fields: [
      { name: 'outbound_port', offset: 0, kind: 'u16', size: 2 },
      { name: 'inbound_port', offset: 2, kind: 'u16', size: 2 },
      { name: 'hbone_port', offset: 4, kind: 'u16', size: 2 },
      { name: 'pad', offset: 6, kind: 'u16', size: 2 },
      { name: 'mark', offset: 8, kind: 'u32', size: 4 },
      { name: 'flags', offset: 12, kind: 'u32', size: 4 },
    ],
  },
  amb_pod: {
    name: 'amb_pod',
    size: 40,
    fields: [
      { name: 'cgroup_id', offset: 0, kind: 'u64', size: 8 },
      { name: 'flags', offset: 8, kind: 'u32', size: 4 },
      { name: 'pad', offset: 12, kind: 'u32', size: 4 },
      { name: 'exempt_src', offset: 16, kind: 'ip', size: 20 },
    ],
  },
  amb_cgroup_pod: {
    name: 'amb_cgroup_pod',
    size: 48,
    fields: [
      { name: 'v4', offset: 0, kind: 'ip', size: 20 },
      { name: 'v6', offset: 20, kind: 'ip', size: 20 },
      { name: 'flags', offset: 40, kind: 'u32', size: 4 },
      { name: 'pad', offset: 44, kind: 'u32', size: 4 },
    ],
  },
  amb_pod_stats: {
    name: 'amb_pod_stats',
    size: 64,
    fields: [
      { name: 'captured_out', offset: 0, kind: 'u64', size: 8 },
      { name: 'refused_out', offset: 8, kind: 'u64', size: 8 },
      { name: 'denied_out', offset: 16, kind: 'u64', size: 8 },
      { name: 'captured_in', offset: 24, kind: 'u64', size: 8 },
      { name: 'hbone_in', offset: 32, kind: 'u64', size: 8 },
      { name: 'refused_in', offset: 40, kind: 'u64', size: 8 },
      { name: 'denied_in', offset: 48, kind: 'u64', size: 8 },
      { name: 'bypass_in', offset: 56, kind: 'u64', size: 8 },
    ],
  },
  amb_orig: {
    name: 'amb_orig',
    size: 32,
    fields: [
      { name: 'dst', offset: 0, kind: 'sockaddr', size: 24 },
      { name: 'cgroup_id', offset: 24, kind: 'u64', size: 8 },
    ],
  },
  amb_orig_dst: {
    name: 'amb_orig_dst',
    size: 48,
    fields: [
      { name: 'dst', offset: 0, kind: 'sockaddr', size: 24 },
      { name: 'cookie', offset: 24, kind: 'u64', size: 8 },
      { name: 'cgroup_id', offset: 32, kind: 'u64', size: 8 },
      { name: 'created_ns', offset: 40, kind: 'u64', size: 8 },
    ],
  },
  amb_listener_key: {
    name: 'amb_listener_key',
    size: 16,
    fields: [
      { name: 'cgroup_id', offset: 0, kind: 'u64', size: 8 },
      { name: 'port', offset: 8, kind: 'u16', size: 2 },
      { name: 'family', offset: 10, kind: 'u8', size: 1 },
      { name: 'pad', offset: 11, kind: 'u8', size: 1 },
      { name: 'pad2', offset: 12, kind: 'u32', size: 4 },
    ],
  },
  amb_tuple: {
    name: 'amb_tuple',
    size: 44,
    fields: [
      { name: 'local', offset: 0, kind: 'ip', size: 20 },
      { name: 'remote', offset: 20, kind: 'ip', size: 20 },
      { name: 'local_port', offset: 40, kind: 'u16', size: 2 },
      { name: 'remote_port', offset: 42, kind: 'u16', size: 2 },
    ],
  },
} satisfies Record<string, StructDesc>;

/** Map name -> [key struct or scalar, value struct or scalar], as in ambient.h. */
export const MAPS = {
  amb_config: { key: 'u32', value: 'amb_config' },
  amb_pods: { key: 'amb_ip', value: 'amb_pod' },
  amb_pod_by_cgroup: { key: 'u64', value: 'amb_cgroup_pod' },
  amb_pod_stats: { key: 'u64', value: 'amb_pod_stats' },
  amb_counters: { key: 'u32', value: 'u64' },
  amb_orig_by_cookie: { key: 'u64', value: 'amb_orig' },
  amb_orig_dst: { key: 'amb_sockaddr', value: 'amb_orig_dst' },
  amb_listeners: { key: 'amb_listener_key', value: 'u64' },
  amb_sock_pairs: { key: 'amb_tuple', value: 'u64' },
} as const;
export type MapName = keyof typeof MAPS;

// ---- addresses -------------------------------------------------------------

/** Writes an amb_ip (20 bytes) for a textual IPv4/IPv6 address at buf[off]. */
export function writeIp(buf: Buffer, off: number, ip: string): void {
  buf.fill(0, off, off + IP_SIZE);
  if (net.isIPv4(ip)) {
    buf[off] = AF_INET;
    const parts = ip.split('.').map(Number);
    for (let i = 0; i < 4; i++) buf[off + 4 + i] = parts[i]!;
  } else if (net.isIPv6(ip)) {
    buf[off] = AF_INET6;
    parseIpv6(ip).copy(buf, off + 4);
  } else {
    throw new AmbientError(
      'BPF_MAP',
      `not an IP address: ${JSON.stringify(ip)}`,
      'a map key or value needs an IPv4 or IPv6 literal; discovery validates pod addresses, so this is a bug: report it',
    );
  }
}

export function readIp(buf: Buffer, off: number): string | null {
  const fam = buf[off];
  if (fam === AF_INET) return `${buf[off + 4]}.${buf[off + 5]}.${buf[off + 6]}.${buf[off + 7]}`;
  if (fam === AF_INET6) return formatIpv6(buf.subarray(off + 4, off + 20));
  return null;
}

export function encodeIp(ip: string): Buffer {
  const b = Buffer.alloc(IP_SIZE);
  writeIp(b, 0, ip);
  return b;
}

function parseIpv6(ip: string): Buffer {
  const out = Buffer.alloc(16);
  let s = ip;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  // trailing embedded IPv4
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.', lastColon)) {
    const v4 = s
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    tail = [(v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!];
    s = s.slice(0, lastColon + 1) + '0:0';
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':').filter((x) => x !== '') : [];
  const r = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = rest === undefined ? h : [...h, ...Array(8 - h.length - r.length).fill('0'), ...r];
  const words = groups.map((g) => parseInt(g, 16));
  if (tail.length) {
    words[6] = tail[0]!;
    words[7] = tail[1]!;
  }
  for (let i = 0; i < 8; i++) out.writeUInt16BE(words[i] ?? 0, i * 2);
  return out;
}

function formatIpv6(b: Buffer): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push(b.readUInt16BE(i * 2));
  // longest run of zeros for ::
  let bestStart = -1,
    bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

// ---- structs ---------------------------------------------------------------

export interface Sockaddr {
  ip: string;
  port: number;
}

export function encodeSockaddr(a: Sockaddr): Buffer {
  const b = Buffer.alloc(SOCKADDR_SIZE);
  writeIp(b, 0, a.ip);
  b.writeUInt16LE(a.port, 20);
  return b;
}
export function decodeSockaddr(b: Buffer, off = 0): Sockaddr | null {
  const ip = readIp(b, off);
  return ip === null ? null : { ip, port: b.readUInt16LE(off + 20) };
}

export interface AmbConfig {
  outboundPort: number;
  inboundPort: number;
  hbonePort: number;
  mark: number;
  flags: number;
}
export const CFG_SOCKMAP_ACCEL = 1;
/** amb_pods / amb_cgroup_pod flags (AMB_POD_* in ambient.h) */
export const POD_ENROLLED = 1;
export const POD_ISOLATED = 2;

export function encodeConfig(c: AmbConfig): Buffer {
  const b = Buffer.alloc(STRUCTS.amb_config.size);
  b.writeUInt16LE(c.outboundPort, 0);
  b.writeUInt16LE(c.inboundPort, 2);
  b.writeUInt16LE(c.hbonePort, 4);
  b.writeUInt32LE(c.mark >>> 0, 8);
  b.writeUInt32LE(c.flags >>> 0, 12);
  return b;
}
export function decodeConfig(b: Buffer): AmbConfig {
  return { outboundPort: b.readUInt16LE(0), inboundPort: b.readUInt16LE(2), hbonePort: b.readUInt16LE(4), mark: b.readUInt32LE(8), flags: b.readUInt32LE(12) };
}

/** amb_pods value: the pod that owns an IP. */
export interface AmbPod {
  cgroupId: bigint;
  flags: number;
  exemptSrc: string | null;
}
export function encodePod(p: AmbPod): Buffer {
  const b = Buffer.alloc(STRUCTS.amb_pod.size);
  b.writeBigUInt64LE(p.cgroupId, 0);
  b.writeUInt32LE(p.flags >>> 0, 8);
  if (p.exemptSrc) writeIp(b, 16, p.exemptSrc);
  return b;
}
export function decodePod(b: Buffer): AmbPod {
  return { cgroupId: b.readBigUInt64LE(0), flags: b.readUInt32LE(8), exemptSrc: readIp(b, 16) };
}

/** amb_pod_by_cgroup value: a pod's addresses and state. */
export interface AmbCgroupPod {
  v4: string | null;
  v6: string | null;
  flags: number;
}
export function encodeCgroupPod(a: AmbCgroupPod): Buffer {
  const b = Buffer.alloc(STRUCTS.amb_cgroup_pod.size);
  if (a.v4) writeIp(b, 0, a.v4);
  if (a.v6) writeIp(b, 20, a.v6);
  b.writeUInt32LE(a.flags >>> 0, 40);
  return b;
}
export function decodeCgroupPod(b: Buffer): AmbCgroupPod {
  return { v4: readIp(b, 0), v6: readIp(b, 20), flags: b.readUInt32LE(40) };
}

export interface AmbPodStats {
  capturedOut: bigint;
  refusedOut: bigint;
  deniedOut: bigint;
  capturedIn: bigint;
  hboneIn: bigint;
  refusedIn: bigint;
  deniedIn: bigint;
  bypassIn: bigint;
}
export function decodePodStats(b: Buffer): AmbPodStats {
  return {
    capturedOut: b.readBigUInt64LE(0),
    refusedOut: b.readBigUInt64LE(8),
    deniedOut: b.readBigUInt64LE(16),
    capturedIn: b.readBigUInt64LE(24),
    hboneIn: b.readBigUInt64LE(32),
    refusedIn: b.readBigUInt64LE(40),
    deniedIn: b.readBigUInt64LE(48),
    bypassIn: b.readBigUInt64LE(56),
  };
}

/** amb_counters indexes (AMB_CTR_* in ambient.h): datapath refusals by reason. */
export const DATAPATH_COUNTERS = [
  'out_no_pod',
  'out_ipv6',
  'out_protocol',
  'out_isolated',
  'in_ipv6',
  'in_unknown_addr',
  'in_isolated',
  'orig_dst_full',
  'bind_agent_port',
] as const;
export type DatapathCounter = (typeof DATAPATH_COUNTERS)[number];

/** What each refusal means and what to do: logged once per reason by the agent (docs/SECURITY.md). */
export const DATAPATH_COUNTER_CAUSES: Record<DatapathCounter, string> = {
  out_no_pod: 'connect() on a socket of an enrolled pod by a task outside any pod cgroup (a socket handed out of the pod): refused (EPERM)',
  out_ipv6:
    'an enrolled pod without an IPv6 address connected to a native IPv6 destination: refused (EPERM); give the pod an IPv6 address (status.podIPs) to have its IPv6 captured',
  out_protocol: 'an enrolled pod opened a stream socket of another protocol than TCP (e.g. SCTP): refused (EPERM)',
  out_isolated:
    'an isolated pod (its enrollment failed; see its error in /config_dump or /healthz/ready?verbose), or an IPv6-only pod to an IPv4 destination, tried to connect: refused (EPERM)',
  in_ipv6:
    "an IPv6 connection to an address of an enrolled pod's netns that no pod owns (its link-local address, an address missing from status.podIPs): refused (RST)",
  in_unknown_addr: 'a connection to an address of an enrolled pod netns that no pod owns: refused (RST)',
  in_isolated: 'a connection to an isolated pod (its enrollment failed) or to an address two pods claim: refused (RST)',
  bind_agent_port:
    "an app in an enrolled pod tried to bind a port the agent listens on in the pod (15001/15006/15008 or the configured ones): refused (EPERM); move the app's port (the agent owns these)",
  orig_dst_full: 'amb_orig_dst is full (more live captured connections than it holds): new ones are reset; raise its max_entries',
};

export interface AmbOrigDst {
  dst: Sockaddr;
  cookie: bigint;
  cgroupId: bigint;
  createdNs: bigint;
}
export function decodeOrigDst(b: Buffer): AmbOrigDst | null {
  const dst = decodeSockaddr(b, 0);
  if (!dst) return null;
  return { dst, cookie: b.readBigUInt64LE(24), cgroupId: b.readBigUInt64LE(32), createdNs: b.readBigUInt64LE(40) };
}

/**
 * A pod's listener of one role and family. IPv4's family byte is 0 (not
 * AF_INET), as in the keys of agents before IPv6 capture: their hand-over
 * keeps working unchanged.
 */
export function encodeListenerKey(cgroupId: bigint, port: number, family: 4 | 6 = 4): Buffer {
  const b = Buffer.alloc(STRUCTS.amb_listener_key.size);
  b.writeBigUInt64LE(cgroupId, 0);
  b.writeUInt16LE(port, 8);
  if (family === 6) b.writeUInt8(AF_INET6, 10);
  return b;
}

export function encodeU32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
export function encodeU64(n: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** Generic decoder driven by STRUCTS: what `inspect maps` prints, named like bpftool. */
export function decodeStruct(name: keyof typeof STRUCTS, b: Buffer, off = 0): Record<string, unknown> {
  const d: StructDesc = STRUCTS[name];
  const out: Record<string, unknown> = {};
  for (const f of d.fields) {
    const o = off + f.offset;
    switch (f.kind) {
      case 'u8':
        out[f.name] = b.readUInt8(o);
        break;
      case 'u16':
        out[f.name] = b.readUInt16LE(o);
        break;
      case 'u32':
        out[f.name] = b.readUInt32LE(o);
        break;
      case 'u64':
        out[f.name] = b.readBigUInt64LE(o);
        break;
      case 'ip':
        out[f.name] = readIp(b, o);
        break;
      case 'sockaddr': {
        const s = decodeSockaddr(b, o);
        out[f.name] = s ? formatHostPort(s) : null;
        break;
      }
      case 'bytes':
        out[f.name] = [...b.subarray(o, o + f.size)];
        break;
    }
  }
  return out;
}
