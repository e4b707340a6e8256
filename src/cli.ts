#!/usr/bin/env node
/**
 * ambientd command line: `agent`, `ca`, `sandbox ...`, `demo`, `inspect`, `cleanup`.
 * Every failure prints "CODE: message" and a hint, and exits non-zero.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AmbientError, isAmbientError } from './util/errors.js';
import { parse, usage } from './util/args.js';

const USAGE = `ambientd — sidecar-less service mesh node agent (eBPF datapath)

Usage:
  ambientd agent [--config FILE] [--node NAME] [--source file|kubernetes] [--workloads PATH] [flags]
  ambientd ca --ca-dir DIR | --ca-secret-namespace NS [--auth kubernetes|sandbox] [flags]   (the cluster CA: no node holds a CA key)
  ambientd sandbox up [--nodes N] [--pods P] [--no-agents] [--ip-family ipv4|ipv6|dual] [--ca cluster|embedded]
                   cluster (default): \`ambientd ca\` runs in its own netns (10.100.0.254:15012), each agent
                   gets its node's token and the root, no node holds a CA key; embedded: the quick mode,
                   every agent signs with one shared CA directory
  ambientd sandbox status [--json]
  ambientd sandbox exec <pod> -- COMMAND [ARGS...]
  ambientd sandbox enroll <pod> | unenroll <pod>
  ambientd sandbox apply -f FILE   (Services, AuthorizationPolicies, ... as Kubernetes YAML)
  ambientd sandbox agent <node> start|stop|kill|restart [--no-handover]
  ambientd sandbox ca start|stop|metrics   (the sandbox's cluster CA process)
  ambientd sandbox down
  ambientd demo
  ambientd inspect workloads|services|policies|certs|connections|maps|config [--node NAME] [-o json|table]
  ambientd cleanup [--bpffs DIR] [--handover-socket PATH]

Run \`ambientd <command> --help\` for the flags of a command.`;

/** `ambientd agent --help`: the settings come from the table (src/config/settings.ts). */
function agentHelp(settings: string): string {
  return `ambientd agent — run the node agent

Usage: ambientd agent [--config FILE] [flags]

  --config FILE        YAML or JSON settings file; a flag overrides the setting named after it
  -h, --help           this help

Settings: --flag ARG  key in the settings file (allowed values): what it sets (range) [default]
D is a duration (500ms, 30s, 15m, 24h, 1d, or a number of milliseconds); sizes are bytes, 256KiB, 32MiB, 1GiB.
${settings}

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
agent returns. \`ambientd cleanup\` removes it.
Start-up: before anything else the agent checks its capabilities, the bpffs, the cgroup v2 root (on hybrid
hosts <cgroupRoot>/unified is used), /run/netns, the CA and hand-over directories and the host cgroup
namespace; a failure exits 78 naming what is missing and the line of deploy/ambientd.yaml (PREFLIGHT_*).`;
}

function fail(e: unknown): never {
  if (isAmbientError(e)) {
    process.stderr.write(`ambientd: ${e.describe()}\n`);
    process.exit(e.code === 'USAGE' ? 2 : 1);
  }
  process.stderr.write(`ambientd: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
}

async function cmdAgent(args: string[]): Promise<void> {
  const { parseAgentArgs, settingsHelp } = await import('./config/flags.js');
  const { help, config, overrides } = parseAgentArgs(args);
  if (help) {
    process.stdout.write(agentHelp(settingsHelp()) + '\n');
    return;
  }
  const { loadConfig } = await import('./config/config.js');
  const loaded = loadConfig(config, overrides);
  // before anything else: the capabilities, mounts and cgroup namespace the agent needs (src/agent/preflight.ts);
  // a failure names what is missing and the manifest line, and the agent exits having changed nothing
  const { preflight, describePreflight, PREFLIGHT_EXIT_CODE } = await import('./agent/preflight.js');
  const checked = preflight(loaded);
  if (checked.errors.length > 0) {
    process.stderr.write(`ambientd: ${describePreflight(checked.errors)}\n`);
    process.exit(PREFLIGHT_EXIT_CODE);
  }
  const cfg = checked.cgroupRoot === loaded.cgroupRoot ? loaded : Object.freeze({ ...loaded, cgroupRoot: checked.cgroupRoot });
  const { Logger } = await import('./util/log.js');
  const { Agent } = await import('./agent/index.js');
  const log = new Logger('ambientd', cfg.logLevel);
  for (const note of checked.notes) log.info(note);
  const agent = new Agent({ config: cfg, log });
  let stopping = false;
  // a successor took our sockets and we drained: done
  agent.lifecycle.once('drained', () => process.exit(0));
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info('stopping: draining established connections', { signal: sig, drainTimeoutMs: cfg.drainTimeoutMs });
    const t = setTimeout(() => {
      log.warn('drain did not finish in time; exiting');
      process.exit(0);
    }, cfg.drainTimeoutMs + 5000);
    t.unref();
    void agent.drain(sig).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Bad input is handled where it arrives (a typed error, a metric, the
  // connection refused). Anything that escapes is a bug that left the agent in
  // an unknown state: exit at once. The pinned datapath refuses the pods'
  // connections meanwhile (fail closed) and the supervisor starts a new agent.
  const fatal =
    (what: string) =>
    (e: unknown): void => {
      log.error(`${what}: exiting (the datapath fails closed until the agent is restarted)`, {
        code: 'AGENT_INTERNAL',
        error: e,
        stack: (e as Error)?.stack,
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

/**
 * `sandbox` and `demo` are development tools: they live in tools/ (compiled to
 * dist/tools/, beside dist/src/), which the agent image does not ship. Loads
 * one, or says that this installation has none.
 */
async function loadTool<T>(command: string, rel: string, load: () => Promise<T>): Promise<T> {
  const file = fileURLToPath(new URL(rel, import.meta.url));
  if (!fs.existsSync(file)) {
    throw new AmbientError(
      'TOOLS_NOT_INSTALLED',
      `\`ambientd ${command}\` is a development tool, not part of this installation (no ${file})`,
      'run it from a source checkout built with `npx tsc -p .` (it compiles tools/ to dist/tools/); the agent image ships only the agent',
    );
  }
  return load();
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
    case 'ca': {
      const { parseCaArgs, runCa, CA_HELP } = await import('./ca/cli.js');
      const o = parseCaArgs(rest);
      if (o === null) {
        process.stdout.write(CA_HELP + '\n');
        return;
      }
      return runCa(o);
    }
    case 'sandbox':
      if (rest[0] === '--help' || rest[0] === '-h' || rest.length === 0) {
        process.stdout.write(USAGE + '\n');
        return;
      }
      return (await loadTool('sandbox', '../tools/sandbox/cli.js', () => import('../tools/sandbox/cli.js'))).runSandboxCommand(rest);
    case 'demo': {
      const { runDemo, DemoClaimError } = await loadTool('demo', '../tools/demo/demo.js', () => import('../tools/demo/demo.js'));
      try {
        return await runDemo();
      } catch (e) {
        if (e instanceof DemoClaimError) {
          process.stderr.write(`ambientd demo: ${e.message}\n`);
          process.exit(1);
        }
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
        process.stdout.write(
          'ambientd cleanup [--bpffs DIR] [--handover-socket PATH]: detach and remove every pinned link and map under DIR [/sys/fs/bpf/ambientd],\n' +
            'and the hand-over socket file when no agent answers on it; safe to run twice. Run it after the agent is gone.\n',
        );
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
