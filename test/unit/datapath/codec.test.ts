// The TypeScript codecs must mirror bpf/ambient.h exactly: checked against the
// BTF clang emitted into the object (bpftool parses it; no root needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { BPF_OBJECT } from '../../helpers/paths.js';
import {
  STRUCTS,
  MAPS,
  encodeIp,
  readIp,
  encodeSockaddr,
  decodeSockaddr,
  encodeConfig,
  decodeConfig,
  encodePod,
  decodePod,
  encodeCgroupPod,
  decodeCgroupPod,
  encodeListenerKey,
  decodeStruct,
} from '../../../src/datapath/codec.js';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number }>;
  nr_elems?: number;
}

const btf: BtfType[] = (JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', BPF_OBJECT], { encoding: 'utf8' })) as { types: BtfType[] }).types;
const byId = new Map(btf.map((t) => [t.id, t]));

function resolve(id: number): BtfType {
  let t = byId.get(id)!;
  while (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE') t = byId.get(t.type_id!)!;
  return t;
}
function sizeOf(t: BtfType): number {
  if (t.kind === 'ARRAY') return t.nr_elems! * sizeOf(resolve(t.type_id!));
  return t.size!;
}

test('every struct described in codec.ts matches the BTF layout (size, names, offsets, sizes)', () => {
  for (const desc of Object.values(STRUCTS)) {
    const t = btf.find((x) => x.kind === 'STRUCT' && x.name === desc.name);
    assert.ok(t, `struct ${desc.name} missing from BTF`);
    assert.equal(t.size, desc.size, `${desc.name} size`);
    assert.deepEqual(
      t.members!.map((m) => m.name),
      desc.fields.map((f) => f.name),
      `${desc.name} field names`,
    );
    for (const f of desc.fields) {
      const m: { type_id: number; bits_offset: number } = t.members!.find((x) => x.name === f.name)!;
      assert.equal(m.bits_offset, f.offset * 8, `${desc.name}.${f.name} offset`);
      assert.equal(sizeOf(resolve(m.type_id)), f.size, `${desc.name}.${f.name} size`);
    }
  }
});

test('every map in codec.ts exists in the object with the declared key/value types', () => {
  const vars = btf.filter((t) => t.kind === 'VAR' && t.name.startsWith('amb_'));
  assert.deepEqual(vars.map((v) => v.name).sort(), Object.keys(MAPS).sort(), 'same set of maps');
  for (const v of vars) {
    const def = resolve(v.type_id!);
    const typeName = (member: string): string => {
      const ptr = byId.get(def.members!.find((m) => m.name === member)!.type_id)!;
      const target = byId.get(ptr.type_id!)!;
      if (target.kind === 'STRUCT') return target.name;
      // __u32 / __u64 typedefs
      return target.name.replace(/^__/, '');
    };
    const spec = MAPS[v.name as keyof typeof MAPS];
    assert.equal(typeName('key'), spec.key, `${v.name} key type`);
    assert.equal(typeName('value'), spec.value, `${v.name} value type`);
  }
});

test('IPv4 and IPv6 addresses round-trip through struct amb_ip', () => {
  const b4 = encodeIp('10.244.1.2');
  assert.equal(b4.length, 20);
  assert.deepEqual([...b4.subarray(0, 8)], [2, 0, 0, 0, 10, 244, 1, 2]);
  assert.equal(readIp(b4, 0), '10.244.1.2');
  for (const ip of ['fd00::1', '::1', '2001:db8:0:1::a', '::ffff:10.0.0.1', '1:2:3:4:5:6:7:8']) {
    const b = encodeIp(ip);
    assert.equal(b[0], 10);
    const back = readIp(b, 0)!;
    assert.deepEqual(encodeIp(back), b, `${ip} -> ${back}`);
  }
  assert.equal(readIp(Buffer.alloc(20), 0), null);
  assert.throws(() => encodeIp('10.0.0.300'), /not an IP address/);
});

test('structs encode ports in host order and decode back', () => {
  const sa = encodeSockaddr({ ip: '10.0.0.1', port: 15001 });
  assert.equal(sa.readUInt16LE(20), 15001);
  assert.deepEqual(decodeSockaddr(sa), { ip: '10.0.0.1', port: 15001 });
  const cfg = { outboundPort: 15001, inboundPort: 15006, hbonePort: 15008, mark: 0x539, flags: 1 };
  assert.deepEqual(decodeConfig(encodeConfig(cfg)), cfg);
  const pod = { cgroupId: 123456789012n, flags: 1, exemptSrc: '10.100.0.1' };
  assert.deepEqual(decodePod(encodePod(pod)), pod);
  assert.deepEqual(decodeCgroupPod(encodeCgroupPod({ v4: '10.244.1.2', v6: null, flags: 2 })), { v4: '10.244.1.2', v6: null, flags: 2 });
  const lk = encodeListenerKey(99n, 15006);
  assert.deepEqual(decodeStruct('amb_listener_key', lk), { cgroup_id: 99n, port: 15006, family: 0, pad: 0, pad2: 0 });
  assert.deepEqual(lk, Buffer.from([99, 0, 0, 0, 0, 0, 0, 0, 0x9e, 0x3a, 0, 0, 0, 0, 0, 0]), 'the IPv4 key is the one agents before IPv6 wrote (hand-over)');
  assert.deepEqual(decodeStruct('amb_listener_key', encodeListenerKey(99n, 15008, 6)), { cgroup_id: 99n, port: 15008, family: 10, pad: 0, pad2: 0 });
  assert.deepEqual(decodeCgroupPod(encodeCgroupPod({ v4: null, v6: 'fd00::5', flags: 1 })), { v4: null, v6: 'fd00::5', flags: 1 });
  assert.deepEqual(decodeSockaddr(encodeSockaddr({ ip: 'fd00:10:244:2::14', port: 8080 })), { ip: 'fd00:10:244:2::14', port: 8080 });
});
