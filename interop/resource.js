// The API of the interop suite: a resource server that accepts only JWT
// access tokens (RFC 9068) issued by the provider for its resource
// indicator, checked with jose against the provider's JWKS.
//
//   node resource.js [--port N] [--issuer URL] [--resource URL]
//
//   --port      RESOURCE_PORT, default 39860
//   --issuer    ISSUER, default http://127.0.0.1:39850
//   --resource  RESOURCE (the expected "aud"), default
//               http://127.0.0.1:<port>/
//
// Any path: 200 with a JSON echo (sub, client_id, jti, scope, iat, exp,
// method, path, query, body length and SHA-256) when the request carries
// "Authorization: Bearer <JWT>" with typ at+jwt, the provider's iss and
// signature, aud = the resource, an exp in the future, and not revoked
// here; 401 with WWW-Authenticate (RFC 6750) otherwise.
//
// Admin API (for the tests):
//   GET  /admin/stats    {"ok":N,"unauthorized":N,"by_reason":{...},
//                         "by_client":{...},"tokens_seen":N}
//   POST /admin/reset    zero the counters
//   POST /admin/revoke   {"client_id": "x"} (optional): from now on, reject
//                        the tokens issued before now, as an API does after
//                        a key rotation or a revocation it learned of; a
//                        token issued later is accepted
//   POST /admin/reject   {"on": true}: reject every token (an API that
//                        rejects fresh tokens); {"on": false} to stop
// Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
// BSD 2-Clause License: see the file LICENSE.

import * as http from 'node:http';
import * as crypto from 'node:crypto';

import { createRemoteJWKSet, jwtVerify } from 'jose';

function arg(name, env, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && process.argv[i + 1] !== undefined) return process.argv[i + 1];
  return process.env[env] ?? dflt;
}

const port = Number(arg('port', 'RESOURCE_PORT', 39860));
const issuer = arg('issuer', 'ISSUER', 'http://127.0.0.1:39850');
const RESOURCE = arg('resource', 'RESOURCE', `http://127.0.0.1:${port}/`);

const JWKS = createRemoteJWKSet(new URL(`${issuer}/jwks`), { cooldownDuration: 0 });

let stats;
function resetStats() {
  stats = { ok: 0, unauthorized: 0, by_reason: {}, by_client: {}, tokens_seen: 0 };
}
resetStats();

// jti -> first time this API saw the token (ms)
const seen = new Map();
// revocations: { before: epoch seconds, jtis: Set, client_id }
const revocations = [];
let rejectAll = false;

function revoked(payload) {
  for (const r of revocations) {
    if (r.client_id !== undefined && r.client_id !== payload.client_id) continue;
    if (payload.iat < r.before || r.jtis.has(payload.jti)) return true;
  }
  return false;
}

function reply(res, status, headers, body) {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(`${JSON.stringify(body)}\n`);
}

function unauthorized(res, reason, description) {
  stats.unauthorized += 1;
  stats.by_reason[reason] = (stats.by_reason[reason] ?? 0) + 1;
  const err = reason === 'no_token' ? '' : ', error="invalid_token"';
  reply(res, 401, {
    'WWW-Authenticate': `Bearer realm="interop-api"${err}, error_description="${description.replace(/"/g, "'")}"`,
  }, { error: 'invalid_token', reason, error_description: description });
}

async function api(req, res, body) {
  const auth = req.headers.authorization;
  const m = auth && /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(auth);
  if (!m) {
    return unauthorized(res, 'no_token', auth ? 'malformed Authorization header' : 'no access token');
  }
  let payload;
  let protectedHeader;
  try {
    ({ payload, protectedHeader } = await jwtVerify(m[1], JWKS, {
      issuer,
      audience: RESOURCE,
      typ: 'at+jwt',
      algorithms: ['RS256', 'PS256', 'ES256'],
      requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'],
      clockTolerance: 0,
    }));
  } catch (e) {
    return unauthorized(res, e.code ?? 'invalid', e.message);
  }
  if (rejectAll) return unauthorized(res, 'rejected', 'this API rejects every token now');
  if (revoked(payload)) return unauthorized(res, 'revoked', 'the token was revoked');
  if (!seen.has(payload.jti)) {
    seen.set(payload.jti, Date.now());
    stats.tokens_seen += 1;
  }
  stats.ok += 1;
  stats.by_client[payload.client_id] = (stats.by_client[payload.client_id] ?? 0) + 1;
  const url = new URL(req.url, 'http://x');
  return reply(res, 200, {}, {
    ok: true,
    sub: payload.sub,
    client_id: payload.client_id,
    jti: payload.jti,
    scope: payload.scope,
    iat: payload.iat,
    exp: payload.exp,
    typ: protectedHeader.typ,
    method: req.method,
    path: url.pathname,
    query: url.search.slice(1),
    body_len: body.length,
    body_sha: crypto.createHash('sha256').update(body).digest('hex'),
  });
}

async function admin(req, res, body) {
  const p = new URL(req.url, 'http://x').pathname;
  let in_ = {};
  try { in_ = body.length ? JSON.parse(body.toString('utf8')) : {}; } catch (e) { /* empty */ }
  if (req.method === 'GET' && p === '/admin/stats') return reply(res, 200, {}, stats);
  if (req.method === 'GET' && p === '/admin/health') return reply(res, 200, {}, { ok: true, issuer, resource: RESOURCE });
  if (req.method === 'POST' && p === '/admin/reset') {
    resetStats();
    revocations.length = 0;
    rejectAll = false;
    return reply(res, 200, {}, { ok: true });
  }
  if (req.method === 'POST' && p === '/admin/revoke') {
    const jtis = new Set(seen.keys());
    revocations.push({ before: Math.floor(Date.now() / 1000), jtis, client_id: in_.client_id });
    return reply(res, 200, {}, { ok: true, revoked_seen: jtis.size });
  }
  if (req.method === 'POST' && p === '/admin/reject') {
    rejectAll = !!in_.on;
    return reply(res, 200, {}, { ok: true, reject: rejectAll });
  }
  return reply(res, 404, {}, { error: 'no such admin endpoint' });
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const handler = req.url.startsWith('/admin/') ? admin : api;
    handler(req, res, body).catch((e) => {
      console.error(`resource: ${e.stack}`);
      if (!res.headersSent) reply(res, 500, {}, { error: String(e) });
    });
  });
});

server.keepAliveTimeout = 60000;

server.listen(port, '127.0.0.1', () => {
  console.log(`resource: API on http://127.0.0.1:${port}, issuer ${issuer}, audience ${RESOURCE}, node ${process.version}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { server.close(); process.exit(0); });
}
