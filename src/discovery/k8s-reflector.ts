// Over 500 lines on purpose: one list+watch state machine (paging, bookmarks, 410 Gone, back-off, stream parsing) over its private fields.
/**
 * One Kubernetes collection kept in memory by list+watch (a "reflector", in
 * client-go terms), on raw JSON objects so the mapping layer sees exactly what
 * the API server sent and can name malformed fields.
 *
 * - list: paginated (limit/continue), no resourceVersion (a consistent read);
 *   the result replaces the whole collection in one step, so a relist never
 *   shows a half-empty state;
 * - watch: from the list's (or last event's / bookmark's) resourceVersion, with
 *   allowWatchBookmarks=true and a randomised server-side timeoutSeconds; a
 *   normal end of the stream re-watches from the last resourceVersion;
 * - 410 Gone (HTTP status, or an ERROR event carrying a 410 Status, or an
 *   expired continue token) -> relist; the old objects are served meanwhile;
 * - connection errors, other HTTP errors, garbage on the stream -> 'error'
 *   and a re-watch (from the last resourceVersion) after an exponential
 *   back-off with jitter;
 * - optional collections (a CRD that may be absent): 404 -> "absent": the
 *   collection is empty, counts as synced, and the list is retried every
 *   absentRetryMs.
 *
 * The library's ListWatch/makeInformer is not used: it has no bookmarks, no
 * back-off (it stops on the first non-410 error), no pagination, and it lists
 * through the generated clients, which deserialise into typed models (Dates,
 * renamed keys) while watch events stay raw JSON.
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { AmbientError } from '../util/errors.js';
import { isAbsent, isObj } from '../util/fields.js';
import type { Logger } from '../util/log.js';

export type KObject = Record<string, unknown> & { metadata?: Record<string, unknown> };

export interface ReflectorHandlers {
  /** the full collection after a (re)list; keys are "namespace/name" (or "name" when cluster-scoped) */
  replace(items: Map<string, KObject>, invalid: Array<{ where: string; problem: string }>): void;
  upsert(key: string, obj: KObject): void;
  remove(key: string, obj: KObject): void;
  /** an object on the watch stream that cannot be keyed (no metadata.name) */
  invalid(where: string, problem: string): void;
  /** first complete list (or "absent") */
  synced(): void;
  error(err: KubernetesApiError): void;
}

export interface ReflectorOptions {
  kubeConfig: KubeConfig;
  /** e.g. /api/v1/pods */
  path: string;
  /** kind, for messages */
  kind: string;
  /** 404 means "not installed" (CRDs) rather than an error */
  optional: boolean;
  log: Logger;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** list page size (limit=) */
  pageSize: number;
  /** server-side watch timeout; each watch picks a random value in [t, 2t) */
  watchTimeoutSeconds: number;
  /** retry period while an optional collection is absent */
  absentRetryMs: number;
  /** per-request timeout for list pages */
  requestTimeoutMs: number;
  handlers: ReflectorHandlers;
}

function apiHint(statusCode: number | undefined): string {
  if (statusCode === 401) return 'the API server refused the credentials: check the ServiceAccount token (or the kubeconfig user); the watch retries meanwhile';
  if (statusCode === 403) return 'RBAC forbids it: apply deploy/rbac.yaml (list and watch on the watched resources); the watch retries meanwhile';
  if (statusCode === 404) return 'the resource is not served (a CRD not installed?); the watch retries meanwhile';
  return 'the watch retries with back-off and the last state is served; check that the API server is reachable from the node';
}

/** An API failure: HTTP status (if any), the API Status reason/message, or the transport error. Code K8S_API. */
export class KubernetesApiError extends AmbientError {
  constructor(
    message: string,
    readonly path: string,
    readonly statusCode?: number,
    readonly reason?: string,
    opts?: { cause?: unknown },
  ) {
    super('K8S_API', message, apiHint(statusCode), opts);
    this.name = 'KubernetesApiError';
  }
}

/** The reflector was stopped: ends the loop quietly (never leaves this module). */
class Stopped extends AmbientError {
  constructor() {
    super('K8S_API', 'stopped', 'none: the source was stopped');
  }
}

interface WatchOutcome {
  kind: 'closed' | 'gone';
  events: number;
  durationMs: number;
}

/** Key of an object: "namespace/name", or "name" for cluster-scoped objects; null when unkeyable. */
export function objectKey(obj: unknown): string | null {
  if (!isObj(obj)) return null;
  const md = obj.metadata;
  if (!isObj(md)) return null;
  const name = md.name;
  const ns = md.namespace;
  if (typeof name !== 'string' || name === '') return null;
  if (isAbsent(ns) || ns === '') return name;
  if (typeof ns !== 'string') return null;
  return `${ns}/${name}`;
}

function rvOf(obj: unknown): string | undefined {
  const md = (obj as KObject | null)?.metadata;
  const rv = isObj(md) ? md.resourceVersion : undefined;
  return typeof rv === 'string' && rv !== '' ? rv : undefined;
}

function statusText(body: string): { reason?: string; message?: string; code?: number } {
  try {
    const s = JSON.parse(body) as Record<string, unknown>;
    if (s && s.kind === 'Status') {
      return {
        ...(typeof s.reason === 'string' ? { reason: s.reason } : {}),
        ...(typeof s.message === 'string' ? { message: s.message } : {}),
        ...(typeof s.code === 'number' ? { code: s.code } : {}),
      };
    }
  } catch {
    /* not a Status */
  }
  return { message: body.slice(0, 200) };
}

export class Reflector {
  private rv: string | null = null;
  private stopped = false;
  private running = false;
  private syncedOnce = false;
  private absentLogged = false;
  private absent = false;
  private req: http.ClientRequest | null = null;
  private sleepTimer: NodeJS.Timeout | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  /** the watch in progress once its response arrived (for back-off resets) */
  private lastWatch: { started: number; events: number } | null = null;
  private sleepWake: (() => void) | null = null;
  /** counters, for the admin page and tests */
  readonly stats = { lists: 0, watches: 0, events: 0, bookmarks: 0, relists: 0, errors: 0 };

  constructor(private readonly o: ReflectorOptions) {}

  get resourceVersion(): string | null {
    return this.rv;
  }

  start(): void {
    if (this.running || this.stopped) return;
    this.running = true;
    void this.loop()
      .catch((e: unknown) => this.o.log.error('reflector loop failed; restarting', { resource: this.o.path, error: e }))
      .finally(() => {
        this.running = false;
        if (!this.stopped)
          this.restartTimer = setTimeout(() => {
            this.restartTimer = null;
            this.start();
          }, this.o.backoffMaxMs);
      });
  }

  stop(): void {
    this.stopped = true;
    if (this.req) {
      this.req.destroy();
      this.req = null;
    }
    if (this.sleepTimer) {
      clearTimeout(this.sleepTimer);
      this.sleepTimer = null;
    }
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
    }
    const wake = this.sleepWake;
    this.sleepWake = null;
    wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve();
      this.sleepWake = resolve;
      this.sleepTimer = setTimeout(() => {
        this.sleepTimer = null;
        this.sleepWake = null;
        resolve();
      }, ms);
    });
  }

  private backoff(attempt: number): number {
    const base = Math.min(this.o.backoffMaxMs, this.o.backoffInitialMs * 2 ** Math.min(attempt, 20));
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  private fail(err: KubernetesApiError): void {
    this.stats.errors++;
    try {
      this.o.handlers.error(err);
    } catch {
      /* a handler never takes the loop down */
    }
  }

  private async loop(): Promise<void> {
    let attempt = 0;
    let gone = 0;
    while (!this.stopped) {
      try {
        if (this.rv === null) {
          await this.list();
          attempt = 0;
        }
        const out = await this.watch();
        this.lastWatch = null;
        const healthy = out.events > 0 || out.durationMs >= 1000;
        if (healthy) gone = 0;
        if (out.kind === 'gone') {
          this.o.log.info('watch expired (410 Gone), relisting; the last state is served meanwhile', { resource: this.o.path });
          this.rv = null;
          this.stats.relists++;
          if (gone++ > 0) await this.sleep(this.backoff(gone - 1));
          continue;
        }
        gone = 0;
        // A healthy watch (events, or it lasted) re-watches at once; a stream
        // that ends immediately with nothing is treated like an error.
        if (healthy) attempt = 0;
        else await this.sleep(this.backoff(attempt++));
      } catch (e) {
        if (this.stopped || e instanceof Stopped) return;
        // a watch that had been working before it broke starts the back-off afresh
        const w = this.lastWatch;
        if (w && (w.events > 0 || Date.now() - w.started >= 1000)) {
          attempt = 0;
          gone = 0;
        }
        this.lastWatch = null;
        const err =
          e instanceof KubernetesApiError
            ? e
            : new KubernetesApiError(`${this.o.kind}: ${(e as Error).message}`, this.o.path, undefined, undefined, { cause: e });
        if (err.statusCode === 404 && this.o.optional) {
          this.becomeAbsent();
          await this.sleep(this.o.absentRetryMs);
          continue;
        }
        if (err.statusCode === 410) {
          // expired resourceVersion on watch, or continue token during a list
          this.rv = null;
          this.stats.relists++;
          if (gone++ > 0) await this.sleep(this.backoff(gone - 1));
          continue;
        }
        this.fail(err);
        await this.sleep(this.backoff(attempt++));
      }
    }
  }

  private becomeAbsent(): void {
    this.rv = null;
    if (!this.absentLogged) {
      this.absentLogged = true;
      this.o.log.warn(`${this.o.kind} is not served by the API server (CRD not installed?); treating it as empty and retrying`, {
        resource: this.o.path,
        retryMs: this.o.absentRetryMs,
      });
    }
    if (!this.absent || !this.syncedOnce) {
      this.absent = true;
      this.o.handlers.replace(new Map(), []);
      this.markSynced();
    }
  }

  private markSynced(): void {
    if (this.syncedOnce) return;
    this.syncedOnce = true;
    this.o.handlers.synced();
  }

  /** Opens a GET; resolves with the response once headers arrived. */
  private async request(
    query: Record<string, string>,
    timeoutMs: number,
    untilResponse: boolean,
  ): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
    const kc = this.o.kubeConfig;
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new KubernetesApiError('kubeconfig has no current cluster', this.o.path);
    const url = new URL(cluster.server.replace(/\/+$/, '') + this.o.path);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const opts: https.RequestOptions = { headers: {} };
    await kc.applyToHTTPSOptions(opts);
    if (this.stopped) throw new Stopped();
    const headers: http.OutgoingHttpHeaders = { ...(opts.headers as http.OutgoingHttpHeaders), accept: 'application/json', 'user-agent': 'ambientd/discovery' };
    const mod = url.protocol === 'https:' ? https : http;
    return await new Promise((resolve, reject) => {
      const req = mod.request(url, { method: 'GET', headers, agent: opts.agent, ...(opts.auth ? { auth: opts.auth } : {}) });
      this.req = req;
      // lists: the whole exchange; watches: until the response headers
      const timer = setTimeout(
        () => req.destroy(new KubernetesApiError(`no ${untilResponse ? 'response' : 'complete response'} in ${timeoutMs} ms`, this.o.path)),
        timeoutMs,
      );
      req.once('close', () => clearTimeout(timer));
      if (untilResponse) req.once('response', () => clearTimeout(timer));
      req.on('socket', (s) => s.setKeepAlive(true, 30_000));
      req.on('error', (e) =>
        reject(
          this.stopped
            ? new Stopped()
            : new KubernetesApiError(`${this.o.kind}: GET ${url.pathname}: ${e.message}`, this.o.path, undefined, undefined, { cause: e }),
        ),
      );
      req.once('response', (res) => resolve({ req, res }));
      req.end();
    });
  }

  private readBody(res: http.IncomingMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.on('error', (e) => reject(e));
      res.once('close', () => {
        if (!res.complete) reject(this.stopped ? new Stopped() : new KubernetesApiError('connection closed before the response was complete', this.o.path));
      });
    });
  }

  private httpError(res: http.IncomingMessage, body: string, verb: string): KubernetesApiError {
    const st = statusText(body);
    const code = res.statusCode ?? 0;
    return new KubernetesApiError(
      `${this.o.kind}: ${verb} ${this.o.path}: HTTP ${code}${st.reason ? ` ${st.reason}` : ''}${st.message ? `: ${st.message}` : ''}`,
      this.o.path,
      code,
      st.reason,
    );
  }

  private async list(): Promise<void> {
    const items = new Map<string, KObject>();
    const invalid: Array<{ where: string; problem: string }> = [];
    let cont: string | undefined;
    let rv = '';
    let index = 0;
    this.stats.lists++;
    do {
      const q: Record<string, string> = { limit: String(this.o.pageSize) };
      if (cont) q.continue = cont;
      const { res } = await this.request(q, this.o.requestTimeoutMs, false);
      let body: string;
      try {
        body = await this.readBody(res);
      } catch (e) {
        if (e instanceof Stopped || this.stopped) throw new Stopped();
        throw new KubernetesApiError(`${this.o.kind}: list ${this.o.path}: ${(e as Error).message}`, this.o.path, undefined, undefined, { cause: e });
      } finally {
        this.req = null;
      }
      if (res.statusCode !== 200) throw this.httpError(res, body, 'list');
      let doc: Record<string, unknown>;
      try {
        doc = JSON.parse(body) as Record<string, unknown>;
      } catch (e) {
        throw new KubernetesApiError(`${this.o.kind}: list ${this.o.path}: response is not JSON: ${(e as Error).message}`, this.o.path, 200);
      }
      if (!isObj(doc) || !Array.isArray(doc.items)) {
        throw new KubernetesApiError(`${this.o.kind}: list ${this.o.path}: response has no "items" list`, this.o.path, 200);
      }
      const md = (doc.metadata ?? {}) as Record<string, unknown>;
      for (const it of doc.items as unknown[]) {
        const k = objectKey(it);
        if (k === null) invalid.push({ where: `items[${index}]`, problem: 'metadata.name/namespace: missing or not a string' });
        else items.set(k, it as KObject);
        index++;
      }
      cont = typeof md.continue === 'string' && md.continue !== '' ? md.continue : undefined;
      if (typeof md.resourceVersion === 'string') rv = md.resourceVersion;
    } while (cont);
    if (this.stopped) throw new Stopped();
    if (this.absent) {
      this.absent = false;
      this.absentLogged = false;
      this.o.log.info(`${this.o.kind} is now served by the API server`, { resource: this.o.path });
    }
    this.rv = rv;
    this.o.handlers.replace(items, invalid);
    this.markSynced();
  }

  private async watch(): Promise<WatchOutcome> {
    const timeoutSeconds = this.o.watchTimeoutSeconds + Math.floor(Math.random() * this.o.watchTimeoutSeconds);
    const started = Date.now();
    this.stats.watches++;
    const { req, res } = await this.request(
      {
        watch: 'true',
        allowWatchBookmarks: 'true',
        resourceVersion: this.rv ?? '',
        timeoutSeconds: String(timeoutSeconds),
      },
      this.o.requestTimeoutMs,
      true,
    );
    if (res.statusCode !== 200) {
      let body = '';
      try {
        body = await this.readBody(res);
      } catch {
        /* status is enough */
      }
      this.req = null;
      throw this.httpError(res, body, 'watch');
    }
    const progress = { started, events: 0 };
    this.lastWatch = progress;
    return await new Promise<WatchOutcome>((resolve, reject) => {
      let events = 0;
      let buf = '';
      let done = false;
      let gone = false;
      // the server ends the stream after timeoutSeconds; if it does not, the
      // connection is dead (half-open) and is torn down
      const guard = setTimeout(
        () =>
          req.destroy(
            new KubernetesApiError(
              `${this.o.kind}: watch ${this.o.path}: did not end ${timeoutSeconds + 30} s after timeoutSeconds=${timeoutSeconds}`,
              this.o.path,
            ),
          ),
        (timeoutSeconds + 30) * 1000,
      );
      const finish = (err: Error | null): void => {
        if (done) return;
        done = true;
        clearTimeout(guard);
        if (this.req === req) this.req = null;
        if (!res.destroyed) res.destroy();
        if (this.stopped) return reject(new Stopped());
        if (gone) return resolve({ kind: 'gone', events, durationMs: Date.now() - started });
        if (err)
          return reject(
            err instanceof KubernetesApiError
              ? err
              : new KubernetesApiError(`${this.o.kind}: watch ${this.o.path}: ${err.message}`, this.o.path, undefined, undefined, { cause: err }),
          );
        resolve({ kind: 'closed', events, durationMs: Date.now() - started });
      };
      const onLine = (line: string): void => {
        if (line.trim() === '') return;
        let ev: { type?: unknown; object?: unknown };
        try {
          ev = JSON.parse(line) as { type?: unknown; object?: unknown };
        } catch {
          // the stream is out of step; start again from the last good resourceVersion
          finish(new KubernetesApiError(`${this.o.kind}: watch ${this.o.path}: event is not JSON: ${line.slice(0, 120)}`, this.o.path, 200));
          return;
        }
        const obj = ev.object as KObject | undefined;
        switch (ev.type) {
          case 'ADDED':
          case 'MODIFIED':
          case 'DELETED': {
            events++;
            progress.events++;
            this.stats.events++;
            const k = objectKey(obj);
            const rv = rvOf(obj);
            if (k === null) this.o.handlers.invalid(`watch event ${String(ev.type)}`, 'metadata.name/namespace: missing or not a string');
            else if (ev.type === 'DELETED') this.o.handlers.remove(k, obj!);
            else this.o.handlers.upsert(k, obj!);
            if (rv) this.rv = rv;
            return;
          }
          case 'BOOKMARK': {
            events++;
            progress.events++;
            this.stats.bookmarks++;
            const rv = rvOf(obj);
            if (rv) this.rv = rv;
            return;
          }
          case 'ERROR': {
            const st = (obj ?? {}) as Record<string, unknown>;
            if (st.code === 410) {
              gone = true;
              finish(null);
              return;
            }
            finish(
              new KubernetesApiError(
                `${this.o.kind}: watch ${this.o.path}: ERROR event: ${typeof st.code === 'number' ? `${st.code} ` : ''}${typeof st.reason === 'string' ? st.reason : ''}${typeof st.message === 'string' ? `: ${st.message}` : ''}`,
                this.o.path,
                typeof st.code === 'number' ? st.code : undefined,
                typeof st.reason === 'string' ? st.reason : undefined,
              ),
            );
            return;
          }
          default:
            this.o.log.debug('ignoring watch event of unknown type', { resource: this.o.path, type: ev.type });
        }
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while (!done && (nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          onLine(line);
        }
      });
      res.once('end', () => {
        if (!done && buf.trim() !== '') onLine(buf);
        finish(null);
      });
      res.on('error', (e) => finish(e));
      res.once('close', () => finish(res.complete ? null : new KubernetesApiError(`${this.o.kind}: watch ${this.o.path}: connection closed`, this.o.path)));
    });
  }
}
