/**
 * The sandbox's node tokens: what the SandboxAuthenticator accepts and why it
 * refuses the rest (checked directly; server.test.ts drives it over gRPC).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { generateSandboxKey, mintSandboxToken, SandboxAuthenticator } from '../../../src/ca/auth-sandbox.js';

const keys = generateSandboxKey();
const auth = new SandboxAuthenticator({ publicKey: keys.publicKeyPem, audience: 'istio-ca' });
const base = { namespace: 'ambientd-system', serviceAccount: 'ambientd', node: 'n1', audience: 'istio-ca' };

/** A token with these claims, signed with the sandbox key (claims the minter would never write). */
function signed(claims: Record<string, unknown>, alg = 'EdDSA'): string {
  const h = Buffer.from(JSON.stringify({ alg, typ: 'JWT' })).toString('base64url');
  const p = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return `${h}.${p}.${sign(null, Buffer.from(`${h}.${p}`), createPrivateKey(keys.privateKeyPem)).toString('base64url')}`;
}

const rejects = (token: string | undefined, code: string, re: RegExp) =>
  assert.rejects(auth.authenticate(token), (e: Error & { code?: string }) => e.code === code && re.test(e.message), `${code} ${re}`);

test('sandbox token: a minted token names the ServiceAccount, the node and the pod', async () => {
  const tok = mintSandboxToken(keys.privateKeyPem, { ...base, pod: { name: 'ambientd-n1', uid: 'u1' } });
  assert.deepEqual(await auth.authenticate(tok), {
    namespace: 'ambientd-system',
    serviceAccount: 'ambientd',
    node: 'n1',
    pod: { name: 'ambientd-n1', uid: 'u1' },
    via: 'sandbox',
  });
  // several audiences, one of them the CA's
  assert.equal((await auth.authenticate(mintSandboxToken(keys.privateKeyPem, { ...base, audience: ['a', 'istio-ca'] }))).node, 'n1');
});

test('sandbox token: every malformed, forged or inapplicable token is refused with its reason', async () => {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: 'ambientd-sandbox',
    sub: 'system:serviceaccount:ambientd-system:ambientd',
    aud: ['istio-ca'],
    iat: now,
    nbf: now,
    exp: now + 3600,
    'kubernetes.io': { namespace: 'ambientd-system', serviceaccount: { name: 'ambientd' }, node: { name: 'n1' } },
  };
  await rejects(undefined, 'CA_AUTH_MISSING', /no bearer token/);
  await rejects('a.b', 'CA_AUTH_INVALID', /not a JWT/);
  await rejects('!!.!!.!!', 'CA_AUTH_INVALID', /base64url JSON/);
  await rejects(signed(claims, 'none'), 'CA_AUTH_INVALID', /signed with none, not EdDSA/);
  await rejects(signed({ ...claims, nbf: now + 3600 }), 'CA_AUTH_INVALID', /not valid before/);
  await rejects(signed({ ...claims, exp: undefined }), 'CA_AUTH_EXPIRED', /no exp/);
  await rejects(signed({ ...claims, sub: 'system:serviceaccount:ambientd-system:other' }), 'CA_AUTH_INVALID', /not a ServiceAccount matching/);
  await rejects(signed({ ...claims, sub: 'system:node:n1' }), 'CA_AUTH_INVALID', /not a ServiceAccount matching/);
  await rejects(signed({ ...claims, 'kubernetes.io': { ...claims['kubernetes.io'], node: undefined } }), 'CA_AUTH_NO_NODE', /no node claim/);
  await rejects(signed({ ...claims, 'kubernetes.io': { ...claims['kubernetes.io'], node: { name: '' } } }), 'CA_AUTH_NO_NODE', /no node claim/);
  // within the tolerated clock skew (60 s) an expired token still passes; beyond it not
  assert.equal((await auth.authenticate(signed({ ...claims, exp: now - 30 }))).node, 'n1');
  await rejects(signed({ ...claims, exp: now - 90 }), 'CA_AUTH_EXPIRED', /expired at/);
});

test('sandbox authenticator: the key must be Ed25519', () => {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  assert.throws(
    () => new SandboxAuthenticator({ publicKey, audience: 'istio-ca' }),
    (e: Error & { code?: string }) => e.code === 'CA_SERVER_CONFIG' && /Ed25519, got ec/.test(e.message),
  );
});
