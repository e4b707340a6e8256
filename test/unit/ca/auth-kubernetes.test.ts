/**
 * The Kubernetes path of the cluster CA against recorded-shape API objects:
 * TokenReview answers (test/fixtures/k8s/tokenreviews.json) and the pod
 * watch over the recorded pods (test/fixtures/k8s/pods.json: web on node-a
 * and node-b, db only on node-b), through a real gRPC connection.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { KubernetesSource } from '../../../src/discovery/kubernetes.js';
import { CA_WATCHED_RESOURCES } from '../../../src/ca/cli.js';
import { KubernetesAuthenticator, httpTokenReviewer } from '../../../src/ca/auth-kubernetes.js';
import { NodePodIndex } from '../../../src/ca/pod-index.js';
import { ERROR_CODE_METADATA } from '../../../src/ca/errors.js';
import { uriSansFromSubjectAltName } from '../../../src/identity/spiffe.js';
import { Logger } from '../../../src/util/log.js';
import { FakeApi, fixture, kubeConfigFor, type Obj } from '../discovery/fake-k8s-api.js';
import { FakeTokenReviewApi } from './fake-token-review.js';
import { AUDIENCE, id, makeCsr, refusal, startCa, TD } from './harness.js';

const WEB = id('ambient-demo', 'web');
const DB = id('ambient-demo', 'db');

async function k8sCa(t: { after(fn: () => Promise<void> | void): void }) {
  const api = new FakeApi();
  api.seedAll();
  await api.listen();
  const reviews = new FakeTokenReviewApi();
  await reviews.listen();
  const src = new KubernetesSource({
    kubeConfig: kubeConfigFor(api),
    nodeName: 'ambientd-ca', // no pod is local to the CA
    resolveLocalPod: () => null,
    resources: CA_WATCHED_RESOURCES,
    log: new Logger('test', 'off'),
  });
  await src.start();
  // least privilege: the CA lists and watches pods and nothing else (its RBAC in deploy/ca.yaml)
  assert.deepEqual([...new Set(api.requests.map((r) => r.res))], ['pods']);
  const index = new NodePodIndex(TD);
  const unfollow = index.follow(src);
  t.after(async () => {
    unfollow();
    src.stop();
    await api.close();
    await reviews.close();
  });
  const authenticator = new KubernetesAuthenticator({
    review: httpTokenReviewer(reviews.kubeConfig()),
    audience: AUDIENCE,
    pods: (ns, name) => index.pod(ns, name),
  });
  const h = await startCa(t, { index, authenticator });
  return { h, api, reviews, index };
}

const codeOf = (e: grpc.ServiceError): string => String(e.metadata.get(ERROR_CODE_METADATA)[0]);

test('kubernetes: a bound agent token on node-a gets web (on node-a), not db (only on node-b); node-b gets db', async (t) => {
  const { h, reviews } = await k8sCa(t);
  const { csr } = await makeCsr({ uris: [WEB] });
  const res = await h.call({ csr, impersonate: WEB }, 'agent-node-a');
  assert.deepEqual(uriSansFromSubjectAltName(new X509Certificate(res.cert_chain[0]!).subjectAltName), [WEB]);
  assert.deepEqual(reviews.requests[0], { token: 'agent-node-a', audiences: [AUDIENCE], auth: 'Bearer ca-token' });

  const db = await makeCsr({ uris: [DB] });
  const e = await refusal(h.call({ csr: db.csr, impersonate: DB }, 'agent-node-a'));
  assert.equal(e.code, grpc.status.PERMISSION_DENIED);
  assert.equal(codeOf(e), 'CA_NODE_DENIED');
  assert.equal(await h.metric('refused', 'CA_NODE_DENIED'), 1);
  assert.deepEqual(h.logs.find((l) => l.code === 'CA_NODE_DENIED')?.runsOn, ['node-b']);
  const ok = await h.call({ csr: db.csr, impersonate: DB }, 'agent-node-b');
  assert.equal(ok.cert_chain.length, 2);
});

test('kubernetes: expired, wrong-audience, unknown, deleted-pod, non-ServiceAccount and unbound tokens are refused', async (t) => {
  const { h } = await k8sCa(t);
  const { csr } = await makeCsr({ uris: [WEB] });
  const cases: Array<[string, string, RegExp]> = [
    ['agent-expired', 'CA_AUTH_EXPIRED', /service account token has expired/],
    ['agent-wrong-audience', 'CA_AUTH_AUDIENCE', /is invalid for the target audiences/],
    ['audience-mismatch-accepted', 'CA_AUTH_AUDIENCE', /the CA expects "istio-ca"/],
    ['random-string', 'CA_AUTH_INVALID', /compact JWS format/],
    ['agent-deleted-pod', 'CA_AUTH_INVALID', /not found/],
    ['kubelet-user', 'CA_AUTH_INVALID', /not a ServiceAccount token \(user "system:node:node-a"\)/],
    ['legacy-secret-token', 'CA_AUTH_NO_NODE', /not bound to a pod/],
    ['web-stale-uid', 'CA_AUTH_INVALID', /uid 00000000-1111-4222-8333-444444444444, the index holds uid 3f9c2a1e/],
  ];
  for (const [token, code, re] of cases) {
    const e = await refusal(h.call({ csr, impersonate: WEB }, token));
    assert.equal(e.code, grpc.status.UNAUTHENTICATED, token);
    assert.equal(codeOf(e), code, token);
    assert.match(e.details, re, token);
  }
  assert.equal(await h.metric('issued', 'OK'), 0);
});

test('kubernetes: a token without the node claim (before 1.30) takes the node of its bound pod from the index', async (t) => {
  const { h } = await k8sCa(t);
  const { csr } = await makeCsr();
  // web's own identity: fine (its pod web-6d8f7c9b5-x2k7p is on node-a)
  const res = await h.call({ csr }, 'web-pre-1.30');
  assert.deepEqual(uriSansFromSubjectAltName(new X509Certificate(res.cert_chain[0]!).subjectAltName), [WEB]);
  // but web is no node agent
  const e = await refusal(h.call({ csr, impersonate: DB }, 'web-pre-1.30'));
  assert.equal(codeOf(e), 'CA_IMPERSONATION_DENIED');
});

test('kubernetes: the pod index follows the watch (a db pod scheduled on node-a)', async (t) => {
  const { h, api, index } = await k8sCa(t);
  const { csr } = await makeCsr({ uris: [DB] });
  assert.equal(codeOf(await refusal(h.call({ csr, impersonate: DB }, 'agent-node-a'))), 'CA_NODE_DENIED');
  const db0 = fixture('pods').find((p: Obj) => p.metadata.name === 'db-0')!;
  const db1 = structuredClone(db0);
  db1.metadata.name = 'db-1';
  db1.metadata.uid = '4b5c6d7e-8f9a-4b0c-9d1e-2f3a4b5c6d7e';
  db1.spec.nodeName = 'node-a';
  db1.status.podIP = '10.244.1.21';
  db1.status.podIPs = [{ ip: '10.244.1.21' }];
  api.put('pods', db1);
  const deadline = Date.now() + 5000;
  while (index.podsWith('node-a', DB).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(index.podsWith('node-a', DB), ['ambient-demo/db-1']);
  const res = await h.call({ csr, impersonate: DB }, 'agent-node-a');
  assert.equal(res.cert_chain.length, 2);
});

test('kubernetes: an API server that cannot review the token gives UNAVAILABLE (the agent retries)', async (t) => {
  const { h, reviews } = await k8sCa(t);
  const { csr } = await makeCsr({ uris: [WEB] });
  reviews.failWith = 500;
  const e = await refusal(h.call({ csr, impersonate: WEB }, 'agent-node-a'));
  assert.equal(e.code, grpc.status.UNAVAILABLE);
  assert.equal(codeOf(e), 'CA_AUTH_UNAVAILABLE');
  assert.match(e.details, /HTTP 500: etcdserver: request timed out/);
  assert.equal(await h.metric('failed', 'CA_AUTH_UNAVAILABLE'), 1);
  reviews.failWith = null;
  assert.equal((await h.call({ csr, impersonate: WEB }, 'agent-node-a')).cert_chain.length, 2);
});

test('kubernetes: the CA with the wrong credentials of its own gets no TokenReview', async () => {
  const reviews = new FakeTokenReviewApi();
  await reviews.listen();
  try {
    const auth = new KubernetesAuthenticator({ review: httpTokenReviewer(reviews.kubeConfig('wrong')), audience: AUDIENCE });
    await assert.rejects(auth.authenticate('agent-node-a'), (e: Error & { code?: string }) => e.code === 'CA_AUTH_UNAVAILABLE' && /HTTP 401/.test(e.message));
    await assert.rejects(auth.authenticate(undefined), (e: Error & { code?: string }) => e.code === 'CA_AUTH_MISSING');
  } finally {
    await reviews.close();
  }
});

test('kubernetes: an accepted token is remembered for cacheTtlMs (one TokenReview for many identities); refusals never are', async (t) => {
  const reviews = new FakeTokenReviewApi();
  await reviews.listen();
  t.after(() => reviews.close());
  let now = 1_000_000;
  const auth = new KubernetesAuthenticator({ review: httpTokenReviewer(reviews.kubeConfig()), audience: AUDIENCE, cacheTtlMs: 30_000, now: () => now });
  for (let i = 0; i < 5; i++) assert.equal((await auth.authenticate('agent-node-a')).node, 'node-a');
  assert.equal(reviews.requests.length, 1);
  now += 29_000;
  await auth.authenticate('agent-node-a');
  assert.equal(reviews.requests.length, 1);
  now += 2_000; // past the TTL: reviewed again
  await auth.authenticate('agent-node-a');
  assert.equal(reviews.requests.length, 2);
  for (let i = 0; i < 3; i++) await assert.rejects(auth.authenticate('agent-expired'));
  assert.equal(reviews.requests.length, 5);
  // a caller object handed out is a copy: changing it changes nothing remembered
  const c = await auth.authenticate('agent-node-a');
  c.node = 'node-b';
  assert.equal((await auth.authenticate('agent-node-a')).node, 'node-a');
  // cacheTtlMs 0: every request reviewed
  const none = new KubernetesAuthenticator({ review: httpTokenReviewer(reviews.kubeConfig()), audience: AUDIENCE, cacheTtlMs: 0 });
  await none.authenticate('agent-node-b');
  await none.authenticate('agent-node-b');
  assert.equal(none.reviews, 2);
});
