/**
 * The agent's side of a hand-over (the protocol is src/lifecycle/handover.ts):
 *
 *   as the successor: takeOver() asks the running agent for its listening
 *     sockets, take() hands each to the listener that would bind it, finish()
 *     (after the first reconcile) confirms and closes what nobody took;
 *   as the running agent: serve() answers the next successor: the phase goes
 *     handing-over (enrollment waits), then draining once it adopted, or back
 *     to running if it did not.
 */
import type { NativeAddon } from '../datapath/native-api.js';
import { HandoverServer, requestHandover, type HandoverEntry, type Inherited } from '../lifecycle/handover.js';
import { verifyAgentPeer } from '../lifecycle/peer.js';
import { droppedRecordCounters, recordFromWire } from '../lifecycle/records.js';
import type { TrackedConnection } from '../proxy/connections.js';
import { AmbientError, errorMessage } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { AgentLifecycle } from './phase.js';

/** config_dump "handover" (less `socket` and `draining`). */
export interface HandoverInfo {
  /** pid of the agent we took over from */
  from: number | null;
  /** listening sockets adopted from it */
  adopted: number;
  rejected: Array<{ listener: string; reason: string }>;
  /** its sockets nobody took (pods gone since) */
  unused: number;
  /** pid of the agent that took over from us */
  handedTo: number | null;
  /** connection records our predecessor sent while it drained */
  recordsImported: number;
}

export interface HandoverDeps {
  /** the hand-over socket (null: no hand-over) */
  socket: string | null;
  node: string;
  adoptTimeoutMs: number;
  native: NativeAddon;
  log: Logger;
  count(reason: string): void;
  lifecycle: AgentLifecycle;
  /** waits for the reconcile in progress */
  settle(): Promise<void>;
  /** every listening socket of this agent (pods and node) */
  listeners(): Array<{ entry: HandoverEntry; fd: number }>;
  /** the successor did not take over: the enrollment changes that waited run */
  resume(): void;
  /** the successor serves: drain */
  drain(reason: string): void;
  /** a connection that closed while our predecessor drained */
  onRecord(rec: TrackedConnection): void;
}

export class Handover {
  readonly info: HandoverInfo = { from: null, adopted: 0, rejected: [], unused: 0, handedTo: null, recordsImported: 0 };
  /** listening sockets taken from the previous agent (until finish()) */
  private inherited: Inherited | null = null;
  private server: HandoverServer | null = null;

  constructor(private readonly d: HandoverDeps) {}

  /**
   * Takes the listening sockets of the agent already running on this node
   * (restart, rolling update). A failure is logged and counted, and the
   * agent starts as if it were the first.
   */
  takeOver(): void {
    const sock = this.d.socket;
    if (!sock) return;
    try {
      this.inherited = requestHandover(this.d.native, sock, this.d.node, { verifyPeer: verifyAgentPeer });
      if (this.inherited) {
        this.info.from = this.inherited.fromPid;
        this.d.log.info('taking over from the running agent', { pid: this.inherited.fromPid, sockets: this.inherited.size });
      }
    } catch (e) {
      this.d.count('handover_failed');
      this.d.log.warn('hand-over from the running agent failed; starting on fresh sockets', { socket: sock, error: errorMessage(e) });
    }
  }

  /** The predecessor's listening socket for this listener, if it is what we would bind (the fd is then the caller's). */
  take(kind: 'pod' | 'node', role: string, want: { ip: string; port: number; key?: string; netnsInode?: bigint | null }): number | null {
    return this.inherited?.take(kind, role, want) ?? null;
  }

  /** Every socket of the predecessor's listener (one per worker it had), at most `max`, each checked like take(). */
  takeAll(kind: 'pod' | 'node', role: string, want: { ip: string; port: number; key?: string; netnsInode?: bigint | null }, max?: number): number[] {
    return this.inherited?.takeAll(kind, role, want, max) ?? [];
  }

  /** A taken socket serves. */
  adopted(): void {
    this.info.adopted++;
  }

  /**
   * After the first reconcile: tells the old agent we serve on its sockets
   * and waits for its confirmation (it may have given up on us: past its
   * handoverTimeout it carries on, and then this agent must not serve too);
   * then we serve the hand-over socket ourselves.
   */
  async finish(): Promise<void> {
    const inh = this.inherited;
    const log = this.d.log;
    if (inh) {
      this.inherited = null;
      const unused = inh.closeRest();
      this.info.unused = unused.length;
      for (const r of inh.rejected) {
        this.d.count('handover_socket_rejected');
        this.info.rejected.push({ listener: `${r.entry.kind}/${r.entry.key ?? ''}/${r.entry.role}`, reason: r.reason });
        log.warn('inherited socket not usable; bound a new one', { listener: r.entry, reason: r.reason });
      }
      const confirmed = inh.ack();
      if (!confirmed.ok) {
        this.d.count('handover_failed');
        throw new AmbientError(
          'HANDOVER_ABORTED',
          `the running agent (pid ${inh.fromPid}) did not confirm the hand-over: ${confirmed.reason}`,
          'it gave up waiting (handoverTimeout) and serves on; this agent exits so the two never serve together. Its supervisor restarts it and the next hand-over starts afresh',
        );
      }
      this.d.count('handover_adopted');
      log.info('took over the listening sockets', { from: inh.fromPid, adopted: this.info.adopted, rejected: inh.rejected.length, unused: unused.length });
    }
    await this.serve();
  }

  /** Serves the hand-over socket for the next successor. */
  private async serve(): Promise<void> {
    const d = this.d;
    if (!d.socket) return;
    const hs = new HandoverServer({
      native: d.native,
      socketPath: d.socket,
      node: d.node,
      log: d.log.child('handover'),
      adoptTimeoutMs: d.adoptTimeoutMs,
      verifyPeer: verifyAgentPeer,
      onPeerRejected: (why) => {
        d.count('handover_peer_rejected');
        d.log.once(
          `handover_peer_rejected:${why.replace(/\d+/g, 'N')}`,
          'warn',
          'hand-over socket: peer refused (only an ambientd agent of this node, uid 0, may take part)',
          { reason: why },
        );
      },
      listeners: async () => {
        // no enrollment while a successor takes the sockets: it would bind
        // a pod's ports the successor binds too (policy still applies)
        if (!d.lifecycle.tryMoveTo('handing-over')) {
          throw new AmbientError(
            'HANDOVER_REFUSED',
            `a successor asked for the sockets while this agent is ${d.lifecycle.phase}`,
            'it starts on fresh sockets; nothing to do',
          );
        }
        await d.settle();
        return d.listeners();
      },
      onAdopted: (pid) => {
        this.info.handedTo = pid;
        d.log.info('the new agent serves on our sockets; draining', { pid });
        d.drain('handover');
      },
      // connections our predecessor drained: counted here, where Prometheus scrapes now
      // (versioned: src/lifecycle/records.ts; one of another or no version is refused and counted apart)
      onRecord: (raw, pid) => {
        const r = recordFromWire(raw);
        if (!r.ok) {
          for (const c of droppedRecordCounters(r.error)) d.count(c);
          d.log.once(`handover_record:${r.error.code}:${r.error.field ?? ''}`, 'warn', 'connection record from the agent we replaced dropped', {
            pid,
            error: r.error.toJSON(),
          });
          return;
        }
        this.info.recordsImported++;
        d.onRecord(r.rec);
      },
      onBadRecord: (pid, why) => {
        d.count('handover_record_invalid');
        d.log.warn('bad connection record on the hand-over socket', { pid, why });
      },
      onAborted: (pid, reason) => {
        d.count('handover_aborted');
        d.log.warn('the new agent did not take over; serving on', { pid, reason });
        if (d.lifecycle.phase !== 'handing-over') return;
        d.lifecycle.moveTo('running');
        d.resume();
      },
    });
    try {
      await hs.start();
      this.server = hs;
    } catch (e) {
      d.count('handover_failed');
      d.log.warn('cannot serve the hand-over socket: the next restart will refuse connections while it starts', { socket: d.socket, error: errorMessage(e) });
    }
  }

  /** A successor took over from us. */
  get handedOver(): boolean {
    return this.info.handedTo !== null;
  }

  /** Stops answering successors. */
  close(): void {
    this.server?.close();
  }

  /** We stop before finish(): the old agent carries on. */
  abort(reason: string): void {
    this.inherited?.abort(reason);
  }
}
