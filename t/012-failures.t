# A failing identity provider: every kind of bad answer releases the
# waiting requests with a clear status and Retry-After, never overwrites
# the last good token, and is retried at most once per back-off interval
# across all workers.
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
        proxy_read_timeout 1h;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /_refresh {
        internal;
        proxy_read_timeout 1h;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }
_EOC_
});

sub attempts {
    my ($cred) = @_;
    my $c = stats()->{by_cred}{$cred} // {};
    my $n = 0;
    $n += $_ for values %$c;
    return $n;
}

run_tests();

__DATA__

=== TEST 1: no token and a bad answer of every kind: waiting requests are released
For each kind of failure, ten requests wait for a login on a credential
of their own.  Each gets the failure status (502 for a bad answer, 504
when none came within the refresh deadline) with Retry-After, as soon as
the login fails; the provider saw one attempt.
--- config
    location /api/ {
        tokenrefresh tokens $arg_c;
        tokenrefresh_login /_login;
        tokenrefresh_refresh_timeout 1s;
        tokenrefresh_backoff 10s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my %expect = (hang => 504, reset => 502, 'status:503' => 502, html => 502,
              truncated => 502, notoken => 502, huge => 502,
              badbytes => 502, invalid_client => 502);
for my $f (sort keys %expect) {
    (my $c = $f) =~ s/\W/_/g;
    mock(fault => $f, delay_ms => 100);
    my @res = storm(requests => [ map { { method => 'GET',
                                          uri => "/api/$_?c=$c" } }
                                  1 .. 10 ]);
    my @st = map { $_->{status} } @res;
    is("@st", join(' ', ($expect{$f}) x 10), "$f: every request got "
                                              . $expect{$f});
    my @ra = grep { ($_->{headers}{'retry-after'} // '') =~ /^\d+$/ } @res;
    is(scalar @ra, 10, "$f: with Retry-After");
    my @slow = grep { $_->{elapsed} > scaled(2) } @res;
    is(scalar @slow, 0, "$f: released when the login failed");
    is(main::attempts($c), 1, "$f: one attempt at the provider");
}
--- request
GET /calls
--- response_body_like: ^calls=9 client_credentials=9\n$
--- error_log eval
[qr/login of credential "hang" failed: no answer from the token endpoint within @{[ scaled(1000) ]} ms; requests fail with 504/,
 qr/login of credential "reset" failed: no answer from the token endpoint \(502\); requests fail with 502, next attempt in \d+ ms/,
 qr/login of credential "status_503" failed: the token endpoint answered 503/,
 qr/login of credential "html" failed: invalid token response: not valid JSON/,
 qr/login of credential "truncated" failed: invalid token response: not valid JSON/,
 qr/login of credential "notoken" failed: invalid token response: no access token/,
 qr/login of credential "huge" failed: an oversized answer from the token endpoint/,
 qr/login of credential "badbytes" failed: invalid token response: token contains bytes not allowed/,
 qr/login of credential "invalid_client" refused: the token endpoint answered 401 invalid_client; requests fail with 502, next attempt in @{[ scaled(640000) ]} ms/]
--- no_error_log
[alert]
[crit]
--- timeout: 30



=== TEST 2: the last good token stays in use while the provider fails
The token lives 4 s; from 2 s on the module tries to refresh it ahead,
and the provider answers 500.  Until expiry every request gets 200 with
the old token and the provider sees a handful of attempts (back-off 400 ms,
doubling); after expiry requests fail fast with 502 and Retry-After; once
the provider is back and the back-off is over, the next request logs in.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 1h;
        tokenrefresh_backoff 400ms 1s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 4);
my $t0 = time;
my $r = hit(GET => '/api/first');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
mock(fault => 'status:500');
wait_until(sub { time > $t0 + scaled(2.1) }, 5);
my ($ok, $n) = (0, 0);
while (time < $t0 + scaled(3.8)) {
    my $r = hit(GET => "/api/ahead/$n");
    $ok++ if $r->{status} == 200 && $r->{content} =~ /"token_n":1\b/;
    $n++;
}
is($ok, $n, "$n requests in the window: all served with the old token");
my $tries = main::attempts('billing') - 1;
cmp_ok($tries, '>=', 1, "$tries refresh attempts");
cmp_ok($tries, '<=', 4, 'at most one per back-off interval');
wait_until(sub { time > $t0 + scaled(4.05) }, 2);
$r = hit(GET => '/api/expired');
is($r->{status}, 502, 'expired, provider down: 502');
like($r->{headers}{'retry-after'}, qr/^\d+$/, 'with Retry-After');
mock(fault => '');
ok(wait_until(sub { hit(GET => '/api/back')->{status} == 200 }, 5),
   'served again once the provider is back');
--- request
GET /api/last
--- response_body_like: "token_n":\d+
--- no_error_log
[alert]
[crit]



=== TEST 3: back-off holds across workers
The provider answers 500 to everything.  For three seconds, bursts of 20
concurrent requests arrive in both workers; the provider sees at most one
attempt per back-off interval (0.5 s, 1 s, 2 s ...), not one per burst or
per worker.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_backoff 500ms 4s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(fault => 'status:500');
my ($bursts, $fast) = (0, 0);
my $end = time + scaled(3);
while (time < $end) {
    my @res = storm(requests => [ map { { method => 'GET',
                                          uri => "/api/$bursts/$_" } }
                                  1 .. 20 ]);
    $fast++ if 20 == grep { $_->{status} == 502 } @res;
    $bursts++;
}
is($fast, $bursts, "$bursts bursts: every request got 502");
my $tries = main::attempts('billing');
note("$bursts bursts of 20, $tries attempts at the provider");
cmp_ok($tries, '<=', 4, 'at most one attempt per back-off interval');
--- request
GET /api/after
--- error_code: 502
--- no_error_log
[alert]
[crit]



=== TEST 4: a Retry-After from the provider is honoured
The provider answers 503 with Retry-After: 3; the module's own back-off
would allow a retry after 100 ms.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_backoff 100ms;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(fault => 'status:503', retry_after => 3);
my $t0 = time;
my $r = hit(GET => '/api/a');
is($r->{status}, 502, 'the login failed');
my $n = 0;
while (time < $t0 + scaled(2)) {
    $r = hit(GET => "/api/b/$n");
    $n++;
}
is(main::attempts('billing'), 1, "no second attempt within 3 s ($n requests)");
cmp_ok($r->{headers}{'retry-after'}, '>=', 1, 'Retry-After passed on');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- error_log eval
qr/login of credential "billing" failed: the token endpoint answered 503; requests fail with 502, next attempt in @{[ scaled(3000) ]} ms/



=== TEST 5: a refused refresh token, then a refused login: the credential fails, with the longest back-off
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 0;
        tokenrefresh_backoff 200ms 3s;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 1);
my $r = hit(GET => '/api/first');
my $expires = time + scaled(1);
mock(fault => 'invalid_grant');     # every grant: 400 invalid_grant
wait_until(sub { time > $expires + 0.05 }, 3);
$r = hit(GET => '/api/a');
is($r->{status}, 502, 'refresh refused, then login refused: 502');
my $t1 = time;
my $n = 0;
while (time < $t1 + scaled(2)) {
    hit(GET => "/api/b/$n");
    $n++;
}
--- request
GET /calls
--- response_body
calls=3 client_credentials=2 refresh_token=1
--- error_log eval
[qr/refresh of credential "billing" refused: the token endpoint answered 400 invalid_grant; the refresh token is dropped, logging in/,
 qr/login of credential "billing" refused: the token endpoint answered 400 invalid_grant; requests fail with 502, next attempt in @{[ scaled(3000) ]} ms/]



=== TEST 6: a refresh completes and is stored when the client that started it goes away
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(delay_ms => 1000);
my $h = fire(GET => '/api/first');
ok(wait_until(sub { calls() =~ /client_credentials=1/ }, 5),
   'the login is in flight');
drop($h);
mock(delay_ms => 0);
my $r = hit(GET => '/api/second');
is($r->{status}, 200, 'the next request is served');
like($r->{content}, qr/"token_n":1\b/, 'with the token of the first login');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 7: the refresh deadline holds whatever the token location's timeouts
The token location waits an hour for the provider; the provider never
answers; the refresh stops at 1 s, waiting requests get 504, the lease is
free again and the next attempt, after the back-off, is made.
--- config
    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh_timeout 1s;
        tokenrefresh_backoff 300ms;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(fault => 'hang', fault_count => 1);
my @res = storm(requests => [ map { { method => 'GET', uri => "/api/$_" } }
                              1 .. 10 ]);
my @st = map { $_->{status} } @res;
is("@st", join(' ', (504) x 10), 'all got 504');
my @t = sort { $a <=> $b } map { $_->{elapsed} } @res;
cmp_ok($t[-1], '<', scaled(2), 'within the deadline');
cmp_ok($t[0], '>=', 0.9, 'not before it');
ok(wait_until(sub { hit(GET => '/api/again')->{status} == 200 }, 5),
   'the next attempt succeeds');
--- request
GET /calls
--- response_body
calls=2 client_credentials=2
--- error_log eval
qr/login of credential "billing" failed: no answer from the token endpoint within @{[ scaled(1000) ]} ms/



=== TEST 8: the token endpoint refuses connections
--- config
    location = /_down {
        internal;
        proxy_pass http://127.0.0.1:1/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_down;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- request
GET /api/a
--- error_code: 502
--- response_headers_like
Retry-After: \d+
--- error_log eval
qr/login of credential "billing" failed: no answer from the token endpoint \(502\); requests fail with 502/



=== TEST 9: the failure statuses are configurable
--- config
    location /api/ {
        tokenrefresh tokens $arg_c;
        tokenrefresh_login /_login;
        tokenrefresh_refresh_timeout 500ms;
        tokenrefresh_failure_status 503 timeout=599;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(fault => 'status:500', fault_count => 1);
is(hit(GET => '/api/a?c=bad')->{status}, 503, 'a bad answer: 503');
mock(fault => 'hang', fault_count => 1);
is(hit(GET => '/api/a?c=slow')->{status}, 599, 'no answer: 599');
--- request
GET /calls
--- response_body
calls=2 client_credentials=2
