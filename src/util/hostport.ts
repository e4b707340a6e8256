/**
 * An address and port as a value: what records, logs and metrics carry, and
 * the one place it is written as text ("10.0.0.1:80", "[fd00::1]:80") and read
 * back.
 */
import net from 'node:net';
import { badHostPortReason, canonicalIp } from './address.js';
import { AmbientError } from './errors.js';

export interface HostPort {
  readonly ip: string;
  readonly port: number;
}

export function hostPort(ip: string, port: number): HostPort {
  return { ip, port };
}

/** "ip:port", with brackets around an IPv6 address. */
export function formatHostPort(a: HostPort): string {
  return a.ip.includes(':') ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

/** Reads "ip:port" or "[ipv6]:port"; null unless the address is an IP and the port 0-65535. */
export function parseHostPort(text: string): HostPort | null {
  let ip: string;
  let port: string;
  if (text.startsWith('[')) {
    const end = text.indexOf(']:');
    if (end < 0) return null;
    ip = text.slice(1, end);
    port = text.slice(end + 2);
    if (net.isIPv6(ip) === false) return null;
  } else {
    const i = text.lastIndexOf(':');
    if (i < 0) return null;
    ip = text.slice(0, i);
    port = text.slice(i + 1);
    if (!net.isIPv4(ip)) return null;
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return null;
  return { ip, port: Number(port) };
}

export function sameHostPort(a: HostPort, b: HostPort): boolean {
  return a.ip === b.ip && a.port === b.port;
}

/**
 * Reads "ip:port" or "[ipv6]:port" into its canonical address (IPv6 compressed
 * lower case, v4-mapped as IPv4) or throws ADDRESS_INVALID saying what is
 * wrong ("fd00::1:80" is IPv6 without brackets, ...). `what` names the input.
 */
export function readHostPort(text: string, what: string): HostPort {
  const hp = parseHostPort(text);
  const ip = hp ? canonicalIp(hp.ip) : null;
  if (!hp || ip === null) {
    const why = badHostPortReason(text) ?? 'is not "ip:port" or "[ipv6]:port"';
    throw new AmbientError(
      'ADDRESS_INVALID',
      `${what}: ${JSON.stringify(text)} ${why}`,
      'write an IPv4 address as "10.0.0.1:80" and an IPv6 one as "[fd00::1]:80"',
    );
  }
  return { ip, port: hp.port };
}

/**
 * Reads an address to dial: "ip:port", "[ipv6]:port" or "dns-name:port"
 * (istiod.istio-system.svc:15012); null unless the port is 1-65535 and the
 * host an IP or a DNS name.
 */
export function parseDialAddress(text: string): { host: string; port: number } | null {
  const ip = parseHostPort(text);
  if (ip) return ip.port > 0 ? { host: ip.ip, port: ip.port } : null;
  const m = /^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):(\d{1,5})$/.exec(text);
  if (!m || net.isIP(m[1]!) !== 0) return null;
  const port = Number(m[3]);
  return port > 0 && port <= 65535 ? { host: m[1]!, port } : null;
}
