/**
 * The privileged datapath tests on a second kernel: Debian 12's own 6.1
 * kernel (linux-image-6.1.0-NN-amd64, never installed on this machine), booted
 * in qemu with a small initramfs by scripts/vm/prepare.sh + scripts/vm/run.sh.
 * The VM's root is this machine's / (9p, read-only) under a tmpfs overlay, so
 * the tests inside run the host's dist/, build/Release/ambient_native.node and
 * bpf/ambient.bpf.o, and nothing they do touches the host.
 *
 * Needs root, qemu-system-x86, busybox-static, cpio and kmod (`make deps`), a
 * built tree (`make build`) and, the first time, Debian's apt repository (the
 * kernel package is cached under /var/cache/ambientd-vm). KVM when usable,
 * else TCG emulation (slower; the output says which and why). See
 * docs/KERNELS.md.
 *
 * By default the VM runs native.test.js and datapath.test.js on dual-stack
 * pods (AMBIENTD_SANDBOX_IP_FAMILY=dual inside): datapath.test.js's IPv4 tests
 * on their IPv4 addresses and its IPv6 tests (connect6 captured with the
 * original destination, inbound IPv6 steered to 15006, IPv6 refused for a pod
 * the mesh knows no IPv6 address of, both families failing closed with the
 * agent SIGKILLed), which this test checks ran and passed.
 *
 * AMBIENTD_VM_TESTS overrides the test files run inside (space-separated,
 * relative to the repository), e.g. every dist/test/privileged/*.test.js;
 * AMBIENTD_SANDBOX_IP_FAMILY the pods' families inside (default: dual for the
 * default files, ipv4 for AMBIENTD_VM_TESTS).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BPF_OBJECT, ROOT } from '../helpers/paths.js';

const PREPARE = path.join(ROOT, 'scripts', 'vm', 'prepare.sh');
const RUN = path.join(ROOT, 'scripts', 'vm', 'run.sh');
const NATIVE = path.join(ROOT, 'build', 'Release', 'ambient_native.node');
const DEFAULT_TESTS = ['dist/test/privileged/native.test.js', 'dist/test/privileged/datapath.test.js'];
const TESTS = (process.env.AMBIENTD_VM_TESTS ?? '').split(/\s+/).filter(Boolean);
const VM_TESTS = TESTS.length > 0 ? TESTS : DEFAULT_TESTS;
/** The sandbox's address families inside the VM (tools/sandbox/plan.ts reads it). */
const VM_IP_FAMILY = process.env.AMBIENTD_SANDBOX_IP_FAMILY || (TESTS.length > 0 ? 'ipv4' : 'dual');
/** With the default files on dual-stack pods: datapath.test.js's IPv6 tests, which must run (not skip) and pass. */
const IPV6_TESTS = VM_TESTS === DEFAULT_TESTS && VM_IP_FAMILY === 'dual' ? 3 : 0;
/** Seconds the command inside the VM may run (TCG emulation is 10-30x slower than KVM). */
const VM_TIMEOUT_S = Number(process.env.AMBIENTD_VM_TIMEOUT ?? 600);
/** The share run.sh mounts in the VM (scripts/vm/init.sh). */
const SHARE = '/mnt/ambientd-vm';

interface TapResult {
  ok: boolean;
  name: string;
  depth: number;
  directive: string;
  /** the YAML block after a `not ok` line (error, stack) */
  detail: string;
}

/** node:test's TAP output: every `ok`/`not ok` line plus the `# pass N` style totals. */
function parseTap(text: string): { results: TapResult[]; totals: Record<string, number> } {
  const results: TapResult[] = [];
  const totals: Record<string, number> = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const m = /^(\s*)(not ok|ok) \d+ - (.*?)(?: # (SKIP|TODO)\b ?(.*))?$/.exec(line);
    if (m) {
      const r: TapResult = { ok: m[2] === 'ok', name: m[3]!, depth: m[1]!.length / 4, directive: m[4] ? `${m[4]} ${m[5] ?? ''}`.trim() : '', detail: '' };
      if (!r.ok && lines[i + 1]?.trim() === '---') {
        // the YAML block: from `---` to the `...` at the same indentation
        const end = lines.indexOf(`${m[1]}  ...`, i + 1);
        r.detail = lines.slice(i + 1, end < 0 ? i + 60 : end + 1).join('\n');
      }
      results.push(r);
      continue;
    }
    const t = /^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$/.exec(line);
    if (t) totals[t[1]!] = Number(t[2]);
  }
  return { results, totals };
}

function envFile(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .split('\n')
      .map((l) => /^([A-Z_]+)=(.*)$/.exec(l))
      .filter((m) => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  );
}

/** Runs a script; its stderr (and stdout unless captured) is copied to ours line by line, prefixed. */
function runScript(cmd: string, args: string[], prefix: string, timeoutMs: number): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    const pending = { out: '', err: '' };
    const echo = (which: 'out' | 'err', s: string, flush = false): void => {
      if (which === 'out') stdout += s;
      const text = pending[which] + s;
      const cut = flush ? text.length : text.lastIndexOf('\n') + 1;
      pending[which] = text.slice(cut);
      if (cut > 0)
        process.stderr.write(
          text
            .slice(0, cut)
            .replace(/\r/g, '')
            .replace(/^(?=.)/gm, prefix) + (flush && !text.endsWith('\n') ? '\n' : ''),
        );
    };
    child.stdout.setEncoding('utf8').on('data', (s: string) => echo('out', s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => echo('err', s));
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      echo('out', '', true);
      echo('err', '', true);
      resolve({ code, stdout });
    });
  });
}

let env: Record<string, string> = {};

test("prepare: Debian 12's 6.1 kernel package, unpacked, and an initramfs for it", { timeout: 15 * 60_000 }, async () => {
  assert.equal(process.getuid?.(), 0, 'needs root (apt-get download, qemu with 9p as root)');
  const t0 = Date.now();
  const r = await runScript(PREPARE, [], 'vm/prepare| ', 15 * 60_000);
  assert.equal(r.code, 0, 'scripts/vm/prepare.sh failed (see its output above)');
  env = envFile(r.stdout);
  assert.match(env.KVER ?? '', /^6\.1\.\d+-\d+-amd64$/, `KVER from prepare.sh: ${r.stdout}`);
  assert.match(env.KVERSION ?? '', /^6\.1\./);
  for (const f of [env.KERNEL!, env.INITRD!]) assert.ok(fs.statSync(f).size > 1_000_000, `${f} exists`);
  process.stderr.write(`vm/prepare| ${env.KPKG} ${env.KVERSION} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
});

test('the static kernel audit of bpf/ambient.bpf.o fits Linux 6.1', () => {
  const r = spawnSync(path.join(ROOT, 'scripts', 'kernel-audit.sh'), ['--max', '6.1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /required path needs Linux 5\.\d+ \(target 6\.1\)/);
});

test(
  `inside a VM running Debian's 6.1 kernel: ${VM_TESTS.map((f) => path.basename(f)).join(' + ')} pass (${VM_IP_FAMILY} pods${IPV6_TESTS ? ', IPv6 capture included' : ''})`,
  { timeout: (VM_TIMEOUT_S + 300) * 1000 },
  async () => {
    assert.ok(env.KVER, 'the prepare test passed');
    for (const f of [NATIVE, BPF_OBJECT, ...VM_TESTS.map((f) => path.join(ROOT, f))]) {
      assert.ok(fs.existsSync(f), `${f} is missing: run \`make build\` first`);
    }
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-vm-'));
    const script = [
      'echo "AMBIENTD-VM-UNAME=$(uname -r)"',
      'echo "AMBIENTD-VM-NODE=$(node --version)"',
      // spec for people reading the log, TAP (to the share) for the assertions below
      `exec node --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec --test-reporter-destination=stdout --test-reporter=tap --test-reporter-destination=${SHARE}/results.tap ${VM_TESTS.join(' ')}`,
    ].join('\n');
    const t0 = Date.now();
    const r = await runScript(
      RUN,
      ['--out', out, '--timeout', String(VM_TIMEOUT_S), '--env', `AMBIENTD_SANDBOX_IP_FAMILY=${VM_IP_FAMILY}`, '--', 'bash', '-c', script],
      'vm| ',
      (VM_TIMEOUT_S + 280) * 1000,
    );
    const secs = ((Date.now() - t0) / 1000).toFixed(0);
    const read = (f: string): string => {
      try {
        return fs.readFileSync(path.join(out, f), 'utf8');
      } catch {
        return '';
      }
    };
    const accel = read('accel').trim() || '?';
    const outLog = read('out.log');
    const consoleLog = read('console.log');

    // What ran where, and per-test results from inside the VM.
    const uname = /^AMBIENTD-VM-UNAME=(.*)$/m.exec(outLog)?.[1] ?? /^AMBIENTD-VM-READY kernel=(\S+)/m.exec(consoleLog)?.[1] ?? '';
    const tap = parseTap(read('results.tap'));
    const summary = [
      `kernel ${uname || '?'} (${env.KPKG} ${env.KVERSION}), ${accel.toUpperCase()}, ${VM_IP_FAMILY} pods, VM ${read('seconds').trim() || secs} s, run.sh exit ${r.code}, output in ${out}`,
      ...tap.results.map((x) => `${'  '.repeat(x.depth)}${x.ok ? (x.directive ? '-' : '✔') : '✖'} ${x.name}${x.directive ? ` # ${x.directive}` : ''}`),
      `totals: ${JSON.stringify(tap.totals)}`,
      ...tap.results.filter((x) => !x.ok).map((x) => `--- ✖ ${x.name}\n${x.detail.slice(0, 4000)}`),
    ].join('\n');
    process.stderr.write(`\n=== results inside the VM ===\n${summary}\n`);

    assert.notEqual(r.code, 125, `the VM did not report an exit code (crash, boot failure or hard timeout):\n${consoleLog.slice(-3000)}`);
    assert.match(uname, /^6\.1\./, 'the tests ran on a 6.1 kernel');
    assert.equal(uname, env.KVER, 'the kernel prepare.sh unpacked');
    assert.notEqual(r.code, 124, `the tests hit the VM's ${VM_TIMEOUT_S} s timeout`);
    assert.ok((tap.totals.pass ?? 0) > 0, `tests passed inside the VM: ${JSON.stringify(tap.totals)}\n${outLog.slice(-3000)}`);
    assert.equal(tap.totals.fail, 0, `failed inside the VM:\n${summary}`);
    assert.equal(tap.totals.cancelled ?? 0, 0, `cancelled inside the VM:\n${summary}`);
    assert.equal(r.code, 0, 'node --test inside the VM exited 0');
    if (IPV6_TESTS) {
      const v6 = tap.results.filter((x) => x.name.startsWith('IPv6 (dual-stack pods)'));
      assert.equal(v6.length, IPV6_TESTS, `datapath.test.js's IPv6 tests ran inside the VM:\n${summary}`);
      for (const x of v6) assert.ok(x.ok && !x.directive, `${x.name}: passed, not skipped (${x.directive})`);
    }
    assert.match(consoleLog, /reboot: Power down/, 'the VM powered off cleanly');
    fs.rmSync(out, { recursive: true, force: true });
  },
);
