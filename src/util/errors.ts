/**
 * Typed errors with stable codes and a hint that tells the operator what to do.
 * Every error the agent reports (logs, admin, CLI exit) is an AmbientError.
 */
/**
 * Stable codes, one family per subsystem. A code is never renamed or reused:
 * dashboards, alerts and scripts match on it. Add a code to its family.
 */
export type ConfigCode = 'CONFIG_INVALID' | 'CONFIG_UNREADABLE' | 'USAGE' | 'ADDRESS_INVALID';

export type DiscoveryCode = 'WORKLOADS_INVALID' | 'WORKLOADS_UNREADABLE' | 'K8S_API' | 'K8S_OBJECT_INVALID' | 'K8S_CONFIG';

export type DatapathCode =
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
  | 'HANDLE_CLOSED'
  | 'RETURN_PATH_FAILED';

export type CaptureCode = 'LISTENER_FAILED' | 'POD_IP_CONFLICT' | 'POD_UNSUPPORTED' | 'ORIGINAL_DST_UNKNOWN' | 'CAPTURE_RELEASED';

export type ProxyCode =
  | 'UPSTREAM_FAILED'
  | 'HBONE_DENIED'
  | 'HBONE_BAD_REQUEST'
  | 'HBONE_UNAVAILABLE'
  | 'HBONE_STATUS'
  | 'HBONE_TLS'
  | 'HBONE_CONNECT'
  | 'HBONE_TIMEOUT'
  | 'HBONE_REFUSED'
  | 'HBONE_CLOSED'
  | 'HBONE_ABORTED'
  | 'HBONE_IDENTITY'
  | 'HBONE_BAD_ARGUMENT'
  | 'HBONE_POOL_CLOSED'
  | 'LIMIT_DIALS';

export type IdentityCode =
  | 'CA_UNAVAILABLE'
  | 'CA_INCOMPLETE_LAYOUT'
  | 'CA_BAD_PEM'
  | 'CA_KEY_MISMATCH'
  | 'CA_NOT_A_CA'
  | 'CA_EXPIRED'
  | 'CA_UNSUPPORTED_KEY'
  | 'CA_BAD_CSR'
  | 'CA_CSR_IDENTITY_MISMATCH'
  | 'CA_BAD_REQUEST'
  | 'CA_LOCK_TIMEOUT'
  | 'CA_ISSUE_TIMEOUT'
  | 'CA_ISSUE_BAD_RESPONSE'
  | 'CA_ISSUE_FAILED'
  | 'CA_CLOSED'
  | 'SPIFFE_EMPTY'
  | 'SPIFFE_TOO_LONG'
  | 'SPIFFE_BAD_SCHEME'
  | 'SPIFFE_BAD_TRUST_DOMAIN'
  | 'SPIFFE_BAD_PATH'
  | 'SPIFFE_NOT_K8S';

/** The cluster CA (`ambientd ca`, src/ca/) and the agent's client of it (src/identity/ca-client.ts). */
export type CaServiceCode =
  | 'CA_AUTH_MISSING'
  | 'CA_AUTH_INVALID'
  | 'CA_AUTH_EXPIRED'
  | 'CA_AUTH_AUDIENCE'
  | 'CA_AUTH_NO_NODE'
  | 'CA_AUTH_UNAVAILABLE'
  | 'CA_IMPERSONATION_DENIED'
  | 'CA_NODE_DENIED'
  | 'CA_FOREIGN_TRUST_DOMAIN'
  | 'CA_CSR_REJECTED'
  | 'CA_NOT_READY'
  | 'CA_SERVER_CONFIG'
  | 'CA_REMOTE_UNAVAILABLE'
  | 'CA_REMOTE_DENIED'
  | 'CA_REMOTE_REJECTED'
  | 'CA_REMOTE_FAILED'
  | 'CA_CLIENT_CONFIG';

export type LifecycleCode =
  | 'HANDOVER_ABORTED'
  | 'HANDOVER_PROTOCOL'
  | 'HANDOVER_PEER'
  | 'HANDOVER_REFUSED'
  | 'AGENT_INTERNAL'
  | 'AGENT_PHASE'
  | 'HANDOVER_RECORD_INVALID'
  | 'HANDOVER_RECORD_VERSION'
  | 'WORKER_UNAVAILABLE';

/** The agent's start-up checks (src/agent/preflight.ts): what the node or the manifest does not grant. */
export type PreflightCode = 'PREFLIGHT_CAPABILITY_MISSING' | 'PREFLIGHT_MOUNT_MISSING' | 'PREFLIGHT_CGROUP_NAMESPACE' | 'PREFLIGHT_PID_NAMESPACE';

export type ToolsCode = 'SANDBOX_MISSING' | 'SANDBOX_INVALID' | 'DEMO_CLAIM_FALSE' | 'TOOL_FAILED' | 'TOOLS_NOT_INSTALLED';

export type ErrorCode =
  ConfigCode | DiscoveryCode | DatapathCode | CaptureCode | ProxyCode | IdentityCode | CaServiceCode | LifecycleCode | PreflightCode | ToolsCode;

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
