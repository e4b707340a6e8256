/**
 * Enrollment prober, run inside a not-yet-enrolled pod by bench/run.ts:
 *
 *   node dist/bench/prober.js [HOST] [PORT] [INTERVAL_MS]     (default 10.250.0.1 80 1)
 *
 * Every INTERVAL_MS it starts a new TCP connect to HOST:PORT, an address with
 * no route. Before the pod is enrolled those connects fail (ENETUNREACH from
 * the node's ICMP, or they hang once the node rate-limits its ICMP errors);
 * once the agent has attached the pod's cgroup/connect4 hook, connect() is
 * rewritten to the agent's outbound listener inside the pod and succeeds.
 *
 * A new attempt is started on a fixed cadence whatever happened to the earlier
 * ones: an attempt that is already in SYN_SENT when the hook gets attached is
 * never redirected, so waiting for failures would measure ICMP rate limits.
 *
 * stdout, one line each:
 *   ready <why>                           once direct connects are seen not to work
 *   ok <t_connected> <t_issued> <attempts> <failures>   first success (epoch ms, sub-ms)
 *   early <...same fields>                a connect succeeded before "ready": the pod was already enrolled
 * Exits 0 after the first success, 3 after 60 s without one.
 */
import net from 'node:net';

const [host = '10.250.0.1', portArg = '80', intervalArg = '1'] = process.argv.slice(2);
const port = Number(portArg);
const intervalMs = Math.max(1, Number(intervalArg));
/** Epoch milliseconds with sub-millisecond resolution, comparable across processes. */
const now = (): number => performance.timeOrigin + performance.now();

let ready = false;
let done = false;
let attempts = 0;
let failures = 0;

function markReady(why: string): void {
  if (ready) return;
  ready = true;
  process.stdout.write(`ready ${why}\n`);
}

function attempt(): void {
  if (done) return;
  attempts++;
  const issued = now();
  const s = net.connect({ host, port });
  // An attempt stuck in SYN_SENT (ICMP rate-limited) is dropped after a while.
  const timer = setTimeout(() => s.destroy(), 250);
  s.once('connect', () => {
    clearTimeout(timer);
    const t = now();
    s.destroy();
    if (done) return;
    done = true;
    // stdout is a pipe: writes are synchronous on Linux, so exit() loses nothing.
    process.stdout.write(`${ready ? 'ok' : 'early'} ${t.toFixed(3)} ${issued.toFixed(3)} ${attempts} ${failures}\n`);
    process.exit(0);
  });
  s.once('error', (e: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    failures++;
    s.destroy();
    markReady(`direct connect failed: ${e.code ?? e.message}`);
  });
}

setInterval(attempt, intervalMs);
attempt();
// The node may rate-limit its ICMP errors (connects then hang instead of
// failing); no success for 300 ms is just as good a sign of "not enrolled".
setTimeout(() => markReady('no connect succeeded for 300 ms'), 300);
setTimeout(() => {
  process.stderr.write(`prober: no successful connect to ${host}:${port} after 60 s (${attempts} attempts, ${failures} failures)\n`);
  process.exit(3);
}, 60_000).unref();
