# Rejected tokens at default settings: a revocation is recovered whatever
# the token's age; a loop (an API that rejects every new token) is stopped;
# the refresh location can send the current access token; the token
# subrequests carry each header once; and a token's lifetime counts from
# when it was asked for.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

master_on();
workers(2);
worker_connections(1024);
no_shuffle();


add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('config', <<'_EOC_' . $block->config);
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

    location = /status {
        tokenrefresh_status;
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: a token revoked a second after it was issued, default settings: one refresh, every request served
--- main_config
    worker_rlimit_nofile 4096;
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/api/warm')->{status}, 200, 'warm-up');
revoke();
my @res = storm(requests => [ map { { method => 'GET', uri => "/api/x$_" } }
                                 1 .. 200 ]);
is(scalar(grep { $_->{status} == 200 } @res), 200, 'all 200 served')
    or diag(join ' ', map { $_->{status} } @res);
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
--- timeout: 30



=== TEST 2: an API that rejects every token: each client gets the 401 after one replay; at most two token calls per back-off interval
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_backoff 1s 1s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/api/warm')->{status}, 200, 'warm-up');
mock(api_reject => 1);
my $t0 = time;
my (@st, $n);
while (time - $t0 < scaled(3)) {
    my $r = hit(GET => '/api/x' . $n++);
    push @st, $r->{status};
}
my $elapsed = time - $t0;
is(scalar(grep { $_ != 401 } @st), 0, "all $n clients got the 401");
my $api = stats()->{api_by_path};
is(scalar(grep { ($api->{"/api/x$_"} // 0) != 2 } 0 .. $n - 1), 0,
   'each sent twice: one replay');
my $s = stats();
my $calls = $s->{calls} - 1;
my $intervals = int($elapsed / scaled(1)) + 1;
cmp_ok($calls, '<=', 2 * $intervals,
       "$calls token calls in $intervals back-off intervals");
cmp_ok($calls, '>=', 1, 'the first rejection was believed');
--- request
GET /calls
--- response_body_like
^calls=\d+ client_credentials=1 refresh_token=\d+
--- error_log
rejected again
--- timeout: 30



=== TEST 3: the refresh location sends the current access token with the refresh token
A backend that refreshes with both: {"token": ..., "refreshToken": ...}.
--- config
    location = /_api_login {
        internal;
        proxy_set_header Content-Type application/json;
        proxy_set_body '{"email":"$tokenrefresh_credential","password":"secret-$tokenrefresh_credential"}';
        proxy_pass http://idp/api/tokens;
    }

    location = /_api_refresh {
        internal;
        proxy_set_header Content-Type application/json;
        proxy_set_body '{"token":"$tokenrefresh_access_token_json","refreshToken":"$tokenrefresh_refresh_token_json"}';
        proxy_pass http://idp/api/tokens/refresh;
    }

    location /app/ {
        tokenrefresh tokens user@example.com;
        tokenrefresh_login /_api_login;
        tokenrefresh_refresh /_api_refresh;
        tokenrefresh_json_access_token /token;
        tokenrefresh_json_refresh_token /refreshToken;
        tokenrefresh_default_lifetime 1h;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(refresh_needs_access => 1);
is(hit(GET => '/app/a')->{status}, 200, 'logged in');
revoke();
my $r = hit(GET => '/app/b');
is($r->{status}, 200, 'refreshed with both tokens');
my ($refresh) = grep { $_->{path} eq '/api/tokens/refresh' } @{ requests() };
like($refresh->{body}, qr/^\{"token":"at-1-\w+","refreshToken":"rt-2-\w+"\}$/,
     'the body had the access token and the refresh token');
--- request
GET /calls
--- response_body
calls=2 login=1 refresh=1



=== TEST 4: the token subrequests carry Content-Type and Accept once, and proxy_set_header replaces them
--- config
    location = /_json_login {
        internal;
        proxy_set_header Content-Type application/json;
        proxy_set_body '{"email":"$tokenrefresh_credential","password":"secret-$tokenrefresh_credential"}';
        proxy_pass http://idp/api/tokens;
    }

    location /app/ {
        tokenrefresh tokens user@example.com;
        tokenrefresh_login /_json_login;
        tokenrefresh_json_access_token /token;
        tokenrefresh_json_refresh_token /refreshToken;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location /form/ {
        tokenrefresh tokens other;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/app/a')->{status}, 200, 'logged in with JSON');
is(hit(GET => '/form/a')->{status}, 200, 'logged in with a form');
my @t = grep { $_->{port} eq 'idp' && $_->{path} ne '/_mock/calls' } @{ requests() };
my ($json) = grep { $_->{path} eq '/api/tokens' } @t;
my ($form) = grep { $_->{path} eq '/token' } @t;
my @ct = grep { lc $_->[0] eq 'content-type' } @{ $json->{raw} };
is(scalar @ct, 1, 'one Content-Type');
is($ct[0][1], 'application/json', 'the one the location set');
is(scalar(grep { lc $_->[0] eq 'accept' } @{ $json->{raw} }), 1, 'one Accept');
@ct = grep { lc $_->[0] eq 'content-type' } @{ $form->{raw} };
is(scalar @ct, 1, 'one Content-Type by default');
is($ct[0][1], 'application/x-www-form-urlencoded', 'a form');
is($form->{headers}{accept}, 'application/json', 'Accept: application/json');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 login=1



=== TEST 5: a token's lifetime counts from when it was asked for, not from when the slow answer came
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh_timeout 5s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(delay_ms => 2000, lifetime => 60);
my $t0 = time;
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
my $st = JSON::PP::decode_json(hit(GET => '/status')->{content});
my $c = $st->{zones}{tokens}{credentials}{billing}{token};
cmp_ok($c->{expires}, '<=', int($t0) + scaled(60) + 1,
       'expires 60 s after the request was sent, not after the answer');
cmp_ok($c->{issued}, '<=', int($t0) + 1, 'issued when it was asked for');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 6: a refresh the provider refuses for the client (invalid_client) keeps the refresh token
RFC 6749: only invalid_grant says the refresh token is no good.  A wrong
client secret, fixed by the operator, finds the refresh token still there.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_backoff 200ms 200ms;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'logged in');
revoke();
mock(fault => 'invalid_client', fault_grant => 'refresh_token', fault_count => 1);
my $log0 = error_log_size();
is(hit(GET => '/api/b')->{status}, 502, 'the refresh is refused');
ok(scalar(grep { /refresh of credential "billing" refused: the token endpoint answered 401 invalid_client/ }
          error_log_since($log0)), 'the log says why');
ok(wait_until(sub { hit(GET => '/api/c')->{status} == 200 }, 5),
   'after the back-off, the same refresh token works');
--- request
GET /calls
--- response_body
calls=3 client_credentials=1 refresh_token=2



=== TEST 7: no token, no refresh token, no login: the configured failure status
--- config
    location /api/ {
        tokenrefresh tokens nobody;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_failure_status 503;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request
GET /api/a
--- error_code: 503
--- error_log
credential "nobody" has no token, no refresh token and no "tokenrefresh_login" location to get one
