# Expiry and refresh, one worker: one refresh when the token expires, a
# background refresh ahead of expiry that does not delay anyone, a refresh
# answer without a new refresh token, a refused refresh token.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: an expired token leads to exactly one refresh
The provider's tokens live one second; no refresh ahead.
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
mock(lifetime => 1);
my $r = hit(GET => '/api/a');
die "first request: $r->{status}" unless $r->{status} == 200;
my $expires = time + scaled(1);
wait_until(sub { time > $expires + 0.05 }, 3);
--- request eval
["GET /api/b", "GET /api/c", "GET /calls"]
--- response_body_like eval
[qr/"token_n":3\b/, qr/"token_n":3\b/,
 "^calls=2 client_credentials=1 refresh_token=1\n\$"]
--- no_error_log
[error]



=== TEST 2: a refresh ahead of expiry runs in the background
The token lives 4 s and the window is clamped to half of that; the
provider then takes 1.5 s to answer.  The request that finds the token in
the window is answered at once with the current token; the next request,
once the refresh has landed, gets the new one.
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
        tokenrefresh_ahead 1h;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 4);
my $t0 = time;
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
wait_until(sub { time > $t0 + scaled(2.2) }, 4);
mock(delay_ms => 1500);
$r = hit(GET => '/api/b');
like($r->{content}, qr/"token_n":1\b/, 'answered with the current token');
cmp_ok($r->{elapsed}, '<', scaled(0.7), 'not delayed by the refresh');
ok(wait_until(sub { hit(GET => '/api/x')->{content} =~ /"token_n":3\b/ }, 5),
   'the refreshed token is used once stored');
--- request eval
["GET /api/c", "GET /calls"]
--- response_body_like eval
[qr/"token_n":3\b/, "^calls=2 client_credentials=1 refresh_token=1\n\$"]
--- no_error_log
[error]



=== TEST 3: a refresh answer without a refresh token keeps the stored one
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
mock(lifetime => 1, refresh_rt => 0);
for my $i (1 .. 3) {
    my $r = hit(GET => '/api/a');
    die "request $i: $r->{status}" unless $r->{status} == 200;
    my $expires = time + scaled(1);
    wait_until(sub { time > $expires + 0.05 }, 3);
}
my @rt = map { $_->{body} =~ /refresh_token=([^&]+)/ ? $1 : () }
         grep { $_->{path} eq '/token' } @{ requests() };
is(scalar @rt, 2, 'two refreshes');
is($rt[0], $rt[1], 'both sent the refresh token of the login');
--- request
GET /calls
--- response_body
calls=3 client_credentials=1 refresh_token=2
--- no_error_log
[error]



=== TEST 4: a refused refresh token is dropped and a login follows, once
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
mock(lifetime => 1);
my $r = hit(GET => '/api/a');
die "first request: $r->{status}" unless $r->{status} == 200;
mock(fault => 'invalid_grant', fault_grant => 'refresh_token',
     fault_count => 1);
my $expires = time + scaled(1);
wait_until(sub { time > $expires + 0.05 }, 3);
--- request eval
["GET /api/b", "GET /calls"]
--- response_body_like eval
[qr/"token_n":3\b/,
 "^calls=3 client_credentials=2 refresh_token=1\n\$"]
--- error_log
refresh of credential "billing" refused: the token endpoint answered 400 invalid_grant; the refresh token is dropped, logging in
--- no_error_log
[error]



=== TEST 5: a token with a refresh token and no login location refreshes
After the refresh token is refused there is no way to get a token: the
request fails with 502 and the log says why, once.
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

    location /login/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 0;
        tokenrefresh_backoff 10s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 1);
my $r = hit(GET => '/login/a');
die "first request: $r->{status}" unless $r->{status} == 200;
my $expires = time + scaled(1);
wait_until(sub { time > $expires + 0.05 }, 3);
$r = hit(GET => '/api/b');
like($r->{content}, qr/"token_n":3\b/, 'refreshed without a login location');
mock(fault => 'invalid_grant', fault_grant => 'refresh_token');
$expires = time + scaled(1);
wait_until(sub { time > $expires + 0.05 }, 3);
--- request eval
["GET /api/c", "GET /api/d", "GET /calls"]
--- error_code eval
[502, 502, 200]
--- response_body_like eval
[qr/502 Bad Gateway/, qr/502 Bad Gateway/,
 "^calls=3 client_credentials=1 refresh_token=2\n\$"]
--- response_headers_like eval
["Retry-After: \\d+", "Retry-After: \\d+", ""]
