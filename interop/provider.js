// A real, certified OpenID provider (panva's oidc-provider, pinned in
// package-lock.json) configured for the interop suite of
// ngx_http_tokenrefresh_module, on loopback, with a small admin API for
// the tests.
//
//   node provider.js [--port N] [--keys DIR] [--resource URL] [--ttl S]
//
//   --port      PROVIDER_PORT, default 39850; the issuer is
//               http://127.0.0.1:<port>
//   --keys      INTEROP_KEYS: a directory with the clients' public keys,
//               made by the test run (never committed):
//                 rs256.pub.pem   RSA public key (private_key_jwt, RS256)
//                 es256.pub.pem   P-256 public key (private_key_jwt, ES256)
//                 hs256.secret    the client_secret_jwt secret (HS256)
//   --resource  RESOURCE: the resource indicator of the API (RFC 8707),
//               default http://127.0.0.1:39860/; access tokens for it are
//               JWTs (RFC 9068) with that audience
//   --ttl       AT_TTL: the default access token lifetime, seconds (300)
//
// Clients (all confidential):
//   cc-post     client_credentials, client_secret_post
//   cc-rs256    client_credentials, private_key_jwt RS256
//   cc-es256    client_credentials, private_key_jwt ES256
//   cc-hs256    client_credentials, client_secret_jwt HS256
//   crm-gateway authorization_code (PKCE S256) + refresh_token (rotating)
//               + client_credentials, client_secret_post; redirect URI
//               http://127.0.0.1/cb (never fetched: login.js reads the code
//               from the Location header)
//
// Endpoints of the provider (oidc-provider 8 defaults): /auth, /token,
// /token/revocation, /jwks, /interaction/:uid (devInteractions: login and
// consent forms driven by login.js with plain HTTP),
// /.well-known/openid-configuration.
//
// Admin API (for the tests, loopback only):
//   GET  /admin/stats     counters, as JSON (see resetStats() below)
//   GET  /admin/calls     the token endpoint calls in one line:
//                         "calls=2 client_credentials=1 refresh_token=1",
//                         then failed=N reuse=N revoked_grants=N if not 0
//   POST /admin/reset     zero the counters
//   POST /admin/config    {"ttl": {"default": 300, "<client_id>": 3}}:
//                         access token lifetimes, per client
//                         ({"reset_ttl": true} first drops them all);
//                         {"delay_ms": N}: the answers to token requests
//                         leave N ms after the provider handled them
//   POST /admin/revoke    {"account": "alice"} or {"client_id": "x"}: revoke
//                         those grants, with their refresh and access tokens,
//                         as the provider does on reuse or logout
//   GET  /admin/grants    the live grants: id, client, account
//   GET  /admin/requests  the last token endpoint requests: raw headers
//                         (duplicates kept), parameters (secrets masked),
//                         status and error
// Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
// BSD 2-Clause License: see the file LICENSE.

import * as http from 'node:http';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import Provider, { errors } from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';

function arg(name, env, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && process.argv[i + 1] !== undefined) return process.argv[i + 1];
  return process.env[env] ?? dflt;
}

const port = Number(arg('port', 'PROVIDER_PORT', 39850));
const keysDir = arg('keys', 'INTEROP_KEYS', '');
const RESOURCE = arg('resource', 'RESOURCE', 'http://127.0.0.1:39860/');
const issuer = `http://127.0.0.1:${port}`;

function versionOf(pkg) {
  const dir = path.dirname(new URL(import.meta.url).pathname);
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'node_modules', pkg, 'package.json'), 'utf8')).version;
  } catch (e) {
    return 'unknown';
  }
}

const versions = { node: process.version, 'oidc-provider': versionOf('oidc-provider'), jose: versionOf('jose') };

const defaultTtl = Number(arg('ttl', 'AT_TTL', 300));
const ttl = { default: defaultTtl };

// a slow network: the provider handles each token request at once, and
// its answer leaves this much later (POST /admin/config {"delay_ms": N})
let delayMs = 0;

function ttlFor(client) {
  const id = client?.clientId;
  return (id && ttl[id]) || ttl.default;
}

// ---------------------------------------------------------------- storage

// The provider's own in-memory adapter is an LRU of 1000 entries; this one
// keeps everything until it expires, and lets the admin API list grants.
const store = new Map(); // "Model:id" -> { payload, exp }

function live(key) {
  const e = store.get(key);
  if (!e) return undefined;
  if (e.exp && e.exp <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return e;
}

class Adapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), {
      payload,
      exp: expiresIn ? Date.now() + expiresIn * 1000 : 0,
    });
  }

  async find(id) { return live(this.key(id))?.payload; }

  async findByUid(uid) {
    for (const [k, e] of store) {
      if (k.startsWith(`${this.model}:`) && e.payload.uid === uid && live(k)) {
        return e.payload;
      }
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [k, e] of store) {
      if (k.startsWith(`${this.model}:`) && e.payload.userCode === userCode && live(k)) {
        return e.payload;
      }
    }
    return undefined;
  }

  async consume(id) {
    const e = live(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const [k, e] of store) {
      if (k.startsWith(`${this.model}:`) && e.payload.grantId === grantId) {
        store.delete(k);
      }
    }
  }
}

// ---------------------------------------------------------------- clients

function readKey(file) {
  if (!keysDir) return undefined;
  const f = path.join(keysDir, file);
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : undefined;
}

async function publicJwk(file, alg) {
  const pem = readKey(file);
  if (!pem) return undefined;
  const jwk = await exportJWK(crypto.createPublicKey(pem));
  return { ...jwk, alg, use: 'sig' };
}

const rsJwk = await publicJwk('rs256.pub.pem', 'RS256');
const esJwk = await publicJwk('es256.pub.pem', 'ES256');
const hsSecret = readKey('hs256.secret')?.trim();

const CC = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [] };

const clients = [
  {
    ...CC,
    client_id: 'cc-post',
    client_secret: 'cc-post-secret-0123456789abcdef',
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    ...CC,
    client_id: 'crm-gateway',
    client_secret: 'crm-gateway-secret-0123456789abcdef',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/cb'],
  },
];

if (rsJwk) {
  clients.push({
    ...CC,
    client_id: 'cc-rs256',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'RS256',
    jwks: { keys: [{ ...rsJwk, kid: 'k1' }] },
  });
}

if (esJwk) {
  clients.push({
    ...CC,
    client_id: 'cc-es256',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: { keys: [esJwk] },
  });
}

if (hsSecret) {
  clients.push({
    ...CC,
    client_id: 'cc-hs256',
    client_secret: hsSecret,
    token_endpoint_auth_method: 'client_secret_jwt',
    token_endpoint_auth_signing_alg: 'HS256',
  });
}

// ---------------------------------------------------------------- provider

// the provider's own signing key, new at every start
const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: `op-${Date.now()}`, alg: 'RS256', use: 'sig' };

const configuration = {
  adapter: Adapter,
  clients,
  jwks: { keys: [signingJwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id }; } };
  },
  scopes: ['openid', 'offline_access'],
  claims: { openid: ['sub'] },
  pkce: { required: () => true },
  // every refresh rotates the refresh token; a spent one that comes back
  // revokes the whole grant (the provider's default revokeGrantPolicy)
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // authorization code and refresh grants without a resource= use the
      // one granted (the API); client_credentials without one gets an
      // opaque token (no default)
      defaultResource(ctx, client, oneOf) {
        return oneOf ? oneOf[0] : undefined;
      },
      useGrantedResource() { return true; },
      getResourceServerInfo(ctx, resourceIndicator, client) {
        if (resourceIndicator !== RESOURCE) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: 'api:read api:write',
          audience: RESOURCE,
          accessTokenTTL: ttlFor(client),
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  ttl: {
    AccessToken: (ctx, token, client) => token.resourceServer?.accessTokenTTL || ttlFor(client),
    ClientCredentials: (ctx, token, client) => token.resourceServer?.accessTokenTTL || ttlFor(client),
    AuthorizationCode: 60,
    IdToken: 300,
    Interaction: 600,
    Session: 3600,
    Grant: 14 * 24 * 3600,
    RefreshToken: 14 * 24 * 3600,
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

// oidc-provider prints a warning for each development-only default; the
// suite uses devInteractions on purpose
const provider = new Provider(issuer, configuration);

// ---------------------------------------------------------------- counters

let stats;
let requests;

function resetStats() {
  stats = {
    calls: 0,              // POST /token
    by_grant: {},          // grant_type -> calls
    by_client: {},         // client_id -> grant_type -> calls
    ok: {},                // grant_type -> successes
    errors: {},            // grant_type -> error code -> count
    error_details: {},     // the provider's internal reason -> count
    by_status: {},         // HTTP status -> count
    reuse: 0,              // a rotated refresh token came back
    rotations: 0,          // refresh tokens consumed (rotated)
    revoked_grants: 0,     // grants revoked by the provider (reuse, ...)
    admin_revoked: 0,      // grants revoked through /admin/revoke
    revocation_calls: 0,   // RFC 7009 /token/revocation
    server_errors: 0,
    duplicate_headers: {}, // header name -> token requests that had it twice
    max_inflight: 0,
  };
  requests = [];
}
resetStats();

let inflight = 0;

provider.on('grant.success', (ctx) => {
  const g = ctx.oidc.params?.grant_type ?? 'none';
  stats.ok[g] = (stats.ok[g] ?? 0) + 1;
});

provider.on('grant.error', (ctx, err) => {
  const g = ctx.oidc?.params?.grant_type ?? 'none';
  stats.errors[g] ??= {};
  stats.errors[g][err.error] = (stats.errors[g][err.error] ?? 0) + 1;
  // the provider answers with a generic description; the reason is here
  const detail = err.error_detail ?? err.error_description ?? err.message;
  stats.error_details[detail] = (stats.error_details[detail] ?? 0) + 1;
  if (ctx.state) ctx.state.errorDetail = detail;
  // the refresh_token grant's reuse detection (lib/actions/grants/
  // refresh_token.js): a consumed refresh token is destroyed, its grant
  // revoked, and the answer is invalid_grant "refresh token already used"
  if (err.error === 'invalid_grant' && err.error_detail === 'refresh token already used') {
    stats.reuse += 1;
  }
});

provider.on('grant.revoked', () => { stats.revoked_grants += 1; });
provider.on('refresh_token.consumed', () => { stats.rotations += 1; });
provider.on('server_error', (ctx, err) => {
  stats.server_errors += 1;
  console.error(`provider: server_error ${ctx.method} ${ctx.path}: ${err.stack}`);
});

const SECRET_PARAMS = new Set(['client_secret', 'client_assertion', 'refresh_token', 'code', 'code_verifier']);

function masked(params) {
  const out = {};
  for (const [k, v] of Object.entries(params ?? {})) {
    if (v === undefined) continue;
    out[k] = SECRET_PARAMS.has(k)
      ? `<${k} sha256:${crypto.createHash('sha256').update(String(v)).digest('hex').slice(0, 12)}>`
      : v;
  }
  return out;
}

// every token endpoint call, counted before the provider sees it and
// recorded with its outcome after
provider.use(async (ctx, next) => {
  const token = ctx.method === 'POST' && ctx.path === '/token';
  if (ctx.path === '/token/revocation') stats.revocation_calls += 1;
  if (!token) return next();

  stats.calls += 1;
  inflight += 1;
  stats.max_inflight = Math.max(stats.max_inflight, inflight);

  const raw = ctx.req.rawHeaders;
  const seen = {};
  const headers = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    seen[name] = (seen[name] ?? 0) + 1;
    headers.push([raw[i], name === 'authorization' ? '<masked>' : raw[i + 1]]);
  }
  for (const [name, n] of Object.entries(seen)) {
    if (n > 1) stats.duplicate_headers[name] = (stats.duplicate_headers[name] ?? 0) + 1;
  }

  try {
    await next();
    if (delayMs) await new Promise((resolve) => { setTimeout(resolve, delayMs); });
  } finally {
    inflight -= 1;
    const g = ctx.oidc?.params?.grant_type ?? 'none';
    const client = ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id ?? '-';
    stats.by_grant[g] = (stats.by_grant[g] ?? 0) + 1;
    stats.by_client[client] ??= {};
    stats.by_client[client][g] = (stats.by_client[client][g] ?? 0) + 1;
    stats.by_status[ctx.status] = (stats.by_status[ctx.status] ?? 0) + 1;
    const body = ctx.body && typeof ctx.body === 'object' ? ctx.body : {};
    requests.push({
      time: Date.now() / 1000,
      headers,
      params: masked(ctx.oidc?.params),
      client,
      grant_type: g,
      status: ctx.status,
      error: body.error,
      error_description: body.error_description,
      error_detail: ctx.state?.errorDetail,
      response_headers: ctx.response.headers,
    });
    if (requests.length > 500) requests.shift();
  }
});

// ---------------------------------------------------------------- admin

function grantsWhere(pred) {
  const out = [];
  for (const [k, e] of store) {
    if (k.startsWith('Grant:') && live(k) && pred(e.payload)) {
      out.push({ id: k.slice(6), client_id: e.payload.clientId, account: e.payload.accountId });
    }
  }
  return out;
}

async function revokeGrant(id) {
  await Promise.all([
    provider.AccessToken.adapter.revokeByGrantId(id),
    provider.RefreshToken.adapter.revokeByGrantId(id),
    provider.AuthorizationCode.adapter.revokeByGrantId(id),
    provider.Grant.adapter.destroy(id),
  ]);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const s = Buffer.concat(chunks).toString('utf8');
      try { resolve(s ? JSON.parse(s) : {}); } catch (e) { reject(e); }
    });
    req.on('error', reject);
  });
}

async function admin(req, res) {
  const send = (status, data) => {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(`${JSON.stringify(data)}\n`);
  };
  const url = new URL(req.url, issuer);
  const p = url.pathname;
  try {
    if (req.method === 'GET' && p === '/admin/stats') return send(200, { ...stats, inflight });
    if (req.method === 'GET' && p === '/admin/requests') return send(200, requests);
    if (req.method === 'GET' && p === '/admin/calls') {
      // one line a test can compare, like the Perl mock's /_mock/calls:
      // "calls=2 client_credentials=1 refresh_token=1", then the failed
      // calls and the provider's reactions when there were any
      let line = `calls=${stats.calls}`;
      for (const g of Object.keys(stats.by_grant).sort()) line += ` ${g}=${stats.by_grant[g]}`;
      const failed = stats.calls - Object.values(stats.ok).reduce((a, b) => a + b, 0);
      if (failed) line += ` failed=${failed}`;
      if (stats.reuse) line += ` reuse=${stats.reuse}`;
      if (stats.revoked_grants) line += ` revoked_grants=${stats.revoked_grants}`;
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      return res.end(`${line}\n`);
    }
    if (req.method === 'GET' && p === '/admin/grants') return send(200, grantsWhere(() => true));
    if (req.method === 'GET' && p === '/admin/health') return send(200, { ok: true, issuer, resource: RESOURCE, versions });
    if (req.method !== 'POST') return send(405, { error: 'method' });
    const body = await readBody(req);
    if (p === '/admin/reset') {
      resetStats();
      delayMs = 0;
      return send(200, { ok: true });
    }
    if (p === '/admin/config') {
      if (body.reset_ttl) {
        for (const k of Object.keys(ttl)) delete ttl[k];
        ttl.default = defaultTtl;
      }
      if (body.ttl) Object.assign(ttl, body.ttl);
      if (body.delay_ms !== undefined) delayMs = Number(body.delay_ms);
      return send(200, { ttl, delay_ms: delayMs });
    }
    if (p === '/admin/revoke') {
      const grants = grantsWhere((g) => (body.account === undefined || g.accountId === body.account)
        && (body.client_id === undefined || g.clientId === body.client_id));
      for (const g of grants) await revokeGrant(g.id);
      stats.admin_revoked += grants.length;
      return send(200, { revoked: grants });
    }
    return send(404, { error: 'no such admin endpoint' });
  } catch (e) {
    return send(500, { error: String(e) });
  }
}

const callback = provider.callback();

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/admin/')) {
    admin(req, res);
  } else {
    callback(req, res);
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`provider: oidc-provider on ${issuer}, resource ${RESOURCE}, `
              + `clients ${clients.map((c) => c.client_id).join(' ')}, `
              + `${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ')}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500).unref());
}
