/**
 * Workload and service addresses of both families, as text in one canonical
 * form, so that an address read from the Kubernetes API, a workload file, a
 * socket or an HBONE authority is the same string (map keys, indexes,
 * records, metrics):
 *   - IPv4 as a dotted quad ("10.0.0.1");
 *   - IPv6 lower-case and compressed as RFC 5952 writes it ("fd00::1", never
 *     "FD00:0:0:0:0:0:0:0001");
 *   - an IPv4-mapped IPv6 address ("::ffff:10.0.0.1", what a dual-stack
 *     socket reports for an IPv4 peer) is the IPv4 address: it is IPv4 on the
 *     wire, and policy treats it as IPv4 too (src/policy/ip.ts).
 * A zone ("fe80::1%eth0") is not a workload address and is refused.
 * With a port, IPv6 is written in brackets ("[fd00::1]:8080",
 * src/util/hostport.ts).
 */
import net from 'node:net';

export type IpFamily = 4 | 6;

/** Kubernetes' names of the families (Service.spec.ipFamilies, EndpointSlice.addressType). */
export const FAMILY_NAME: Record<IpFamily, 'IPv4' | 'IPv6'> = { 4: 'IPv4', 6: 'IPv6' };

/** The canonical text of an address, or null if it is not a literal IP address (no zone, no brackets, no port). */
export function canonicalIp(text: string): string | null {
  if (typeof text !== 'string' || text.length === 0 || text.length > 45) return null;
  if (net.isIPv4(text)) return text;
  if (!net.isIPv6(text) || text.includes('%')) return null;
  // the WHATWG URL parser writes IPv6 hosts in RFC 5952 form (lower case, longest zero run compressed)
  const host = new URL(`http://[${text}]/`).hostname.slice(1, -1);
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (m) {
    const hi = parseInt(m[1]!, 16);
    const lo = parseInt(m[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return host;
}

/** The family of a canonical address (4 for IPv4 and v4-mapped). */
export function ipFamily(ip: string): IpFamily {
  return ip.includes(':') ? 6 : 4;
}

/**
 * Why text is not an address, in words an operator can act on; null when it
 * is one. Catches the usual wrong forms of IPv6: with a port but no brackets,
 * brackets without a port, a zone.
 */
export function badIpReason(text: unknown): string | null {
  if (typeof text !== 'string') return 'is not an IP address';
  if (canonicalIp(text) !== null) return null;
  if (/^\[.*\](:\d+)?$/.test(text)) return 'is in brackets: write the IPv6 address alone (brackets only go around it when a port follows, "[fd00::1]:80")';
  if (text.includes('%') && net.isIPv6(text)) return 'has a zone (%...): a zone is only meaningful on one host, never a workload address';
  const i = text.lastIndexOf(':');
  if (i > 0 && /^\d{1,5}$/.test(text.slice(i + 1))) {
    const head = text.slice(0, i);
    if (net.isIPv4(head)) return 'has a port: write the address alone';
    if (net.isIPv6(head) && head.includes('::'))
      return `is ambiguous: if ":${text.slice(i + 1)}" is a port, write "[${head}]:${text.slice(i + 1)}" where a port belongs, and the address alone elsewhere`;
  }
  return 'is not an IP address';
}

/** Why "ip:port" text is not an address and port, or null when it is one (parseHostPort's rules). */
export function badHostPortReason(text: unknown): string | null {
  if (typeof text !== 'string' || text === '') return 'is empty';
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    if (end < 0) return 'has "[" but no "]"';
    const inner = text.slice(1, end);
    if (!net.isIPv6(inner)) return `"${inner}" in brackets is not an IPv6 address (brackets are only for IPv6)`;
    if (inner.includes('%')) return 'has a zone (%...): never a workload address';
    const rest = text.slice(end + 1);
    if (rest === '') return 'has no port: write "[addr]:port"';
    if (!/^:\d{1,5}$/.test(rest) || Number(rest.slice(1)) > 65535) return `"${rest}" after the address is not ":port" (0-65535)`;
    return null;
  }
  const colons = text.split(':').length - 1;
  if (colons === 0) return 'has no port: write "ip:port" ("[ipv6]:port")';
  if (colons > 1) {
    const i = text.lastIndexOf(':');
    const head = text.slice(0, i);
    return net.isIPv6(text) || net.isIPv6(head)
      ? `is IPv6 without brackets: write "[${net.isIPv6(head) ? head : text}]:port"`
      : 'is neither "ipv4:port" nor "[ipv6]:port"';
  }
  const [ip, port] = text.split(':') as [string, string];
  if (!net.isIPv4(ip)) return `"${ip}" is not an IPv4 address (IPv6 goes in brackets: "[fd00::1]:80")`;
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return `"${port}" is not a port (0-65535)`;
  return null;
}
