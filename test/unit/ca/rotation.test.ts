/**
 * Root rotation with real HBONE (src/proxy/hbone over loopback, real mutual
 * TLS): two node agents (RemoteCaIssuer + IdentityManager, as the agent runs
 * them) get their workloads' certificates from the cluster CA (CaServer,
 * restarted at each step as `kubectl rollout restart` does), and their trust
 * bundle from the ConfigMap the CA publishes (publishTrustBundle), written to
 * each node's file as the kubelet does. The procedure of docs/CA.md:
 *   1. the Secret trusts and signs with the old root;
 *   2. it trusts old + new, still signs with the old one;
 *   3. it signs with the new one, trusts both;
 *   4. once every old-root certificate has expired (here: renewed), it trusts
 *      the new root only.
 * At every step a workload of one node talks to a workload of the other, both
 * ways, over new HBONE connections, with an old-root certificate on one side
 * and a new-root one on the other in step 3. After step 4 a certificate from
 * the removed root is refused both as client and as server. And the order
 * matters: signing with a root the agents do not trust yet gets no agent a
 * certificate (each keeps its valid one).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { CertificateAuthority, createRoot } from '../../../src/identity/ca.js';
import { IdentityManager } from '../../../src/identity/manager.js';
import { RemoteCaIssuer } from '../../../src/identity/ca-client.js';
import { CaServer } from '../../../src/ca/server.js';
import { servingCertificate } from '../../../src/ca/serving.js';
import { NodePodIndex } from '../../../src/ca/pod-index.js';
import { generateSandboxKey, mintSandboxToken, SandboxAuthenticator } from '../../../src/ca/auth-sandbox.js';
import { publishTrustBundle, ROOT_CONFIGMAP_KEY, type ConfigMapApi, type ConfigMapObject } from '../../../src/ca/root-publisher.js';
import { createHboneServer, type HboneServer } from '../../../src/proxy/hbone/server.js';
import { HbonePool } from '../../../src/proxy/hbone/client.js';
import { Logger } from '../../../src/util/log.js';
import { AGENT, AUDIENCE, id, snapshotOf, TD } from './harness.js';

const LO = '127.0.0.1';
const WEB = id('shop', 'web'); // runs on node-a
const DB = id('shop', 'db'); // runs on node-b
const CACHE = id('shop', 'cache'); // runs on node-a
const NS = 'ambientd-system';

type Root = { certPem: string; keyPkcs8Pem: string };

/** One ConfigMap in memory, with resourceVersions (the API's semantics for create and a conditional update). */
class MemoryConfigMaps implements ConfigMapApi {
  obj: ConfigMapObject | null = null;
  #rv = 1;
  async get(): Promise<ConfigMapObject | null> {
    return this.obj && { data: { ...this.obj.data }, resourceVersion: this.obj.resourceVersion };
  }
  async create(_ns: string, _name: string, data: Record<string, string>): Promise<'created' | 'exists'> {
    if (this.obj) return 'exists';
    this.obj = { data, resourceVersion: String(++this.#rv) };
    return 'created';
  }
  async replace(_ns: string, _name: string, data: Record<string, string>, rv: string): Promise<'replaced' | 'conflict' | 'gone'> {
    if (!this.obj) return 'gone';
    if (rv !== this.obj.resourceVersion) return 'conflict';
    this.obj = { data, resourceVersion: String(++this.#rv) };
    return 'replaced';
  }
}

const readAll = (s: Duplex): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });

const signedBy = (certPem: string, root: Root): boolean => new X509Certificate(certPem).verify(new X509Certificate(root.certPem).publicKey);

async function world(t: { after(fn: () => Promise<void> | void): void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-rotation-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = new Logger('test', 'off');
  const keys = generateSandboxKey();
  const pods = new NodePodIndex(TD);
  pods.update(
    snapshotOf([
      { namespace: 'shop', name: 'web-0', serviceAccount: 'web', node: 'node-a' },
      { namespace: 'shop', name: 'db-0', serviceAccount: 'db', node: 'node-b' },
      { namespace: 'shop', name: 'cache-0', serviceAccount: 'cache', node: 'node-a' },
    ]),
  );
  const authenticator = new SandboxAuthenticator({ publicKey: keys.publicKeyPem, audience: AUDIENCE });
  const configMaps = new MemoryConfigMaps();

  // --- the CA: material as the Secret holds it (signer + root-cert.pem with every trusted root), restarted per step
  let ca: CaServer | null = null;
  let port = 0;
  const rollout = async (signer: Root, trusted: Root[], o: { kubelet?: boolean } = {}): Promise<CertificateAuthority> => {
    const material = await CertificateAuthority.fromPem({
      trustDomain: TD,
      caCertPem: signer.certPem,
      caKeyPem: signer.keyPkcs8Pem,
      rootCertPem: trusted.map((r) => r.certPem).join(''),
    });
    if (ca) await ca.close(100);
    ca = new CaServer({
      signer: material,
      authenticator,
      pods,
      trustedNodeAccounts: [`${AGENT.namespace}/${AGENT.serviceAccount}`],
      tls: await servingCertificate(material, [LO]),
      log,
    });
    port = await ca.listen(`${LO}:${port}`);
    // the CA publishes the Secret's bundle; the kubelet of each node writes the ConfigMap to the agent's file
    await publishTrustBundle(configMaps, { namespace: NS, bundlePem: material.rootPem });
    for (const n of o.kubelet === false ? [] : nodes) {
      const tmp = `${n.rootFile}.tmp`;
      fs.writeFileSync(tmp, configMaps.obj!.data[ROOT_CONFIGMAP_KEY]!);
      fs.renameSync(tmp, n.rootFile); // a new inode, as the kubelet's symlink swap
    }
    return material;
  };
  t.after(() => ca?.close(100));

  // --- two node agents, each with its token and its copy of the bundle
  const nodes = ['node-a', 'node-b'].map((node) => {
    const tokenFile = path.join(dir, `${node}.token`);
    fs.writeFileSync(tokenFile, mintSandboxToken(keys.privateKeyPem, { ...AGENT, node, audience: AUDIENCE }));
    return { node, tokenFile, rootFile: path.join(dir, `${node}-root-cert.pem`), mgr: null as IdentityManager | null };
  });
  const agent = (i: number): IdentityManager => {
    const n = nodes[i]!;
    if (!n.mgr) {
      n.mgr = new IdentityManager({ issuer: new RemoteCaIssuer({ address: `${LO}:${port}`, rootFile: n.rootFile, tokenFile: n.tokenFile }) });
      t.after(() => n.mgr!.close());
    }
    return n.mgr;
  };

  // --- behind each workload, an echo application; in front, an HBONE server with that workload's certificate
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, LO, r));
  const echoPort = (echo.address() as net.AddressInfo).port;
  t.after(() => new Promise<void>((r) => echo.close(() => r())));
  const peersSeen: string[] = [];
  const hboneFor = async (mgr: () => IdentityManager, identity: string): Promise<{ server: HboneServer; port: number }> => {
    const server = createHboneServer({
      trustDomain: TD,
      getServerCert: async () => {
        const c = await mgr().get(identity);
        return { key: c.keyPem, cert: c.chainPem, ca: c.rootPem };
      },
      authorize: (peer) => {
        peersSeen.push(peer.id);
        return 'allow';
      },
    });
    const p = (await server.listen({ host: LO, port: 0 })).port;
    t.after(() => server.close({ graceMs: 100 }));
    return { server, port: p };
  };
  const webServer = await hboneFor(() => agent(0), WEB);
  const dbServer = await hboneFor(() => agent(1), DB);

  /** A new HBONE connection from `from` (its agent's certificate) to `to`'s server; the bytes echoed and the identity the server saw. */
  const talk = async (fromAgent: number, from: string, to: { port: number }, toId: string): Promise<void> => {
    const mgr = agent(fromAgent);
    const pool = new HbonePool({
      getClientCert: async (src) => {
        const c = await mgr.get(src);
        return { key: c.keyPem, cert: c.chainPem, ca: c.rootPem, notAfter: c.notAfter };
      },
    });
    try {
      const before = peersSeen.length;
      const s = await pool.connect({ srcId: from, dstId: toId, dstAddr: { ip: LO, port: to.port }, target: { ip: LO, port: echoPort } });
      const back = readAll(s);
      s.end(`${from} -> ${toId}`);
      assert.equal((await back).toString(), `${from} -> ${toId}`);
      assert.deepEqual(peersSeen.slice(before), [from], 'the server saw the client identity');
    } finally {
      await pool.close({ force: true });
    }
  };
  const bothWays = async (): Promise<void> => {
    await talk(0, WEB, dbServer, DB);
    await talk(1, DB, webServer, WEB);
  };
  return { rollout, agent, bothWays, webServer, dbServer, echoPort, peersSeen, configMaps };
}

test('root rotation: old -> old+new -> new signs -> old removed; cross-node HBONE works both ways at every step, a removed root is refused', async (t) => {
  const w = await world(t);
  const oldRoot: Root = await createRoot(TD, 30);
  const newRoot: Root = await createRoot(TD, 30);

  // 1. the old root trusts and signs
  await w.rollout(oldRoot, [oldRoot]);
  await w.bothWays();
  const webOld = await w.agent(0).get(WEB);
  assert.ok(signedBy(webOld.certPem, oldRoot));

  // 2. old + new trusted, old signs: nothing changes for the workloads
  await w.rollout(oldRoot, [oldRoot, newRoot]);
  assert.equal(w.configMaps.obj!.data[ROOT_CONFIGMAP_KEY], oldRoot.certPem + newRoot.certPem);
  await w.bothWays();

  // 3. the new root signs, both trusted. db (node-b) renews and gets a new-root certificate;
  // web (node-a) keeps its old-root one: old <-> new both ways
  await w.rollout(newRoot, [newRoot, oldRoot]);
  w.agent(1).forget(DB); // its renewal (at half-life in the agent)
  const dbNew = await w.agent(1).get(DB);
  assert.ok(signedBy(dbNew.certPem, newRoot), 'db renewed under the new root');
  assert.equal((await w.agent(0).get(WEB)).serial, webOld.serial, 'web still holds its old-root certificate');
  assert.ok(signedBy((await w.agent(0).get(WEB)).certPem, oldRoot));
  await w.bothWays();

  // 4. every old-root certificate has expired (web renewed), then the old root is removed
  w.agent(0).forget(WEB);
  const webNew = await w.agent(0).get(WEB);
  assert.ok(signedBy(webNew.certPem, newRoot));
  await w.rollout(newRoot, [newRoot]);
  assert.equal(w.configMaps.obj!.data[ROOT_CONFIGMAP_KEY], newRoot.certPem);
  await w.bothWays();

  // a certificate from the removed root (a stale one, or minted with the old key) is refused as a client ...
  const oldCa = await CertificateAuthority.fromPem({ trustDomain: TD, caCertPem: oldRoot.certPem, caKeyPem: oldRoot.keyPkcs8Pem });
  const stale = new IdentityManager({ issuer: oldCa });
  t.after(() => stale.close());
  const attacker = new HbonePool({
    getClientCert: async (src) => {
      const c = await stale.get(src);
      return { key: c.keyPem, cert: c.chainPem, ca: newRoot.certPem + oldRoot.certPem, notAfter: c.notAfter };
    },
  });
  t.after(() => attacker.close({ force: true }));
  const seen = w.peersSeen.length;
  await assert.rejects(
    attacker.connect({ srcId: WEB, dstId: DB, dstAddr: { ip: LO, port: w.dbServer.port }, target: { ip: LO, port: w.echoPort } }),
    (e: Error & { code?: string }) => e.code !== undefined && e.code.startsWith('HBONE_'),
  );
  assert.equal(w.peersSeen.length, seen, 'no stream reached authorization');
  assert.ok(
    Object.values(w.dbServer.server.stats().rejections as Record<string, number>).some((n) => n > 0),
    'the server counted a rejection',
  );
  // ... and as a server: an agent does not accept a peer presenting it
  const impostor = createHboneServer({
    trustDomain: TD,
    getServerCert: async () => {
      const c = await stale.get(DB);
      return { key: c.keyPem, cert: c.chainPem, ca: oldRoot.certPem };
    },
  });
  const impostorPort = (await impostor.listen({ host: LO, port: 0 })).port;
  t.after(() => impostor.close({ graceMs: 100 }));
  const mgrA = w.agent(0);
  const victim = new HbonePool({
    getClientCert: async (src) => {
      const c = await mgrA.get(src);
      return { key: c.keyPem, cert: c.chainPem, ca: c.rootPem, notAfter: c.notAfter };
    },
  });
  t.after(() => victim.close({ force: true }));
  await assert.rejects(
    victim.connect({ srcId: WEB, dstId: DB, dstAddr: { ip: LO, port: impostorPort }, target: { ip: LO, port: w.echoPort } }),
    (e: Error & { code?: string }) => e.code === 'HBONE_TLS' || e.code === 'HBONE_IDENTITY',
  );
});

test('root rotation out of order: a CA signing with a root the agents do not trust yet gets no agent a certificate; each keeps its valid one', async (t) => {
  const w = await world(t);
  const oldRoot: Root = await createRoot(TD, 30);
  const newRoot: Root = await createRoot(TD, 30);
  await w.rollout(oldRoot, [oldRoot]);
  const web = await w.agent(0).get(WEB);
  await w.agent(1).get(DB);
  // step 2 skipped: the CA signs with the new root while the agents' bundle is still the old root alone
  await w.rollout(newRoot, [newRoot], { kubelet: false });
  await assert.rejects(w.agent(0).get(CACHE), (e: Error & { code?: string }) => /^CA_/.test(e.code ?? ''), 'a new identity gets no certificate');
  assert.equal((await w.agent(0).get(WEB)).serial, web.serial, 'the valid certificate stays');
  await w.bothWays(); // the certificates already held keep working
});

test('agent trust bundle: follows the root file (a new inode, an edit in place); a missing, empty or non-PEM file keeps the last good bundle', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ambientd-bundle-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'root-cert.pem');
  const [a, b] = [await createRoot(TD, 30), await createRoot(TD, 30)];
  const issuer = new RemoteCaIssuer({ address: `${LO}:1`, rootFile: file, tokenFile: path.join(dir, 'token') });
  t.after(() => issuer.close());
  assert.equal(issuer.trustBundle(), undefined, 'no file yet: nothing (the issued bundle is used)');
  fs.writeFileSync(file, a.certPem);
  assert.equal(issuer.trustBundle(), a.certPem);
  fs.writeFileSync(`${file}.new`, a.certPem + b.certPem);
  fs.renameSync(`${file}.new`, file);
  assert.equal(issuer.trustBundle(), a.certPem + b.certPem);
  fs.writeFileSync(file, `${b.certPem}\n`); // in place: size and mtime change
  assert.equal(issuer.trustBundle(), b.certPem);
  for (const broken of ['', 'not a certificate\n']) {
    fs.writeFileSync(file, broken);
    assert.equal(issuer.trustBundle(), b.certPem, `${JSON.stringify(broken)}: the last good bundle, never an empty trust set`);
  }
  fs.rmSync(file);
  assert.equal(issuer.trustBundle(), b.certPem);
});
