/**
 * HTTP GET/POST to an endpoint inside another network namespace (e.g. an
 * agent's loopback-only admin port in a sandbox node), using a socket the
 * native addon created in that namespace.
 */
import http from 'node:http';
import net from 'node:net';
import { loadNative, errnoName } from '../datapath/native.js';
import { AmbientError } from './errors.js';
import { formatHostPort } from './hostport.js';

export interface NetnsResponse {
  status: number;
  body: string;
}

export function httpInNetns(netns: string | null, host: string, port: number, pathName: string, method = 'GET', timeoutMs = 5000): Promise<NetnsResponse> {
  return new Promise((resolve, reject) => {
    const createConnection = (): net.Socket => {
      if (!netns) return net.connect({ host, port });
      const fd = loadNative().socketInNetns(netns, { family: host.includes(':') ? 6 : 4 });
      if (fd < 0)
        throw new AmbientError('NETNS_UNAVAILABLE', `socket in ${netns}: ${errnoName(fd)}`, 'is the network namespace still there (is the sandbox up)?', {
          errno: -fd,
        });
      const s = new net.Socket({ fd, readable: true, writable: true });
      s.connect({ host, port });
      return s;
    };
    const req = http.request({ host, port, path: pathName, method, createConnection, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () =>
      req.destroy(
        new AmbientError(
          'TOOL_FAILED',
          `${method} ${pathName} on ${formatHostPort({ ip: host, port })}: no answer after ${timeoutMs} ms`,
          'is the agent running and answering there?',
        ),
      ),
    );
    req.on('error', reject);
    req.end();
  });
}

export async function getJsonInNetns<T>(netns: string | null, host: string, port: number, pathName: string): Promise<T> {
  const r = await httpInNetns(netns, host, port, pathName);
  if (r.status !== 200)
    throw new AmbientError(
      'TOOL_FAILED',
      `GET ${pathName}: HTTP ${r.status}: ${r.body.slice(0, 200)}`,
      'see the answer: the endpoint exists but refused the request',
    );
  return JSON.parse(r.body) as T;
}
