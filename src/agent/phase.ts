/**
 * The agent's one lifecycle state, with its legal transitions:
 *
 *   starting ──> running <──> handing-over
 *      │            │              │
 *      └────────────┴──> draining <┘
 *      └────────────┴──────┴──────────> stopping ──> stopped
 *
 * starting: the datapath, listeners and the first reconcile; enrollment runs.
 * running: serving; enrollment follows the workload source.
 * handing-over: a successor is taking our sockets; enrollment waits (it would
 *   bind a pod's ports the successor binds too), the model and policy apply.
 * draining: the successor serves, or SIGTERM; established connections run on
 *   and are still re-checked against policy; no enrollment.
 * stopping/stopped: nothing is applied any more.
 *
 * Everything that used to be a flag (discovered, stopped, "a drain began")
 * is a question to this one state.
 */
import { EventEmitter } from 'node:events';
import { AmbientError } from '../util/errors.js';

export type AgentPhase = 'starting' | 'running' | 'handing-over' | 'draining' | 'stopping' | 'stopped';

const NEXT: Readonly<Record<AgentPhase, readonly AgentPhase[]>> = {
  starting: ['running', 'draining', 'stopping'],
  running: ['handing-over', 'draining', 'stopping'],
  'handing-over': ['running', 'draining', 'stopping'],
  draining: ['stopping'],
  stopping: ['stopped'],
  stopped: [],
};

/** Whether `from -> to` is a legal transition. */
export function canMove(from: AgentPhase, to: AgentPhase): boolean {
  return NEXT[from].includes(to);
}

export interface LifecycleEvents {
  /** every transition, after it happened */
  phase: [to: AgentPhase, from: AgentPhase];
  /** the drain ended and the agent stopped: the process may exit */
  drained: [];
}

export class AgentLifecycle extends EventEmitter<LifecycleEvents> {
  private current: AgentPhase = 'starting';

  get phase(): AgentPhase {
    return this.current;
  }

  /** Moves to `to`; an illegal transition is a bug and throws (AGENT_PHASE). */
  moveTo(to: AgentPhase): void {
    if (!this.tryMoveTo(to)) {
      throw new AmbientError(
        'AGENT_PHASE',
        `illegal agent phase transition ${this.current} -> ${to}`,
        'a bug in ambientd: report it with the agent log (the supervisor restarts the agent; the datapath fails closed meanwhile)',
      );
    }
  }

  /** Moves to `to` when that is legal from here; false (and no change) when not. */
  tryMoveTo(to: AgentPhase): boolean {
    const from = this.current;
    if (!canMove(from, to)) return false;
    this.current = to;
    this.emit('phase', to, from);
    return true;
  }

  is(...phases: AgentPhase[]): boolean {
    return phases.includes(this.current);
  }

  /** Enrollment changes apply now (else they wait for the end of a hand-over, or are moot). */
  get enrolling(): boolean {
    return this.current === 'starting' || this.current === 'running';
  }

  /** stop() began: nothing is applied any more. */
  get stopped(): boolean {
    return this.current === 'stopping' || this.current === 'stopped';
  }
}
