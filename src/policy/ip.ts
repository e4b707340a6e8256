/**
 * IP addresses and CIDR blocks for L4 authorization: strict parsing (Node's
 * own net.isIPv4/isIPv6 decide what is an address: no leading zeros in IPv4,
 * one "::" at most, ...) and sorted, merged range sets so a lookup is a binary
 * search whatever the number of blocks.
 *
 * IPv4 values are plain numbers (0..2^32-1), IPv6 values bigints. An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack Node socket
 * reports for an IPv4 peer) is treated as the IPv4 address, both on the
 * connection side and in policies ("::ffff:10.0.0.0/104" == "10.0.0.0/8"), so
 * a policy written either way matches the same connections.
 */
import net from 'node:net';

export type IpAddr = { v4: true; n: number } | { v4: false; n: bigint };

/** A parsed CIDR: [lo, hi] inclusive. */
export type IpRange = { v4: true; lo: number; hi: number } | { v4: false; lo: bigint; hi: bigint };

const V4_MAPPED_PREFIX = 0xffffn;

function v4ToNumber(s: string): number {
  // caller made sure it is a valid dotted quad
  let n = 0;
  let part = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      n = n * 256 + part;
      part = 0;
    } else part = part * 10 + (c - 48);
  }
  return n * 256 + part;
}

/** Dotted quad (no leading zeros, each ≤ 255) → number, or -1. The connection-side hot path. */
function fastV4(s: string): number {
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || ++dots > 3) return -1;
      n = n * 256 + part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // leading zero
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return -1;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return n * 256 + part;
}

function v6ToBigInt(s: string): bigint {
  // caller made sure it is a valid IPv6 literal without zone
  let tail = -1;
  if (s.includes('.')) {
    const i = s.lastIndexOf(':');
    tail = v4ToNumber(s.slice(i + 1));
    s = s.slice(0, i + 1) + '0:0';
  }
  const dbl = s.indexOf('::');
  let groups: string[];
  if (dbl >= 0) {
    const head = dbl > 0 ? s.slice(0, dbl).split(':') : [];
    const rest = s.slice(dbl + 2);
    const tl = rest.length > 0 ? rest.split(':') : [];
    groups = [...head, ...new Array<string>(8 - head.length - tl.length).fill('0'), ...tl];
  } else {
    groups = s.split(':');
  }
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(parseInt(g, 16));
  if (tail >= 0) n = (n & ~0xffffffffn) | BigInt(tail);
  return n;
}

function canonical(n: bigint): IpAddr {
  if (n >> 32n === V4_MAPPED_PREFIX) return { v4: true, n: Number(n & 0xffffffffn) };
  return { v4: false, n };
}

/**
 * Parses one address. A zone ("fe80::1%eth0") is accepted and ignored, as
 * Go's netip.ParseAddr (Istio's validation) accepts it. null if not an IP.
 */
export function parseIp(s: string): IpAddr | null {
  if (typeof s !== 'string' || s.length === 0 || s.length > 64) return null;
  const v4 = fastV4(s);
  if (v4 >= 0) return { v4: true, n: v4 };
  if (!net.isIPv6(s)) return null;
  const pct = s.indexOf('%');
  return canonical(v6ToBigInt(pct >= 0 ? s.slice(0, pct) : s));
}

const DIGITS = /^(0|[1-9][0-9]{0,2})$/;

/**
 * Parses "addr" (a /32 or /128) or "addr/len" (host bits may be set, as Go's
 * netip.ParsePrefix allows; they are masked off). null if invalid.
 */
export function parseCidr(s: string): IpRange | null {
  if (typeof s !== 'string') return null;
  const slash = s.indexOf('/');
  if (slash < 0) {
    const a = parseIp(s);
    if (!a) return null;
    return a.v4 ? { v4: true, lo: a.n, hi: a.n } : { v4: false, lo: a.n, hi: a.n };
  }
  const addr = s.slice(0, slash);
  const lenS = s.slice(slash + 1);
  if (!DIGITS.test(lenS) || addr.includes('%')) return null;
  const len = Number(lenS);
  if (net.isIPv4(addr)) {
    if (len > 32) return null;
    const size = 2 ** (32 - len);
    const lo = Math.floor(v4ToNumber(addr) / size) * size;
    return { v4: true, lo, hi: lo + size - 1 };
  }
  if (!net.isIPv6(addr) || len > 128) return null;
  const n = v6ToBigInt(addr);
  if (n >> 32n === V4_MAPPED_PREFIX && len >= 96) {
    // IPv4-mapped block: the same block in IPv4 terms
    const size = 2 ** (128 - len);
    const v = Number(n & 0xffffffffn);
    const lo = Math.floor(v / size) * size;
    return { v4: true, lo, hi: lo + size - 1 };
  }
  const size = 1n << BigInt(128 - len);
  const lo = n - (n % size);
  return { v4: false, lo, hi: lo + size - 1n };
}

/** A set of CIDR blocks: sorted, merged ranges per family; lookups by binary search. */
export class IpSet {
  private readonly v4lo: number[] = [];
  private readonly v4hi: number[] = [];
  private readonly v6lo: bigint[] = [];
  private readonly v6hi: bigint[] = [];

  constructor(ranges: IpRange[]) {
    const r4 = ranges.filter((r): r is Extract<IpRange, { v4: true }> => r.v4).sort((a, b) => a.lo - b.lo);
    for (const r of r4) {
      const last = this.v4hi.length - 1;
      if (last >= 0 && r.lo <= this.v4hi[last]! + 1) {
        if (r.hi > this.v4hi[last]!) this.v4hi[last] = r.hi;
      } else {
        this.v4lo.push(r.lo);
        this.v4hi.push(r.hi);
      }
    }
    const r6 = ranges.filter((r): r is Extract<IpRange, { v4: false }> => !r.v4).sort((a, b) => (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0));
    for (const r of r6) {
      const last = this.v6hi.length - 1;
      if (last >= 0 && r.lo <= this.v6hi[last]! + 1n) {
        if (r.hi > this.v6hi[last]!) this.v6hi[last] = r.hi;
      } else {
        this.v6lo.push(r.lo);
        this.v6hi.push(r.hi);
      }
    }
  }

  has(a: IpAddr): boolean {
    if (a.v4) {
      const lo = this.v4lo;
      let l = 0;
      let h = lo.length - 1;
      // last range whose lo <= a.n
      while (l <= h) {
        const m = (l + h) >> 1;
        if (lo[m]! <= a.n) l = m + 1;
        else h = m - 1;
      }
      return h >= 0 && a.n <= this.v4hi[h]!;
    }
    const lo = this.v6lo;
    let l = 0;
    let h = lo.length - 1;
    while (l <= h) {
      const m = (l + h) >> 1;
      if (lo[m]! <= a.n) l = m + 1;
      else h = m - 1;
    }
    return h >= 0 && a.n <= this.v6hi[h]!;
  }

  get size(): number {
    return this.v4lo.length + this.v6lo.length;
  }
}
