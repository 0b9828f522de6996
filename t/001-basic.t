# The token lifecycle, one worker: log in on first use, reuse the token,
# put it where the API wants it, one credential per name.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the first request logs in, the API gets the token
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request
GET /api/a
--- response_body_like: "cred":"billing".*"style":"bearer"
--- error_log eval
qr/tokenrefresh: login of credential "billing" succeeded in \d+ ms, token [0-9a-f]{12}, expires in 3600 s, new refresh token/
--- no_error_log
[error]



=== TEST 2: the token is reused: three requests, one login
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /api/b", "POST /api/c\nhello", "GET /calls"]
--- response_body_like eval
[qr/"path":"\/api\/a".*"token_n":1\b/, qr/"path":"\/api\/b".*"token_n":1\b/,
 qr/"method":"POST".*"path":"\/api\/c".*"token_n":1\b/,
 "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]



=== TEST 3: the bare token in Authorization
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_access_token;
        proxy_pass http://api;
    }
--- request
GET /api/a
--- response_body_like: "style":"bare"
--- no_error_log
[error]



=== TEST 4: the token in a custom header, the client's Authorization dropped
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header X-Api-Token $tokenrefresh_access_token;
        proxy_set_header Authorization "";
        proxy_pass http://api;
    }
--- more_headers
Authorization: Basic Y2xpZW50OnNlY3JldA==
--- request
GET /api/a
--- response_body_like: "style":"x-api-token"
--- no_error_log
[error]



=== TEST 5: the client's own Authorization header never reaches the upstream
The API answers 200 only for a token the provider issued, and reports the
style it found: a client header passed through would show up as "bare".
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- more_headers
Authorization: Bearer forged-by-the-client
--- request
GET /api/a
--- response_body_like: "style":"bearer"
--- no_error_log
[error]



=== TEST 6: one credential per name: a map selects it, two names, two logins
--- http_config
    map $http_tenant $tenant_credential {
        acme     acme;
        globex   globex;
        default  "";
    }
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens $tenant_credential;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /api/b", "GET /api/c", "GET /calls"]
--- more_headers eval
["Tenant: acme", "Tenant: globex", "Tenant: acme", ""]
--- response_body_like eval
[qr/"cred":"acme"/, qr/"cred":"globex"/, qr/"cred":"acme"/,
 "^calls=2 client_credentials=2\n\$"]
--- no_error_log
[error]



=== TEST 7: a name outside the allow-list is refused, without a login
--- http_config
    map $http_tenant $tenant_credential {
        acme     acme;
        default  "";
    }
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens $tenant_credential;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /api/a", "GET /calls"]
--- more_headers eval
["Tenant: evil", "", ""]
--- error_code eval
[403, 403, 200]
--- response_body_like eval
[qr/403 Forbidden/, qr/403 Forbidden/, "^calls=0\n\$"]



=== TEST 8: the refusal status is configurable
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens $http_tenant;
        tokenrefresh_login /_login;
        tokenrefresh_deny_status 401;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request
GET /api/a
--- error_code: 401
--- error_log
tokenrefresh: empty credential name, request denied
--- no_error_log
[error]



=== TEST 9: a location without the module's directives is stock nginx
The client's header passes through, no login happens.
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location /plain/ {
        proxy_pass http://api;
    }
--- more_headers
Authorization: Bearer not-a-token
--- request eval
["GET /plain/a", "GET /calls"]
--- error_code eval
[401, 200]
--- response_body eval
["api: unknown token\n", "calls=0\n"]
--- no_error_log
[error]



=== TEST 10: "tokenrefresh off" turns an inherited credential off
--- config
    tokenrefresh tokens billing;
    tokenrefresh_login /_login;

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location /public/ {
        tokenrefresh off;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /public/a", "GET /calls", "GET /api/a", "GET /calls"]
--- error_code eval
[401, 200, 200, 200]
--- response_body_like eval
["^api: no token\n\$", "^calls=0\n\$", qr/"cred":"billing"/,
 "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]
