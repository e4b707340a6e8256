/**
 * Connection records on the hand-over socket: the agent being replaced sends
 * each connection that ends while it drains to its successor ("RECORDS"
 * lines, src/lifecycle/handover.ts), whose metrics count it.
 *
 * The wire format is versioned on its own (the RECORDS header's number is the
 * hand-over protocol's): every line is one JSON object carrying `v`, the
 * record format version. Version 1:
 *
 *   { "v": 1, "id": 7, "pod": "ns/name", "direction": "outbound"|"inbound",
 *     "via": "passthrough"|"hbone"|"inbound-plaintext"|"inbound-hbone",
 *     "src": "ip:port", "dst": "ip:port", "claimedSrc": "ip[:port]"|null,
 *     "service": "ns/name"|null, "endpoint": "ip:port"|null,
 *     "peerIdentity": "spiffe://..."|null, "peerCertSerial": "..."|null,
 *     "startMs": 1700000000000, "endMs": 1700000001500,
 *     "bytesSent": 0, "bytesReceived": 0,
 *     "outcome": { "kind": "closed" | "reset" | ..., <its detail> } }
 *
 * Addresses are "ip:port" text ("[v6]:port", src/util/hostport.ts); the
 * outcome is the closed union of src/proxy/outcome.ts. A successor checks
 * every field; a record that fails is dropped and counted, one of another
 * (or no) version is dropped with its own error (HANDOVER_RECORD_VERSION),
 * counted apart as well: an agent reads only the version it writes, so a
 * change of the format is a new version.
 */
import { formatHostPort, parseHostPort, type HostPort } from '../util/hostport.js';
import { formatClaimed, VIAS, type ClaimedAddress, type Direction, type TrackedConnection, type Via } from '../proxy/connections.js';
import { OUTCOME_KINDS, RESET_BY, unreachable, type Outcome, type OutcomeKind } from '../proxy/outcome.js';
import { HBONE_ERROR_CODES, type HboneErrorCode } from '../proxy/hbone/common.js';
import { AmbientError } from '../util/errors.js';
import net from 'node:net';

export const RECORD_VERSION = 1;

export interface RecordWireV1 {
  v: 1;
  id: number;
  pod: string;
  direction: Direction;
  via: Via;
  src: string;
  dst: string;
  claimedSrc: string | null;
  service: string | null;
  endpoint: string | null;
  peerIdentity: string | null;
  peerCertSerial: string | null;
  startMs: number;
  endMs: number;
  bytesSent: number;
  bytesReceived: number;
  outcome: Outcome;
}

/** A record that failed its checks, or is of a version this agent does not read. */
export class RecordError extends AmbientError {
  declare readonly code: 'HANDOVER_RECORD_INVALID' | 'HANDOVER_RECORD_VERSION';
  constructor(
    code: 'HANDOVER_RECORD_INVALID' | 'HANDOVER_RECORD_VERSION',
    message: string,
    hint: string,
    readonly field: string | null,
  ) {
    super(code, message, hint);
    this.name = 'RecordError';
  }
  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), field: this.field };
  }
}

const INVALID_HINT =
  'a connection record from the agent we replaced failed its checks and was dropped (its bytes are missing from the metrics): the two agents disagree on the record format, or the line was damaged';
const VERSION_HINT = `this agent reads connection records of format version ${RECORD_VERSION} only: the ones the agent we replaced sent are dropped (their bytes are missing from the metrics); upgrade to a version that writes ${RECORD_VERSION}, or across one version at a time`;

/** The wire form of a record that ended. */
export function recordToWire(r: TrackedConnection): RecordWireV1 {
  if (r.endMs === null || r.outcome === null) {
    throw new AmbientError('AGENT_INTERNAL', `connection ${r.id} is still open`, 'a bug: only records that ended are handed over');
  }
  return {
    v: RECORD_VERSION,
    id: r.id,
    pod: r.pod,
    direction: r.direction,
    via: r.via,
    src: formatHostPort(r.src),
    dst: formatHostPort(r.dst),
    claimedSrc: r.claimedSrc ? formatClaimed(r.claimedSrc) : null,
    service: r.service,
    endpoint: r.endpoint ? formatHostPort(r.endpoint) : null,
    peerIdentity: r.peerIdentity,
    peerCertSerial: r.peerCertSerial,
    startMs: r.startMs,
    endMs: r.endMs,
    bytesSent: r.bytesSent,
    bytesReceived: r.bytesReceived,
    outcome: r.outcome,
  };
}

/** One line of a RECORDS stream. */
export function encodeRecord(r: TrackedConnection): string {
  return JSON.stringify(recordToWire(r));
}

const MAX_STR = 1024;

/** A field that fails its check: thrown by the readers below, returned by recordFromWire. */
function bad(field: string, why: string): RecordError {
  return new RecordError('HANDOVER_RECORD_INVALID', `connection record, field ${field}: ${why}`, INVALID_HINT, field);
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

function str(o: Obj, k: string, path = k): string {
  const v = o[k];
  if (typeof v !== 'string') throw bad(path, v === undefined ? 'missing' : `not a string (${JSON.stringify(v)?.slice(0, 40)})`);
  if (v.length > MAX_STR) throw bad(path, `longer than ${MAX_STR} characters`);
  return v;
}
function strOrNull(o: Obj, k: string, path = k): string | null {
  return o[k] === null ? null : str(o, k, path);
}
function count(o: Obj, k: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw bad(k, v === undefined ? 'missing' : `not a whole number >= 0 (${JSON.stringify(v)?.slice(0, 40)})`);
  return v;
}
function oneOf<T extends string>(o: Obj, k: string, allowed: readonly T[], path = k): T {
  const v = o[k];
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v))
    throw bad(path, `${JSON.stringify(v)?.slice(0, 40) ?? 'missing'} is not one of ${allowed.join(', ')}`);
  return v as T;
}
function hostPort(o: Obj, k: string): HostPort {
  const v = str(o, k);
  const hp = parseHostPort(v);
  if (!hp) throw bad(k, `${JSON.stringify(v.slice(0, 60))} is not ip:port`);
  return hp;
}
function claimed(o: Obj, k: string): ClaimedAddress | null {
  const v = strOrNull(o, k);
  if (v === null) return null;
  if (net.isIP(v) !== 0) return { ip: v, port: null };
  const hp = parseHostPort(v);
  if (!hp) throw bad(k, `${JSON.stringify(v.slice(0, 60))} is neither an address nor ip:port`);
  return hp;
}

function outcomeOf(o: Obj): Outcome {
  const x = o.outcome;
  if (!isObj(x)) throw bad('outcome', x === undefined ? 'missing' : 'not an object');
  const kind = oneOf<OutcomeKind>(x, 'kind', OUTCOME_KINDS, 'outcome.kind');
  const k = kind as Outcome['kind'];
  switch (k) {
    case 'closed':
    case 'client_gone':
    case 'no_endpoint':
      return { kind: k };
    case 'reset':
      return { kind: k, by: oneOf(x, 'by', RESET_BY, 'outcome.by') };
    case 'socket_error':
      return { kind: k, side: oneOf(x, 'side', ['client', 'upstream'] as const, 'outcome.side'), errno: str(x, 'errno', 'outcome.errno') };
    case 'denied':
      return { kind: k, policy: strOrNull(x, 'policy', 'outcome.policy'), why: str(x, 'why', 'outcome.why') };
    case 'revoked':
      return { kind: k, policy: strOrNull(x, 'policy', 'outcome.policy') };
    case 'upstream_failed':
      return { kind: k, errno: strOrNull(x, 'errno', 'outcome.errno') };
    case 'limit':
      return { kind: k, limit: oneOf(x, 'limit', ['dials'] as const, 'outcome.limit') };
    case 'hbone_failed': {
      const status = x.status;
      if (status !== null && (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599))
        throw bad('outcome.status', `${JSON.stringify(status)?.slice(0, 20) ?? 'missing'} is not an HTTP status or null`);
      return { kind: k, code: oneOf<HboneErrorCode>(x, 'code', HBONE_ERROR_CODES, 'outcome.code'), status, reason: strOrNull(x, 'reason', 'outcome.reason') };
    }
    default:
      return unreachable(k);
  }
}

const OUTBOUND_VIAS: readonly Via[] = ['passthrough', 'hbone'];

/**
 * A record received from the agent we replaced, checked field by field:
 * the record, or why it is refused (RecordError: HANDOVER_RECORD_VERSION for
 * another or no version, HANDOVER_RECORD_INVALID naming the field).
 */
export function recordFromWire(x: unknown): { ok: true; rec: TrackedConnection } | { ok: false; error: RecordError } {
  if (!isObj(x)) return { ok: false, error: new RecordError('HANDOVER_RECORD_INVALID', 'connection record: not a JSON object', INVALID_HINT, null) };
  if (x.v !== RECORD_VERSION) {
    const got = x.v === undefined ? 'none (an agent from before versioned records)' : JSON.stringify(x.v)?.slice(0, 20);
    return {
      ok: false,
      error: new RecordError(
        'HANDOVER_RECORD_VERSION',
        `connection record of format version ${got}; this agent reads version ${RECORD_VERSION}`,
        VERSION_HINT,
        'v',
      ),
    };
  }
  try {
    const direction = oneOf<Direction>(x, 'direction', ['outbound', 'inbound']);
    const via = oneOf(x, 'via', VIAS);
    if (OUTBOUND_VIAS.includes(via) !== (direction === 'outbound')) throw bad('via', `${via} is not a way to carry an ${direction} connection`);
    const startMs = count(x, 'startMs');
    const endMs = count(x, 'endMs');
    if (endMs < startMs) throw bad('endMs', 'before startMs');
    const rec: TrackedConnection = {
      id: count(x, 'id'),
      pod: str(x, 'pod'),
      direction,
      via,
      src: hostPort(x, 'src'),
      claimedSrc: claimed(x, 'claimedSrc'),
      dst: hostPort(x, 'dst'),
      service: strOrNull(x, 'service'),
      endpoint: x.endpoint === null ? null : hostPort(x, 'endpoint'),
      peerIdentity: strOrNull(x, 'peerIdentity'),
      peerCertSerial: strOrNull(x, 'peerCertSerial'),
      startMs,
      endMs,
      bytesSent: count(x, 'bytesSent'),
      bytesReceived: count(x, 'bytesReceived'),
      outcome: outcomeOf(x),
    };
    return { ok: true, rec };
  } catch (e) {
    if (!(e instanceof RecordError)) throw e;
    return { ok: false, error: e };
  }
}

/**
 * The agent's counters for a dropped record: every one is in
 * handover_record_invalid; those of another version also in
 * handover_record_unknown_version.
 */
export function droppedRecordCounters(e: AmbientError): string[] {
  return e.code === 'HANDOVER_RECORD_VERSION' ? ['handover_record_invalid', 'handover_record_unknown_version'] : ['handover_record_invalid'];
}
