/**
 * Who may talk to us on the hand-over socket: the socket file is 0600 in a
 * 0700 directory, and on top of that the peer's credentials (SO_PEERCRED,
 * from the kernel, not from anything the peer writes) must name a process
 * of our kind: uid 0 (or our own uid), and an ambientd agent (`... agent`
 * run by the same executable name as ours, e.g. node).
 */
import fs from 'node:fs';
import path from 'node:path';

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** argv of a process, from /proc (null when it is gone or unreadable). */
function cmdline(pid: number): string[] | null {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((a) => a.length > 0);
  } catch {
    return null;
  }
}

function exeName(pid: number | 'self'): string | null {
  try {
    return path.basename(fs.readlinkSync(`/proc/${pid}/exe`));
  } catch {
    return null;
  }
}

/** True when argv runs the ambientd agent: `<node> [...]/cli.js agent ...` or `ambientd agent ...`. */
export function isAgentCommand(argv: readonly string[]): boolean {
  for (let i = 0; i < argv.length - 1; i++) {
    const b = path.basename(argv[i]!);
    if ((b === 'cli.js' || b === 'ambientd') && argv[i + 1] === 'agent') return true;
  }
  return false;
}

/**
 * null when `cred` is an agent we may hand sockets to (or take them from);
 * else why not. `claimedPid`, when given, is what the peer said its pid is:
 * it must be the kernel's.
 */
export function verifyAgentPeer(cred: PeerCred, claimedPid?: number): string | null {
  const ownUid = typeof process.geteuid === 'function' ? process.geteuid() : 0;
  if (cred.uid !== 0 && cred.uid !== ownUid) return `peer uid ${cred.uid} is neither 0 nor ours (${ownUid})`;
  if (!(cred.pid > 0)) return 'peer pid unknown';
  if (claimedPid !== undefined && claimedPid !== cred.pid) return `peer says pid ${claimedPid} but the kernel says ${cred.pid}`;
  const argv = cmdline(cred.pid);
  if (!argv) return `peer pid ${cred.pid} is gone or unreadable`;
  if (!isAgentCommand(argv)) return `peer pid ${cred.pid} is not an ambientd agent (${argv.slice(0, 4).join(' ').slice(0, 160)})`;
  const mine = exeName('self');
  const theirs = exeName(cred.pid);
  if (mine && theirs && mine !== theirs) return `peer pid ${cred.pid} runs ${theirs}, not ${mine}`;
  return null;
}
