/**
 * Prometheus metrics of the agent, on its own registry (never prom-client's
 * global one): the Istio-standard TCP metrics, derived from connection
 * records (ConnectionTracker 'open'/'close') and the mesh model, plus agent
 * health metrics read at scrape time.
 *
 * Istio semantics (see docs: reference "Metrics"); the labels of a record
 * come from src/metrics/record-view.ts, which also makes the access-log line:
 *  - reporter="source" for outbound records, "destination" for inbound: a
 *    cross-node flow is counted once by each agent.
 *  - opened_total counts on 'open' (response_flags "-": flags are only known
 *    at the end); closed_total and the byte counters on 'close', with the
 *    record's final response_flags. Bytes are application bytes: sent =
 *    client -> destination, received = destination -> client.
 *  - failed_total counts connections that could not be established: denied
 *    (DENY), upstream connect failures (CONNECT), HBONE TLS failures
 *    (TLS_FAILURE) and a cap of the agent (UO). A reset of an established
 *    connection is a close with "-".
 *  - principals are SPIFFE ids only when mutual TLS (HBONE) proves them.
 *  - trusted inputs only (docs/SECURITY.md): the source address is the TCP
 *    peer the kernel reports, never a header; on inbound mTLS the source
 *    workload is the pod at that address only if it has the identity the
 *    peer's certificate proved (else "unknown", with the proven principal).
 * Cardinality is bounded: no label carries a port, address or connection id.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ConnectionTracker, TrackedConnection } from '../proxy/connections.js';
import type { MeshIndex, PodInfo } from '../discovery/model.js';
import { denialReason, ISTIO_LABELS, recordContext, recordView, type IstioLabel, type IstioLabels } from './record-view.js';

export {
  ISTIO_LABELS,
  UNKNOWN,
  CLUSTER,
  workloadName,
  canonicalService,
  canonicalRevision,
  responseFlags,
  denialReason,
  type IstioLabel,
  type IstioLabels,
  type ResponseFlag,
} from './record-view.js';

/**
 * The Istio label set of a record, from the record and the mesh model.
 * `spiffeOf` gives a pod's SPIFFE id (the agent's own pods' identities).
 */
export function istioLabels(rec: TrackedConnection, index: MeshIndex, spiffeOf: (p: PodInfo) => string): IstioLabels {
  return recordView(rec, recordContext(index, spiffeOf)).labels;
}

export interface MetricsSource {
  index(): MeshIndex;
  spiffeOf(p: PodInfo): string;
  /** local pods of this node and their state */
  pods(): Array<{ namespace: string; name: string; state: string }>;
  certificates(): Array<{ id: string; notAfter: string | null }>;
  /** BPF per-pod redirect counters of enrolled pods */
  podStats(): Array<{ namespace: string; name: string; stats: Record<string, bigint | number> }>;
  /** BPF refusals by reason (amb_counters); null when unreadable */
  datapathCounters?(): Record<string, bigint> | null;
  /** what the agent holds now (sockets, sessions, streams) and the limits hit */
  resources?(): ResourceSample;
  /** the data-plane worker threads (none with workers: 0) */
  workers?(): Array<{ index: number; running: boolean; served: number; open: number; restarts: number }>;
}

export interface ResourceSample {
  sockets: { source: number; destination: number };
  hbone: { serverSessions: number; clientSessions: number; serverStreams: number; clientStreams: number; streamWindow: number | null };
  limitsHit: Record<string, number>;
}

const POD_STATES = ['enrolled', 'isolated', 'failed', 'not-enrolled'] as const;

function snake(k: string): string {
  return k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export class AgentMetrics {
  readonly registry = new Registry();
  readonly opened: Counter<IstioLabel>;
  readonly closed: Counter<IstioLabel>;
  readonly sent: Counter<IstioLabel>;
  readonly received: Counter<IstioLabel>;
  readonly failed: Counter<IstioLabel>;
  readonly denied: Counter<'reason'>;
  readonly events: Counter<'reason'>;
  readonly enrollFailures: Counter<'reason'>;

  constructor(
    private readonly src: MetricsSource,
    opts: { defaultMetrics?: boolean } = {},
  ) {
    const r = this.registry;
    const labelNames = [...ISTIO_LABELS];
    const c = (name: string, help: string): Counter<IstioLabel> => new Counter({ name, help, labelNames, registers: [r] });
    this.opened = c('istio_tcp_connections_opened_total', 'TCP connections opened (Istio standard metric)');
    this.closed = c('istio_tcp_connections_closed_total', 'TCP connections closed (Istio standard metric)');
    this.sent = c('istio_tcp_sent_bytes_total', 'Bytes sent by the client towards the destination on TCP connections (Istio standard metric)');
    this.received = c('istio_tcp_received_bytes_total', 'Bytes sent by the destination back to the client on TCP connections (Istio standard metric)');
    this.failed = c('istio_tcp_connections_failed_total', 'TCP connections that could not be established: denied, connect or TLS failure (response_flags)');
    this.denied = new Counter({
      name: 'ambientd_denied_connections_total',
      help: 'Connections denied by authorization policy, by reason',
      labelNames: ['reason'],
      registers: [r],
    });
    this.events = new Counter({
      name: 'ambientd_agent_events_total',
      help: 'Agent events and failures by reason (the counters of /config_dump)',
      labelNames: ['reason'],
      registers: [r],
    });
    this.enrollFailures = new Counter({
      name: 'ambientd_pod_enroll_failures_total',
      help: 'Failed pod enrollments by error code; the pod is isolated (fails closed) until it is enrolled',
      labelNames: ['reason'],
      registers: [r],
    });
    new Counter({
      name: 'ambientd_datapath_refused_total',
      help: 'Connections the BPF datapath refused, by reason (amb_counters: native IPv6, isolated pods, addresses no pod owns, ...)',
      labelNames: ['reason'],
      registers: [r],
      collect() {
        this.reset();
        const c = src.datapathCounters?.() ?? null;
        if (c) for (const [k, v] of Object.entries(c)) this.inc({ reason: k }, Number(v));
      },
    });
    new Gauge({
      name: 'ambientd_enrolled_pods',
      help: 'Local pods enrolled in the mesh (redirection and listeners in place)',
      registers: [r],
      collect() {
        this.set(src.pods().filter((p) => p.state === 'enrolled').length);
      },
    });
    new Gauge({
      name: 'ambientd_pod_state',
      help: 'State of each local pod (1 for its current state, 0 for the others)',
      labelNames: ['namespace', 'pod', 'state'],
      registers: [r],
      collect() {
        this.reset();
        for (const p of src.pods()) for (const s of POD_STATES) this.set({ namespace: p.namespace, pod: p.name, state: s }, p.state === s ? 1 : 0);
      },
    });
    new Gauge({
      name: 'ambientd_certificate_expiry_timestamp_seconds',
      help: 'notAfter of each workload certificate the agent holds, Unix seconds',
      labelNames: ['identity'],
      registers: [r],
      collect() {
        this.reset();
        for (const cert of src.certificates()) {
          const t = cert.notAfter ? Date.parse(cert.notAfter) : NaN;
          if (Number.isFinite(t)) this.set({ identity: cert.id }, Math.floor(t / 1000));
        }
      },
    });
    new Counter({
      name: 'ambientd_bpf_redirect_total',
      help: 'BPF datapath per-pod counters (captured/refused/bypassed connections), read from the pinned stats map',
      labelNames: ['namespace', 'pod', 'counter'],
      registers: [r],
      collect() {
        this.reset();
        for (const p of src.podStats()) {
          for (const [k, v] of Object.entries(p.stats)) {
            const n = Number(v);
            if (n > 0) this.inc({ namespace: p.namespace, pod: p.name, counter: snake(k) }, n);
            else this.inc({ namespace: p.namespace, pod: p.name, counter: snake(k) }, 0);
          }
        }
      },
    });
    new Gauge({
      name: 'istio_tcp_sockets_open',
      help: 'TCP sockets of the data path open now (ztunnel): source = outbound side, destination = inbound side',
      labelNames: ['reporter'],
      registers: [r],
      collect() {
        const x = src.resources?.();
        if (!x) return;
        this.set({ reporter: 'source' }, x.sockets.source);
        this.set({ reporter: 'destination' }, x.sockets.destination);
      },
    });
    new Gauge({
      name: 'ambientd_hbone_sessions',
      help: 'HBONE sessions (HTTP/2 over mutual TLS) open now, by side',
      labelNames: ['side'],
      registers: [r],
      collect() {
        const x = src.resources?.();
        if (!x) return;
        this.set({ side: 'server' }, x.hbone.serverSessions);
        this.set({ side: 'client' }, x.hbone.clientSessions);
      },
    });
    new Gauge({
      name: 'ambientd_hbone_streams',
      help: 'HBONE streams (tunnelled connections) open now, by side',
      labelNames: ['side'],
      registers: [r],
      collect() {
        const x = src.resources?.();
        if (!x) return;
        this.set({ side: 'server' }, x.hbone.serverStreams);
        this.set({ side: 'client' }, x.hbone.clientStreams);
      },
    });
    new Gauge({
      name: 'ambientd_hbone_stream_window_bytes',
      help: 'Per-stream HTTP/2 window every HBONE session advertises now (limits.receiveBuffer split over open streams)',
      registers: [r],
      collect() {
        const w = src.resources?.().hbone.streamWindow;
        if (typeof w === 'number') this.set(w);
      },
    });
    new Counter({
      name: 'ambientd_limit_hits_total',
      help: 'Connections, sessions or handshakes refused because a limit (limits.*) was hit',
      labelNames: ['limit'],
      registers: [r],
      collect() {
        this.reset();
        const x = src.resources?.();
        if (x) for (const [k, v] of Object.entries(x.limitsHit)) this.inc({ limit: k }, v);
      },
    });
    new Gauge({
      name: 'ambientd_workers',
      help: 'Data-plane worker threads running now (workers setting; 0 with workers: 0, where the main thread carries the traffic)',
      registers: [r],
      collect() {
        this.set((src.workers?.() ?? []).filter((w) => w.running).length);
      },
    });
    new Counter({
      name: 'ambientd_worker_connections_total',
      help: 'Connections each data-plane worker took (the kernel spreads them over the SO_REUSEPORT group of every pod listener)',
      labelNames: ['worker'],
      registers: [r],
      collect() {
        this.reset();
        for (const w of src.workers?.() ?? []) this.inc({ worker: String(w.index) }, w.served);
      },
    });
    new Gauge({
      name: 'ambientd_worker_connections_open',
      help: 'Connections open now on each data-plane worker',
      labelNames: ['worker'],
      registers: [r],
      collect() {
        for (const w of src.workers?.() ?? []) this.set({ worker: String(w.index) }, w.open);
      },
    });
    new Counter({
      name: 'ambientd_worker_restarts_total',
      help: 'Data-plane workers that died and were replaced (their connections were lost: ambientd_agent_events_total{reason="worker_connections_lost"})',
      labelNames: ['worker'],
      registers: [r],
      collect() {
        this.reset();
        for (const w of src.workers?.() ?? []) this.inc({ worker: String(w.index) }, w.restarts);
      },
    });
    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: r });
      // gauges named *_total fail `promtool check metrics`; the per-type gauges without the suffix stay
      for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) r.removeSingleMetric(n);
    }
  }

  /** Counts every record of the tracker from now on. */
  observe(tracker: ConnectionTracker): void {
    tracker.on('open', (rec: TrackedConnection) => this.onOpen(rec));
    tracker.on('close', (rec: TrackedConnection) => this.onClose(rec));
  }

  private labels(rec: TrackedConnection): IstioLabels {
    return istioLabels(rec, this.src.index(), (p) => this.src.spiffeOf(p));
  }

  onOpen(rec: TrackedConnection): void {
    this.opened.inc({ ...this.labels(rec), response_flags: '-' });
  }

  /** A record that ended (here, or at the agent we replaced while it drained). */
  onClose(rec: TrackedConnection): void {
    const l = this.labels(rec);
    this.closed.inc(l);
    if (rec.bytesSent > 0) this.sent.inc(l, rec.bytesSent);
    else this.sent.inc(l, 0);
    if (rec.bytesReceived > 0) this.received.inc(l, rec.bytesReceived);
    else this.received.inc(l, 0);
    if (l.response_flags !== '-') this.failed.inc(l);
    const why = denialReason(rec);
    if (why) this.denied.inc({ reason: why });
  }

  countEvent(reason: string, n = 1): void {
    this.events.inc({ reason }, n);
  }

  countEnrollFailure(code: string): void {
    this.enrollFailures.inc({ reason: code });
  }

  contentType(): string {
    return this.registry.contentType;
  }

  exposition(): Promise<string> {
    return this.registry.metrics();
  }
}
