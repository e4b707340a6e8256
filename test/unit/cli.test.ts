// `ambientd sandbox` and `ambientd demo` are development tools (tools/, compiled
// to dist/tools/): the CLI loads them on demand, and an installation that ships
// only dist/src (the agent image) says so with a typed error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, ROOT } from '../helpers/paths.js';

const run = (cli: string, ...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

test('in a checkout the CLI loads the sandbox from dist/tools (its own usage errors come through)', () => {
  const r = run(CLI, 'sandbox', 'no-such-command');
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /USAGE: unknown sandbox command "no-such-command"/);
});

test('without dist/tools (the agent image), sandbox and demo fail with TOOLS_NOT_INSTALLED and a hint; the agent commands still answer', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-cli-'));
  try {
    fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(tmp, 'dist', 'src'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(tmp, 'package.json'));
    const cli = path.join(tmp, 'dist', 'src', 'cli.js');
    for (const args of [['sandbox', 'status'], ['demo']]) {
      const r = run(cli, ...args);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^ambientd: TOOLS_NOT_INSTALLED: \`ambientd ${args[0]}\` is a development tool`));
      assert.match(r.stderr, /\n {2}hint: .*source checkout/);
    }
    const help = run(cli, '--help');
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /ambientd agent/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
