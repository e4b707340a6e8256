/**
 * `ambientd sandbox …`: the sandbox's subcommands, loaded by src/cli.ts only
 * when one runs (the agent image does not ship tools/).
 */
import { intFlag, parse, usage } from '../../src/util/args.js';
import * as sb from './index.js';
import type { SandboxIpFamily } from './model.js';

export async function runSandboxCommand(args: string[]): Promise<void> {
  const sub = args[0];
  const rest = args.slice(1);
  switch (sub) {
    case 'up': {
      const { values } = parse(rest, {
        nodes: { type: 'string' },
        pods: { type: 'string' },
        'no-agents': { type: 'boolean' },
        'ip-family': { type: 'string' },
        ca: { type: 'string' },
      });
      const st = await sb.sandboxUp({
        nodes: intFlag(values.nodes, 'nodes') ?? 2,
        pods: intFlag(values.pods, 'pods') ?? 2,
        agents: !values['no-agents'],
        ...(values['ip-family'] !== undefined ? { ipFamily: values['ip-family'] as SandboxIpFamily } : {}),
        ...(values.ca !== undefined ? { ca: values.ca as 'cluster' | 'embedded' } : {}),
      });
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
      if (!node || !['start', 'stop', 'kill', 'restart'].includes(action ?? ''))
        throw usage('usage: ambientd sandbox agent <node> start|stop|kill|restart [--no-handover]');
      if (action === 'restart') {
        const r = await sb.restartAgent(node, { handover: !rest.includes('--no-handover') });
        process.stdout.write(
          `${node}: agent restarted: pid ${r.newPid} ready after ${r.readyMs} ms${r.oldPid !== null ? `; pid ${r.oldPid} ${rest.includes('--no-handover') ? 'stopped first' : 'handed over and drains'}` : ''}\n`,
        );
        return;
      }
      if (action === 'start') {
        await sb.startAgent(node);
        await sb.waitAgentReady(node, 20_000);
      } else await sb.stopAgent(node, action === 'kill' ? 'SIGKILL' : 'SIGTERM');
      process.stdout.write(`${node}: agent ${action === 'start' ? 'started' : action === 'kill' ? 'killed' : 'stopped'}\n`);
      return;
    }
    case 'ca': {
      const action = rest[0];
      if (action === 'start') {
        const pid = await sb.startCa();
        process.stdout.write(`sandbox CA started (pid ${pid}) and ready\n`);
      } else if (action === 'stop') {
        await sb.stopCa();
        process.stdout.write('sandbox CA stopped\n');
      } else if (action === 'metrics') {
        process.stdout.write(await sb.caMetrics());
      } else throw usage('usage: ambientd sandbox ca start|stop|metrics');
      return;
    }
    case 'down':
      await sb.sandboxDown();
      process.stdout.write('sandbox removed\n');
      return;
    default:
      throw usage(`unknown sandbox command ${JSON.stringify(sub ?? '')} (up, status, exec, enroll, unenroll, apply, agent, ca, down)`);
  }
}

function printStatus(st: {
  controlPlane?: { address: string; netns: string; caPid: number | null; caRunning?: boolean; dir: string };
  nodes: Array<{ name: string; netns: string; ip: string; agentPid: number | null }>;
  pods: Array<{ name: string; node: string; namespace: string; serviceAccount: string; ip: string; ambient: boolean }>;
}): void {
  const cp = st.controlPlane;
  const lines = [
    cp
      ? `CA: ambientd ca at ${cp.address} (netns ${cp.netns}), ${cp.caPid === null ? 'not running' : `pid ${cp.caPid}${cp.caRunning === false ? ' (exited)' : ''}`}; keys in ${cp.dir}; no node holds a CA key`
      : 'CA: embedded (every agent signs with the shared CA directory; `sandbox up` without --ca embedded runs the cluster CA)',
    '',
    'NODE  NETNS            IP            AGENT',
  ];
  for (const n of st.nodes) lines.push(`${n.name.padEnd(5)} ${n.netns.padEnd(16)} ${n.ip.padEnd(13)} ${n.agentPid ?? '-'}`);
  lines.push('', 'POD       NODE  NAMESPACE     SERVICEACCOUNT  IP            AMBIENT');
  for (const p of st.pods)
    lines.push(
      `${p.name.padEnd(9)} ${p.node.padEnd(5)} ${p.namespace.padEnd(13)} ${p.serviceAccount.padEnd(15)} ${p.ip.padEnd(13)} ${p.ambient ? 'yes' : 'no'}`,
    );
  process.stdout.write(lines.join('\n') + '\n');
}
