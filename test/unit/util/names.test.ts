import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatHostPort, parseHostPort } from '../../../src/util/hostport.js';
import { isDns1123Label, isDns1123Subdomain, isIanaSvcName } from '../../../src/util/dns1123.js';

test('HostPort: IPv4 and IPv6 round-trip; bad text is null', () => {
  for (const [ip, port] of [
    ['10.0.0.1', 80],
    ['fd00::1', 8080],
    ['::ffff:10.0.0.1', 1],
    ['::', 0],
  ] as const) {
    const text = formatHostPort({ ip, port });
    assert.deepEqual(parseHostPort(text), { ip, port }, text);
  }
  assert.equal(formatHostPort({ ip: 'fd00::1', port: 80 }), '[fd00::1]:80');
  for (const bad of [
    '',
    '10.0.0.1',
    '10.0.0.1:',
    '10.0.0.1:65536',
    '10.0.0.1:-1',
    'fd00::1:80',
    '[fd00::1]80',
    '[10.0.0.1]:80',
    'host:80',
    '10.0.0.1:8a',
    '[fd00::1]:',
  ]) {
    assert.equal(parseHostPort(bad), null, bad);
  }
});

test('DNS-1123 names: labels, subdomains, IANA service names', () => {
  assert.ok(isDns1123Label('a') && isDns1123Label('ns-1') && isDns1123Label('x'.repeat(63)));
  for (const bad of ['', 'A', '-a', 'a-', 'a.b', 'x'.repeat(64), 'a_b', 7]) assert.equal(isDns1123Label(bad), false, String(bad));
  assert.ok(isDns1123Subdomain('a.b-c.d') && isDns1123Subdomain('pod-1'));
  assert.ok(isDns1123Subdomain(`${'x'.repeat(64)}.a`), 'a label over 63 is fine in a subdomain (Kubernetes checks only the total)');
  for (const bad of ['', '.a', 'a.', 'a..b', 'A.b', 'a'.repeat(254)]) assert.equal(isDns1123Subdomain(bad), false, bad);
  assert.ok(isIanaSvcName('http') && isIanaSvcName('grpc-web') && isIanaSvcName('h2c'));
  for (const bad of ['', '8080', 'a--b', '-a', 'x'.repeat(16), 'HTTP']) assert.equal(isIanaSvcName(bad), false, bad);
});
