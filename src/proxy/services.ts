/**
 * Service VIPs: which endpoint a connection to a service port goes to.
 */
import type { ServiceInfo, ServicePort } from '../discovery/model.js';
import type { Sockaddr } from '../datapath/codec.js';
import { ipFamily, type IpFamily } from '../util/address.js';

/**
 * The n-th choice (round robin) among a service port's ready endpoints, with
 * the target port resolved (a number, or a name looked up in the endpoint's
 * ports); endpoints that cannot serve a named port are skipped. Null when no
 * ready endpoint can serve it. With `family` (the family of the VIP that was
 * dialled) only endpoints of that family are chosen, as kube-proxy does for
 * a dual-stack Service: its IPv4 VIP goes to IPv4 endpoints, its IPv6 VIP to
 * IPv6 ones.
 */
export function chooseEndpoint(s: ServiceInfo, port: ServicePort, n: number, family?: IpFamily): Sockaddr | null {
  const ready = s.endpoints.filter((e) => e.ready && (family === undefined || ipFamily(e.ip) === family));
  for (let i = 0; i < ready.length; i++) {
    const ep = ready[(n + i) % ready.length]!;
    if (typeof port.targetPort === 'number') return { ip: ep.ip, port: port.targetPort };
    const named = ep.ports?.find((p) => p.name === port.targetPort);
    if (named) return { ip: ep.ip, port: named.port };
  }
  return null;
}
