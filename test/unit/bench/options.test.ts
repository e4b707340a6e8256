import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { jsonPathFor, parseArgs, USAGE } from '../../../bench/options.js';

const ROOT = '/repo';

test('bench options: a full run writes bench/RESULTS.md and RESULTS.json next to it', () => {
  const p = parseArgs([], ROOT);
  assert.ok(p.ok);
  assert.equal(p.options.out, path.join(ROOT, 'bench', 'RESULTS.md'));
  assert.equal(jsonPathFor(p.options.out), path.join(ROOT, 'bench', 'RESULTS.json'));
  assert.deepEqual([...p.options.sections], ['same-node', 'enroll', 'hbone', 'policy', 'observability', 'restart', 'lifecycle', 'ca', 'ipv6', 'workers']);
  assert.equal(p.options.seconds, 5);
  assert.deepEqual(p.options.blocks, ['sockmap', 'none', 'none', 'sockmap']);
  assert.equal(p.options.hbone.idleConns, 1000);
});

test('bench options: --quick and --only go to $TMPDIR unless --out', () => {
  const q = parseArgs(['--quick', '--only', 'policy,cross-node'], ROOT);
  assert.ok(q.ok);
  assert.equal(q.options.out, path.join(os.tmpdir(), 'ambientd-bench-RESULTS.quick.policy+hbone.md'));
  assert.deepEqual([...q.options.sections], ['policy', 'hbone']);
  assert.equal(q.options.seconds, 1);
  assert.equal(q.options.enrollPods, 10);
  const o = parseArgs(['--out', 'x/report.md', '--only', 'restart', '--soak-seconds', '60'], ROOT);
  assert.ok(o.ok);
  assert.equal(o.options.out, path.resolve('x/report.md'));
  assert.equal(o.options.soakSeconds, 60);
  assert.equal(jsonPathFor('/tmp/report'), '/tmp/report.json');
});

test('bench options: --help, unknown arguments and bad values', () => {
  assert.deepEqual(parseArgs(['--help'], ROOT), { ok: false, exitCode: 0, message: USAGE });
  for (const [argv, msg] of [
    [['--fast'], 'unknown argument --fast'],
    [['--only', 'nope'], 'unknown section nope'],
    [['--out'], '--out needs a file name'],
    [['--only', '--quick'], '--only needs a list of sections'],
    [['--soak-seconds', '10'], '--soak-seconds needs a whole number of seconds >= 30, got 10'],
  ] as const) {
    const p = parseArgs([...argv], ROOT);
    assert.ok(!p.ok && p.exitCode === 2 && p.message.startsWith(`bench: ${msg}\n`) && p.message.endsWith(USAGE), argv.join(' '));
  }
});
