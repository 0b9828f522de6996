// A scripted authorization-code login with PKCE (S256) against the
// provider's development interactions, with plain HTTP: the authorization
// request, the login form, the consent form (offline_access and the API's
// scopes), the redirect with the code, and the code exchange.  Prints the
// refresh token, which becomes the module's seed file.
//
//   node login.js [--issuer URL] [--account NAME] [--client ID]
//                 [--secret SECRET] [--resource URL] [--json]
//
//   --issuer    ISSUER, default http://127.0.0.1:39850
//   --account   the account to log in as (the grant's "sub"), default alice
//   --client    default crm-gateway; --secret its client_secret
//   --resource  RESOURCE, default http://127.0.0.1:39860/
//   --json      print the whole token response instead of the refresh token
//
// Exit status 1, with the step that failed on stderr, if anything is not
// as a certified provider must answer.
// Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
// BSD 2-Clause License: see the file LICENSE.

import * as http from 'node:http';
import * as crypto from 'node:crypto';

function arg(name, env, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && process.argv[i + 1] !== undefined) return process.argv[i + 1];
  return process.env[env] ?? dflt;
}

const issuer = arg('issuer', 'ISSUER', 'http://127.0.0.1:39850');
const account = arg('account', 'ACCOUNT', 'alice');
const clientId = arg('client', 'CLIENT_ID', 'crm-gateway');
const clientSecret = arg('secret', 'CLIENT_SECRET', 'crm-gateway-secret-0123456789abcdef');
const resource = arg('resource', 'RESOURCE', 'http://127.0.0.1:39860/');
const redirectUri = 'http://127.0.0.1/cb';
const asJson = process.argv.includes('--json');

const b64url = (buf) => buf.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

function fail(step, detail) {
  process.stderr.write(`login: ${step}: ${detail}\n`);
  process.exit(1);
}

// the cookies the provider set, by name (the provider scopes some to a
// path; sending all of them back is what a browser would do here)
const jar = new Map();

function request(method, url, { form } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url, issuer);
    const body = form ? new URLSearchParams(form).toString() : undefined;
    const headers = { Accept: 'text/html,application/json' };
    if (jar.size) headers.Cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (body !== undefined) {
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const req = http.request(u, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        for (const c of res.headers['set-cookie'] ?? []) {
          const [pair, ...attrs] = c.split(';');
          const i = pair.indexOf('=');
          const name = pair.slice(0, i).trim();
          const value = pair.slice(i + 1).trim();
          const expired = attrs.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a))
            || attrs.some((a) => /^\s*max-age=0\s*$/i.test(a));
          if (expired || value === '') jar.delete(name); else jar.set(name, value);
        }
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const verifier = b64url(crypto.randomBytes(32));
const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
const state = b64url(crypto.randomBytes(16));

const auth = new URL('/auth', issuer);
auth.search = new URLSearchParams({
  client_id: clientId,
  response_type: 'code',
  redirect_uri: redirectUri,
  scope: 'openid offline_access api:read',
  resource,
  prompt: 'consent',
  code_challenge: challenge,
  code_challenge_method: 'S256',
  state,
}).toString();

// follow the provider's redirects until it sends the browser back to the
// client (the redirect URI) or shows a form
async function follow(res, step) {
  let r = res;
  for (let i = 0; i < 10 && r.status >= 300 && r.status < 400; i += 1) {
    const loc = r.headers.location;
    if (!loc) fail(step, `a ${r.status} without Location`);
    if (loc.startsWith(redirectUri)) return { done: new URL(loc) };
    r = await request('GET', loc);
  }
  return { res: r };
}

let { res, done } = await follow(await request('GET', auth.href), 'authorization request');

// at most two interactions: login, then consent
for (let i = 0; !done && i < 3; i += 1) {
  if (res.status !== 200) fail('interaction', `status ${res.status}: ${res.body.slice(0, 300)}`);
  const action = /<form[^>]*action="([^"]+)"/.exec(res.body)?.[1];
  const prompt = /name="prompt" value="(\w+)"/.exec(res.body)?.[1];
  if (!action || !prompt) fail('interaction', `no form in the page: ${res.body.slice(0, 300)}`);
  const form = prompt === 'login'
    ? { prompt: 'login', login: account, password: 'any' }
    : { prompt: 'consent' };
  ({ res, done } = await follow(await request('POST', action, { form }), `${prompt} form`));
}

if (!done) fail('authorization', 'the provider never redirected back to the client');

const params = done.searchParams;
if (params.get('error')) fail('authorization', `${params.get('error')}: ${params.get('error_description')}`);
if (params.get('state') !== state) fail('authorization', 'state mismatch');
const code = params.get('code');
if (!code) fail('authorization', `no code in ${done.href}`);

const token = await request('POST', '/token', {
  form: {
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    code_verifier: verifier,
    client_id: clientId,
    client_secret: clientSecret,
    resource,
  },
});

if (token.status !== 200) fail('code exchange', `status ${token.status}: ${token.body}`);
const out = JSON.parse(token.body);
if (!out.refresh_token) fail('code exchange', `no refresh token (offline_access not granted?): ${token.body}`);

process.stdout.write(asJson ? `${JSON.stringify(out)}\n` : `${out.refresh_token}\n`);
