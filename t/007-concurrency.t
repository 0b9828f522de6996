# Single flight across workers: hundreds of clients need a token at the
# same moment, in two worker processes; the provider is slow.  Exactly one
# token call is made, every client is served, and requests waited in both
# workers (otherwise the test would prove nothing about the lease).
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

master_on();
workers(2);
worker_connections(4096);
no_shuffle();

our $Storm = $ENV{TEST_STORM_CLIENTS} // 250;

sub storm_check {
    my ($label, $expect_token) = @_;
    my @res = storm(requests => [ map { { method => 'GET',
                                          uri => "/api/item/$_" } }
                                  1 .. $Storm ]);
    my @ok = grep { $_->{status} == 200 } @res;
    is(scalar @ok, $Storm, "$label: every client got 200");
    my @right = grep { $_->{body} =~ /"token_n":$expect_token\b/ } @ok;
    is(scalar @right, $Storm, "$label: every client used the new token");
    my @mine = grep { $res[$_]{body} =~ m{"path":"/api/item/@{[$_ + 1]}"} }
               0 .. $#res;
    is(scalar @mine, $Storm, "$label: every client got its own answer");

    # the access log says which worker served each request, and how
    my $log = "$Test::Nginx::Util::ServRoot/logs/storm.log";
    my @lines;
    wait_until(sub {
        open my $fh, '<', $log or return 0;
        @lines = grep { m{ /api/item/} } <$fh>;
        return @lines >= $Storm;
    }, 10);
    my %pids;
    for (grep { / (waited|refreshed) / } @lines) {
        $pids{$1}++ if /^(\d+) /;
    }
    my @lat = sort { $a <=> $b } map { $_->{elapsed} } @res;
    note(sprintf "%s: %d clients, waited per worker: %s, latency "
                 . "p50 %.3f s, max %.3f s", $label, $Storm,
                 join('/', map { $pids{$_} } sort keys %pids),
                 $lat[$#lat / 2], $lat[-1]);
    cmp_ok(scalar keys %pids, '>=', 2, "$label: requests waited in "
                                       . scalar(keys %pids) . " workers");
    my $led = grep { / refreshed / } @lines;
    is($led, 1, "$label: one request led the refresh");
}

run_tests();

__DATA__

=== TEST 1: a storm on a credential with no token: one login
--- main_config
    worker_rlimit_nofile 10000;
--- http_config
    log_format storm '$pid $tokenrefresh_outcome $request_uri';
--- config
    access_log logs/storm.log storm;

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
mock(delay_ms => 300);
main::storm_check('no token', 1);
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]
--- timeout: 30



=== TEST 2: a storm on an expired token: one refresh
--- main_config
    worker_rlimit_nofile 10000;
--- http_config
    log_format storm '$pid $tokenrefresh_outcome $request_uri';
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
        tokenrefresh_ahead 0;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 1);
my $r = hit(GET => '/api/first');
like($r->{content}, qr/"token_n":1\b/, 'logged in');
my $expires = time + scaled(1);
mock(lifetime => 3600, delay_ms => 300);
wait_until(sub { time > $expires + 0.05 }, 3);
main::storm_check('expired token', 3);
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]
--- timeout: 30
