/**
 * Owned handles of the datapath: every fd it holds (BPF programs, maps,
 * links, sockets made in a pod's netns before Node takes them) and every
 * libbpf object it opens is an object with one owner and one close().
 *
 *  - close() closes exactly once; a second close() is a no-op, so two
 *    cleanup paths can never close an fd number that was reused meanwhile.
 *  - use after close (or after release()) is an AmbientError (HANDLE_CLOSED),
 *    not a stale number silently naming someone else's fd.
 *  - every open handle is listed by openHandles() with its owner and what it
 *    is: a leak report names who forgot to close.
 *
 * The native addon stays thin (./native-api.d.ts): it returns fds as numbers
 * and a BpfObject that frees its libbpf object on close(); ownership,
 * owners and typed errors live here.
 */
import { AmbientError } from '../util/errors.js';
import type { BpfObject, NativeAddon } from './native-api.js';
import { nativeError } from './errno.js';
import type { ErrorCode } from '../util/errors.js';

export type HandleKind = 'bpf-prog' | 'bpf-map' | 'bpf-link' | 'bpf-object' | 'socket' | 'fd';

/** One line of a leak report. */
export interface OpenHandle {
  kind: HandleKind;
  /** who holds it (e.g. "datapath", "isolate ns/pod") */
  owner: string;
  /** what it is (e.g. "map amb_pods", "link sk_lookup on /run/netns/x") */
  what: string;
  /** the fd, for fds */
  fd?: number;
}

const live = new Set<Handle>();

/** Every handle not closed yet (a leak report: after a clean shutdown it is empty). */
export function openHandles(): OpenHandle[] {
  return [...live].map((h) => h.describe());
}

/** The open handles held by one owner (or by owners starting with `prefix`). */
export function openHandlesOf(prefix: string): OpenHandle[] {
  return openHandles().filter((h) => h.owner === prefix || h.owner.startsWith(prefix));
}

/** Base of the handle classes: one owner, open until close() (or release()). */
abstract class Handle {
  private isOpen = true;

  protected constructor(
    readonly kind: HandleKind,
    /** who holds it (for leak reports) */
    readonly owner: string,
    /** what it is (for messages and leak reports) */
    readonly what: string,
  ) {
    live.add(this);
  }

  get open(): boolean {
    return this.isOpen;
  }

  describe(): OpenHandle {
    return { kind: this.kind, owner: this.owner, what: this.what };
  }

  /** Throws the typed use-after-close error unless the handle is open. */
  protected ensureOpen(op: string): void {
    if (!this.isOpen) {
      throw new AmbientError(
        'HANDLE_CLOSED',
        `${this.owner}: ${op} on ${this.what} after it was closed`,
        'a bug: a closed datapath handle was used; report it',
      );
    }
  }

  /** Marks the handle closed; true only the first time (the caller then frees it). */
  protected markClosed(): boolean {
    if (!this.isOpen) return false;
    this.isOpen = false;
    live.delete(this);
    return true;
  }

  abstract close(): void;
}

/** How an OwnedFd closes its fd (the addon's closeFd, or a stand-in in tests). */
export type FdCloser = Pick<NativeAddon, 'closeFd'>;

/** An fd owned by one holder: closed once, by close(), or handed over by release(). */
export class OwnedFd extends Handle {
  private readonly value: number;

  constructor(
    private readonly closer: FdCloser,
    fd: number,
    kind: HandleKind,
    owner: string,
    what: string,
  ) {
    super(kind, owner, what);
    this.value = fd;
  }

  /**
   * Owns the fd a native call returned, or throws nativeError(code, ...) when
   * it returned a negative errno (`hint` replaces the errno table's hint).
   */
  static take(native: FdCloser, rc: number, kind: HandleKind, owner: string, what: string, code: ErrorCode, hint?: string): OwnedFd {
    if (rc < 0) throw nativeError(code, what, rc, hint);
    return new OwnedFd(native, rc, kind, owner, what);
  }

  /** The fd number, for a native call (throws HANDLE_CLOSED once closed or released). */
  get fd(): number {
    this.ensureOpen('use');
    return this.value;
  }

  override describe(): OpenHandle {
    return { ...super.describe(), fd: this.value };
  }

  /**
   * Hands the fd to a new owner that closes it (a net.Socket or net.Server,
   * the hand-over): this handle stops owning it. Returns the fd.
   */
  release(): number {
    this.ensureOpen('release');
    this.markClosed();
    return this.value;
  }

  /** Closes the fd; only the first call does anything. */
  close(): void {
    if (this.markClosed()) this.closer.closeFd(this.value);
  }
}

/** A libbpf object opened by the addon (objectOpen), with an owner. */
export class BpfObjectHandle extends Handle {
  private constructor(
    private readonly native: FdCloser,
    private readonly obj: BpfObject,
    owner: string,
    what: string,
  ) {
    super('bpf-object', owner, what);
  }

  /** Opens the ELF object at `file` (BPF_OBJECT error with `hint` when it cannot). */
  static open(native: Pick<NativeAddon, 'objectOpen' | 'closeFd'>, file: string, owner: string, hint?: string): BpfObjectHandle {
    const obj = native.objectOpen(file);
    if (typeof obj === 'number') throw nativeError('BPF_OBJECT', `cannot open ${file}`, obj, hint);
    return new BpfObjectHandle(native, obj, owner, `BPF object ${file}`);
  }

  /** Loads it (but the programs in `skip`), maps pinned under mapPinDir: 0 or the negative errno (the caller reads lastLog()). */
  load(mapPinDir: string, skip: readonly string[] = []): number {
    this.ensureOpen('load');
    return this.obj.load(mapPinDir, skip);
  }

  /** A loaded program's fd, owned by `owner`. */
  programFd(name: string, owner: string): OwnedFd {
    this.ensureOpen('programFd');
    return OwnedFd.take(this.native, this.obj.programFd(name), 'bpf-prog', owner, `program ${name}`, 'BPF_LOAD');
  }

  /** A map's fd, owned by `owner`. */
  mapFd(name: string, owner: string): OwnedFd {
    this.ensureOpen('mapFd');
    return OwnedFd.take(this.native, this.obj.mapFd(name), 'bpf-map', owner, `map ${name}`, 'BPF_MAP');
  }

  /** Frees the libbpf object (pins and fds taken from it stay valid); only the first call does anything. */
  close(): void {
    if (this.markClosed()) this.obj.close();
  }
}
