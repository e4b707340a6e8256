/**
 * The Forwarded header of an inbound HBONE request, read as what the peer
 * *claims* its client was: kept in the record (claimedSrc), never used to
 * decide anything.
 */
import net from 'node:net';
import { formatClaimed, type ClaimedAddress } from './connections.js';

/**
 * `for="10.0.0.1:1234"` → {10.0.0.1, 1234}: what an HBONE peer *claims* its
 * client was (kept as a record's claimedSrc, never used to decide). Bounded
 * and checked: anything that is not an address (and port) is dropped.
 */
export function parseForwardedFor(v: string): ClaimedAddress | null {
  if (v.length > 256) return null;
  const m = /for="?\[?([0-9a-fA-F.:]{2,45}?)\]?(?::(\d{1,5}))?"?(?:[;,]|$)/.exec(v);
  if (!m || net.isIP(m[1]!) === 0) return null;
  if (m[2] && Number(m[2]) > 65535) return null;
  return { ip: m[1]!, port: m[2] ? Number(m[2]) : null };
}

/** The claim as text ("ip:port", "[v6]:port", or the bare address). */
export function forwardedFor(v: string): string | null {
  const c = parseForwardedFor(v);
  return c ? formatClaimed(c) : null;
}
