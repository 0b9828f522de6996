# Token responses: the standard shape, nested fields found by JSON Pointer,
# absolute expiry, the "exp" claim of a JWT, a custom login API; and the
# answers that must be refused without losing the last good token.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: nested fields and an absolute expiry in milliseconds
The provider answers {"status": "ok", "data": {"accessToken": ...,
"refreshToken": ..., "accessTokenExp": <ms since the epoch>}}, and its
tokens live 1 s: the second request, after expiry, refreshes.
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/nested;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/nested;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 0;

        tokenrefresh_json_access_token /data/accessToken;
        tokenrefresh_json_refresh_token /data/refreshToken;
        tokenrefresh_json_expires_at /data/accessTokenExp ms;

        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 1);
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
my $expires = time + scaled(1);
wait_until(sub { time > $expires + 0.05 }, 3);
--- request eval
["GET /api/b", "GET /calls"]
--- response_body_like eval
[qr/"token_n":3\b/, "^calls=2 client_credentials=1 refresh_token=1\n\$"]
--- no_error_log
[error]



=== TEST 2: the JSON fields may also be set in the token locations
A response format belongs to the token endpoint: directives in the token
location describe how its answer is read.
--- config
    location = /_login {
        internal;
        tokenrefresh_json_access_token /data/accessToken;
        tokenrefresh_json_refresh_token /data/refreshToken;
        tokenrefresh_json_expires_at /data/accessTokenExp ms;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/nested;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /api/b", "GET /calls"]
--- response_body_like eval
[qr/"token_n":1\b/, qr/"token_n":1\b/,
 "^calls=1 client_credentials=1\n\$"]
--- no_error_log
[error]



=== TEST 3: without an expiry field, the "exp" claim of a JWT access token
The provider issues JWTs that expire in 2 s and says nothing else about
expiry; the default lifetime (5 minutes) would never refresh here.
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 2, jwt => 1, expires => 'none');
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
my $expires = time + scaled(2);
wait_until(sub { time > $expires + 0.05 }, 4);
--- request eval
["GET /api/b", "GET /calls"]
--- response_body_like eval
[qr/"token_n":3\b/, "^calls=2 client_credentials=1 refresh_token=1\n\$"]
--- no_error_log
[error]



=== TEST 4: no expiry at all: the default lifetime
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_ahead 0;
        tokenrefresh_default_lifetime 1s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 60, expires => 'none');
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
my $expires = time + scaled(1);
wait_until(sub { time > $expires + 0.05 }, 3);
--- request eval
["GET /api/b", "GET /calls"]
--- response_body_like eval
[qr/"token_n":3\b/, "^calls=2 client_credentials=2\n\$"]
--- no_error_log
[error]



=== TEST 5: a custom login API, the bare token, one credential per tenant
POST /api/tokens with a JSON body of email and password answers
{"token": ..., "refreshToken": ...} with 201; the API wants the bare token
in Authorization; the "Tenant" header selects the credential.
--- http_config
    map $http_tenant $tenant {
        acme     acme;
        globex   globex;
        default  "";
    }

    map $tokenrefresh_credential $login_body {
        acme     '{"email":"ops@acme.example","password":"secret-ops@acme.example"}';
        globex   '{"email":"it@globex.example","password":"secret-it@globex.example"}';
    }
--- config
    location = /_login {
        internal;
        tokenrefresh_json_access_token /token;
        tokenrefresh_json_refresh_token /refreshToken;
        proxy_set_header Content-Type application/json;
        proxy_set_body $login_body;
        proxy_pass http://idp/api/tokens;
    }

    location /api/ {
        tokenrefresh tokens $tenant;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_access_token;
        proxy_pass http://api;
    }
--- request eval
["GET /api/a", "GET /api/b", "GET /api/c", "GET /calls"]
--- more_headers eval
["Tenant: acme", "Tenant: globex", "Tenant: acme", ""]
--- response_body_like eval
[qr/"cred":"ops\@acme.example".*"style":"bare"/,
 qr/"cred":"it\@globex.example".*"style":"bare"/,
 qr/"cred":"ops\@acme.example"/,
 "^calls=2 login=2\n\$"]
--- no_error_log
[error]



=== TEST 6: a token with bytes not allowed in a header is refused
The provider returns an access token with CR LF in it.  Nothing is
stored, the client gets 502, the log names the credential and the reason
and no byte of the token.
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
--- init
mock(fault => 'badbytes');
--- request
GET /api/a
--- error_code: 502
--- error_log
login of credential "billing" failed: invalid token response: token contains bytes not allowed in a header (only 0x21-0x7E are); requests fail with 502
--- no_error_log
X-Injected
at-bad



=== TEST 7: malformed answers are refused: HTML with 200, truncated JSON, no token
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens $arg_c;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(fault => 'html', fault_count => 1);
my $r = hit(GET => '/api/a?c=one');
is($r->{status}, 502, 'HTML answer');
mock(fault => 'truncated', fault_count => 1);
$r = hit(GET => '/api/a?c=two');
is($r->{status}, 502, 'truncated answer');
mock(fault => 'notoken', fault_count => 1);
$r = hit(GET => '/api/a?c=three');
is($r->{status}, 502, 'answer without a token');
--- request
GET /calls
--- response_body
calls=3 client_credentials=3
--- error_log
login of credential "one" failed: invalid token response: not valid JSON
login of credential "two" failed: invalid token response: not valid JSON
login of credential "three" failed: invalid token response: no access token



=== TEST 8: an answer over the size limit is refused
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
--- init
mock(fault => 'huge');
--- request
GET /api/a
--- error_code: 502
--- error_log eval
[qr/token response of \d+ bytes for credential "billing" exceeds tokenrefresh_max_response_size 65536/,
 qr/login of credential "billing" failed: an oversized answer from the token endpoint/]



=== TEST 9: a failed login releases every waiting request with an error
Twenty requests wait for a login that takes 300 ms and fails: all get 502
when it fails, and the provider sees one call.
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
--- init
mock(fault => 'status:500', delay_ms => 300);
my @res = storm(requests => [ map { { method => 'GET', uri => "/api/$_" } }
                              1 .. 20 ]);
is(scalar(grep { $_->{status} == 502 } @res), 20, 'every request got 502');
my @slow = grep { $_->{elapsed} > scaled(2) } @res;
is(scalar @slow, 0, 'released when the login failed, not at a timeout');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- error_log
login of credential "billing" failed: the token endpoint answered 500; requests fail with 502



=== TEST 10: the token endpoint sees none of the client's headers
The refresh and login subrequests get headers of their own: a form
content type, no Authorization, no cookie.
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
--- init
my $r = hit(GET => '/api/a', headers => {
    'Authorization' => 'Basic dXNlcjpwYXNz',
    'Cookie' => 'session=client-cookie',
    'X-Client-Secret' => 'do-not-forward' });
is($r->{status}, 200, 'proxied');
my ($login) = grep { $_->{path} eq '/token' } @{ requests() };
my $h = $login->{headers};
is($login->{method}, 'POST', 'token requests are POST');
is($h->{'content-type'}, 'application/x-www-form-urlencoded', 'form body');
is($h->{authorization}, undef, 'no client Authorization');
is($h->{cookie}, undef, 'no client cookie');
is($h->{'x-client-secret'}, undef, 'no other client header');
is($login->{body}, 'grant_type=client_credentials&client_id=billing', 'body');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]
