/**
 * A pod's network namespace, held open for as long as the pod is enrolled.
 *
 * A path such as /proc/<pid>/ns/net names whatever namespace that pid has
 * *now*: when the pod's process exits and the pid is reused, the same path
 * silently names another namespace. A handle opens the namespace once (an fd,
 * with its inode to compare against), and every later use goes through
 * /proc/self/fd/<fd>, which keeps naming the namespace that was opened for as
 * long as the fd is open, even after the pod's processes are gone.
 */
import fs from 'node:fs';
import { AmbientError } from '../util/errors.js';

export class NetnsHandle {
  private fdValue: number | null;

  private constructor(
    fd: number,
    /** the path it was opened from (for messages and config_dump) */
    readonly source: string,
    /** inode of the namespace (nsfs), what the kernel calls its id */
    readonly inode: bigint,
    /** who holds it (for leak reports) */
    readonly owner: string,
  ) {
    this.fdValue = fd;
  }

  /** Opens the namespace at `source` (a bind mount under /run/netns, or /proc/<pid>/ns/net). */
  static open(source: string, owner: string): NetnsHandle {
    let fd: number;
    try {
      fd = fs.openSync(source, fs.constants.O_RDONLY); // node opens with O_CLOEXEC;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
      throw new AmbientError(
        'NETNS_UNAVAILABLE',
        `${owner}: cannot open netns ${source}: ${code}`,
        'the pod sandbox is gone or the netns path is wrong; the pod is isolated until its netns exists',
        { cause: e },
      );
    }
    const st = fs.fstatSync(fd, { bigint: true });
    return new NetnsHandle(fd, source, st.ino, owner);
  }

  get open(): boolean {
    return this.fdValue !== null;
  }

  /** The fd (throws once closed). */
  get fd(): number {
    if (this.fdValue === null)
      throw new AmbientError(
        'NETNS_UNAVAILABLE',
        `${this.owner}: netns handle for ${this.source} is closed`,
        "a bug: a released pod's netns was used; report it",
      );
    return this.fdValue;
  }

  /** A path naming exactly this namespace, for calls that take a path (setns on the addon's threads). */
  get path(): string {
    return `/proc/self/fd/${this.fd}`;
  }

  /** Whether `source` still names this namespace (false once the pod's sandbox is gone or replaced). */
  sameAs(source: string): boolean {
    try {
      return fs.statSync(source, { bigint: true }).ino === this.inode;
    } catch {
      return false;
    }
  }

  close(): void {
    if (this.fdValue === null) return;
    const fd = this.fdValue;
    this.fdValue = null;
    try {
      fs.closeSync(fd);
    } catch {
      /* already gone */
    }
  }
}
