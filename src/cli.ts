#!/usr/bin/env node
/**
 * ambientd command line: `agent`, `sandbox ...`, `demo`, `inspect`, `cleanup`.
 * Every failure prints "CODE: message" and a hint, and exits non-zero.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AmbientError, isAmbientError } from './util/errors.js';

const USAGE = `ambientd — sidecar-less service mesh node agent (eBPF datapath)

Usage:
  ambientd agent [--config FILE] [--node NAME] [--source file|kubernetes] [--workloads PATH] [flags]
  ambientd sandbox up [--nodes N] [--pods P] [--no-agents]
  ambientd sandbox status [--json]
  ambientd sandbox exec <pod> -- COMMAND [ARGS...]
  ambientd sandbox enroll <pod> | unenroll <pod>
  ambientd sandbox apply -f FILE   (Services, AuthorizationPolicies, ... as Kubernetes YAML)
  ambientd sandbox agent <node> start|stop|kill|restart [--no-handover]
  ambientd sandbox down
  ambientd demo
  ambientd inspect workloads|services|policies|certs|connections|maps|config [--node NAME] [-o json|table]
  ambientd cleanup [--bpffs DIR] [--handover-socket PATH]

Run \`ambientd <command> --help\` for the flags of a command.`;

const AGENT_HELP = `ambientd agent — run the node agent

Flags (each overrides the same setting of --config; defaults in brackets):
  --config FILE        YAML or JSON settings file
  --node NAME          this node's name (required)
  --node-ip IP         the node's own address: its traffic to pods (kubelet probes) is not captured
  --source S           file | kubernetes: where the mesh model comes from [file]
  --workloads PATH     file source: a file or directory of YAML/JSON (compact form or Kubernetes
                       objects: Namespace, Pod, Service, AuthorizationPolicy), re-read on change
  --root-namespace NS  Istio root namespace: its AuthorizationPolicies apply mesh-wide [istio-system]
  --cgroup-root DIR    cgroup v2 mount [/sys/fs/cgroup]
  --agent-cgroup DIR   the agent's own cgroup v2 dir [from /proc/self/cgroup]
  --bpffs DIR          where maps and links are pinned [/sys/fs/bpf/ambientd/<node>]
  --bpf-object FILE    compiled datapath [bpf/ambient.bpf.o]
  --outbound-port N    outbound capture port in each pod [15001]
  --inbound-port N     inbound plaintext capture port [15006]
  --hbone-port N       inbound HBONE port [15008]
  --admin-port N       admin endpoint port, on --admin-address [15000]
  --admin-address IP   [127.0.0.1]
  --metrics-port N     Prometheus GET /metrics and /stats/prometheus, on --metrics-address [15020]
  --readiness-port N   GET /healthz/ready (200 "ready" | 500 pending; ?verbose, ?format=json list
                       each pod; a failed pod is reported per pod, never makes the node unready) [15021]
  --metrics-address IP where the metrics and readiness ports listen [0.0.0.0]
  --mark N             SO_MARK of the agent's own sockets [0x539]
  --acceleration M     none | sockmap: sk_msg fast path for in-pod app<->agent bytes [none]
                       (experimental: no backpressure, bulk senders can hit ENOMEM; see bench/RESULTS.md)
  --trust-domain TD    SPIFFE trust domain: identities are spiffe://TD/ns/<ns>/sa/<sa> [cluster.local]
  --ca-dir DIR         built-in CA directory; holds or receives ca-cert.pem, ca-key.pem (0600),
                       root-cert.pem, cert-chain.pem (Istio plug-in layout) [/var/lib/ambientd/ca]
  --cert-lifetime D    workload certificate lifetime, renewed at half-life (e.g. 24h, 90s) [24h]
  --ready-file FILE    written (with the pid) once the agent is ready, removed on stop
  --handover-socket P  unix socket of the restart hand-over: a starting agent takes the listening
                       sockets of the one running and serves on them (no refused connections);
                       "" turns it off; only an agent of the same --node takes over [/run/ambientd/handover.sock]
  --drain-timeout D    on SIGTERM, or once a new agent took over, established connections keep
                       running until they end or this passes (e.g. 30s, 1h) [30s]
  --handover-timeout D how long a running agent waits for a successor that asked for its sockets
                       to adopt them; past it the hand-over is aborted and the running agent
                       carries on (policy is applied throughout) [10s]
  --peer-timeout D     how long a silent peer (dead node, partition: no FIN ever comes) keeps
                       connections open: HTTP/2 PING every D/4 (unanswered for D/2 ends the
                       session), TCP keepalive (idle D/2, 3 probes D/6 apart) on every socket,
                       TCP_USER_TIMEOUT D on HBONE connections [30s]
  --limit K=V          one of the limits below (repeatable), also "limits:" in the config file:
                       receiveBuffer=32MiB   bytes HBONE peers may send ahead of the apps, node-wide,
                                             split over open streams as their window
                       streamWindow=1MiB     largest per-stream window (one bulk stream's throughput)
                       minStreamWindow=64KiB smallest per-stream window
                       maxStreamsPerSession=100  streams per HBONE connection (both sides)
                       maxSessionsPerPeer=16     HBONE connections open at once from one address
                       maxHandshakes=128         TLS handshakes in progress at once
                       maxPendingDials=512       connections being opened at once
                       socketBuffer=256KiB       SO_SNDBUF/SO_RCVBUF of the agent's sockets in pods
                       Each hit is counted (ambientd_limit_hits_total{limit}) and logged once.
                       Memory formula: docs/ARCHITECTURE.md#limits
  --log-level L        debug | info | warn | error | off [info]
  --access-log L       info | debug | off: one JSON line (scope "ambientd.access") per closed
                       connection, logged at that level [info]

Traffic: an enrolled pod's outbound TCP to another enrolled pod goes over HBONE (HTTP/2 CONNECT over
mutual TLS 1.3 to <pod IP>:15008, SPIFFE identities from the built-in CA); to anything else it is
passed through in plaintext from the pod's own address.
Metrics: Istio-standard istio_tcp_connections_{opened,closed,failed}_total and
istio_tcp_{sent,received}_bytes_total (reporter source|destination, workload/principal labels),
plus ambientd_* agent health metrics and process metrics, on :15020/metrics.
Admin endpoint: GET /config_dump, GET /healthz/ready, GET|POST /logging?level=, POST /quitquitquit,
POST /debug/heap (a full GC, then the live heap).
Restart: start the new agent while the old one runs (DaemonSet maxSurge); it takes every listening
socket over --handover-socket, then the old one stops accepting and drains. On SIGTERM without a
successor the agent stops accepting (new connections are refused: fail closed) and drains for at
most --drain-timeout. Pinned redirection stays either way so enrolled pods fail closed until an
agent returns. \`ambientd cleanup\` removes it.`;

function fail(e: unknown): never {
  if (isAmbientError(e)) {
    process.stderr.write(`ambientd: ${e.describe()}\n`);
    process.exit(e.code === 'USAGE' ? 2 : 1);
  }
  process.stderr.write(`ambientd: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
}

function usage(msg: string): AmbientError {
  return new AmbientError('USAGE', msg, 'run `ambientd --help`');
}

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (e) {
    throw usage((e as Error).message);
  }
}

function intFlag(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw usage(`--${name} must be an integer, got ${JSON.stringify(v)}`);
  return n;
}

/** --limit K=V (repeatable) -> { K: V } (numbers stay numbers); undefined when none. */
function limitFlags(list: string[] | undefined): Record<string, string | number> | undefined {
  if (!list || list.length === 0) return undefined;
  const out: Record<string, string | number> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0) throw usage(`--limit must be KEY=VALUE, got ${JSON.stringify(kv)}`);
    const v = kv.slice(i + 1);
    out[kv.slice(0, i)] = /^\d+$/.test(v) ? Number(v) : v;
  }
  return out;
}

async function cmdAgent(args: string[]): Promise<void> {
  const { values } = parse(args, {
    help: { type: 'boolean', short: 'h' }, config: { type: 'string' }, node: { type: 'string' }, 'node-ip': { type: 'string' },
    workloads: { type: 'string' }, 'cgroup-root': { type: 'string' }, 'agent-cgroup': { type: 'string' }, bpffs: { type: 'string' },
    'bpf-object': { type: 'string' }, 'outbound-port': { type: 'string' }, 'inbound-port': { type: 'string' },
    'hbone-port': { type: 'string' }, 'admin-port': { type: 'string' }, 'admin-address': { type: 'string' },
    'metrics-port': { type: 'string' }, 'readiness-port': { type: 'string' }, 'metrics-address': { type: 'string' }, mark: { type: 'string' },
    acceleration: { type: 'string' }, 'ready-file': { type: 'string' }, 'log-level': { type: 'string' }, 'access-log': { type: 'string' },
    'trust-domain': { type: 'string' }, 'ca-dir': { type: 'string' }, 'cert-lifetime': { type: 'string' },
    'handover-socket': { type: 'string' }, 'drain-timeout': { type: 'string' }, 'handover-timeout': { type: 'string' },
    'peer-timeout': { type: 'string' }, limit: { type: 'string', multiple: true },
    source: { type: 'string' }, 'root-namespace': { type: 'string' },
  });
  if (values.help) { process.stdout.write(AGENT_HELP + '\n'); return; }
  const { loadConfig } = await import('./config/config.js');
  const ports: Record<string, number | undefined> = {
    outbound: intFlag(values['outbound-port'], 'outbound-port'), inbound: intFlag(values['inbound-port'], 'inbound-port'),
    hbone: intFlag(values['hbone-port'], 'hbone-port'), admin: intFlag(values['admin-port'], 'admin-port'),
    metrics: intFlag(values['metrics-port'], 'metrics-port'), readiness: intFlag(values['readiness-port'], 'readiness-port'),
  };
  const cfg = loadConfig(values.config ?? null, {
    node: values.node, nodeIP: values['node-ip'], workloads: values.workloads, cgroupRoot: values['cgroup-root'],
    agentCgroup: values['agent-cgroup'], bpffsDir: values.bpffs, bpfObject: values['bpf-object'],
    adminAddress: values['admin-address'], metricsAddress: values['metrics-address'], mark: values.mark === undefined ? undefined : Number(values.mark),
    acceleration: values.acceleration, readyFile: values['ready-file'], logLevel: values['log-level'], accessLog: values['access-log'],
    trustDomain: values['trust-domain'], caDir: values['ca-dir'], certLifetime: values['cert-lifetime'],
    handoverSocket: values['handover-socket'], drainTimeout: values['drain-timeout'], handoverTimeout: values['handover-timeout'],
    peerTimeout: values['peer-timeout'], limits: limitFlags(values.limit),
    source: values.source, rootNamespace: values['root-namespace'],
    ports: Object.fromEntries(Object.entries(ports).filter(([, v]) => v !== undefined)),
  });
  const { Logger } = await import('./util/log.js');
  const { Agent } = await import('./agent/index.js');
  const log = new Logger('ambientd', cfg.logLevel);
  const agent = new Agent({ config: cfg, log });
  let stopping = false;
  // a successor took our sockets and we drained: done
  agent.lifecycle.once('drained', () => process.exit(0));
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info('stopping: draining established connections', { signal: sig, drainTimeoutMs: cfg.drainTimeoutMs });
    const t = setTimeout(() => { log.warn('drain did not finish in time; exiting'); process.exit(0); }, cfg.drainTimeoutMs + 5000);
    t.unref();
    void agent.drain(sig).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Bad input is handled where it arrives (a typed error, a metric, the
  // connection refused). Anything that escapes is a bug that left the agent in
  // an unknown state: exit at once. The pinned datapath refuses the pods'
  // connections meanwhile (fail closed) and the supervisor starts a new agent.
  const fatal = (what: string) => (e: unknown): void => {
    log.error(`${what}: exiting (the datapath fails closed until the agent is restarted)`, {
      code: 'AGENT_INTERNAL', error: e, stack: (e as Error)?.stack,
      hint: 'a bug in ambientd: report this log line; the supervisor (kubelet, systemd) restarts the agent',
    });
    process.exit(70);
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled rejection'));
  try {
    await agent.start();
  } catch (e) {
    await agent.stop().catch(() => undefined);
    throw e;
  }
}

async function cmdSandbox(args: string[]): Promise<void> {
  const sb = await import('./sandbox/topology.js');
  const sub = args[0];
  const rest = args.slice(1);
  switch (sub) {
    case 'up': {
      const { values } = parse(rest, { nodes: { type: 'string' }, pods: { type: 'string' }, 'no-agents': { type: 'boolean' } });
      const st = await sb.sandboxUp({ nodes: intFlag(values.nodes, 'nodes') ?? 2, pods: intFlag(values.pods, 'pods') ?? 2, agents: !values['no-agents'] });
      printStatus(st);
      return;
    }
    case 'status': {
      const { values } = parse(rest, { json: { type: 'boolean' } });
      const st = sb.sandboxStatus();
      if (values.json) process.stdout.write(JSON.stringify(st, null, 2) + '\n');
      else printStatus(st);
      return;
    }
    case 'exec': {
      const dash = rest.indexOf('--');
      const pod = rest[0];
      const argv = dash >= 0 ? rest.slice(dash + 1) : rest.slice(1);
      if (!pod || pod === '--' || argv.length === 0) throw usage('usage: ambientd sandbox exec <pod> -- COMMAND [ARGS...]');
      const code = await sb.execInPod(pod, argv);
      process.exit(code);
    }
    // falls through (process.exit above never returns)
    case 'enroll':
    case 'unenroll': {
      const pod = rest[0];
      if (!pod) throw usage(`usage: ambientd sandbox ${sub} <pod>`);
      await sb.setEnrollment(pod, sub === 'enroll');
      process.stdout.write(`${pod}: ${sub === 'enroll' ? 'enrolled (istio.io/dataplane-mode=ambient)' : 'unenrolled (istio.io/dataplane-mode=none)'}\n`);
      return;
    }
    case 'apply': {
      const { values } = parse(rest, { filename: { type: 'string', short: 'f' } });
      if (!values.filename) throw usage('usage: ambientd sandbox apply -f FILE (Service, AuthorizationPolicy, Namespace, Pod objects)');
      const r = await sb.sandboxApply(values.filename);
      process.stdout.write(`applied ${values.filename} -> ${r.path}\n`);
      for (const e of r.errors) process.stderr.write(`  rejected ${e.entry}: ${e.message}\n`);
      if (r.errors.length) process.exitCode = 1;
      return;
    }
    case 'agent': {
      const [node, action] = rest;
      if (!node || !['start', 'stop', 'kill', 'restart'].includes(action ?? '')) throw usage('usage: ambientd sandbox agent <node> start|stop|kill|restart [--no-handover]');
      if (action === 'restart') {
        const r = await sb.restartAgent(node, { handover: !rest.includes('--no-handover') });
        process.stdout.write(`${node}: agent restarted: pid ${r.newPid} ready after ${r.readyMs} ms${r.oldPid !== null ? `; pid ${r.oldPid} ${rest.includes('--no-handover') ? 'stopped first' : 'handed over and drains'}` : ''}\n`);
        return;
      }
      if (action === 'start') { await sb.startAgent(node); await sb.waitAgentReady(node, 20_000); }
      else await sb.stopAgent(node, action === 'kill' ? 'SIGKILL' : 'SIGTERM');
      process.stdout.write(`${node}: agent ${action === 'start' ? 'started' : action === 'kill' ? 'killed' : 'stopped'}\n`);
      return;
    }
    case 'down':
      await sb.sandboxDown();
      process.stdout.write('sandbox removed\n');
      return;
    default:
      throw usage(`unknown sandbox command ${JSON.stringify(sub ?? '')} (up, status, exec, enroll, unenroll, apply, agent, down)`);
  }
}

function printStatus(st: { nodes: Array<{ name: string; netns: string; ip: string; agentPid: number | null }>; pods: Array<{ name: string; node: string; namespace: string; serviceAccount: string; ip: string; ambient: boolean }> }): void {
  const lines = ['NODE  NETNS            IP            AGENT'];
  for (const n of st.nodes) lines.push(`${n.name.padEnd(5)} ${n.netns.padEnd(16)} ${n.ip.padEnd(13)} ${n.agentPid ?? '-'}`);
  lines.push('', 'POD       NODE  NAMESPACE     SERVICEACCOUNT  IP            AMBIENT');
  for (const p of st.pods) lines.push(`${p.name.padEnd(9)} ${p.node.padEnd(5)} ${p.namespace.padEnd(13)} ${p.serviceAccount.padEnd(15)} ${p.ip.padEnd(13)} ${p.ambient ? 'yes' : 'no'}`);
  process.stdout.write(lines.join('\n') + '\n');
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return;
    case 'agent':
      return cmdAgent(rest);
    case 'sandbox':
      if (rest[0] === '--help' || rest[0] === '-h' || rest.length === 0) { process.stdout.write(USAGE + '\n'); return; }
      return cmdSandbox(rest);
    case 'demo': {
      const { runDemo, DemoClaimError } = await import('./demo.js');
      try {
        return await runDemo();
      } catch (e) {
        if (e instanceof DemoClaimError) { process.stderr.write(`ambientd demo: ${e.message}\n`); process.exit(1); }
        throw e;
      }
    }
    case 'inspect': {
      const { runInspect } = await import('./admin/inspect.js');
      return runInspect(rest);
    }
    case 'cleanup': {
      const { values } = parse(rest, { bpffs: { type: 'string' }, 'handover-socket': { type: 'string' }, help: { type: 'boolean', short: 'h' } });
      if (values.help) {
        process.stdout.write('ambientd cleanup [--bpffs DIR] [--handover-socket PATH]: detach and remove every pinned link and map under DIR [/sys/fs/bpf/ambientd],\n'
          + 'and the hand-over socket file when no agent answers on it; safe to run twice. Run it after the agent is gone.\n');
        return;
      }
      const { cleanupPins, removeStaleSocket } = await import('./datapath/cleanup.js');
      const r = cleanupPins(values.bpffs ?? '/sys/fs/bpf/ambientd');
      process.stdout.write(`removed ${r.links} links and ${r.pins} pins under ${r.dir}\n`);
      if (values['handover-socket']) {
        const h = removeStaleSocket(values['handover-socket']);
        process.stdout.write(`hand-over socket ${values['handover-socket']}: ${h}\n`);
        if (h === 'in use') process.exitCode = 1;
      }
      return;
    }
    default:
      throw usage(`unknown command ${JSON.stringify(cmd)}`);
  }
}

main(process.argv.slice(2)).catch(fail);
