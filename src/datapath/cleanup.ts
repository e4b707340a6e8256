/**
 * `ambientd cleanup`: detaches and removes everything the agent pinned under a
 * bpffs directory (links first, so redirection stops before maps go). Safe to
 * run twice and after a crash.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadNative } from './native.js';
import { OwnedFd } from './handles.js';
import type { NativeAddon } from './native-api.js';
import { disableReturnPath, returnPathState } from './return-path.js';

export function cleanupPins(dir: string): { dir: string; links: number; pins: number } {
  const native = loadNative();
  let links = 0;
  let pins = 0;
  if (!fs.existsSync(dir)) return { dir, links, pins };
  /** netns inode -> a path naming it, built at the first pod link (pods may outlive the agent) */
  let netnsByIno: Map<number, string> | undefined;
  const files: string[] = [];
  const dirs: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        walk(p);
        dirs.push(p);
      } else files.push(p);
    }
  };
  walk(dir);
  // links (pods/*, agent_sockops) before maps
  files.sort((a, b) => Number(a.includes('/maps/')) - Number(b.includes('/maps/')));
  for (const f of files) {
    const fd = native.objGet(f);
    if (fd >= 0) {
      const pin = new OwnedFd(native, fd, 'fd', 'cleanup', `pin ${f}`);
      // a pod's sk_lookup link names its netns: the pod's return path goes too
      const li = native.linkInfo(pin.fd);
      if (typeof li !== 'number' && li.netnsIno) {
        netnsByIno ??= netnsIndex();
        const netns = netnsByIno.get(li.netnsIno);
        if (netns) removeReturnPath(native, netns);
      }
      if (native.linkDetach(pin.fd) === 0) links++;
      pin.close();
    }
    fs.rmSync(f, { force: true });
    pins++;
  }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
  return { dir, links, pins };
}

/**
 * A path for each network namespace by inode: /run/netns/* first, then every
 * process's. Built once per cleanup, not once per pod.
 */
function netnsIndex(): Map<number, string> {
  const paths: string[] = [];
  for (const dir of ['/run/netns', '/var/run/netns']) {
    try {
      for (const e of fs.readdirSync(dir)) paths.push(path.join(dir, e));
    } catch {
      /* none */
    }
  }
  for (const e of fs.readdirSync('/proc')) if (/^\d+$/.test(e)) paths.push(`/proc/${e}/ns/net`);
  const byIno = new Map<number, string>();
  for (const p of paths) {
    try {
      const ino = fs.statSync(p).ino;
      if (!byIno.has(ino)) byIno.set(ino, p);
    } catch {
      /* gone meanwhile */
    }
  }
  return byIno;
}

/**
 * The client-address return path (rules, route, sysctls) of a pod's netns,
 * removed: the pod may outlive the agent.
 */
function removeReturnPath(native: NativeAddon, netns: string): void {
  try {
    const state = returnPathState(native, netns);
    if (state.rules.length === 0 && state.routes.length === 0) return;
    disableReturnPath(native, netns, [...new Set([...state.rules, ...state.routes].map((x) => x.family))]);
  } catch {
    /* best effort: the pod's netns went away meanwhile */
  }
}

/**
 * Removes a hand-over socket file nobody serves any more. An agent that still
 * answers on it keeps it ('in use': stop the agent first).
 */
export function removeStaleSocket(file: string): 'removed' | 'absent' | 'in use' {
  if (!fs.existsSync(file)) return 'absent';
  const native = loadNative();
  const fd = native.unixConnect(file, 1000);
  if (fd >= 0) {
    new OwnedFd(native, fd, 'socket', 'cleanup', `probe of ${file}`).close();
    return 'in use';
  }
  fs.rmSync(file, { force: true });
  return 'removed';
}
