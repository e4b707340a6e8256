/**
 * Wire checks of the sandbox (tests, demo): tcpdump on the link between a
 * node and the fabric bridge, and a minimal pcap (libpcap format, Ethernet,
 * IPv4 or IPv6, TCP) reader.
 */
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { TIME_SCALE } from './model.js';
import { AmbientError } from '../../src/util/errors.js';
import { canonicalIp } from '../../src/util/address.js';

async function until(what: string, fn: () => boolean, timeoutMs = 8000): Promise<void> {
  const end = Date.now() + timeoutMs * TIME_SCALE;
  while (!fn()) {
    if (Date.now() > end) throw new AmbientError('TOOL_FAILED', `timed out waiting for ${what}`, 'is tcpdump installed (make deps) and the node link up?');
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface TcpPacket {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  payload: Buffer;
}

export function readTcpPackets(file: string): TcpPacket[] {
  const b = fs.readFileSync(file);
  if (b.length < 24) return [];
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && b.readUInt32BE(0) !== 0xa1b2c3d4 && b.readUInt32BE(0) !== 0xa1b23c4d)
    throw new AmbientError('TOOL_FAILED', `${file} is not a pcap file`, 'it should be what captureNodeLink wrote (tcpdump -w)');
  const u32 = (o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const linktype = u32(20);
  const out: TcpPacket[] = [];
  for (let off = 24; off + 16 <= b.length;) {
    const incl = u32(off + 8);
    const pkt = b.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    let ip = 0;
    let type = 0;
    if (linktype === 1) {
      // Ethernet
      if (pkt.length < 14) continue;
      type = pkt.readUInt16BE(12);
      ip = 14;
    } else if (linktype === 113) {
      // Linux cooked
      if (pkt.length < 16) continue;
      type = pkt.readUInt16BE(14);
      ip = 16;
    } else continue;
    if (type === 0x86dd) {
      // IPv6 with TCP as the next header (the sandbox sends no extension headers)
      if (pkt.length < ip + 40 || pkt[ip]! >> 4 !== 6 || pkt[ip + 6] !== 6) continue;
      const tcp6 = ip + 40;
      const doff6 = (pkt[tcp6 + 12]! >> 4) * 4;
      out.push({
        src: ipv6Text(pkt.subarray(ip + 8, ip + 24)),
        dst: ipv6Text(pkt.subarray(ip + 24, ip + 40)),
        sport: pkt.readUInt16BE(tcp6),
        dport: pkt.readUInt16BE(tcp6 + 2),
        payload: pkt.subarray(tcp6 + doff6, tcp6 + pkt.readUInt16BE(ip + 4)),
      });
      continue;
    }
    if (type !== 0x0800) continue;
    if (pkt[ip]! >> 4 !== 4 || pkt[ip + 9] !== 6) continue;
    const ihl = (pkt[ip]! & 0x0f) * 4;
    const total = pkt.readUInt16BE(ip + 2);
    const tcp = ip + ihl;
    const doff = (pkt[tcp + 12]! >> 4) * 4;
    out.push({
      src: [...pkt.subarray(ip + 12, ip + 16)].join('.'),
      dst: [...pkt.subarray(ip + 16, ip + 20)].join('.'),
      sport: pkt.readUInt16BE(tcp),
      dport: pkt.readUInt16BE(tcp + 2),
      payload: pkt.subarray(tcp + doff, ip + total),
    });
  }
  return out;
}

/** 16 bytes as canonical IPv6 text (what the agent's records show). */
function ipv6Text(b: Buffer): string {
  const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(':');
  return canonicalIp(groups) ?? groups;
}

/** TLS 1.3 negotiated: a ServerHello (handshake type 2) carrying supported_versions (0x002b) = 0x0304. */
export function hasTls13ServerHello(stream: Buffer): boolean {
  for (let i = 0; i + 9 < stream.length; i++) {
    if (stream[i] !== 0x16 || stream[i + 1] !== 0x03 || stream[i + 5] !== 0x02) continue;
    const rec = stream.subarray(i, i + 5 + stream.readUInt16BE(i + 3));
    for (let j = 0; j + 6 <= rec.length; j++) {
      if (rec[j] === 0x00 && rec[j + 1] === 0x2b && rec[j + 2] === 0x00 && rec[j + 3] === 0x02 && rec[j + 4] === 0x03 && rec[j + 5] === 0x04) return true;
    }
  }
  return false;
}

/**
 * tcpdump on the sandbox link between node n<i> and the fabric bridge (every
 * byte between that node and the others crosses it), written to file.
 * Resolves once tcpdump listens; stop() ends it and waits for the file.
 */
export async function captureNodeLink(
  file: string,
  nodeLink: string,
  snaplen = 0,
): Promise<{ stop: () => Promise<void>; stderr: () => string; kill: () => void }> {
  const td = spawn(
    'ip',
    ['netns', 'exec', 'ambs-fabric', 'tcpdump', '-Z', 'root', '--immediate-mode', '-i', nodeLink, '-U', '-n', '-s', String(snaplen), '-w', file, 'tcp'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  td.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  await until('tcpdump listening', () => err.includes('listening on'));
  return {
    stop: async () => {
      if (td.exitCode !== null) return;
      const exited = new Promise((r) => td.once('exit', r));
      td.kill('SIGINT');
      await exited;
    },
    stderr: () => err,
    kill: () => {
      td.kill('SIGKILL');
    },
  };
}
