/**
 * Typed errors with stable codes and a hint that tells the operator what to do.
 * Every error the agent reports (logs, admin, CLI exit) is an AmbientError.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'CONFIG_UNREADABLE'
  | 'WORKLOADS_INVALID'
  | 'WORKLOADS_UNREADABLE'
  | 'NATIVE_UNAVAILABLE'
  | 'BPF_PERMISSION'
  | 'BPF_OBJECT'
  | 'BPF_LOAD'
  | 'BPF_MAP'
  | 'BPF_ATTACH'
  | 'BPF_PIN'
  | 'KERNEL_FEATURE_MISSING'
  | 'NETNS_UNAVAILABLE'
  | 'CGROUP_UNAVAILABLE'
  | 'LISTENER_FAILED'
  | 'POD_IP_CONFLICT'
  | 'POD_UNSUPPORTED'
  | 'HANDOVER_ABORTED'
  | 'CA_UNAVAILABLE'
  | 'ORIGINAL_DST_UNKNOWN'
  | 'UPSTREAM_FAILED'
  | 'SANDBOX_MISSING'
  | 'SANDBOX_INVALID'
  | 'USAGE';

export class AmbientError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  readonly errno?: number;
  constructor(code: ErrorCode, message: string, hint: string, opts: { errno?: number; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'AmbientError';
    this.code = code;
    this.hint = hint;
    if (opts.errno !== undefined) this.errno = opts.errno;
  }
  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, hint: this.hint, ...(this.errno !== undefined ? { errno: this.errno } : {}) };
  }
  /** One line for a terminal: "CODE: message (hint: ...)". */
  describe(): string {
    return `${this.code}: ${this.message}\n  hint: ${this.hint}`;
  }
}

export function isAmbientError(e: unknown): e is AmbientError {
  return e instanceof AmbientError;
}

export function errorMessage(e: unknown): string {
  if (e instanceof AmbientError) return `${e.code}: ${e.message}`;
  if (e instanceof Error) return e.message;
  return String(e);
}
