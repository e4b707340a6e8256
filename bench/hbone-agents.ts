/**
 * The agents' view of a cross-node measurement (bench/hbone.ts): what their
 * /config_dump says about connections and HBONE streams, and the check that a
 * measurement through HBONE really went through both agents.
 */
import type { SandboxNode } from '../tools/sandbox/index.js';
import { getJsonInNetns } from '../src/util/netns-http.js';
import { toolFailed } from './lib.js';
import type { Verify } from './results.js';
import type { ConfigDump } from '../src/agent/index.js';

/** The part of an agent's /config_dump the cross-node benchmarks read. */
export type Dump = Pick<ConfigDump, 'connections' | 'hbone'>;

export const dump = (n: SandboxNode): Promise<Dump> => getJsonInNetns<Dump>(n.netnsPath, '127.0.0.1', 15000, '/config_dump');
const streamsOpened = (d: Dump): number => Object.values(d.hbone?.pools ?? {}).reduce((a, p) => a + p.streamsOpened, 0);
const tunnelsOpened = (d: Dump): number => d.hbone?.server.streams.tunnelsOpened ?? 0;

/** n1 pool's streams opened and n2 server's tunnels opened so far. */
export interface HboneCounters {
  s: number;
  t: number;
}

export async function hboneCounters(n1: SandboxNode, n2: SandboxNode): Promise<HboneCounters> {
  const [a, b] = await Promise.all([dump(n1), dump(n2)]);
  return { s: streamsOpened(a), t: tunnelsOpened(b) };
}

/** Checks with both agents that connections to dst ip:port went through HBONE. */
export async function verifyHbone(n1: SandboxNode, n2: SandboxNode, dst: string, c0: HboneCounters, want: number): Promise<Verify> {
  const [a, b] = await Promise.all([dump(n1), dump(n2)]);
  const out = a.connections.filter((c) => c.direction === 'outbound' && c.dst === dst);
  const v: Verify = {
    outboundHbone: out.filter((c) => c.via === 'hbone').length,
    outboundOther: out.filter((c) => c.via !== 'hbone').length,
    inboundHbone: b.connections.filter((c) => c.via === 'inbound-hbone' && c.dst === dst).length,
    streamsOpened: streamsOpened(a) - c0.s,
    tunnelsOpened: tunnelsOpened(b) - c0.t,
  };
  if (v.outboundOther > 0 || v.streamsOpened < want || v.tunnelsOpened < want || Math.min(v.outboundHbone, v.inboundHbone) < Math.min(want, 500)) {
    throw toolFailed(
      `connections to ${dst} did not all go through HBONE: ${JSON.stringify(v)} (expected >= ${want})`,
      "the figure would not be an HBONE one: check both agents' logs and /config_dump (are both pods enrolled?)",
    );
  }
  return v;
}
