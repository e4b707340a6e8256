// Typed connection records for tests: addresses written as text ("ip:port",
// "[v6]:port") become HostPort values, times ISO text or ms.
import { parseHostPort, type HostPort } from '../../../src/util/hostport.js';
import type { TrackedConnection } from '../../../src/proxy/connections.js';
import { AmbientError } from '../../../src/util/errors.js';
import type { PodInfo } from '../../../src/discovery/model.js';

/** "10.0.0.1:80" / "[::1]:80" as a HostPort (a test typo fails loudly). */
export function hp(text: string): HostPort {
  const a = parseHostPort(text);
  if (!a) throw new AmbientError('AGENT_INTERNAL', `test fixture: ${text} is not ip:port`, 'fix the test');
  return a;
}

/** A record with every field set: an open outbound HBONE connection unless `r` says otherwise. */
export function tracked(r: Partial<TrackedConnection>): TrackedConnection {
  return {
    id: 1,
    pod: 'ns/pod',
    direction: 'outbound',
    via: 'hbone',
    src: hp('10.0.0.1:40000'),
    claimedSrc: null,
    dst: hp('10.0.0.2:80'),
    service: null,
    endpoint: null,
    peerIdentity: null,
    peerCertSerial: null,
    startMs: Date.parse('2024-01-01T00:00:00.000Z'),
    endMs: null,
    bytesSent: 0,
    bytesReceived: 0,
    outcome: null,
    ...r,
  };
}

/** A remote pod of the mesh model (no node, netns or cgroup), service account `sa-<name>`. */
export const pod = (name: string, ns: string, ip: string, labels: Record<string, string> = {}): PodInfo => ({
  name,
  namespace: ns,
  serviceAccount: `sa-${name}`,
  node: null,
  ip,
  netns: null,
  cgroup: null,
  labels,
});

/** The SPIFFE id of a pod in the cluster.local trust domain. */
export const spiffe = (p: PodInfo): string => `spiffe://cluster.local/ns/${p.namespace}/sa/${p.serviceAccount}`;
