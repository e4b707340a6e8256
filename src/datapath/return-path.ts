/**
 * The in-pod return path for client-address preservation (issue 14): the
 * agent connects to an app from inside the pod's netns with a transparent
 * socket bound to the client's address and marked RETURN_MARK; the app's
 * replies, addressed to that (non-local) client address, must come back to
 * that socket instead of leaving through the pod's eth0. In the pod netns
 * (native/return_path.cc does it over rtnetlink, no iptables, no `ip`):
 *
 *   net.ipv4.tcp_fwmark_accept = 1      accepted sockets carry the SYN's mark
 *   fwmark RETURN_MARK lookup RETURN_TABLE, priority RETURN_PRIORITY
 *   local default dev lo, table RETURN_TABLE   (per family)
 *
 * Every failure throws a ReturnPathError (RETURN_PATH_FAILED) naming the errno.
 */
import { AmbientError } from '../util/errors.js';
import { errnoName } from './errno.js';
import type { NativeAddon, ReturnPathState } from './native-api.js';

/** SO_MARK of the agent's client-address sockets in a pod, and of the app's replies to them ("ambient return": 0x4d3 = 1235). */
export const RETURN_MARK = 0x4d3;
/** The policy-routing table that holds only `local default dev lo` (not 253/254/255: the pod's default/main/local). */
export const RETURN_TABLE = 133;
/**
 * The fwmark rule's priority. It must come before `lookup main` (32766):
 * main holds the pod's default route, which would send the replies out of
 * eth0 towards the real client. After `lookup local` (0), which cannot match
 * them (the client's address is not local to the pod), and leaving the range
 * below for rules a CNI may add.
 */
export const RETURN_PRIORITY = 32000;

export interface ReturnPathConfig {
  mark: number;
  table: number;
  priority: number;
}

export const DEFAULT_RETURN_PATH: Readonly<ReturnPathConfig> = { mark: RETURN_MARK, table: RETURN_TABLE, priority: RETURN_PRIORITY };

/** What to check for each errno of returnPath / returnPathState. */
function hintFor(name: string): string {
  switch (name) {
    case 'ENOENT':
    case 'EINVAL':
      return 'check the pod netns path exists and names a network namespace (the pod may be gone), and the mark/table/priority values';
    case 'EPERM':
      return 'the agent needs CAP_NET_ADMIN (and CAP_SYS_ADMIN for setns) to change routing in a pod netns';
    case 'EACCES':
      return 'IPv6 is disabled in the pod (net.ipv6.conf.*.disable_ipv6=1): enable it or preserve client addresses for IPv4 only; or the host procfs at /host/proc refused the sysctl write';
    case 'EROFS':
      return "/proc/sys is read-only in the agent's container: mount the host's /proc at /host/proc (deploy/ambientd.yaml, volume host-proc), or set clientAddress: pod";
    case 'EAFNOSUPPORT':
      return 'the kernel has no IPv6 (ipv6.disable=1): preserve client addresses for IPv4 only';
    case 'ENETDOWN':
      return "the pod's loopback interface is down";
    default:
      return 'check the pod netns exists, the agent has CAP_NET_ADMIN, and IPv6 is enabled in the pod when family 6 is asked for';
  }
}

/** A return path that could not be set up, removed or read (code RETURN_PATH_FAILED). */
export class ReturnPathError extends AmbientError {
  readonly errnoName: string;
  constructor(what: string, rc: number) {
    const name = errnoName(rc);
    super('RETURN_PATH_FAILED', `${what}: ${name}`, hintFor(name), { errno: Math.abs(rc) });
    this.name = 'ReturnPathError';
    this.errnoName = name;
  }
}

function families(f: ReadonlyArray<4 | 6>): string {
  return f.map((x) => `IPv${x}`).join('+');
}

/** Sets up the return path in the netns for these families (idempotent). Throws ReturnPathError. */
export function enableReturnPath(native: NativeAddon, netns: string, fams: ReadonlyArray<4 | 6>, cfg: ReturnPathConfig = DEFAULT_RETURN_PATH): void {
  const rc = native.returnPath(netns, { ...cfg, families: [...fams], enable: true });
  if (rc < 0) throw new ReturnPathError(`enable the ${families(fams)} return path in ${netns}`, rc);
}

/** Removes the return path (already gone is success) and resets tcp_fwmark_accept to 0. Throws ReturnPathError. */
export function disableReturnPath(native: NativeAddon, netns: string, fams: ReadonlyArray<4 | 6>, cfg: ReturnPathConfig = DEFAULT_RETURN_PATH): void {
  const rc = native.returnPath(netns, { ...cfg, families: [...fams], enable: false });
  if (rc < 0) throw new ReturnPathError(`disable the ${families(fams)} return path in ${netns}`, rc);
}

/** What is set up in the netns (the sysctl, the rules with this table+mark, every route of the table). Throws ReturnPathError. */
export function returnPathState(native: NativeAddon, netns: string, cfg: Pick<ReturnPathConfig, 'mark' | 'table'> = DEFAULT_RETURN_PATH): ReturnPathState {
  const r = native.returnPathState(netns, { table: cfg.table, mark: cfg.mark });
  if (typeof r === 'number') throw new ReturnPathError(`read the return path in ${netns}`, r);
  return r;
}
