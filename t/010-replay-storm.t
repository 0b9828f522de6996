# The storm: the API starts rejecting the current token (revoked at the
# API, not expired) and hundreds of requests, GETs and POSTs with distinct
# bodies, all arrive with it, in two workers, while the provider takes
# 300 ms.  Exactly one refresh; every client gets 200 and its own answer;
# the API sees each request at most twice.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

master_on();
workers(2);
worker_connections(4096);
no_shuffle();

our $Storm = $ENV{TEST_STORM_CLIENTS} // 320;

run_tests();

__DATA__

=== TEST 1: 320 requests meet a revoked token: one refresh, every one served
--- main_config
    worker_rlimit_nofile 10000;
--- http_config
    log_format storm '$pid $tokenrefresh_outcome $tokenrefresh_wait_time $request_uri';
--- config
    access_log logs/storm.log storm;

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
        tokenrefresh_min_token_age 200ms;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $Storm = $main::Storm;
my $r = hit(GET => '/api/first');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
my $t0 = time;
wait_until(sub { time > $t0 + scaled(0.3) }, 2);    # older than the minimum age
revoke();
# the API takes 100 ms: every request reaches it before the first 401
# comes back, so nearly all of them are replayed
mock(delay_ms => 300, api_delay_ms => 100);

my @req = map {
    $_ % 2 ? { method => 'GET', uri => "/api/item/$_" }
           : { method => 'POST', uri => "/api/item/$_",
               body => "order $_ " . ('x' x ($_ * 7 % 3000)) }
} 1 .. $Storm;
my @res = storm(requests => \@req);

my $ok = grep { $_->{status} == 200 } @res;
is($ok, $Storm, 'every client got 200');
my $own = grep {
    my ($q, $a) = ($req[$_], $res[$_]);
    $a->{body} =~ m{"body_sha":"@{[ sha256_hex($q->{body} // '') ]}"}
    && $a->{body} =~ m{"method":"$q->{method}"}
    && $a->{body} =~ m{"path":"$q->{uri}"}
    && $a->{body} =~ m{"token_n":3\b}
} 0 .. $#req;
is($own, $Storm, 'every client got its own answer, made with the new token');

my $by_path = stats()->{api_by_path};
my @attempts = map { $by_path->{"/api/item/$_"} // 0 } 1 .. $Storm;
is(scalar(grep { $_ < 1 || $_ > 2 } @attempts), 0,
   'the API saw each request once or twice');
# those that arrived after the first 401 had marked the token waited
# for the refresh without trying it
my $twice = grep { $_ == 2 } @attempts;
cmp_ok($twice, ">", $Storm / 2, "$twice carried the revoked token and went again");

my $log = "$Test::Nginx::Util::ServRoot/logs/storm.log";
my @lines;
wait_until(sub {
    open my $fh, '<', $log or return 0;
    @lines = grep { m{ /api/item/} } <$fh>;
    return @lines >= $Storm;
}, 10);
my %pids;
for (@lines) {
    $pids{$1}++ if /^(\d+) (replayed|waited|refreshed) /;
}
my @lat = sort { $a <=> $b } map { $_->{elapsed} } @res;
note(sprintf "%d clients (%d replayed), replayed or waited per worker: "
             . "%s, latency "
             . "p50 %.3f s, p99 %.3f s, max %.3f s", $Storm, $twice,
             join('/', map { $pids{$_} } sort keys %pids),
             $lat[$#lat / 2], $lat[int($#lat * 0.99)], $lat[-1]);
cmp_ok(scalar keys %pids, '>=', 2,
       'requests were replayed or waited in both workers');
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
[alert]
[crit]
--- timeout: 60
