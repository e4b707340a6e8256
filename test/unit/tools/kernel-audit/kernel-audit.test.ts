// Kernel-requirements audit of the real compiled object: every program, helper
// and map type in bpf/ambient.bpf.o must be in the audit tables (a new helper in
// the BPF code without a table entry fails here), and the required path must
// fit Linux 5.10.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BPF_OBJECT, ROOT } from '../../../helpers/paths.js';
import { audit, auditObject, HELPERS, parseDisassembly } from '../../../../tools/kernel-audit/kernel-audit.js';

const AUDIT_JS = path.join(ROOT, 'dist', 'tools', 'kernel-audit', 'kernel-audit.js');
const runCli = (...args: string[]) => spawnSync(process.execPath, [AUDIT_JS, ...args, BPF_OBJECT], { encoding: 'utf8' });

test('every program, helper and map type in the object is known to the audit', () => {
  const r = auditObject(BPF_OBJECT);
  assert.deepEqual(r.unknown, []);
  const progs = r.items
    .filter((i) => i.kind === 'program')
    .map((i) => i.context)
    .sort();
  assert.deepEqual(progs, [
    'cgroup/bind4',
    'cgroup/bind6',
    'cgroup/connect4',
    'cgroup/connect6',
    'cgroup/getpeername4',
    'cgroup/getpeername6',
    'sk_lookup',
    'sk_msg',
    'sockops',
  ]);
  // dual-stack sockets are on the required path: their v4-mapped connects must be captured
  assert.equal(r.items.find((i) => i.kind === 'program' && i.context === 'cgroup/connect6')!.required, true);
  assert.ok(r.items.some((i) => i.kind === 'helper' && i.name.startsWith('bpf_sock_ops_cb_flags_set') && i.context === 'sockops' && i.since === '4.16'));
  assert.ok(r.items.some((i) => i.kind === 'helper' && i.name.startsWith('bpf_sk_assign') && i.context === 'sk_lookup' && i.since === '5.9'));
  assert.ok(r.items.some((i) => i.kind === 'map' && i.name.startsWith('sockhash')));
  assert.ok(r.items.filter((i) => i.kind === 'helper').length > 0);
});

test('the required path needs <= 5.10, optional items are marked', () => {
  const r = auditObject(BPF_OBJECT, { max: '5.10' });
  assert.deepEqual(r.violations, []);
  assert.equal(r.requiredMax, '5.9');
  const gp = r.items.find((i) => i.kind === 'program' && i.context === 'cgroup/getpeername4')!;
  assert.equal(gp.required, false);
  assert.equal(gp.since, '5.8');
  assert.equal(r.items.find((i) => i.kind === 'program' && i.context === 'sk_msg')!.required, false);
  const res = runCli('--max', '5.10');
  assert.equal(res.status, 0, res.stderr);
  assert.match(res.stdout, /required path needs Linux 5\.9/);
});

test('--max 5.4 fails and names the offending items', () => {
  const res = runCli('--max', '5.4');
  assert.equal(res.status, 1, res.stdout + res.stderr);
  assert.match(res.stderr, /sk_lookup\/BPF_SK_LOOKUP/);
  assert.match(res.stderr, /bpf_sk_assign \(124\) in sk_lookup \(5\.9\)/);
  assert.match(res.stderr, /bpf_get_current_ancestor_cgroup_id \(123\) in cgroup\/connect4 \(5\.7\)/);
  assert.match(res.stderr, /bpf_link \(BPF_LINK_CREATE on a cgroup fd\) in sockops \(5\.7\)/);
  assert.doesNotMatch(res.stderr, /getpeername[46]|sk_msg/); // optional items never fail the check
  const json = JSON.parse(runCli('--json', '--max', '5.4').stdout) as { violations: unknown[] };
  assert.ok(json.violations.length > 0);
});

test('an unknown helper or program is reported, not ignored', () => {
  const dis = parseDisassembly(
    [
      'Disassembly of section sockops:',
      '       0:\t85 00 00 00 e7 03 00 00\tcall 999',
      'Disassembly of section xdp:',
      '       0:\t85 10 00 00 ff ff ff ff\tcall -1',
    ].join('\n'),
  );
  assert.deepEqual(dis.helpers.get('sockops'), [999]);
  assert.deepEqual(dis.otherCalls.get('xdp'), ['bpf-to-bpf call -1']);
  const r = audit({ ...dis, maps: new Map([['m', 27]]), mapUsers: new Map() });
  assert.equal(r.unknown.length, 3, r.unknown.join('; '));
  assert.match(r.unknown.join('; '), /helper id 999 in sockops/);
  assert.match(r.unknown.join('; '), /program section "xdp"/);
  assert.match(r.unknown.join('; '), /map type 27/);
});

test('helper ids match the uapi __BPF_FUNC_MAPPER order', { skip: !fs.existsSync('/usr/include/linux/bpf.h') }, () => {
  const h = fs.readFileSync('/usr/include/linux/bpf.h', 'utf8');
  const start = h.indexOf('#define __BPF_FUNC_MAPPER');
  const names = [...h.slice(start, h.indexOf('/* */', start)).matchAll(/FN\((\w+)/g)].map((m) => m[1]);
  for (const [id, spec] of Object.entries(HELPERS)) assert.equal(names[Number(id)], spec.name, `helper id ${id}`);
});
