// The sandbox plan's CA modes (pure: nothing is touched): by default the
// cluster CA in its own netns and no key for any node; --ca embedded the
// shared CA directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentConfigFor, planSandbox } from '../../../tools/sandbox/index.js';

const OPTS = { stateDir: '/run/sb', cgroupRoot: '/cg', bpffsRoot: '/bpf', nodes: 2, pods: 2 };

test('sandbox plan: the cluster CA by default; a node gets its address, the root and its own token, no caDir', () => {
  const st = planSandbox(OPTS);
  const cp = st.controlPlane!;
  assert.equal(cp.address, '10.100.0.254:15012');
  assert.equal(cp.netns, 'ambs-cp');
  assert.equal(cp.dir, '/run/sb/control-plane');
  assert.equal(cp.caDir, '/run/sb/control-plane/ca');
  assert.equal(cp.cgroup, '/cg/ambientd-sandbox/control-plane');
  for (const n of st.nodes) {
    const cfg = agentConfigFor(st, n);
    assert.equal(cfg.caAddress, '10.100.0.254:15012');
    assert.equal(cfg.caRootCert, `/run/sb/${n.name}/ca/root-cert.pem`);
    assert.equal(cfg.caTokenFile, `/run/sb/${n.name}/ca/token`);
    assert.equal(cfg.caDir, undefined);
    // nothing a node reads is under the control-plane dir
    assert.ok(!Object.values(cfg).some((v) => typeof v === 'string' && v.startsWith(cp.dir)));
  }
});

test('sandbox plan: --ca embedded is the quick mode (the shared CA directory); a bad mode is refused', () => {
  const st = planSandbox({ ...OPTS, ca: 'embedded' });
  assert.equal(st.controlPlane, undefined);
  const cfg = agentConfigFor(st, st.nodes[0]!);
  assert.equal(cfg.caDir, '/run/sb/ca');
  assert.equal(cfg.caAddress, undefined);
  assert.throws(() => planSandbox({ ...OPTS, ca: 'remote' as never }), /--ca must be cluster or embedded/);
});
