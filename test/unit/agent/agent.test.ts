// The composition root built with fakes (no BPF, no netns, no privileges): a
// fake native addon, datapath and workload source; real CA, proxy and node
// servers on ephemeral loopback ports. Start, reconcile, readiness,
// config_dump, a departure, drain to stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent, type ConfigDump } from '../../../src/agent/index.js';
import { loadConfig, type AgentConfig } from '../../../src/config/config.js';
import type { Datapath } from '../../../src/datapath/datapath.js';
import type { NativeAddon } from '../../../src/datapath/native-api.js';
import { DATAPLANE_MODE_LABEL, emptySnapshot, type MeshSnapshot, type PodInfo } from '../../../src/discovery/model.js';
import type { WorkloadSource, WorkloadSourceEvents } from '../../../src/discovery/source.js';
import { AmbientError } from '../../../src/util/errors.js';
import { Logger } from '../../../src/util/log.js';
import { FakeDatapath } from './fakes.js';

class AgentDatapath extends FakeDatapath {
  readonly features = [];
  readonly adoptedLinks = { updated: 0, upgraded: 0 };
  closed = false;
  programs(): Record<string, { id: number; tag: string }> {
    return {};
  }
  counters(): Record<string, bigint> {
    return { refused_isolated: 0n };
  }
  originalDstCount(): number {
    return 0;
  }
  podStats(): null {
    return null;
  }
  originalDst(): null {
    return null;
  }
  close(): void {
    this.closed = true;
  }
}

/** Like the API source today: start() resolves with `current` set and emits nothing. */
class FakeSource extends EventEmitter<WorkloadSourceEvents> implements WorkloadSource {
  readonly kind = 'kubernetes' as const;
  current: MeshSnapshot = emptySnapshot();
  lastError: AmbientError | null = null;
  stopped = false;
  constructor(private readonly initial: MeshSnapshot) {
    super();
  }
  async start(): Promise<void> {
    this.current = this.initial;
  }
  stop(): void {
    this.stopped = true;
  }
  status(): Record<string, unknown> {
    return {};
  }
  publish(s: MeshSnapshot): void {
    this.current = s;
    this.emit('update', s);
  }
}

function pod(name: string, o: Partial<PodInfo> = {}): PodInfo {
  return {
    name,
    namespace: 'shop',
    serviceAccount: name,
    node: 'n1',
    ip: `10.0.0.${name.length}`,
    netns: `/nonexistent/netns/${name}`,
    cgroup: `/cg/${name}`,
    labels: {},
    ...o,
  };
}

function snap(...pods: PodInfo[]): MeshSnapshot {
  const s = emptySnapshot();
  s.namespaces.set('shop', { name: 'shop', labels: { [DATAPLANE_MODE_LABEL]: 'ambient' } });
  s.namespaces.set('plain', { name: 'plain', labels: {} });
  for (const p of pods) s.pods.set(`${p.namespace}/${p.name}`, p);
  return s;
}

function world(initial: MeshSnapshot) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-agent-unit-'));
  const base = loadConfig(null, {
    node: 'n1',
    source: 'kubernetes',
    caDir: path.join(dir, 'ca'),
    handoverSocket: null,
    drainTimeout: '2s',
    metricsAddress: '127.0.0.1',
    logLevel: 'off',
    // fakes live on this thread: the data plane too (worker threads load the real addon)
    workers: 0,
  });
  // ephemeral node ports (0 is no valid setting, but listen() takes it)
  const config: AgentConfig = { ...base, ports: { ...base.ports, admin: 0, metrics: 0, readiness: 0 }, readyFile: path.join(dir, 'ready') };
  const dp = new AgentDatapath();
  const source = new FakeSource(initial);
  const native = {
    raiseFdLimit: () => ({ soft: 4096, hard: 4096 }),
    closeFd: () => 0,
    tcpSockets: () => [],
    destroyTcpSockets: () => 0,
  } as unknown as NativeAddon;
  const agent = new Agent({ config, log: new Logger('test', 'off'), native, source, openDatapath: () => dp as unknown as Datapath });
  return { agent, dp, source, config, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

const state = (d: ConfigDump, name: string): string | undefined => d.workloads.find((w) => w.name === name)?.state;

test("built with fakes: start, reconcile the source's initial state, report, follow a departure, drain to stopped", async () => {
  const { agent, dp, source, config, cleanup } = world(
    snap(pod('gone'), pod('db', { namespace: 'plain' }), pod('far', { node: 'n2', netns: null, cgroup: null })),
  );
  try {
    assert.equal(agent.phase, 'starting');
    const before = agent.readiness();
    assert.equal(before.ready, false);
    assert.deepEqual(before.pending, ['datapath', 'ca', 'admin listener', 'metrics listener', 'proxy', 'discovery']);
    assert.equal(agent.configDump().datapath, null);

    await agent.start();
    assert.equal(agent.phase, 'running');
    assert.equal(fs.readFileSync(config.readyFile!, 'utf8'), `${process.pid}\n`);
    const d = agent.configDump();
    assert.equal(d.phase, 'running');
    assert.equal(state(d, 'gone'), 'isolated', 'the initial state was applied although the source emitted nothing');
    assert.equal(d.workloads.find((w) => w.name === 'gone')?.error?.code, 'NETNS_UNAVAILABLE');
    assert.equal(state(d, 'db'), 'not-enrolled');
    assert.equal(state(d, 'far'), 'remote');
    assert.deepEqual(
      dp.named('isolate').map((c) => [c[1], c[2]]),
      [['shop/gone', null]],
      'failed closed, no netns to attach to',
    );
    assert.deepEqual(d.readiness, {
      ready: true,
      pending: [],
      pods: [
        {
          pod: 'shop/gone',
          state: 'isolated',
          error: { code: 'NETNS_UNAVAILABLE', message: 'pod shop/gone: netns /nonexistent/netns/gone does not exist', hint: d.readiness.pods[0]!.error!.hint },
        },
        { pod: 'plain/db', state: 'not-enrolled' },
      ],
    });
    assert.equal(d.counters.pod_enroll_failed, 1);
    assert.deepEqual(d.datapath?.refused, { refused_isolated: '0' });
    assert.deepEqual(d.handover, { socket: null, from: null, adopted: 0, rejected: [], unused: 0, handedTo: null, recordsImported: 0, draining: false });

    source.publish(snap(pod('db', { namespace: 'plain' })));
    await agent.settle();
    assert.deepEqual(
      dp.named('unenroll').map((c) => c[1]),
      ['shop/gone'],
    );
    assert.equal(state(agent.configDump(), 'gone'), undefined);

    let drained = false;
    agent.lifecycle.once('drained', () => {
      drained = true;
    });
    const draining = agent.drain('SIGTERM');
    assert.equal(agent.phase, 'draining');
    assert.ok(agent.readiness().pending.includes('draining'));
    assert.equal(agent.drain('again'), draining, 'one drain');
    await draining;
    assert.equal(agent.phase, 'stopped');
    assert.ok(drained, "'drained' emitted");
    assert.ok(source.stopped && dp.closed);
    assert.ok(!fs.existsSync(config.readyFile!), 'its ready file is removed');
    assert.deepEqual(agent.readiness().pending.at(-1), 'stopping');
    await agent.drain('late');
    await agent.stop();
    assert.equal(agent.phase, 'stopped');
  } finally {
    await agent.stop();
    cleanup();
  }
});

test('a source whose input was rejected at start: its empty state is never applied (pinned pods stay, fail closed)', async () => {
  const { agent, dp, source, cleanup } = world(emptySnapshot());
  source.lastError = new AmbientError('WORKLOADS_INVALID', 'bad file', 'fix it');
  dp.pinned.add('shop/web');
  try {
    await agent.start();
    assert.deepEqual(dp.named('removeLinks'), [], 'no reconcile: the pinned pod keeps its redirection');
    const r = agent.readiness();
    assert.deepEqual(r.pending, ['workloads']);
    assert.deepEqual(agent.configDump().workloadSource.lastError, { code: 'WORKLOADS_INVALID', message: 'bad file', hint: 'fix it' });
  } finally {
    await agent.stop();
    cleanup();
  }
});

test('stop() while starting: the agent stops, nothing more is built', async () => {
  const { agent, dp, cleanup } = world(snap(pod('web')));
  try {
    // start() is left behind: the listener it waits for was closed by stop()
    void agent.start();
    await agent.stop();
    assert.equal(agent.phase, 'stopped');
    assert.ok(dp.closed);
    assert.deepEqual(dp.calls, [], 'no pod was touched');
    assert.equal(agent.readiness().ready, false);
  } finally {
    cleanup();
  }
});
