# The status page: JSON and Prometheus, states and counters, and the
# operator controls (force a refresh, forget a credential).
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use JSON::PP ();

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

    location /api/ {
        tokenrefresh tokens $arg_c;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_backoff 2s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
_EOC_
});

sub status_json {
    my $r = hit(GET => '/status');
    die "status: $r->{status}" unless $r->{status} == 200;
    return JSON::PP->new->decode($r->{content});
}

run_tests();

__DATA__

=== TEST 1: JSON: a valid credential, its token's fingerprint, its counters
--- config
    location = /status {
        tokenrefresh_status;
    }
--- init
hit(GET => '/api/a?c=billing') for 1 .. 3;
my $s = main::status_json();
my $z = $s->{zones}{tokens};
ok($z->{size} >= 1048576, 'zone size');
cmp_ok($z->{used}, '>', 0, 'zone usage');
my $c = $z->{credentials}{billing};
is($c->{state}, 'valid', 'state');
is($c->{token}{generation}, 1, 'generation');
like($c->{token}{fingerprint}, qr/^[0-9a-f]{12}$/, 'a fingerprint');
cmp_ok($c->{token}{expires_in}, '>', 3500, 'seconds until expiry');
is($c->{token}{refresh_token}, JSON::PP::true, 'has a refresh token');
is($c->{requests}, 3, 'three requests');
is($c->{waits}, 1, 'one waited');
is($c->{fetches}{login}{ok}, 1, 'one login');
is($c->{last_fetch}{grant}, 'login', 'last fetch: a login');
is($c->{last_fetch}{outcome}, 'ok', 'that succeeded');
my $issued = stats()->{issued};
my $r = hit(GET => '/status');
is(scalar(grep { index($r->{content}, $_) >= 0 } @$issued), 0,
   'no token in the output');
--- request
GET /status?format=json
--- response_headers
Content-Type: application/json
--- response_body_like: "billing"



=== TEST 2: Prometheus, chosen by the query or by the directive
--- config
    location = /status {
        tokenrefresh_status;
    }

    location = /metrics {
        tokenrefresh_status prometheus;
    }
--- init
hit(GET => '/api/a?c=billing');
hit(GET => '/api/a?c=billing');
my $m = hit(GET => '/status?format=prometheus')->{content};
is(hit(GET => '/metrics')->{content} =~ s/^tokenrefresh_token_expires_in.*\n//mr,
   $m =~ s/^tokenrefresh_token_expires_in.*\n//mr,
   'the same with the directive');
like($m, qr/^# TYPE tokenrefresh_requests_total counter$/m, 'TYPE lines');
like($m, qr/^tokenrefresh_requests_total\{zone="tokens",credential="billing"\} 2$/m,
     'a counter');
like($m, qr/^tokenrefresh_fetches_total\{zone="tokens",credential="billing",grant="login",outcome="ok"\} 1$/m,
     'fetches by grant and outcome');
like($m, qr/^tokenrefresh_state\{zone="tokens",credential="billing",state="valid"\} 1$/m,
     'the current state');
like($m, qr/^tokenrefresh_state\{zone="tokens",credential="billing",state="expired"\} 0$/m,
     'the other states');
like($m, qr/^tokenrefresh_wait_seconds_total\{zone="tokens",credential="billing"\} \d+\.\d{3}$/m,
     'seconds');
like($m, qr/^tokenrefresh_zone_credentials\{zone="tokens"\} 1$/m, 'zone');
my @bad = grep { !/^(# (HELP|TYPE) \w+ .+|\w+\{[^}]*\} -?\d+(\.\d+)?)$/ }
          split /\n/, $m;
is(scalar @bad, 0, 'every line is a comment or a sample') or diag("@bad");
--- request
GET /metrics
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8



=== TEST 3: label values are escaped
A name shows a quote and a backslash as \x22 and \x5c (as any byte that is
not printable), and the label escapes the backslash.
--- config
    location = /metrics {
        tokenrefresh_status prometheus;
    }
--- request eval
["GET /api/a?c=we\"ird\\name", "GET /metrics"]
--- response_body_like eval
[qr/"cred":"we\\"ird\\\\name"/,
 qr/^tokenrefresh_requests_total\{zone="tokens",credential="we\\\\x22ird\\\\x5cname"\} 1$/m]



=== TEST 4: states: refreshing, waiting, backing off, failed, expired
--- config
    location = /status {
        tokenrefresh_status;
    }
--- init
mock(delay_ms => 800);
my @h = map { fire(GET => "/api/$_?c=slow") } 1 .. 5;
ok(wait_until(sub { calls() =~ /client_credentials=1/ }, 5), 'login started');
my $c = main::status_json()->{zones}{tokens}{credentials}{slow};
is($c->{state}, 'refreshing', 'refreshing');
like($c->{refreshing}{worker}, qr/^\d+$/, 'by a worker');
is($c->{refreshing}{grant}, 'login', 'a login');
is($c->{waiting}, 5, 'five requests waiting');
collect($_) for @h;
is(main::status_json()->{zones}{tokens}{credentials}{slow}{waiting}, 0,
   'none waiting after');

mock(delay_ms => 0, fault => 'status:500');
hit(GET => '/api/x?c=down');
$c = main::status_json()->{zones}{tokens}{credentials}{down};
is($c->{state}, 'backing_off', 'backing off');
cmp_ok($c->{backoff}{retry_in_ms}, '>', 0, 'for a while');
is($c->{fetches}{login}{bad}, 1, 'one bad answer');
is($c->{failed}, 1, 'one failed request');

mock(fault => 'invalid_client');
hit(GET => '/api/x?c=refused');
is(main::status_json()->{zones}{tokens}{credentials}{refused}{state}, 'failed',
   'a refused login: failed');

mock(fault => '', lifetime => 1);
hit(GET => '/api/x?c=short');
my $t0 = time;
wait_until(sub { time > $t0 + scaled(1.05) }, 3);
is(main::status_json()->{zones}{tokens}{credentials}{short}{state}, 'expired',
   'expired');
--- request
GET /status
--- response_body_like: "slow"



=== TEST 5: controls need write=on
--- config
    location = /status {
        tokenrefresh_status;
    }
--- request
POST /status?zone=tokens&credential=billing&action=forget
--- error_code: 405



=== TEST 6: force a refresh; forget a credential
--- config
    location = /status {
        tokenrefresh_status write=on;
    }
--- init
hit(GET => '/api/a?c=billing');
my $r = hit(POST => '/status?zone=tokens&credential=billing&action=refresh');
is($r->{status}, 200, 'refresh: 200');
is(JSON::PP->new->decode($r->{content})->{result}, 'done', 'done');
like(hit(GET => '/api/b?c=billing')->{content}, qr/"token_n":3\b/,
     'the next request uses a refreshed token');
is(calls(), 'calls=2 client_credentials=1 refresh_token=1', 'by a refresh');
$r = hit(POST => '/status?zone=tokens&credential=billing&action=forget');
is($r->{status}, 200, 'forget: 200');
ok(!exists main::status_json()->{zones}{tokens}{credentials}{billing},
   'gone from the status page');
like(hit(GET => '/api/c?c=billing')->{content}, qr/"token_n":5\b/,
     'the next request logs in');
is(hit(POST => '/status?zone=tokens&credential=nobody&action=forget')->{status},
   404, 'an unknown credential: 404');
is(hit(POST => '/status?zone=nozone&credential=billing&action=forget')->{status},
   404, 'an unknown zone: 404');
is(hit(POST => '/status?zone=tokens&credential=billing&action=explode')->{status},
   400, 'an unknown action: 400');
mock(delay_ms => 1000);
my $h = fire(GET => '/api/x?c=busy');
ok(wait_until(sub { calls() =~ /client_credentials=3/ }, 5), 'in flight');
is(hit(POST => '/status?zone=tokens&credential=busy&action=forget')->{status},
   409, 'forgetting a credential being refreshed: 409');
collect($h);
--- request
GET /calls
--- response_body
calls=4 client_credentials=3 refresh_token=1
--- error_log
tokenrefresh: credential "billing" in zone "tokens": token dropped for a refresh by an operator request
tokenrefresh: credential "billing" in zone "tokens": forgotten by an operator request
