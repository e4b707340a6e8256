// Addresses as values: one way to write "ip:port" (IPv6 in brackets) and to
// read it back; connection records carry HostPort and show it that way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatHostPort, parseHostPort, sameHostPort } from '../../../src/util/hostport.js';
import { ConnectionTracker, dumpRecord } from '../../../src/proxy/connections.js';
import { accessLogEntry } from '../../../src/admin/access-log.js';
import { hp, tracked } from '../proxy/fixtures.js';

test('formatHostPort: IPv4 as ip:port, IPv6 in brackets', () => {
  assert.equal(formatHostPort({ ip: '10.0.0.1', port: 80 }), '10.0.0.1:80');
  assert.equal(formatHostPort({ ip: '::1', port: 80 }), '[::1]:80');
  assert.equal(formatHostPort({ ip: 'fd00::1', port: 65535 }), '[fd00::1]:65535');
});

test('parseHostPort reads what formatHostPort writes, and nothing else', () => {
  for (const a of [
    { ip: '10.0.0.1', port: 80 },
    { ip: '::1', port: 80 },
    { ip: 'fd00:1::2', port: 0 },
    { ip: '0.0.0.0', port: 65535 },
  ]) {
    assert.deepEqual(parseHostPort(formatHostPort(a)), a, formatHostPort(a));
  }
  assert.deepEqual(parseHostPort('[::1]:80'), { ip: '::1', port: 80 });
  for (const bad of [
    '',
    '10.0.0.1',
    '::1:80',
    '[::1]80',
    '[10.0.0.1]:80',
    'example.com:80',
    '10.0.0.1:',
    '10.0.0.1:65536',
    '10.0.0.1:-1',
    '10.0.0.1:8O',
    '[::1]:',
    '[nope]:80',
  ]) {
    assert.equal(parseHostPort(bad), null, JSON.stringify(bad));
  }
  assert.ok(sameHostPort(hp('[::1]:80'), { ip: '::1', port: 80 }));
  assert.ok(!sameHostPort(hp('[::1]:80'), hp('[::1]:81')));
});

test('records carry HostPort values; config_dump and the access log write them with brackets for IPv6', () => {
  const t = new ConnectionTracker();
  const r = t.begin({
    pod: 'ns/a',
    direction: 'outbound',
    via: 'passthrough',
    src: hp('[::1]:40000'),
    dst: hp('[::1]:80'),
    service: 'ns/svc',
    endpoint: hp('[fd00::2]:8080'),
  });
  assert.deepEqual(r.dst, { ip: '::1', port: 80 }, 'a value, not text');
  t.finish(r, { kind: 'closed' });
  const [d] = t.dump();
  assert.equal(d!.src, '[::1]:40000');
  assert.equal(d!.dst, '[::1]:80');
  assert.equal(d!.endpoint, '[fd00::2]:8080');
  assert.equal(d!.state, 'closed');
  assert.equal(d!.reason, 'eof');
  const log = accessLogEntry(r, { podByIp: () => undefined, spiffeOf: () => 'x' });
  assert.equal(log.src, '[::1]:40000');
  assert.equal(log.dst, '[::1]:80');
  assert.equal(log.endpoint, '[fd00::2]:8080');
  // a claim without a port (Forwarded for=ip) is the bare address, with one it is ip:port
  const inb = tracked({ direction: 'inbound', via: 'inbound-hbone', claimedSrc: { ip: 'fd00::9', port: null } });
  assert.equal(dumpRecord(inb).claimedSrc, 'fd00::9');
  assert.equal(dumpRecord({ ...inb, claimedSrc: { ip: 'fd00::9', port: 5 } }).claimedSrc, '[fd00::9]:5');
  assert.equal(dumpRecord({ ...inb, endpoint: null }).endpoint, undefined, 'no endpoint: the field is absent, as before');
});
