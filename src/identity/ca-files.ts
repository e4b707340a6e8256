/**
 * The CA directory on disk: reads that tolerate absence, atomic writes with
 * a mode, and the lock that keeps two agents from creating a CA at once.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, constants as fsc } from 'node:fs';
import { CaError } from './ca-errors.js';

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p, fsc.F_OK);
    return true;
  } catch {
    return false;
  }
}

export async function readIfExists(p: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(p, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export async function writeFileAtomic(p: string, data: string, mode: number): Promise<void> {
  const tmp = `${p}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // umask-proof
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fsp.rename(tmp, p);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** O_EXCL lock file with stale-lock detection (dead pid on this host, or older than 2 min). */
export async function acquireLock(lockPath: string, timeoutMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  const token = `${process.pid} ${randomBytes(8).toString('hex')}\n`;
  for (;;) {
    try {
      const fh = await fsp.open(lockPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
      try {
        await fh.writeFile(token);
      } finally {
        await fh.close();
      }
      return async () => {
        const cur = await readIfExists(lockPath);
        if (cur === token) await fsp.rm(lockPath, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Held by someone else: stale?
    try {
      const [content, st] = await Promise.all([readIfExists(lockPath), fsp.stat(lockPath)]);
      const pid = Number.parseInt((content ?? '').split(' ')[0] ?? '', 10);
      const old = Date.now() - st.mtimeMs > 120_000;
      const dead = content !== undefined && content.endsWith('\n') && Number.isInteger(pid) && pid > 0 && !pidAlive(pid);
      if (old || dead) {
        // Re-check content before removing to avoid deleting a fresh lock.
        if ((await readIfExists(lockPath)) === content) await fsp.rm(lockPath, { force: true });
        continue;
      }
    } catch {
      // lock vanished between calls: retry
    }
    if (Date.now() > deadline) throw new CaError('CA_LOCK_TIMEOUT', `timed out waiting for ${lockPath}`);
    await new Promise((r) => setTimeout(r, 25 + Math.floor(Math.random() * 50)));
  }
}
